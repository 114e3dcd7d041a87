"""An in-process thread pool: no Redis, no worker, nothing durable. For scripts and development."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from jobkit import references
from jobkit.adapters.base import Adapter
from jobkit.adapters.inline import perform_payload, wire_copy

if TYPE_CHECKING:
    from jobkit.job import Job

logger = logging.getLogger(__name__)

DEFAULT_THREADS = 5


class AsyncAdapter(Adapter):
    """Performs jobs on background threads; delayed jobs wait on timers. Lost on exit."""

    name = "async"

    def __init__(self, threads: int = DEFAULT_THREADS) -> None:
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="jobkit-async")

    def enqueue(self, job: Job) -> None:
        payload = wire_copy(job)  # serialize now, in the caller, so bad arguments fail here
        delay = (job.scheduled_at - datetime.now(UTC)).total_seconds() if job.scheduled_at else 0
        if delay > 0:
            timer = threading.Timer(delay, self.executor.submit, (self._perform, payload))
            timer.daemon = True
            timer.start()
        else:
            self.executor.submit(self._perform, payload)

    @staticmethod
    def _perform(payload: dict) -> None:
        try:
            perform_payload(payload)
        except Exception:
            logger.exception("async job %s %s failed", payload["job_class"], payload["job_id"])
        finally:
            references.release_all()  # this thread's sessions, as a worker would

    def shutdown(self, wait: bool = True) -> None:
        """Wait for running jobs (delayed ones still waiting are dropped)."""
        self.executor.shutdown(wait=wait)
