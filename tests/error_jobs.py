"""Jobs and argument types for tests/test_errors_and_values.py; a real worker imports this
module by path, so everything here is importable."""

from __future__ import annotations

import enum
import threading
from typing import Any

from jobkit import Job
from jobkit.errors import DeserializationError

VALUES_QUEUE = "errors_and_values"  # consumed by no worker: messages stay where they were put


class Perm(enum.Flag):
    R = 1
    W = 2
    X = 4


class Bits(enum.IntFlag):
    LOW = 1
    HIGH = 2


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"
    CRIMSON = "red"  # an alias: travels as RED


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Shade(enum.StrEnum):
    DARK = "dark"
    LIGHT = "light"


class Tag(str):
    """A str subclass: not JSON-native for jobkit (the type would be lost)."""


class Count(int):
    """An int subclass: the same."""


# job_id -> (args, kwargs) as perform() received them, for the in-process adapters
received: dict[str, tuple[tuple, dict]] = {}
received_lock = threading.Lock()


class RecordJob(Job):
    """Keeps the arguments it is performed with, by job id."""

    queue_as = VALUES_QUEUE

    def perform(self, *args: Any, **kwargs: Any) -> None:
        with received_lock:
            received[self.job_id] = (args, kwargs)


class RaisesDeserializationErrorJob(Job):
    """Raises DeserializationError from perform(), as a job that loads data itself might."""

    max_retries = 0  # straight to the dead set

    def perform(self, path: str, reason: str) -> None:
        raise DeserializationError(path, reason)


class RetriesDeserializationErrorJob(Job):
    """The same with retries left: the failure goes to the retry set."""

    def perform(self, path: str, reason: str) -> None:
        raise DeserializationError(path, reason)
