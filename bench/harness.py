"""What every benchmark here shares: a private redis-server, the two workers, the two job sides.

* `private_redis`: a throw-away ``redis-server`` on a free port (never 6379), ``--save ''
  --appendonly no``, in a temporary directory, stopped by its PID on exit, error or Ctrl-C.
* `start_worker`: ``jobkit worker`` or ``celery -A bench.noop_jobs worker`` (both prefork
  ``-c 2``, WARNING logs, no gossip/mingle/heartbeat) as a subprocess in its own session, so
  `stop_process` can SIGKILL its whole process group.
* `load_jobs`: points jobkit (celery adapter) and the raw Celery app at the private server and
  returns `bench.noop_jobs`.
* `run_main`: the common ``main()`` frame (temp dir, SIGTERM unwinds, Ctrl-C exits 130).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import ModuleType

import redis

__all__ = ["BIN", "CELERY_WORKER", "JOBKIT_WORKER", "QUEUE", "ROOT", "UNACKED", "free_port",
           "load_jobs", "private_redis", "run_main", "start_worker", "stop_process", "tail",
           "wait_for_redis"]

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the virtualenv's bin: jobkit, celery
QUEUE = "default"
UNACKED = "unacked"  # kombu's Redis transport: delivered, not yet acked messages
POOL_FLAGS = ["-c", "2", "-P", "prefork", "-l", "WARNING"]
QUIET_FLAGS = ["--without-gossip", "--without-mingle", "--without-heartbeat"]
JOBKIT_WORKER = [str(BIN / "jobkit"), "worker", *POOL_FLAGS, "-q", QUEUE, *QUIET_FLAGS]
CELERY_WORKER = [str(BIN / "celery"), "-A", "bench.noop_jobs", "worker", *POOL_FLAGS,
                 "-Q", QUEUE, *QUIET_FLAGS]


# -- the private Redis ----------------------------------------------------------------------


def free_port() -> int:
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port != 6379:
            return port


def wait_for_redis(url: str, server: subprocess.Popen, timeout: float = 10.0) -> bool:
    """True once the server answers PING; False if it exited (e.g. the port was taken)."""
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            return False
        try:
            client.ping()
            return True
        except redis.ConnectionError:
            time.sleep(0.02)
        finally:
            client.close()
    raise TimeoutError(f"redis-server did not answer on {url} within {timeout} s")


def stop_process(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM to the PID, then SIGKILL to its process group (its own session) after `grace`."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # children that outlived their parent
    proc.wait()
    _wait_group_gone(proc.pid, timeout=grace)


def _wait_group_gone(pgid: int, timeout: float) -> None:
    """Until no process of the group is left, so the next phase does not share the CPUs with
    the teardown of this one (a worker holding 100k ETA tasks takes a while to free them)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.02)


@contextmanager
def private_redis(workdir: Path) -> Iterator[str]:
    """A throw-away redis-server on a free port; yields its URL (DB 0)."""
    for _ in range(5):
        port = free_port()
        url = f"redis://127.0.0.1:{port}/0"
        server = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(workdir), "--logfile", str(workdir / "redis.log")],
            stdout=subprocess.DEVNULL, start_new_session=True,
        )
        try:
            if wait_for_redis(url, server):
                yield url
                return
        finally:
            stop_process(server, grace=5.0)
    raise RuntimeError("could not start redis-server on a free port (see redis.log)")


# -- the two sides ----------------------------------------------------------------------------


def load_jobs(url: str) -> ModuleType:
    """Point jobkit and the raw Celery app at `url`, then import bench.noop_jobs."""
    os.environ["REDIS_URL"] = url  # read by bench.noop_jobs at import, and by the workers
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import jobkit
    from jobkit.adapters import use_adapter

    jobkit.configure(redis_url=url)
    use_adapter("celery")
    from bench import noop_jobs

    noop_jobs.app.conf.broker_url = url
    return noop_jobs


def start_worker(argv: list[str], url: str, log: Path) -> subprocess.Popen:
    """A worker on `url` in its own session, its output appended to `log`."""
    env = {**os.environ, "REDIS_URL": url}
    with log.open("ab") as out:
        return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# -- main -------------------------------------------------------------------------------------


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop processes


def run_main(body: Callable[[Path], None], prefix: str = "jobkit-bench-") -> int:
    """Run `body(workdir)` in a fresh temp dir; 130 on Ctrl-C, SIGTERM unwinds like it."""
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        body(workdir)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0
