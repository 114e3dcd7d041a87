"""A batch's state in Redis: the one writer of `jobkit:batch:<id>` and its members hash.

The hash holds the counters (`total`, and one per outcome: `succeeded`, `discarded`, `dead`,
`failing`), so progress is one HGETALL of a hash of fixed size; the members hash maps each
member (job id, or a child batch's id) to its last outcome, so a job that runs twice
(at-least-once) is counted once. Every change is one Lua script that also pushes the callback
jobs whose condition it meets, each at most once (the `fired_<event>` flag, HSETNX), and when
a batch finishes, records its outcome in its parent, in the same step. A child becomes a member
of its parent when it is sealed (`_SEAL`), so one whose creator died inside its block holds no
parent. Every script checks the keys it will change (types, counters) before its first write.

Member outcomes move: (none) -> failing | succeeded | discarded | dead; failing -> any;
dead -> failing | succeeded | discarded (a dead-set retry); succeeded and discarded are final.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol, cast

import redis

from jobkit import keys
from jobkit.job_sets import WAKE_LUA
from jobkit.queues import WAKE_TOKENS_MAX
from jobkit.redis_client import get_redis, script

if TYPE_CHECKING:
    from redis.client import Pipeline

    from jobkit.job import Job

__all__ = ["DONE_SECONDS", "EVENTS", "OPEN_SECONDS", "BatchProblem", "BatchStatus", "BatchStore",
           "Event", "Outcome", "RedisBatches", "count_members", "record"]

Outcome = Literal["succeeded", "discarded", "failing", "dead"]
Event = Literal["success", "complete", "death"]
EVENTS: tuple[Event, ...] = ("success", "complete", "death")

#: A batch's keys live this long after its creation or its last change (a batch unfinished
#: for 30 days is forgotten); a finished batch with dead members too, so that a dead-set retry
#: within that time still counts.
OPEN_SECONDS = 30 * 86400
#: A batch whose members all succeeded (nothing can change any more) is kept for this long.
DONE_SECONDS = 86400

_COMMON = WAKE_LUA + """
local prefix, suffix = ARGV[1], ARGV[2]
local now, open_ttl, done_ttl = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local queues = KEYS[2]

local function num(value) return tonumber(value) or 0 end

-- refuse, before anything is written, a batch (or an ancestor) whose keys jobkit did not write:
-- a key of another type, or a counter that HINCRBY cannot add to (an error naming the key,
-- never a half-applied change)
local function check(batch)
  for depth = 1, 32 do
    for _, key in ipairs({batch, batch .. suffix}) do
      local kind = redis.call('TYPE', key).ok
      if kind ~= 'hash' and kind ~= 'none' then
        error({err = 'jobkit batch key ' .. key .. ' is a ' .. kind .. ', not a hash'})
      end
    end
    local counters = {'total', 'succeeded', 'discarded', 'dead', 'failing'}
    local values = redis.call('HMGET', batch, unpack(counters))
    for i, name in ipairs(counters) do
      if values[i] and not string.match(values[i], '^%-?%d+$') then
        error({err = 'jobkit batch key ' .. batch .. ': its ' .. name .. ' is '
               .. string.format('%q', string.sub(values[i], 1, 40)) .. ', not a whole number'})
      end
    end
    local parent = redis.call('HGET', batch, 'parent')
    if not parent then return end
    batch = prefix .. parent
  end
end

-- push an event's callback job, once ever per batch
local function fire(batch, event)
  if redis.call('HSETNX', batch, 'fired_' .. event, now) == 0 then return end
  local entry = redis.call('HGET', batch, 'on_' .. event)
  if not entry then return end
  local ok, callback = pcall(cjson.decode, entry)  -- written by _CREATE; anything else: none
  if not ok or type(callback) ~= 'table' or type(callback.list_key) ~= 'string'
      or type(callback.message) ~= 'string' or type(callback.queue) ~= 'string' then
    return
  end
  redis.call('LPUSH', callback.list_key, callback.message)
  wake(callback.list_key, ARGV[6], ARGV[7], ARGV[8])
  redis.call('SADD', queues, callback.queue)
end

-- one member's outcome; false when it changes nothing (the same again, or after a final one)
local function move(batch, member, outcome)
  if redis.call('EXISTS', batch) == 0 then return false end
  local old = redis.call('HGET', batch .. suffix, member)
  if old == outcome or old == 'succeeded' or old == 'discarded' then return false end
  redis.call('HSET', batch .. suffix, member, outcome)
  if old then redis.call('HINCRBY', batch, old, -1) end
  redis.call('HINCRBY', batch, outcome, 1)
  redis.call('EXPIRE', batch, open_ttl)
  redis.call('EXPIRE', batch .. suffix, open_ttl)
  return true
end

-- fire what is due (nothing before the block ended: it may still raise, and then no callback
-- runs); once every member finished, the batch's own outcome for its parent
local function settle(batch)
  local h = redis.call('HMGET', batch, 'total', 'succeeded', 'discarded', 'dead', 'sealed',
                       'aborted')
  local total, ok, dead, aborted = num(h[1]), num(h[2]) + num(h[3]), num(h[4]), h[6] == '1'
  if h[5] ~= '1' then return nil end
  if dead > 0 and not aborted then fire(batch, 'death') end
  if ok + dead < total then return nil end
  local ttl = open_ttl
  if not aborted then
    fire(batch, 'complete')
    if dead == 0 then
      fire(batch, 'success')
      ttl = done_ttl
    end
  end
  redis.call('EXPIRE', batch, ttl)
  redis.call('EXPIRE', batch .. suffix, ttl)
  if aborted or dead > 0 then return 'dead' end
  return 'succeeded'
end

-- after a change: settle the batch, and its parent while each one finishes
local function propagate(batch)
  while true do
    local outcome = settle(batch)
    local parent = redis.call('HGET', batch, 'parent')
    if not outcome or not parent then return end
    local child = string.sub(batch, #prefix + 1)
    batch = prefix .. parent
    if not move(batch, child, outcome) then return end
  end
end
"""

# KEYS: the batch, keys.QUEUES. ARGV[9], [10]: member, outcome.
_RECORD = _COMMON + """
check(KEYS[1])
if move(KEYS[1], ARGV[9], ARGV[10]) then propagate(KEYS[1]) end
return 1
"""

# KEYS: the batch, keys.QUEUES. ARGV[9]: '1' when its block raised (no callback will fire).
# A child batch becomes a member of its parent here, when its block has ended, not when it is
# made: a creator killed inside the block (a batch job's worker killed -9) leaves a child
# that is never sealed, and the parent must not wait for it (the job runs again and makes a
# new one).
_SEAL = _COMMON + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
check(KEYS[1])
if ARGV[9] == '1' then redis.call('HSET', KEYS[1], 'aborted', '1') end
if redis.call('HSETNX', KEYS[1], 'sealed', '1') == 1 then
  local parent = redis.call('HGET', KEYS[1], 'parent')
  if parent and redis.call('EXISTS', prefix .. parent) == 1 then
    redis.call('HINCRBY', prefix .. parent, 'total', 1)
    redis.call('EXPIRE', prefix .. parent, open_ttl)
  end
end
propagate(KEYS[1])
return 1
"""

# KEYS: the batch, the index (keys.BATCHES), then the parent batch if any. ARGV: id, now,
# ttl, then field/value pairs. The parent must exist; it counts the child when it is sealed.
_CREATE = """
local ttl = tonumber(ARGV[3])
local kind = redis.call('TYPE', KEYS[2]).ok
if kind ~= 'zset' and kind ~= 'none' then
  error({err = 'jobkit batch index ' .. KEYS[2] .. ' is a ' .. kind .. ', not a sorted set'})
end
if #KEYS == 3 and redis.call('EXISTS', KEYS[3]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'created_at', ARGV[2], 'total', 0, unpack(ARGV, 4))
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(ARGV[2]) - ttl)
return 1
"""


def _common_args() -> list[str | float]:
    return [keys.batch(""), keys.BATCH_MEMBERS_SUFFIX, time.time(), OPEN_SECONDS, DONE_SECONDS,
            keys.WAKE_PREFIX, WAKE_TOKENS_MAX, keys.PRIORITY_SEPARATOR]


def record(client: redis.Redis, batch_id: str, member: str, outcome: Outcome) -> None:
    """A member's outcome (on the worker, before the job's message is acknowledged: a crash
    in between runs the job again, and the second outcome replaces or repeats the first)."""
    script(_RECORD)(keys=[keys.batch(batch_id), keys.QUEUES],
                    args=[*_common_args(), member, outcome], client=client)


def count_members(pipe: Pipeline, batch_id: str, count: int) -> None:
    """`count` more members, queued in the enqueuing transaction before their pushes (the
    celery adapter): a job can never finish before it is counted."""
    pipe.hincrby(keys.batch(batch_id), "total", count)
    pipe.expire(keys.batch(batch_id), OPEN_SECONDS)
    pipe.expire(keys.batch_members(batch_id), OPEN_SECONDS)


@dataclass(frozen=True)
class BatchStatus:
    """A batch's progress, as read in one step. `pending`: members not finished (failing ones
    too); `failed`: members whose last run failed (in the retry set, or dead)."""

    batch_id: str
    description: str
    created_at: float
    parent: str | None
    total: int
    succeeded: int
    discarded: int
    dead: int
    failing: int
    #: The block that created it has ended (jobs added from its own jobs come after).
    sealed: bool
    #: Its block raised: the jobs sent before still run, no callback fires.
    aborted: bool
    #: event -> the callback's job class path.
    callbacks: dict[str, str] = field(default_factory=dict)
    #: event -> when its callback was pushed (Unix seconds).
    fired: dict[str, float] = field(default_factory=dict)

    @property
    def pending(self) -> int:
        return self.total - self.succeeded - self.discarded - self.dead

    @property
    def failed(self) -> int:
        return self.failing + self.dead

    @property
    def complete(self) -> bool:
        """Every member finished: succeeded, discarded or dead."""
        return self.sealed and self.pending <= 0

    @property
    def success(self) -> bool:
        """Every member succeeded (or was discarded)."""
        return self.complete and self.dead == 0 and not self.aborted

    @classmethod
    def from_hash(cls, batch_id: str, data: Mapping[str, str]) -> BatchStatus:
        """Never fails: a field that is not a number reads as 0."""
        def number(name: str) -> int:
            try:
                return int(data.get(name) or 0)
            except ValueError:
                return 0

        def moment(name: str) -> float:
            try:
                return float(data.get(name) or 0)
            except ValueError:
                return 0.0

        callbacks: dict[str, str] = {}
        for event in EVENTS:
            entry = data.get(f"on_{event}")
            if entry is not None:
                try:
                    callbacks[event] = str(json.loads(entry).get("job_class"))
                except (ValueError, AttributeError):
                    callbacks[event] = "?"
        return cls(batch_id, data.get("description", ""), moment("created_at"),
                   data.get("parent"), number("total"), number("succeeded"),
                   number("discarded"), number("dead"), number("failing"),
                   data.get("sealed") == "1", data.get("aborted") == "1", callbacks,
                   {event: moment(f"fired_{event}") for event in EVENTS
                    if f"fired_{event}" in data})


@dataclass(frozen=True)
class BatchProblem:
    """A batch in the index whose key cannot be read as a batch (`RedisBatches.recent`)."""

    batch_id: str
    problem: str


class BatchStore(Protocol):
    """Where an adapter keeps batches: Redis (celery) or memory (the test modes)."""

    def callback_entry(self, job: Job) -> str:
        """A prepared callback job, stored with the batch until its event."""
        ...

    def create(self, batch_id: str, parent: str | None, description: str,
               callbacks: Mapping[str, str]) -> None: ...

    def seal(self, batch_id: str, aborted: bool) -> None: ...

    def status(self, batch_id: str) -> BatchStatus | None: ...


class RedisBatches:
    """Batches in Redis; the celery adapter's store (it adds `callback_entry`)."""

    def __init__(self, client: redis.Redis | None = None) -> None:
        self.client = client or get_redis()

    def create(self, batch_id: str, parent: str | None, description: str,
               callbacks: Mapping[str, str]) -> None:
        fields: list[str] = ["description", description]
        if parent is not None:
            fields += ["parent", parent]
        for event, entry in callbacks.items():
            fields += [f"on_{event}", entry]
        batch_keys = [keys.batch(batch_id), keys.BATCHES]
        if parent is not None:
            batch_keys.append(keys.batch(parent))
        if not script(_CREATE)(keys=batch_keys, args=[batch_id, time.time(), OPEN_SECONDS,
                                                      *fields], client=self.client):
            raise LookupError(f"parent batch {parent} not found (expired, or never created)")

    def seal(self, batch_id: str, aborted: bool) -> None:
        script(_SEAL)(keys=[keys.batch(batch_id), keys.QUEUES],
                      args=[*_common_args(), "1" if aborted else "0"], client=self.client)

    def status(self, batch_id: str) -> BatchStatus | None:
        """ValueError naming the key when it is not a hash (not jobkit's)."""
        try:
            data = self.client.hgetall(keys.batch(batch_id))
        except redis.ResponseError as exc:
            raise ValueError(_unreadable(batch_id, exc)) from None
        return BatchStatus.from_hash(batch_id, _texts(data)) if data else None

    def recent(self, start: int = 0, count: int = 25) -> list[BatchStatus | BatchProblem]:
        """The newest batches first (those expired since are left out; a key that is not a
        hash is a BatchProblem, so one bad key does not hide the others)."""
        try:
            found = cast("list[bytes | str]", self.client.zrevrange(keys.BATCHES, start,
                                                                    start + count - 1))
        except redis.ResponseError as exc:
            raise ValueError(f"the batch index {keys.BATCHES} cannot be read ({exc})") from None
        ids = [_text(i) for i in found]
        with self.client.pipeline(transaction=False) as pipe:
            for batch_id in ids:
                pipe.hgetall(keys.batch(batch_id))
            read = pipe.execute(raise_on_error=False)
        return [BatchProblem(batch_id, _unreadable(batch_id, data))
                if isinstance(data, redis.ResponseError)
                else BatchStatus.from_hash(batch_id, _texts(data))
                for batch_id, data in zip(ids, read, strict=True) if data]

    def size(self) -> int:
        """Batches in the index (created within OPEN_SECONDS; some may have expired)."""
        return self.client.zcard(keys.BATCHES)


def _unreadable(batch_id: str, error: Exception) -> str:
    return f"batch {batch_id}: its key {keys.batch(batch_id)} cannot be read ({error})"


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _texts(data: Mapping[bytes | str, bytes | str]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in data.items()}
