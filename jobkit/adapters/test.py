"""The recording adapter: jobs are kept, not run, until a test says so (no Redis).

One adapter serves the ``test`` setting, `jobkit.testing.fake()` / `inline()` and
``MyJob.jobs``: whatever put it in force, the same records answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jobkit.adapters.base import Adapter
from jobkit.adapters.inline import perform_payload, wire_copy
from jobkit.arguments import deserialize
from jobkit.imports import class_path

if TYPE_CHECKING:
    from jobkit.job import Job

__all__ = ["EnqueuedJob", "TestAdapter"]


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
class TestAdapter(Adapter):
    """Records each job's payload after a JSON round trip (so an argument that could not
    travel fails at enqueue, as in production); performs only when told to.

    `perform_at_enqueue` makes it inline mode; `clock_offset` is how far `testing.advance`
    has moved time forward.
    """

    __test__ = False  # not a pytest test class
    name = "test"

    perform_at_enqueue: bool = False
    enqueued: list[EnqueuedJob] = field(default_factory=list)
    performed: list[EnqueuedJob] = field(default_factory=list)
    clock_offset: float = 0.0

    def enqueue(self, job: Job) -> None:
        record = EnqueuedJob(wire_copy(job), clock_offset=self.clock_offset)
        if self.perform_at_enqueue:
            self.perform(record)
        else:
            self.enqueued.append(record)

    def recorder(self) -> TestAdapter:
        return self

    def perform(self, record: EnqueuedJob) -> Any:
        """Run a record as a worker would (class found by its path), and remember it ran."""
        self.performed.append(record)
        return perform_payload(record.payload)

    def jobs(self, job: type[Job] | str | None = None, queue: str | None = None
             ) -> list[EnqueuedJob]:
        """Recorded jobs not yet performed, of one class and/or queue when given."""
        return [r for r in self.enqueued if r.matches(job, queue)]

    def clear(self, job: type[Job] | str | None = None) -> None:
        """Forget recorded jobs not yet performed (of one class, or all)."""
        self.enqueued[:] = [r for r in self.enqueued if not r.matches(job)]

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
