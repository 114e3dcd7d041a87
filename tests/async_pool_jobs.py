"""Jobs for tests/test_async_pool.py (imported by path by workers).

The async jobs talk to Redis through one `redis.asyncio` client per event loop, made by the
first job that needs it and reused by the next ones: a loop-bound client, as the asyncio pool
lets jobs share."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import redis
import redis.asyncio

from jobkit import Job, SoftTimeLimitExceeded

QUEUE = "async_pool_test"
FAULTS_QUEUE = "async_pool_faults"
RUNNING = "async-pool-test:running"  # jobs running now (INCR / DECR)
MOST = "async-pool-test:most"  # the most running at once
DONE = "async-pool-test:done"  # list: one item per finished run
LOOPS = "async-pool-test:loops"  # set: the event loop of each run, and the process
STARTED = "async-pool-test:started"  # list: one item per start of a held job
RELEASE = "async-pool-test:release"  # held jobs wait for this key
EVENTS = "async-pool-test:events"  # list: what the sync jobs saw

_clients: dict[asyncio.AbstractEventLoop, redis.asyncio.Redis] = {}
_COUNT_IN = """
local n = redis.call('INCR', KEYS[1])
if n > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], n) end
return n
"""


def client() -> redis.asyncio.Redis:
    """This loop's client, made once per loop. Its pool waits for a free connection: 200 jobs
    at once would pass redis-py's default limit (100, then MaxConnectionsError)."""
    loop = asyncio.get_running_loop()
    if loop not in _clients:
        pool = redis.asyncio.BlockingConnectionPool.from_url(os.environ["REDIS_URL"],
                                                              max_connections=50)
        _clients[loop] = redis.asyncio.Redis(connection_pool=pool)
    return _clients[loop]


class SleepJob(Job):
    """Awaits `seconds`, counting how many run at once."""

    queue_as = QUEUE

    async def perform(self, seconds: float) -> None:
        r = client()
        await r.eval(_COUNT_IN, 2, RUNNING, MOST)
        await r.sadd(LOOPS, f"{os.getpid()}:{id(asyncio.get_running_loop())}")
        try:
            await asyncio.sleep(seconds)
        finally:
            await r.decr(RUNNING)
        await r.rpush(DONE, time.time())


class AsyncFailingJob(Job):
    queue_as = QUEUE
    max_retries = 0

    async def perform(self, name: str) -> None:
        await asyncio.sleep(0.01)
        raise ValueError(f"async failure: {name}")


class AsyncRetriedJob(AsyncFailingJob):
    max_retries = 3


class HeldJob(Job):
    """Runs until the RELEASE key exists: stays running through a kill or a TERM."""

    queue_as = FAULTS_QUEUE

    async def perform(self, n: int) -> None:
        r = client()
        await r.sadd(LOOPS, f"{os.getpid()}:{id(asyncio.get_running_loop())}")
        await r.rpush(STARTED, n)
        while not await r.exists(RELEASE):
            await asyncio.sleep(0.05)
        await r.rpush(DONE, n)


class SyncLimitedJob(Job):
    """Loops in Python for `seconds` (short sleeps, so the soft limit's exception is
    delivered between them), cleaning up on SoftTimeLimitExceeded."""

    queue_as = QUEUE
    max_retries = 0
    time_limit = 0.5

    def perform(self, name: str, seconds: float) -> None:
        events = redis.Redis.from_url(os.environ["REDIS_URL"])
        thread = threading.get_ident()
        try:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                time.sleep(0.01)
        except SoftTimeLimitExceeded:
            events.rpush(EVENTS, f"{name}: cleaned up in {thread}")
            raise
        events.rpush(EVENTS, f"{name}: finished in {thread}")


class AsyncHardLimitedJob(Job):
    """Awaits past its hard limit: its task is cancelled, it records that it saw it."""

    queue_as = QUEUE
    max_retries = 0
    hard_time_limit = 0.5

    async def perform(self, name: str, seconds: float) -> None:
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            await client().rpush(EVENTS, f"{name}: cancelled")
            raise


class OrphanJob(Job):
    """Starts a task it does not await: it outlives the job, until the pool stops."""

    queue_as = QUEUE

    async def perform(self) -> None:
        _orphans.add(asyncio.get_running_loop().create_task(_wait_forever()))


_orphans: set[asyncio.Task] = set()  # kept, as asyncio asks, so it is not collected


async def _wait_forever() -> None:
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        await client().rpush(EVENTS, "orphan: cancelled")
        raise


class LoopBreakerJob(Job):
    """Stops the shared loop (`stop`) or lets SystemExit out of its task (`exit`): the loop
    must go on for the other jobs."""

    queue_as = QUEUE
    max_retries = 0

    async def perform(self, how: str) -> None:
        await asyncio.sleep(0.05)
        if how == "exit":
            raise SystemExit(f"{how}: out of the loop")
        asyncio.get_running_loop().stop()
        await asyncio.sleep(0.05)
        await client().rpush(EVENTS, f"{how}: went on")
