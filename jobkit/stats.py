"""Processed and failed counters, total and per day, as Sidekiq keeps them.

Counted in memory where the job runs and written by a background thread about once a second,
so counting costs no Redis round trip per job. A process killed with -9 loses its last second
of counts (never a job).
"""

from __future__ import annotations

import atexit
import datetime as dt
import logging
import os
import threading
import time
from collections import Counter

import redis

from jobkit import keys
from jobkit.masking import mask_secrets
from jobkit.redis_client import get_redis

__all__ = ["FLUSH_EVERY_SECONDS", "count", "flush"]

logger = logging.getLogger(__name__)

FLUSH_EVERY_SECONDS = 1.0
DAY_KEY_TTL_SECONDS = 5 * 365 * 24 * 3600  # Sidekiq keeps daily history five years

_pending: Counter[str] = Counter()
_lock = threading.Lock()
_flusher_pid: list[int] = []


def count(name: str) -> None:
    """Add one to counter `name` ("processed" or "failed")."""
    with _lock:
        _pending[name] += 1
        if _flusher_pid != [os.getpid()]:  # first count in this process (or since a fork)
            _flusher_pid[:] = [os.getpid()]
            threading.Thread(target=_flush_forever, name="jobkit-stats", daemon=True).start()
            atexit.register(flush)


def flush(client: redis.Redis | None = None) -> None:
    """Write the pending counts now."""
    with _lock:
        pending = dict(_pending)
        _pending.clear()
    if not pending:
        return
    today = dt.datetime.now(dt.UTC).date()
    try:
        with (client or get_redis()).pipeline(transaction=False) as pipe:
            for name, n in pending.items():
                pipe.incrby(keys.stat(name), n)
                pipe.incrby(keys.stat(name, today), n)
                pipe.expire(keys.stat(name, today), DAY_KEY_TTL_SECONDS)
            pipe.execute()
    except redis.RedisError as exc:
        logger.warning("jobkit stats not written, will try again: %s", mask_secrets(str(exc)))
        with _lock:
            _pending.update(pending)


def _flush_forever() -> None:
    while True:
        time.sleep(FLUSH_EVERY_SECONDS)
        flush()
