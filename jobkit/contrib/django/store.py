"""A Django task's result in Redis: one JSON string per result id, kept `RESULT_TTL` seconds
after its last change (longer while a deferred task waits: see `save`).

Only one process writes a record at a time: the enqueuer creates it before the job is sent,
then the worker running the job updates it; so a plain SET, no script, is enough.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from django.conf import settings
from django.utils import timezone
from django.utils.module_loading import import_string

from jobkit import keys
from jobkit.contrib.django.compat import Task, TaskError, TaskResult, TaskResultStatus
from jobkit.contrib.django.options import DEFAULT_RESULT_TTL_SECONDS
from jobkit.redis_client import get_redis

__all__ = ["Record", "forget", "from_datetime", "load", "result_key", "save", "to_datetime"]


def result_key(result_id: str) -> str:
    """The result's key (`jobkit:django:result:<id>`, the id being the jobkit job id)."""
    return keys.django_task_result(result_id)


@dataclass
class Record:
    """What a TaskResult holds, as stored: times are Unix seconds, the task is its path and
    the options it was enqueued with."""

    task_path: str
    backend: str
    queue_name: str
    priority: int
    run_after: float | None
    args: list[Any]
    kwargs: dict[str, Any]
    status: str = "READY"
    enqueued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    last_attempted_at: float | None = None
    errors: list[dict[str, str]] = field(default_factory=list)
    worker_ids: list[str] = field(default_factory=list)
    return_value: Any = None
    # The backend's options at enqueue, for the worker (also where the job has no arguments).
    result_ttl: float = DEFAULT_RESULT_TTL_SECONDS
    max_retries: int = 0

    def task(self) -> Any:
        """The Task, imported by its path and given the options it was enqueued with."""
        found = import_string(self.task_path)
        if not isinstance(found, Task):
            raise TypeError(f"{self.task_path} is {found!r}, not a task (decorate the function "
                            f"with @task)")
        return found.using(priority=self.priority, queue_name=self.queue_name,
                           run_after=to_datetime(self.run_after), backend=self.backend)

    def task_result(self, result_id: str, task: Any = None) -> Any:
        """The TaskResult Django's API hands out (`task`: the Task, if already imported)."""
        result = TaskResult(
            task=task if task is not None else self.task(), id=result_id,
            status=TaskResultStatus(self.status), enqueued_at=to_datetime(self.enqueued_at),
            started_at=to_datetime(self.started_at), finished_at=to_datetime(self.finished_at),
            last_attempted_at=to_datetime(self.last_attempted_at), args=self.args,
            kwargs=self.kwargs, backend=self.backend,
            errors=[TaskError(**error) for error in self.errors],
            worker_ids=list(self.worker_ids))
        object.__setattr__(result, "_return_value", self.return_value)  # a frozen dataclass
        return result


def save(record: Record, result_id: str, wait: float = 0.0) -> None:
    """Write the record, to expire its `result_ttl` seconds from now, or from its `run_after`
    or the end of `wait` (seconds) if later: a record must outlive the wait of its task, for
    its run_after or a retry."""
    if record.status == "READY":
        wait = max(wait, (record.run_after or 0.0) - time.time())
    wait = max(0.0, wait)
    get_redis().set(result_key(result_id), json.dumps(asdict(record)),
                    px=max(1, int((record.result_ttl + wait) * 1000)))


def load(result_id: str) -> Record | None:
    """The record, or None once expired (or never written)."""
    raw = get_redis().get(result_key(result_id))
    return None if raw is None else Record(**json.loads(raw))


def forget(result_id: str) -> None:
    """Drop the record (its job could not be sent)."""
    get_redis().delete(result_key(result_id))


def from_datetime(value: dt.datetime | None) -> float | None:
    """Unix seconds; a naive datetime is in Django's current time zone (as with USE_TZ off)."""
    if value is None:
        return None
    if timezone.is_naive(value):
        value = timezone.make_aware(value)
    return value.timestamp()


def to_datetime(value: float | None) -> dt.datetime | None:
    """As Django's own times are: aware UTC with USE_TZ on, naive local time with it off."""
    if value is None:
        return None
    moment = dt.datetime.fromtimestamp(value, dt.UTC)
    return moment if settings.USE_TZ else timezone.make_naive(moment)
