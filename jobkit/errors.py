"""Every public jobkit exception.

    JobkitError
    ├── SerializationError      an argument cannot cross the wire (names its path)
    ├── DeserializationError    a payload argument cannot be rebuilt (record gone, bad marker)
    ├── PayloadError            a message is not a jobkit payload at all
    ├── JobClassError           a job class cannot be used or found by its import path
    ├── ConfigError             settings that cannot work
    ├── JobKilled               the process running a job was killed (time limit, OOM, signal)
    └── Abort                   raised by a before_* callback to halt the chain
"""

from __future__ import annotations

__all__ = [
    "Abort",
    "ConfigError",
    "DeserializationError",
    "JobClassError",
    "JobKilled",
    "JobkitError",
    "NotReplicatedError",
    "PayloadError",
    "SerializationError",
]


class JobkitError(Exception):
    """Root of every error jobkit raises on purpose."""


class NotReplicatedError(JobkitError):
    """An enqueue reached the Redis master but fewer replicas than `wait_for_replicas`
    confirmed it in time: a failover may lose it, so it is not reported as enqueued."""


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
