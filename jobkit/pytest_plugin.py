"""jobkit's pytest plugin (installed with the package): fixtures for testing jobs.

- `jobkit_fake`, `jobkit_inline`, `jobkit_disable`: the three modes, for one test.
- `jobkit_outbox`: the mail delivered in the test (test delivery method), emptied first.
- `perform_enqueued_jobs`: fake mode where every job is performed as it is enqueued.
- `jobkit_advance`: move scheduled jobs forward without sleeping (`jobkit_advance(3600)`).
- `jobkit_worker`: a private redis-server and a real worker for integration tests, started once
  per session (from the test run's root directory) and emptied between tests, once the worker
  is idle. Override the session fixture `jobkit_worker_env` to give that worker environment
  variables of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import redis

from jobkit import api, testing
from jobkit.adapters.base import Adapter
from jobkit.config import configure, current_settings, use_settings
from jobkit.testing_services import RedisServer, WorkerProcess, wait_until


@pytest.fixture
def jobkit_fake() -> Iterator[testing.TestAdapter]:
    with testing.fake() as adapter:
        yield adapter


def _inline_mode() -> Iterator[testing.TestAdapter]:
    with testing.inline() as adapter:
        yield adapter


jobkit_inline = pytest.fixture(_inline_mode, name="jobkit_inline")


@pytest.fixture
def jobkit_disable() -> Iterator[Adapter]:
    with testing.disable() as adapter:
        yield adapter


# Rails' name for the same thing: every job enqueued in the test is performed at once.
perform_enqueued_jobs = pytest.fixture(_inline_mode, name="perform_enqueued_jobs")


@pytest.fixture
def jobkit_outbox() -> Iterator[list]:
    with testing.fake():
        yield testing.outbox()


@pytest.fixture
def jobkit_advance() -> Callable[[float], int]:
    return testing.advance


@dataclass
class JobkitWorker:
    """What `jobkit_worker` gives a test: the broker URL, a client, the worker process."""

    redis_url: str
    client: redis.Redis
    process: WorkerProcess

    def wait_for(self, predicate: Callable[[], object], timeout: float = 15.0,
                 what: str = "condition") -> object:
        return wait_until(predicate, timeout=timeout, what=what)

    def idle(self, timeout: float = 15.0) -> None:
        """Wait until every queue is empty and no job is in flight (scheduled and retrying
        jobs are not waited for: move them with `jobkit_advance`)."""
        def quiet() -> bool:
            busy = any(queue.size() for queue in api.queues(self.client))
            return not busy and worker_idle(self.client, self.process)

        wait_until(quiet, timeout=timeout, what="the worker to go idle")


def worker_idle(client: redis.Redis, worker: WorkerProcess) -> bool:
    """The worker holds no job (running or prefetched) and none waits in a queue it fetches
    from, as its heartbeat says. Found by PID, since a test may leave heartbeats of its own."""
    return not any(_has_work(client, process) for process in api.processes(client)
                   if process.pid == worker.proc.pid)


def _has_work(client: redis.Redis, process: api.Process) -> bool:
    fetched = (api.Queue(name, client) for name in process.queues)
    return bool(process.in_flight) or any(q.size() and not q.paused() for q in fetched)


def flush_when_idle(redis_url: str, worker: WorkerProcess | None, timeout: float = 30.0
                    ) -> None:
    """Empty the database, once `worker` is idle: a job still running would otherwise write
    its results, retry or dead-set entry into the next test's empty database. (Its own client
    replies in bytes: a test may leave keys and members that are not UTF-8.)"""
    with redis.Redis.from_url(redis_url) as client:
        if worker is not None:
            wait_until(lambda: worker_idle(client, worker), timeout=timeout,
                       what="the worker to finish the previous test's jobs")
        client.flushdb()


# The session's worker, from the first test that asks for it to the end of the session.
SESSION_WORKER = pytest.StashKey[WorkerProcess]()


@pytest.fixture(scope="session")
def jobkit_worker_env() -> dict[str, str]:
    """Environment variables for the session's worker, on top of the test process's own:
    override this fixture in conftest.py to add some."""
    return {}


@pytest.fixture(scope="session")
def _jobkit_redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def _jobkit_worker_process(_jobkit_redis_server: RedisServer, jobkit_worker_env: dict[str, str],
                           request: pytest.FixtureRequest,
                           tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """The session's worker; if it fails to start, the error is raised for each test that
    asks for it, and the redis-server is still stopped at the end of the session."""
    process = WorkerProcess(_jobkit_redis_server.url, "-c", "2", cwd=request.config.rootpath,
                            env=jobkit_worker_env,
                            log=tmp_path_factory.mktemp("jobkit_worker") / "worker.log")
    request.config.stash[SESSION_WORKER] = process
    yield process
    del request.config.stash[SESSION_WORKER]
    process.stop()


@pytest.fixture
def jobkit_worker(_jobkit_redis_server: RedisServer, _jobkit_worker_process: WorkerProcess,
                  monkeypatch: pytest.MonkeyPatch) -> Iterator[JobkitWorker]:
    url = _jobkit_redis_server.url
    flush_when_idle(url, _jobkit_worker_process)
    monkeypatch.setenv("REDIS_URL", url)
    saved = current_settings()
    configure(redis_url=url, adapter="celery")
    with testing.disable():
        yield JobkitWorker(url, redis.Redis.from_url(url), _jobkit_worker_process)
    use_settings(saved)
