"""A job's time limits: `time_limit` (soft: SoftTimeLimitExceeded is raised inside the run, so
it can clean up) and `hard_time_limit` (the run is stopped), checked where they are given.

Celery enforces both on the prefork pool from the message's ``timelimit`` header
(celery_message.py); jobkit enforces the soft limit of an `async def perform` itself, on any
pool (coroutines.py). docs/jobs.md says what each pool can do.
"""

from __future__ import annotations

from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from jobkit.durations import seconds

__all__ = ["SoftTimeLimitExceeded", "time_limits"]


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
