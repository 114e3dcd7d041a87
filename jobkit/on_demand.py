"""Shirasagi Job's on-demand mode: an enqueue starts a worker when none is serving the queue.

With ``mode: on_demand``, nothing needs setting up on a small site or in development: after
the Celery adapter has sent jobs, `start_worker_if_needed` looks for a live worker (by its
heartbeat) consuming each queue that got jobs, and when one has none, starts one detached
`jobkit worker` in the enqueuing process's directory and environment. That worker exits on its
own after `idle_timeout` seconds without work (jobkit.worker.idle).

At most `on_demand_workers` are ever running, however many processes enqueue at once: a
worker is started only by the process that takes a free slot (``SET NX`` on
`keys.on_demand_slot`), and the worker holds its slot (renewing its TTL) until it exits. A
slot whose worker died frees itself when its TTL runs out.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import IO

import redis

from jobkit import api, keys
from jobkit.config import current_settings
from jobkit.redis_client import get_redis

__all__ = ["SLOT_SECONDS", "start_worker_if_needed"]

logger = logging.getLogger(__name__)

SLOT_SECONDS = 120  # a slot's TTL: longer than a worker's start-up; renewed while it lives
ON_DEMAND_LOG = Path("tmp") / "jobkit-on-demand.log"


def start_worker_if_needed(queues: Iterable[str], client: redis.Redis | None = None,
                           leaving: str | None = None) -> int | None:
    """Start a worker for `queues` if no live worker consumes one of them and a slot is free;
    returns the slot taken, or None. `leaving` is a worker process that is exiting and does
    not count. Never raises for Redis or a failed start: the jobs are enqueued already, and
    wait for a worker as they would in service mode."""
    settings = current_settings()
    client = client or get_redis()
    try:
        consumed = {q for process in api.processes(client) if process.id != leaving
                    for q in process.queues}
        unserved = sorted(set(queues) - consumed)
        if not unserved:
            return None
        slot = _take_slot(client, settings.on_demand_workers)
        if slot is None:
            return None  # as many workers as allowed are running or starting
        try:
            _spawn(slot, [*settings.queue_names, *(q for q in unserved
                                                   if q not in settings.queue_names)])
        except OSError:
            client.delete(keys.on_demand_slot(slot))  # nothing started: the slot is free
            raise
        return slot
    except (redis.RedisError, OSError) as exc:
        logger.warning("jobkit on_demand: could not start a worker: %s", exc)
        return None


def _take_slot(client: redis.Redis, slots: int) -> int | None:
    for slot in range(slots):
        if client.set(keys.on_demand_slot(slot), os.getpid(), nx=True, ex=SLOT_SECONDS):
            return slot
    return None


def _spawn(slot: int, queues: list[str]) -> None:
    """A detached `jobkit worker` (own session, no terminal), logging to tmp/ when it can,
    with this process's settings: its file and environment section, and the values that
    `configure()` or the environment may have set, passed on the command line or as the
    variables the worker reads."""
    settings = current_settings()
    command = [sys.executable, "-m", "jobkit", "worker", "--on-demand-slot", str(slot),
               "--idle-timeout", repr(settings.idle_timeout), "-e", settings.environment,
               "-c", str(settings.concurrency), "-P", settings.pool]
    if settings.source:
        command += ["-C", os.path.abspath(settings.source)]
    for queue in queues:
        command += ["-q", queue]
    environ = {**os.environ, "REDIS_URL": settings.redis_url,
               "JOBKIT_POLL_INTERVAL": repr(settings.poll_interval),
               "JOBKIT_HEARTBEAT_TIMEOUT": repr(settings.heartbeat_timeout)}
    if settings.sentinel_master:
        environ["REDIS_SENTINEL_MASTER"] = settings.sentinel_master
    try:
        ON_DEMAND_LOG.parent.mkdir(exist_ok=True)
        log: int | IO[bytes] = ON_DEMAND_LOG.open("ab")
    except OSError:
        log = subprocess.DEVNULL
    try:
        subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, env=environ,
                         stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
    finally:
        if not isinstance(log, int):
            log.close()  # the worker has its own copy
    logger.info("jobkit on_demand: started a worker (slot %d) for %s", slot, ", ".join(queues))
