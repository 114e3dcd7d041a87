"""Iterable jobs for tests/test_resumable.py (imported by path by the test's workers).

Each item adds 1 to its field in a hash, so a test sees every item done and how often; each
run adds what it saw to a list (start, resume with the cursor and executions, stop, complete)
and leaves its process id.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any

import redis

from jobkit import IterableJob
from jobkit.iteration import indexed

QUEUE = "resumable"
DONE = "resumable-test:done:"  # + name: hash item -> times done
RUNS = "resumable-test:runs:"  # + name: list of what each run saw
PID = "resumable-test:pid:"  # + name: the process id of the job's latest run


@functools.cache
def _client(pid: int) -> redis.Redis:
    return redis.Redis.from_url(os.environ["REDIS_URL"])


def client() -> redis.Redis:
    """One client per process (a pool child's own, after the fork)."""
    return _client(os.getpid())


class _Recording(IterableJob):
    queue_as = QUEUE

    def on_start(self) -> None:
        client().set(PID + self.arguments[0], os.getpid())
        client().rpush(RUNS + self.arguments[0], "start")

    def on_resume(self) -> None:
        client().set(PID + self.arguments[0], os.getpid())
        client().rpush(RUNS + self.arguments[0],
                       f"resume after {self.cursor} (executions {self.executions})")

    def on_stop(self) -> None:
        client().rpush(RUNS + self.arguments[0], f"stop after {self.cursor}")

    def on_cancel(self) -> None:
        client().rpush(RUNS + self.arguments[0], f"cancel after {self.cursor}")

    def on_complete(self) -> None:
        client().rpush(RUNS + self.arguments[0], "complete")


class CountItems(_Recording):
    """`total` items, each a round trip to Redis and a short sleep (10,000 take a few s)."""

    cursor_save_items = 50

    def build_enumerator(self, name: str, total: int, pause: float, *, cursor: int | None
                         ) -> Any:
        return indexed(range(total), cursor=cursor)

    def each_iteration(self, item: int, name: str, total: int, pause: float) -> None:
        client().hincrby(DONE + name, str(item), 1)
        time.sleep(pause)


class ShortRuns(CountItems):
    """Stops after 0.3 s of items and goes to the back of its queue."""

    max_iteration_runtime = 0.3
    cursor_save_items = None


class FailsOnce(CountItems):
    """Raises at item `fail_at` on its first run; retried at once (retry_in)."""

    cursor_save_items = None
    cursor_save_seconds = 60  # only a failure saves the cursor before the end

    def each_iteration(self, item: int, name: str, total: int, pause: float) -> None:
        if item == total // 2 and self.executions == 1:
            raise RuntimeError(f"item {item} failed")
        super().each_iteration(item, name, total, pause)

    def retry_in(self, retry_count: int, error: BaseException) -> float:
        return 0
