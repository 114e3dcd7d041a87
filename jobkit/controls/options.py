"""The control options of a job class, checked when the class is defined, and what they make
of one job: the `controls` part of its payload (keys computed once, at enqueue).

Keys are computed in the enqueuing process, from the job's arguments, and travel in the
payload, so the worker, the poller and the dashboard never call user code to find them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

from jobkit.arguments import serialize_value
from jobkit.durations import seconds
from jobkit.errors import JobClassError
from jobkit.imports import class_path

if TYPE_CHECKING:
    from jobkit.job import Job

__all__ = ["Concurrency", "Debounce", "check_controls", "controls_of"]

UniqueUntil = Literal["start", "success"]
UniqueConflict = Literal["skip", "raise"]
UNIQUE_UNTIL, UNIQUE_CONFLICT = get_args(UniqueUntil), get_args(UniqueConflict)
DEFAULT_CONCURRENCY_DURATION = 900.0  # seconds a slot is held at most (a killed worker's too)
MIN_CONCURRENCY_DURATION = 1.0  # shorter would let a slot expire under almost any job
_KEY_TEXT_MAX = 200  # longer keys are hashed, so Redis keys stay short


@dataclass(frozen=True)
class Concurrency:
    """``limits_concurrency = Concurrency(to=2, key=lambda job: job.arguments[0])``: at most
    `to` jobs with the same key run at once, across every worker; the others wait, in order.

    `duration` (seconds or timedelta) bounds how long a slot is held: a worker killed while
    running the job frees it by then at the latest. `group` shares the limit between classes
    (the default is the class's own path).
    """

    to: int
    key: Callable[[Any], Any] | None = None
    duration: float | dt.timedelta = DEFAULT_CONCURRENCY_DURATION
    group: str | None = None

    def __post_init__(self) -> None:
        if type(self.to) is not int or self.to < 1:
            raise JobClassError(f"Concurrency(to={self.to!r}): `to` must be a whole number >= 1")
        if self.key is not None and not callable(self.key):
            raise JobClassError(f"Concurrency(key={self.key!r}): `key` must be a callable "
                                "taking the job (e.g. lambda job: job.arguments[0])")
        if self.seconds < MIN_CONCURRENCY_DURATION:
            raise JobClassError(f"Concurrency(duration={self.duration!r}) must be at least "
                                f"{MIN_CONCURRENCY_DURATION:g} s: a slot expires after it")
        if self.group is not None and (not isinstance(self.group, str) or not self.group
                                       or not _encodes(self.group)):
            raise JobClassError(f"Concurrency(group={self.group!r}) must be a non-empty string "
                                "(UTF-8)")

    @property
    def seconds(self) -> float:
        return _seconds(self.duration, "Concurrency(duration=...)")


@dataclass(frozen=True)
class Debounce:
    """``debounce = Debounce(within=30, by=lambda job: job.arguments[0])``: of the jobs
    enqueued with the same key in a window of `within` seconds (from the first of them), only
    the last one runs, once, when the window ends."""

    within: float | dt.timedelta
    by: Callable[[Any], Any] | None = None

    def __post_init__(self) -> None:
        _seconds(self.within, "Debounce(within=...)")
        if self.by is not None and not callable(self.by):
            raise JobClassError(f"Debounce(by={self.by!r}): `by` must be a callable taking "
                                "the job")

    @property
    def seconds(self) -> float:
        return _seconds(self.within, "Debounce(within=...)")


def check_controls(cls: type[Job]) -> None:
    """JobClassError naming the option when a class's controls could never work."""
    name = cls.__qualname__
    unique_for = cls.unique_for
    if unique_for is not None:
        _seconds(unique_for, f"{name}.unique_for")
    if cls.unique_until not in UNIQUE_UNTIL:
        raise JobClassError(f"{name}.unique_until must be 'start' or 'success', not "
                            f"{cls.unique_until!r}")
    if cls.unique_conflict not in UNIQUE_CONFLICT:
        raise JobClassError(f"{name}.unique_conflict must be 'skip' or 'raise', not "
                            f"{cls.unique_conflict!r}")
    if cls.unique_by is not None and not callable(cls.unique_by):
        raise JobClassError(f"{name}.unique_by must be a callable taking the job, not "
                            f"{cls.unique_by!r}")
    if cls.limits_concurrency is not None and not isinstance(cls.limits_concurrency,
                                                             Concurrency):
        raise JobClassError(f"{name}.limits_concurrency must be a jobkit.Concurrency(...), "
                            f"not {cls.limits_concurrency!r}")
    if cls.debounce is not None and not isinstance(cls.debounce, Debounce):
        raise JobClassError(f"{name}.debounce must be a jobkit.Debounce(...), not "
                            f"{cls.debounce!r}")
    limiters = cls.limiter if isinstance(cls.limiter, tuple) else (cls.limiter,)
    for limiter in limiters:
        if limiter is not None and not callable(getattr(limiter, "acquire", None)):
            raise JobClassError(f"{name}.limiter must be a jobkit.limiter (or a tuple of "
                                f"them), not {limiter!r}")
    if cls.debounce is not None and unique_for is not None:
        raise JobClassError(f"{name} sets both unique_for and debounce: debounce already "
                            "keeps one job per key; choose one")


def controls_of(job: Job, args: list[Any], kwargs: dict[str, Any]
                ) -> dict[str, Any] | None:
    """The payload's `controls` for a job whose serialized arguments are `args`, `kwargs`;
    None for a job without any."""
    cls = type(job)
    controls: dict[str, Any] = {}
    if cls.unique_for is not None:
        by = cls.unique_by
        identity = [args, kwargs] if by is None else _call(by, job, "unique_by")
        controls["unique"] = {
            "key": _digest(job, identity),
            "for": _seconds(cls.unique_for, "unique_for"),
            "until": cls.unique_until,
            "conflict": cls.unique_conflict,
        }
    limit = cls.limits_concurrency
    if limit is not None:
        value = None if limit.key is None else _call(limit.key, job, "Concurrency key")
        group = limit.group or _class_path(job)
        controls["concurrency"] = {
            "key": group if limit.key is None else f"{group}:{_key_text(value)}",
            "to": limit.to,
            "duration": limit.seconds,
        }
    debounce = cls.debounce
    if debounce is not None:
        identity = [args, kwargs] if debounce.by is None else _call(debounce.by, job,
                                                                    "Debounce by")
        controls["debounce"] = {"key": _digest(job, identity), "within": debounce.seconds}
    return controls or None


def _call(fn: Callable[[Any], Any], job: Job, what: str) -> Any:
    """Call a key function; an error it raises goes to the caller of the enqueue, as it is,
    with a note naming the class and the option."""
    try:
        return fn(job)
    except Exception as exc:
        exc.add_note(f"raised by {type(job).__qualname__}'s {what} (at enqueue)")
        raise


def _class_path(job: Job) -> str:
    return class_path(type(job))


def _digest(job: Job, identity: Any) -> str:
    """`<class path>:<hash of the identity's JSON>`: the same job key in every process."""
    text = json.dumps(serialize_value(identity, "unique key"), sort_keys=True,
                      separators=(",", ":"), ensure_ascii=False)
    return f"{_class_path(job)}:{hashlib.sha256(text.encode()).hexdigest()[:32]}"


def _key_text(value: Any) -> str:
    """A concurrency key's value as text: strings and numbers as they are (readable on the
    dashboard), anything else (records, lists) by the hash of its JSON. A value no argument
    could be (a lone surrogate, a 5,000-digit int) is refused as an argument would be."""
    serialized = serialize_value(value, "Concurrency key")
    if isinstance(value, str | int) and not isinstance(value, bool):
        text = str(value)
        if len(text) <= _KEY_TEXT_MAX:
            return text
    text = json.dumps(serialized, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _encodes(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _seconds(value: Any, what: str) -> float:
    return seconds(value, what, JobClassError)

