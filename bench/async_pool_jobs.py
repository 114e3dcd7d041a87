"""The jobs of bench/async_pool.py, importable by its workers as `bench.async_pool_jobs`: the
same wait, awaited or slept."""

from __future__ import annotations

import asyncio
import time

from jobkit import Job

__all__ = ["QUEUE", "AsyncSleepJob", "SyncSleepJob"]

QUEUE = "bench_async_pool"


class AsyncSleepJob(Job):
    queue_as = QUEUE

    async def perform(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class SyncSleepJob(Job):
    queue_as = QUEUE

    def perform(self, seconds: float) -> None:
        time.sleep(seconds)
