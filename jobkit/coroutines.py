"""Running a job's `async def perform` to the end, from code that is not async.

Why not leave it to the pool: Celery's pools (prefork, threads, solo) call a task and take what
it returns; a coroutine would be returned unawaited ("never awaited"), the job logged as done
without having run. So `Job.perform_now` runs the coroutine itself, in an event loop of its
own (`asyncio.run`): each run starts with a fresh loop and leaves nothing behind in it, in any
thread of any pool. Called where an event loop is already running in this thread (an async
web handler or test calling `perform_now`), the coroutine runs in a helper thread with its own
loop, and the caller waits for it, as for any synchronous call. A soft time limit is
`asyncio.timeout`, so it holds for async jobs on every pool (Celery's holds on prefork only).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar

from celery.exceptions import SoftTimeLimitExceeded

__all__ = ["run_to_completion"]

T = TypeVar("T")


def run_to_completion(awaitable: Awaitable[T], time_limit: float | None = None) -> T:
    """The awaitable's result (or its exception), waited for here. With `time_limit`, it is
    cancelled at that many seconds (it sees CancelledError at the await it is in, and can
    clean up), and SoftTimeLimitExceeded is raised here unless it swallowed the cancel."""
    coroutine = awaitable if isinstance(awaitable, Coroutine) else _awaited(awaitable)
    bounded = coroutine if time_limit is None else _within(coroutine, time_limit)
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # no loop running in this thread: the usual case on a worker
        return asyncio.run(bounded)
    context = contextvars.copy_context()  # the caller's context variables, in the helper
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="jobkit-async") as pool:
        return pool.submit(context.run, asyncio.run, bounded).result()


async def _awaited(awaitable: Awaitable[T]) -> T:
    """Any awaitable (a Future, a Cython coroutine) as a coroutine asyncio.run can take."""
    return await awaitable


async def _within(coroutine: Coroutine[Any, Any, T], seconds: float) -> T:
    try:
        async with asyncio.timeout(seconds):
            return await coroutine
    except TimeoutError:
        raise SoftTimeLimitExceeded(f"time limit ({seconds:g} s) exceeded") from None
