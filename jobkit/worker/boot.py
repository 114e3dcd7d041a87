"""Checks a worker makes of its Redis when it starts."""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery import bootsteps

from jobkit.masking import mask_secrets
from jobkit.redis_client import get_redis

__all__ = ["RedisPolicyCheck", "check_eviction_policy"]

logger = logging.getLogger(__name__)


def check_eviction_policy(client: redis.Redis) -> str | None:
    """Warn loudly unless Redis is set never to evict keys; returns the policy seen.

    An evicting Redis (allkeys-lru, volatile-*, ...) deletes queues and sets under memory
    pressure, and the jobs in them are gone. INFO is used, not CONFIG GET, because managed
    Redis services often disable CONFIG.
    """
    try:
        policy = client.info("memory").get("maxmemory_policy")
    except redis.RedisError as exc:
        logger.warning("jobkit: could not read Redis's maxmemory-policy: %s",
                       mask_secrets(str(exc)))
        return None
    if policy != "noeviction":
        logger.warning(
            "jobkit: Redis maxmemory-policy is %r. Under memory pressure Redis will DELETE "
            "queued jobs. Set `maxmemory-policy noeviction` on this Redis.", policy)
    return policy


class RedisPolicyCheck(bootsteps.StartStopStep):
    """At boot, the eviction-policy warning above."""

    label = "jobkit redis policy check"

    def start(self, parent: Any) -> None:
        check_eviction_policy(get_redis())
