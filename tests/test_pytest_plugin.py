"""The pytest plugin's session services, seen from a pytest run of their own (pytester)."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from jobkit import api
from jobkit.pytest_plugin import JobkitWorker, flush_when_idle
from jobkit.testing_services import RedisServer, WorkerProcess
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
    job = SleepJob.perform_later("slow", 2)
    wait_for(lambda: r.llen(RESULTS) == 1, what="the job to start")
    with pytest.raises(TimeoutError, match=rf"holds tests.jobs.SleepJob {job.job_id}; jobs "
                       "waiting in queues: none. An earlier test left them running"):
        flush_when_idle(redis_server, worker, timeout=0.2)  # it named no job
    r.set("left:by:a:test", 1)
    flush_when_idle(redis_server, worker)
    assert r.keys("left:*") == []
    # The worker's own heartbeat stays: it used to log in each test that it had been taken for
    # dead (a FLUSHDB deleted it), a line every failure report then showed.
    assert [p.pid for p in api.processes(r)] == [worker.proc.pid]
    wait_for(lambda: f"SleepJob[{job.provider_job_id}] succeeded" in worker.output(),
             what="the job to succeed")
    assert r.llen(RESULTS) == 0, "the job wrote into the flushed database"


KILLS_REDIS = """
from pathlib import Path

import redis


def test_kills_the_session_redis(jobkit_embedded_worker, _jobkit_embedded_redis_server):
    _jobkit_embedded_redis_server.kill()


def test_after_it(jobkit_embedded_worker, _jobkit_embedded_redis_server):
    Path("redis.pid").write_text(str(_jobkit_embedded_redis_server.proc.pid))
    assert jobkit_embedded_worker.client.ping()
"""


def test_a_redis_killed_by_a_test_is_started_again_for_the_next(pytester: pytest.Pytester
                                                                ) -> None:
    """The next tests used to error with ConnectionError in their set-up, each of them."""
    pytester.makepyfile(KILLS_REDIS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    pid = int((pytester.path / "redis.pid").read_text())
    assert not running(pid), f"the restarted redis-server {pid} outlived the test run"


def test_a_dead_session_worker_is_named(own_redis: RedisServer, tmp_path: Path) -> None:
    """Later tests used to time out with "no job failed" and an empty log."""
    process = WorkerProcess(own_redis.url, log=tmp_path / "worker.log")
    process.proc.kill()  # as a test might
    process.proc.wait()
    with pytest.raises(RuntimeError, match=rf"the session's worker \(pid {process.proc.pid}\) "
                       r"is not running: it exited with code -9: an earlier test stopped it"):
        flush_when_idle(own_redis.url, process)
    handle = JobkitWorker(own_redis.url, own_redis.client, process)
    assert handle.report().startswith(f"\nthe session's worker (pid {process.proc.pid}) is not")


def test_the_session_worker_imports_from_pytests_pythonpath_and_the_given_env(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """A `jobkit_worker_env` with a PYTHONPATH of its own used to drop pytest's `pythonpath`
    (a src layout's jobs then died as unknown classes)."""
    from jobkit.pytest_plugin import _with_import_path

    pytester.makeini("[pytest]\npythonpath = src lib\n")
    config = pytester.parseconfig()
    monkeypatch.setenv("PYTHONPATH", "/from/the/process")
    given = {"PYTHONPATH": "/from/the/fixture", "OTHER": "kept"}
    src, lib = (str(pytester.path / name) for name in ("src", "lib"))
    assert _with_import_path(config, given) == {
        "PYTHONPATH": f"{src}:{lib}:/from/the/fixture", "OTHER": "kept"}
    assert _with_import_path(config, {})["PYTHONPATH"] == f"{src}:{lib}:/from/the/process"
