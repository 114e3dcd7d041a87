"""One Redis client per process and URL, for the publisher, the poller and the sets."""

from __future__ import annotations

import os

import redis

from jobkit.config import current_settings

__all__ = ["get_redis"]

_clients: dict[tuple[int, str], redis.Redis] = {}


def get_redis(url: str | None = None) -> redis.Redis:
    """A client for `url` (default: the configured ``redis_url``), new after a fork."""
    url = url or current_settings().redis_url
    key = (os.getpid(), url)
    client = _clients.get(key)
    if client is None:
        client = _clients[key] = redis.Redis.from_url(url)
    return client
