"""Reading the controls for people (jobkit.api re-exports these; the dashboard's Controls page
shows them): unique locks, concurrency limits and their held jobs, debounced jobs.

No field fails to print (undecodable bytes as \\xNN), and a key or entry of an unexpected
shape is listed, saying what is wrong with it, never raised.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import redis

from jobkit import display, keys
from jobkit.celery_message import read_task_args
from jobkit.controls import concurrency
from jobkit.controls.concurrency import ConcurrencyState
from jobkit.redis_client import get_redis

__all__ = [
    "DebouncedJob",
    "HeldJob",
    "UniqueLock",
    "concurrency_limits",
    "debounced",
    "held_count",
    "held_jobs",
    "release_unique_lock",
    "unique_locks",
]


@dataclass(frozen=True)
class UniqueLock:
    """A unique job's lock: `key` is the job key (`<class path>:<hash>`), `job_id` the job
    holding it, `ttl` the seconds until it lets go by itself (None: the key never expires;
    jobkit always sets one). `raw` is the job key's exact bytes, for `release_unique_lock`."""

    key: str
    job_id: str
    ttl: float | None
    raw: bytes = field(repr=False)

    @property
    def ident(self) -> str:
        """`key` when it is exactly the stored text, else a digest of `raw` (what the
        dashboard posts: a form cannot carry bytes that are not UTF-8)."""
        return self.key if self.key.encode() == self.raw else display.digest(self.raw)


def _scan(client: redis.Redis, pattern: str, limit: int) -> list[bytes]:
    """At most `limit` key names matching `pattern` (SCAN: which ones, when there are more,
    is Redis's order), as their exact bytes."""
    found: list[bytes] = []
    if limit <= 0:
        return found
    for name in client.scan_iter(match=pattern, count=1000):
        found.append(display.as_bytes(name))
        if len(found) >= limit:
            break
    return found


def _value_text(value: Any) -> str:
    """A string key's value as text; what a pipeline returned for a key of another type."""
    if isinstance(value, Exception):
        return f"? (not a string: {type(value).__name__})"
    return display.escaped(value)


def unique_locks(limit: int = 1000, client: redis.Redis | None = None) -> list[UniqueLock]:
    """The unique locks in Redis, by key: at most `limit` of them."""
    client = client or get_redis()
    names = _scan(client, keys.unique("*"), limit)
    with client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.get(name)
            pipe.pttl(name)
        replies = pipe.execute(raise_on_error=False) if names else []
    prefix = len(keys.unique(""))
    locks = []
    for name, holder, pttl in zip(names, replies[::2], replies[1::2], strict=True):
        if holder is None or pttl == -2:  # released or expired since the scan
            continue
        ttl = pttl / 1000 if isinstance(pttl, int) and pttl >= 0 else None
        raw = name[prefix:]
        locks.append(UniqueLock(display.escaped(raw), _value_text(holder), ttl, raw))
    return sorted(locks, key=lambda lock: lock.key)


def release_unique_lock(key: str | bytes, client: redis.Redis | None = None) -> bool:
    """Delete the lock of job key `key` (`UniqueLock.key`, or `.raw` for a key that is not
    UTF-8), whoever holds it: for a lock stuck after its job was lost. The next enqueue of
    that key is then accepted. False when there was no such lock."""
    name = keys.unique("").encode() + display.as_bytes(key)
    return bool((client or get_redis()).delete(name))


def concurrency_limits(client: redis.Redis | None = None) -> list[ConcurrencyState]:
    """Every concurrency key with a job running or held, by key (running: job id -> when its
    slot expires)."""
    return concurrency.states(client)


@dataclass(frozen=True)
class HeldJob:
    """A job waiting for a slot of its concurrency key. `args` is the serialized arguments
    printed the Python way (then `kwargs={...}` when there are any). An entry that cannot be
    read has `problem` set; `text` is the stored entry, escaped."""

    job_id: str | None
    job_class: str | None
    queue: str | None
    args: str | None
    held_at: float | None
    problem: str | None = None
    text: str = field(repr=False, default="")


def held_jobs(key: str, start: int = 0, count: int = 25, client: redis.Redis | None = None
              ) -> list[HeldJob]:
    """The jobs held by concurrency key `key`, oldest (the next to start) first, paged
    (the held list's oldest entry is at its right end)."""
    if count <= 0:
        return []
    skip = max(0, start)
    raw = (client or get_redis()).lrange(_held_name(key), -(skip + count), -(skip + 1))
    return [_held_job(item) for item in reversed(raw)]


def held_count(key: str, client: redis.Redis | None = None) -> int:
    """How many jobs concurrency key `key` holds."""
    return (client or get_redis()).llen(_held_name(key))


def _held_name(key: str) -> bytes:
    """The held list of `key` (a str keeps undecodable bytes as surrogates)."""
    return keys.concurrency_held("").encode() + display.as_bytes(key)


def _held_job(raw: bytes | str) -> HeldJob:
    """One held-list entry as a HeldJob; never fails."""
    text = display.escaped(raw)
    try:
        entry = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    except UnicodeDecodeError as exc:
        return HeldJob(None, None, None, None, None, f"not UTF-8 (byte {exc.start})", text)
    except (ValueError, RecursionError) as exc:
        return HeldJob(None, None, None, None, None, f"not JSON ({type(exc).__name__})", text)
    if not isinstance(entry, dict):
        return HeldJob(None, None, None, None, None, "not a held job entry", text)
    job_id = display.field_text(entry.get("job_id"))
    held_at = display.field_number(entry.get("held_at"))
    try:
        payload = read_task_args(entry["message"])[0]
    except Exception:  # any stored shape (too deep too): read_task_args knows task messages
        payload = None
    if not isinstance(payload, dict):
        return HeldJob(job_id, None, None, None, held_at, "no readable task message", text)
    return HeldJob(job_id, display.field_text(payload.get("job_class")),
                   display.field_text(payload.get("queue_name")), _args_text(payload),
                   held_at, None, text)


def _args_text(payload: dict[str, Any]) -> str:
    """A payload's arguments printed the Python way, as the queue pages show them."""
    text = repr(payload.get("args"))
    kwargs = payload.get("kwargs")
    return f"{text} kwargs={kwargs!r}" if kwargs else text


@dataclass(frozen=True)
class DebouncedJob:
    """The pending job of a debounce key: `due` is when it runs (its score in the scheduled
    set), None once it has left the set (moved to its queue). A key whose value cannot be
    read has `problem` set."""

    key: str
    job_id: str | None
    job_class: str | None
    queue: str | None
    due: float | None
    problem: str | None = None


def debounced(limit: int = 1000, client: redis.Redis | None = None) -> list[DebouncedJob]:
    """The debounce keys in Redis with their pending job, by key: at most `limit`."""
    client = client or get_redis()
    names = _scan(client, keys.debounce("*"), limit)
    with client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.get(name)
        members = pipe.execute(raise_on_error=False) if names else []
    found = [(name, member) for name, member in zip(names, members, strict=True)
             if member is not None]  # expired since the scan
    strings = [member for _, member in found if isinstance(member, bytes | str)]
    with client.pipeline(transaction=False) as pipe:
        for member in strings:
            pipe.zscore(keys.SCHEDULE, member)
        scores = iter(pipe.execute() if strings else [])
    prefix = len(keys.debounce(""))
    return sorted((_debounced(name[prefix:], member,
                              next(scores) if isinstance(member, bytes | str) else None)
                   for name, member in found), key=lambda job: job.key)


def _debounced(raw_key: bytes, member: Any, due: float | None) -> DebouncedJob:
    key = display.escaped(raw_key)
    if isinstance(member, Exception):
        return DebouncedJob(key, None, None, None, None, _value_text(member))
    try:
        entry = json.loads(member)
    except (ValueError, RecursionError):
        entry = None
    if not isinstance(entry, dict):
        return DebouncedJob(key, None, None, None, due,
                            f"not a scheduled-set entry: {display.escaped(member)[:200]}")
    return DebouncedJob(key, display.field_text(entry.get("job_id")),
                        display.field_text(entry.get("job_class")),
                        display.field_text(entry.get("queue")), due)
