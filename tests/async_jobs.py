"""`async def perform` jobs the async tests run on real workers (imported by path)."""

from __future__ import annotations

import asyncio
import os

import redis.asyncio

from jobkit import Job, after_perform, before_perform

RUNS = "async-test:runs"


class AsyncRecordJob(Job):
    """Awaits real I/O (Redis, through redis.asyncio) and a sleep, then records its run."""

    queue_as = "async_test"

    async def perform(self, name: str, seconds: float = 0.0) -> str:
        client = redis.asyncio.Redis.from_url(os.environ["REDIS_URL"])
        try:
            await asyncio.sleep(seconds)
            await client.rpush(RUNS, f"{name}:{self.executions}")
        finally:
            await client.aclose()
        return name


class AsyncFailingJob(Job):
    queue_as = "async_test"
    max_retries = 0

    async def perform(self, reason: str) -> None:
        await asyncio.sleep(0)
        raise ValueError(f"async failure: {reason}")


EVENTS: list[str] = []


class AsyncCallbacksJob(Job):
    @before_perform
    def before(self) -> None:
        EVENTS.append("before")

    @after_perform
    def after(self) -> None:
        EVENTS.append("after")

    async def perform(self) -> int:
        EVENTS.append("perform started")
        await asyncio.sleep(0.01)
        EVENTS.append("perform ended")
        return 7
