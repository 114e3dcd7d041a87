"""Plain Celery tasks, as an app coming from Celery has them (tests/test_plain_celery.py).

`app` is the app's own Celery app, the producer: tests point its broker at their Redis. The
tasks record what they do in the Redis of REDIS_URL (the worker's).
"""

from __future__ import annotations

import os
import signal
import time

import redis
from celery import Celery, shared_task
from celery.exceptions import Reject

from jobkit import Job

app = Celery("plain_celery_tasks")  # task_default_queue: Celery's "celery"


def _redis() -> redis.Redis:
    return redis.Redis.from_url(os.environ["REDIS_URL"])


@app.task
def record(word: str) -> None:
    _redis().rpush("plain:runs", word)


@shared_task
def crash(word: str, *, flag: str = "plain:crash") -> None:
    """Raises while `flag` is set: no retry, so the dead set."""
    if _redis().exists(flag):
        raise LookupError(f"no {word} yet")
    _redis().rpush("plain:runs", f"crash:{word}")


@shared_task(autoretry_for=(ValueError,), max_retries=1, default_retry_delay=0)
def exhausted(word: str) -> None:
    """Fails every run: one retry (Celery's autoretry), then the dead set."""
    _redis().rpush("plain:runs", f"exhausted:{word}")
    raise ValueError(f"{word} keeps failing")


@shared_task(bind=True, max_retries=3)
def retries_later(self, word: str, countdown: float) -> None:
    """Fails its first run and retries itself with Celery's self.retry(countdown=...)."""
    _redis().rpush("plain:runs", f"{word}:{self.request.retries}")
    if self.request.retries == 0:
        raise self.retry(countdown=countdown)


@shared_task(time_limit=1)
def hangs() -> None:
    """Runs past its hard time limit: the pool process is killed."""
    time.sleep(60)


@shared_task
def dies() -> None:
    """Its pool process is killed (as by the OOM killer) on every run."""
    _redis().rpush("plain:runs", "dies")
    os.kill(os.getpid(), signal.SIGKILL)


@shared_task
def exits() -> None:
    """Raises SystemExit, which ends its pool process: failed for good, not requeued."""
    _redis().rpush("plain:runs", "exits")
    raise SystemExit(3)


@shared_task(acks_late=False)
def early_ack() -> None:
    """Acknowledged when it starts (as Celery does with acks_late=False), then fails."""
    raise LookupError("acknowledged before it failed")


@shared_task
def sleeps() -> None:
    """Runs until revoked with terminate=True."""
    _redis().rpush("plain:runs", "sleeps")
    time.sleep(60)


@shared_task
def fails_when_told() -> None:
    """Waits for `plain:go` (at most 60 s), then fails."""
    _redis().rpush("plain:runs", "fails_when_told")
    for _ in range(600):
        if _redis().exists("plain:go"):
            break
        time.sleep(0.1)
    raise LookupError("told to fail")


@shared_task
def rejects_once(word: str) -> None:
    """Rejects its first run with requeue (kombu puts the message back), then records."""
    if _redis().incr("plain:rejected") == 1:
        raise Reject("not now", requeue=True)
    _redis().rpush("plain:runs", f"rejects_once:{word}")


class ExitsJob(Job):
    """A job whose perform raises SystemExit: counted as killed, against its retries."""

    max_retries = 1

    def perform(self) -> None:
        _redis().rpush("plain:runs", "exits_job")
        raise SystemExit(3)
