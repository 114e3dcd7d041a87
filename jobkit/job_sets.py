"""Redis sorted sets that hold jobs outside their queues (scheduled, dead, later retries).

One small class per set, each with its key, sharing the verbs here (as RQ's registries do).
"""

from __future__ import annotations

import redis

from jobkit.redis_client import get_redis

__all__ = ["JobSet"]

KEY_PREFIX = "jobkit:"


class JobSet:
    """A sorted set of jobs scored by a Unix time."""

    name = ""

    def __init__(self, client: redis.Redis | None = None) -> None:
        self.client = client or get_redis()
        self.key = f"{KEY_PREFIX}{self.name}"

    def size(self) -> int:
        return self.client.zcard(self.key)

    def __len__(self) -> int:
        return self.size()

    def clear(self) -> int:
        """Remove every entry; returns how many there were."""
        with self.client.pipeline() as pipe:
            pipe.zcard(self.key).delete(self.key)
            count, _ = pipe.execute()
        return count
