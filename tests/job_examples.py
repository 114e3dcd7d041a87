"""Job classes for the in-process API tests (importable, so they can round-trip)."""

from __future__ import annotations

from jobkit import (
    Abort,
    Job,
    after_enqueue,
    after_perform,
    around_enqueue,
    around_perform,
    before_enqueue,
    before_perform,
)

EVENTS: list[str] = []


class AddJob(Job):
    queue_as = "storage_analysis"
    priority = 3

    def perform(self, a: int, b: int = 0, *, scale: int = 1) -> int:
        return (a + b) * scale


class ArgsJob(Job):
    def perform(self, *args, **kwargs) -> tuple:
        return args, kwargs


class DynamicQueueJob(Job):
    queue_as = staticmethod(lambda job: "urgent" if job.arguments[0] > 10 else "default")

    def perform(self, n: int) -> None:
        EVENTS.append(f"ran {n}")


class TracedJob(Job):
    @before_enqueue
    def b_enq(self) -> None:
        EVENTS.append("before_enqueue")

    @around_enqueue
    def a_enq(self, proceed) -> None:
        EVENTS.append("around_enqueue:in")
        proceed()
        EVENTS.append("around_enqueue:out")

    @after_enqueue
    def af_enq(self) -> None:
        EVENTS.append(f"after_enqueue:{self.successfully_enqueued}")

    @before_perform
    def b_perf(self) -> None:
        EVENTS.append(f"before_perform:{self.executions}")

    @around_perform
    def a_perf(self, proceed) -> None:
        EVENTS.append("around_perform:in")
        proceed()
        EVENTS.append("around_perform:out")

    @after_perform
    def af_perf(self) -> None:
        EVENTS.append("after_perform")

    def perform(self, value: str) -> str:
        EVENTS.append(f"perform:{value}")
        return value.upper()


class ChildTracedJob(TracedJob):
    @before_perform
    def child_before(self) -> None:
        EVENTS.append("child_before_perform")


class GuardedJob(Job):
    @before_enqueue
    def refuse_negative(self) -> None:
        if self.arguments[0] < 0:
            raise Abort

    @before_perform
    def skip_zero(self) -> None:
        if self.arguments[0] == 0:
            raise Abort

    def perform(self, n: int) -> int:
        EVENTS.append(f"guarded {n}")
        return n


class Outer:
    class NestedJob(Job):
        def perform(self, n: int) -> int:
            return n * 2


class ParentCallbacks(Job):
    @after_perform
    def y(self) -> None:
        EVENTS.append("parent y")

    @before_perform
    def z(self) -> None:
        EVENTS.append("parent z")

    def perform(self) -> None:
        EVENTS.append("perform")


class ChildCallbacks(ParentCallbacks):
    def z(self) -> None:  # redefined without a decorator: still a before_perform (by name)
        EVENTS.append("child z")

    @before_perform
    def y(self) -> None:  # moved to another slot
        EVENTS.append("child y")


class AbortingPerformJob(Job):
    def perform(self) -> None:
        raise Abort("from perform")
