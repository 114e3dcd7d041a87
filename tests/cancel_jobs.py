"""Jobs for tests/test_cancel.py (imported by path by the workers it starts)."""

from __future__ import annotations

import asyncio
import os
import time

import redis

from jobkit import Job
from jobkit.controls import Concurrency

QUEUE = "cancels"
EVENTS = "cancel-test:events"


def record(event: str) -> None:
    redis.Redis.from_url(os.environ["REDIS_URL"]).rpush(EVENTS, event)


class WaitingJob(Job):
    """Cancelled before it runs: it must never record "ran"."""

    queue_as = QUEUE

    def perform(self, name: str) -> None:
        record(f"{name}: ran")


class FailingJob(Job):
    """Fails, and waits an hour in the retry set."""

    queue_as = QUEUE

    def retry_in(self, retry_count: int, error: BaseException) -> float:
        return 3600

    def perform(self, name: str) -> None:
        record(f"{name}: ran")
        raise RuntimeError("failing on purpose")


class CooperativeJob(Job):
    """Checks `cancelled` in a loop (a check every millisecond) and stops when it is true;
    with `then_raise`, it raises then (a retryable error)."""

    queue_as = QUEUE
    max_retries = 5

    def perform(self, name: str, then_raise: bool = False) -> None:
        record(f"{name}: started")
        checks = 0
        deadline = time.monotonic() + 30
        while not self.cancelled:
            checks += 1
            if time.monotonic() > deadline:
                record(f"{name}: never saw the cancel")
                return
            time.sleep(0.001)
        record(f"{name}: saw the cancel after {checks} checks")
        if then_raise:
            raise RuntimeError("stopping after the cancel")


class SleepingJob(Job):
    """Never checks `cancelled`: only a hard cancel stops it."""

    queue_as = QUEUE
    max_retries = 5

    def perform(self, name: str) -> None:
        record(f"{name}: started")
        time.sleep(60)
        record(f"{name}: woke")


class AsyncSleepingJob(Job):
    """Never checks `cancelled`: on the asyncio pool a hard cancel cancels its task, and its
    clean-up runs."""

    queue_as = QUEUE
    max_retries = 5

    async def perform(self, name: str) -> None:
        record(f"{name}: started")
        try:
            await asyncio.sleep(60)
        finally:
            record(f"{name}: cleaned up")
        record(f"{name}: woke")


class CheckingJob(Job):
    """Returns what `cancelled` says (the test modes)."""

    def perform(self) -> bool:
        return self.cancelled


class UniqueJob(Job):
    """Unique for an hour: a cancel while it waits lets its lock go."""

    queue_as = QUEUE
    unique_for = 3600

    def perform(self, name: str) -> None:
        record(f"{name}: ran")


class LimitedJob(Job):
    """One at a time (a concurrency limit): runs until it sees a cancel, so the next waits
    held by the limit."""

    queue_as = QUEUE
    limits_concurrency = Concurrency(to=1, key=lambda job: "cancel-test", duration=60)

    def perform(self, name: str) -> None:
        record(f"{name}: started")
        deadline = time.monotonic() + 30
        while not self.cancelled and time.monotonic() < deadline:
            time.sleep(0.01)
        record(f"{name}: ended")
