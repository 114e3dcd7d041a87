"""Jobs over their time limits, for tests/test_time_limits.py (imported by path by workers)."""

from __future__ import annotations

import asyncio
import os
import time

import redis

from jobkit import Job, SoftTimeLimitExceeded

QUEUE = "time_limits"
EVENTS = "time-limits-test:events"


def record(event: str) -> None:
    redis.Redis.from_url(os.environ["REDIS_URL"]).rpush(EVENTS, event)


class SoftLimitedJob(Job):
    queue_as = QUEUE
    max_retries = 0
    time_limit = 0.5

    def perform(self, name: str, seconds: float) -> None:
        try:
            time.sleep(seconds)
        except SoftTimeLimitExceeded:
            record(f"{name}: cleaned up")
            raise
        record(f"{name}: finished")


class HardLimitedJob(Job):
    queue_as = QUEUE
    max_retries = 0
    hard_time_limit = 0.5

    def perform(self, name: str, seconds: float) -> None:
        time.sleep(seconds)
        record(f"{name}: finished")


class AsyncLimitedJob(Job):
    queue_as = QUEUE
    max_retries = 0
    time_limit = 0.5

    async def perform(self, name: str, seconds: float) -> None:
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            record(f"{name}: cancelled")
            raise
        record(f"{name}: finished")


class AsyncCleanupJob(Job):
    """Its clean-up itself awaits: the soft limit must let it finish (on prefork too)."""

    queue_as = QUEUE
    max_retries = 0
    time_limit = 0.5

    async def perform(self, name: str) -> None:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            await asyncio.sleep(0.3)
            record(f"{name}: cleaned up after awaiting")
            raise
