"""The pytest plugin's session services, seen from a pytest run of their own (pytester)."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from jobkit.pytest_plugin import flush_when_idle
from tests.conftest import Worker, wait_for
from tests.jobs import RESULTS, SleepJob

pytest_plugins = ["pytester"]

# The inner run's conftest: the worker gets a setting it refuses, and the redis-server that
# the plugin started first leaves its PID behind for the check.
REFUSED_SETTING = """
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def jobkit_worker_env(_jobkit_redis_server):
    Path("redis.pid").write_text(str(_jobkit_redis_server.proc.pid))
    return {"JOBKIT_POLL_INTERVAL": "soon"}
"""


def running(pid: int) -> bool:
    """Whether `pid` is a live redis-server (not a zombie, nor a reused PID)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return "(redis-server)" in stat and stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_a_worker_that_fails_to_start_leaves_no_redis_server(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(REFUSED_SETTING)
    pytester.makepyfile("def test_needs_the_worker(jobkit_worker):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*RuntimeError: worker exited early*",
                                 "*JOBKIT_POLL_INTERVAL: 'soon' is not valid*"])
    pid = int((pytester.path / "redis.pid").read_text())
    assert not running(pid), f"redis-server {pid} outlived the test run"


def test_the_flush_between_tests_waits_for_the_running_job(r: redis.Redis, redis_server: str,
                                                           worker: Worker) -> None:
    job = SleepJob.perform_later("slow", 1)
    wait_for(lambda: r.llen(RESULTS) == 1, what="the job to start")
    flush_when_idle(redis_server, worker)
    wait_for(lambda: f"SleepJob[{job.provider_job_id}] succeeded" in worker.output(),
             what="the job to succeed")
    assert r.llen(RESULTS) == 0, "the job wrote into the flushed database"
