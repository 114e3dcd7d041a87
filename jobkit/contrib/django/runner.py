"""The jobkit job that runs one Django task on a worker: `DjangoTaskJob`, found by the
worker by its path like any job class, carrying the task's path, arguments and options.

The worker must have Django set up: with DJANGO_SETTINGS_MODULE in its environment, Celery's
Django fixup does it as the worker starts (and closes database connections around each job);
`ensure_django` covers a process where it did not run.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import traceback
from typing import Any, ClassVar

import django
from django.apps import apps
from django.conf import settings

from jobkit.contrib.django import store
from jobkit.contrib.django.compat import (
    TaskContext,
    normalize_json,
    task_backends,
    task_finished,
    task_started,
)
from jobkit.contrib.django.options import DEFAULT_RESULT_TTL_SECONDS, MAX_RETRIES_CAP
from jobkit.errors import JobkitError
from jobkit.job import Job
from jobkit.retries import sidekiq_backoff

__all__ = ["DjangoTaskJob", "TaskInterrupted", "ensure_django"]

logger = logging.getLogger(__name__)


class TaskInterrupted(Exception):  # noqa: N818  (the task was stopped, not an error of ours)
    """A task ended with a BaseException (SystemExit, ...): a failure of the task, not a
    reason to stop the worker process; the original is its __cause__."""


def ensure_django() -> None:
    """Set Django up in this process if nothing did (Celery's fixup usually has)."""
    if apps.ready:
        return
    if not settings.configured and not os.environ.get("DJANGO_SETTINGS_MODULE"):
        raise JobkitError("a Django task reached a worker without Django settings: start the "
                          "worker with DJANGO_SETTINGS_MODULE set (e.g. "
                          "DJANGO_SETTINGS_MODULE=mysite.settings jobkit worker)")
    django.setup()


class DjangoTaskJob(Job):
    """Runs `task_path` (a module-level @task function) with its arguments and records the
    outcome in the task's result. `options`: backend alias, queue_name, priority (Django's),
    run_after (Unix seconds), enqueued_at, result_ttl and max_retries, fixed at enqueue."""

    # The backend's MAX_RETRIES (in the payload) is applied by `retry_in`, below this cap.
    max_retries: ClassVar[int | None] = MAX_RETRIES_CAP

    def perform(self, task_path: str, args: list[Any], kwargs: dict[str, Any],
                options: dict[str, Any]) -> Any:
        record = store.load(self.job_id) or _record_from(task_path, args, kwargs, options)
        now = time.time()
        record.status, record.finished_at, record.return_value = "RUNNING", None, None
        record.started_at = record.started_at or now
        record.last_attempted_at = now
        record.worker_ids.append(f"{socket.gethostname()}:{os.getpid()}")
        store.save(record, self.job_id)
        try:
            ensure_django()
            backend = task_backends[record.backend]
            task = record.task()
            result = record.task_result(self.job_id, task)
            task_started.send(type(backend), task_result=result)
            value = _normalize(_call(task, result, args, kwargs))
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            final = self.executions - 1 >= self._max_retries() or self.cancelled
            _record_failure(record, self.job_id, exc, final)
            if isinstance(exc, Exception):
                raise
            raise TaskInterrupted(f"{task_path} raised {_describe(exc)}") from exc
        record.status, record.finished_at, record.return_value = "SUCCESSFUL", time.time(), value
        store.save(record, self.job_id)
        _send_finished(type(backend), record.task_result(self.job_id, task))
        return value

    def retry_in(self, retry_count: int, error: BaseException) -> float | str | None:
        """Retries up to the backend's MAX_RETRIES after Sidekiq's backoff, then the dead set
        ("kill"). The READY result is kept for the wait too, so the retry still finds it."""
        final = retry_count >= self._max_retries()
        self._record_unrecorded(error, final)
        if final:
            return "kill"
        delay = sidekiq_backoff(retry_count)
        record = store.load(self.job_id)
        if record is not None and record.status == "READY":
            store.save(record, self.job_id, wait=delay)
        return delay

    def retries_exhausted(self, error: BaseException) -> None:
        """Past the class's cap (a job sent back from the dead set many times)."""
        self._record_unrecorded(error, final=True)

    def _record_unrecorded(self, error: BaseException, final: bool) -> None:
        """A run `perform` could not record: its process was killed (a hard time limit, the
        OOM killer), and the worker records the kill without running the task. Its result
        still says RUNNING; a run that ended in `perform` already said READY or FAILED."""
        record = store.load(self.job_id)
        if record is not None and record.status == "RUNNING":
            _record_failure(record, self.job_id, error, final)

    def _max_retries(self) -> int:
        options = self.arguments[3] if len(self.arguments) > 3 else None
        if isinstance(options, dict):
            return int(options.get("max_retries", 0))
        record = store.load(self.job_id)  # the worker's stand-in for a killed run: no arguments
        return record.max_retries if record is not None else 0


def _record_failure(record: store.Record, result_id: str, exc: BaseException, final: bool) -> None:
    """Append the error; FAILED (and task_finished) when no retry follows, else READY."""
    cls = type(exc)
    record.errors.append({"exception_class_path": f"{cls.__module__}.{cls.__qualname__}",
                          "traceback": "".join(traceback.format_exception(exc))})
    record.status = "FAILED" if final else "READY"
    if final:
        record.finished_at = time.time()
    store.save(record, result_id)
    if final:
        try:
            sender, result = type(task_backends[record.backend]), record.task_result(result_id)
        except Exception as exc:  # the task or backend could not even be loaded
            logger.warning("task_finished not sent for Django task result %s (%s): %r",
                           result_id, record.task_path, exc)
            return
        _send_finished(sender, result)


def _send_finished(sender: type, result: Any) -> None:
    """`task_finished` for a result already final in Redis. A receiver's error is logged, not
    raised: raised, it would make jobkit retry or bury a task that is done."""
    for receiver, response in task_finished.send_robust(sender, task_result=result):
        if isinstance(response, Exception):
            logger.error("a task_finished receiver (%r) raised for Django task result %s",
                         receiver, result.id, exc_info=response)


def _record_from(task_path: str, args: list[Any], kwargs: dict[str, Any],
                 options: dict[str, Any]) -> store.Record:
    """A record rebuilt from the payload, when the stored one expired before the run."""
    return store.Record(task_path=task_path, backend=options["backend"],
                  queue_name=options["queue_name"], priority=options["priority"],
                  run_after=options.get("run_after"), args=args, kwargs=kwargs,
                  enqueued_at=options.get("enqueued_at"),
                  result_ttl=float(options.get("result_ttl", DEFAULT_RESULT_TTL_SECONDS)),
                  max_retries=int(options.get("max_retries", 0)))


def _call(task: Any, result: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """The task's return value (an async task is run to its end by `Task.call`)."""
    if task.takes_context:
        return task.call(TaskContext(task_result=result), *args, **kwargs)
    return task.call(*args, **kwargs)


def _describe(exc: BaseException) -> str:
    """`Class: message`, even for an exception whose str() raises."""
    try:
        return f"{type(exc).__name__}: {exc}"
    except Exception:
        return f"{type(exc).__name__} (its str() failed)"


def _normalize(value: Any) -> Any:
    """The return value as Django's backends keep it (UTF-8 bytes as str), then as JSON gives
    it back (tuples as lists); TypeError if it is not JSON data, which fails the task as
    Django's own backends do."""
    try:
        if normalize_json is not None:
            value = normalize_json(value)
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"Unsupported type: the task returned {type(value).__name__}, which "
                        f"is not JSON data ({exc})") from None
