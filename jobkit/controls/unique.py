"""Releasing a unique job's lock: only by the job that holds it.

The lock (a string with a TTL, set at enqueue by `controls.enqueue`) holds the id of the job
that took it. A job releases it when it starts (`unique_until = "start"`), when it succeeds
(`"success"`, the default), or when it fails for good (discarded or dead); a job waiting for a
retry keeps it. Compare-and-delete: a job whose lock expired and was taken by a newer job
leaves the newer job's lock alone.
"""

from __future__ import annotations

from typing import Any

import redis

from jobkit import keys
from jobkit.redis_client import get_redis, script

__all__ = ["release_lock"]

_RELEASE_IF_HELD = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def release_lock(unique: dict[str, Any], job_id: str, client: redis.Redis | None = None
                 ) -> bool:
    """Delete the lock of `unique` (a payload's unique control) if `job_id` holds it."""
    return bool(script(_RELEASE_IF_HELD)(keys=[keys.unique(unique["key"])], args=[job_id],
                                          client=client or get_redis()))
