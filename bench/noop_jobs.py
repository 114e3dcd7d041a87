"""The no-op job on both sides of the benchmark, importable by either worker as `bench.noop_jobs`.

* jobkit: `NoopJob`, run by ``jobkit worker`` (which finds it by import path).
* raw Celery: `app` and its `noop` task, run by ``celery -A bench.noop_jobs worker``. The app has
  jobkit's reliability settings (acks late, prefetch 1, reject on worker lost, JSON, no results)
  and sends to the queue ``default``, so the only difference measured is jobkit itself.

The broker is ``REDIS_URL`` from the environment, read at import (the benchmark sets it first).
"""

from __future__ import annotations

import os

from celery import Celery

from jobkit import Job

__all__ = ["NoopJob", "app", "noop"]


class NoopJob(Job):
    """jobkit's no-op job."""

    def perform(self) -> None:
        pass


app = Celery("bench_noop", set_as_current=False)
app.conf.update(
    broker_url=os.environ.get("REDIS_URL", "redis://localhost:6379/0"),
    task_serializer="json",
    accept_content=["json"],
    result_backend=None,
    task_ignore_result=True,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_default_queue="default",
    broker_connection_retry_on_startup=True,
)


@app.task(name="bench.noop_jobs.noop")
def noop() -> None:
    """raw Celery's no-op task."""
    return None
