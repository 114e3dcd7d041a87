"""Sidekiq's API in Python: queues, the job sets, worker processes and stats.

Everything reads Redis in pages; nothing loads a whole queue or set.

    from jobkit import api
    for queue in api.queues(): print(queue.name, queue.size(), queue.latency())
    api.DeadSet().find(job_id)          # -> JobEntry; .retry(entry), .delete(entry)
    api.Stats().history(7)              # processed/failed for the last 7 days
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from jobkit.celery_message import read_task_args
from jobkit.config import current_settings
from jobkit.job_sets import DeadSet, JobEntry, RetrySet, ScheduledSet
from jobkit.queues import PAUSED_KEY, QUEUES_KEY, list_key, list_keys
from jobkit.recovery import PROCESSES_KEY, heartbeat_key
from jobkit.redis_client import get_redis
from jobkit.stats import stat_key

__all__ = [
    "DeadSet",
    "JobEntry",
    "Process",
    "Queue",
    "QueuedJob",
    "RetrySet",
    "ScheduledSet",
    "Stats",
    "processes",
    "queues",
]


@dataclass(frozen=True)
class QueuedJob:
    """A job waiting in a queue, as read from its message."""

    message: str = field(repr=False)
    list_key: str
    payload: dict[str, Any] = field(repr=False)

    @property
    def job_id(self) -> str | None:
        return self.payload.get("job_id")

    @property
    def job_class(self) -> str | None:
        return self.payload.get("job_class")

    @property
    def enqueued_at(self) -> float | None:
        return self.payload.get("enqueued_at")

    @property
    def ready_at(self) -> float | None:
        """Since when it could run: its scheduled time if it had one, else its enqueue."""
        return self.payload.get("scheduled_at") or self.payload.get("enqueued_at")


def read_queued(list_key_: str, raw: bytes | str) -> QueuedJob:
    text = raw.decode() if isinstance(raw, bytes) else raw
    try:
        args = read_task_args(text)
        payload = args[0] if args and isinstance(args[0], dict) else {"args": args}
    except ValueError:
        payload = {}
    return QueuedJob(text, list_key_, payload)


class Queue:
    """One queue: its lists (one per priority step), size, latency, jobs."""

    def __init__(self, name: str, client: redis.Redis | None = None) -> None:
        self.name = name
        self.client = client or get_redis()
        self.keys = list_keys(name)

    def __repr__(self) -> str:
        return f"<Queue {self.name}>"

    def size(self) -> int:
        with self.client.pipeline(transaction=False) as pipe:
            for key in self.keys:
                pipe.llen(key)
            return sum(pipe.execute())

    def latency(self) -> float:
        """Seconds the next job to run has been waiting (0 when empty)."""
        with self.client.pipeline(transaction=False) as pipe:
            for key in self.keys:
                pipe.lindex(key, -1)
            oldest = [read_queued(key, raw).ready_at for key, raw in
                      zip(self.keys, pipe.execute(), strict=True) if raw is not None]
        stamps = [stamp for stamp in oldest if stamp]
        return max(0.0, time.time() - min(stamps)) if stamps else 0.0

    def jobs(self, start: int = 0, count: int = 25) -> list[QueuedJob]:
        """Jobs in the order they will run (lower priority steps first), paged."""
        found: list[QueuedJob] = []
        skip = start
        for key in self.keys:
            length = self.client.llen(key)
            if skip >= length:
                skip -= length
                continue
            want = count - len(found)
            # The next job is at the right end of kombu's lists.
            raw = self.client.lrange(key, -(skip + want), -(skip + 1)) if length else []
            found.extend(read_queued(key, item) for item in reversed(raw))
            skip = 0
            if len(found) >= count:
                break
        return found

    def find(self, job_id: str) -> QueuedJob | None:
        start = 0
        while page := self.jobs(start, 100):
            for job in page:
                if job.job_id == job_id:
                    return job
            start += len(page)
        return None

    def delete(self, job: QueuedJob) -> bool:
        return bool(self.client.lrem(job.list_key, 1, job.message))

    def paused(self) -> bool:
        return bool(self.client.sismember(PAUSED_KEY, self.name))

    def pause(self) -> None:
        """Workers stop taking jobs from this queue (within about a second); jobs stay."""
        self.client.sadd(PAUSED_KEY, self.name)

    def resume(self) -> None:
        self.client.srem(PAUSED_KEY, self.name)

    def clear(self) -> int:
        """Delete every waiting job; returns how many."""
        with self.client.pipeline() as pipe:
            for key in self.keys:
                pipe.llen(key)
            pipe.delete(*self.keys)
            counts = pipe.execute()
        return sum(counts[:-1])


def queues(client: redis.Redis | None = None) -> list[Queue]:
    """The configured queues, then any other queue jobs were pushed to, by name."""
    client = client or get_redis()
    configured = current_settings().queue_names
    seen = sorted(q.decode() if isinstance(q, bytes) else q for q in client.smembers(QUEUES_KEY))
    names = configured + [name for name in seen if name not in configured]
    return [Queue(name, client) for name in names]


@dataclass(frozen=True)
class Process:
    """A live worker process (consuming channel), from its heartbeat."""

    id: str
    info: dict[str, Any]
    in_flight: list[QueuedJob]

    @property
    def hostname(self) -> str:
        return self.info.get("hostname", "?")

    @property
    def pid(self) -> int | None:
        return self.info.get("pid")

    @property
    def beat_at(self) -> float | None:
        return self.info.get("beat_at")


def processes(client: redis.Redis | None = None) -> list[Process]:
    """Worker processes whose heartbeat is alive, with the jobs each holds (running or
    prefetched)."""
    client = client or get_redis()
    ids = sorted(i.decode() if isinstance(i, bytes) else i for i in client.smembers(PROCESSES_KEY))
    found = []
    for process_id in ids:
        beat = client.get(heartbeat_key(process_id))
        if beat is None:
            continue
        held = client.hvals(f"jobkit:unacked:{process_id}")
        in_flight = []
        for raw in held:
            message, _exchange, routing_key = json.loads(raw)
            key = list_key(routing_key, message.get("properties", {}).get("priority"))
            in_flight.append(read_queued(key, json.dumps(message)))
        found.append(Process(process_id, json.loads(beat), in_flight))
    return found


class Stats:
    """Processed and failed totals, and their daily history."""

    def __init__(self, client: redis.Redis | None = None) -> None:
        self.client = client or get_redis()

    @property
    def processed(self) -> int:
        return int(self.client.get(stat_key("processed")) or 0)

    @property
    def failed(self) -> int:
        return int(self.client.get(stat_key("failed")) or 0)

    def history(self, days: int = 30) -> dict[dt.date, tuple[int, int]]:
        """{day: (processed, failed)} for the last `days` days (UTC), newest first."""
        today = dt.datetime.now(dt.UTC).date()
        dates = [today - dt.timedelta(days=n) for n in range(days)]
        keys = [stat_key(name, day) for day in dates for name in ("processed", "failed")]
        values = [int(v or 0) for v in self.client.mget(keys)] if keys else []
        return {day: (values[2 * i], values[2 * i + 1]) for i, day in enumerate(dates)}

    def reset(self) -> None:
        self.client.delete(stat_key("processed"), stat_key("failed"))


