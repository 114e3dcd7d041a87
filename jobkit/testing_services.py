"""Real services for tests: a private redis-server and `jobkit worker` processes.

Used by the pytest plugin's `jobkit_worker` fixture and by jobkit's own suite. Everything runs
on free ports and temp dirs, and is stopped by PID.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

__all__ = ["RedisServer", "WorkerProcess", "free_port", "stop_process", "wait_until"]

JOBKIT = Path(sys.executable).with_name("jobkit")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], Any], timeout: float = 15.0, every: float = 0.05,
               what: str = "condition") -> Any:
    """Poll until `predicate()` is truthy; TimeoutError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def stop_process(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left, by PID."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


class RedisServer:
    """A private redis-server on a free port, data in a temp dir."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not on PATH (Debian: apt-get install "
                               "redis-server)")
        self.dir = tempfile.mkdtemp(prefix="jobkit-redis-")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--logfile",
             str(Path(self.dir) / "redis.log")], start_new_session=True)
        self.client = redis.Redis.from_url(self.url)
        wait_until(self._pings, what="redis-server to answer")

    def _pings(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.ConnectionError:
            return False

    def stop(self) -> None:
        stop_process(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


class WorkerProcess:
    """A real `jobkit worker` subprocess, ready when started, with its log in a file."""

    def __init__(self, redis_url: str, *args: str, cwd: str | os.PathLike | None = None,
                 env: dict[str, str] | None = None, log: Path | None = None) -> None:
        self.log = log or Path(tempfile.mkdtemp(prefix="jobkit-worker-")) / "worker.log"
        environ = {**os.environ, "REDIS_URL": redis_url, "JOBKIT_POLL_INTERVAL": "0.2",
                   "PYTHONUNBUFFERED": "1", **(env or {})}
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [str(JOBKIT), "worker", "-l", "INFO", "-n", f"test-{uuid.uuid4().hex[:8]}@%h",
                 "--without-gossip", "--without-mingle", *args],
                cwd=cwd or os.getcwd(), env=environ, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        try:
            wait_until(lambda: " ready." in self.output() or self.proc.poll() is not None,
                       timeout=30, what="the worker to be ready")
        except BaseException:
            self.stop()
            raise
        if self.proc.poll() is not None:
            raise RuntimeError(f"worker exited early:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, grace: float = 10.0) -> None:
        stop_process(self.proc, grace)
