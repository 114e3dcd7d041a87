"""What tells a running iteration to stop between items: the worker got TERM.

Why shared memory and not a Redis key or a signal to the pool: the flag is one byte of an
anonymous shared mapping made when this module is imported, which the worker's main process
does before its pool starts; prefork's children are forked from it and see the byte the main
process sets in its TERM handler, and threads (or the solo pool) read it in the same process.
Reading it costs nothing, so an iteration looks after every item: no Redis round trip, no
signal handler in the pool's processes (which Celery resets there).
"""

from __future__ import annotations

import contextlib
import mmap
from collections.abc import Iterator
from contextvars import ContextVar

__all__ = ["request_stop", "run_by_worker", "stop_requested", "worker_runs"]

_flag = mmap.mmap(-1, 1)  # MAP_SHARED | MAP_ANONYMOUS: shared with processes forked later
_worker_job: ContextVar[str | None] = ContextVar("jobkit_iteration_job", default=None)


def request_stop() -> None:
    """Called by the worker on TERM (worker/shutdown.py); safe inside a signal handler."""
    _flag[0] = 1


def stop_requested() -> bool:
    return _flag[0] == 1


@contextlib.contextmanager
def run_by_worker(job_id: str) -> Iterator[None]:
    """Marks the job a worker is running (worker/execution.py): only that job saves its
    cursor in Redis and stops between items; `perform_now` elsewhere runs every item."""
    token = _worker_job.set(job_id)
    try:
        yield
    finally:
        _worker_job.reset(token)


def worker_runs(job_id: str) -> bool:
    return _worker_job.get() == job_id
