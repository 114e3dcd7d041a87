"""@task functions for the JobkitBackend tests: Django's own tests/tasks/tasks.py cases that
matter on a worker, plus one that fails once. The framework's signals are recorded in Redis
(list `django-test:signals`) by whichever process sends them."""

from __future__ import annotations

import functools
import os
import signal
from typing import Any

from django_tasks import TaskContext, task
from django_tasks.signals import task_enqueued, task_finished, task_started

from jobkit.redis_client import get_redis

SIGNALS_KEY = "django-test:signals"


@task()
def calculate_meaning_of_life() -> int:
    return 42


@task()
async def noop_task_async(*args: Any, **kwargs: Any) -> list[Any]:
    return [args, kwargs]


@task()
def failing_task_value_error() -> None:
    raise ValueError("This task failed due to ValueError")


@task()
def failing_task_system_exit() -> None:
    raise SystemExit("This task failed due to SystemExit")


@task()
def complex_return_value() -> Any:
    return lambda: True  # neither JSON nor picklable


@task(takes_context=True)
def get_task_id(context: TaskContext) -> str:
    return context.task_result.id


@task(takes_context=True, backend="retrying")
def fail_on_first_attempt(context: TaskContext) -> int:
    if context.attempt == 1:
        raise RuntimeError("first attempt fails")
    return context.attempt


@task(queue_name="ordered")
def record_order(name: str) -> str:
    get_redis().rpush("django-test:order", name)
    return name


def _record(name: str, sender: type, task_result: Any, **_: Any) -> None:
    get_redis().rpush(SIGNALS_KEY, f"{name}:{sender.__name__}:{task_result.id}:"
                                   f"{task_result.status}")


for _signal, _name in ((task_enqueued, "enqueued"), (task_started, "started"),
                       (task_finished, "finished")):
    _signal.connect(functools.partial(_record, _name), weak=False,
                    dispatch_uid=f"jobkit-tests-{_name}")


@task()
def killed() -> None:
    """Its process is killed mid-run (as by the OOM killer or a hard time limit)."""
    os.kill(os.getpid(), signal.SIGKILL)


@task(backend="retrying")
def finished_receiver_fails() -> int:
    """Succeeds; a task_finished receiver then raises (below), which must not rerun it."""
    return 7


def _raise_for_one_task(sender: type, task_result: Any, **_: Any) -> None:
    if task_result.task.name == "finished_receiver_fails":
        raise RuntimeError("a task_finished receiver failed")


def _stale_when_started(sender: type, task_result: Any, **_: Any) -> None:
    """A run that starts over (a result sent again from the dead set) must not show the end
    of the run before it."""
    if task_result.finished_at is not None:
        get_redis().rpush("django-test:stale", task_result.id)


task_finished.connect(_raise_for_one_task, weak=False, dispatch_uid="jobkit-tests-raise")
task_started.connect(_stale_when_started, weak=False, dispatch_uid="jobkit-tests-stale")


@task()
def bytes_return_value() -> Any:
    """Django's backends keep UTF-8 bytes as str: so must this one."""
    return {"raw": b"caf\xc3\xa9", 1: (2, 3)}


class UnprintableExit(SystemExit):
    def __str__(self) -> str:
        raise RuntimeError("no str for this one")


@task()
def unprintable_exit() -> None:
    raise UnprintableExit
