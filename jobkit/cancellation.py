"""Cancelling jobs (`jobkit.cancel`, Sidekiq 7.3's `cancel!` / `cancelled?`).

A cancel first writes the job's mark (``keys.cancel_mark``: "soft" or "hard", for
`MARK_SECONDS`), then looks for the job: the scheduled set, the retry set, every queue, the
jobs concurrency limits hold back, the jobs worker processes hold. A job found waiting is
removed and recorded in one Lua step: taken out of its set or list, kept in the dead set with
the reason "cancelled" (through `bury`, the dead set's one writer), and its mark turned into
`done:<task id of the message kept>`; then its unique lock goes and its batch counts it dead
(`controls.release.let_go`). A job a worker holds keeps its mark: it sees `Job.cancelled`, a
copy fetched before the cancel is refused as it starts, a failure is recorded as cancelled
instead of retried, and a hard mark stops its pool process (worker/hard_cancel.py). A worker
records the job with `_RECORD`, which also turns the mark into `done:<task id>` (of the copy
it kept in the dead set). So the kept copy runs if someone retries it from the dead set,
while any other copy of the job is refused: one enqueued twice, one handed back by recovery
while its worker still runs it, one delivered again after a crash between the record and the
acknowledgement.

Writing the mark first closes every race with the poller, a fetch or a failure during the
search: whichever copy is not removed here meets the mark.

Why the dead set and not a set of its own: it is already bounded (`dead_max_jobs`,
`dead_timeout`), listed, searched and shown by the dashboard, the CLI and `jobkit.api`, and
its Retry sends the exact message back to its queue: a cancel made by mistake is undone there.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import redis

from jobkit import keys
from jobkit.celery_message import build_message
from jobkit.config import current_settings
from jobkit.controls.release import let_go
from jobkit.job_sets import (
    BURY_LUA,
    DeadSet,
    JobEntry,
    JobSet,
    RetrySet,
    ScheduledSet,
    dead_limits,
    describe_error,
    entry_member,
)
from jobkit.redis_client import get_redis, script

__all__ = [
    "CHECK_SECONDS",
    "ERROR_CLASS",
    "MARK_SECONDS",
    "MAX_JOB_ID_LENGTH",
    "REASON",
    "Cancellation",
    "Outcome",
    "Probe",
    "cancel",
    "cancelled_jobs",
    "check_job_id",
    "hard_marked",
    "is_cancelled",
    "mark",
    "record",
    "refused",
]

logger = logging.getLogger(__name__)

#: How long a mark lives (Sidekiq's is a day too): a copy of the job that starts later than
#: this after the cancel is not refused.
MARK_SECONDS = 86_400
#: A running job reads its mark at most this often, however often it asks `cancelled`.
CHECK_SECONDS = 1.0
#: Queue items one Lua step looks at: each step blocks Redis ~2 ms (1.2 KB jobs, measured).
QUEUE_CHUNK = 500
#: The longest job id `cancel` takes (jobkit's own are 36 characters).
MAX_JOB_ID_LENGTH = 1_000
#: The dead-set entry of a cancelled job: its `reason` and `error_class`.
REASON = "cancelled"
ERROR_CLASS = "jobkit.Cancelled"

# What `build_message` needs of a payload to keep it in the dead set.
_REBUILT_FROM = frozenset({"job_id", "job_class", "queue_name", "priority", "executions", "args",
                           "kwargs"})

Outcome = Literal["queued", "scheduled", "retry", "held", "running", "not_found"]

# KEYS: mark. ARGV: soft or hard, seconds. A hard mark is never softened; a `done:` one is
# replaced (the job is cancelled again). Returns the key's type when it is not a string.
_MARK = """
local kind = redis.call('TYPE', KEYS[1]).ok
if kind ~= 'none' and kind ~= 'string' then return kind end
local now = redis.call('GET', KEYS[1])
if ARGV[1] == 'hard' or not now or string.sub(now, 1, 5) == 'done:' then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
end
return 'string'
"""

# In the step that keeps a cancelled job in the dead set: the mark becomes `done:<task id of
# the copy kept there>` (its TTL kept; a mark gone meanwhile is not made again, without one),
# so that copy runs if retried from there, while any other copy of the job (enqueued twice,
# handed back by recovery, delivered again after a crash before the ack) is refused.
_KEEP_MARK_LUA = """
local function keep_mark(mark, task_id)
  if redis.call('EXISTS', mark) == 0 then return end
  if type(task_id) == 'string' and task_id ~= '' then
    redis.call('SET', mark, 'done:' .. task_id, 'KEEPTTL')
  else
    redis.call('DEL', mark)
  end
end
"""

# By a worker, before it acknowledges the run.
# KEYS: dead set, mark. ARGV: now, member, dead max jobs, dead timeout, the kept copy's id.
_RECORD = BURY_LUA + _KEEP_MARK_LUA + """
bury(KEYS[1], tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4])
keep_mark(KEYS[2], ARGV[5])
return 1
"""

# KEYS: the set, dead set, mark. ARGV: member in the set, dead-set member, now, limits, the
# task id of its message.
_REMOVE_FROM_SET = BURY_LUA + _KEEP_MARK_LUA + """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
bury(KEYS[2], tonumber(ARGV[3]), ARGV[2], ARGV[4], ARGV[5])
keep_mark(KEYS[3], ARGV[6])
return 1
"""

# One chunk of a queue list, or of a concurrency key's held list, from the head (LPUSH shifts
# items towards the tail, so a push during the scan makes it see an item twice, never miss
# one). An item is decoded only if it holds one of the needles (the id as JSON writes it); it
# matches if its message's headers name the job (a held entry wraps the message and the list
# it goes back to). The record names the list the message was bound for.
# KEYS: the list, dead set, mark. ARGV: start, count, job id, now, dead max jobs, dead timeout,
# "queue" or "held", priority separator, then the needles.
_REMOVE_FROM_LIST = BURY_LUA + _KEEP_MARK_LUA + """
local function found_in(item)
  for i = 9, #ARGV do
    if string.find(item, ARGV[i], 1, true) then return true end
  end
  return false
end

local function job_message(item)
  local ok, data = pcall(cjson.decode, item)
  if not ok or type(data) ~= 'table' then return nil end
  local message, list_key = item, KEYS[1]
  if ARGV[7] == 'held' then
    if data.job_id ~= ARGV[3] or type(data.message) ~= 'string'
        or type(data.list_key) ~= 'string' then return nil end
    message, list_key = data.message, data.list_key
    ok, data = pcall(cjson.decode, message)
    if not ok or type(data) ~= 'table' then return nil end
  end
  if type(data.headers) ~= 'table' or data.headers.job_id ~= ARGV[3] then return nil end
  return message, list_key, data.headers.task, data.headers.id
end

local first = tonumber(ARGV[1])
local items = redis.call('LRANGE', KEYS[1], first, first + tonumber(ARGV[2]) - 1)
for _, item in ipairs(items) do
  if found_in(item) then
    local message, list_key, task, task_id = job_message(item)
    if message then
      redis.call('LREM', KEYS[1], 1, item)
      local at = string.find(list_key, ARGV[8], 1, true)
      local queue = at and string.sub(list_key, 1, at - 1) or list_key
      local now = tonumber(ARGV[4])
      local where = ARGV[7] == 'held' and 'while held by its concurrency limit'
        or 'while in queue ' .. queue
      bury(KEYS[2], now, cjson.encode({list_key = list_key, message = message,
        job_id = ARGV[3], job_class = task, queue = queue, reason = 'cancelled',
        error_class = 'jobkit.Cancelled', error_message = 'cancelled ' .. where,
        failed_at = now}), ARGV[5], ARGV[6])
      keep_mark(KEYS[3], task_id)
      return {1, #items, message}
    end
  end
end
return {0, #items}
"""


@dataclass(frozen=True)
class Cancellation:
    """What `jobkit.cancel` found and did.

    `outcome`: "queued", "scheduled", "retry" or "held" (it was waiting there, "held" by a
    concurrency limit: removed, and kept in the dead set with the reason "cancelled");
    "running" (a worker process holds it, running or about to start: it is marked, see
    `jobkit.Job.cancelled`); "not_found" (marked all the same, for `MARK_SECONDS`: a job in
    transit is refused when it starts). `where`: the queue, the concurrency key, or the worker
    process holding it."""

    job_id: str
    outcome: Outcome
    where: str | None = None
    hard: bool = False

    @property
    def removed(self) -> bool:
        """Whether it was taken out of a queue or set (it will not run)."""
        return self.outcome in ("queued", "scheduled", "retry", "held")

    def __str__(self) -> str:
        if self.outcome == "queued":
            return f"job {self.job_id}: removed from queue {self.where}; kept in the dead set"
        if self.outcome == "held":
            return (f"job {self.job_id}: removed from the jobs held by concurrency limit "
                    f"{self.where}; kept in the dead set")
        if self.outcome in ("scheduled", "retry"):
            return (f"job {self.job_id}: removed from the {self.outcome} set; kept in the dead "
                    "set")
        if self.outcome == "running":
            how = ("it is stopped where the pool allows (prefork: its pool process; asyncio: an "
                   "async job's task), else it sees job.cancelled" if self.hard
                   else "it sees job.cancelled")
            return f"job {self.job_id}: held by worker process {self.where}: marked; {how}"
        return (f"job {self.job_id}: not found in any queue, set or worker; marked for "
                f"{MARK_SECONDS // 3600} h, so it will not start if it shows up")


def cancel(job_id: str, hard: bool = False, client: redis.Redis | None = None) -> Cancellation:
    """Cancel a job by id, in Redis (the module docstring says how)."""
    check_job_id(job_id)
    client = client or get_redis()
    mark(job_id, hard, client)
    sets: tuple[tuple[JobSet, Outcome], ...] = ((ScheduledSet(client), "scheduled"),
                                                 (RetrySet(client), "retry"))
    for job_set, outcome in sets:
        if _remove_from_set(job_set, outcome, job_id, client):
            return Cancellation(job_id, outcome, None, hard)
    for queue, list_key in _queue_lists(client):
        if _remove_from_list(list_key, "queue", job_id, client):
            return Cancellation(job_id, "queued", queue, hard)
    for concurrency_key, list_key in _held_lists(client):
        if _remove_from_list(list_key, "held", job_id, client):
            return Cancellation(job_id, "held", concurrency_key, hard)
    holder = _holder(job_id, client)
    if holder is not None:
        return Cancellation(job_id, "running", holder, hard)
    return Cancellation(job_id, "not_found", None, hard)


def check_job_id(job_id: object) -> None:
    """ValueError naming the culprit when `job_id` cannot be a job's id."""
    if not isinstance(job_id, str) or not job_id:
        raise ValueError(f"jobkit.cancel: job_id must be a non-empty string, got {job_id!r}")
    if len(job_id) > MAX_JOB_ID_LENGTH:
        raise ValueError(f"jobkit.cancel: job_id is {len(job_id):,} characters long "
                         f"({job_id[:40]!r}...); no job's id is longer than "
                         f"{MAX_JOB_ID_LENGTH:,}")


def mark(job_id: str, hard: bool = False, client: redis.Redis | None = None) -> None:
    """Mark a job cancelled for `MARK_SECONDS` (a hard mark is never softened). ValueError
    if the mark's key holds another type (jobkit never writes one there)."""
    key = keys.cancel_mark(job_id)
    kind = script(_MARK)(keys=[key], args=["hard" if hard else "soft", MARK_SECONDS],
                         client=client or get_redis())
    kind = kind.decode(errors="replace") if isinstance(kind, bytes) else str(kind)
    if kind != "string":
        raise ValueError(f"jobkit.cancel: Redis key {key!r} holds a {kind}, not a cancel "
                         "mark; nothing was cancelled (delete the key, then cancel again)")


def is_cancelled(job_id: str, task_id: str | None, client: redis.Redis | None = None) -> bool:
    """Whether the run of message `task_id` (its Celery task id) of this job is cancelled:
    the job is marked, and this is not the copy a worker kept in the dead set when it
    recorded the cancel (retried from there, it runs)."""
    key = keys.cancel_mark(job_id)
    try:
        value = (client or get_redis()).get(key)
    except redis.ResponseError as exc:  # not a mark: the job runs (handing it back would loop)
        if not str(exc).startswith("WRONGTYPE"):
            raise
        logger.error("job %s: Redis key %r holds no cancel mark (%s); not taken as cancelled",
                     job_id, key, exc)
        return False
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    return value is not None and value != f"done:{task_id}"


def hard_marked(job_ids: list[str], client: redis.Redis | None = None) -> list[str]:
    """The ids among `job_ids` marked with hard=True: one round trip for them all."""
    if not job_ids:
        return []
    values = (client or get_redis()).mget([keys.cancel_mark(i) for i in job_ids])
    return [i for i, value in zip(job_ids, values, strict=True) if value in (b"hard", "hard")]


def refused(payload: Any, job_class: str, task_id: str | None,
            client: redis.Redis | None = None) -> bool:
    """At a job's start: True when it is marked, after recording it as cancelled (it must not
    run). A payload without a job id is never marked."""
    if not isinstance(payload, dict) or not payload.keys() >= _REBUILT_FROM:
        return False  # not a job payload: it goes the way of unreadable ones (the dead set)
    job_id = payload["job_id"]
    if not isinstance(job_id, str) or not is_cancelled(job_id, task_id, client):
        return False
    record(payload, job_class, "cancelled before it started", client=client)
    return True


def record(payload: dict[str, Any], job_class: str, what: str,
           error: BaseException | None = None, backtrace: int = 0,
           client: redis.Redis | None = None) -> None:
    """Keep a cancelled job (its `payload`, as it would run next) in the dead set with the
    reason "cancelled", in one step with its mark's `done:` (the dead set's Retry runs it)."""
    kept_id = str(uuid.uuid4())
    key, message = build_message(payload, kept_id)
    now = time.time()
    if error is not None:
        what += f"; it raised {describe_error(error, 0)['error_class']}: {error}"
    member = entry_member(key, message, job_id=payload["job_id"], job_class=job_class,
                          queue=payload["queue_name"], payload=payload, failed_at=now,
                          reason=REASON, error_class=ERROR_CLASS, error_message=what,
                          backtrace=describe_error(error, backtrace)["backtrace"]
                          if error is not None else [])
    client = client or get_redis()
    script(_RECORD)(keys=[keys.DEAD, keys.cancel_mark(payload["job_id"])],
                    args=[now, member, *dead_limits(), kept_id], client=client)


def cancelled_jobs(limit: int = 100, client: redis.Redis | None = None) -> list[JobEntry]:
    """The cancelled jobs kept in the dead set, newest first, at most `limit`: read from the
    newest a page at a time, until `limit` are found (a ZSCAN search would give any `limit`
    of them, in hash order, not the newest)."""
    cancelled = (entry for entry in DeadSet(client) if entry.data.get("reason") == REASON)
    return list(itertools.islice(cancelled, max(0, limit)))


class Probe:
    """`Job.cancelled` on a worker: the job's mark, read at most once per `CHECK_SECONDS`
    (a job may ask in a tight loop); once seen, it stays true without reading again."""

    def __init__(self, job_id: str, task_id: str | None, client: redis.Redis | None = None
                 ) -> None:
        self.job_id, self.task_id = job_id, task_id
        self.client = client
        self._seen = False
        self._read_at = time.monotonic()  # `refused` has just read it, at the job's start

    def __call__(self) -> bool:
        now = time.monotonic()
        if self._seen or now - self._read_at < CHECK_SECONDS:
            return self._seen
        self._read_at = now
        try:
            self._seen = is_cancelled(self.job_id, self.task_id, self.client)
        except redis.RedisError as exc:  # the job goes on; it asks again in CHECK_SECONDS
            logger.warning("job %s: cannot read its cancel mark: %s", self.job_id, exc)
        return self._seen


def _remove_from_set(job_set: JobSet, outcome: Outcome, job_id: str, client: redis.Redis
                     ) -> bool:
    """Take the job's entry out of a scheduled or retry set into the dead set (one step)."""
    entries = {entry.member: entry for needle in _needles(job_id)
               for entry in job_set.search(f'"job_id":{needle}', limit=1000)}
    for entry in entries.values():
        if entry.data.get("job_id") != job_id or not entry.pushable:
            continue  # the id as an argument of another job, or an unreadable entry
        info = {name: value for name, value in entry.data.items()
                if name not in ("list_key", "message")}
        now = time.time()
        info.update(reason=REASON, error_class=ERROR_CLASS, failed_at=now, backtrace=[],
                    error_message=f"cancelled while in the {outcome} set")
        member = entry_member(entry.data["list_key"], entry.data["message"], **info)
        removed = script(_REMOVE_FROM_SET)(
            keys=[job_set.key, keys.DEAD, keys.cancel_mark(job_id)],
            args=[entry.member, member, now, *dead_limits(),
                  _task_id(entry.data["message"])], client=client)
        if removed:
            let_go(entry.data["message"])
            return True
    return False


def _queue_lists(client: redis.Redis) -> list[tuple[str, str]]:
    """(queue, list key) of every list of every known queue that holds items."""
    names = list(current_settings().queue_names)
    names += [name for name in _names(client, keys.QUEUES) if name not in names]
    return _holding(client, [(name, key) for name in names for key in keys.list_keys(name)])


def _held_lists(client: redis.Redis) -> list[tuple[str, str]]:
    """(concurrency key, held list key) of every concurrency key holding jobs."""
    names = sorted(_names(client, keys.CONCURRENCY_HELD_KEYS))
    return _holding(client, [(name, keys.concurrency_held(name)) for name in names])


def _names(client: redis.Redis, key: str) -> list[str]:
    """The members of a set of names; one that is not UTF-8 is skipped: jobkit never makes
    one."""
    names = []
    for raw in client.smembers(key):
        with contextlib.suppress(UnicodeDecodeError):
            names.append(_bytes(raw).decode())
    return names


def _holding(client: redis.Redis, lists: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The pairs whose list holds items (one round trip). A key of another type is skipped
    with a warning naming it, rather than make every cancel fail."""
    with client.pipeline(transaction=False) as pipe:
        for _, key in lists:
            pipe.llen(key)
        sizes = pipe.execute(raise_on_error=False) if lists else []
    for (_, key), size in zip(lists, sizes, strict=True):
        if isinstance(size, Exception):
            logger.warning("jobkit.cancel: Redis key %r skipped, not a list: %s", key, size)
    return [pair for pair, size in zip(lists, sizes, strict=True)
            if isinstance(size, int) and size > 0]


def _remove_from_list(list_key: str, kind: Literal["queue", "held"], job_id: str,
                      client: redis.Redis) -> bool:
    """Scan a queue list or a held list a chunk per step; the step that finds the job removes
    and records it."""
    start = 0
    while True:
        found, seen, *item = script(_REMOVE_FROM_LIST)(
            keys=[list_key, keys.DEAD, keys.cancel_mark(job_id)],
            args=[start, QUEUE_CHUNK, job_id, time.time(), *dead_limits(), kind,
                  keys.PRIORITY_SEPARATOR, *_needles(job_id)], client=client)
        if found:
            let_go(item[0])
            return True
        if seen < QUEUE_CHUNK:
            return False
        start += seen


def _holder(job_id: str, client: redis.Redis) -> str | None:
    """The worker process whose in-flight keys hold the job (one round trip), or None. A key
    of another type holds nothing (HVALS fails on it; the others are still read)."""
    ids = sorted(client.smembers(keys.PROCESSES))
    with client.pipeline(transaction=False) as pipe:
        for raw_id in ids:
            pipe.hvals(keys.unacked("").encode() + _bytes(raw_id))
        held = pipe.execute(raise_on_error=False) if ids else []
    for raw_id, values in zip(ids, held, strict=True):
        if isinstance(values, list) and any(_holds(_bytes(value), job_id) for value in values):
            return _bytes(raw_id).decode(errors="replace")
    return None


def _holds(value: bytes, job_id: str) -> bool:
    """Whether an in-flight entry (``[message, exchange, queue]``, as kombu keeps it) is
    the job's: its message's headers name it."""
    if not any(needle.encode() in value for needle in _needles(job_id)):
        return False
    try:
        headers = json.loads(value)[0]["headers"]
    except (ValueError, LookupError, TypeError):
        return False
    return isinstance(headers, dict) and headers.get("job_id") == job_id


def _task_id(message: str) -> str:
    """The Celery task id in a message's headers ("" if it has none)."""
    try:
        task_id = json.loads(message)["headers"]["id"]
    except (ValueError, LookupError, TypeError):
        return ""
    return task_id if isinstance(task_id, str) else ""


def _needles(job_id: str) -> list[str]:
    """The id as JSON text holds it, to look for before decoding: as jobkit and kombu write it
    (non-ASCII kept or escaped), and as Lua's cjson does (it also escapes "/")."""
    kept = json.dumps(job_id, ensure_ascii=False)
    forms = [kept, json.dumps(job_id), kept.replace("/", "\\/")]
    return list(dict.fromkeys(forms))


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()
