"""The worker's consumer: lazy job tasks, and the dead set for messages Celery would drop."""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any

from celery import signals
from celery.app import trace  # looked up per use: an integration (Sentry's) patches it
from celery.worker import state as worker_state
from celery.worker.consumer import Consumer as CeleryConsumer

from jobkit.errors import JobClassError
from jobkit.job import resolve_job_class
from jobkit.keys import list_key
from jobkit.worker import envelope, plain_tasks

__all__ = ["Consumer"]

logger = logging.getLogger(__name__)


class _LazyStrategies(dict):
    """Celery's strategy map, building the strategy of a Job class met for the first time."""

    def __init__(self, consumer: Consumer) -> None:
        super().__init__()
        self.consumer = consumer

    def __missing__(self, name: str) -> Any:
        app = self.consumer.app
        if app is None:
            raise RuntimeError("jobkit's Consumer is made by a Celery worker, which gives its app")
        try:
            task = app.tasks[name]
        except KeyError:  # NotRegistered: on_unknown_task below takes over
            raise KeyError(name) from None
        if plain_tasks.is_plain(task):
            plain_tasks.adopt(task)
        task.__trace__ = trace.build_tracer(name, task, app.loader, self.consumer.hostname, app=app)
        strategy = self[name] = task.start_strategy(app, self.consumer)
        return strategy


class Consumer(CeleryConsumer):
    """Celery's consumer with lazy job resolution; unknown jobs go to the dead set, not away."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.strategies = _LazyStrategies(self)

    def update_strategies(self) -> None:
        """Celery builds the strategies of the tasks registered at start here: plain tasks
        (`@shared_task`, `@app.task`) get the dead set first (plain_tasks.py)."""
        app = self.app
        if app is not None:
            for task in app.tasks.values():
                if plain_tasks.is_plain(task):
                    plain_tasks.adopt(task)
        super().update_strategies()

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        """Keep the message in the dead set, then ack it.

        Celery's own handler logs "ignored and discarded" and drops the message; the only parts
        of it kept here are the reject (ack) and the signal, after the message is safe.
        """
        name = message.headers.get("task")
        reason = JobClassError(f"unknown job class {name!r}: {_why_unknown(name)}")
        _keep(message, reason)
        logger.error("%s; the job is kept in the dead set: retry it once the code is deployed",
                     reason)
        message.reject_log_error(logger, self.connection_errors)
        signals.task_unknown.send(sender=self, message=message, exc=exc, name=name,
                                  id=message.headers.get("id"))

    def on_close(self) -> None:
        """At a reconnect (and when the consumer closes at shutdown), keep the jobs fetched but
        not started.

        Celery forgets them, as their delivery tags "can't be acked anyway" on a new channel,
        and counts on the broker to deliver them again: kombu's hand-back on close. With
        jobkit's transport they stay in this worker's own in-flight keys and acks from the old
        channel still work, so they run here, once. Forgetting them would hand them back while
        a prefork pool process may already be running one (Celery discards its record of a job
        written to a pool process that has not confirmed it yet, but the process runs it).
        Only ETA requests (plain Celery countdown messages due within
        plain_tasks.PARK_AFTER_SECONDS; later ones are parked in the scheduled set) are
        forgotten, their timers
        cancelled, for the transport to hand back (transport.Channel._reconcile). At shutdown,
        a kept job either starts within `timeout` or is handed back by membership.leave.
        """
        for request in tuple(worker_state.scheduled_requests):
            entry = getattr(request, "_eta_timer_entry", None)
            if entry is not None and self.timer is not None:
                with contextlib.suppress(Exception):
                    self.timer.cancel(entry)
            if request not in worker_state.reserved_requests:
                worker_state.requests.pop(request.id, None)
        worker_state.scheduled_requests.clear()

    # Celery acks or rejects these and only logs them; keep them in the dead set first.

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        _keep(message, exc)
        super().on_invalid_task(body, message, exc)

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        _keep(message, exc)
        super().on_decode_error(message, exc)

    def on_unknown_message(self, body: Any, message: Any) -> None:
        _keep(message, "not a Celery task message")
        super().on_unknown_message(body, message)


def _keep(message: Any, reason: BaseException | str) -> None:
    """Move a message the worker will not run from its in-flight keys to the dead set, in one
    step, as received (the acknowledgement Celery sends after this finds nothing left)."""
    try:
        payload = _payload_of(message)
    except Exception:  # a body we cannot read is kept as it is
        payload = None
    raw = message._raw
    properties = raw.get("properties", {})
    # The list it was popped from: a retry from the dead set pushes it back there (the
    # routing key need not name the queue).
    key = envelope.fetched_from(raw) or list_key(
        properties.get("delivery_info", {}).get("routing_key") or "default",
        properties.get("priority"))
    job = payload if isinstance(payload, dict) else {}
    headers = raw.get("headers") or {}
    message.channel.jobkit_bury(message.delivery_tag, json.dumps(envelope.without_note(raw)),
                                key, reason,
                                job_id=job.get("job_id"), job_class=headers.get("task"),
                                queue=job.get("queue_name"), payload=payload)


def _why_unknown(name: Any) -> str:
    try:
        resolve_job_class(name)
    except JobClassError as exc:
        return str(exc)
    return "not a task this worker can run"


def _payload_of(message: Any) -> Any:
    args, _kwargs, _embed = message.decode()
    return args[0]
