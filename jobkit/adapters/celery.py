"""The durable adapter: jobs become Celery messages in Redis, run by `jobkit worker`."""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING

from jobkit.adapters.base import Adapter
from jobkit.celery_message import build_message
from jobkit.config import current_settings
from jobkit.errors import NotReplicatedError
from jobkit.imports import class_path, require_importable
from jobkit.job_sets import ScheduledSet
from jobkit.keys import QUEUES, wake_key
from jobkit.on_demand import start_worker_if_needed
from jobkit.queues import WAKE_TOKENS_MAX
from jobkit.redis_client import get_redis

if TYPE_CHECKING:
    from redis.client import Pipeline

    from jobkit.job import Job


logger = logging.getLogger(__name__)

REPLICA_WAIT_MS = 1000  # wait_for_replicas: how long an enqueue waits for replicas (WAIT)


class CeleryAdapter(Adapter):
    """Due now: LPUSH to the queue's list. Due later: the scheduled set (see scheduling.py)."""

    name = "celery"

    def enqueue(self, job: Job) -> None:
        self.enqueue_all((job,))

    def enqueue_all(self, jobs: Sequence[Job]) -> None:
        """Every job in one pipelined round trip (not a transaction: each push stands alone),
        then wake tokens for the queues that got jobs now."""
        ready: dict[str, list[str]] = defaultdict(list)  # list key -> messages, in order
        woken: Counter[str] = Counter()
        queues: set[str] = set()
        scheduled = ScheduledSet()
        with get_redis().pipeline(transaction=False) as pipe:
            for job in jobs:
                queue, sent = self._message(job, pipe, scheduled)
                queues.add(queue)
                if sent is not None:
                    ready[sent[0]].append(sent[1])
                    woken[queue] += 1
            for key, messages in ready.items():
                pipe.lpush(key, *messages)  # one command per list, same order as one by one
            if queues:
                pipe.sadd(QUEUES, *queues)  # for the dashboard
            for queue, count in woken.items():
                pipe.lpush(wake_key(queue), *["1"] * min(count, WAKE_TOKENS_MAX))
                pipe.ltrim(wake_key(queue), 0, WAKE_TOKENS_MAX - 1)
            replicas = current_settings().wait_for_replicas
            if replicas:
                pipe.wait(replicas, REPLICA_WAIT_MS)
            results = pipe.execute()
        if replicas and results[-1] < replicas:
            raise NotReplicatedError(
                f"enqueue confirmed by {results[-1]} replica(s) of the {replicas} wanted "
                f"(wait_for_replicas) within {REPLICA_WAIT_MS} ms: not counted as enqueued")
        if queues and current_settings().mode == "on_demand":
            start_worker_if_needed(queues)

    def _message(self, job: Job, pipe: Pipeline, scheduled: ScheduledSet
                 ) -> tuple[str, tuple[str, str] | None]:
        """The job's queue, and its (list key, message) if it is due now; else it is parked
        in the scheduled set."""
        queue, key, message = job_message(job)
        _warn_if_unconsumed(queue)
        due = job.scheduled_at.timestamp() if job.scheduled_at else None
        if due is not None and due > time.time():
            scheduled.add(due, key, message, pipe=pipe, job_id=job.job_id,
                          job_class=class_path(type(job)), queue=queue)
            return queue, None
        return queue, (key, message)


def job_message(job: Job) -> tuple[str, str, str]:
    """A prepared job's (queue, list key, message) as a worker will receive it; sets its
    `provider_job_id`. JobClassError when no worker could import its class."""
    require_importable(type(job), "job class")
    task_id = str(uuid.uuid4())
    payload = job.serialize()
    key, message = build_message(payload, task_id, repr(tuple(job.arguments)), repr(job.kwargs))
    job.provider_job_id = task_id
    return payload["queue_name"], key, message


_warned_queues: set[str] = set()  # per process: a bulk enqueue warns once, not per job


def _warn_if_unconsumed(queue: str) -> None:
    """In development, say so (once per queue) when no configured worker would ever take
    this queue."""
    settings = current_settings()
    if settings.environment == "development" and queue not in settings.queue_names \
            and queue not in _warned_queues:
        _warned_queues.add(queue)
        logger.warning("job enqueued to queue %r, which no configured worker consumes "
                       "(queues: %s)", queue, ", ".join(settings.queue_names))
