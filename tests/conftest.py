"""Real services for the suite: a private redis-server and real `jobkit worker` processes.

Both are started once per session, on free ports and temp dirs, and stopped by PID.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from aiosmtpd.controller import Controller

import jobkit

ROOT = Path(__file__).resolve().parent.parent
JOBKIT = Path(sys.executable).with_name("jobkit")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate: Callable[[], object], timeout: float = 15.0, every: float = 0.05,
             what: str = "condition") -> object:
    """Poll until `predicate()` is truthy; fail the test with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def stop_process(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left, by PID."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private redis-server for this session; yields its URL (never the shared 6379)."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not on PATH: run the tests with `make test`"
    workdir = tmp_path_factory.mktemp("redis")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir), "--logfile", str(workdir / "redis.log")],
        start_new_session=True,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    wait_for(lambda: _pings(client), what="redis-server to answer")
    os.environ["REDIS_URL"] = url
    jobkit.configure()
    yield url
    stop_process(proc)


def _pings(client: redis.Redis) -> bool:
    try:
        return client.ping()
    except redis.ConnectionError:
        return False


@pytest.fixture
def r(redis_server: str) -> Iterator[redis.Redis]:
    """A client on the private server, emptied before each test."""
    client = redis.Redis.from_url(redis_server, decode_responses=True)
    client.flushdb()
    jobkit.use_adapter(None)
    jobkit.configure()
    yield client


class Worker:
    """A real `jobkit worker` subprocess and its log."""

    def __init__(self, proc: subprocess.Popen, log: Path) -> None:
        self.proc = proc
        self.log = log

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, grace: float = 10.0) -> None:
        stop_process(self.proc, grace)


def start_worker(redis_url: str, log: Path, *args: str, env: dict | None = None) -> Worker:
    """Start `jobkit worker` from the repo root and wait until Celery says it is ready."""
    environ = {**os.environ, "REDIS_URL": redis_url, "JOBKIT_POLL_INTERVAL": "0.2",
               "PYTHONUNBUFFERED": "1", **(env or {})}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(JOBKIT), "worker", "-l", "INFO", "-n", f"test-{uuid.uuid4().hex[:8]}@%h",
             "--without-gossip", "--without-mingle", *args],
            cwd=ROOT, env=environ, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    worker = Worker(proc, log)
    try:
        wait_for(lambda: " ready." in worker.output() or proc.poll() is not None,
                 timeout=30, what="the worker to be ready")
    except BaseException:
        worker.stop()
        raise
    if proc.poll() is not None:
        pytest.fail(f"worker exited early:\n{worker.output()}")
    return worker


class SmtpServer:
    """A real SMTP server (aiosmtpd) in the test process that keeps what it accepts.

    Recipients at `bounce.example` get 550; a message whose subject holds "[flaky]" gets a 451
    the first time it is seen (by Message-ID), then is accepted.
    """

    def __init__(self) -> None:
        self.received: list[Any] = []
        self.seen_flaky: set[str] = set()
        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    async def handle_RCPT(self, server, session, envelope, address, options):  # noqa: N802
        if address.endswith("@bounce.example"):
            return f"550 5.1.1 <{address}>: no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        if "[flaky]" in (message["Subject"] or "") and message["Message-ID"] not in \
                self.seen_flaky:
            self.seen_flaky.add(message["Message-ID"])
            return "451 4.3.0 try again later"
        self.received.append(message)
        return "250 accepted"


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.controller.start()
    yield server
    server.controller.stop()


@pytest.fixture
def smtp(smtp_server: SmtpServer) -> SmtpServer:
    smtp_server.received.clear()
    return smtp_server


@pytest.fixture(scope="session")
def worker(redis_server: str, smtp_server: SmtpServer,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """One worker for the session, consuming the four conventional queues; its mail goes to
    the session's SMTP server."""
    late_code = tmp_path_factory.mktemp("late_code")
    proc = start_worker(redis_server, tmp_path_factory.mktemp("worker") / "worker.log",
                        "-c", "2", env={"PYTHONPATH": f"{late_code}:{ROOT}",
                                        "SMTP_URL": smtp_server.url})
    proc.late_code = late_code
    yield proc
    proc.stop()


def pytest_configure(config: pytest.Config) -> None:
    """Point tests/models.py at a SQLite file and PostgreSQL before any test module imports it.

    PostgreSQL runs on this machine kind (standard port, trust auth); JOBKIT_TEST_PG_URL
    overrides. The suite's table has a unique suffix and is dropped at the end.
    """
    db_dir = tempfile.mkdtemp(prefix="jobkit-test-db-")
    config.jobkit_db_dir = db_dir
    os.environ["JOBKIT_TEST_SQLITE_URL"] = f"sqlite:///{db_dir}/app.db"
    os.environ.setdefault("JOBKIT_TEST_PG_URL",
                          "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    os.environ["JOBKIT_TEST_TABLE_SUFFIX"] = uuid.uuid4().hex[:10]


@pytest.fixture(scope="session", autouse=True)
def databases(pytestconfig: pytest.Config) -> Iterator[None]:
    """The models' tables, created for the session and dropped after it."""
    from tests import models

    models.SqliteBase.metadata.create_all(models.sqlite_engine)
    models.PgBase.metadata.create_all(models.pg_engine)
    yield
    models.PgBase.metadata.drop_all(models.pg_engine)
    models.pg_engine.dispose()
    shutil.rmtree(pytestconfig.jobkit_db_dir, ignore_errors=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """Attach the tail of the worker's log to a failed test that used a worker."""
    outcome = yield
    report = outcome.get_result()
    worker = item.funcargs.get("worker") if hasattr(item, "funcargs") else None
    if report.failed and isinstance(worker, Worker):
        report.sections.append(("worker log (tail)", worker.output()[-4000:]))
