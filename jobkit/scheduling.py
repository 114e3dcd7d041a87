"""Durable delayed jobs: a Redis sorted set scored by due time, and the poller that empties it.

Why not Celery's ETA: Celery keeps ETA tasks in worker memory (~8 KiB each) and the Redis
transport delivers them again after `visibility_timeout`, so long delays grow memory and
duplicate jobs. Here a delayed job waits in Redis, parked as the exact message its queue's list
will receive, and one Lua script moves due members (ZRANGEBYSCORE, ZREM, LPUSH): a crash or
any number of racing pollers can neither lose nor duplicate one.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time

import redis

from jobkit.job_sets import JobSet

__all__ = ["SchedulePoller", "ScheduledSet"]

logger = logging.getLogger(__name__)

MOVE_BATCH = 100
_MOVE_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  if redis.call('ZREM', KEYS[1], member) == 1 then
    local entry = cjson.decode(member)
    redis.call('LPUSH', entry[1], entry[2])
  end
end
return #due
"""


class ScheduledSet(JobSet):
    """Jobs waiting for their time; each member is ``[list key, message JSON]``."""

    name = "schedule"

    def __init__(self, client: redis.Redis | None = None) -> None:
        super().__init__(client)
        self._move_due = self.client.register_script(_MOVE_DUE)

    def add(self, due: float, list_key: str, message: str, pipe: redis.client.Pipeline | None = None
            ) -> None:
        """Park `message` until `due` (Unix seconds); pass `pipe` to batch."""
        member = json.dumps([list_key, message], separators=(",", ":"), ensure_ascii=False)
        (pipe or self.client).zadd(self.key, {member: due})

    def move_due(self, now: float | None = None, batch: int = MOVE_BATCH) -> int:
        """Push every job due by `now` to its queue; returns how many moved."""
        now = time.time() if now is None else now
        moved = 0
        while True:
            count = self._move_due(keys=[self.key], args=[now, batch])
            moved += count
            if count < batch:
                return moved


class SchedulePoller:
    """A daemon thread that moves due jobs every `interval` seconds (jittered down to half).

    A thread rather than the worker's event-loop timer, so a busy solo or threads pool cannot
    stall delivery of due jobs. Jitter spreads racing pollers of many workers apart.
    """

    def __init__(self, interval: float, client: redis.Redis | None = None) -> None:
        self.interval = interval
        self.scheduled = ScheduledSet(client)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="jobkit-poller", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval + 1)

    def _run(self) -> None:
        while True:
            try:
                moved = self.scheduled.move_due()
                if moved:
                    logger.debug("jobkit poller: moved %d due jobs", moved)
            except redis.RedisError as exc:
                logger.warning("jobkit poller: Redis error, will try again: %s", exc)
            if self._stopped.wait(self.interval * random.uniform(0.5, 1.0)):
                return
