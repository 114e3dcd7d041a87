"""jobkit's pytest plugin (installed with the package): fixtures for testing jobs.

- `jobkit_fake`, `jobkit_inline`, `jobkit_disable`: the three modes, for one test.
- `jobkit_outbox`: the mail delivered in the test (test delivery method), emptied first.
- `perform_enqueued_jobs`: fake mode where every job is performed as it is enqueued.
- `jobkit_advance`: move scheduled jobs forward without sleeping (`jobkit_advance(3600)`).
- `jobkit_worker`: a private redis-server and a real worker for integration tests, started once
  per session (from the test run's root directory) and emptied between tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import redis

from jobkit import api, keys, testing
from jobkit.config import configure, current_settings, use_settings
from jobkit.testing_services import RedisServer, WorkerProcess, wait_until


@pytest.fixture
def jobkit_fake() -> Iterator[testing.FakeAdapter]:
    with testing.fake() as adapter:
        yield adapter


def _inline_mode() -> Iterator[testing.FakeAdapter]:
    with testing.inline() as adapter:
        yield adapter


jobkit_inline = pytest.fixture(_inline_mode, name="jobkit_inline")


@pytest.fixture
def jobkit_disable() -> Iterator[object]:
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
            held = any(self.client.hlen(k) for k in self.client.keys(keys.unacked("*")))
            return not busy and not held

        wait_until(quiet, timeout=timeout, what="the worker to go idle")


@pytest.fixture(scope="session")
def _jobkit_worker_services(request: pytest.FixtureRequest) -> Iterator[tuple]:
    server = RedisServer()
    saved = current_settings()
    process = WorkerProcess(server.url, "-c", "2", cwd=str(request.config.rootpath))
    try:
        yield server, process
    finally:
        process.stop()
        server.stop()
        use_settings(saved)


@pytest.fixture
def jobkit_worker(_jobkit_worker_services: tuple, monkeypatch: pytest.MonkeyPatch
                  ) -> Iterator[JobkitWorker]:
    server, process = _jobkit_worker_services
    server.client.flushdb()
    monkeypatch.setenv("REDIS_URL", server.url)
    saved = current_settings()
    configure(redis_url=server.url, adapter="celery")
    with testing.disable():
        yield JobkitWorker(server.url, redis.Redis.from_url(server.url), process)
    use_settings(saved)
