"""Every public jobkit exception.

    JobkitError
    ├── SerializationError      an argument cannot cross the wire (names its path)
    ├── DeserializationError    a payload argument cannot be rebuilt (record gone, bad marker)
    ├── PayloadError            a message is not a jobkit payload at all
    ├── JobClassError           a job class cannot be used or found by its import path
    ├── ConfigError             settings that cannot work
    ├── JobKilled               the process running a job was killed (time limit, OOM, signal)
    ├── NotReplicatedError      an enqueue not confirmed by `wait_for_replicas` replicas in time
    ├── NotRecordingError       a test helper used where no adapter records jobs
    ├── NotUniqueError          a unique job (`unique_conflict = "raise"`) already enqueued
    ├── OverLimit               a rate limiter (jobkit.limiter) is over its limit
    └── Abort                   raised by a before_* callback to halt the chain

The mailer's errors (jobkit.mailer.errors) are JobkitErrors too. Every one survives pickling.
"""

from __future__ import annotations

from typing import Any, Self

__all__ = [
    "Abort",
    "ConfigError",
    "DeserializationError",
    "JobClassError",
    "JobKilled",
    "JobkitError",
    "NotRecordingError",
    "NotReplicatedError",
    "NotUniqueError",
    "OverLimit",
    "PayloadError",
    "SerializationError",
]


class JobkitError(Exception):
    """Root of every error jobkit raises on purpose.

    Every one survives pickling (a prefork pool sends a job's error to the main process): it is
    rebuilt by calling its class with the arguments it was made with, so a subclass with its own
    `__init__` (SerializationError's `path` and `reason`) needs nothing more.
    """

    _init_args: tuple[tuple[Any, ...], dict[str, Any]]

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        error = super().__new__(cls, *args, **kwargs)
        error._init_args = (args, kwargs)
        return error

    def __reduce__(self) -> tuple[Any, ...]:
        args, kwargs = getattr(self, "_init_args", (self.args, {}))
        state = {**self.__dict__, "args": self.args}  # attributes set later, notes, args
        state.pop("_init_args", None)
        return _rebuild, (type(self), args, kwargs), state


def _rebuild(cls: type[JobkitError], args: tuple[Any, ...], kwargs: dict[str, Any]
             ) -> JobkitError:
    """Unpickle a jobkit error (pickle can pass keyword arguments to no constructor)."""
    return cls(*args, **kwargs)


class NotReplicatedError(JobkitError):
    """An enqueue reached the Redis master but fewer replicas than `wait_for_replicas`
    confirmed it in time: a failover may lose it, so it is not reported as enqueued."""


class NotRecordingError(JobkitError, RuntimeError, AttributeError):
    """`MyJob.jobs`, `drain` or a `jobkit.testing` helper used while the adapter in force does
    not record jobs. An AttributeError too, so `hasattr(MyJob, "jobs")`, `inspect` and
    `unittest.mock.create_autospec` treat `jobs` as absent outside tests."""


class SerializationError(JobkitError, TypeError):
    """An argument cannot be written as JSON; `path` says where it sits (e.g. args[1]['user'])."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class DeserializationError(JobkitError):
    """A serialized argument cannot be turned back into a value (e.g. its record was deleted)."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class PayloadError(JobkitError):
    """A message body is not a well-formed jobkit payload."""


class JobClassError(JobkitError):
    """A job class is unusable here: not importable by its path, or not a Job at all."""


class ConfigError(JobkitError, ValueError):
    """Settings that cannot work; the message names the setting and the value."""


class JobKilled(JobkitError):
    """The job's run ended because its process was killed: the hard time limit, the OOM killer,
    a signal to a pool process. Counts as a failed run for the retry policy (`retry_on` and
    `discard_on` can name it)."""


class Abort(JobkitError):  # noqa: N818 - mirrors Active Job's `throw :abort`
    """Raise in a before_* or around_* callback to stop the enqueue or perform quietly."""


class NotUniqueError(JobkitError):
    """A job whose class says ``unique_conflict = "raise"`` was not enqueued: a job with the
    same unique key holds the lock. `jobs` lists the jobs that were not enqueued."""

    def __init__(self, message: str, jobs: list[Any] | None = None) -> None:
        self.jobs = jobs if jobs is not None else []
        super().__init__(message)


class OverLimit(JobkitError):  # noqa: N818 - Sidekiq Enterprise's name
    """A rate limiter (`jobkit.limiter`) stayed over its limit for its whole `wait_timeout`.

    Escaping a job's `perform`, it reschedules the job after a backoff (not a retry, never the
    dead set) when `reschedule` is True (the limiter's default); otherwise it is an ordinary
    failure for the retry policy. `retry_after` is the limiter's estimate, in seconds, of when
    a call could succeed."""

    def __init__(self, limiter: str, retry_after: float, reschedule: bool = True) -> None:
        self.limiter = limiter
        self.retry_after = retry_after
        self.reschedule = reschedule
        wait = f"{retry_after:.2f}" if isinstance(retry_after, int | float) else retry_after
        super().__init__(f"rate limiter {limiter!r} is over its limit (try again in {wait} s)")
