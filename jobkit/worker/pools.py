"""jobkit's thread pools: Celery's thread pool, with per-job soft time limits for `def perform`,
and the `asyncio` pool, where every async job of the process runs on one shared event loop.

Why our own: Celery's thread pool enforces no time limit, and it has no pool that runs
coroutines (celery#6552). Both pools keep Celery's thread pool whole (its executor, so
Celery's tracer, acks, retries and jobkit's lossless fetch work as on `threads`); they only
mark each executor thread as it starts:

- `ThreadPool` (`pool: threads`): `time_limits.enforce_in_this_thread`, so a sync job's
  `time_limit` raises SoftTimeLimitExceeded in its thread (time_limits.soft_limit).
- `AsyncioPool` (`pool: asyncio`): the same, and `coroutines.use_shared_loop` with the pool's
  loop, which one thread of its own runs: an `async def perform` is sent there
  (`run_coroutine_threadsafe`) and the job's thread waits for it. A waiting thread costs no
  CPU; `concurrency` threads let that many jobs run at once, async or not.
"""

from __future__ import annotations

import asyncio
import io
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from celery.concurrency.thread import TaskPool

from jobkit.coroutines import use_shared_loop
from jobkit.time_limits import enforce_in_this_thread

__all__ = ["POOL_CLASSES", "AsyncioPool", "ThreadPool"]

logger = logging.getLogger(__name__)

#: How long a stopping asyncio pool waits for the tasks left on its loop (jobs' own unawaited
#: tasks, cancelled) to end before it closes the loop.
LOOP_CLOSE_SECONDS = 10.0


class ThreadPool(TaskPool):
    """Celery's thread pool; its threads enforce a sync job's soft time limit."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.executor.shutdown(wait=False)  # Celery's, unused: no thread started yet
        self.executor = ThreadPoolExecutor(max_workers=self.limit, initializer=self._init_thread,
                                           thread_name_prefix=type(self).__name__)

    def _init_thread(self) -> None:
        enforce_in_this_thread()


class AsyncioPool(ThreadPool):
    """The thread pool plus one event loop, in a thread of its own, for every async job."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loop = asyncio.new_event_loop()
        self.stopping = False  # set by on_stop: until then the loop runs, whatever a job does
        self.loop_thread = threading.Thread(target=self._run_loop, name="jobkit-asyncio-loop",
                                            daemon=True)  # TERM's os._exit must not wait

    def _init_thread(self) -> None:
        super()._init_thread()
        use_shared_loop(self.loop)

    def on_start(self) -> None:
        self.loop_thread.start()
        super().on_start()

    def on_stop(self) -> None:
        super().on_stop()  # Celery's: waits for the running jobs
        if self.loop_thread.is_alive():
            self.stopping = True
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.loop_thread.join(LOOP_CLOSE_SECONDS + 1)

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        while not self.stopping:
            self._run_until_stopped()
        try:  # stopped: what asyncio.run does after its coroutine, so nothing is left pending
            left = asyncio.all_tasks(self.loop)
            for task in left:
                task.cancel()
            gathered = asyncio.gather(*left, return_exceptions=True)
            self.loop.run_until_complete(asyncio.wait_for(gathered, LOOP_CLOSE_SECONDS))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
        except Exception:
            logger.exception("closing the asyncio pool's loop")
        finally:
            self.loop.close()

    def log_task_stacks(self) -> None:
        """TTIN (worker/shutdown.py): where each task on the loop is, as the job threads'
        stacks only show them waiting for it. Read from the signal thread, not on the loop,
        so that a blocked loop's tasks are shown too (the loop thread's stack shows the
        blocking call)."""
        for task in asyncio.all_tasks(self.loop):
            stack = io.StringIO()
            task.print_stack(file=stack)
            logger.warning("TTIN: asyncio task %s\n%s", task.get_name(), stack.getvalue())

    def _run_until_stopped(self) -> None:
        """Run the loop until it is stopped. It is run again unless the pool stops: a job
        that stops it (`loop.stop()`) or raises SystemExit or KeyboardInterrupt in its task
        (asyncio lets those two out of `run_forever`, the task failed with it) must not end
        it, or every later async job of the worker would wait forever or fail with
        "Event loop is closed". The job itself gets its exception as on `threads`."""
        try:
            self.loop.run_forever()
        except BaseException:  # noqa: BLE001 - the job's own exit: its thread re-raises it
            logger.exception("an async job let this out of the asyncio pool's loop; the loop "
                             "goes on")


#: The `pool` setting -> Celery's `worker_pool`: a name Celery knows, or a class's import path
#: (a string, as every Celery setting can be shown: `celery inspect conf`).
POOL_CLASSES: dict[str, str] = {
    "prefork": "prefork", "solo": "solo", "threads": f"{__name__}:{ThreadPool.__name__}",
    "asyncio": f"{__name__}:{AsyncioPool.__name__}"}
