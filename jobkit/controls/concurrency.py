"""Concurrency limits: slots per key, and the jobs held while every slot is taken.

A worker asks for a slot when it fetches a job whose message carries a concurrency key
(`admit`, from the transport, before Celery sees the job). Over the limit, the job moves from
the worker's in-flight keys to the key's held list in the same script: the worker thread is
free at once, nothing polls, and the job is neither run nor counted as a failure. When a job
ends, however it ends, `release` frees its slot and moves the oldest held jobs, as many as
there are free slots, to the front of their queues, each with a slot reserved for it, so held
jobs start in the order they arrived and a newcomer cannot take their place.

A slot expires `duration` seconds after it was taken: a worker killed with the job frees it
by then, and the poller (`sweep`) starts the held jobs it frees. Sooner, usually: the killed
worker's job is handed back by recovery, and it keeps its own slot when it runs again.
Expiry uses Redis TIME, so workers' clocks need not agree.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import redis

from jobkit import keys
from jobkit.display import shown as as_text
from jobkit.job_sets import BURY_LUA, WAKE_LUA, dead_limits
from jobkit.queues import WAKE_TOKENS_MAX
from jobkit.redis_client import get_redis, script

__all__ = ["ConcurrencyState", "admit", "header_problem", "release", "states", "sweep"]

logger = logging.getLogger(__name__)

# Shared by the scripts. `promote` moves the oldest held jobs to the front of their queues
# while their limit has a free slot: the larger of the entry's own `to` (each entry carries its
# job's `to` and `duration`) and `floor_to` (the caller's, so a raised limit reaches the jobs
# held under the old one first). The batch is pushed newest first, so the oldest is fetched
# first. An entry that cannot be read, or whose list key is not a list, is buried, not
# dropped. ARGV[n-5 ..]: wake prefix, wake max, priority separator, now (for the dead set),
# dead max jobs, dead timeout.
_PROMOTE = BURY_LUA + WAKE_LUA + """
local function redis_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

local function unusable(item)
  local ok, entry = pcall(cjson.decode, item)
  if not ok or type(entry) ~= 'table' or type(entry.list_key) ~= 'string'
      or entry.list_key == '' or type(entry.message) ~= 'string'
      or type(entry.job_id) ~= 'string' or type(entry.to) ~= 'number'
      or type(entry.duration) ~= 'number' then
    return 'not a held job entry'
  end
  local kind = redis.call('TYPE', entry.list_key).ok
  if kind ~= 'none' and kind ~= 'list' then
    return 'its queue key ' .. entry.list_key .. ' is a ' .. kind .. ', not a list'
  end
  return nil, entry
end

local function promote(slots, held, now, floor_to)
  local n = #ARGV
  local batch = {}
  while true do
    local item = redis.call('LINDEX', held, -1)
    if not item then break end
    local why, entry = unusable(item)
    if why then
      redis.call('RPOP', held)
      bury(KEYS[#KEYS], tonumber(ARGV[n - 2]), cjson.encode({message = item,
        error_class = 'jobkit.UnreadableEntry', failed_at = tonumber(ARGV[n - 2]),
        error_message = why}), ARGV[n - 1], ARGV[n])
    elseif redis.call('ZCARD', slots) < math.max(entry.to, floor_to) then
      redis.call('RPOP', held)
      redis.call('ZADD', slots, now + entry.duration, entry.job_id)
      table.insert(batch, entry)
    else
      break
    end
  end
  for i = #batch, 1, -1 do
    redis.call('RPUSH', batch[i].list_key, batch[i].message)
    wake(batch[i].list_key, ARGV[n - 5], ARGV[n - 4], ARGV[n - 3])
  end
end
"""

# KEYS: slots, held, held keys set, unacked, unacked index, dead.
# ARGV: job id, to, duration, delivery tag, list key, message, concurrency key, then _PROMOTE's.
# Returns 1 (run it: the job holds a slot) or 0 (held: it left the in-flight keys).
_ADMIT = _PROMOTE + """
local slots, held = KEYS[1], KEYS[2]
local now = redis_now()
local duration = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', slots, '-inf', now)
if redis.call('ZSCORE', slots, ARGV[1]) then
  redis.call('ZADD', slots, now + duration, ARGV[1])
  return 1
end
promote(slots, held, now, tonumber(ARGV[2]))
if redis.call('ZCARD', slots) < tonumber(ARGV[2]) then
  redis.call('ZADD', slots, now + duration, ARGV[1])
  return 1
end
redis.call('LPUSH', held, cjson.encode({job_id = ARGV[1], to = tonumber(ARGV[2]),
  duration = duration, list_key = ARGV[5], message = ARGV[6], held_at = now}))
redis.call('SADD', KEYS[3], ARGV[7])
redis.call('HDEL', KEYS[4], ARGV[4])
redis.call('ZREM', KEYS[5], ARGV[4])
return 0
"""

# KEYS: slots, held, held keys set, dead. ARGV: job id ("" to free none), concurrency key,
# the releasing job's `to` (0: none), then _PROMOTE's. Returns how many held jobs it moved.
_RELEASE = _PROMOTE + """
local slots, held = KEYS[1], KEYS[2]
if ARGV[1] ~= '' then redis.call('ZREM', slots, ARGV[1]) end
local now = redis_now()
redis.call('ZREMRANGEBYSCORE', slots, '-inf', now)
local before = redis.call('LLEN', held)
promote(slots, held, now, tonumber(ARGV[3]))
local after = redis.call('LLEN', held)
if after == 0 then redis.call('SREM', KEYS[3], ARGV[2]) end
return before - after
"""


def header_problem(value: Any) -> str | None:
    """Why a `jobkit_concurrency` header cannot be used, or None (envelope.py buries such a
    message rather than run it outside its limit)."""
    if not isinstance(value, dict):
        return "header 'jobkit_concurrency' is not an object"
    if not isinstance(value.get("key"), str) or not value["key"]:
        return "header 'jobkit_concurrency' has no key"
    if type(value.get("to")) is not int or value["to"] < 1:
        return "header 'jobkit_concurrency' has no whole number `to` >= 1"
    duration = value.get("duration")
    if not isinstance(duration, int | float) or isinstance(duration, bool) \
            or not math.isfinite(duration) or duration <= 0:
        return "header 'jobkit_concurrency' has no positive, finite `duration`"
    return None


def _promote_args() -> list[Any]:
    return [keys.WAKE_PREFIX, WAKE_TOKENS_MAX, keys.PRIORITY_SEPARATOR, time.time(),
            *dead_limits()]


def admit(client: redis.Redis, control: dict[str, Any], job_id: str, tag: str,
          list_key: str, message: bytes | str, unacked: str, unacked_index: str) -> bool:
    """True: the job took (or already had) a slot, run it. False: it is held, and it has
    left the in-flight keys `unacked` / `unacked_index` in the same step."""
    key = control["key"]
    admitted = script(_ADMIT)(
        keys=[keys.concurrency_slots(key), keys.concurrency_held(key),
              keys.CONCURRENCY_HELD_KEYS, unacked, unacked_index, keys.DEAD],
        args=[job_id, control["to"], control["duration"], tag, list_key, message, key,
              *_promote_args()], client=client)
    return bool(admitted)


def release(control: dict[str, Any], job_id: str, client: redis.Redis | None = None) -> int:
    """Free the job's slot and start the held jobs it makes room for; returns how many."""
    key = control["key"]
    to = control.get("to")
    return script(_RELEASE)(keys=[keys.concurrency_slots(key), keys.concurrency_held(key),
                        keys.CONCURRENCY_HELD_KEYS, keys.DEAD],
                  args=[job_id, key, to if type(to) is int else 0, *_promote_args()],
                  client=client or get_redis())


def sweep(client: redis.Redis | None = None) -> int:
    """Start the held jobs whose limit has a slot free again because a slot expired (its
    worker died); the poller runs this. Returns how many started."""
    client = client or get_redis()
    started = 0
    for key in client.smembers(keys.CONCURRENCY_HELD_KEYS):
        try:
            started += release({"key": as_text(key)}, "", client)
        except redis.ResponseError as exc:  # one broken key (say, not a list) stops no other
            logger.error("jobkit: concurrency key %r cannot be swept: %s", as_text(key), exc)
    if started:
        logger.info("jobkit: %d held jobs started after expired concurrency slots", started)
    return started


@dataclass(frozen=True)
class ConcurrencyState:
    """One concurrency key as Redis holds it: the jobs holding its slots (job id -> when the
    slot expires, Unix seconds) and how many jobs wait for one."""

    key: str
    running: dict[str, float]
    held: int


def states(client: redis.Redis | None = None) -> list[ConcurrencyState]:
    """Every concurrency key with a job running or held, by key."""
    client = client or get_redis()
    found: set[str] = {as_text(k) for k in client.smembers(keys.CONCURRENCY_HELD_KEYS)}
    prefix = keys.concurrency_slots("")
    for name in client.scan_iter(match=prefix + "*", count=1000):
        found.add(as_text(name)[len(prefix):])
    ordered = sorted(found)
    with client.pipeline(transaction=False) as pipe:  # one round trip for every key
        for key in ordered:
            pipe.zrange(keys.concurrency_slots(key), 0, -1, withscores=True)
            pipe.llen(keys.concurrency_held(key))
        replies = pipe.execute() if ordered else []
    return [ConcurrencyState(key, {as_text(j): s for j, s in running}, held)
            for key, running, held in zip(ordered, replies[::2], replies[1::2], strict=True)]
