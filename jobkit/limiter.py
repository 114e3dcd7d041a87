"""Rate limiters on Redis (Sidekiq Enterprise's four kinds), shared by every process and host.

    stripe = jobkit.limiter.bucket("stripe", 100, "second")    # at most 100 per aligned second
    with stripe.acquire():
        ...

Each check is one Lua script that reads and updates the limiter's one key atomically, so racing
processes can never grant more than the limit; an attempt over the limit changes nothing. The
time is Redis's (TIME, inside the script), never the caller's, so hosts whose clocks are apart
still agree on which second or window they are in. When over its limit, `acquire` sleeps for
the script's own estimate of when a call could pass and tries again, for at most
`wait_timeout` seconds, then raises `OverLimit` (which reschedules a job when `reschedule`).

The key also stores the limiter's count and interval (hash fields, or for the sorted sets one
member scored +inf), so `states()` can describe limiters made by other processes.

Test modes: while the adapter in force records jobs (the ``test`` adapter,
`jobkit.testing.fake()` and `inline()`), `acquire` touches no Redis and never limits, so tests
of code that uses a limiter need no Redis server.
"""

from __future__ import annotations

import difflib
import json
import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar, TypedDict

import redis

from jobkit import keys
from jobkit.adapters import current_adapter
from jobkit.durations import seconds
from jobkit.errors import ConfigError, OverLimit
from jobkit.redis_client import get_redis, script

__all__ = [
    "BucketLimiter",
    "ConcurrentLimiter",
    "Grant",
    "INTERVALS",
    "LeakyLimiter",
    "Limiter",
    "LimiterState",
    "WindowLimiter",
    "bucket",
    "concurrent",
    "leaky",
    "states",
    "window",
]

logger = logging.getLogger(__name__)

INTERVALS = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}  # seconds
WAIT_TIMEOUT_SECONDS = 5.0  # default longest wait in `acquire` before OverLimit
LOCK_TIMEOUT_SECONDS = 30.0  # default: a concurrent slot frees itself after this long
POLL_SECONDS = 0.1  # longest sleep of a waiting concurrent acquire: a holder may leave any time
MIN_PAUSE_SECONDS = 0.001  # shortest sleep between tries, so a zero estimate never spins

# Every check script: KEYS[1] the limiter's key. ARGV: take ('1' to take a unit, '0' to only
# look), count, period in ms (interval, or lock timeout for concurrent), a random token, the
# description to store (interval seconds for hashes, JSON member for sorted sets). Returns
# {granted 0/1, retry after ms, used, Redis time "s.micro"}; nothing is written unless granted.
_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local take, count, period = ARGV[1] == '1', tonumber(ARGV[2]), tonumber(ARGV[3])
local function reply(granted, retry, used)
  return {granted, tostring(retry), tostring(used), t[1] .. string.format('.%06d', t[2])}
end
local function ms(x) return string.format('%.3f', x) end
local function describe(meta)  -- sorted sets: the one member scored +inf
  if not redis.call('ZSCORE', KEYS[1], meta) then
    redis.call('ZREMRANGEBYSCORE', KEYS[1], '+inf', '+inf')
    redis.call('ZADD', KEYS[1], '+inf', meta)
  end
end
"""

# Hash {start, used}: units used in the aligned interval that began at `start` (ms).
_BUCKET = _PRELUDE + """
local start = math.floor(now / period) * period
local stored = redis.call('HMGET', KEYS[1], 'start', 'used')
local used = 0
if tonumber(stored[1]) == start then used = tonumber(stored[2]) or 0 end
if used >= count then return reply(0, start + period - now, used) end
if not take then return reply(0, 0, used) end
redis.call('HSET', KEYS[1], 'start', start, 'used', used + 1, 'count', count,
           'interval', ARGV[5])
redis.call('PEXPIRE', KEYS[1], math.ceil(2 * period))
return reply(1, 0, used + 1)
"""

# Sorted set token -> ms of its grant; a grant counts while it is in (now - period, now].
_WINDOW = _PRELUDE + """
local floor = now - period
if take then redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms(floor)) end
local used = redis.call('ZCOUNT', KEYS[1], '(' .. ms(floor), '(+inf')
if used >= count then
  local oldest = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ms(floor), '(+inf',
                            'WITHSCORES', 'LIMIT', used - count, 1)
  return reply(0, tonumber(oldest[2]) + period - now, used)
end
if not take then return reply(0, 0, used) end
redis.call('ZADD', KEYS[1], now, ARGV[4])
describe(ARGV[5])
redis.call('PEXPIRE', KEYS[1], math.ceil(period))
return reply(1, 0, used + 1)
"""

# Hash {level, at}: the level drains at count / period per ms since `at`; a unit fits while
# level + 1 <= count (a small tolerance absorbs float drift).
_LEAKY = _PRELUDE + """
local rate = count / period
local stored = redis.call('HMGET', KEYS[1], 'level', 'at')
local at = tonumber(stored[2]) or now
local level = math.max(0, (tonumber(stored[1]) or 0) - math.max(0, now - at) * rate)
if level + 1 > count + 1e-9 then return reply(0, (level + 1 - count) / rate, level) end
if not take then return reply(0, 0, level) end
redis.call('HSET', KEYS[1], 'level', level + 1, 'at', now, 'count', count,
           'interval', ARGV[5])
redis.call('PEXPIRE', KEYS[1], math.ceil((level + 1) / rate) + 1)
return reply(1, 0, level + 1)
"""

# Sorted set token -> ms when its slot frees itself; a slot is held while its score > now.
_CONCURRENT = _PRELUDE + """
if take then redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms(now)) end
local used = redis.call('ZCOUNT', KEYS[1], '(' .. ms(now), '(+inf')
if used >= count then
  local first = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ms(now), '(+inf',
                           'WITHSCORES', 'LIMIT', used - count, 1)
  return reply(0, tonumber(first[2]) - now, used)
end
if not take then return reply(0, 0, used) end
redis.call('ZADD', KEYS[1], now + period, ARGV[4])
describe(ARGV[5])
if redis.call('PTTL', KEYS[1]) < period then
  redis.call('PEXPIRE', KEYS[1], math.ceil(period))
end
return reply(1, 0, used + 1)
"""

# KEYS[1] a concurrent limiter's key, ARGV[1] the holder's token. Removes only that token:
# returns 1, or 0 / -1 when the slot had already expired (gone / still there).
_RELEASE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local expires = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]))
if not expires then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
if expires <= now then return -1 end
return 1
"""


def _run(lua: str, key: str, args: list[str | int | float]) -> Any:
    """Run `lua` by its SHA on this process's client (loaded on first use)."""
    return script(lua)(keys=[key], args=args, client=get_redis())


class LimiterState(TypedDict):
    """A limiter as a dashboard shows it: `used` is holders, units used in this bucket or
    window, or the leaky level; `retry_after` seconds until a call could pass (0: now)."""

    kind: str
    name: str
    count: int
    interval: float | None
    used: float
    retry_after: float


@dataclass(frozen=True)
class Grant:
    """What `with limiter.acquire() as grant` binds: when Redis granted the call (Unix time
    from Redis TIME; the local clock in test modes) and how long acquire waited."""

    limiter: str
    granted_at: float
    waited: float


@dataclass(frozen=True)
class _Check:
    granted: bool
    retry_after: float  # seconds
    used: float
    at: float  # Redis time


class Limiter:
    """What every kind shares: validated settings, the wait loop, and the state snapshot."""

    kind: ClassVar[str] = ""
    _lua: ClassVar[str] = ""

    def __init__(self, name: str, count: int, interval: str | float | timedelta | None,
                 wait_timeout: float | timedelta, reschedule: bool) -> None:
        self.name = _checked_name(name)
        self.count = _checked_count(count)
        self.interval = None if interval is None else _interval(interval)
        self.wait_timeout = _seconds(wait_timeout, "wait_timeout", allow_zero=True)
        if not isinstance(reschedule, bool):
            raise ConfigError(f"limiter {name!r}: reschedule must be True or False, "
                              f"not {reschedule!r}")
        self.reschedule = reschedule

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.name!r} count={self.count} "
                f"interval={self.interval}>")

    @property
    def key(self) -> str:
        return keys.limiter(self.kind, self.name)

    def acquire(self) -> AbstractContextManager[Grant]:
        """A context manager that waits for room (at most `wait_timeout`, then OverLimit) when
        its block is entered, and for a concurrent limiter frees the slot when it is left."""
        return self._held()

    @contextmanager
    def _held(self) -> Iterator[Grant]:
        if current_adapter().name == "test":  # recording jobs: never limit, no Redis
            yield Grant(self.name, time.time(), 0.0)
            return
        token = uuid.uuid4().hex
        grant = self._wait(token)
        try:
            yield grant
        finally:
            self._release(token)

    def _wait(self, token: str) -> Grant:
        started = time.monotonic()
        deadline = started + self.wait_timeout
        while True:
            check = self._check(token, take=True)
            if check.granted:
                return Grant(self.name, check.at, time.monotonic() - started)
            left = deadline - time.monotonic()
            if left <= 0:
                raise OverLimit(self.name, check.retry_after, self.reschedule)
            time.sleep(min(self._pause(check.retry_after), left))

    def _pause(self, retry_after: float) -> float:
        """How long to sleep before trying again, given the script's estimate."""
        return max(retry_after, MIN_PAUSE_SECONDS)

    def _release(self, token: str) -> None:
        """Nothing to give back: rate limiters count calls, not holders."""

    def _check(self, token: str, take: bool) -> _Check:
        granted, retry_ms, used, at = _run(self._lua, self.key, [
            "1" if take else "0", self.count, self._period_ms(), token, self._description()])
        return _Check(bool(granted), float(retry_ms) / 1000, float(used), float(at))

    def _period_ms(self) -> int:
        return _ms(self.interval or 0)

    def _description(self) -> str:
        """What the key stores to describe this limiter (hash kinds: the interval)."""
        return repr(self.interval)

    def state(self) -> LimiterState:
        """A snapshot read from Redis (the script in look-only mode: it writes nothing)."""
        check = self._check("", take=False)
        return LimiterState(kind=self.kind, name=self.name, count=self.count,
                            interval=self.interval, used=check.used,
                            retry_after=check.retry_after)


class BucketLimiter(Limiter):
    """At most `count` calls per interval aligned on the Unix epoch (each second, minute...),
    all of them possibly at its start."""

    kind = "bucket"
    _lua = _BUCKET
    interval: float


class WindowLimiter(Limiter):
    """At most `count` calls in any `interval` seconds: no burst at an interval's edge."""

    kind = "window"
    _lua = _WINDOW
    interval: float

    def _description(self) -> str:
        return json.dumps({"count": self.count, "interval": self.interval})


class LeakyLimiter(Limiter):
    """A burst of up to `count` calls, then one every interval / count seconds as the bucket
    drains: a steady pace instead of a rush at each interval's start."""

    kind = "leaky"
    _lua = _LEAKY
    interval: float


class ConcurrentLimiter(Limiter):
    """At most `count` holders at once, across processes. A slot frees itself after
    `lock_timeout` seconds, so a process that dies holding one cannot block it for ever."""

    kind = "concurrent"
    _lua = _CONCURRENT

    def __init__(self, name: str, count: int, wait_timeout: float | timedelta,
                 lock_timeout: float | timedelta, reschedule: bool) -> None:
        super().__init__(name, count, None, wait_timeout, reschedule)
        self.lock_timeout = _seconds(lock_timeout, "lock_timeout")

    def _period_ms(self) -> int:
        return _ms(self.lock_timeout)

    def _description(self) -> str:
        return json.dumps({"count": self.count, "lock_timeout": self.lock_timeout})

    def _pause(self, retry_after: float) -> float:
        """The earliest expiry, or sooner: a holder may leave at any moment."""
        return min(super()._pause(retry_after), POLL_SECONDS)

    def _release(self, token: str) -> None:
        """Free the slot; if Redis cannot take that now, the slot frees itself after
        `lock_timeout` (the work in the block is done: it must not fail for this)."""
        try:
            released = _run(_RELEASE, self.key, [token])
        except redis.RedisError as exc:
            logger.warning("limiter %r: slot not released (%s); it frees itself within "
                           "lock_timeout (%s s)", self.name, exc, self.lock_timeout)
            return
        if released != 1:
            logger.warning("limiter %r: a holder kept its slot past lock_timeout (%s s), so "
                           "more than %d may have run at once", self.name, self.lock_timeout,
                           self.count)


# -- factories -----------------------------------------------------------------------------------

def concurrent(name: str, count: int, *, wait_timeout: float | timedelta = WAIT_TIMEOUT_SECONDS,
               lock_timeout: float | timedelta = LOCK_TIMEOUT_SECONDS, reschedule: bool = True
               ) -> ConcurrentLimiter:
    """At most `count` holders of `name` at once (each for at most `lock_timeout` seconds)."""
    return ConcurrentLimiter(name, count, wait_timeout, lock_timeout, reschedule)


def bucket(name: str, count: int, interval: str | float | timedelta, *,
           wait_timeout: float | timedelta = WAIT_TIMEOUT_SECONDS, reschedule: bool = True
           ) -> BucketLimiter:
    """At most `count` calls of `name` per aligned `interval`."""
    return BucketLimiter(name, count, interval, wait_timeout, reschedule)


def window(name: str, count: int, interval: str | float | timedelta, *,
           wait_timeout: float | timedelta = WAIT_TIMEOUT_SECONDS, reschedule: bool = True
           ) -> WindowLimiter:
    """At most `count` calls of `name` in any sliding `interval`."""
    return WindowLimiter(name, count, interval, wait_timeout, reschedule)


def leaky(name: str, count: int, interval: str | float | timedelta, *,
          wait_timeout: float | timedelta = WAIT_TIMEOUT_SECONDS, reschedule: bool = True
          ) -> LeakyLimiter:
    """Bursts of up to `count` calls of `name`, refilled at `count` per `interval`."""
    return LeakyLimiter(name, count, interval, wait_timeout, reschedule)


def states() -> list[LimiterState]:
    """The state of every limiter with a key in Redis (made by any process), by kind and name;
    read only. A key whose stored description is unreadable is left out."""
    client = get_redis()
    found = []
    for raw in client.scan_iter(match=keys.limiter("*", "*"), count=1000):
        key = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
        limiter = _stored_limiter(client, key)
        if limiter is not None:
            found.append(limiter.state())
    return sorted(found, key=lambda s: (s["kind"], s["name"]))


def _stored_limiter(client: redis.Redis, key: str) -> Limiter | None:
    """The limiter `key` describes, rebuilt from the count and interval stored in it."""
    for kind in ("bucket", "leaky", "window", "concurrent"):
        prefix = keys.limiter(kind, "")
        if key.startswith(prefix):
            name = key[len(prefix):]
            break
    else:
        return None
    try:
        if kind in ("bucket", "leaky"):
            count, interval = client.hmget(key, ["count", "interval"])
            if count is None or interval is None:
                return None
            make = bucket if kind == "bucket" else leaky
            return make(name, int(count), float(interval))
        members: Any = client.zrange(key, "+inf", "+inf", byscore=True)  # the description
        meta = json.loads(members[0]) if members else None
        if not isinstance(meta, dict):
            return None
        if kind == "window":
            return window(name, meta["count"], meta["interval"])
        return concurrent(name, meta["count"], lock_timeout=meta["lock_timeout"])
    except (ConfigError, ValueError, KeyError, TypeError, redis.ResponseError) as exc:
        logger.warning("limiter key %r holds no readable description: %s", key, exc)
        return None


# -- validation ----------------------------------------------------------------------------------

def _checked_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"limiter name must be a non-empty string, not {name!r}")
    return name


def _checked_count(count: object) -> int:
    if type(count) is not int or count <= 0:
        raise ConfigError(f"limiter count must be a positive whole number, not {count!r}")
    return count


def _interval(interval: object) -> float:
    """Seconds from a word ("second", "minute", "hour", "day"), a number or a timedelta."""
    if isinstance(interval, str):
        if interval not in INTERVALS:
            near = difflib.get_close_matches(interval, list(INTERVALS), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ConfigError(f"unknown limiter interval {interval!r}{hint}; use one of "
                              f"{', '.join(INTERVALS)}, a number of seconds or a timedelta")
        return INTERVALS[interval]
    seconds = _seconds(interval, "interval")
    if _ms(seconds) < 1:
        raise ConfigError(f"limiter interval must be at least 0.001 s, not {interval!r}")
    return seconds


def _seconds(value: object, what: str, allow_zero: bool = False) -> float:
    return seconds(value, f"limiter {what}", ConfigError, allow_zero=allow_zero)


def _ms(seconds: float) -> int:
    return round(seconds * 1000)
