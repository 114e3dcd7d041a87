"""Warnings that keep jobs from vanishing: an evicting Redis, a queue nobody consumes."""

from __future__ import annotations

import logging

import pytest
import redis

from jobkit.redis_client import get_redis
from jobkit.worker.boot import check_eviction_policy
from tests.jobs import TaskLoggerJob


def test_evicting_redis_is_warned_about_loudly(r: redis.Redis, caplog) -> None:
    r.config_set("maxmemory-policy", "allkeys-lru")
    try:
        with caplog.at_level(logging.WARNING):
            assert check_eviction_policy(get_redis()) == "allkeys-lru"
    finally:
        r.config_set("maxmemory-policy", "noeviction")
    assert "maxmemory-policy is 'allkeys-lru'" in caplog.text
    assert "DELETE queued jobs" in caplog.text


def test_noeviction_is_quiet(r: redis.Redis, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        assert check_eviction_policy(get_redis()) == "noeviction"
    assert caplog.text == ""


@pytest.mark.parametrize("queue, warned", [("nobody_listens", True), ("mailers", False)])
def test_unconsumed_queue_is_warned_about_in_development(
        r: redis.Redis, caplog, queue: str, warned: bool) -> None:
    with caplog.at_level(logging.WARNING):
        TaskLoggerJob.set(queue=queue).perform_later(1)
    assert ("which no configured worker consumes" in caplog.text) is warned
