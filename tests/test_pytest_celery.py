"""pytest-celery's `celery_setup` on jobkit's local nodes (jobkit.contrib.pytest_celery): the
session's private redis-server and real `jobkit worker`, no Docker; the `jobkit_worker`
fixture's report of a failed job; docs/pytest.md's examples, run as a project of their own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pytest_celery import CeleryTestSetup

from jobkit import api
from jobkit.contrib.pytest_celery import LocalJobkitWorker, LocalRedisBroker, SharedNodeError
from tests.doc_examples import DOCS, python_blocks
from tests.jobs import CountJob, FailingJob

pytest_plugins = ["jobkit.contrib.pytest_celery"]


def test_celery_setup_runs_jobs_on_local_nodes(celery_setup: CeleryTestSetup, celery_worker,
                                                celery_broker) -> None:
    broker, worker = celery_setup.broker, celery_setup.worker
    assert worker is celery_worker and broker is celery_broker  # the node fixtures, replaced
    assert isinstance(broker, LocalRedisBroker) and isinstance(worker, LocalJobkitWorker)
    assert " ready." not in worker.logs()  # this test's part only: it was the whole session's
    assert celery_setup.backend is None
    assert celery_setup.app.conf.broker_url == broker.config()["url"]
    assert celery_setup.ready(control=True)
    replies = celery_setup.app.control.ping(timeout=30, limit=1)  # the worker answers
    assert [name for reply in replies for name in reply] == [worker.hostname()]
    CountJob.perform_later(7)
    worker.assert_log_exists("tests.jobs.CountJob", timeout=60)
    client = broker.server.client
    assert client.sismember("test:done", "7")
    assert [p.pid for p in api.processes(client)] == [worker.process.proc.pid]
    with pytest.raises(SharedNodeError, match="kill: the local node is the session's"):
        worker.kill()
    with pytest.raises(ValueError, match="no result backend"):
        celery_setup.ready(ping=True)


def test_jobkit_worker_wait_shows_the_failed_job_and_the_log(jobkit_worker) -> None:
    FailingJob.perform_later("in the report")
    jobkit_worker.wait_for(lambda: api.DeadSet(jobkit_worker.client).size(), timeout=30,
                           what="the job to die")
    with pytest.raises(TimeoutError) as caught:
        jobkit_worker.wait_for(lambda: False, timeout=0.2, what="a job that cannot run")
    message = str(caught.value)
    assert message.startswith("timed out after 0.2s waiting for a job that cannot run\n")
    assert "tests.jobs.FailingJob" in message and "(dead set, retry_count 0)" in message
    assert "builtins.RuntimeError: failing on purpose: in the report" in message
    assert 'raise RuntimeError(f"failing on purpose: {reason}")' in message
    assert "worker log (last" in message
    assert "failed for good" in message  # the worker's own log line, this test's part only
    assert message.count("worker log") == 1


def test_docs_examples_run_as_a_project(tmp_path: Path) -> None:
    """Each block of docs/pytest.md is the file its first line names; pytest runs them in a
    project of their own (its own session worker and Redis), with pytest-celery installed, the
    jobs in src/ on pytest's `pythonpath` (the worker used not to find them)."""
    (tmp_path / "src").mkdir()  # the jobs in a src layout: the worker must import them too
    for block in python_blocks((DOCS / "pytest.md").read_text()):
        name = block.splitlines()[0].removeprefix("# ")
        assert name.endswith(".py"), f"block without a file name: {block[:60]!r}"
        (tmp_path / ("src/" if name == "app_jobs.py" else "") / name).write_text(block)
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "PYTEST_ADDOPTS")}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
         "-o", "addopts=", "-o", "pythonpath=src", "-rA"], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=180)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    for test in ("test_with_pytest_celery.py::test_welcome_on_a_real_worker",
                 "test_embedded.py::test_welcome_in_process",
                 "test_celery_embedded.py::test_welcome_with_celerys_fixture",
                 "test_failure_report.py::test_a_failed_job_shows_in_the_failure"):
        assert f"PASSED {test}" in out, out
    assert "4 passed" in out, out


def test_pytest_celery_hides_celerys_celery_worker() -> None:
    """Pins docs/pytest.md's name clash: pytest-celery's plugin module holds Celery's fixtures,
    but its own `celery_worker`."""
    import celery.contrib.pytest as celery_fixtures
    import pytest_celery.fixtures.worker as node_fixtures
    import pytest_celery.plugin as plugin

    assert plugin.celery_worker is node_fixtures.celery_worker
    assert plugin.celery_worker is not celery_fixtures.celery_worker
    assert plugin.celery_app is celery_fixtures.celery_app
