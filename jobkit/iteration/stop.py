"""What tells a running iteration to stop between items: the worker, or its pool process, got TERM.

Why shared memory and not a Redis key or a signal to the pool: the flag is one byte of an
anonymous shared mapping made when this module is imported, which the worker's main process
does before its pool starts; prefork's children are forked from it and see the byte the main
process sets in its TERM handler, and threads (or the solo pool) read it in the same process.
Reading it costs nothing, so an iteration looks after every item, with no Redis round trip.

TERM sent to the whole process group (Heroku, `docker stop` with an init, `kill -- -PGID`) also
reaches prefork's pool processes, where billiard's handler raises SystemExit wherever the job
is: the item running would be cut short and done again. So while an iteration runs in a pool
process, its TERM handler is ours (billiard installs its own after `worker_process_init`, so
ours goes in around the iteration, not at the start): TERM only sets this process's flag, the
item finishes, the cursor is saved and the job goes back to its queue. If the main process did
not get TERM too (billiard's own TERM: a hard time limit, a cold shutdown), the process then
ends as billiard meant it to, its cursor exact; a second TERM ends it at once.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import signal
import threading
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

__all__ = ["in_pool_process", "request_stop", "run_by_worker", "stop_requested",
           "term_stops_iteration", "worker_runs"]

_flag = mmap.mmap(-1, 1)  # MAP_SHARED | MAP_ANONYMOUS: shared with processes forked later
_worker_job: ContextVar[str | None] = ContextVar("jobkit_iteration_job", default=None)
_pool_process = False  # a prefork pool process (worker_process_init)
_term_here = False  # this pool process got TERM during an iteration


def request_stop() -> None:
    """Called by the worker on TERM (worker/shutdown.py); safe inside a signal handler."""
    _flag[0] = 1


def stop_requested() -> bool:
    return _flag[0] == 1 or _term_here


def in_pool_process() -> None:
    """Called in each prefork pool process as it starts (worker/shutdown.py)."""
    global _pool_process
    _pool_process = True


@contextlib.contextmanager
def term_stops_iteration() -> Iterator[None]:
    """Around an iteration on a worker: in a prefork pool process, TERM stops it between
    items instead of raising SystemExit inside one (module doc)."""
    previous = signal.getsignal(signal.SIGTERM)
    if not _pool_process or previous is None \
            or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum: int, frame: Any) -> None:
        global _term_here
        _term_here = True
        signal.signal(signal.SIGTERM, previous)  # a second TERM: billiard's, at once

    signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        if _term_here and _flag[0] != 1:  # the TERM was for this process alone: it ends
            os.kill(os.getpid(), signal.SIGTERM)


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
