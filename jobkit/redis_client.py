"""One Redis client per process and URL, for the publisher, the poller, the sets, the web app and
the CLI; through Sentinel when the URL says `sentinel://`."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from contextvars import ContextVar
from time import monotonic
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
from redis.commands.core import Script
from redis.sentinel import Sentinel, SentinelConnectionPool

from jobkit.config import current_settings
from jobkit.config_values import is_sentinel_url, sentinel_hosts
from jobkit.errors import ConfigError

__all__ = ["CLUSTER_REFUSAL", "client_for", "get_redis", "refuse_cluster", "script",
           "scoped_redis"]

CLUSTER_REFUSAL = (
    "Redis Cluster is not supported: jobkit's Lua scripts move a job between keys that Cluster "
    "puts in different hash slots (queues, in-flight records, the scheduled, retry and dead "
    "sets). Use one Redis primary, with replicas and Sentinel for failover (sentinel:// URL "
    "and sentinel_master)."
)

MASTER_CHECK_SECONDS = 1.0  # how often a Sentinel client asks whether the master moved
# A sentinel's answer is tiny: wait this long for one, so that a sentinel that is down costs
# an enqueue at most this much at the once-a-second master check (FollowingPool).
SENTINEL_REPLY_SECONDS = 1.0

_clients: dict[tuple[int, str, str | None], redis.Redis] = {}
_scoped: ContextVar[redis.Redis | None] = ContextVar("jobkit_scoped_redis", default=None)


def get_redis(url: str | None = None) -> redis.Redis:
    """A client for `url` (default: the one `scoped_redis` put in place, else the configured
    ``redis_url``), new after a fork."""
    scoped = _scoped.get()
    if url is None and scoped is not None:
        return scoped
    settings = current_settings()
    url = url or settings.redis_url
    key = (os.getpid(), url, settings.sentinel_master)
    client = _clients.get(key)
    if client is None:
        client = _clients[key] = client_for(url, settings.sentinel_master)
    return client


@contextlib.contextmanager
def scoped_redis(client: redis.Redis) -> Iterator[redis.Redis]:
    """Inside the block, in this thread or task only, `get_redis()` answers `client`: the web
    app's requests use one whose timeouts are bounded, so a page never hangs on a Redis that is
    gone or frozen."""
    token = _scoped.set(client)
    try:
        yield client
    finally:
        _scoped.reset(token)


def client_for(url: str, sentinel_master: str | None = None, timeout: float | None = None
               ) -> redis.Redis:
    """A new client: plain for redis://, rediss:// and unix:// URLs; for kombu's
    ``sentinel://h1:26379;sentinel://h2:26380`` form, one that asks the sentinels where the
    master of `sentinel_master` is, and asks again after a failover. `timeout`: seconds for
    connecting and for each reply (default: none for plain URLs; with Sentinel, 1 s for
    the sentinels and 30 s for the master)."""
    if not is_sentinel_url(url):
        return redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    if not sentinel_master:
        raise ConfigError("redis_url is a sentinel:// URL: set sentinel_master (or "
                          "REDIS_SENTINEL_MASTER) to the name of the master to use")
    password, db = None, 0  # the Redis password and db: from whichever URL of the list says
    for part in url.split(";"):
        parsed = urlsplit(part.strip())
        password = password or (unquote(parsed.password) if parsed.password else None)
        if parsed.path.strip("/").isdigit():
            db = int(parsed.path.strip("/"))
    return Sentinel(sentinel_hosts(url), socket_timeout=timeout or SENTINEL_REPLY_SECONDS
                    ).master_for(
        sentinel_master, connection_pool_class=FollowingPool, password=password, db=db,
        socket_timeout=timeout or 30)


class FollowingPool(SentinelConnectionPool):
    """redis-py's Sentinel pool asks where the master is only when it opens a connection, so
    after `SENTINEL FAILOVER` it goes on writing to the old master (writable until Sentinel
    demotes it, seconds later, and then emptied). This one asks the sentinels again, at most
    every MASTER_CHECK_SECONDS, when a connection is taken; when the master moved, the idle
    connections to the old one are closed and the next command goes to the new one."""

    _checked_at = float("-inf")

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        now = monotonic()
        if now - self._checked_at >= MASTER_CHECK_SECONDS:
            self._checked_at = now
            with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
                self.get_master_address()  # closes idle connections when the master moved
        return super().get_connection(*args, **kwargs)


def refuse_cluster(client: redis.Redis) -> None:
    """ConfigError (CLUSTER_REFUSAL) when `client` talks to a Redis Cluster node."""
    try:
        enabled = client.info("cluster").get("cluster_enabled")
    except redis.ResponseError:  # INFO cluster unknown or refused: not a cluster node
        return
    if enabled in (1, "1"):
        raise ConfigError(CLUSTER_REFUSAL)


@functools.cache
def script(lua: str) -> Script:
    """A Lua script to call by its SHA, made once per text (redis-py's register_script hashes
    the whole text each time). Call it with ``client=`` the client at hand; a Redis that does
    not have it yet gets it loaded (SCRIPT LOAD) on the first NoScriptError."""
    return get_redis().register_script(lua)
