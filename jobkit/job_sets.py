"""The Redis sorted sets that hold jobs outside their queues: scheduled, retry and dead.

One small class per set with its key, sharing the verbs here (as RQ's registries do). Every
member is a JSON object holding the exact message to push back to its queue's list
(``list_key``, ``message``) plus what a person needs to see (job id and class, error, ...).

Moving a job out of a set is one Lua script (ZREM, then LPUSH only if this call removed it):
racing pollers, or two people clicking "retry", can neither lose nor duplicate a job.
"""

from __future__ import annotations

import bisect
import json
import math
import re
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TypedDict

import redis
from redis.client import Pipeline

from jobkit import display, keys
from jobkit.celery_message import read_task_args
from jobkit.config import current_settings
from jobkit.imports import class_path
from jobkit.queues import WAKE_TOKENS_MAX
from jobkit.redis_client import get_redis

__all__ = [
    "DeadSet",
    "ErrorInfo",
    "JobEntry",
    "JobSet",
    "RetrySet",
    "ScheduledSet",
    "SetFilter",
    "UnreadableEntryError",
    "describe_error",
    "entry_member",
]

PAGE_SIZE = 100
BACKTRACE_LINES = 20  # default for Job.backtrace

# The one writer of dead-set entries (every path buries through it, Lua and Python alike):
# add the member, then let go of the oldest beyond `dead_timeout` seconds / `dead_max_jobs`.
BURY_LUA = """
local function bury(dead, score, member, max_jobs, keep_seconds)
  redis.call('ZADD', dead, score, member)
  redis.call('ZREMRANGEBYSCORE', dead, '-inf', score - tonumber(keep_seconds))
  redis.call('ZREMRANGEBYRANK', dead, 0, -tonumber(max_jobs) - 1)
end
"""

# A queue's wake list gets a token with each push, for idle workers (keys.wake_key); the
# list key's priority suffix (`sep`, keys.PRIORITY_SEPARATOR, + step) is cut off to find the
# queue.
WAKE_LUA = """
local function wake(list_key, wake_prefix, wake_max, sep)
  local queue = string.match(list_key, '^(.-)' .. sep .. '%d$') or list_key
  redis.call('LPUSH', wake_prefix .. queue, '1')
  redis.call('LTRIM', wake_prefix .. queue, 0, tonumber(wake_max) - 1)
end
"""

# Push a member's message to its list. A member that is not a readable entry is buried
# (KEYS[2] is the dead set) rather than lost or left to break every later move.
# ARGV[#ARGV-5 ..]: now, dead_max_jobs, dead_timeout, wake prefix, wake max, separator.
_PUSH_ENTRY = BURY_LUA + WAKE_LUA + """
local function readable(member)
  local ok, entry = pcall(cjson.decode, member)
  if ok and type(entry) == 'table' and type(entry.list_key) == 'string'
      and type(entry.message) == 'string' and entry.list_key ~= '' then
    return entry
  end
  return nil
end

local function push(member)
  local entry = readable(member)
  local n = #ARGV
  if entry == nil then
    bury(KEYS[2], tonumber(ARGV[n - 5]), cjson.encode({message = member,
      error_class = 'jobkit.UnreadableEntry', failed_at = tonumber(ARGV[n - 5]),
      error_message = 'not a jobkit set entry (JSON with list_key and message)'}),
      ARGV[n - 4], ARGV[n - 3])
    return false
  end
  redis.call('LPUSH', entry.list_key, entry.message)
  wake(entry.list_key, ARGV[n - 2], ARGV[n - 1], ARGV[n])
  return true
end
"""

_PUSH_IF_REMOVED = _PUSH_ENTRY + """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  if push(ARGV[1]) then return 1 end
  return -1
end
return 0
"""

_MOVE_TO_DEAD = BURY_LUA + """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  bury(KEYS[2], ARGV[2], ARGV[1], ARGV[3], ARGV[4])
  return 1
end
return 0
"""

_ADD_TO_DEAD = BURY_LUA + """
bury(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
return 1
"""

_MOVE_DUE = _PUSH_ENTRY + """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local moved = 0
for _, member in ipairs(due) do
  if redis.call('ZREM', KEYS[1], member) == 1 and push(member) then
    moved = moved + 1
  end
end
return {#due, moved}
"""


# Filtered reads and "… all" actions (SetFilter): ARGV[first..last] are substrings a member
# must hold, found with Lua's plain string.find. (ZSCAN's MATCH glob is slower than that: it
# tries the pattern at every position of every member.)
_HOLDS = """
local function holds(member, first, last)
  for i = first, last do
    if not string.find(member, ARGV[i], 1, true) then return false end
  end
  return true
end
"""

# The scores of the matches among `count` members from rank `start`: how many were read, then
# the scores. ARGV: start, count, the needles.
_MATCHING_SCORES = _HOLDS + """
local items = redis.call('ZRANGE', KEYS[1], ARGV[1], ARGV[1] + ARGV[2] - 1, 'WITHSCORES')
local found = {#items / 2}
for i = 1, #items, 2 do
  if holds(items[i], 3, #ARGV) then found[#found + 1] = items[i + 1] end
end
return found
"""

# The matches among `count` members from `offset` of a score range, in the set's order: how
# many were read, then member, score, ... ARGV: min, max, offset, count, the needles.
_MATCHING_RANGE = _HOLDS + """
local items = redis.call('ZRANGE', KEYS[1], ARGV[1], ARGV[2], 'BYSCORE', 'LIMIT', ARGV[3],
                         ARGV[4], 'WITHSCORES')
local found = {#items / 2}
for i = 1, #items, 2 do
  if holds(items[i], 5, #ARGV) then
    found[#found + 1] = items[i]
    found[#found + 1] = items[i + 1]
  end
end
return found
"""

# One chunk of an "… all" action: a ZSCAN step from the cursor kept in the progress hash
# KEYS[3] (ZSCAN, not ranks: it returns every member present throughout, however many others
# leave meanwhile; one that left before is not seen), each match taken out with ZREM and, only
# if this call removed it (as _MOVE_DUE does), pushed to its queue or buried (KEYS[2]). A push
# refuses a member that holds no job message: it stays, and is returned (with its score).
# ARGV: action (push, kill, delete), count, the needles, push_args().
_ACT_CHUNK = _PUSH_ENTRY + _HOLDS + """
if redis.call('HGET', KEYS[3], 'finished') ~= '0' then return {} end
local n = #ARGV
local reply = redis.call('ZSCAN', KEYS[1], redis.call('HGET', KEYS[3], 'cursor'),
                         'COUNT', ARGV[2])
local done, refused, items = 0, {}, reply[2]
for i = 1, #items, 2 do
  local member = items[i]
  if holds(member, 3, n - 6) then
    if ARGV[1] == 'push' and readable(member) == nil then
      refused[#refused + 1] = member
      refused[#refused + 1] = items[i + 1]
    elseif redis.call('ZREM', KEYS[1], member) == 1 then
      if ARGV[1] == 'push' then
        push(member)
      elseif ARGV[1] == 'kill' then
        bury(KEYS[2], tonumber(ARGV[n - 5]), member, ARGV[n - 4], ARGV[n - 3])
      end
      done = done + 1
    end
  end
end
redis.call('HSET', KEYS[3], 'cursor', reply[1], 'finished', reply[1] == '0' and '1' or '0')
redis.call('HINCRBY', KEYS[3], 'done', done)
redis.call('HINCRBY', KEYS[3], 'refused', #refused / 2)
return refused
"""

SCAN_COUNT = 1000  # members one read (or ZSCAN step) of a filtered scan looks at: a chunk


def dead_limits() -> list[float]:
    """ARGV for `bury`: dead_max_jobs, dead_timeout (settings)."""
    settings = current_settings()
    return [settings.dead_max_jobs, settings.dead_timeout]


def push_args() -> list[float | str]:
    """The trailing ARGV of every script built on `_PUSH_ENTRY`."""
    return [time.time(), *dead_limits(), keys.WAKE_PREFIX, WAKE_TOKENS_MAX,
            keys.PRIORITY_SEPARATOR]


@dataclass(frozen=True)
class SetFilter:
    """What a set page is narrowed to: a job class, a queue and a text, all to match.

    Each is a substring of the member's JSON text as `entry_member` writes it (no spaces,
    non-ASCII kept): the class and queue as their whole field (``"queue":"mail"``), so a
    script in Redis can match them without decoding a member."""

    job_class: str = ""
    queue: str = ""
    text: str = ""

    def __bool__(self) -> bool:
        return bool(self.job_class or self.queue or self.text)

    def needles(self) -> list[str]:
        """The substrings a member must hold, the likely rarest (the text) first."""
        fields = (("job_class", self.job_class), ("queue", self.queue))
        return [*filter(None, [self.text]), *(
            f'"{name}":{json.dumps(value, ensure_ascii=False)}' for name, value in fields
            if value)]


class UnreadableEntryError(ValueError):
    """A set member that is not a jobkit entry: it was moved to the dead set, not pushed."""


@dataclass(frozen=True)
class JobEntry:
    """One member of a set, as stored, with its score (a Unix time).

    `member` is kept exactly as Redis returned it (bytes from jobkit's clients), so deleting or
    moving the entry matches it even when it is not UTF-8 or not JSON. `data` is the decoded
    JSON object, or {} when the member is unreadable: `problem` then says why, and `text`
    shows the member with undecodable bytes escaped (``\\xff``)."""

    member: bytes | str
    score: float
    data: dict[str, Any] = field(repr=False)
    problem: str | None = None

    @property
    def raw(self) -> bytes:
        """The member's exact bytes."""
        return display.as_bytes(self.member)

    @property
    def text(self) -> str:
        """The member for display: undecodable bytes and control characters as ``\\xNN``."""
        return display.escaped(self.member)

    @property
    def digest(self) -> str:
        """A short hash of the member: names an entry that has no usable job id."""
        return display.digest(self.member)

    @property
    def ident(self) -> str:
        """The job id when it is a plain string, else `digest`."""
        return display.ident(self.data.get("job_id"), self.member)

    @property
    def key(self) -> str:
        """`<score>-<job id or digest>`: names the entry in URLs and forms (see fetch_key)."""
        return f"{self.score!r}-{self.ident}"

    @property
    def pushable(self) -> bool:
        """Whether it holds a message that can go back to a queue (retry, run now)."""
        return self.problem is None and isinstance(self.data.get("list_key"), str) and bool(
            self.data["list_key"]) and isinstance(self.data.get("message"), str)

    @property
    def unpushable_reason(self) -> str | None:
        """Why it cannot be retried or run, or None."""
        if self.pushable:
            return None
        return self.problem or "it holds no job message (list_key and message) to push"

    @property
    def job_id(self) -> str | None:
        return display.field_text(self.data.get("job_id"))

    @property
    def job_class(self) -> str | None:
        return display.field_text(self.data.get("job_class"))

    @property
    def queue(self) -> str | None:
        return display.field_text(self.data.get("queue"))

    @property
    def payload(self) -> Any:
        """The job payload: stored with failures; read from the message otherwise."""
        if "payload" in self.data:
            return self.data["payload"]
        try:
            return read_task_args(self.data["message"])[0]
        except Exception:  # any stored shape: an unreadable message has no payload to show
            return None

    @property
    def error_class(self) -> str | None:
        return display.field_text(self.data.get("error_class"))

    @property
    def error_message(self) -> str | None:
        return display.field_text(self.data.get("error_message"))

    @property
    def backtrace(self) -> list[str]:
        lines = self.data.get("backtrace")
        if isinstance(lines, str):
            return [display.printable(line) for line in lines.splitlines()]
        if isinstance(lines, list):
            return [display.printable(line if isinstance(line, str) else repr(line))
                    for line in lines]
        return []

    @property
    def retry_count(self) -> int:
        count = self.data.get("retry_count", 0)
        return count if type(count) is int else 0

    def field_text(self, name: str) -> str | None:
        """Any stored field as display text (None when absent)."""
        return display.field_text(self.data.get(name))


class JobSet:
    """A sorted set of jobs scored by a Unix time."""

    name = ""
    key = ""  # keys.py
    newest_first = False
    bulk_actions: tuple[str, ...] = ("push", "delete")  # what act_chunk does here

    def __init__(self, client: redis.Redis | None = None) -> None:
        self.client = client or get_redis()
        self._push_if_removed = self.client.register_script(_PUSH_IF_REMOVED)
        self._matching_scores = self.client.register_script(_MATCHING_SCORES)
        self._matching_range = self.client.register_script(_MATCHING_RANGE)
        self._act_chunk = self.client.register_script(_ACT_CHUNK)

    def add(self, score: float, list_key: str, message: str, pipe: Pipeline | None = None,
            **info: object) -> None:
        """Hold `message` (for list `list_key`) at `score`; pass `pipe` to batch."""
        (pipe or self.client).zadd(self.key, {entry_member(list_key, message, **info): score})

    def size(self) -> int:
        return self.client.zcard(self.key)

    def __len__(self) -> int:
        return self.size()

    def __iter__(self) -> Iterator[JobEntry]:
        """Every entry, read a page at a time so a large set is never loaded whole."""
        start = 0
        read = self.client.zrevrange if self.newest_first else self.client.zrange
        while True:
            page = read(self.key, start, start + PAGE_SIZE - 1, withscores=True)
            yield from _entries(page)
            if len(page) < PAGE_SIZE:
                return
            start += len(page)

    def page(self, start: int = 0, count: int = 25) -> list[JobEntry]:
        if count <= 0:
            return []
        read = self.client.zrevrange if self.newest_first else self.client.zrange
        return _entries(read(self.key, max(0, start), max(0, start) + count - 1,
                             withscores=True))

    def find(self, job_id: str) -> JobEntry | None:
        """The entry of a job id, or of a digest (``~...``, for an entry without a usable job
        id). Reads the whole set: prefer `fetch` when the score is known."""
        return next((e for e in self if job_id in (e.job_id, e.ident)), None)

    def fetch(self, score: float, job_id: str) -> JobEntry | None:
        """The entry with this score and job id (or `ident`), read without scanning the set."""
        members = self.client.zrange(self.key, score, score, byscore=True, withscores=True)
        return next((e for e in _entries(members)
                     if job_id in (e.ident, e.job_id, str(e.data.get("job_id")))), None)

    def fetch_key(self, key: str) -> JobEntry | None:
        """The entry named by a `JobEntry.key` (``<score>-<job id>``), or None."""
        match = _KEY.match(key or "")
        if match is None:
            return None
        try:
            score = float(match.group(1))
        except ValueError:
            return None
        return None if math.isnan(score) else self.fetch(score, match.group(2))

    def search(self, text: str, limit: int = 100) -> list[JobEntry]:
        """Entries whose stored JSON contains `text` (class, id, argument, error...), scanned
        in Redis (ZSCAN MATCH), at most `limit`."""
        pattern = "*" + "".join(f"\\{c}" if c in "*?[]\\" else c for c in text) + "*"
        found = []
        for member, score in self.client.zscan_iter(self.key, match=pattern, count=1000):
            found.append(_entry(member, score))
            if len(found) >= limit:
                break
        return sorted(found, key=lambda e: e.score, reverse=self.newest_first)

    def matching_scores(self, match: SetFilter) -> list[float]:
        """The score of every entry `match` selects, ascending: the set read in chunks of
        SCAN_COUNT members that a script in Redis matches itself, so only scores travel. (An
        entry that moves while the chunks are read may be counted twice or not at all.)"""
        scores: list[float] = []
        start = 0
        while True:
            read, *found = self._matching_scores(keys=[self.key],
                                                 args=[start, SCAN_COUNT, *match.needles()])
            scores += map(float, found)
            if read < SCAN_COUNT:
                return sorted(scores)  # in order already unless the set changed meanwhile
            start += read

    def matching_page(self, match: SetFilter, start: int = 0, count: int = 25
                      ) -> tuple[int, list[JobEntry]]:
        """How many entries `match` selects, and `count` of them from `start`, newest first.

        The scores say which score range the page spans; that range is then read in steps,
        Redis keeping only the matches (ties in the set's own order)."""
        scores = self.matching_scores(match)
        total = len(scores)
        first, last = max(0, total - start - count), total - max(0, start)  # ascending
        if count <= 0 or first >= last:
            return total, []
        low, high = scores[first], scores[last - 1]
        skip = first - bisect.bisect_left(scores, low)  # matches tied with `low` before it
        found: list[Any] = []
        offset = 0
        while len(found) < 2 * (skip + last - first):
            read, *pairs = self._matching_range(
                keys=[self.key], args=[repr(low), repr(high), offset, SCAN_COUNT,
                                       *match.needles()])
            found += pairs
            if read < SCAN_COUNT:
                break
            offset += read
        entries = [_entry(found[i], float(found[i + 1])) for i in range(0, len(found), 2)]
        return total, entries[skip:skip + last - first][::-1]

    def act_chunk(self, action: str, match: SetFilter, progress: str) -> list[JobEntry]:
        """One chunk of an "… all" action on the entries `match` selects: `push` (to their
        queues), `kill` (to the dead set) or `delete`, in one Lua call over one ZSCAN step of
        about SCAN_COUNT members, each entry acted on exactly once (see _ACT_CHUNK).

        `progress` is a hash the caller creates with ``cursor``, ``finished``, ``done`` and
        ``refused`` all 0: each chunk continues from its cursor, adds to its
        counts and sets ``finished`` 1 after the last. Returns the entries a push refused."""
        if action not in self.bulk_actions:
            raise ValueError(f"no such action on the {self.name} set: {action!r}")
        refused = self._act_chunk(keys=[self.key, DeadSet.key, progress],
                                  args=[action, SCAN_COUNT, *match.needles(), *push_args()])
        return [_entry(refused[i], float(refused[i + 1])) for i in range(0, len(refused), 2)]

    def push_now(self, entry: JobEntry) -> bool:
        """Send the job to its queue now; False if it had already left the set.

        Raises UnreadableEntryError, saying why, for a member that holds no message to push:
        it stays where it is (the script moves one it finds unreadable to the dead set)."""
        reason = entry.unpushable_reason
        if reason is not None:
            raise UnreadableEntryError(reason)
        pushed = self._push_if_removed(keys=[self.key, DeadSet.key],
                                       args=[entry.member, *push_args()])
        if pushed == -1:
            raise UnreadableEntryError("it holds no job message to push; it is kept in the "
                                       "dead set")
        return bool(pushed)

    def delete(self, entry: JobEntry) -> bool:
        return bool(self.client.zrem(self.key, entry.member))

    def clear(self) -> int:
        """Remove every entry; returns how many there were."""
        with self.client.pipeline() as pipe:
            pipe.zcard(self.key)
            pipe.delete(self.key)
            count, _ = pipe.execute()
        return count


class _DueSet(JobSet):
    """A set whose entries go to their queues by themselves when their time comes."""

    bulk_actions = ("push", "delete", "kill")

    def __init__(self, client: redis.Redis | None = None) -> None:
        super().__init__(client)
        self._move_due = self.client.register_script(_MOVE_DUE)
        self._move_to_dead = self.client.register_script(_MOVE_TO_DEAD)

    def move_due(self, now: float | None = None, batch: int = PAGE_SIZE) -> int:
        """Push every job due by `now` to its queue; returns how many moved."""
        now = time.time() if now is None else now
        moved = 0
        while True:
            seen, count = self._move_due(keys=[self.key, DeadSet.key],
                                         args=[now, batch, *push_args()])
            moved += count
            if seen < batch:
                return moved

    run_now = JobSet.push_now

    def kill(self, entry: JobEntry) -> bool:
        """Move to the dead set now (one atomic step): it will not run by itself any more."""
        moved = self._move_to_dead(keys=[self.key, DeadSet.key],
                                   args=[entry.member, time.time(), *dead_limits()])
        return bool(moved)


class ScheduledSet(_DueSet):
    """Delayed jobs waiting for their time (see scheduling.py)."""

    name = "schedule"
    key = keys.SCHEDULE


class RetrySet(_DueSet):
    """Failed jobs waiting for their next attempt."""

    name = "retry"
    key = keys.RETRY

    retry = JobSet.push_now


class DeadSet(JobSet):
    """Jobs that will not run again until someone retries them (Sidekiq's Morgue)."""

    name = "dead"
    key = keys.DEAD
    newest_first = True

    retry = JobSet.push_now

    def __init__(self, client: redis.Redis | None = None) -> None:
        super().__init__(client)
        self._add = self.client.register_script(_ADD_TO_DEAD)

    def add(self, score: float, list_key: str, message: str, pipe: Pipeline | None = None,
            **info: object) -> None:
        """Bury a job; the oldest beyond `dead_max_jobs` entries or `dead_timeout` seconds
        (settings; Sidekiq's 10,000 and six months by default) are let go."""
        self._add(
            keys=[self.key], args=[score, entry_member(list_key, message, **info),
                                   *dead_limits()], client=pipe)


class ErrorInfo(TypedDict):
    """The error fields of a set entry (what the dashboard shows)."""

    error_class: str
    error_message: str
    backtrace: list[str]


def describe_error(error: BaseException | str, backtrace: int = BACKTRACE_LINES) -> ErrorInfo:
    """Error class, message and the last `backtrace` lines of the backtrace (0: none)."""
    if isinstance(error, str):
        return {"error_class": "jobkit.Error", "error_message": error, "backtrace": []}
    lines = traceback.format_exception(error)
    return {
        "error_class": class_path(type(error)),
        "error_message": _message_of(error),
        "backtrace": [line.rstrip() for line in lines][-backtrace:] if backtrace else [],
    }


def _message_of(error: BaseException) -> str:
    """str(error), or what the traceback module prints when that raises (a user's __str__)."""
    try:
        return str(error)
    except Exception:
        return "<exception str() failed>"


def entry_member(list_key: str, message: str, **info: object) -> str:
    """A set member: the message to push back to list `list_key`, and what people read."""
    entry = {"list_key": list_key, "message": message, **info}
    return json.dumps(entry, separators=(",", ":"), ensure_ascii=False, default=repr)


# `JobEntry.key`: a float's repr (1.5, 1e-05, -2.0, inf), a dash, the job id or digest.
_KEY = re.compile(r"(-?(?:inf|\d+(?:\.\d*)?(?:e[-+]?\d+)?))-(.*)\Z", re.DOTALL)


def _entries(scored: Any) -> list[JobEntry]:
    """The entries of a ZRANGE ... WITHSCORES reply: (member, score) pairs (redis-py types
    it as any ZRANGE reply, of any redis-py version)."""
    return [_entry(member, score) for member, score in scored]


def _entry(member: bytes | str, score: float) -> JobEntry:
    """A member as read, never failing: anything that is not a JSON object (not UTF-8, not
    JSON, JSON of another type, nested too deep) is an entry with `problem` set."""
    raw = display.as_bytes(member)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return JobEntry(member, score, {}, f"not UTF-8 (byte {exc.start})")
    try:
        data = json.loads(text)
    except RecursionError:
        return JobEntry(member, score, {}, "JSON nested too deep")
    except ValueError as exc:
        return JobEntry(member, score, {}, f"not JSON ({exc.msg})"
                        if isinstance(exc, json.JSONDecodeError) else "not JSON")
    if not isinstance(data, dict):
        return JobEntry(member, score, {}, f"JSON {type(data).__name__}, not an object")
    return JobEntry(member, score, data)
