"""What `jobkit worker` adds to a Celery worker: lazy job tasks, the dead set for unknown
classes, and the scheduled-set poller."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import redis
from celery import bootsteps, signals
from celery.app.trace import build_tracer
from celery.worker.consumer import Consumer as CeleryConsumer

from jobkit.config import current_settings
from jobkit.errors import JobClassError
from jobkit.job import resolve_job_class
from jobkit.job_sets import DeadSet, describe_error
from jobkit.queues import list_key
from jobkit.recovery import process_info
from jobkit.redis_client import get_redis
from jobkit.scheduling import SchedulePoller

__all__ = ["Consumer", "RedisPolicyCheck", "SchedulePollerStep", "check_eviction_policy"]

logger = logging.getLogger(__name__)


class _LazyStrategies(dict):
    """Celery's strategy map, building the strategy of a Job class met for the first time."""

    def __init__(self, consumer: Consumer) -> None:
        super().__init__()
        self.consumer = consumer

    def __missing__(self, name: str) -> Any:
        app = self.consumer.app
        try:
            task = app.tasks[name]
        except KeyError:  # NotRegistered: on_unknown_task below takes over
            raise KeyError(name) from None
        task.__trace__ = build_tracer(name, task, app.loader, self.consumer.hostname, app=app)
        strategy = self[name] = task.start_strategy(app, self.consumer)
        return strategy


class Consumer(CeleryConsumer):
    """Celery's consumer with lazy job resolution; unknown jobs go to the dead set, not away."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.strategies = _LazyStrategies(self)

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        """Keep the message in the dead set, then ack it.

        Celery's own handler logs "ignored and discarded" and drops the message; the only parts
        of it kept here are the reject (ack) and the signal, after the message is safe.
        """
        name = message.headers.get("task")
        reason = JobClassError(f"unknown job class {name!r}: {_why_unknown(name)}")
        _keep(message, reason)
        logger.error("%s; the job is kept in the dead set: retry it once the code is deployed",
                     reason)
        message.reject_log_error(logger, self.connection_errors)
        signals.task_unknown.send(sender=self, message=message, exc=exc, name=name,
                                  id=message.headers.get("id"))

    # Celery acks or rejects these and only logs them; keep them in the dead set first.

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        _keep(message, exc)
        super().on_invalid_task(body, message, exc)

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        _keep(message, exc)
        super().on_decode_error(message, exc)

    def on_unknown_message(self, body: Any, message: Any) -> None:
        _keep(message, "not a Celery task message")
        super().on_unknown_message(body, message)


def _keep(message: Any, reason: BaseException | str) -> None:
    """Put a message the worker will not run in the dead set, exactly as received."""
    try:
        payload = _payload_of(message)
    except Exception:  # a body we cannot read is kept as it is
        payload = None
    raw = message._raw  # the envelope exactly as it came out of the Redis list
    properties = raw.get("properties", {})
    key = list_key(properties.get("delivery_info", {}).get("routing_key", "default"),
                   properties.get("priority"))
    job = payload if isinstance(payload, dict) else {}
    headers = raw.get("headers") or {}
    DeadSet().add(time.time(), key, json.dumps(raw), job_id=job.get("job_id"),
                  job_class=headers.get("task"), queue=job.get("queue_name"), payload=payload,
                  failed_at=time.time(), **describe_error(reason))


def _why_unknown(name: Any) -> str:
    try:
        resolve_job_class(name)
    except JobClassError as exc:
        return str(exc)
    return "not a task this worker can run"


def _payload_of(message: Any) -> Any:
    args, _kwargs, _embed = message.decode()
    return args[0]


class SchedulePollerStep(bootsteps.StartStopStep):
    """Runs the scheduled-set poller for as long as the worker runs."""

    label = "jobkit scheduled poller"

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.poller: SchedulePoller | None = None

    def start(self, parent: Any) -> None:
        settings = current_settings()
        process_info.update(node=getattr(parent, "hostname", None), queues=settings.queue_names,
                            concurrency=getattr(parent, "concurrency", None),
                            started_at=time.time())
        self.poller = SchedulePoller(settings.poll_interval)
        self.poller.start()

    def stop(self, parent: Any) -> None:
        if self.poller is not None:
            self.poller.stop()


def check_eviction_policy(client: redis.Redis) -> str | None:
    """Warn loudly unless Redis is set never to evict keys; returns the policy seen.

    An evicting Redis (allkeys-lru, volatile-*, ...) deletes queues and sets under memory
    pressure, and the jobs in them are gone. INFO is used, not CONFIG GET, because managed
    Redis services often disable CONFIG.
    """
    try:
        policy = client.info("memory").get("maxmemory_policy")
    except redis.RedisError as exc:
        logger.warning("jobkit: could not read Redis's maxmemory-policy: %s", exc)
        return None
    if policy != "noeviction":
        logger.warning(
            "jobkit: Redis maxmemory-policy is %r. Under memory pressure Redis will DELETE "
            "queued jobs. Set `maxmemory-policy noeviction` on this Redis.", policy)
    return policy


class RedisPolicyCheck(bootsteps.StartStopStep):
    """At boot, the eviction-policy warning above."""

    label = "jobkit redis policy check"

    def start(self, parent: Any) -> None:
        check_eviction_policy(get_redis())
