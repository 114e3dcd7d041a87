"""Celery's request for a job, with one change: a job whose process was killed goes back per
its retry policy instead of being lost or requeued forever.

Why: with `acks_late`, Celery acknowledges a job killed by the hard time limit (it is gone:
in no queue and no set), and requeues a job whose pool process died (`task_reject_on_worker_lost`)
as often as it dies, so a job that gets the OOM killer every time blocks its queue for good.
A job that raises SystemExit or KeyboardInterrupt ends its pool process the same way (they
are not exceptions a job's failure path catches), and Celery reports it as a lost process.
Here all of them count as a failed run (`jobkit.JobKilled`, with the reason), recorded in the
retry or dead set before the message is acknowledged, like any other failure (execution.py).
A revoked or cancelled request is Celery's to handle, as is any kill while the worker stops.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from billiard.einfo import ExceptionWithTraceback
from billiard.exceptions import WorkerLostError
from celery.exceptions import TimeLimitExceeded
from celery.worker import state as worker_state
from celery.worker.request import Request
from celery.worker.state import task_ready

from jobkit.errors import JobKilled
from jobkit.worker import shutdown

__all__ = ["JobRequest"]

logger = logging.getLogger(__name__)


class JobRequest(Request):
    _jobkit_recorded = False

    def on_timeout(self, soft: bool, timeout: float) -> None:
        if soft or shutdown.handing_back:
            return super().on_timeout(soft, timeout)
        task_ready(self)
        logger.error("Hard time limit (%ss) exceeded for %s[%s]", timeout, self.name, self.id)
        self._record_kill(_why_killed(TimeLimitExceeded(timeout)))

    def on_failure(self, exc_info: Any, send_failed_event: bool = True,
                   return_ok: bool = False) -> Any:
        exc = exc_info.exception
        if isinstance(exc, ExceptionWithTraceback):
            exc = exc.exc
        killed_for_its_time = isinstance(exc, TimeLimitExceeded) and not shutdown.handing_back
        # Revoked (Celery records it, acks) or cancelled at a lost connection (redelivered):
        # Celery's own handling, not a failure of the job.
        cancelled = self._already_revoked or self._already_cancelled
        lost = isinstance(exc, WorkerLostError | SystemExit | KeyboardInterrupt) \
            and not _worker_is_stopping() and not cancelled
        if killed_for_its_time or lost:
            task_ready(self)
            self._record_kill(_why_killed(exc))
            return None
        return super().on_failure(exc_info, send_failed_event, return_ok)

    def _record_kill(self, reason: str) -> None:
        if self._jobkit_recorded:  # the timeout and the lost process report one kill
            return
        self._jobkit_recorded = True
        try:
            self.task.record_kill(self.args[0] if self.args else None, JobKilled(reason),
                                  self.id)
        except redis.RedisError:
            logger.exception("cannot record killed job %s; handing it back to its queue",
                             self.id)
            self.reject(requeue=True)
            return
        self.acknowledge()


def _worker_is_stopping() -> bool:
    """A pool process lost while the worker stops (TERM to the whole process group, as Heroku
    sends it; a cold shutdown; TERM's timeout) is not the job's failure: Celery hands the job
    back to its queue (`task_reject_on_worker_lost`), to start over."""
    return (shutdown.terminating or shutdown.handing_back or worker_state.should_stop is not None
            or worker_state.should_terminate is not None)


def _why_killed(error: BaseException) -> str:
    if isinstance(error, TimeLimitExceeded) and error.args:
        return f"hard time limit ({float(error.args[0]):g} s) exceeded"
    return f"{type(error).__name__}: {error}"
