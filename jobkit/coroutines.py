"""Running a job's `async def perform` to the end, from code that is not async.

Why not leave it to the pool: Celery's pools (prefork, threads, solo) call a task and take what
it returns; a coroutine would be returned unawaited ("never awaited"), the job logged as done
without having run. So `Job.perform_now` runs the coroutine itself, in an event loop of its
own (`asyncio.run`): each run starts with a fresh loop and leaves nothing behind in it, in any
thread of the other pools. Called where an event loop is already running in this thread (an async
web handler or test calling `perform_now`), the coroutine runs in a helper thread with its own
loop, and the caller waits for it, as for any synchronous call. A soft time limit is
`asyncio.timeout`, so it holds for async jobs on every pool (Celery's holds on prefork only).

On the `asyncio` pool (worker/pools.py) the pool's threads are marked with its one event loop
(`use_shared_loop`): there the coroutine is sent to that loop and the thread waits for it, so
a worker's async jobs share one loop (and the clients bound to it), and the hard time limit can
cancel it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar

from celery.exceptions import SoftTimeLimitExceeded

from jobkit.errors import JobKilled

__all__ = ["cancel_on_shared_loop", "run_to_completion", "use_shared_loop"]

T = TypeVar("T")

_thread = threading.local()  # .loop: the asyncio pool's loop, in that pool's threads
# job id -> its runs' tasks on the shared loop, for a hard cancel (worker/hard_cancel.py)
_on_loop: dict[str, set[concurrent.futures.Future[Any]]] = {}
_on_loop_lock = threading.Lock()


def use_shared_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Run the coroutines of this thread's jobs on `loop` (running in another thread) from now
    on. Called by the asyncio pool as each of its threads starts."""
    _thread.loop = loop


def run_to_completion(awaitable: Awaitable[T], time_limit: float | None = None,
                      hard_time_limit: float | None = None, job_id: str | None = None) -> T:
    """The awaitable's result (or its exception), waited for here. With `time_limit`, it is
    cancelled at that many seconds (it sees CancelledError at the await it is in, and can
    clean up), and SoftTimeLimitExceeded is raised here unless it swallowed the cancel.
    `hard_time_limit`, and a hard cancel of `job_id`, hold on the shared loop only
    (`_on_shared_loop`)."""
    coroutine = awaitable if isinstance(awaitable, Coroutine) else _awaited(awaitable)
    bounded = coroutine if time_limit is None else _within(coroutine, time_limit)
    loop: asyncio.AbstractEventLoop | None = getattr(_thread, "loop", None)
    if loop is not None:
        return _on_shared_loop(loop, bounded, hard_time_limit, job_id)
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # no loop running in this thread: the usual case on a worker
        return asyncio.run(bounded)
    context = contextvars.copy_context()  # the caller's context variables, in the helper
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="jobkit-async") as pool:
        return pool.submit(context.run, asyncio.run, bounded).result()


def _on_shared_loop(loop: asyncio.AbstractEventLoop, coroutine: Coroutine[Any, Any, T],
                    hard_time_limit: float | None, job_id: str | None) -> T:
    """Run on the pool's loop, as a task with a copy of this thread's context variables
    (run_coroutine_threadsafe's handle copies them), and wait. At the hard limit, or when
    `cancel_on_shared_loop(job_id)` is called, the task is cancelled (on the loop's thread)
    and the run fails with JobKilled at once: the thread does not wait for the task's
    clean-up."""
    future = asyncio.run_coroutine_threadsafe(coroutine, loop)
    if job_id is not None:
        with _on_loop_lock:
            _on_loop.setdefault(job_id, set()).add(future)
    try:
        return future.result(timeout=hard_time_limit)
    except concurrent.futures.TimeoutError:
        if not future.cancel():  # done meanwhile, or the coroutine raised TimeoutError itself
            return future.result()
        raise JobKilled(f"hard time limit ({hard_time_limit:g} s) exceeded") from None
    except concurrent.futures.CancelledError:
        raise JobKilled("cancelled (hard)") from None
    finally:
        if job_id is not None:
            with _on_loop_lock:
                runs = _on_loop[job_id]
                runs.discard(future)
                if not runs:
                    del _on_loop[job_id]


def cancel_on_shared_loop(job_id: str) -> bool:
    """A hard cancel on the asyncio pool: cancel the job's tasks on this process's shared
    loop (each sees CancelledError at its await and can clean up). False when it has none
    there: a sync job, or another pool."""
    with _on_loop_lock:
        runs = list(_on_loop.get(job_id, ()))
    return any([future.cancel() for future in runs])


async def _awaited(awaitable: Awaitable[T]) -> T:
    """Any awaitable (a Future, a Cython coroutine) as a coroutine asyncio.run can take."""
    return await awaitable


async def _within(coroutine: Coroutine[Any, Any, T], seconds: float) -> T:
    try:
        async with asyncio.timeout(seconds):
            return await coroutine
    except TimeoutError:
        raise SoftTimeLimitExceeded(f"time limit ({seconds:g} s) exceeded") from None
