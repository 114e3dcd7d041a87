"""The poller: a thread in every worker that sends due scheduled and retry jobs to their queues,
puts back the in-flight jobs of dead workers (recovery.py), starts jobs held by a
concurrency limit whose slot expired (controls/concurrency.py), and stops the jobs this worker
runs that were cancelled with hard=True (hard_cancel.py).

Why not Celery's ETA: Celery keeps ETA tasks in worker memory (~8 KiB each) and the Redis
transport delivers them again after `visibility_timeout`, so long delays grow memory and
duplicate jobs. Here a delayed job waits in a Redis sorted set, parked as the exact message its
queue's list will receive, and a Lua script moves due members (see job_sets.py).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any

import redis
from celery import bootsteps

from jobkit.config import current_settings
from jobkit.controls import concurrency
from jobkit.job_sets import RetrySet, ScheduledSet
from jobkit.masking import mask_secrets
from jobkit.worker import plain_tasks
from jobkit.worker.hard_cancel import HardCancel
from jobkit.worker.membership import keep_beating, update_info
from jobkit.worker.recovery import reap_dead_processes

__all__ = ["SchedulePoller", "SchedulePollerStep"]

logger = logging.getLogger(__name__)


class SchedulePoller:
    """A daemon thread that moves due jobs every `interval` seconds (jittered down to half).

    A thread rather than the worker's event-loop timer, so a busy solo or threads pool cannot
    stall delivery of due jobs. Jitter spreads the racing pollers of many workers apart.
    """

    def __init__(self, interval: float, client: redis.Redis | None = None,
                 hard_cancel: HardCancel | None = None) -> None:
        self.interval = interval
        self.hard_cancel = hard_cancel
        self.sets = (ScheduledSet(client), RetrySet(client))
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="jobkit-poller", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval + 1)

    def poll(self) -> int:
        """Move every due job now, recover dead workers' jobs, and start held jobs whose
        concurrency slot expired; returns how many moved."""
        keep_beating()
        client = self.sets[0].client
        if self.hard_cancel is not None:
            self.hard_cancel()
        return sum(job_set.move_due() for job_set in self.sets) + reap_dead_processes(
            client) + concurrency.sweep(client)

    def _run(self) -> None:
        while True:
            try:
                moved = self.poll()
                if moved:
                    logger.debug("jobkit poller: moved %d due jobs", moved)
            except redis.RedisError as exc:
                logger.warning("jobkit poller: Redis error, will try again: %s",
                               mask_secrets(str(exc)))
            except Exception:  # the poller must outlive any one bad entry
                logger.exception("jobkit poller: error, will try again")
            if self._stopped.wait(self.interval * random.uniform(0.5, 1.0)):
                return


class SchedulePollerStep(bootsteps.StartStopStep):
    """Runs the scheduled-set poller for as long as the worker runs."""

    label = "jobkit scheduled poller"

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.poller: SchedulePoller | None = None

    def start(self, parent: Any) -> None:
        settings = current_settings()
        update_info(node=getattr(parent, "hostname", None),
                    queues=[*settings.queue_names, *plain_tasks.extra_queues()],
                    concurrency=getattr(parent, "concurrency", None), pool=settings.pool,
                    started_at=time.time())
        self.poller = SchedulePoller(settings.poll_interval, hard_cancel=HardCancel(parent))
        self.poller.start()

    def stop(self, parent: Any) -> None:
        if self.poller is not None:
            self.poller.stop()
