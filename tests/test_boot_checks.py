"""Warnings that keep jobs from vanishing: an evicting Redis, a queue nobody consumes; and
settings a worker refuses to boot with."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

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


@pytest.mark.parametrize("text, variables, message", [
    ("poll_interval: .inf\n", {}, "jobkit.yml:1: poll_interval: inf is not valid: expected "
                                  "seconds > 0"),
    ("concurrency: 1\ntimeout: .inf\n", {}, "jobkit.yml:2: timeout: inf is not valid: "
                                             "expected seconds >= 0"),
    ("heartbeat_timeout: 1.0e400\n", {}, "jobkit.yml:1: heartbeat_timeout: '1.0e400' is not "
                                         "valid"),
    ("concurrency: 1\n", {"JOBKIT_POLL_INTERVAL": "inf"},
     "JOBKIT_POLL_INTERVAL: 'inf' is not valid: expected seconds > 0"),
])
def test_a_worker_refuses_to_boot_on_an_infinite_interval_or_timeout(
        tmp_path: Path, text: str, variables: dict[str, str], message: str) -> None:
    """Today's `.inf` would kill the poller thread silently (Event.wait overflows) or crash
    the worker at its first heartbeat or at SIGTERM: refused before Celery starts."""
    path = tmp_path / "jobkit.yml"
    path.write_text(text)
    env = {**os.environ, "JOBKIT_POLL_INTERVAL": "", "REDIS_URL": "redis://127.0.0.1:1/0",
           **variables}
    worker = subprocess.run([sys.executable, "-m", "jobkit", "worker", "-C", str(path)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert worker.returncode == 1, worker.stdout + worker.stderr
    assert message in worker.stderr and worker.stderr.startswith("Error: ")
    assert "Traceback" not in worker.stderr and " ready." not in worker.stdout + worker.stderr
