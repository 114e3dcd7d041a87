"""Sidekiq's API in Python: queues, the job sets, worker processes, stats, batches and the
controls (unique locks, concurrency limits and held jobs, debounced jobs, rate limiters).

Everything reads Redis in pages; nothing loads a whole queue or set.

    from jobkit import api
    for queue in api.queues(): print(queue.name, queue.size(), queue.latency())
    api.DeadSet().find(job_id)          # -> JobEntry; .retry(entry), .delete(entry)
    api.Stats().history(7)              # processed/failed for the last 7 days
    api.cancelled_jobs()                # jobs jobkit.cancel kept in the dead set
    api.batch(batch_id).pending         # a batch's progress, one HGETALL
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from jobkit import display, keys, limiter
from jobkit.batch.state import BatchStatus, RedisBatches
from jobkit.cancellation import cancelled_jobs
from jobkit.celery_message import read_task_args
from jobkit.config import current_settings
from jobkit.controls.concurrency import ConcurrencyState
from jobkit.controls.read import (
    DebouncedJob,
    HeldJob,
    UniqueLock,
    concurrency_limits,
    debounced,
    held_count,
    held_jobs,
    release_unique_lock,
    unique_locks,
)
from jobkit.job_sets import DeadSet, JobEntry, RetrySet, ScheduledSet
from jobkit.keys import list_key, list_keys
from jobkit.limiter import LimiterState
from jobkit.redis_client import get_redis, script
from jobkit.worker.heartbeat import send_command

__all__ = [
    "BatchStatus",
    "ConcurrencyState",
    "DeadSet",
    "DebouncedJob",
    "HeldJob",
    "InFlightJob",
    "JobEntry",
    "LimiterState",
    "Process",
    "Queue",
    "QueuedJob",
    "RetrySet",
    "ScheduledSet",
    "Stats",
    "UniqueLock",
    "batch",
    "batches",
    "cancelled_jobs",
    "concurrency_limits",
    "debounced",
    "held_count",
    "held_jobs",
    "limiters",
    "processes",
    "queues",
    "read_queued",
    "release_unique_lock",
    "unique_locks",
]


def _name(raw: bytes | str) -> str | bytes:
    """A name read from Redis: str when it is UTF-8, else the bytes themselves (so the keys
    built from it still name what is stored)."""
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


@dataclass(frozen=True)
class QueuedJob:
    """A job waiting in a queue, as read from its message.

    `message` is the item exactly as stored (bytes from jobkit's clients), so `Queue.delete`
    removes exactly it. An item that is not a readable task message has an empty `payload`
    and `problem` says why; `text` shows it with undecodable bytes escaped."""

    message: bytes | str = field(repr=False)
    list_key: str | bytes
    payload: dict[str, Any] = field(repr=False)
    problem: str | None = None

    @property
    def text(self) -> str:
        """The item for display: undecodable bytes and control characters as ``\\xNN``."""
        return display.escaped(self.message)

    @property
    def digest(self) -> str:
        """A short hash of the message: names an item that has no usable job id."""
        return display.digest(self.message)

    @property
    def ident(self) -> str:
        """The job id when it is a plain string, else `digest` (what the dashboard posts)."""
        return display.ident(self.payload.get("job_id"), self.message)

    @property
    def job_id(self) -> str | None:
        return display.field_text(self.payload.get("job_id"))

    @property
    def job_class(self) -> str | None:
        return display.field_text(self.payload.get("job_class"))

    @property
    def args(self) -> Any:
        """The arguments as stored (None when unreadable)."""
        return self.payload.get("args")

    @property
    def enqueued_at(self) -> float | None:
        return display.field_number(self.payload.get("enqueued_at"))

    @property
    def ready_at(self) -> float | None:
        """Since when it could run: its scheduled time if it had one, else its enqueue."""
        return display.field_number(self.payload.get("scheduled_at")) or self.enqueued_at


def read_queued(list_key_: str | bytes, raw: bytes | str) -> QueuedJob:
    """A queue item as a QueuedJob; never fails: an unreadable item gets `problem` set."""
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return QueuedJob(raw, list_key_, {}, f"not UTF-8 (byte {exc.start})")
    else:
        text = raw
    try:
        args = read_task_args(text)
    except RecursionError:
        return QueuedJob(raw, list_key_, {}, "JSON nested too deep")
    except Exception as exc:  # any shape of stored item: read_task_args knows task messages
        return QueuedJob(raw, list_key_, {}, f"not a task message ({type(exc).__name__})")
    payload = args[0] if args and isinstance(args[0], dict) else {"args": args}
    return QueuedJob(raw, list_key_, payload)


# KEYS: the queues set (keys.QUEUES), then every list of the queue. ARGV: its name. The name
# leaves the set only while none of the lists holds a job, in one step: every enqueue adds the
# name after its push, so a job pushed meanwhile is either seen here or lists the name again.
_REMOVE_IF_EMPTY = """
local waiting = 0
for i = 2, #KEYS do waiting = waiting + redis.call('LLEN', KEYS[i]) end
if waiting > 0 then return {0, waiting} end
return {redis.call('SREM', KEYS[1], ARGV[1]), 0}
"""


class Queue:
    """One queue: its lists (one per priority step), size, latency, jobs.

    `name` may be bytes (a queue name that is not UTF-8, as read from Redis): the keys are
    then built from those bytes, and `name` shows it escaped."""

    def __init__(self, name: str | bytes, client: redis.Redis | None = None) -> None:
        self.raw_name = display.as_bytes(name)
        self.name = display.shown(name)
        self.client = client or get_redis()
        if isinstance(name, str) and display.shown(name) == name:
            self.keys: list[str | bytes] = list(list_keys(name))
        else:  # the same suffixes as keys.list_keys, on the stored bytes
            suffixes = [key[1:].encode() for key in list_keys("x")]
            self.keys = [self.raw_name + suffix for suffix in suffixes]

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
        skip = max(0, start)
        if count <= 0:
            return found
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
        """The job with this job id, or this `ident` (a digest, for an unreadable item)."""
        start = 0
        while page := self.jobs(start, 100):
            for job in page:
                if job_id in (job.job_id, job.ident):
                    return job
            start += len(page)
        return None

    # redis-py annotates the values of LREM and SISMEMBER as str; stored bytes go as they are.
    def delete(self, job: QueuedJob) -> bool:
        return bool(self.client.lrem(job.list_key, 1, job.message))  # pyright: ignore[reportArgumentType]

    def paused(self) -> bool:
        return bool(self.client.sismember(keys.PAUSED, self.raw_name))  # pyright: ignore[reportArgumentType]

    def pause(self) -> None:
        """Workers stop taking jobs from this queue (within about a second); jobs stay."""
        self.client.sadd(keys.PAUSED, self.raw_name)

    def resume(self) -> None:
        self.client.srem(keys.PAUSED, self.raw_name)

    def clear(self) -> int:
        """Delete every waiting job; returns how many."""
        with self.client.pipeline() as pipe:
            for key in self.keys:
                pipe.llen(key)
            pipe.delete(*self.keys)
            counts = pipe.execute()
        return sum(counts[:-1])

    def configured(self) -> bool:
        """Named by the `queues` setting: always listed."""
        return self.name in current_settings().queue_names

    def remove(self) -> bool:
        """Take the name out of the queues listed (dashboard, `jobkit queues`, /status.json)
        if no job waits in it; True when it was listed. ValueError, and nothing done, when
        jobs wait in it or it is configured. Enqueueing to it, or a worker that consumes it
        (the `celery` queue), lists it again."""
        if self.configured():
            raise ValueError(f"queue {self.name!r} is in the queues setting, so it is always "
                             "listed: take it out of the settings instead")
        removed, waiting = script(_REMOVE_IF_EMPTY)(
            keys=[keys.QUEUES, *self.keys], args=[self.raw_name], client=self.client)
        if waiting:
            raise ValueError(f"queue {self.name!r} is not empty ({waiting} job(s) waiting): "
                             "nothing was done; clear it first")
        return bool(removed)


def queues(client: redis.Redis | None = None) -> list[Queue]:
    """The configured queues, then any other queue jobs were pushed to, by name."""
    client = client or get_redis()
    configured = current_settings().queue_names
    seen = sorted((_name(q) for q in client.smembers(keys.QUEUES)), key=display.shown)
    names = configured + [name for name in seen if name not in configured]
    return [Queue(name, client) for name in names]


@dataclass(frozen=True)
class InFlightJob(QueuedJob):
    """A job a worker process holds: running since `started_at` (Unix time), or prefetched
    (fetched, not started yet: `started_at` None). The start time comes with the process's
    heartbeat, so a job shows as running within `poll_interval` of its start."""

    started_at: float | None = None

    @property
    def running(self) -> bool:
        return self.started_at is not None


@dataclass(frozen=True)
class Process:
    """A live worker process (consuming channel), from its heartbeat.

    Every property reads the heartbeat defensively: a field of the wrong type reads as absent
    (None, or "?" for the host name)."""

    id: str
    info: dict[str, Any]
    in_flight: list[InFlightJob]
    client: redis.Redis | None = field(default=None, repr=False, compare=False)

    @property
    def hostname(self) -> str:
        return display.field_text(self.info.get("hostname")) or "?"

    @property
    def pid(self) -> int | None:
        pid = self.info.get("pid")
        return pid if type(pid) is int else None

    @property
    def beat_at(self) -> float | None:
        return display.field_number(self.info.get("beat_at"))

    @property
    def queues(self) -> list[str]:
        queues = self.info.get("queues")
        if not isinstance(queues, list):
            return []
        return [q if isinstance(q, str) else display.field_text(q) or "" for q in queues]

    @property
    def node(self) -> str | None:
        return display.field_text(self.info.get("node"))

    @property
    def concurrency(self) -> str | None:
        return display.field_text(self.info.get("concurrency"))

    @property
    def pool(self) -> str | None:
        """The `pool` setting it runs with (`prefork`, `threads`, `solo`, `asyncio`)."""
        return display.field_text(self.info.get("pool"))

    @property
    def started_at(self) -> float | None:
        """When the worker started (Unix time)."""
        return display.field_number(self.info.get("started_at"))

    @property
    def rss(self) -> int | None:
        """The worker process's resident memory in bytes (None: not Linux)."""
        return _whole(self.info.get("rss"))

    @property
    def children_rss(self) -> int | None:
        """Its child processes' resident memory together, in bytes: the prefork pool's."""
        return _whole(self.info.get("children_rss"))

    @property
    def is_quiet(self) -> bool:
        """Quieted (TSTP, or `quiet`): takes no new jobs, finishes the ones it holds."""
        return self.info.get("quiet") is True

    @property
    def is_stopping(self) -> bool:
        """Stopping (TERM, or `stop`): a warm shutdown, within the `timeout` setting."""
        return self.info.get("stopping") is True

    @property
    def takes_commands(self) -> bool:
        """`quiet` and `stop` reach it: false for a worker embedded in a thread (a test's)."""
        return self.info.get("commands") is True

    def quiet(self) -> None:
        """Sidekiq's quiet!: what TSTP does, through Redis, within one heartbeat (2 s)."""
        self._send("quiet")

    def stop(self) -> None:
        """Sidekiq's stop!: what TERM does (a warm shutdown), through Redis, within one
        heartbeat (2 s)."""
        self._send("stop")

    def _send(self, command: str) -> None:
        if not self.takes_commands:
            raise ValueError(f"worker process {self.id} takes no commands (an embedded "
                             "worker, or one older than this jobkit)")
        send_command(self.client or get_redis(), self.id, command,
                     current_settings().heartbeat_timeout)


def _whole(value: Any) -> int | None:
    return value if type(value) is int else None


def _held(raw: bytes | str, started_at: float | None) -> InFlightJob:
    """One in-flight item ([message, exchange, queue]) as an InFlightJob."""
    try:
        message, _exchange, routing_key = json.loads(raw)
        priority = message.get("properties", {}).get("priority")
        key = list_key(routing_key, priority if type(priority) is int else None)
        job = read_queued(key, json.dumps(message))
    except Exception:  # any stored shape: shown as unreadable, never fatal
        job = read_queued("?", raw if isinstance(raw, bytes) else raw.encode())
    return InFlightJob(job.message, job.list_key, job.payload, job.problem, started_at)


def _in_flight(held: dict[Any, Any], info: dict[str, Any]) -> list[InFlightJob]:
    """The held items, running first (longest running first), then the prefetched."""
    running = info.get("running")
    started = running if isinstance(running, dict) else {}
    jobs = [_held(raw, display.field_number(started.get(display.shown(tag))))
            for tag, raw in held.items()]
    return sorted(jobs, key=lambda job: (job.started_at is None, job.started_at or 0.0))


def processes(client: redis.Redis | None = None) -> list[Process]:
    """Worker processes whose heartbeat is alive, with the jobs each holds (running or
    prefetched)."""
    client = client or get_redis()
    # Keys from each id's exact bytes, so an id that is not UTF-8 still names its keys.
    ids = [raw if isinstance(raw, bytes) else raw.encode()
           for raw in sorted(client.smembers(keys.PROCESSES), key=display.shown)]
    with client.pipeline(transaction=False) as pipe:  # one round trip for every process
        for raw_id in ids:
            pipe.get(keys.heartbeat("").encode() + raw_id)
            pipe.hgetall(keys.unacked("").encode() + raw_id)
        replies = pipe.execute() if ids else []
    found = []
    for raw_id, beat, held in zip(ids, replies[::2], replies[1::2], strict=True):
        if beat is None:
            continue
        try:
            info = json.loads(beat)
        except (ValueError, RecursionError):
            info = None
        info = info if isinstance(info, dict) else {}
        found.append(Process(display.shown(raw_id), info, _in_flight(held, info), client))
    return found


class Stats:
    """Processed and failed totals, and their daily history."""

    def __init__(self, client: redis.Redis | None = None) -> None:
        self.client = client or get_redis()

    @property
    def processed(self) -> int:
        return int(self.client.get(keys.stat("processed")) or 0)

    @property
    def failed(self) -> int:
        return int(self.client.get(keys.stat("failed")) or 0)

    def history(self, days: int = 30) -> dict[dt.date, tuple[int, int]]:
        """{day: (processed, failed)} for the last `days` days (UTC), newest first."""
        today = dt.datetime.now(dt.UTC).date()
        dates = [today - dt.timedelta(days=n) for n in range(days)]
        names = [keys.stat(name, day) for day in dates for name in ("processed", "failed")]
        values = [int(v or 0) for v in self.client.mget(names)] if names else []
        return {day: (values[2 * i], values[2 * i + 1]) for i, day in enumerate(dates)}

    def reset(self) -> None:
        self.client.delete(keys.stat("processed"), keys.stat("failed"))


# -- controls (readers in jobkit.controls.read), and rate limiters -------------------------

def batch(batch_id: str, client: redis.Redis | None = None) -> BatchStatus | None:
    """A batch's progress (total, pending, failed, ...) in one read, or None once it expired
    (docs/batches.md); ValueError naming the key when it is not a batch's hash."""
    return RedisBatches(client).status(batch_id)


def batches(start: int = 0, count: int = 25, client: redis.Redis | None = None
            ) -> list[BatchStatus]:
    """Batches, newest first, paged (one read per batch, in one round trip); a key that is
    not a batch's hash is left out (the dashboard shows it)."""
    return [status for status in RedisBatches(client).recent(max(0, start), count)
            if isinstance(status, BatchStatus)]


def limiters() -> list[LimiterState]:
    """Every rate limiter with a key in Redis, by kind and name (`jobkit.limiter.states`:
    the configured Redis)."""
    return limiter.states()

