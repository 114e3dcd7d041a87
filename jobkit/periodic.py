"""Periodic jobs with no single point: every worker runs the scheduler, each tick enqueued once.

Celery beat is one process that must run exactly once; here every worker looks at every entry
about four times a second, and a Lua script is the only writer of an entry's last tick: it
enqueues the job and records the tick in one step, and only when the tick is later than the
last one recorded. So any number of workers enqueue each tick exactly once, a worker that dies
mid-way has either done both or neither, and no leader is needed. Time is Redis's (TIME), so
workers whose clocks are apart still agree on which tick is due.

A tick is enqueued if it is at most LATE_GRACE_SECONDS late. After downtime, older ticks are
skipped (recorded, not run); an entry with ``missed: run_last`` runs the last one missed.
Entries come from the settings (`schedule:`) and from `add()` at runtime, which persists them
in Redis. Enqueue callbacks do not run for periodic jobs (as for `perform_all_later`).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from jobkit import keys
from jobkit.adapters.celery import job_message
from jobkit.config import current_settings
from jobkit.errors import ConfigError, JobClassError
from jobkit.imports import class_path
from jobkit.job import Job, resolve_job_class
from jobkit.masking import mask_secrets
from jobkit.periodic_entry import PeriodicEntry, parse_entry
from jobkit.queues import WAKE_TOKENS_MAX
from jobkit.redis_client import get_redis

__all__ = [
    "LATE_GRACE_SECONDS",
    "PeriodicEntry",
    "PeriodicScheduler",
    "PeriodicState",
    "add",
    "build_job",
    "check_classes",
    "entries",
    "pause",
    "remove",
    "resume",
    "run_now",
    "states",
]

logger = logging.getLogger(__name__)

LATE_GRACE_SECONDS = 60.0  # a tick later than this is missed (skipped unless missed: run_last)
LOOK_EVERY_SECONDS = 0.25  # how often each worker's scheduler looks at the entries
REDIS_RETRY_SECONDS = 2.0  # after a Redis error

# KEYS: last-tick hash, the queue's list, its wake list, the queues set.
# ARGV: name, tick, message ("" to record a skipped tick), queue, job id, now, wake max.
# Returns 1 when this call took the tick, 0 when it was already taken.
_TAKE_TICK = """
local last = tonumber(redis.call('HGET', KEYS[1], ARGV[1] .. ':tick') or '-1')
if last >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1] .. ':tick', ARGV[2])
if ARGV[3] == '' then return 1 end
redis.call('HSET', KEYS[1], ARGV[1] .. ':job_id', ARGV[5], ARGV[1] .. ':at', ARGV[6])
redis.call('LPUSH', KEYS[2], ARGV[3])
redis.call('LPUSH', KEYS[3], '1')
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[7]) - 1)
redis.call('SADD', KEYS[4], ARGV[4])
return 1
"""


@dataclass(frozen=True)
class PeriodicState:
    """What Redis knows of an entry: its last tick and job, and whether it is paused."""

    entry: PeriodicEntry
    paused: bool
    last_tick: datetime | None
    last_job_id: str | None
    last_enqueued_at: datetime | None

    @property
    def next_tick(self) -> datetime:
        return self.entry.schedule.next(datetime.now(UTC))

    @property
    def status(self) -> str:
        """``active``, ``paused`` or ``disabled`` (``enabled: false``), for listings."""
        return "paused" if self.paused else "active" if self.entry.enabled else "disabled"

    @property
    def last_tick_skipped(self) -> bool:
        """The last tick was recorded without a job (too late, or passed while paused): a job
        is recorded after its tick, a skipped tick alone."""
        return self.last_tick is not None and (self.last_enqueued_at is None
                                               or self.last_enqueued_at < self.last_tick)


# -- entries from the settings and from Redis ---------------------------------------------------

def build_job(entry: PeriodicEntry, tick: datetime | None = None) -> Job:
    """A new job of `entry` (for `tick`, or now), prepared for its queue (JobClassError: no
    such class)."""
    args = entry.args
    if entry.date_as_argument:
        args = (*args, (tick or datetime.now(UTC)).timestamp())
    job = resolve_job_class(entry.job_class)(*args, **entry.kwargs)
    job._prepare(queue=entry.queue)  # as enqueue would, without the enqueue callbacks
    return job


def check_classes(found: Iterable[PeriodicEntry]) -> None:
    """ConfigError naming the entry whose job cannot be built here: a class that cannot be
    imported or is no Job, or arguments its `perform` cannot take."""
    for entry in found:
        try:
            build_job(entry)
        except JobClassError as exc:
            raise ConfigError(f"{entry.source}.class: {exc}") from None
        except (TypeError, ValueError) as exc:  # arguments perform cannot take, or send
            raise ConfigError(f"{entry.source}.args: {exc}") from None


def entries(client: redis.Redis | None = None) -> list[PeriodicEntry]:
    """Every entry: the settings' (which win on a name), then those added at runtime."""
    return _with_runtime((client or get_redis()).hgetall(keys.PERIODIC_ENTRIES))


def _with_runtime(stored: Mapping[Any, Any]) -> list[PeriodicEntry]:
    """The settings' entries, then the readable ones of `stored` (the runtime entries' hash)
    whose names the settings do not use."""
    configured = list(current_settings().schedule)
    names = {entry.name for entry in configured}
    for raw_name, raw in sorted(stored.items()):
        name = raw_name.decode(errors="replace") if isinstance(raw_name, bytes) else raw_name
        if name in names:
            continue
        try:
            configured.append(parse_entry(name, json.loads(raw), "runtime"))
        except (ConfigError, ValueError) as exc:
            if (name, raw) not in _warned:  # once per process, not at every look
                _warned.add((name, raw))
                logger.warning("jobkit periodic: entry %r in Redis is unreadable: %s", name,
                               exc)
    return configured


_warned: set[tuple[str, Any]] = set()


def find(name: str, client: redis.Redis | None = None) -> PeriodicEntry:
    for entry in entries(client):
        if entry.name == name:
            return entry
    raise KeyError(f"no periodic entry named {name!r}")


# -- operating entries ----------------------------------------------------------------------

def add(name: str, *, job: type[Job] | str, cron: str | None = None, every: str | None = None,
        timezone: str | None = None, args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None, queue: str | None = None,
        description: str = "", missed: str = "skip", client: redis.Redis | None = None
        ) -> PeriodicEntry:
    """Add (or replace) an entry at runtime; it persists in Redis and every worker runs it.
    A name the settings define is refused (the file wins on deploy)."""
    if any(entry.name == name for entry in current_settings().schedule):
        raise ValueError(f"periodic entry {name!r} is defined in the settings file")
    path = job if isinstance(job, str) else class_path(job)
    data = {"class": path, "args": list(args), "kwargs": dict(kwargs or {}), "queue": queue,
            "description": description, "missed": missed}
    data.update({k: v for k, v in (("cron", cron), ("every", every), ("timezone", timezone))
                 if v is not None})
    entry = parse_entry(name, data, "runtime")
    check_classes([entry])
    (client or get_redis()).hset(keys.PERIODIC_ENTRIES, name, json.dumps(data))
    return entry


def remove(name: str, client: redis.Redis | None = None) -> bool:
    """Remove an entry added at runtime; False when there was none."""
    client = client or get_redis()
    if not client.hdel(keys.PERIODIC_ENTRIES, name):
        return False  # an entry of the settings file, or none: its pause stays as it is
    client.srem(keys.PERIODIC_PAUSED, name)
    client.hdel(keys.PERIODIC_LAST, *(f"{name}:{part}" for part in ("tick", "job_id", "at")))
    return True


def pause(name: str, client: redis.Redis | None = None) -> None:
    """No tick of this entry is enqueued until `resume` (KeyError: no such entry)."""
    find(name, client)
    (client or get_redis()).sadd(keys.PERIODIC_PAUSED, name)


def resume(name: str, client: redis.Redis | None = None) -> None:
    """Ticks are enqueued again, from the next one on: the latest tick is recorded as taken
    first, so none that passed while paused runs (not even with ``missed: run_last``)."""
    entry = find(name, client)
    client = client or get_redis()
    tick = entry.schedule.previous(_redis_time(client.time()))
    _take_tick(client, name, tick.timestamp(), None, tick)
    client.srem(keys.PERIODIC_PAUSED, name)


def _redis_time(reply: tuple[int, int]) -> datetime:
    """Redis's TIME reply as an aware datetime: every worker agrees on it."""
    seconds, micros = reply
    return datetime.fromtimestamp(seconds + micros / 1e6, UTC)


def _take_tick(client: redis.Redis, name: str, stamp: float,
               sent: tuple[str, str, str, str] | None, now: datetime) -> bool:
    """Run `_TAKE_TICK`: record `stamp` as `name`'s last tick if it is later than the one
    recorded, and with `sent` ((queue, list key, message, job id)) enqueue in the same step;
    True when this call took the tick."""
    queue, key, message, job_id = sent or ("", keys.PERIODIC_LAST, "", "")
    return bool(client.register_script(_TAKE_TICK)(
        keys=[keys.PERIODIC_LAST, key, keys.wake_key(queue), keys.QUEUES],
        args=[name, repr(stamp), message, queue, job_id, repr(now.timestamp()),
              WAKE_TOKENS_MAX]))


def run_now(name: str, client: redis.Redis | None = None) -> Job:
    """Enqueue the entry's job now, outside its schedule (paused or not); returns the job."""
    return build_job(find(name, client)).enqueue()


def states(client: redis.Redis | None = None) -> list[PeriodicState]:
    """Each entry with its last tick, last job and paused flag, for `jobkit periodic`."""
    client = client or get_redis()
    found = entries(client)
    paused = {m.decode() if isinstance(m, bytes) else m
              for m in client.smembers(keys.PERIODIC_PAUSED)}
    fields = [f"{e.name}:{part}" for e in found for part in ("tick", "job_id", "at")]
    values = client.hmget(keys.PERIODIC_LAST, fields) if fields else []
    result = []
    for i, entry in enumerate(found):
        tick, job_id, at = (_text(v) for v in values[3 * i:3 * i + 3])
        result.append(PeriodicState(entry, entry.name in paused, _time(tick), job_id,
                                    _time(at)))
    return result


def _text(value: Any) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(float(value), UTC)


# -- the scheduler each worker runs -------------------------------------------------------------

class PeriodicScheduler:
    """A daemon thread in every worker: enqueues each due tick of each entry, once in all."""

    def __init__(self, client: redis.Redis | None = None) -> None:
        self.client = client or get_redis()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="jobkit-periodic", daemon=True)
        self._taken: dict[str, float] = {}  # per entry: the last tick this process saw taken

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout=LOOK_EVERY_SECONDS + 5)

    def look(self) -> int:
        """Enqueue every entry's latest tick if due and not taken; returns how many this
        process enqueued."""
        with self.client.pipeline(transaction=False) as pipe:  # one round trip a look
            pipe.time()
            pipe.smembers(keys.PERIODIC_PAUSED)
            pipe.hgetall(keys.PERIODIC_ENTRIES)
            time_reply, paused_reply, stored = pipe.execute()
        now = _redis_time(time_reply)
        paused = {_text(m) for m in paused_reply}
        enqueued = 0
        for entry in _with_runtime(stored):
            if not entry.enabled or entry.name in paused:
                continue
            try:
                enqueued += self._look_at(entry, now)
            except redis.RedisError:
                raise
            except Exception:  # one bad entry (its class gone) must not stop the others
                logger.exception("jobkit periodic: entry %s failed, will try again",
                                 entry.name)
        return enqueued

    def _look_at(self, entry: PeriodicEntry, now: datetime) -> int:
        tick = entry.schedule.previous(now)
        stamp = tick.timestamp()
        if self._taken.get(entry.name, -1.0) >= stamp:
            return 0
        late = (now - tick).total_seconds() > LATE_GRACE_SECONDS
        if late and (entry.missed == "skip" or self._first_sight(entry)):
            self._take(entry, stamp, None, now)  # recorded as skipped, so none runs it later
            return 0
        try:
            job = build_job(entry, tick)
            queue, key, message, _ = job_message(job)
        except Exception:
            self._taken[entry.name] = stamp  # logged once for this tick; the next one tries
            raise
        took = self._take(entry, stamp, (queue, key, message, job.job_id), now)
        if took:
            logger.info("jobkit periodic: %s enqueued %s for %s", entry.name, job.job_id,
                        tick.isoformat())
        return int(took)

    def _take(self, entry: PeriodicEntry, stamp: float,
              sent: tuple[str, str, str, str] | None, now: datetime) -> bool:
        took = _take_tick(self.client, entry.name, stamp, sent, now)
        self._taken[entry.name] = stamp
        return took

    def _first_sight(self, entry: PeriodicEntry) -> bool:
        """No tick was ever recorded for `entry` (new): a tick before it existed was not
        missed, so `run_last` has nothing to run yet."""
        return self.client.hget(keys.PERIODIC_LAST, f"{entry.name}:tick") is None

    def _run(self) -> None:
        failing = False  # in a streak of Redis errors: logged once, then looked at less often
        while not self._stopped.is_set():
            try:
                self.look()
                failing = False
            except redis.RedisError as exc:
                if not failing:
                    logger.warning("jobkit periodic: Redis error, will try again: %s",
                                   mask_secrets(str(exc)))
                failing = True
            except Exception:  # one bad entry (a class gone) must not stop the others
                logger.exception("jobkit periodic: error, will try again")
            self._stopped.wait(REDIS_RETRY_SECONDS if failing else LOOK_EVERY_SECONDS)
