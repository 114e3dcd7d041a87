"""Django's tasks framework, from wherever it is installed: `django.tasks` (Django 6) or the
`django_tasks` backport (Django 5.2). Everything else in this package imports it from here."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "BaseTaskBackend",
    "InvalidTask",
    "InvalidTaskBackend",
    "Task",
    "TaskContext",
    "TaskError",
    "TaskResult",
    "TaskResultDoesNotExist",
    "TaskResultStatus",
    "normalize_json",
    "task_backends",
    "task_enqueued",
    "task_finished",
    "task_started",
]


def _framework() -> str:
    """`django.tasks` when Django ships it, else the backport."""
    try:
        importlib.import_module("django.tasks")
    except ImportError:
        return "django_tasks"
    return "django.tasks"


def _first(module: Any, *names: str) -> Any:
    """The first of `names` the module has (the backport renamed some exceptions)."""
    for name in names:
        if hasattr(module, name):
            return getattr(module, name)
    raise ImportError(f"{module.__name__} has none of {', '.join(names)}")


FRAMEWORK = _framework()
_root = importlib.import_module(FRAMEWORK)
_exceptions = importlib.import_module(f"{FRAMEWORK}.exceptions")
_signals = importlib.import_module(f"{FRAMEWORK}.signals")
_base = importlib.import_module(f"{FRAMEWORK}.base")

BaseTaskBackend: Any = importlib.import_module(f"{FRAMEWORK}.backends.base").BaseTaskBackend
Task: Any = _base.Task
TaskContext: Any = _root.TaskContext
TaskError: Any = _base.TaskError
TaskResult: Any = _root.TaskResult
TaskResultStatus: Any = _root.TaskResultStatus
task_backends: Any = _root.task_backends
#: Django's own conversion of a value to JSON data (bytes decoded, tuples as lists), or None
#: if the installed framework has none.
normalize_json: Any = getattr(importlib.import_module(f"{FRAMEWORK}.utils"), "normalize_json",
                              None)
InvalidTask: type[Exception] = _first(_exceptions, "InvalidTask", "InvalidTaskError")
InvalidTaskBackend: type[Exception] = _first(_exceptions, "InvalidTaskBackend",
                                             "InvalidTaskBackendError")
TaskResultDoesNotExist: type[Exception] = _exceptions.TaskResultDoesNotExist
task_enqueued: Any = _signals.task_enqueued
task_started: Any = _signals.task_started
task_finished: Any = _signals.task_finished
