"""pytest-celery's `celery_setup` on local nodes: no Docker.

pytest-celery 1.x builds its broker, backend and worker nodes from Docker containers by default.
This plugin overrides its cluster fixtures with nodes around local processes, the same ones the
`jobkit_worker` fixture uses: the session's private `redis-server` as the broker, and the
session's real `jobkit worker` process as the worker. No result backend: jobkit keeps what a
job leaves in Redis itself (the retry and dead sets), not in Celery's result store.

Enable it in the top conftest.py:  pytest_plugins = ["jobkit.contrib.pytest_celery"]

`celery_setup.app` is jobkit's Celery app on that broker, and for the test jobkit's settings
point at it (adapter `celery`, disable mode), so `perform_later` reaches the worker.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import celery
import pytest
import redis
from celery import Celery

try:
    from pytest_celery import (
        CeleryBrokerCluster,
        CeleryTestBroker,
        CeleryTestSetup,
        CeleryTestWorker,
        CeleryWorkerCluster,
    )
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise ImportError("jobkit.contrib.pytest_celery needs pytest-celery 1.x "
                      f"(pip install 'pytest-celery>=1,<2'): {exc}") from exc

from jobkit import testing
from jobkit.config import configure, current_settings, use_settings
from jobkit.pytest_plugin import flush_when_idle, serving
from jobkit.testing_services import RedisServer, WorkerProcess
from jobkit.worker.app import create_app

__all__ = ["JobkitTestSetup", "LocalJobkitWorker", "LocalRedisBroker", "SharedNodeError"]


class SharedNodeError(NotImplementedError):
    """kill/restart on a node every test of the session shares."""


def _shared(what: str) -> SharedNodeError:
    return SharedNodeError(
        f"{what}: the local node is the session's, shared by every test; start one of your "
        "own (jobkit.testing_services.RedisServer / WorkerProcess) to kill or restart it")


class LocalRedisBroker(CeleryTestBroker):
    """A broker node around a local `redis-server` (jobkit.testing_services.RedisServer)."""

    def __init__(self, server: RedisServer, app: Celery | None = None) -> None:
        super().__init__(None, app)  # pyright: ignore[reportArgumentType]  no container
        self.server = server
        self.log_start = _size(Path(server.dir) / "redis.log")  # the node is the test's

    def ready(self) -> bool:
        try:
            return bool(self.server.client.ping())
        except redis.ConnectionError:
            return False

    def config(self, *args: Any, **kwargs: Any) -> dict:
        return {"url": self.server.url, "host_url": self.server.url}

    def logs(self) -> str:
        """The server's log since this test began (it serves the whole session)."""
        return _read_from(Path(self.server.dir) / "redis.log", self.log_start)

    def name(self) -> str:
        return f"redis-server:{self.server.port}"

    def hostname(self) -> str:
        return "127.0.0.1"

    def kill(self, signal: str | int = "SIGKILL", reload_container: bool = True) -> None:
        raise _shared("kill")

    def restart(self, reload_container: bool = True, force: bool = False) -> None:
        raise _shared("restart")

    def teardown(self) -> None:
        """Nothing: the session fixture stops the server."""


class LocalJobkitWorker(CeleryTestWorker):
    """A worker node around a real `jobkit worker` process (jobkit.testing_services)."""

    def __init__(self, process: WorkerProcess, app: Celery, queue: str = "default") -> None:
        super().__init__(None, app)  # pyright: ignore[reportArgumentType]  no container
        self.process = process
        self.queue = queue
        self.log_start = _size(process.log)  # the node is the test's, the process the session's

    @property
    def version(self) -> str:
        return celery.__version__  # the worker runs on this interpreter

    @property
    def log_level(self) -> str:
        return "INFO"

    @property
    def worker_name(self) -> str:
        return "celery"

    @property
    def worker_queue(self) -> str:
        return self.queue

    def hostname(self) -> str:
        """The node name the worker answers control commands with (`inspect`, `ping`)."""
        return _node_name(self.process) or f"celery@{socket.gethostname()}"

    def ready(self) -> bool:
        return self.process.proc.poll() is None and " ready." in self.process.output()

    def config(self, *args: Any, **kwargs: Any) -> dict:
        url = self.app.conf.broker_url if self.app else ""
        return {"url": url, "host_url": url}

    def logs(self) -> str:
        """The worker's log since this test began: `assert_log_exists` and `wait_for_log`
        must not find an earlier test's lines."""
        return _read_from(self.process.log, self.log_start)

    def name(self) -> str:
        return f"jobkit worker (pid {self.process.proc.pid})"

    def get_running_processes_info(self, columns: list[str] | None = None,
                                   filters: dict[str, str] | None = None) -> list[dict]:
        raise NotImplementedError(
            "a local worker node runs no container to query; its process is "
            f"node.process.proc (pid {self.process.proc.pid})")

    def kill(self, signal: str | int = "SIGKILL", reload_container: bool = True) -> None:
        raise _shared("kill")

    def restart(self, reload_container: bool = True, force: bool = False) -> None:
        raise _shared("restart")

    def teardown(self) -> None:
        """Nothing: the session fixture stops the worker."""


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _read_from(path: Path, offset: int) -> str:
    with path.open("rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


def _node_name(process: WorkerProcess) -> str | None:
    """`name@host` from the worker's `-n` argument (WorkerProcess passes one)."""
    args = list(process.proc.args) if isinstance(process.proc.args, list | tuple) else []
    names = [str(args[i + 1]) for i, arg in enumerate(args[:-1]) if arg == "-n"]
    return names[-1].replace("%h", socket.gethostname()) if names else None


class JobkitTestSetup(CeleryTestSetup):
    """`celery_setup` for jobkit: its app is jobkit's, made from the test's settings."""

    @classmethod
    def create_setup_app(cls, celery_setup_config: dict, celery_setup_app_name: str) -> Celery:
        app = create_app(current_settings())
        app.conf.update(celery_setup_config)  # broker_url: the broker node's
        cls.update_app_config(app)
        return app

    def ready(self, ping: bool = False, control: bool = False, docker: bool = False) -> bool:
        """As pytest-celery's, with no Docker check by default; `ping=True` needs a result
        backend, which jobkit's app has not (`app.control.ping(limit=1)` asks the worker)."""
        if ping:
            raise ValueError("ready(ping=True) waits for a task result and jobkit's app has no "
                             "result backend; ask the worker with app.control.ping(limit=1)")
        return super().ready(ping=False, control=control, docker=docker)


@pytest.fixture
def celery_setup_cls() -> type[CeleryTestSetup]:
    return JobkitTestSetup


@pytest.fixture
def celery_broker(_jobkit_redis_server: RedisServer) -> LocalRedisBroker:
    """The session's private redis-server (the `jobkit_worker` one), as a broker node."""
    return LocalRedisBroker(_jobkit_redis_server)


@pytest.fixture
def celery_broker_cluster(celery_broker: LocalRedisBroker) -> CeleryBrokerCluster:
    return CeleryBrokerCluster(celery_broker)


@pytest.fixture
def celery_backend_cluster() -> None:
    """No result backend (see the module's docstring)."""
    return None


@pytest.fixture
def celery_setup_app(celery_setup_cls: type[CeleryTestSetup], celery_setup_config: dict,
                     celery_setup_name: str, _jobkit_redis_server: RedisServer,
                     _jobkit_worker_process: WorkerProcess,
                     monkeypatch: pytest.MonkeyPatch) -> Iterator[Celery]:
    """jobkit's app on the broker node; for the test, the Redis emptied once the session worker
    is idle, and jobkit's settings and REDIS_URL on it, in disable mode (as `jobkit_worker`)."""
    url = serving(_jobkit_redis_server)
    flush_when_idle(url, _jobkit_worker_process)
    monkeypatch.setenv("REDIS_URL", url)
    saved = current_settings()
    configure(redis_url=url, adapter="celery")
    try:
        with testing.disable():
            yield celery_setup_cls.create_setup_app(celery_setup_config, celery_setup_name)
    finally:
        use_settings(saved)


@pytest.fixture
def celery_worker(_jobkit_worker_process: WorkerProcess, celery_setup_app: Celery
                  ) -> LocalJobkitWorker:
    """The session's real `jobkit worker` (the `jobkit_worker` one), as a worker node. This
    replaces pytest-celery's `celery_worker` (a Docker worker), which itself hides
    celery.contrib.pytest's embedded one (docs/pytest.md)."""
    return LocalJobkitWorker(_jobkit_worker_process, celery_setup_app)


@pytest.fixture
def celery_worker_cluster(celery_worker: LocalJobkitWorker) -> CeleryWorkerCluster:
    return CeleryWorkerCluster(celery_worker)

