"""A worker's heartbeat, written by a small process of its own.

Why a process and not a thread: on the threads and solo pools a job that holds the GIL in C
code (a long regex, a C extension) stops every other thread of the worker, so a heartbeat
thread would stop too and another worker would start the job again while it still runs. This
process shares no interpreter with the jobs: it beats for as long as the worker process exists
and is not stopped (SIGSTOP, a frozen container), and stops when the worker is gone.

The worker sends it one JSON line on stdin at start (Redis settings, identity, TTL, what
`jobkit processes` shows), more lines to update that information, and `{"stop": true}` for a
clean stop. When it finds its heartbeat key gone while the worker was alive (a partition or a
pause longer than `heartbeat_timeout`), it says so in the worker's log: the jobs the worker
held may have been handed to other workers.

Each beat also carries the worker's memory (read from /proc, so a busy worker is not asked),
and takes the commands the web app or `jobkit.api` left for this process (`send_command`):
the worker gets the signal the command stands for, so Quiet and Stop do exactly what TSTP and
TERM do (worker/shutdown.py). A worker whose signal handlers are not installed (an embedded
one, in a thread of a test) does not say `commands` in its information, and gets none.

Run as `python -m jobkit.worker.heartbeat` by `HeartbeatProcess`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import select
import signal
import subprocess
import sys
import time
from typing import Any

import redis

from jobkit import keys

__all__ = ["BEAT_EVERY_SECONDS", "COMMANDS", "HeartbeatProcess", "beat", "beat_interval",
           "memory", "send_command", "take_commands"]

logger = logging.getLogger(__name__)

BEAT_EVERY_SECONDS = 2.0

#: The commands a process takes through Redis, and the signal each one sends its worker.
COMMANDS = {"quiet": signal.SIGTSTP, "stop": signal.SIGTERM}


def beat_interval(ttl: float) -> float:
    """Beat every 2 s, or every third of the TTL when that is shorter (5 missed beats = dead)."""
    return min(BEAT_EVERY_SECONDS, ttl / 3)


class HeartbeatProcess:
    """The worker side: start the beating process and talk to it."""

    def __init__(self, process_id: str, ttl: float, redis_url: str,
                 sentinel_master: str | None, info: dict[str, Any]) -> None:
        self.process_id = process_id
        # Its own session: a TERM or Ctrl-C to the worker's process group (Heroku, a
        # terminal) must not stop the beats while the worker finishes its jobs.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jobkit.worker.heartbeat"], stdin=subprocess.PIPE,
            start_new_session=True, close_fds=True)
        self._send({"id": process_id, "ttl": ttl, "redis_url": redis_url,
                    "sentinel_master": sentinel_master, "parent": os.getpid(), "info": info})

    def update(self, info: dict[str, Any]) -> None:
        self._send({"info": info})

    def stop(self, timeout: float = 5.0) -> None:
        """Stop beating; returns once the process has exited (it writes nothing after)."""
        self._send({"stop": True})
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def _send(self, line: dict[str, Any]) -> None:
        if self.proc.poll() is not None or self.proc.stdin is None:
            return
        try:
            self.proc.stdin.write(json.dumps(line).encode() + b"\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass


def _worker_state(pid: int) -> str:
    """"gone", "stopped" (SIGSTOP, a frozen container, a zombie) or "running", read without
    the worker's GIL: from getppid and /proc."""
    if os.getppid() != pid:  # re-parented: the worker is gone
        return "gone"
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            state = stat.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "running"  # no /proc (not Linux): getppid is all we can tell
    return "stopped" if state in (b"T", b"t", b"Z", b"X") else "running"


def beat(client: redis.Redis, process_id: str, ttl: float, info: dict[str, Any]) -> bool:
    """Write the heartbeat, then (re)join the set; True if a heartbeat was still there."""
    value = json.dumps({**info, "id": process_id, "beat_at": time.time()})
    with client.pipeline() as pipe:
        pipe.set(keys.heartbeat(process_id), value, px=int(ttl * 1000), get=True)
        pipe.sadd(keys.PROCESSES, process_id)
        previous, _ = pipe.execute()
    return previous is not None


def send_command(client: redis.Redis, process_id: str, command: str, ttl: float) -> None:
    """Leave `command` for one process's heartbeat, which takes it within a beat; a command
    no heartbeat took (its process died) expires after `ttl` seconds. Commands are kept as a
    set, so a quiet and a stop sent within one beat both arrive."""
    if command not in COMMANDS:
        raise ValueError(f"unknown command {command!r}: one of {', '.join(COMMANDS)}")
    key = keys.process_commands(process_id)
    with client.pipeline() as pipe:
        pipe.sadd(key, command)
        pipe.expire(key, max(1, math.ceil(ttl)))
        pipe.execute()


def take_commands(client: redis.Redis, process_id: str) -> list[str]:
    """The commands left for this process, read and deleted in one step (MULTI), so each is
    taken once; quiet before stop."""
    key = keys.process_commands(process_id)
    with client.pipeline() as pipe:
        pipe.smembers(key)
        pipe.delete(key)
        members, _ = pipe.execute()
    names = {m.decode(errors="replace") if isinstance(m, bytes) else m for m in members}
    return [name for name in COMMANDS if name in names] + sorted(names - COMMANDS.keys())


def _rss(pid: int) -> int | None:
    """Resident memory of a process in bytes, from /proc (None: not Linux, or gone)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _children(pid: int) -> list[int]:
    """The child processes of `pid`: every thread's, as a pool may fork from any thread."""
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    found = []
    for thread in threads:
        try:
            with open(f"/proc/{pid}/task/{thread}/children", "rb") as children:
                found.extend(int(child) for child in children.read().split())
        except (OSError, ValueError):
            continue
    return found


def memory(pid: int) -> dict[str, int]:
    """`rss`: the worker process's resident memory in bytes; `children_rss`: its child
    processes' together (the prefork pool; this heartbeat process left out). Empty without
    /proc (not Linux)."""
    rss = _rss(pid)
    if rss is None:
        return {}
    children = (_rss(child) for child in _children(pid) if child != os.getpid())
    return {"rss": rss, "children_rss": sum(child or 0 for child in children)}


def _act_on(commands: list[str], parent: int) -> None:
    for command in commands:
        if command not in COMMANDS:
            logger.warning("jobkit: unknown command %r for this worker, ignored", command)
            continue
        logger.warning("jobkit: command %r received through Redis", command)
        try:
            os.kill(parent, COMMANDS[command])
        except OSError:  # the worker is gone: the loop ends at its next look
            return


def _read_lines(buffer: bytearray) -> tuple[list[dict[str, Any]], bool]:
    """The lines on stdin, without blocking; the flag is False at end of file. Read with
    os.read only: a buffered reader takes lines ahead into its own buffer, where select()
    does not see them, and they would wait there until the worker writes again."""
    open_ = True
    while open_ and select.select([sys.stdin.fileno()], [], [], 0)[0]:
        chunk = os.read(sys.stdin.fileno(), 65536)
        open_ = bool(chunk)
        buffer.extend(chunk)
    lines = []
    while b"\n" in buffer:
        line, _, rest = bytes(buffer).partition(b"\n")
        buffer[:] = rest
        lines.append(json.loads(line))
    return lines, open_


def _first_line(buffer: bytearray) -> dict[str, Any] | None:
    """The configuration line, waiting for it (None at end of file); the lines the worker
    sent after it stay in `buffer` for `_read_lines`."""
    while b"\n" not in buffer:
        chunk = os.read(sys.stdin.fileno(), 65536)
        if not chunk:
            return None
        buffer.extend(chunk)
    line, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    return json.loads(line)


def main() -> None:
    from jobkit.masking import mask_secrets
    from jobkit.redis_client import client_for

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP,
                   signal.SIGTSTP, signal.SIGTTIN):
        signal.signal(signum, signal.SIG_IGN)  # the worker's signals; it stops when told to
    logging.basicConfig(format="[%(asctime)s: %(levelname)s/heartbeat] %(message)s")
    buffer = bytearray()
    config = _first_line(buffer)
    if config is None:
        return  # the worker is gone before saying anything
    process_id, ttl, parent = config["id"], float(config["ttl"]), int(config["parent"])
    info = {**config["info"], "pid": parent}
    every = beat_interval(ttl)
    client = client_for(config["redis_url"], config["sentinel_master"], timeout=max(every, 1.0))
    first, warned_at, beaten_at = True, 0.0, time.monotonic()
    while True:
        lines, open_ = _read_lines(buffer)
        for line in lines:
            if line.get("stop"):
                return
            info = {**line.get("info", info), "pid": parent}
        state = _worker_state(parent)
        if state == "gone":
            return
        if state == "stopped":  # no beat: a frozen worker is taken for dead, as documented
            time.sleep(every)
            continue
        try:
            found = beat(client, process_id, ttl, {**info, **memory(parent)})
            # A beat sent into a partition can reach Redis after it heals and write the
            # heartbeat again, so a long silence counts as much as a missing key.
            silent = time.monotonic() - beaten_at
            if not first and silent > ttl:
                logger.warning(
                    "jobkit: worker %s was taken for dead: no heartbeat for %.0f s (a "
                    "partition or a pause; the limit is %.0f s). Jobs it held may have been "
                    "handed to other workers and may run twice.", process_id, silent, ttl)
            elif not first and not found:
                logger.warning(
                    "jobkit: worker %s was taken for dead: its heartbeat was gone from Redis "
                    "(expired, or Redis lost its data). Jobs it held may have been handed to "
                    "other workers and may run twice.", process_id)
            first, beaten_at = False, time.monotonic()
            if info.get("commands") is True:
                _act_on(take_commands(client, process_id), parent)
        except redis.RedisError as exc:
            now = time.monotonic()
            if now - warned_at > ttl:  # once per TTL, not every beat of an outage
                warned_at = now
                logger.warning("jobkit heartbeat failed, will try again: %s",
                               mask_secrets(str(exc)))
        if open_:
            select.select([sys.stdin.fileno()], [], [], every)
        else:
            time.sleep(every)


if __name__ == "__main__":
    main()
