"""The recording adapter: jobs are kept, not run, until a test says so (no Redis).

One adapter serves the ``test`` setting, `jobkit.testing.fake()` / `inline()` and
``MyJob.jobs``: whatever put it in force, the same records answer.

The controls (docs/controls.md) act here as on Redis, in memory: a unique job whose lock is
held is not recorded, a debounced job replaces the one pending in its window; both are kept
in `skipped` for tests to assert on. Nothing runs concurrently here, so `held` lists what a
concurrency limit would hold: the recorded jobs beyond the first `to` of each key.

Batches (jobkit.Batch) live in memory here (`batch_store`): each record's payload names its
batch, a performed job counts as succeeded, or as dead if it raised (there is no retry set
here), and a callback due is recorded (fake) or performed (inline) like any job.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from jobkit.adapters.base import Adapter
from jobkit.adapters.inline import perform_payload, wire_copy
from jobkit.arguments import deserialize
from jobkit.batch.memory import MemoryBatches
from jobkit.cancellation import Cancellation
from jobkit.imports import class_path

if TYPE_CHECKING:
    from jobkit.batch.state import Outcome
    from jobkit.job import Job

__all__ = ["EnqueuedJob", "SkippedJob", "TestAdapter"]


@dataclass
class EnqueuedJob:
    """A recorded job: its payload exactly as a worker would receive it, readable in tests."""

    payload: dict[str, Any]
    #: How far `jobkit.testing.advance` had moved time when the job was recorded: a delay
    #: counts from that moment, as it would had the time really passed.
    clock_offset: float = field(default=0.0, repr=False, compare=False)

    @property
    def job_class(self) -> str:
        """The job class's import path, as on the wire."""
        return self.payload["job_class"]

    @property
    def job_id(self) -> str:
        return self.payload["job_id"]

    @property
    def queue(self) -> str:
        return self.payload["queue_name"]

    @property
    def priority(self) -> int | None:
        return self.payload["priority"]

    @property
    def at(self) -> float | None:
        """When the job is due (Unix seconds), or None to run now."""
        return self.payload["scheduled_at"]

    @property
    def due(self) -> float:
        """When the job is due on the test clock (Unix seconds; 0 for "now")."""
        return 0.0 if self.at is None else self.at + self.clock_offset

    @property
    def args(self) -> list[Any]:
        """The positional arguments as `perform` will get them (records loaded again)."""
        return deserialize(self.payload["args"], self.payload["kwargs"])[0]

    @property
    def kwargs(self) -> dict[str, Any]:
        return deserialize(self.payload["args"], self.payload["kwargs"])[1]

    def control(self, name: str) -> dict[str, Any] | None:
        """The payload's control `name` ("unique", "concurrency", "debounce"), or None."""
        controls = self.payload.get("controls") or {}
        return controls.get(name)

    @property
    def batch_id(self) -> str | None:
        """The batch the job belongs to (jobkit.Batch), or None."""
        return self.payload.get("batch")

    @property
    def unique_key(self) -> str | None:
        return (self.control("unique") or {}).get("key")

    @property
    def concurrency_key(self) -> str | None:
        return (self.control("concurrency") or {}).get("key")

    @property
    def debounce_key(self) -> str | None:
        return (self.control("debounce") or {}).get("key")

    def matches(self, job: type[Job] | str | None = None, queue: str | None = None) -> bool:
        """Whether this record is of `job` (a class or its path) and on `queue`, when given."""
        name = job if isinstance(job, str) or job is None else class_path(job)
        return (name is None or self.job_class == name) and (queue is None or self.queue == queue)

    def __repr__(self) -> str:
        shown = ", ".join([*(repr(a) for a in self.payload["args"]),
                           *(f"{k}={v!r}" for k, v in self.payload["kwargs"].items())])
        when = f" at={self.at}" if self.at else ""
        return f"{self.job_class}({shown}) queue={self.queue!r}{when}"


@dataclass
class SkippedJob:
    """A job a control kept from running: a unique job's duplicate (`by`: the job holding the
    lock) or a debounced job replaced by a later one in its window (`by`: that job)."""

    record: EnqueuedJob
    reason: Literal["unique", "debounced"]
    by: str

    def matches(self, job: type[Job] | str | None = None, queue: str | None = None) -> bool:
        return self.record.matches(job, queue)


@dataclass
class TestAdapter(Adapter):
    """Records each job's payload after a JSON round trip (so an argument that could not
    travel fails at enqueue, as in production); performs only when told to.

    `perform_at_enqueue` makes it inline mode; `perform_now`, when set (by jobkit.testing's
    perform blocks), decides per job instead: a job it accepts is performed at enqueue, any
    other is recorded with the controls applied. `clock_offset` is how far
    `testing.advance` has moved time forward.
    """

    __test__ = False  # not a pytest test class
    name = "test"

    perform_at_enqueue: bool = False
    perform_now: Callable[[EnqueuedJob], bool] | None = field(default=None, repr=False)
    enqueued: list[EnqueuedJob] = field(default_factory=list)
    performed: list[EnqueuedJob] = field(default_factory=list)
    skipped: list[SkippedJob] = field(default_factory=list)
    clock_offset: float = 0.0
    #: unique key -> (job id holding it, when it expires on the test clock)
    _locks: dict[str, tuple[str, float]] = field(default_factory=dict, repr=False)
    #: Records `jobkit.cancel` removed, oldest first (the dead set's "cancelled" entries).
    cancelled: list[EnqueuedJob] = field(default_factory=list)
    #: Ids `jobkit.cancel` was called with: `job.cancelled` is true for a job with one.
    cancelled_ids: set[str] = field(default_factory=set)
    batch_store: MemoryBatches = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.batch_store = MemoryBatches(self._push_callback, wire_copy)

    def batches(self) -> MemoryBatches:
        return self.batch_store

    def enqueue(self, job: Job) -> None:
        record = EnqueuedJob(wire_copy(job), clock_offset=self.clock_offset)
        if not self._admit(job, record):
            return
        if record.batch_id is not None:
            self.batch_store.count(record.batch_id, 1)
        self._keep(record)

    def _push_callback(self, payload: dict[str, Any]) -> None:
        self._keep(EnqueuedJob(payload, clock_offset=self.clock_offset))

    def _performs_at_enqueue(self, record: EnqueuedJob) -> bool:
        if self.perform_now is not None:
            return self.perform_now(record)
        return self.perform_at_enqueue

    def _keep(self, record: EnqueuedJob) -> None:
        if self._performs_at_enqueue(record):
            self.perform(record)
        else:
            self.enqueued.append(record)

    def _admit(self, job: Job, record: EnqueuedJob) -> bool:
        """Apply the unique and debounce controls; False when the job is not recorded."""
        now = time.time()
        unique = record.control("unique")
        if unique is not None:
            holder = self._locks.get(unique["key"])
            if holder is not None and holder[1] > now + self.clock_offset:
                job.duplicate_of = holder[0]
                self.skipped.append(SkippedJob(record, "unique", holder[0]))
                return False
            self._locks[unique["key"]] = (record.job_id, max(record.due, now + self.clock_offset)
                                          + unique["for"])
        debounce = record.control("debounce")
        if debounce is not None and not self._performs_at_enqueue(record):
            pending = next((i for i, r in enumerate(self.enqueued)
                            if r.debounce_key == debounce["key"]), None)
            if pending is not None:
                replaced = self.enqueued[pending]
                record.payload["scheduled_at"] = replaced.at
                self.enqueued[pending] = record
                self.skipped.append(SkippedJob(replaced, "debounced", record.job_id))
                return False
            record.payload["scheduled_at"] = max(record.at or now, now) + debounce["within"]
        return True

    def recorder(self) -> TestAdapter:
        return self

    def cancel(self, job_id: str, hard: bool = False) -> Cancellation:
        """Remove the recorded job with this id into `cancelled`; either way, a job with this
        id sees `cancelled` true from now on (how a test simulates a cancel while running)."""
        self.cancelled_ids.add(job_id)
        record = next((r for r in self.enqueued if r.job_id == job_id), None)
        if record is None:
            return Cancellation(job_id, "not_found", None, hard)
        self.enqueued.remove(record)
        self._unlock(record)
        self._record_in_batch(record, "dead")  # as in Redis (controls.release.let_go)
        self.cancelled.append(record)
        return Cancellation(job_id, "queued" if record.at is None else "scheduled",
                            record.queue, hard)

    def is_cancelled(self, job_id: str) -> bool:
        return job_id in self.cancelled_ids

    def perform(self, record: EnqueuedJob) -> Any:
        """Run a record as a worker would (class found by its path), and remember it ran. Its
        unique lock goes as it starts or once it succeeded, per its class (a failed job keeps
        it, as a job waiting for a retry does)."""
        self.performed.append(record)
        unique = record.control("unique")
        if unique is not None and unique["until"] == "start":
            self._unlock(record)
        try:
            result = perform_payload(record.payload)
        except BaseException:
            self._record_in_batch(record, "dead")
            raise
        self._record_in_batch(record, "succeeded")
        if unique is not None and unique["until"] == "success":
            self._unlock(record)
        return result

    def _record_in_batch(self, record: EnqueuedJob, outcome: Outcome) -> None:
        if record.batch_id is not None:
            self.batch_store.record(record.batch_id, record.job_id, outcome)

    def _unlock(self, record: EnqueuedJob) -> None:
        key = record.unique_key
        if key is not None and self._locks.get(key, ("",))[0] == record.job_id:
            del self._locks[key]

    def held(self, job: type[Job] | str | None = None, queue: str | None = None
             ) -> list[EnqueuedJob]:
        """Recorded jobs a concurrency limit would hold, were they all fetched now: those
        after the first `to` of their key, in order."""
        seen: Counter[str] = Counter()
        held = []
        for record in self.enqueued:
            control = record.control("concurrency")
            if control is not None:
                seen[control["key"]] += 1
                if seen[control["key"]] > control["to"]:
                    held.append(record)
        return [r for r in held if r.matches(job, queue)]

    def skipped_jobs(self, job: type[Job] | str | None = None, queue: str | None = None
                     ) -> list[SkippedJob]:
        """Jobs the unique and debounce controls kept from running, oldest first."""
        return [s for s in self.skipped if s.matches(job, queue)]

    def jobs(self, job: type[Job] | str | None = None, queue: str | None = None
             ) -> list[EnqueuedJob]:
        """Recorded jobs not yet performed, of one class and/or queue when given."""
        return [r for r in self.enqueued if r.matches(job, queue)]

    def clear(self, job: type[Job] | str | None = None) -> None:
        """Forget recorded jobs not yet performed (of one class, or all), with their unique
        locks, and the skipped jobs of that class."""
        for record in self.enqueued:
            if record.matches(job):
                self._unlock(record)
        self.enqueued[:] = [r for r in self.enqueued if not r.matches(job)]
        self.skipped[:] = [s for s in self.skipped if not s.matches(job)]

    def drain(self, job: type[Job] | str | None = None, until: float | None = None) -> int:
        """Perform recorded jobs, and the jobs they enqueue, until none is left; returns how
        many. With `until` (Unix seconds on the test clock), only jobs due by then run,
        soonest first; the others stay recorded."""
        count = 0
        while ready := [r for r in self.enqueued if r.matches(job)
                        and (until is None or r.due <= until)]:
            record = ready[0] if until is None else min(ready, key=lambda r: r.due)
            self.enqueued.remove(record)
            self.perform(record)
            count += 1
        return count
