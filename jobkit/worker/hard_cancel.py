"""`jobkit.cancel(job_id, hard=True)` on a worker: stop the pool process running the job.

The poller thread calls `HardCancel` every `poll_interval`: one MGET of the marks of every job
this worker is running (Celery's `active_requests`), whatever their number. A marked job that
runs in a prefork pool process gets that process killed (SIGKILL), on the event loop, so no
other job can have been given to the process in between; billiard reports it lost, and
request.py records it through `_after_failure`, which finds the mark: cancelled, in the dead
set, not retried. An async job on the asyncio pool has its task on the shared loop cancelled
(coroutines.cancel_on_shared_loop): it sees CancelledError at its await, and the run fails
with JobKilled, recorded the same way. Any other job on the threads, asyncio or solo pool runs
in the worker's own process, where a thread cannot be stopped safely: it is left to see
`job.cancelled` (logged once).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import weakref
from typing import Any

from celery.worker import state as worker_state

from jobkit import cancellation
from jobkit.coroutines import cancel_on_shared_loop

__all__ = ["HardCancel"]

logger = logging.getLogger(__name__)


class HardCancel:
    """Called by the poller: stops the hard-cancelled jobs this worker runs; returns how many
    it found."""

    def __init__(self, worker: Any) -> None:
        self.worker = worker
        self._handled: set[str] = set()  # job ids already stopped on the loop, or logged
        self._killed: weakref.WeakSet[Any] = weakref.WeakSet()  # until billiard reports it

    def __call__(self) -> int:
        running = {job_id: request for request in list(worker_state.active_requests)
                   if (job_id := _job_id(request)) is not None}
        marked = cancellation.hard_marked(list(running))
        for job_id in marked:
            request = running[job_id]
            pid = request.worker_pid
            if pid is not None and pid != os.getpid():
                if request not in self._killed:
                    self._killed.add(request)
                    self.worker.consumer.call_soon(_kill, request, pid)
            elif job_id not in self._handled:
                self._handled.add(job_id)
                if cancel_on_shared_loop(job_id):
                    logger.warning("job %s cancelled (hard): its task on the asyncio pool's "
                                   "loop is cancelled", job_id)
                    continue
                logger.warning("job %s cancelled (hard), but this pool runs it in the worker's "
                               "own process, which cannot stop it: it runs until it checks "
                               "job.cancelled", job_id)
        self._handled &= set(running)
        return len(marked)


def _job_id(request: Any) -> str | None:
    args = request.args
    payload = args[0] if isinstance(args, list | tuple) and args else None
    job_id = payload.get("job_id") if isinstance(payload, dict) else None
    return job_id if isinstance(job_id, str) else None


def _kill(request: Any, pid: int) -> None:
    """On the event loop: kill the pool process if it still runs this job."""
    if request not in worker_state.active_requests or request.worker_pid != pid \
            or request.acknowledged:
        return
    logger.warning("job %s cancelled (hard): stopping pool process %d", _job_id(request), pid)
    with contextlib.suppress(ProcessLookupError):  # it has just ended: nothing to stop
        os.kill(pid, signal.SIGKILL)
