"""What happens when `perform` raises: retry later, discard, or give up to the dead set.

The Python spellings of Active Job's `retry_on` / `discard_on` (class decorators) and Sidekiq's
retry count, `sidekiq_retry_in` and `sidekiq_retries_exhausted` (the `max_retries` option and
the `retry_in` / `retries_exhausted` methods of Job). Rules are checked newest first, as Active
Job does: a subclass's rules before its parent's, a later decorator before an earlier one.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from jobkit.config import current_settings
from jobkit.config_values import MAX_SECONDS

if TYPE_CHECKING:
    from jobkit.job import Job

J = TypeVar("J", bound="Job")

__all__ = [
    "POLYNOMIALLY_LONGER",
    "SIDEKIQ_BACKOFF",
    "Decision",
    "DiscardOn",
    "RetryOn",
    "decide",
    "discard_on",
    "polynomially_longer",
    "retry_on",
    "sidekiq_backoff",
]

POLYNOMIALLY_LONGER = "polynomially_longer"
SIDEKIQ_BACKOFF = "sidekiq"
DEFAULT_WAIT_SECONDS = 3.0  # Active Job's retry_on default
DEFAULT_ATTEMPTS = 5  # Active Job's retry_on default
DEFAULT_JITTER = 0.15  # Active Job's retry_jitter default

Wait = float | int | str | Callable[[int], float]


def sidekiq_backoff(retry_count: int) -> float:
    """Sidekiq's default delay before retry number `retry_count + 1` (0-based count), seconds:
    15 s, 16 s, 31 s, ... about 21 days over 25 retries."""
    return retry_count ** 4 + 15 + random.randrange(10) * (retry_count + 1)


def polynomially_longer(executions: int, jitter: float = DEFAULT_JITTER) -> float:
    """Active Job's ``wait: :polynomially_longer``: executions**4 + 2 s, plus jitter."""
    base = executions ** 4
    return base + random.random() * base * jitter + 2


@dataclass(frozen=True)
class RetryOn:
    exceptions: tuple[type[BaseException], ...]
    wait: Wait = DEFAULT_WAIT_SECONDS
    attempts: int = DEFAULT_ATTEMPTS
    jitter: float = DEFAULT_JITTER

    def __post_init__(self) -> None:
        _check_exceptions(self.exceptions, "retry_on")
        if type(self.attempts) is not int or self.attempts < 1:
            raise ValueError(f"retry_on: attempts must be a whole number >= 1, got "
                             f"{self.attempts!r}")
        if not (callable(self.wait) or self.wait in (POLYNOMIALLY_LONGER, SIDEKIQ_BACKOFF)
                or _is_seconds(self.wait)):
            raise ValueError(f"retry_on: wait must be seconds, a callable of the attempt "
                             f"number, {POLYNOMIALLY_LONGER!r} or {SIDEKIQ_BACKOFF!r} "
                             f"(seconds: from 0 to {MAX_SECONDS}); got {self.wait!r}")
        if not _is_seconds(self.jitter):
            raise ValueError(f"retry_on: jitter must be a finite number >= 0, got "
                             f"{self.jitter!r}")

    def delay(self, executions: int) -> float:
        if self.wait == POLYNOMIALLY_LONGER:
            return polynomially_longer(executions, self.jitter)
        if self.wait == SIDEKIQ_BACKOFF:
            return sidekiq_backoff(executions - 1)
        if callable(self.wait):
            return float(self.wait(executions))
        seconds = float(self.wait)  # a number: __post_init__ refused anything else
        return seconds + random.random() * seconds * self.jitter


@dataclass(frozen=True)
class DiscardOn:
    exceptions: tuple[type[BaseException], ...]

    def __post_init__(self) -> None:
        _check_exceptions(self.exceptions, "discard_on")


def _check_exceptions(exceptions: tuple, where: str) -> None:
    if not exceptions or not all(isinstance(e, type) and issubclass(e, Exception)
                                 for e in exceptions):
        raise TypeError(f"{where} takes Exception classes, got {exceptions!r}")


def retry_on(*exceptions: type[BaseException], wait: Wait = DEFAULT_WAIT_SECONDS,
             attempts: int = DEFAULT_ATTEMPTS, jitter: float = DEFAULT_JITTER
             ) -> Callable[[type[J]], type[J]]:
    """Class decorator: retry on these exceptions, `attempts` runs in all, then dead set."""
    return _add_rule(RetryOn(exceptions, wait, attempts, jitter))


def discard_on(*exceptions: type[BaseException]) -> Callable[[type[J]], type[J]]:
    """Class decorator: on these exceptions, drop the job (then call `after_discard`)."""
    return _add_rule(DiscardOn(exceptions))


def _add_rule(rule: RetryOn | DiscardOn) -> Callable[[type[J]], type[J]]:
    """A class decorator that adds `rule` and returns the class itself (its type kept)."""

    def decorate(cls: type[J]) -> type[J]:
        cls.failure_rules = (rule, *cls.failure_rules)  # newest first; parents' stay untouched
        return cls

    return decorate


@dataclass(frozen=True)
class Decision:
    """`action` is "retry" (after `delay` seconds), "discard" or "dead"."""

    action: str
    delay: float = 0.0
    reason: str = ""


def decide(job: Job, error: BaseException) -> Decision:
    """What to do with `job` (whose `executions` counts the failed run) after `error`."""
    for rule in type(job).failure_rules:
        if isinstance(error, rule.exceptions):
            if isinstance(rule, DiscardOn):
                return Decision("discard", reason="discard_on")
            if job.executions < rule.attempts:
                return _retry(rule.delay(job.executions))
            return Decision("dead", reason=f"retry_on: {rule.attempts} attempts exhausted")
    retry_count = job.executions - 1  # retries already made
    max_retries = _max_retries(job)
    if retry_count >= max_retries:
        return Decision("dead", reason=f"{max_retries} retries exhausted")
    custom = job.retry_in(retry_count, error)
    if custom in ("discard", "kill"):
        return Decision("discard" if custom == "discard" else "dead", reason=f"retry_in: {custom}")
    if custom is None:
        return Decision("retry", sidekiq_backoff(retry_count))
    if _is_seconds(custom):
        return Decision("retry", float(custom))
    return Decision("dead", reason=f"retry_in returned {custom!r}: want seconds (from 0 to "
                                   f"{MAX_SECONDS}), None, 'discard' or 'kill'")


def _is_seconds(value: object) -> bool:
    """A delay a retry can wait: a finite number of seconds, 0 to MAX_SECONDS (no bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) \
        and math.isfinite(value) and 0 <= value <= MAX_SECONDS


def _retry(delay: float) -> Decision:
    """Retry after retry_on's `delay`; to the dead set, saying why, when it is no delay a retry
    can wait (a callable `wait` returning inf would otherwise park the job forever)."""
    if _is_seconds(delay):
        return Decision("retry", float(delay))
    return Decision("dead", reason=f"retry_on's wait gave {delay!r}: want seconds from 0 to "
                                   f"{MAX_SECONDS}")


def _max_retries(job: Job) -> int:
    value = type(job).max_retries
    return current_settings().max_retries if value is None else value


