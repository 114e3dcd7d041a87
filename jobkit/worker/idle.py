"""An on-demand worker (jobkit.on_demand) exits after `idle_timeout` seconds without work.

Idle means: none of its queues holds a job, it holds none itself, and no scheduled or retrying
job falls due within `idle_timeout` (its poller would move it). It then stops as on SIGTERM.
While it lives it renews its slot, and it frees the slot as it stops; if jobs arrived in the
moment it was stopping, it starts its successor, since enqueuers saw it alive and started none.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

import redis
from celery import bootsteps

from jobkit import api, keys
from jobkit import on_demand as starter
from jobkit.config import current_settings
from jobkit.redis_client import get_redis
from jobkit.worker.membership import identity

__all__ = ["IdleExitStep", "OnDemand", "on_demand"]

logger = logging.getLogger(__name__)

CHECK_EVERY_SECONDS = 1.0

@dataclass(frozen=True)
class OnDemand:
    """How jobkit.on_demand started this worker: its slot, and its idle timeout."""

    slot: int
    idle_timeout: float


#: Set by `jobkit worker --on-demand-slot N --idle-timeout S`; empty for a worker started any
#: other way, which never exits for being idle.
on_demand: list[OnDemand] = []


class IdleExitStep(bootsteps.StartStopStep):
    """Watches an on-demand worker for idleness, and ends it."""

    label = "jobkit on-demand idle exit"

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, parent: Any) -> None:
        if on_demand:
            self._thread = threading.Thread(target=self._watch, name="jobkit-idle",
                                            daemon=True)
            self._thread.start()

    def stop(self, parent: Any) -> None:
        if not on_demand:
            return
        self._stopped.set()
        client = get_redis()
        try:
            client.delete(keys.on_demand_slot(on_demand[0].slot))
            queues = current_settings().queue_names
            if any(api.Queue(q, client).size() for q in queues):
                starter.start_worker_if_needed(queues, client, leaving=identity().id)
        except redis.RedisError as exc:
            logger.warning("jobkit on_demand: could not free the slot: %s", exc)

    def _watch(self) -> None:
        slot, timeout = on_demand[0].slot, on_demand[0].idle_timeout
        idle_since = time.monotonic()
        client = get_redis()
        while not self._stopped.wait(CHECK_EVERY_SECONDS):
            try:
                client.expire(keys.on_demand_slot(slot), starter.SLOT_SECONDS)
                if _has_work(client, timeout):
                    idle_since = time.monotonic()
                    continue
            except redis.RedisError:
                idle_since = time.monotonic()  # unknown is not idle
                continue
            if time.monotonic() - idle_since >= timeout:
                logger.info("jobkit on_demand: idle for %.0f s, stopping", timeout)
                os.kill(os.getpid(), signal.SIGTERM)
                return


def _has_work(client: redis.Redis, within: float) -> bool:
    if client.hlen(identity().unacked_key):
        return True
    if any(api.Queue(q, client).size() for q in current_settings().queue_names):
        return True
    due = time.time() + within
    return any(client.zrangebyscore(key, "-inf", due, start=0, num=1)
               for key in (keys.SCHEDULE, keys.RETRY))
