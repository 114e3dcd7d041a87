"""The Redis sorted sets that hold jobs outside their queues: scheduled, retry and dead.

One small class per set with its key, sharing the verbs here (as RQ's registries do). Every
member is a JSON object holding the exact message to push back to its queue's list
(``list_key``, ``message``) plus what a person needs to see (job id and class, error, ...).

Moving a job out of a set is one Lua script (ZREM, then LPUSH only if this call removed it):
racing pollers, or two people clicking "retry", can neither lose nor duplicate a job.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import redis

from jobkit.celery_message import read_task_args
from jobkit.config import current_settings
from jobkit.queues import WAKE_TOKENS_MAX
from jobkit.redis_client import get_redis

__all__ = ["DeadSet", "JobEntry", "JobSet", "RetrySet", "ScheduledSet", "describe_error"]

KEY_PREFIX = "jobkit:"
PAGE_SIZE = 100
BACKTRACE_LINES = 20  # default for Job.backtrace

# Push a member's message to its list, and a wake token for idle workers (queues.wake_key).
_PUSH_ENTRY = """
local function push(member)
  local entry = cjson.decode(member)
  redis.call('LPUSH', entry.list_key, entry.message)
  local queue = string.match(entry.list_key, '^(.-)\6\22%d$') or entry.list_key
  redis.call('LPUSH', 'jobkit:wake:' .. queue, '1')
  redis.call('LTRIM', 'jobkit:wake:' .. queue, 0, tonumber(ARGV[#ARGV]) - 1)
end
"""

_PUSH_IF_REMOVED = _PUSH_ENTRY + """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  push(ARGV[1])
  return 1
end
return 0
"""

_MOVE_TO_SET = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
  return 1
end
return 0
"""

_MOVE_DUE = _PUSH_ENTRY + """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local moved = 0
for _, member in ipairs(due) do
  if redis.call('ZREM', KEYS[1], member) == 1 then
    push(member)
    moved = moved + 1
  end
end
return {#due, moved}
"""


@dataclass(frozen=True)
class JobEntry:
    """One member of a set, as stored, with its score (a Unix time)."""

    member: str
    score: float
    data: dict[str, Any] = field(repr=False)

    @property
    def key(self) -> str:
        """`<score>-<job id>`: names the entry in URLs and forms (see JobSet.fetch)."""
        return f"{self.score!r}-{self.job_id}"

    @property
    def job_id(self) -> str | None:
        return self.data.get("job_id")

    @property
    def job_class(self) -> str | None:
        return self.data.get("job_class")

    @property
    def queue(self) -> str | None:
        return self.data.get("queue")

    @property
    def payload(self) -> Any:
        """The job payload: stored with failures; read from the message otherwise."""
        if "payload" in self.data:
            return self.data["payload"]
        try:
            return read_task_args(self.data["message"])[0]
        except (ValueError, KeyError, IndexError):
            return None

    @property
    def error_class(self) -> str | None:
        return self.data.get("error_class")

    @property
    def error_message(self) -> str | None:
        return self.data.get("error_message")

    @property
    def backtrace(self) -> list[str]:
        return self.data.get("backtrace") or []

    @property
    def retry_count(self) -> int:
        return self.data.get("retry_count", 0)


class JobSet:
    """A sorted set of jobs scored by a Unix time."""

    name = ""
    newest_first = False

    def __init__(self, client: redis.Redis | None = None) -> None:
        self.client = client or get_redis()
        self.key = f"{KEY_PREFIX}{self.name}"
        self._push_if_removed = self.client.register_script(_PUSH_IF_REMOVED)

    def add(self, score: float, list_key: str, message: str, pipe: Any = None, **info: Any
            ) -> None:
        """Hold `message` (for list `list_key`) at `score`; pass `pipe` to batch."""
        entry = {"list_key": list_key, "message": message, **info}
        member = json.dumps(entry, separators=(",", ":"), ensure_ascii=False, default=repr)
        (pipe or self.client).zadd(self.key, {member: score})

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
            yield from (_entry(member, score) for member, score in page)
            if len(page) < PAGE_SIZE:
                return
            start += len(page)

    def page(self, start: int = 0, count: int = 25) -> list[JobEntry]:
        read = self.client.zrevrange if self.newest_first else self.client.zrange
        return [_entry(m, s) for m, s in read(self.key, start, start + count - 1,
                                                withscores=True)]

    def find(self, job_id: str) -> JobEntry | None:
        """The entry of a job id (reads the whole set: prefer `fetch` when the score is known)."""
        return next((entry for entry in self if entry.job_id == job_id), None)

    def fetch(self, score: float, job_id: str) -> JobEntry | None:
        """The entry with this score and job id, read without scanning the set."""
        members = self.client.zrange(self.key, score, score, byscore=True, withscores=True)
        return next((e for e in (_entry(m, s) for m, s in members) if str(e.job_id) == job_id),
                    None)

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

    def push_now(self, entry: JobEntry) -> bool:
        """Send the job to its queue now; False if it had already left the set."""
        return bool(self._push_if_removed(keys=[self.key],
                                          args=[entry.member, WAKE_TOKENS_MAX]))

    def delete(self, entry: JobEntry) -> bool:
        return bool(self.client.zrem(self.key, entry.member))

    def clear(self) -> int:
        """Remove every entry; returns how many there were."""
        with self.client.pipeline() as pipe:
            pipe.zcard(self.key).delete(self.key)
            count, _ = pipe.execute()
        return count


class _DueSet(JobSet):
    """A set whose entries go to their queues by themselves when their time comes."""

    def __init__(self, client: redis.Redis | None = None) -> None:
        super().__init__(client)
        self._move_due = self.client.register_script(_MOVE_DUE)

    def move_due(self, now: float | None = None, batch: int = PAGE_SIZE) -> int:
        """Push every job due by `now` to its queue; returns how many moved."""
        now = time.time() if now is None else now
        moved = 0
        while True:
            seen, count = self._move_due(keys=[self.key], args=[now, batch, WAKE_TOKENS_MAX])
            moved += count
            if seen < batch:
                return moved

    run_now = JobSet.push_now

    def kill(self, entry: JobEntry) -> bool:
        """Move to the dead set now (one atomic step): it will not run by itself any more."""
        moved = self.client.register_script(_MOVE_TO_SET)(
            keys=[self.key, f"{KEY_PREFIX}{DeadSet.name}"], args=[entry.member, time.time()])
        return bool(moved)


class ScheduledSet(_DueSet):
    """Delayed jobs waiting for their time (see scheduling.py)."""

    name = "schedule"


class RetrySet(_DueSet):
    """Failed jobs waiting for their next attempt."""

    name = "retry"

    retry = JobSet.push_now


class DeadSet(JobSet):
    """Jobs that will not run again until someone retries them (Sidekiq's Morgue)."""

    name = "dead"
    newest_first = True

    retry = JobSet.push_now

    def add(self, score: float, list_key: str, message: str, pipe: Any = None, **info: Any
            ) -> None:
        """Bury a job; the oldest beyond `dead_max_jobs` entries or `dead_timeout` seconds
        (settings; Sidekiq's 10,000 and six months by default) are let go."""
        with self.client.pipeline() as own:
            target = pipe or own
            super().add(score, list_key, message, pipe=target, **info)
            settings = current_settings()
            target.zremrangebyscore(self.key, "-inf", score - settings.dead_timeout)
            target.zremrangebyrank(self.key, 0, -settings.dead_max_jobs - 1)
            if pipe is None:
                own.execute()


def describe_error(error: BaseException | str, backtrace: int = BACKTRACE_LINES
                   ) -> dict[str, Any]:
    """Error class, message and the last `backtrace` lines of the backtrace (0: none)."""
    if isinstance(error, str):
        return {"error_class": "jobkit.Error", "error_message": error, "backtrace": []}
    lines = traceback.format_exception(error)
    return {
        "error_class": f"{type(error).__module__}.{type(error).__qualname__}",
        "error_message": str(error),
        "backtrace": [line.rstrip() for line in lines][-backtrace:] if backtrace else [],
    }


def _entry(member: bytes | str, score: float) -> JobEntry:
    text = member.decode() if isinstance(member, bytes) else member
    return JobEntry(member=text, score=score, data=json.loads(text))
