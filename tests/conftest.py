"""Real services for the suite: a private redis-server and real `jobkit worker` processes.

The session's redis-server and worker are the pytest plugin's (`jobkit_worker`), so a run
starts one of each; they use free ports and temp dirs and are stopped by PID.
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
from jobkit.pytest_plugin import SESSION_WORKER, flush_when_idle
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
def redis_server(_jobkit_redis_server: RedisServer) -> Iterator[str]:
    """The session's private redis-server (never the shared 6379), in REDIS_URL for the
    session; yields its URL."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("REDIS_URL", _jobkit_redis_server.url)
        jobkit.configure()
        yield _jobkit_redis_server.url


@pytest.fixture
def r(redis_server: str, pytestconfig: pytest.Config) -> Iterator[redis.Redis]:
    """A client on the private server, emptied before each test once the session worker (if
    started) has finished the previous test's jobs."""
    flush_when_idle(redis_server, pytestconfig.stash.get(SESSION_WORKER, None))
    client = redis.Redis.from_url(redis_server, decode_responses=True)
    jobkit.use_adapter(None)
    jobkit.configure()
    yield client


@pytest.fixture(scope="module")
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of the test module's own, for tests that start their own workers (the
    session worker never sees it); stopped after the module."""
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture
def own_client(own_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
               ) -> Iterator[redis.Redis]:
    """A client on `own_redis`, emptied, with REDIS_URL and jobkit's settings pointing at it
    for the test (the module's workers are started and stopped inside its tests)."""
    monkeypatch.setenv("REDIS_URL", own_redis.url)
    saved = jobkit.config.current_settings()
    jobkit.use_adapter(None)
    jobkit.configure()
    client = redis.Redis.from_url(own_redis.url)
    client.flushall()
    yield client
    jobkit.config.use_settings(saved)


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
def late_code(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory on the session worker's PYTHONPATH, empty when it starts: code written
    there later is code deployed to the worker after the web process."""
    return tmp_path_factory.mktemp("late_code")


@pytest.fixture(scope="session")
def jobkit_worker_env(smtp_server: SmtpServer, late_code: Path) -> dict[str, str]:
    """The session worker (the plugin's) sends its mail to the session's SMTP server and
    imports from `late_code` too."""
    return {"PYTHONPATH": os.pathsep.join([str(late_code), str(ROOT)]),
            "SMTP_URL": smtp_server.url}


@pytest.fixture(scope="session")
def worker(redis_server: str, _jobkit_worker_process: Worker) -> Worker:
    """The session's worker (the one `jobkit_worker` uses), consuming the four conventional
    queues of config/jobkit.yml."""
    return _jobkit_worker_process


DB_DIR = pytest.StashKey[str]()
TEST_ENV = pytest.StashKey[pytest.MonkeyPatch]()


def pytest_configure(config: pytest.Config) -> None:
    """Point tests/models.py at a SQLite file and a table suffix before any test module imports
    it (the workers inherit both); undone by `pytest_unconfigure`.

    PostgreSQL runs on this machine kind (standard port, trust auth); JOBKIT_TEST_PG_URL
    overrides (tests/models.py). The suite's table has a unique suffix and is dropped at the end.
    """
    db_dir = config.stash[DB_DIR] = tempfile.mkdtemp(prefix="jobkit-test-db-")
    env = config.stash[TEST_ENV] = pytest.MonkeyPatch()
    env.setenv("JOBKIT_TEST_SQLITE_URL", f"sqlite:///{db_dir}/app.db")
    env.setenv("JOBKIT_TEST_TABLE_SUFFIX", uuid.uuid4().hex[:10])


def pytest_unconfigure(config: pytest.Config) -> None:
    config.stash[TEST_ENV].undo()
    shutil.rmtree(config.stash[DB_DIR], ignore_errors=True)


@pytest.fixture(scope="session")
def sqlite_tables() -> None:
    """The SQLite models' tables (tests/models.py, tests/example_app.py), in the session's
    file, which goes with the session."""
    from tests import example_app, models

    assert example_app.Log.__table__ is not None  # its table is created with the others
    models.SqliteBase.metadata.create_all(models.sqlite_engine)


@pytest.fixture(scope="session")
def pg_tables() -> Iterator[None]:
    """The PostgreSQL models' tables, created for the session and dropped after it: only the
    tests that ask for them need a running PostgreSQL."""
    from tests import models

    models.PgBase.metadata.create_all(models.pg_engine)
    yield
    models.PgBase.metadata.drop_all(models.pg_engine)
    models.pg_engine.dispose()


@pytest.fixture(scope="module")
def django_db() -> Iterator[None]:
    """Django on SQLite in memory with the tests/django_app Post table (for the module)."""
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            INSTALLED_APPS=["tests.django_app"],
            DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
            DEFAULT_AUTO_FIELD="django.db.models.AutoField",
        )
        django.setup()
    from django.db import connection

    from tests.django_app.models import Post

    with connection.schema_editor() as editor:
        editor.create_model(Post)
    yield
    with connection.schema_editor() as editor:
        editor.delete_model(Post)


@pytest.fixture(scope="session")
def databases(sqlite_tables: None, pg_tables: None) -> None:
    """Every model's table, on both databases."""


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """Attach the tail of the worker's log to a failed test that used a worker."""
    outcome = yield
    report = outcome.get_result()
    worker = item.funcargs.get("worker") if hasattr(item, "funcargs") else None
    if report.failed and isinstance(worker, Worker):
        report.sections.append(("worker log (tail)", worker.output()[-4000:]))


@pytest.fixture
def make_user(sqlite_tables: None) -> Iterator[Callable[..., Any]]:
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
