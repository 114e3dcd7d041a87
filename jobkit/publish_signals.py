"""Celery's ``before_task_publish`` / ``after_task_publish`` signals for jobkit's own pushes.

Why: jobkit builds its messages itself (celery_message.py), so Celery's `send_task_message`,
which fires these signals, never runs. Tracing and error-reporting tools hook them: an
OpenTelemetry or other receiver adds its trace headers to ``headers`` before the push, and the
worker reads them back from the task's request. So the enqueue path fires them, with the
arguments Celery passes. When nothing listens (the usual case) `listening` is the only cost.
"""

from __future__ import annotations

import contextvars
import functools
import json
import logging
from typing import Any, cast

from celery import Celery, Task, current_app, signals
from celery.app.registry import TaskRegistry
from kombu.entity import Queue

from jobkit.celery_message import build_message, encode, job_envelope, task_body

__all__ = ["Publication", "listening", "message_for"]

logger = logging.getLogger(__name__)

# jobkit does not retry a push (a failed enqueue raises), so its policy says so.
_NO_RETRY: dict[str, Any] = {"max_retries": 0}


def listening() -> bool:
    """Whether anything receives either signal (a list read: call it once per enqueue)."""
    return bool(signals.before_task_publish.receivers or signals.after_task_publish.receivers)


def message_for(payload: dict[str, Any], task_id: str,
                published: list[Publication] | None = None) -> tuple[str, str]:
    """`build_message`, and given a `published` list (when `listening`), with
    ``before_task_publish`` fired while its headers can change: the `Publication` is appended
    for the caller to fire `after` once the message is stored."""
    if published is None:
        return build_message(payload, task_id)
    key, envelope = job_envelope(payload, task_id)
    body = task_body([payload])
    published.append(Publication(payload["job_class"], envelope, body, payload["queue_name"]))
    try:
        return key, encode(envelope, body)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{payload['job_class']}: a before_task_publish receiver left "
                        f"{_unencodable(envelope)}, which JSON cannot encode ({exc})") from None


def _unencodable(envelope: dict[str, Any]) -> str:
    """Which header or property a receiver set to something JSON cannot encode."""
    for part in ("headers", "properties"):
        for name, value in envelope[part].items():
            try:
                json.dumps(value)
            except (TypeError, ValueError):
                return f"{part}[{name!r}] = {value!r}"
    return "the message body changed"


class Publication:
    """One message's pair of signals: `before` while its headers can still change, `after`
    once it is in Redis (as Celery: not after a push that failed).

    Each message's receivers run in their own copy of the caller's context (the same copy
    for both signals), so what a receiver makes current in `before` (a tracer's producer
    span) is current again in its `after`, and never leaks to the caller or to the next
    message of a bulk enqueue."""

    __slots__ = ("body", "context", "headers", "name", "routing_key")

    def __init__(self, name: str, message: dict[str, Any], body: tuple, queue: str) -> None:
        self.name, self.body, self.headers, self.routing_key = name, body, message["headers"], queue
        self.context = contextvars.copy_context()
        self.context.run(_known_to_celery, name)
        self.context.run(
            signals.before_task_publish.send, sender=name, body=body, exchange="",
            routing_key=queue, headers=self.headers, properties=message["properties"],
            declare=[_queue(queue)], retry_policy=dict(_NO_RETRY))

    def after(self) -> None:
        self.context.run(
            signals.after_task_publish.send, sender=self.name, body=self.body,
            headers=self.headers, exchange="", routing_key=self.routing_key)


@functools.lru_cache(maxsize=256)
def _queue(name: str) -> Queue:
    """The queue Celery would name in ``declare``: a direct one on the default exchange."""
    return Queue(name, routing_key=name)


def _known_to_celery(name: str) -> None:
    """Make sure the current Celery app's registry answers for this job class's task name.

    Receivers look the sender up there (OpenTelemetry's keeps its producer span on the task
    it finds; with none, that span is never ended). A worker's jobkit app builds the real task
    on demand (`JobRegistry.__missing__`); any other app gets a stand-in that only names it.
    An app whose registry cannot be read (not finalized, with autofinalize off) is left alone:
    the enqueue goes on, and this is logged once per name."""
    try:
        app = cast(Celery, current_app)  # the proxy hides its type
        tasks = cast(TaskRegistry, app.tasks)
        if name in tasks:
            return
        try:
            tasks[name]  # a registry that builds it when missing (jobkit's worker app)
        except KeyError:  # Celery's NotRegistered is a KeyError
            app.register_task(_stand_in(name))  # bound: calling it raises below
    except Exception as exc:  # never fail an enqueue for what receivers look up
        if name not in _unregistered:
            _unregistered.add(name)
            logger.warning("cannot register %s in the current Celery app's tasks for the publish "
                           "signals' receivers (a tracer may not end its span): %r", name, exc)


_unregistered: set[str] = set()


def _stand_in(name: str) -> Task:
    """A task that only carries a job class's name: such jobs run on `jobkit worker`."""

    def run(*_: Any, **__: Any) -> None:
        raise RuntimeError(f"{name} is a jobkit job: `jobkit worker` runs it, not this Celery "
                           f"app's worker")

    task_class = type(name.rpartition(".")[2] or name, (Task,), {
        "name": name, "run": staticmethod(run), "ignore_result": True, "typing": False,
        "__module__": __name__})
    return task_class()
