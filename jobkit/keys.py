"""Every Redis key jobkit reads or writes, named in one place.

Lua scripts never build a key name themselves: they receive each key through ``KEYS`` (or, for
keys derived per item such as a queue's wake list, through a prefix passed in ``ARGV``), so a
key can be renamed here alone. docs/architecture.md has the same table for people.
"""

from __future__ import annotations

import datetime as dt
import time
from bisect import bisect

__all__ = [
    "BATCHES",
    "CONCURRENCY_HELD_KEYS",
    "DEAD",
    "METRICS_CLASSES",
    "PAUSED",
    "PERIODIC_ENTRIES",
    "PERIODIC_LAST",
    "PERIODIC_PAUSED",
    "PRIORITY_SEPARATOR",
    "PRIORITY_STEPS",
    "PROCESSES",
    "QUEUES",
    "RETRY",
    "SCHEDULE",
    "WAKE_PREFIX",
    "batch",
    "batch_members",
    "concurrency_held",
    "concurrency_slots",
    "debounce",
    "heartbeat",
    "iteration",
    "limiter",
    "list_key",
    "list_keys",
    "mail_sent",
    "metrics",
    "on_demand_slot",
    "process_commands",
    "set_bulk",
    "set_bulk_refused",
    "stat",
    "unacked",
    "unique",
    "unacked_index",
    "wake_key",
]

PREFIX = "jobkit:"

# Queues: kombu's layout, one list per priority step (kombu.transport.redis.PRIORITY_STEPS and
# Channel.sep): priority 0-2 in `<queue>`, 3-5 in `<queue>\x06\x163`, 6-8 `...6`, 9 `...9`.
PRIORITY_STEPS = (0, 3, 6, 9)
PRIORITY_SEPARATOR = "\x06\x16"
MIN_PRIORITY, MAX_PRIORITY = 0, 9

QUEUES = PREFIX + "queues"  # set: every queue a job was ever pushed to
PAUSED = PREFIX + "paused"  # set: queues workers must not fetch from
WAKE_PREFIX = PREFIX + "wake:"  # + queue: list of tokens idle workers block on

# Sorted sets of jobs outside their queues, scored by a Unix time.
SCHEDULE = PREFIX + "schedule"
RETRY = PREFIX + "retry"
DEAD = PREFIX + "dead"

# Worker processes (jobkit/worker/recovery.py).
PROCESSES = PREFIX + "processes"  # set of process ids

# Periodic jobs (jobkit/periodic.py).
PERIODIC_LAST = PREFIX + "periodic:last"  # hash: <name>:tick, :job_id, :at of its last tick
PERIODIC_PAUSED = PREFIX + "periodic:paused"  # set of paused entry names
PERIODIC_ENTRIES = PREFIX + "periodic:entries"  # hash: name -> JSON of an entry added at runtime

# Controls (jobkit/controls/): the keys of concurrency limits that hold jobs (the poller looks
# at these for slots freed by expiry).
CONCURRENCY_HELD_KEYS = PREFIX + "concurrency:held_keys"  # set of concurrency keys

# Batches (jobkit/batch/state.py): batch ids by creation time, for the dashboard's list.
BATCHES = PREFIX + "batches"  # sorted set: batch id -> created at (Unix seconds)
BATCH_MEMBERS_SUFFIX = ":members"  # keys.batch(id) + this: the batch's members hash


def unique(digest: str) -> str:
    """String with a TTL: the unique lock of a job key, holding the id of the job that holds it."""
    return f"{PREFIX}unique:{digest}"


def batch(batch_id: str) -> str:
    """Hash: a batch's counters, callbacks and flags (jobkit/batch/state.py)."""
    return f"{PREFIX}batch:{batch_id}"


def batch_members(batch_id: str) -> str:
    """Hash: member (job id or child batch id) -> its last outcome, so each counts once."""
    return batch(batch_id) + BATCH_MEMBERS_SUFFIX


def cancel_mark(job_id: str) -> str:
    """String with a TTL, "soft" or "hard": `jobkit.cancel` was called for this job id
    (jobkit/cancellation.py)."""
    return f"{PREFIX}cancel:{job_id}"


def concurrency_slots(key: str) -> str:
    """Sorted set: job id -> when its slot expires, the running jobs of a concurrency key."""
    return f"{PREFIX}concurrency:slots:{key}"


def concurrency_held(key: str) -> str:
    """List: messages of jobs over a concurrency key's limit, oldest on the right."""
    return f"{PREFIX}concurrency:held:{key}"


def debounce(digest: str) -> str:
    """String with a TTL: the scheduled-set member of the pending job of a debounce key."""
    return f"{PREFIX}debounce:{digest}"


def limiter(kind: str, name: str) -> str:
    """The state of rate limiter `name` of kind concurrent/bucket/window/leaky."""
    return f"{PREFIX}limiter:{kind}:{name}"


def on_demand_slot(slot: int) -> str:
    """String with a TTL: held by the on-demand worker started in this slot (jobkit.on_demand)."""
    return f"{PREFIX}on_demand:{slot}"


def list_key(queue: str, priority: int | None) -> str:
    """The Redis list a message of this priority waits in (kombu's `_q_for_pri`)."""
    if not priority:
        return queue
    clamped = min(max(priority, MIN_PRIORITY), MAX_PRIORITY)
    step = PRIORITY_STEPS[bisect(PRIORITY_STEPS, clamped) - 1]
    return f"{queue}{PRIORITY_SEPARATOR}{step}" if step else queue


def list_keys(queue: str) -> list[str]:
    """Every list of a queue, first-served first."""
    return [list_key(queue, step) for step in PRIORITY_STEPS]


def queue_of(key: str) -> str:
    """The queue a list key belongs to (the inverse of `list_key`)."""
    return key.split(PRIORITY_SEPARATOR, 1)[0]


def wake_key(queue: str) -> str:
    """Wake tokens for idle workers of `queue`, one pushed with each job (worker/transport.py)."""
    return WAKE_PREFIX + queue


def heartbeat(process_id: str) -> str:
    """String with a TTL: a live worker's heartbeat and what `jobkit processes` shows."""
    return f"{PREFIX}heartbeat:{process_id}"


def process_commands(process_id: str) -> str:
    """Set with a TTL: commands (`quiet`, `stop`) for one worker process, left by the web app
    or jobkit.api and taken by its heartbeat process (worker/heartbeat.py)."""
    return f"{PREFIX}commands:{process_id}"


def unacked(process_id: str) -> str:
    """Hash: delivery tag -> [message, exchange, routing key], the process's in-flight jobs."""
    return f"{PREFIX}unacked:{process_id}"


def unacked_index(process_id: str) -> str:
    """Sorted set: delivery tag -> when the process took it."""
    return f"{PREFIX}unacked_index:{process_id}"


def stat(name: str, day: dt.date | None = None) -> str:
    """Counter `processed` / `failed`, total or for one day."""
    return f"{PREFIX}stat:{name}" + (f":{day.isoformat()}" if day else "")


# Per class metrics (jobkit/metrics.py).
METRICS_CLASSES = PREFIX + "metrics:classes"  # sorted set: job class -> minute it last ran


def metrics(job_class: bytes, resolution: str | None = None, start: int = 0) -> bytes:
    """Hash: a job class's executions, failures, time and histogram of all time, or of the
    minute (resolution "m") or hour ("h") that starts at Unix time `start`, UTC."""
    if resolution is None:
        return f"{PREFIX}metrics:total:".encode() + job_class
    stamp = time.strftime("%Y%m%d%H%M" if resolution == "m" else "%Y%m%d%H", time.gmtime(start))
    return f"{PREFIX}metrics:{resolution}:{stamp}:".encode() + job_class


def set_bulk(operation: str) -> str:
    """Hash with a TTL: an "… all" action on a set in progress, done a chunk at a time (the
    web app's bulk_pages.py: what, on which entries, the ZSCAN cursor and counts)."""
    return f"{PREFIX}set_bulk:{operation}"


def set_bulk_refused(operation: str) -> str:
    """List with a TTL: why the first entries an "… all" action refused were refused."""
    return f"{PREFIX}set_bulk:{operation}:refused"


def mail_sent(job_id: str) -> str:
    """Set once a mail delivery job's message was accepted, so a retry never resends it."""
    return f"{PREFIX}mail:sent:{job_id}"


def iteration(job_id: str) -> str:
    """String with a TTL: an iterable job's saved cursor, or its finished mark (iteration/)."""
    return f"{PREFIX}iteration:{job_id}"


def django_task_result(result_id: str) -> str:
    """String with a TTL: a Django task's result (contrib/django/store.py), by job id."""
    return f"{PREFIX}django:result:{result_id}"


MAIL_CATCHER = PREFIX + "mailcatcher"  # list: mails the development catcher received
