"""Where failed jobs go instead of vanishing: the dead set (Sidekiq's Morgue).

Each entry keeps the exact message to push back to its queue, the payload, and why it died.
Retrying is one Lua script (ZREM, then LPUSH only if this call removed it), so two people
clicking "retry" cannot run a job twice, and a crash cannot drop it.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis

from jobkit.job_sets import JobSet

__all__ = ["DeadJob", "DeadSet"]

DEAD_MAX_JOBS = 10_000  # Sidekiq's dead_max_jobs
DEAD_TIMEOUT_SECONDS = 180 * 24 * 3600  # Sidekiq's dead_timeout_in_seconds: six months
BACKTRACE_LINES = 20

_RETRY = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('LPUSH', ARGV[2], ARGV[3])
  return 1
end
return 0
"""


@dataclass(frozen=True)
class DeadJob:
    """One entry of the dead set, as stored."""

    member: str
    job_id: str | None
    job_class: str | None
    queue: str | None
    list_key: str
    message: str
    payload: Any
    error_class: str
    error_message: str
    backtrace: list[str]
    failed_at: float

    @classmethod
    def from_member(cls, member: str | bytes) -> DeadJob:
        text = member.decode() if isinstance(member, bytes) else member
        data = json.loads(text)
        return cls(member=text, **data)


class DeadSet(JobSet):
    """Jobs that will not run again until someone retries them."""

    name = "dead"

    def __init__(self, client: redis.Redis | None = None) -> None:
        super().__init__(client)
        self._retry = self.client.register_script(_RETRY)

    def add(self, key: str, message: str, payload: Any, error: BaseException | str) -> None:
        """Bury a message (pushed back to list `key` on retry), with its payload if readable."""
        job = payload if isinstance(payload, dict) else {}
        now = time.time()
        entry = {
            "job_id": job.get("job_id"),
            "job_class": job.get("job_class"),
            "queue": job.get("queue_name"),
            "list_key": key,
            "message": message,
            "payload": payload,
            **_describe(error),
            "failed_at": now,
        }
        member = json.dumps(entry, separators=(",", ":"), ensure_ascii=False, default=repr)
        with self.client.pipeline() as pipe:
            pipe.zadd(self.key, {member: now})
            pipe.zremrangebyscore(self.key, "-inf", now - DEAD_TIMEOUT_SECONDS)
            pipe.zremrangebyrank(self.key, 0, -DEAD_MAX_JOBS - 1)
            pipe.execute()

    def __iter__(self) -> Iterator[DeadJob]:
        """Newest first, read in pages so a large set is never loaded whole."""
        start = 0
        while True:
            page = self.client.zrevrange(self.key, start, start + 99)
            if not page:
                return
            yield from (DeadJob.from_member(member) for member in page)
            start += len(page)

    def find(self, job_id: str) -> DeadJob | None:
        return next((dead for dead in self if dead.job_id == job_id), None)

    def retry(self, dead: DeadJob) -> bool:
        """Send the job back to its queue; False if it was no longer in the set."""
        return bool(self._retry(keys=[self.key], args=[dead.member, dead.list_key, dead.message]))


def _describe(error: BaseException | str) -> dict[str, Any]:
    if isinstance(error, str):
        return {"error_class": "jobkit.Error", "error_message": error, "backtrace": []}
    lines = traceback.format_exception(error)
    return {
        "error_class": f"{type(error).__module__}.{type(error).__qualname__}",
        "error_message": str(error),
        "backtrace": [line.rstrip() for line in lines][-BACKTRACE_LINES:],
    }


