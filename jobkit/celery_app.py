"""Settings -> the Celery app, with jobkit's reliability defaults and lazy job-class tasks.

`celery -A jobkit.celery_app ...` (Flower, inspect) finds the app here as `app`.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, Task
from celery.app.registry import TaskRegistry
from celery.app.trace import build_tracer
from celery.exceptions import NotRegistered, Reject

from jobkit.celery_message import build_task_message
from jobkit.config import Settings, current_settings
from jobkit.errors import JobClassError
from jobkit.job import Job, resolve_job_class
from jobkit.retries import DeadSet
from jobkit.worker import RedisPolicyCheck, SchedulePollerStep

__all__ = ["JobTask", "app", "apply_settings", "create_app"]

logger = logging.getLogger(__name__)


class JobTask(Task):
    """The Celery task of one Job class: rebuild the job from its payload and perform it.

    A job that fails, or whose payload, class or arguments cannot be rebuilt, goes to the dead
    set before the error propagates, so Celery's ack never drops it.
    """

    job_class: type[Job]
    typing = False  # arguments are checked against perform() at enqueue, by jobkit

    def run(self, payload: Any) -> Any:
        try:
            return Job.deserialize(payload, self.request.id).perform_now()
        except Exception as exc:
            self._bury(payload, exc)
            logger.error("job %s failed; moved to the dead set: %s", self.name, exc)
            raise

    def _bury(self, payload: Any, error: Exception) -> None:
        """Keep the message as received (payload unchanged, readable or not) in the dead set.

        If even that fails (Redis gone), the message is handed back to its queue instead of
        being acked, so the job is not lost.
        """
        request = self.request
        info = request.delivery_info or {}
        key, message = build_task_message(
            self.name, request.id, [payload], info.get("routing_key") or "default",
            info.get("priority"), retries=request.retries or 0,
            argsrepr=getattr(request, "argsrepr", None) or "",
            kwargsrepr=getattr(request, "kwargsrepr", None) or "",
        )
        try:
            DeadSet().add(key, message, payload, error)
        except Exception as exc:
            logger.exception("cannot record failed job %s in the dead set; requeued", request.id)
            raise Reject(exc, requeue=True) from error


class JobRegistry(TaskRegistry):
    """Celery's registry, plus: a missing name that is a Job's import path registers that Job.

    Why: Celery only runs tasks registered before it starts; jobkit runs any importable Job
    (in the consumer and in every pool child) without a list of modules.
    """

    app: Celery | None = None

    def __missing__(self, name: str) -> Task:
        try:
            job_class = resolve_job_class(name)
        except JobClassError as exc:
            raise NotRegistered(f"{name}: {exc}") from None
        task_class = type(job_class.__name__, (JobTask,), {
            "name": name, "job_class": job_class, "__module__": job_class.__module__,
        })
        task = self.app.register_task(task_class())
        task.__trace__ = build_tracer(name, task, self.app.loader, app=self.app)
        return task


def create_app(settings: Settings) -> Celery:
    registry = JobRegistry()
    celery = Celery("jobkit", tasks=registry, set_as_current=False)
    registry.app = celery
    celery.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue="default",
        task_create_missing_queues=True,
        worker_consumer="jobkit.worker:Consumer",
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=True,
    )
    celery.steps["worker"].update({SchedulePollerStep, RedisPolicyCheck})
    apply_settings(celery, settings)
    return celery


def apply_settings(celery: Celery, settings: Settings) -> None:
    """Point an app at the settings' broker and queue order (again by the CLI after -C)."""
    celery.conf.update(
        broker_url=settings.redis_url,
        broker_transport="jobkit.transport:Transport",
        broker_transport_options={
            "jobkit_queue_weights": dict(settings.queues),
            "jobkit_queue_order": settings.queue_order,
        },
    )


app = create_app(current_settings())

