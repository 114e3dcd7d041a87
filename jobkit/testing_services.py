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

__all__ = ["JOBKIT_COMMAND", "RedisServer", "SentinelSetup", "WorkerProcess", "free_port",
           "stop_process", "wait_until"]

# The `jobkit` command run by this interpreter, wherever pip put the script (or none).
JOBKIT_COMMAND = (sys.executable, "-m", "jobkit")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _redis_server_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not on PATH (Debian: apt-get install redis-server)")
    return binary


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

    def __init__(self, *, aof: bool = False) -> None:
        self.binary = _redis_server_binary()
        self.aof = aof
        self.dir = tempfile.mkdtemp(prefix="jobkit-redis-")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.client = redis.Redis.from_url(self.url)
        self.start()

    def start(self) -> None:
        """Start the server (again, after `kill`: with `aof`, its data comes back)."""
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes" if self.aof else "no", "--appendfsync", "always",
             "--dir", self.dir, "--logfile", str(Path(self.dir) / "redis.log")],
            start_new_session=True)
        try:
            wait_until(self._pings, what="redis-server to answer")
        except BaseException:
            self.stop()
            raise

    def kill(self) -> None:
        """Stop the server at once (SIGKILL): clients see their connections drop."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def _pings(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.ConnectionError:
            return False

    def stop(self) -> None:
        stop_process(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


class WorkerProcess:
    """A real `jobkit worker` subprocess, ready when started, with its log in a file.

    Started as `python -m jobkit` by this interpreter, so no script needs to be on PATH. A
    worker that does not get ready is stopped (its whole process group) before the error is
    raised."""

    def __init__(self, redis_url: str, *args: str, cwd: str | os.PathLike | None = None,
                 env: dict[str, str] | None = None, log: Path | None = None) -> None:
        self.log = log or Path(tempfile.mkdtemp(prefix="jobkit-worker-")) / "worker.log"
        environ = {**os.environ, "REDIS_URL": redis_url, "JOBKIT_POLL_INTERVAL": "0.2",
                   "PYTHONUNBUFFERED": "1", **(env or {})}
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [*JOBKIT_COMMAND, "worker", "-l", "INFO", "-n",
                 f"test-{uuid.uuid4().hex[:8]}@%h", "--without-gossip", "--without-mingle",
                 *args],
                cwd=cwd or os.getcwd(), env=environ, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        wait_until(lambda: " ready." in self.output() or self.proc.poll() is not None,
                   timeout=30, what="the worker to be ready")
        if self.proc.poll() is not None:
            raise RuntimeError(f"worker exited early:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, grace: float = 10.0) -> None:
        stop_process(self.proc, grace)


class SentinelSetup:
    """A master redis-server, one replica and one sentinel (`redis-server --sentinel`, the
    program Debian also installs as redis-sentinel) on free ports of 127.0.0.1, data in a temp
    dir.

    Sentinel is tuned for tests: the master is down after `down_after_ms` without answers
    and a failover times out after `failover_timeout_ms`. Ready when the replica is in sync
    and the sentinel knows the master and its replica; `url` is kombu's sentinel:// form.
    """

    def __init__(self, master_name: str = "jobkit-test", down_after_ms: int = 1000,
                 failover_timeout_ms: int = 3000) -> None:
        binary = _redis_server_binary()
        self.master_name = master_name
        self.dir = Path(tempfile.mkdtemp(prefix="jobkit-sentinel-"))
        self.procs: dict[int, subprocess.Popen] = {}  # port -> redis-server
        self.sentinel_proc: subprocess.Popen | None = None
        try:
            self.ports = [free_port(), free_port()]
            first, second = self.ports
            self._start_server(binary, first)
            self._start_server(binary, second, "--replicaof", "127.0.0.1", str(first))
            wait_until(lambda: self._replica_in_sync(second), what="the replica to be in sync")
            self.sentinel_port = free_port()
            config = self.dir / "sentinel.conf"
            config.write_text(
                f"port {self.sentinel_port}\nbind 127.0.0.1\ndir {self.dir}\n"
                f"logfile {self.dir / 'sentinel.log'}\n"
                f"sentinel monitor {master_name} 127.0.0.1 {first} 1\n"
                f"sentinel down-after-milliseconds {master_name} {down_after_ms}\n"
                f"sentinel failover-timeout {master_name} {failover_timeout_ms}\n"
                f"sentinel parallel-syncs {master_name} 1\n"
                f"sentinel known-replica {master_name} 127.0.0.1 {second}\n")
            command = [binary, str(config), "--sentinel"]
            self.sentinel_proc = subprocess.Popen(command, start_new_session=True)
            self.url = f"sentinel://127.0.0.1:{self.sentinel_port}"
            self.sentinel = redis.Redis(port=self.sentinel_port, decode_responses=True)
            wait_until(self._sentinel_sees_master, what="the sentinel to see the master "
                       "and its replica")
        except BaseException:
            self.stop()
            raise

    def _start_server(self, binary: str, port: int, *args: str) -> None:
        data = self.dir / str(port)
        data.mkdir()
        self.procs[port] = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(data), "--logfile", str(data / "redis.log"),
             "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0", *args],
            start_new_session=True)

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, decode_responses=True, socket_timeout=5)

    def _answer(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except redis.RedisError:
            return None

    def _replica_in_sync(self, port: int) -> bool:
        info = self._answer(lambda: self.client(port).info("replication"))
        return bool(info) and info.get("master_link_status") == "up" \
            and not info.get("master_sync_in_progress")

    def _sentinel_sees_master(self) -> bool:
        state = self._answer(lambda: self.sentinel.sentinel_master(self.master_name))
        replicas = self._answer(lambda: self.sentinel.sentinel_slaves(self.master_name))
        return bool(state) and state.get("is_master") and not state.get("is_sdown") \
            and int(state["port"]) == self.master_port and bool(replicas) \
            and any(not r.get("is_sdown") and r.get("master-link-status") == "ok"
                    for r in replicas)

    @property
    def master_port(self) -> int:
        """The port of the master as the sentinel says (the first port before a failover)."""
        state = self._answer(lambda: self.sentinel.sentinel_master(self.master_name))
        return int(state["port"]) if state else self.ports[0]

    @property
    def replica_port(self) -> int:
        master = self.master_port
        return next(port for port in self.ports if port != master)

    def master(self) -> redis.Redis:
        return self.client(self.master_port)

    def failover(self, timeout: float = 20.0) -> int:
        """`SENTINEL FAILOVER`; returns the new master's port once the sentinel reports it."""
        old = self.master_port
        self.sentinel.execute_command("SENTINEL", "FAILOVER", self.master_name)
        return self.wait_for_new_master(old, timeout)

    def kill_master(self, timeout: float = 20.0) -> int:
        """SIGKILL the master; returns the promoted replica's port once the sentinel says."""
        old = self.master_port
        self.procs[old].kill()
        self.procs[old].wait()
        return self.wait_for_new_master(old, timeout)

    def wait_for_new_master(self, old: int, timeout: float = 20.0) -> int:
        def promoted() -> int | None:
            port = self.master_port
            if port == old:
                return None
            role = self._answer(lambda: self.client(port).role())
            return port if role and role[0] == "master" else None

        return wait_until(promoted, timeout, what=f"the sentinel to promote a new master "
                          f"(old: {old})")

    def stop(self) -> None:
        for proc in [self.sentinel_proc, *self.procs.values()]:
            if proc is not None:
                stop_process(proc)
        shutil.rmtree(self.dir, ignore_errors=True)
