"""Jobs the fault tests run on real workers: each records its starts and its finish in Redis,
riding out the Redis outages the tests cause (a worker imports this module by path)."""

from __future__ import annotations

import ctypes
import os
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis

from jobkit import Job

STARTS = "fault:starts:"  # + name: a set with one id per run, so a retried write counts once
DONE = "fault:done"  # set of names that finished


def _started(name: str) -> None:
    run = uuid.uuid4().hex
    _write(lambda r: r.sadd(STARTS + name, run))


def _write(command: Callable[[redis.Redis], Any], within: float = 60.0) -> Any:
    """Run a Redis command, retrying while Redis restarts (the test is about the worker)."""
    deadline = time.monotonic() + within
    while True:
        try:
            return command(redis.Redis.from_url(os.environ["REDIS_URL"]))
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class MarkJob(Job):
    """Starts, sleeps `seconds` (releasing the GIL), finishes."""

    def perform(self, name: str, seconds: float = 0.0) -> None:
        _started(name)
        time.sleep(seconds)
        _write(lambda r: r.sadd(DONE, name))


class GilJob(Job):
    """Holds the GIL for `seconds` in C code (libc's sleep through ctypes.PyDLL, which does
    not release it), as a long regex or a C extension would."""

    def perform(self, name: str, seconds: int) -> None:
        _started(name)
        ctypes.PyDLL(None).sleep(seconds)
        _write(lambda r: r.sadd(DONE, name))


class KillableJob(Job):
    """Sleeps long enough to be killed; gives up after one retry."""

    max_retries = 1

    def perform(self, name: str, seconds: float) -> None:
        _started(name)
        _write(lambda r: r.set(f"fault:pid:{name}", os.getpid()))
        time.sleep(seconds)
        _write(lambda r: r.sadd(DONE, name))
