"""Real services for the suite: a private redis-server and real `jobkit worker` processes.

Both are started once per session, on free ports and temp dirs, and stopped by PID.
"""

from __future__ import annotations

import email
import email.policy
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from aiosmtpd.controller import Controller

import jobkit
from jobkit.testing_services import RedisServer, WorkerProcess, free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
Worker = WorkerProcess


def wait_for(predicate: Callable[[], object], timeout: float = 15.0, every: float = 0.05,
             what: str = "condition") -> object:
    """Poll until `predicate()` is truthy; fail the test with `what` after `timeout` seconds."""
    try:
        return wait_until(predicate, timeout, every, what)
    except TimeoutError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """A private redis-server for this session; yields its URL (never the shared 6379)."""
    server = RedisServer()
    os.environ["REDIS_URL"] = server.url
    jobkit.configure()
    yield server.url
    server.stop()


@pytest.fixture
def r(redis_server: str) -> Iterator[redis.Redis]:
    """A client on the private server, emptied before each test."""
    client = redis.Redis.from_url(redis_server, decode_responses=True)
    client.flushdb()
    jobkit.use_adapter(None)
    jobkit.configure()
    yield client


def start_worker(redis_url: str, log: Path, *args: str, env: dict | None = None
                 ) -> WorkerProcess:
    """Start `jobkit worker` from the repo root and wait until Celery says it is ready."""
    try:
        return WorkerProcess(redis_url, *args, cwd=ROOT, env=env, log=log)
    except (RuntimeError, TimeoutError) as exc:
        pytest.fail(str(exc))


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
    from tests import example_app, models

    assert example_app.Log.__table__ is not None  # its table is created with the others
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


@pytest.fixture
def make_user() -> Iterator[Callable[..., Any]]:
    """Create saved users (SQLite, tests/models.py); deleted after the test."""
    from tests.models import SqliteSession, User

    session = SqliteSession()
    made = []

    def make(**fields: Any) -> User:
        record = User(**fields)
        session.add(record)
        session.commit()
        made.append(record)
        return record

    yield make
    session = SqliteSession()
    for record in made:
        session.delete(session.merge(record))
    session.commit()
    SqliteSession.remove()


WORKER_BOOKKEEPING = ("jobkit:processes", "jobkit:heartbeat:", "jobkit:stat:", "_kombu.")


def job_keys(client: redis.Redis) -> list[str]:
    """Keys that hold jobs or traces of an enqueue (not a running worker's own bookkeeping)."""
    keys = [k.decode() if isinstance(k, bytes) else k for k in client.keys("*")]
    return [k for k in keys if not k.startswith(WORKER_BOOKKEEPING)]
