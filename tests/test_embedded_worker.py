"""jobkit's app under Celery's embedded worker (celery.contrib.testing / celery.contrib.pytest)
and the plugin's `jobkit_embedded_worker`, on real Redis servers.

Celery's `celery_worker` fixture is imported here by name: with pytest-celery installed, the
plugin's own `celery_worker` (a worker node, Docker by default) would be the one found
(docs/pytest.md, "The celery_worker name clash").
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import cast

import celery
import pytest
import redis
from celery import Celery
from celery.contrib.pytest import celery_worker  # noqa: F401  (the fixture, picked by name)
from celery.contrib.testing.worker import start_worker
from celery.worker import WorkController
from redis.backoff import NoBackoff
from redis.retry import Retry

from jobkit import Job, api
from jobkit.pytest_plugin import JobkitEmbeddedWorker, embedded_app, embedded_worker
from jobkit.testing_services import RedisServer, free_port, wait_until
from jobkit.worker import membership
from tests.jobs import CountJob, FailingJob

HANDLED = (signal.SIGTERM, signal.SIGTSTP, signal.SIGTTIN)
HELD, RELEASE = threading.Event(), threading.Event()


class HoldJob(Job):
    """Runs (in this process: the embedded worker's) until the test releases it."""

    def perform(self) -> None:
        HELD.set()
        RELEASE.wait(30)


@pytest.fixture(autouse=True)
def _root_log_level() -> Iterator[None]:
    """Celery's start_worker sets the root logger's level to its loglevel ("error") for good;
    later tests' caplog would miss warnings (jobkit_embedded_worker restores it itself)."""
    root = logging.getLogger()
    level = root.level
    yield
    root.setLevel(level)


@pytest.fixture(scope="session")
def celery_worker_parameters() -> dict:
    return {"perform_ping_check": False}  # Celery's ping task needs a result backend


@pytest.fixture
def celery_app(own_client: redis.Redis, own_redis: RedisServer) -> Iterator[Celery]:
    """celery.contrib.pytest's app fixture, overridden: jobkit's app on the module's Redis."""
    with embedded_app(own_redis.url) as app:
        yield app


@pytest.mark.usefixtures("celery_worker")
def test_celery_worker_fixture_runs_jobkit_jobs(own_client: redis.Redis) -> None:
    """The fixture used to hang: jobkit's signal step called signal.signal off the main thread."""
    CountJob.perform_later(1)
    wait_until(lambda: own_client.sismember("test:done", "1"), timeout=30, what="job 1 to run")
    assert [p.pid for p in api.processes(own_client)] == [os.getpid()]


def test_start_worker_leaves_signals_alone_and_leaves_cleanly(own_client: redis.Redis,
                                                              own_redis: RedisServer) -> None:
    before = [signal.getsignal(signum) for signum in HANDLED]
    with embedded_app(own_redis.url) as app, cast(
            AbstractContextManager[WorkController],  # Celery types it Iterable
            start_worker(app, perform_ping_check=False, shutdown_timeout=30)):
        CountJob.perform_later(2)
        wait_until(lambda: own_client.sismember("test:done", "2"), timeout=30, what="job 2")
        assert api.processes(own_client), "the embedded worker beats like any worker"
        assert [signal.getsignal(signum) for signum in HANDLED] == before
    # Stopped cold (no worker_shutdown signal): the test_worker_stopped hook still left.
    assert api.processes(own_client) == []
    assert membership._heartbeat == {}
    # ... and jobkit's worker threads stopped with it (a cold stop skips their steps' stop()).
    names = {thread.name for thread in threading.enumerate()}
    assert not names & {"jobkit-poller", "jobkit-periodic"}, names


def test_jobkit_embedded_worker_reports_a_failed_job(jobkit_embedded_worker) -> None:
    worker = jobkit_embedded_worker
    CountJob.perform_later(3)
    FailingJob.perform_later("embedded")
    worker.wait_for(lambda: worker.client.sismember("test:done", "3"), timeout=30,
                    what="job 3 to run")
    worker.wait_for(lambda: api.DeadSet(worker.client).size(), timeout=30,
                    what="the failing job to die")
    with pytest.raises(TimeoutError) as caught:
        worker.wait_for(lambda: worker.client.sismember("test:done", "99"), timeout=0.5,
                        what="job 99")
    message = str(caught.value)
    assert "timed out after 0.5s waiting for job 99" in message
    assert "tests.jobs.FailingJob" in message and "(dead set" in message
    assert "builtins.RuntimeError: failing on purpose: embedded" in message
    assert 'raise RuntimeError(f"failing on purpose: {reason}")' in message  # its backtrace
    assert "worker log (last" in message
    assert "jobkit.worker.execution: job tests.jobs.FailingJob" in message  # the log's line
    worker.idle(timeout=30)
    [process] = api.processes(worker.client)
    assert (process.pid, process.pool, process.concurrency) == (os.getpid(), "threads", "2")


def test_a_timeout_is_still_told_when_redis_is_gone() -> None:
    gone = redis.Redis(port=free_port(), socket_connect_timeout=1,
                       retry=Retry(NoBackoff(), 0))  # no reconnect back-off: fails at once
    worker = JobkitEmbeddedWorker("redis://gone", gone, cast(WorkController, None),
                                  ["[worker] last words"])
    with pytest.raises(TimeoutError) as caught:
        worker.wait_for(lambda: False, timeout=0.1, what="nothing")
    message = str(caught.value)
    assert message.startswith("timed out after 0.1s waiting for nothing\n")
    assert "the retry and dead sets could not be read: Error 111" in message
    assert message.endswith("worker log (last 1 lines of this test):\n  [worker] last words")


def test_a_job_still_running_after_the_test_fails_its_teardown(own_redis: RedisServer) -> None:
    """It used to run on unseen: into the next test's Redis, and pytest's exit waited for it."""
    before = pool_threads()
    try:
        with pytest.raises(RuntimeError, match=r"1 job\(s\) still running 0.3s after the test: "
                           r"tests.test_embedded_worker.HoldJob\[") as caught, \
                embedded_worker(own_redis.url, stop_grace=0.3) as held:
            HoldJob.perform_later()
            wait_until(HELD.is_set, timeout=30, what="the job to start")
        assert "idle()" in str(caught.value)
        # The stop hook says so too (Celery's celery_worker fixture has no such teardown).
        assert "stopped with 1 job(s) still running" in held.log_text()
    finally:
        RELEASE.set()
    task_logger = logging.getLogger("celery.task")  # Celery's set-up changed it for good
    task_state = task_logger.level, list(task_logger.handlers), task_logger.propagate
    current_app = celery.current_app._get_current_object()
    with embedded_worker(own_redis.url) as worker:  # one that ends in the grace: no error
        CountJob.perform_later(4)
        wait_until(lambda: worker.client.sismember("test:done", "4"), timeout=30, what="job 4")
        assert celery.current_app.conf.broker_url == own_redis.url
    assert (task_logger.level, task_logger.handlers, task_logger.propagate) == task_state
    # Celery's current app is put back: a later test's @shared_task sent to this Redis.
    assert celery.current_app._get_current_object() is current_app
    # Neither worker leaves its pool's threads behind (a cold stop kept them, a set a test).
    wait_until(lambda: not pool_threads() - before, timeout=30, what="the pools' threads to end")


def pool_threads() -> set[threading.Thread]:
    return {thread for thread in threading.enumerate() if thread.name.startswith("ThreadPool")}
