"""Jobs the integration tests enqueue; a real worker imports this module by path."""

from __future__ import annotations

import json
import os
import time

import redis

from jobkit import Job, around_perform, before_perform, discard_on, retry_on

RESULTS = "test:results"


def _redis() -> redis.Redis:
    return redis.Redis.from_url(os.environ["REDIS_URL"])


def record(**fields) -> None:
    _redis().rpush(RESULTS, json.dumps(fields, default=repr))


class TaskLoggerJob(Job):
    """The Sidekiq tutorials' example: log that a task ran."""

    def perform(self, task_id: int) -> None:
        record(job="TaskLoggerJob", task_id=task_id, job_id=self.job_id,
               executions=self.executions, queue=self.queue_name, priority=self.priority,
               provider_job_id=self.provider_job_id, enqueued_at=self.enqueued_at.isoformat(),
               scheduled_at=self.scheduled_at and self.scheduled_at.isoformat(),
               ran_at=time.time())


class EchoJob(Job):
    """Records the repr and type of every argument it receives."""

    queue_as = "default"

    def perform(self, *args, **kwargs) -> None:
        record(job="EchoJob", args=repr(args), kwargs=repr(kwargs), job_id=self.job_id)


class CallbackJob(Job):
    @before_perform
    def mark_before(self) -> None:
        record(job="CallbackJob", step="before")

    @around_perform
    def wrap(self, proceed) -> None:
        record(job="CallbackJob", step="around-in")
        proceed()
        record(job="CallbackJob", step="around-out")

    def perform(self) -> None:
        record(job="CallbackJob", step="perform")


class FailingJob(Job):
    max_retries = 0  # straight to the dead set

    def perform(self, reason: str) -> None:
        raise RuntimeError(f"failing on purpose: {reason}")


@retry_on(ConnectionError, wait=0.1, attempts=5)
class FlakyJob(Job):
    """Fails twice, then succeeds."""

    def perform(self, name: str) -> None:
        record(job="FlakyJob", name=name, executions=self.executions)
        if self.executions < 3:
            raise ConnectionError(f"flaky {self.executions}")


@retry_on(ValueError, wait=0, attempts=2)
class FixableJob(Job):
    """Fails until the test sets test:fixed; records every attempt and the exhaustion."""

    def perform(self) -> None:
        record(job="FixableJob", executions=self.executions)
        if not _redis().get("test:fixed"):
            raise ValueError("not fixed yet")

    def retries_exhausted(self, error: BaseException) -> None:
        record(job="FixableJob", exhausted=repr(error))


@discard_on(KeyError)
class DiscardedJob(Job):
    def perform(self) -> None:
        raise KeyError("gone")

    def after_discard(self, error: BaseException) -> None:
        record(job="DiscardedJob", discarded=repr(error))


class KilledJob(Job):
    def perform(self) -> None:
        raise RuntimeError("hopeless")

    def retry_in(self, retry_count: int, error: BaseException) -> str:
        return "kill"


class NoopJob(Job):
    def perform(self) -> None:
        pass


class CountJob(Job):
    """Marks its number done (a set, so a repeated run is visible as runs > done)."""

    def perform(self, n: int, sleep: float = 0.0) -> None:
        if sleep:
            time.sleep(sleep)
        client = _redis()
        client.sadd("test:done", n)
        client.incr("test:runs")


class SleepJob(Job):
    """Records its start and finish around a sleep."""

    def perform(self, name: str, seconds: float) -> None:
        record(job="SleepJob", name=name, step="start")
        time.sleep(seconds)
        record(job="SleepJob", name=name, step="finish")
