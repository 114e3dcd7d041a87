"""The durable adapter: jobs become Celery messages in Redis, run by `jobkit worker`."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

from jobkit.adapters.base import Adapter
from jobkit.celery_message import build_message
from jobkit.config import current_settings
from jobkit.errors import JobClassError
from jobkit.job_sets import ScheduledSet
from jobkit.redis_client import get_redis

if TYPE_CHECKING:
    import redis

    from jobkit.job import Job


logger = logging.getLogger(__name__)


class CeleryAdapter(Adapter):
    """Due now: LPUSH to the queue's list. Due later: the scheduled set (see scheduling.py)."""

    name = "celery"

    def enqueue(self, job: Job) -> None:
        self._send(job, get_redis())

    def enqueue_all(self, jobs: Sequence[Job]) -> None:
        """Every job in one pipelined round trip (not a transaction: each push stands alone)."""
        with get_redis().pipeline(transaction=False) as pipe:
            for job in jobs:
                self._send(job, pipe)
            pipe.execute()

    def _send(self, job: Job, client: redis.Redis) -> None:
        _check_importable(type(job))
        _warn_if_unconsumed(job.queue_name)
        task_id = str(uuid.uuid4())
        payload = job.serialize()
        key, message = build_message(payload, task_id, repr(tuple(job.arguments)),
                                     repr(job.kwargs))
        due = job.scheduled_at.timestamp() if job.scheduled_at else None
        if due is not None and due > time.time():
            ScheduledSet().add(due, key, message, pipe=client, job_id=job.job_id,
                               job_class=payload["job_class"], queue=job.queue_name)
        else:
            client.lpush(key, message)
        job.provider_job_id = task_id


def _warn_if_unconsumed(queue: str) -> None:
    """In development, say so when no configured worker would ever take this queue."""
    settings = current_settings()
    if settings.environment == "development" and queue not in settings.queue_names:
        logger.warning("job enqueued to queue %r, which no configured worker consumes "
                       "(queues: %s)", queue, ", ".join(settings.queue_names))


def _check_importable(cls: type) -> None:
    """A worker finds a job class by import path; refuse classes it could never import."""
    if "<locals>" in cls.__qualname__ or cls.__module__ == "__main__":
        raise JobClassError(
            f"{cls.__module__}.{cls.__qualname__} cannot be imported by a worker: define job "
            "classes at the top level of an importable module"
        )
