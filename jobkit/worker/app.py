"""Settings -> the Celery app, with jobkit's reliability defaults and lazy job-class tasks.

`jobkit.celery_app` holds the app made from the current settings (`celery -A jobkit.celery_app`).
"""

from __future__ import annotations

import ssl
from typing import cast
from urllib.parse import parse_qs, urlsplit

from celery import Celery, Task, signals
from celery.app import trace  # looked up per use: an integration (Sentry's) patches it
from celery.app.registry import TaskRegistry
from celery.exceptions import NotRegistered

from jobkit.config import Settings
from jobkit.config_values import is_sentinel_url
from jobkit.errors import JobClassError
from jobkit.job import resolve_job_class
from jobkit.worker import membership
from jobkit.worker.boot import RedisPolicyCheck
from jobkit.worker.execution import JobTask
from jobkit.worker.idle import IdleExitStep
from jobkit.worker.periodic import PeriodicStep
from jobkit.worker.plain_tasks import PlainTasksStep
from jobkit.worker.poller import SchedulePollerStep
from jobkit.worker.pools import POOL_CLASSES
from jobkit.worker.shutdown import SidekiqSignals

__all__ = ["apply_settings", "create_app"]


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
        app = self.app
        if app is None:
            raise RuntimeError("JobRegistry used before create_app attached it to its app")
        task_class = type(job_class.__name__, (JobTask,), {
            "name": name, "job_class": job_class, "__module__": job_class.__module__,
        })
        task = cast(Task, app.register_task(task_class()))  # Celery returns what it was given
        # Celery declares `__trace__ = None` on Task and stores each task's tracer there.
        task.__trace__ = trace.build_tracer(  # pyright: ignore[reportAttributeAccessIssue]
            name, task, app.loader, app=app)
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
        worker_consumer="jobkit.worker.consumer:Consumer",
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=True,
    )
    steps = cast(dict[str, set[type]], celery.steps)  # None only as Celery's class default
    steps["worker"].update({SchedulePollerStep, PeriodicStep, IdleExitStep, RedisPolicyCheck,
                            PlainTasksStep})
    steps["consumer"].add(SidekiqSignals)
    apply_settings(celery, settings)
    return celery


def apply_settings(celery: Celery, settings: Settings) -> None:
    """Point an app at the settings' broker, queue order and pool (again by the CLI after
    -C)."""
    sentinel = is_sentinel_url(settings.redis_url)
    options: dict = {"jobkit_queue_weights": dict(settings.queues),
                     "jobkit_queue_order": settings.queue_order}
    if sentinel:
        options["master_name"] = settings.sentinel_master
    celery.conf.update(
        broker_url=settings.redis_url,
        broker_use_ssl=_tls_options(settings.redis_url),
        broker_transport="jobkit.worker.transport:"
                         + ("SentinelTransport" if sentinel else "Transport"),
        broker_transport_options=options,
        worker_pool=POOL_CLASSES[settings.pool],  # Celery's default -P takes it (cli.py)
        # From the worker's start, not only once Flower asks (enable_events): no job unseen.
        worker_send_task_events=settings.task_events,
    )


@signals.worker_shutdown.connect
def _leave_at_shutdown(**_: object) -> None:
    """The worker has stopped and its pool is idle: hand back what it fetched but never ran."""
    membership.leave()

def _tls_options(url: str) -> dict | None:
    """TLS for rediss:// URLs. kombu turns it on from the URL scheme only for its own
    transport names, so with jobkit's transport it must be said (certificates are checked
    unless the URL says ssl_cert_reqs=none)."""
    if not url.startswith("rediss://"):
        return None
    wanted = parse_qs(urlsplit(url).query).get("ssl_cert_reqs", ["required"])[-1].lower()
    modes = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL}
    return {"ssl_cert_reqs": modes.get(wanted.removeprefix("cert_"), ssl.CERT_REQUIRED)}
