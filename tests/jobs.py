"""Jobs the integration tests enqueue; a real worker imports this module by path."""

from __future__ import annotations

import json
import os
import time

import redis

from jobkit import Job, around_perform, before_perform

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
    def perform(self, reason: str) -> None:
        raise RuntimeError(f"failing on purpose: {reason}")


class NoopJob(Job):
    def perform(self) -> None:
        pass
