"""`JobkitBackend`: Django's tasks framework on jobkit workers.

Each enqueued task becomes a `DjangoTaskJob` (runner.py) in the task's queue, so it gets what
every jobkit job gets: at-least-once delivery, `run_after` in the durable scheduled set, the
retry and dead sets, the dashboard. Its TaskResult lives in Redis (store.py).
"""

from __future__ import annotations

import json
import time
from typing import Any

from asgiref.sync import sync_to_async

from jobkit import transactions
from jobkit.contrib.django import store
from jobkit.contrib.django.compat import (
    BaseTaskBackend,
    InvalidTask,
    InvalidTaskBackend,
    TaskResultDoesNotExist,
    task_enqueued,
)
from jobkit.contrib.django.options import BackendOptions
from jobkit.contrib.django.runner import DjangoTaskJob
from jobkit.payload import from_timestamp

__all__ = ["JobkitBackend", "jobkit_priority"]


def jobkit_priority(priority: int) -> int:
    """Django's priority (-100..100, higher first, 0 by default) -> a jobkit priority step
    (0, 3, 6, 9; lower first): above 0 -> 0, 0 -> 3, -1..-49 -> 6, -50 and below -> 9."""
    if priority > 0:
        return 0
    if priority == 0:
        return 3
    return 6 if priority > -50 else 9


class JobkitBackend(BaseTaskBackend):
    """``TASKS = {"default": {"BACKEND": "jobkit.contrib.django.JobkitBackend",
    "QUEUES": [...], "OPTIONS": {"RESULT_TTL": 86400, "MAX_RETRIES": 0}}}``."""

    supports_defer = True  # run_after: jobkit's scheduled set
    supports_async_task = True  # run to its end on the worker (Task.call)
    supports_get_result = True  # from any process, while RESULT_TTL keeps it
    supports_priority = True  # four steps per queue: see jobkit_priority

    def __init__(self, alias: str, params: dict) -> None:
        super().__init__(alias, params)
        self.jobkit_options = BackendOptions.parse(params.get("OPTIONS", {}), alias,
                                                   InvalidTaskBackend)

    def validate_task(self, task: Any) -> None:
        """Django's checks, each error naming the task and this backend."""
        try:
            super().validate_task(task)
        except InvalidTask as exc:
            message = f"{str(exc).rstrip('.')} ({task.module_path}, task backend {self.alias!r})"
            if self.queues and task.queue_name not in self.queues:
                message += f"; its QUEUES are {', '.join(map(repr, sorted(self.queues)))}"
            raise type(exc)(message) from None

    def enqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        """A READY result for the task, sent now or, inside a database transaction (jobkit's
        `enqueue_after_transaction_commit`, on by default), once it commits: the result and
        the job together, so a rollback leaves neither."""
        self.validate_task(task)
        options = self.jobkit_options
        record = store.Record(task_path=task.module_path, backend=self.alias,
                              queue_name=task.queue_name, priority=task.priority,
                              run_after=store.from_datetime(task.run_after),
                              args=list(args), kwargs=dict(kwargs), enqueued_at=time.time(),
                              result_ttl=options.result_ttl, max_retries=options.max_retries)
        result = record.task_result("pending", task)  # normalizes the arguments, or TypeError
        # As JSON gives them back (a key 1 becomes "1"): what the worker passes to the task
        # and `get_result` shows, so the result returned here says the same.
        record.args, record.kwargs = json.loads(json.dumps([result.args, result.kwargs]))
        carried = {"backend": self.alias, "queue_name": task.queue_name,
                   "priority": task.priority, "run_after": record.run_after,
                   "enqueued_at": record.enqueued_at, "result_ttl": options.result_ttl,
                   "max_retries": options.max_retries}
        job = DjangoTaskJob(task.module_path, record.args, record.kwargs, carried)
        if not transactions.hold([job], lambda _: _send(record, job)):
            _send(record, job)
        result = record.task_result(job.job_id, task)
        task_enqueued.send(type(self), task_result=result)
        return result

    async def aenqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        """`enqueue` in a thread; thread-sensitive, as Django's default, since an adapter
        like `inline` runs the task right there and it may use the database."""
        return await sync_to_async(self.enqueue, thread_sensitive=True)(task, args, kwargs)

    def get_result(self, result_id: str) -> Any:
        """The result as last written by the enqueuer or the worker;
        TaskResultDoesNotExist once RESULT_TTL has passed (or for an unknown id)."""
        record = store.load(str(result_id))
        if record is None:
            raise TaskResultDoesNotExist(result_id)
        return record.task_result(str(result_id))

    async def aget_result(self, result_id: str) -> Any:
        """`get_result` in a worker thread (only Redis is read: no need for the main one)."""
        return await sync_to_async(self.get_result, thread_sensitive=False)(result_id)


def _send(record: store.Record, job: DjangoTaskJob) -> None:
    """The result first (a worker that takes the job at once finds it), then the job; the
    result goes again if the job could not be sent (unless a worker already ran it)."""
    store.save(record, job.job_id)
    try:
        job.enqueue(queue=record.queue_name, priority=jobkit_priority(record.priority),
                    wait_until=from_timestamp(record.run_after))
    except BaseException:
        current = store.load(job.job_id)
        if current is None or current.status == "READY":
            store.forget(job.job_id)
        raise
