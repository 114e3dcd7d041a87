"""A job's time limits: `time_limit` (soft: SoftTimeLimitExceeded is raised inside the run, so
it can clean up) and `hard_time_limit` (the run is stopped), checked where they are given.

Celery enforces both on the prefork pool from the message's ``timelimit`` header
(celery_message.py); jobkit enforces the soft limit of an `async def perform` itself, on any
pool (coroutines.py), and of a `def perform` in the threads of jobkit's thread pools
(`soft_limit` below; worker/pools.py marks those threads). docs/jobs.md says what each pool
can do.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
from collections.abc import Iterator
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from jobkit.durations import seconds

__all__ = ["SoftTimeLimitExceeded", "enforce_in_this_thread", "soft_limit", "time_limits"]

_thread = threading.local()  # .enforce: a pool thread; .armed: a limit is running in it


def time_limits(soft: Any, hard: Any, error: type[Exception], where: str = ""
                ) -> tuple[float | None, float | None]:
    """(soft, hard) in seconds, each None when not given; `error` (naming `where`, e.g. the
    class) for a value that is not a positive number of seconds or timedelta, or a hard limit
    not above the soft one."""
    soft_s = _seconds(soft, f"{where}time_limit", error)
    hard_s = _seconds(hard, f"{where}hard_time_limit", error)
    if soft_s is not None and hard_s is not None and hard_s <= soft_s:
        raise error(f"{where}hard_time_limit ({hard_s:g} s) must be more than time_limit "
                    f"({soft_s:g} s): the soft limit lets the job clean up before the hard one")
    return soft_s, hard_s


def _seconds(value: Any, what: str, error: type[Exception]) -> float | None:
    return None if value is None else seconds(value, what, error)


def enforce_in_this_thread() -> None:
    """Mark the calling thread as a worker pool's: `soft_limit` acts in it from now on.
    Called by jobkit's thread pools as each of their threads starts (worker/pools.py); other
    threads (a user's `perform_now`, prefork and solo, where Celery's signal does the job or
    the thread is the worker's own) are left alone."""
    _thread.enforce = True


@contextlib.contextmanager
def soft_limit(limit: float | None) -> Iterator[None]:
    """SoftTimeLimitExceeded raised in this thread once `limit` seconds have passed, while the
    block runs: only in a thread marked by `enforce_in_this_thread`, and only for the outermost
    block (a job's `perform_now` of another job runs under the first job's limit, as on
    prefork). Python delivers it between two bytecodes of this thread: a blocking call (a
    `time.sleep`, a socket read, a C extension's loop) is not interrupted, the exception comes
    as it returns."""
    if limit is None or not getattr(_thread, "enforce", False) or getattr(_thread, "armed", False):
        yield
        return
    alarm = _Alarm(threading.get_ident(), limit)
    _thread.armed = True
    try:
        yield
    finally:
        _thread.armed = False
        alarm.disarm()


class _Alarm:
    """A timer that raises SoftTimeLimitExceeded in one thread, at most once, and never after
    `disarm`: firing and disarming hold the same lock, and disarming clears an exception set
    but not yet delivered, so it cannot reach the thread's next job, nor the code after the
    run (Celery's tracer, the ack, jobkit's failure record). Python checks for a pending one
    at function calls, so one set as the run ends is usually raised as `disarm` is called:
    out of `soft_limit`, failing that run."""

    def __init__(self, ident: int, limit: float) -> None:
        self.ident, self.lock, self.state = ident, threading.Lock(), "armed"
        self.timer = threading.Timer(limit, self._fire)
        self.timer.daemon = True
        self.timer.start()

    def _fire(self) -> None:
        with self.lock:
            if self.state == "armed":
                self.state = "fired"
                _set_async_exc(self.ident, SoftTimeLimitExceeded)

    def disarm(self) -> None:
        with self.lock:
            if self.state == "armed":
                self.timer.cancel()
            elif self.state == "fired":
                _set_async_exc(self.ident, None)  # not delivered yet: cleared
            self.state = "done"


def _set_async_exc(ident: int, error: type[BaseException] | None) -> None:
    """CPython's PyThreadState_SetAsyncExc: `error` raised in the thread at its next bytecode,
    or (None: a NULL pointer) the pending one cleared. The one way to raise in another thread;
    there is no Python API for it."""
    target = ctypes.py_object(error) if error is not None else ctypes.py_object()
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), target)
