"""`jobkit.Batch`: a group of jobs with callback jobs (docs/batches.md).

    with jobkit.Batch(on_success=Report, on_death=Alert.set(queue="ops"),
                      description="import 2024-05") as batch:
        for row in rows:
            ImportRow.perform_later(row)

A callback is a Job class or `Job.set(...)` (a class with options), whose job gets the batch
id as its one argument, or a job, which runs as it was built (`batch.on("success",
Notify(batch.batch_id, "ops"))` gives it the id: a type checker sees its arguments).
"""

from __future__ import annotations

import copy
import logging
import time
import uuid
from types import TracebackType
from typing import Any

import redis
from redis.exceptions import ReadOnlyError

from jobkit.adapters import current_adapter
from jobkit.batch.scope import OpenBatch, parent_id
from jobkit.batch.state import EVENTS, Event
from jobkit.controls.release import RETRY_SECONDS
from jobkit.job import ConfiguredJob, Job

__all__ = ["Batch", "Callback"]

logger = logging.getLogger(__name__)

_SEAL_PAUSE_SECONDS = 0.25

#: A callback: a Job class, a class with options (`Job.set(...)`), or a job instance.
Callback = type[Job] | ConfiguredJob[Any, Any, Any] | Job


class Batch(OpenBatch):
    """Create a batch: ``with Batch(...) as batch:`` enqueues its jobs (and child batches).

    Its callbacks fire at most once each, when its condition is met: `on_success` when every
    member succeeded (a discarded job counts as succeeded, as in Sidekiq), `on_complete` when
    every member finished (succeeded, discarded or dead), `on_death` when the first member
    died. No callback fires before the block ends. If the block raises, the jobs already
    sent still run, and no callback fires.
    """

    def __init__(self, *, on_success: Callback | None = None,
                 on_complete: Callback | None = None, on_death: Callback | None = None,
                 description: str = "") -> None:
        if not isinstance(description, str):
            raise TypeError(f"Batch description must be a string, got {description!r}")
        super().__init__(str(uuid.uuid4()))
        self.description = description
        self.callbacks: dict[str, Job] = {}
        self.parent_id: str | None = None
        self._created = False
        given: dict[Event, Callback | None] = {"success": on_success, "complete": on_complete,
                                               "death": on_death}
        for event, callback in given.items():
            if callback is not None:
                self.on(event, callback)

    def on(self, event: Event, callback: Callback) -> Batch:
        """Set the callback of `event` ("success", "complete" or "death"), before the block
        starts; e.g. a job built with the batch's id: ``batch.on("success",
        Notify(batch.batch_id, "ops"))``."""
        if event not in EVENTS:
            raise ValueError(f"Batch.on: the events are {', '.join(EVENTS)}, not {event!r}")
        if self._created:
            raise RuntimeError(f"batch {self.batch_id} was already created: set its callbacks "
                               "before its block starts")
        self.callbacks[event] = _callback_job(f"on_{event}", callback, self.batch_id)
        return self

    def __enter__(self) -> Batch:
        if self._created:
            raise RuntimeError(f"batch {self.batch_id} was already created; to add jobs to "
                               "it, use `with jobkit.Batch.open(batch_id):`")
        store = current_adapter().batches()
        self.parent_id = parent_id()
        store.create(self.batch_id, self.parent_id, self.description,
                     {event: store.callback_entry(self.callbacks[event])
                      for event in EVENTS if event in self.callbacks})
        self._created = True
        super().__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        aborted = exc_type is not None
        try:
            super().__exit__(exc_type, exc, tb)
        except BaseException:
            aborted = True
            raise
        finally:
            self._seal(aborted)

    def _seal(self, aborted: bool) -> None:
        """Seal the batch. Its jobs are all sent by now, and an unsealed batch never calls
        back: through a Redis restart or failover the seal is tried again for up to
        RETRY_SECONDS, then raises. After an error in the block (its own error goes on, not
        this one) it is tried once: unsealed or aborted, no callback of it runs."""
        deadline = time.monotonic() + RETRY_SECONDS
        while True:
            try:
                self.store.seal(self.batch_id, aborted)
                return
            except redis.RedisError as exc:
                unreachable = isinstance(exc, (redis.ConnectionError, redis.TimeoutError,
                                               ReadOnlyError))
                if aborted:
                    logger.warning("batch %s (its block raised) not sealed: %s",
                                   self.batch_id, exc)
                    return
                if not unreachable or time.monotonic() >= deadline:
                    raise
                time.sleep(_SEAL_PAUSE_SECONDS)

    @staticmethod
    def open(batch_id: str | None) -> OpenBatch:
        """An existing batch, to add jobs to: from one of its jobs, ``with
        jobkit.Batch.open(self.batch_id):`` (they count before that job finishes).
        LookupError when there is no batch (None: a job in no batch), it expired, or it is
        already complete."""
        if batch_id is None:
            raise LookupError("no batch to open (the job is in no batch: its batch_id is None)")
        status = current_adapter().batches().status(batch_id)
        if status is None:
            raise LookupError(f"batch {batch_id} not found (expired, or never created)")
        if status.complete:
            raise LookupError(f"batch {batch_id} is complete: no job can be added to it")
        return OpenBatch(batch_id)


def _callback_job(name: str, callback: Any, batch_id: str) -> Job:
    """The callback's job, prepared (a class's with the batch id as its argument); refused
    when it could not run as a callback."""
    options: dict[str, Any] = {}
    if isinstance(callback, type) and issubclass(callback, Job):
        job: Job = callback.__new__(callback)
        job._setup([batch_id], {})
    elif isinstance(callback, ConfiguredJob):
        job_class: type[Job] = callback.job_class
        job = job_class.__new__(job_class)
        job._setup([batch_id], {})
        options = callback.options
    elif isinstance(callback, Job):
        job = copy.copy(callback)  # the caller's job stays as it was
        job.job_id = str(uuid.uuid4())
        job.batch_id = None  # a callback belongs to no batch (a job a batch job received does)
    else:
        raise TypeError(f"Batch {name} must be a Job class, Job.set(...) or a job, "
                        f"got {callback!r}")
    cls = type(job)
    if options.get("wait") is not None or options.get("wait_until") is not None \
            or job.scheduled_at is not None:
        raise ValueError(f"Batch {name}={cls.__qualname__}: a callback runs when its event "
                         "happens; it cannot be delayed")
    if cls.unique_for is not None or cls.debounce is not None:
        raise ValueError(f"Batch {name}={cls.__qualname__}: a callback cannot be unique or "
                         "debounced (it is pushed as it is, once)")
    try:
        job._prepare(**options)
    except TypeError as exc:
        if isinstance(callback, Job):
            raise
        raise TypeError(f"Batch {name}: a callback class's perform takes the batch id as its "
                        f"one argument: {exc}") from None
    return job
