"""The names `jobkit` exports: a change to the public API shows up here first."""

from __future__ import annotations

import importlib.metadata

import jobkit
from jobkit.adapters.base import Adapter
from jobkit.references import Locator

PUBLIC = [
    "Abort",
    "Adapter",
    "Batch",
    "BatchStatus",
    "Cancellation",
    "Concurrency",
    "ConfigError",
    "ConfiguredJob",
    "Debounce",
    "DeserializationError",
    "DjangoLocator",
    "GlobalID",
    "IterableJob",
    "Job",
    "JobClassError",
    "JobKilled",
    "JobkitError",
    "Locator",
    "NotRecordingError",
    "NotReplicatedError",
    "NotUniqueError",
    "OpenBatch",
    "OverLimit",
    "PayloadError",
    "SQLAlchemyLocator",
    "SerializationError",
    "Serializer",
    "Settings",
    "SoftTimeLimitExceeded",
    "__version__",
    "after_enqueue",
    "after_perform",
    "around_enqueue",
    "around_perform",
    "before_enqueue",
    "before_perform",
    "cancel",
    "configure",
    "discard_on",
    "iteration",
    "limiter",
    "perform_all_later",
    "register_locator",
    "register_serializer",
    "retry_on",
    "use_adapter",
]


def test_all_is_pinned() -> None:
    assert sorted(jobkit.__all__) == PUBLIC


def test_every_exported_name_imports() -> None:
    namespace: dict[str, object] = {}
    exec("from jobkit import *", namespace)  # what a star import gives a user
    assert sorted(name for name in namespace if name != "__builtins__") == PUBLIC


def test_new_exports_are_the_seams_and_the_installed_version() -> None:
    assert jobkit.Adapter is Adapter
    assert jobkit.Locator is Locator
    assert jobkit.__version__ == importlib.metadata.version("jobkit")
