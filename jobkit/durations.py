"""Durations given by users (`unique_for`, `Concurrency(duration=...)`, time limits, a
limiter's interval and timeouts): seconds from a number or a timedelta, checked one way."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

__all__ = ["MAX_SECONDS", "seconds"]

MAX_SECONDS = 10 * 366 * 86400.0  # ten years: beyond, Redis refuses a key's lifetime (PX)


def seconds(value: Any, what: str, error: type[Exception], *, allow_zero: bool = False
            ) -> float:
    """`value` in seconds: finite, more than 0 (or 0 with `allow_zero`), at most ten years;
    `error` naming `what` and the value otherwise (a bool is not a number)."""
    if isinstance(value, dt.timedelta):
        result = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        result = float(value)
    else:
        raise error(f"{what} must be seconds (a number) or a timedelta, not {value!r}")
    if not math.isfinite(result) or result < 0 or (result == 0 and not allow_zero) \
            or result > MAX_SECONDS:
        least = "0 seconds or more" if allow_zero else "more than 0 seconds"
        raise error(f"{what} must be {least} and at most ten years, not {value!r}")
    return result
