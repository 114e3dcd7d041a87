"""jobkit's pytest plugin (installed with the package): fixtures for testing jobs.

- `jobkit_fake`, `jobkit_inline`, `jobkit_disable`: the three modes, for one test.
- `jobkit_outbox`: the mail delivered in the test (test delivery method), emptied first.
- `perform_enqueued_jobs`: fake mode where every job is performed as it is enqueued.
- `jobkit_advance`: move scheduled jobs forward without sleeping (`jobkit_advance(3600)`).
- `jobkit_worker`: a private redis-server and a real worker for integration tests, started once
  per session (from the test run's root directory) and emptied between tests, once the worker
  is idle. Override the session fixture `jobkit_worker_env` to give that worker environment
  variables of its own.
- `jobkit_embedded_worker`: the same, with the worker in the test process (a thread-pool worker
  in a thread, celery.contrib.testing's start_worker) on a private Redis of its own: starts in
  a fraction of a second, for tests that need a worker but not a separate process.

A wait on either that times out says which jobs failed meanwhile (class, message, backtrace from
the retry and dead sets) and shows the worker's log of the test.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
import redis
from celery import Celery
from celery import _state as celery_state
from celery.contrib.testing.worker import start_worker
from celery.worker import WorkController
from celery.worker import state as worker_state

from jobkit import api, keys, testing
from jobkit.adapters.base import Adapter
from jobkit.config import configure, current_settings, use_settings
from jobkit.job_sets import DeadSet, JobEntry, RetrySet
from jobkit.testing_services import RedisServer, WorkerProcess, wait_until
from jobkit.worker.app import create_app
from jobkit.worker.pools import POOL_CLASSES

#: Lines of the worker's log shown when a wait times out.
LOG_LINES = 40


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


class _WorkerHandle:
    """Waits shared by both worker fixtures; a timeout tells what failed and what was logged."""

    redis_url: str
    client: redis.Redis

    def _pid(self) -> int:
        raise NotImplementedError

    def _gone(self) -> str | None:
        """Why the worker cannot be running jobs, if it cannot."""
        return None

    def log_text(self) -> str:
        """The worker's log since this test began."""
        raise NotImplementedError

    def wait_for(self, predicate: Callable[[], object], timeout: float = 15.0,
                 what: str = "condition") -> object:
        """Poll `predicate()` until truthy and return its value; on timeout, TimeoutError
        with the failed jobs and the worker's log."""
        try:
            return wait_until(predicate, timeout=timeout, what=what)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}{self.report()}") from None

    def idle(self, timeout: float = 15.0) -> None:
        """Wait until every queue is empty and no job is in flight (scheduled and retrying
        jobs are not waited for: move them with `jobkit_advance`)."""
        def quiet() -> bool:
            busy = any(queue.size() for queue in api.queues(self.client))
            return not busy and pid_idle(self.client, self._pid())

        self.wait_for(quiet, timeout=timeout, what="the worker to go idle")

    def failures(self) -> list[JobEntry]:
        """The jobs of this test that failed: waiting to retry, then dead (the database is
        emptied before each test)."""
        return [entry for _, entry in self._failed()]

    def _failed(self) -> list[tuple[str, JobEntry]]:
        return [*(("retry", entry) for entry in RetrySet(self.client)),
                *(("dead", entry) for entry in DeadSet(self.client))]

    def report(self) -> str:
        """The failed jobs (class, message, backtrace) and the tail of the worker's log."""
        try:  # the timeout must still be told if Redis is what went away
            failed = self._failed()
        except redis.RedisError as exc:
            failed, parts = [], [f"the retry and dead sets could not be read: {exc}"]
        else:
            parts = [f"jobs that failed ({len(failed)}):" if failed
                     else "no job failed (the retry and dead sets are empty)"]
        parts.extend(_describe(where, entry) for where, entry in failed)
        gone = self._gone()
        if gone:
            parts.insert(0, gone)
        try:
            lines = self.log_text().splitlines()[-LOG_LINES:]
        except OSError as exc:
            lines = [f"(the log could not be read: {exc})"]
        parts.append(f"worker log (last {len(lines)} lines of this test):")
        parts.extend(f"  {line}" for line in lines)
        return "\n" + "\n".join(parts)


def _describe(where: str, entry: JobEntry) -> str:
    head = (f"  {entry.job_class} {entry.job_id} ({where} set, retry_count "
            f"{entry.retry_count}): {entry.error_class}: {entry.error_message}")
    lines = (line for chunk in entry.backtrace for line in chunk.splitlines())
    return "\n".join([head, *(f"    {line}" for line in lines)])


@dataclass
class JobkitWorker(_WorkerHandle):
    """What `jobkit_worker` gives a test: the broker URL, a client, the worker process."""

    redis_url: str
    client: redis.Redis
    process: WorkerProcess
    log_start: int = 0  # where this test's part of the worker's log begins

    def _pid(self) -> int:
        return self.process.proc.pid

    def _gone(self) -> str | None:
        return _exited(self.process)

    def log_text(self) -> str:
        with self.process.log.open("rb") as log:
            log.seek(self.log_start)
            return log.read().decode(errors="replace")


def worker_idle(client: redis.Redis, worker: WorkerProcess) -> bool:
    """The worker holds no job (running or prefetched) and none waits in a queue it fetches
    from, as its heartbeat says. Found by PID, since a test may leave heartbeats of its own."""
    return pid_idle(client, worker.proc.pid)


def pid_idle(client: redis.Redis, pid: int) -> bool:
    """`worker_idle` for the worker process (or embedded worker's process) `pid`."""
    return not any(_has_work(client, process) for process in api.processes(client)
                   if process.pid == pid)


def _has_work(client: redis.Redis, process: api.Process) -> bool:
    fetched = (api.Queue(name, client) for name in process.queues)
    return bool(process.in_flight) or any(q.size() and not q.paused() for q in fetched)


def flush_when_idle(redis_url: str, worker: WorkerProcess | None, timeout: float = 30.0
                    ) -> None:
    """Empty the database but `worker`'s heartbeat, once `worker` is idle: a job still
    running would otherwise write its results, retry or dead-set entry into the next test's
    empty database. (Its own client replies in bytes: a test may leave keys and members
    that are not UTF-8.)"""
    if worker is not None and (gone := _exited(worker)):
        tail = "\n".join(f"  {line}" for line in worker.output().splitlines()[-LOG_LINES:])
        raise RuntimeError(f"{gone}: an earlier test stopped it? Start a worker of your own "
                           f"(jobkit.testing_services.WorkerProcess) to kill.\n"
                           f"its log (last lines):\n{tail}")
    with redis.Redis.from_url(redis_url) as client:
        if worker is not None:
            try:
                wait_until(lambda: worker_idle(client, worker), timeout=timeout,
                           what="the worker to finish the previous test's jobs")
            except TimeoutError as exc:
                raise TimeoutError(f"{exc}; {_held(client, worker.proc.pid)}. An earlier test "
                                   "left them running: wait for its jobs in it (`.idle()`) or "
                                   "give a job that may hang a `time_limit`") from None
            ids = [process.id for process in api.processes(client)
                   if process.pid == worker.proc.pid]
        else:
            ids = []
        client.register_script(_FLUSH_BUT_MEMBERSHIP)(
            args=[keys.PROCESSES, keys.heartbeat(""), *ids])


# Every key but the session worker's membership (ARGV: the processes set, the heartbeat key
# prefix, then its process ids): a plain FLUSHDB made it find its heartbeat gone and log, in
# every test (so in each failure report), that it had been taken for dead.
_FLUSH_BUT_MEMBERSHIP = """
local keep, mine = {}, {}
for i = 3, #ARGV do
  mine[ARGV[i]] = true
  keep[ARGV[2] .. ARGV[i]] = true
end
for _, key in ipairs(redis.call('KEYS', '*')) do
  if key ~= ARGV[1] and not keep[key] then redis.call('UNLINK', key) end
end
for _, id in ipairs(redis.call('SMEMBERS', ARGV[1])) do
  if not mine[id] then redis.call('SREM', ARGV[1], id) end
end
"""


def _exited(worker: WorkerProcess) -> str | None:
    code = worker.proc.poll()
    return None if code is None else (
        f"the session's worker (pid {worker.proc.pid}) is not running: it exited with code {code}")


def _held(client: redis.Redis, pid: int) -> str:
    """What the worker `pid` holds, as its heartbeat says, for the timeout above."""
    jobs = [f"{job.job_class} {job.job_id}" for process in api.processes(client)
            if process.pid == pid for job in process.in_flight]
    queued = [f"{queue.name} ({queue.size()})" for queue in api.queues(client) if queue.size()]
    return (f"it holds {', '.join(jobs) or 'no job'}; jobs waiting in queues: "
            f"{', '.join(queued) or 'none'}")


def serving(server: RedisServer) -> str:
    """The URL of a session's redis-server, started again (same port, empty) if a test killed
    it, so one test's dead Redis does not error every later test; the worker reconnects."""
    if server.proc.poll() is not None:
        logging.getLogger(__name__).warning(
            "the session's redis-server on port %s had exited (code %s): started again, empty",
            server.port, server.proc.returncode)
        server.start()
    return server.url


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
                            env=_with_import_path(request.config, jobkit_worker_env),
                            log=tmp_path_factory.mktemp("jobkit_worker") / "worker.log")
    request.config.stash[SESSION_WORKER] = process
    yield process
    del request.config.stash[SESSION_WORKER]
    process.stop()


def _with_import_path(config: pytest.Config, env: dict[str, str]) -> dict[str, str]:
    """`env` with pytest's `pythonpath` option in front of its PYTHONPATH (or the process's):
    the worker must import the jobs the tests import (a src layout), whatever
    `jobkit_worker_env` adds."""
    paths = [str(path) for path in config.getini("pythonpath")]
    if not paths:
        return env
    given = env.get("PYTHONPATH", os.environ.get("PYTHONPATH"))
    return {**env, "PYTHONPATH": os.pathsep.join([*paths, *filter(None, [given])])}


@pytest.fixture
def jobkit_worker(_jobkit_redis_server: RedisServer, _jobkit_worker_process: WorkerProcess,
                  monkeypatch: pytest.MonkeyPatch) -> Iterator[JobkitWorker]:
    url = serving(_jobkit_redis_server)
    flush_when_idle(url, _jobkit_worker_process)
    monkeypatch.setenv("REDIS_URL", url)
    saved = current_settings()
    configure(redis_url=url, adapter="celery")
    with testing.disable():
        yield JobkitWorker(url, redis.Redis.from_url(url), _jobkit_worker_process,
                           _jobkit_worker_process.log.stat().st_size)
    use_settings(saved)


@dataclass
class JobkitEmbeddedWorker(_WorkerHandle):
    """What `jobkit_embedded_worker` gives a test: the broker URL, a client, and Celery's
    WorkController running jobkit's app in a thread of the test process."""

    redis_url: str
    client: redis.Redis
    controller: WorkController
    log_lines: list[str] = field(default_factory=list)

    def _pid(self) -> int:
        return os.getpid()

    def log_text(self) -> str:
        return "\n".join(self.log_lines)


class _LogLines(logging.Handler):
    """Keeps the embedded worker's log records of one test (what a log file would hold)."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__(logging.INFO)
        self.lines = lines
        self.setFormatter(logging.Formatter("[%(asctime)s: %(levelname)s/%(threadName)s] "
                                            "%(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(scope="session")
def _jobkit_embedded_redis_server() -> Iterator[RedisServer]:
    """A redis-server of its own: the session worker must not take the embedded one's jobs."""
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def jobkit_embedded_concurrency() -> int:
    """Threads of the embedded worker's pool: override this fixture to change it."""
    return 2


#: Seconds the embedded worker's stop waits for its running jobs (a warm stop, as a real
#: worker's); a job still running then fails the test's teardown (a thread cannot be killed).
EMBEDDED_STOP_GRACE = 10.0


@pytest.fixture
def jobkit_embedded_worker(_jobkit_embedded_redis_server: RedisServer,
                           jobkit_embedded_concurrency: int) -> Iterator[JobkitEmbeddedWorker]:
    """jobkit's app on the `threads` pool, in a thread of the test process, on an emptied
    private Redis; stopped (its jobs handed back) when the test ends."""
    with embedded_worker(serving(_jobkit_embedded_redis_server), jobkit_embedded_concurrency,
                         EMBEDDED_STOP_GRACE) as worker:
        yield worker


@contextmanager
def embedded_worker(url: str, concurrency: int = 2, stop_grace: float = EMBEDDED_STOP_GRACE
                    ) -> Iterator[JobkitEmbeddedWorker]:
    """What `jobkit_embedded_worker` runs: the database of `url` emptied, the worker started;
    on exit, its running jobs waited for (`stop_grace` s), the worker stopped, the logging
    state start_worker changes put back. RuntimeError naming the jobs still running after
    `stop_grace`: they run on in the test process, into the next test."""
    flush_when_idle(url, None)
    root, task_logger = logging.getLogger(), logging.getLogger("celery.task")
    level = root.level
    task_state = task_logger.level, list(task_logger.handlers), task_logger.propagate
    log_env = {name: os.environ.get(name) for name in ("CELERY_LOG_LEVEL", "CELERY_LOG_FILE")}
    lines: list[str] = []
    handler = _LogLines(lines)
    root.addHandler(handler)
    try:
        with embedded_app(url, pool="threads") as app:  # what its heartbeat shows
            worker = cast(AbstractContextManager[WorkController], start_worker(  # typed Iterable
                app, pool=POOL_CLASSES["threads"], concurrency=concurrency,
                loglevel="INFO", perform_ping_check=False, shutdown_timeout=30))
            with worker as controller:
                yield JobkitEmbeddedWorker(url, redis.Redis.from_url(url), controller, lines)
                running = _still_running(stop_grace)
            if running:
                raise RuntimeError(
                    f"jobkit_embedded_worker: {len(running)} job(s) still running "
                    f"{stop_grace:g}s after the test: {', '.join(running)}. A thread cannot be "
                    "stopped: the job runs on in the test process (into the next tests, and "
                    "pytest's exit waits for it). Wait for it in the test "
                    "(jobkit_embedded_worker.idle()), or use jobkit_worker.")
    finally:
        root.removeHandler(handler)
        # start_worker's logging set-up is for good: the root level, the `celery.task` logger
        # (no longer propagating: later tests' caplog missed task loggers' records; holding
        # this test's handlers) and CELERY_LOG_* in the environment.
        root.setLevel(level)
        task_logger.level, task_logger.handlers, task_logger.propagate = task_state
        for name, value in log_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _still_running(grace: float) -> list[str]:
    """Wait up to `grace` s for the embedded worker's running jobs to end; the ones left."""
    def names() -> list[str]:
        return [f"{request.name}[{request.id}]" for request in list(worker_state.active_requests)]

    with contextlib.suppress(TimeoutError):
        wait_until(lambda: not names(), timeout=grace, what="the running jobs to end")
    return names()


@contextmanager
def embedded_app(redis_url: str, **settings: Any) -> Iterator[Celery]:
    """jobkit's Celery app on `redis_url`, for Celery's embedded worker (`celery_app` of
    celery.contrib.pytest, start_worker). Meanwhile jobkit's settings (with `settings` on top,
    as `jobkit.configure` takes them) and REDIS_URL point there (adapter `celery`, disable
    mode), so `perform_later` reaches that worker; restored on exit. The app leaves the root
    logger's handlers alone (they are the test runner's)."""
    saved, saved_env = current_settings(), os.environ.get("REDIS_URL")
    # Celery's current and default apps: start_worker makes this app both, for good; a later
    # test's @shared_task then sent to this app's Redis, long gone.
    saved_apps = celery_state._tls.current_app, celery_state.default_app
    os.environ["REDIS_URL"] = redis_url
    try:
        configure(**{**settings, "redis_url": redis_url, "adapter": "celery"})
        app = create_app(current_settings())
        app.conf.worker_hijack_root_logger = False
        with testing.disable():
            yield app
    finally:
        celery_state._set_current_app(saved_apps[0])
        celery_state.set_default_app(saved_apps[1])
        use_settings(saved)
        if saved_env is None:
            os.environ.pop("REDIS_URL", None)
        else:
            os.environ["REDIS_URL"] = saved_env
