"""Which batch the jobs enqueued here join, and sending them in chunks.

Two context variables: the batch being filled (inside ``with batch:``, every `perform_later`,
`perform_all_later` and `deliver_later` joins it) and the batch of the job being performed
(a `jobkit.Batch` created inside that job becomes its child). A block's jobs are buffered
and sent CHUNK at a time, so a batch of any size never sits in memory whole.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterable, Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING

from jobkit.adapters import current_adapter

if TYPE_CHECKING:
    from jobkit.batch.state import BatchStatus, BatchStore
    from jobkit.job import Job

__all__ = ["CHUNK", "OpenBatch", "join", "parent_id", "running"]

#: Jobs sent per round trip (one Redis transaction each) while a batch is filled.
CHUNK = 1000

_filling: contextvars.ContextVar[OpenBatch | None] = contextvars.ContextVar(
    "jobkit_batch_filling", default=None)
_running: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "jobkit_batch_running", default=None)


class OpenBatch:
    """An existing batch to add jobs to (`jobkit.Batch.open`): ``with
    jobkit.Batch.open(self.batch_id): OtherJob.perform_later(...)`` inside one of its jobs
    (which keeps the batch pending until the block has sent them)."""

    def __init__(self, batch_id: str) -> None:
        self.batch_id = batch_id
        self._buffer: list[Job] = []
        self._tokens: list[contextvars.Token[OpenBatch | None]] = []

    def __enter__(self) -> OpenBatch:
        self._tokens.append(_filling.set(self))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if exc_type is None:
                self.flush()
            else:
                self._buffer.clear()  # nothing more is sent after an error
        finally:
            _filling.reset(self._tokens.pop())

    @property
    def store(self) -> BatchStore:
        return current_adapter().batches()

    @property
    def status(self) -> BatchStatus | None:
        """The batch's progress now (None once it expired); jobs still buffered not counted."""
        return self.store.status(self.batch_id)

    def perform_all_later(self, jobs: Iterable[Job]) -> int:
        """Enqueue every job of `jobs` into this batch, inside its block (a generator is read
        chunk by chunk, never whole); returns how many."""
        if _filling.get() is not self:
            raise RuntimeError(f"{self!r}: add jobs inside its block (`with batch: "
                               "batch.perform_all_later(...)`)")
        count = 0
        for job in jobs:
            job._prepare()
            self._add(job)
            count += 1
        return count

    add = perform_all_later

    def _add(self, job: Job) -> None:
        cls = type(job)
        if cls.unique_for is not None or cls.debounce is not None:
            raise ValueError(
                f"{cls.__qualname__} is unique or debounced: it cannot join batch "
                f"{self.batch_id} (the control could drop it, and the batch would wait for it "
                "forever)")
        job.batch_id = self.batch_id
        job.duplicate_of = None
        job.successfully_enqueued = True  # sent with its chunk
        self._buffer.append(job)
        if len(self._buffer) >= CHUNK:
            self.flush()

    def flush(self) -> None:
        """Send the buffered jobs now (one round trip; the batch counts them in the same
        transaction)."""
        chunk, self._buffer = self._buffer, []
        if chunk:
            current_adapter().enqueue_all(chunk)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.batch_id}>"


def join(jobs: Sequence[Job]) -> bool:
    """Add prepared jobs to the batch being filled, if any; False when there is none (the
    caller enqueues them itself, in no batch: a job that enqueues itself again leaves its
    batch, where it already has an outcome)."""
    batch = _filling.get()
    if batch is None:
        for job in jobs:
            job.batch_id = None
        return False
    for job in jobs:
        batch._add(job)
    return True


def parent_id() -> str | None:
    """The batch a new batch created here belongs to: the one being filled, else the batch of
    the job being performed."""
    batch = _filling.get()
    return batch.batch_id if batch is not None else _running.get()


@contextlib.contextmanager
def running(batch_id: str | None) -> Iterator[None]:
    """While a job of `batch_id` is performed (no batch is filled then: its enqueues go
    straight to their queues unless it opens its batch, `jobkit.Batch.open`)."""
    token = _running.set(batch_id)
    filling = _filling.set(None)
    try:
        yield
    finally:
        _filling.reset(filling)
        _running.reset(token)
