"""Plain Celery tasks (`@app.task`, `@shared_task`) on a jobkit worker, with jobkit's guarantees.

Why: Celery acknowledges a plain task that failed for good (its record would be only in a result
backend, which jobkit has none of), keeps `countdown`/`eta` messages in the worker's memory
(invisible, not cancellable, a timer per message) and publishes to a default queue named
`celery` that a jobkit worker did not consume. Here:

- a plain task that fails for good (an exception without a retry, retries exhausted, its pool
  process killed or exited by SystemExit/KeyboardInterrupt, its hard time limit hit) is kept
  in the dead set before the message is acknowledged (`PlainRequest`), and can be retried
  from there as the same task;
- a message whose `eta` is more than PARK_AFTER_SECONDS away is moved from the worker's
  in-flight keys to the scheduled set in one Lua step before Celery sees it (`park`), and the
  poller pushes it back to its queue when it is due, as it does jobkit's delayed jobs;
- a worker with plain tasks registered also consumes `celery` (`PlainTasksStep`), unless its
  queues were given with `-q`.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
import logging
import time
import uuid
from typing import Any

import redis
from billiard.einfo import ExceptionWithTraceback
from billiard.exceptions import WorkerLostError
from celery import bootsteps
from celery.exceptions import Ignore, Reject, Retry, Terminated, TimeLimitExceeded
from celery.utils.imports import symbol_by_name
from celery.utils.serialization import get_pickled_exception
from celery.worker import state as worker_state

from jobkit import keys
from jobkit.imports import class_path
from jobkit.job_sets import BACKTRACE_LINES, entry_member
from jobkit.redis_client import get_redis
from jobkit.worker import envelope, shutdown
from jobkit.worker.execution import JobTask

__all__ = ["CELERY_QUEUE", "PARK_AFTER_SECONDS", "PlainRequest", "PlainTasksStep", "adopt",
           "extra_queues", "is_plain", "park"]

logger = logging.getLogger(__name__)

CELERY_QUEUE = "celery"  # Celery's task_default_queue
#: The app's conf key the CLI sets when `jobkit worker` was given its queues with -q.
QUEUES_GIVEN = "jobkit_queues_given"
#: An eta nearer than this is left to Celery's in-memory timer (the message stays in the
#: worker's in-flight keys meanwhile): the poller, every `poll_interval`, would push it back
#: later than that timer runs it.
PARK_AFTER_SECONDS = 1.0

_KILLED = (WorkerLostError, TimeLimitExceeded)  # the run's process was killed
# Raised by the task, these end its pool process; Celery reports them as a lost process.
_EXITED = (SystemExit, KeyboardInterrupt)
_GONE = (*_KILLED, *_EXITED)
_added: list[str] = []  # queues PlainTasksStep added to this worker's

# KEYS: unacked, unacked_index, schedule, queues. ARGV: tag, due, member, queue.
# Only a message still in flight here is parked: one handed back meanwhile is in its queue.
_PARK = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[3])
redis.call('SADD', KEYS[4], ARGV[4])
return 1
"""


def is_plain(task: Any) -> bool:
    """A task of the app's own code: not a Job class's task, not one of Celery's built-ins."""
    return not isinstance(task, JobTask) and not str(task.name).startswith("celery.")


def adopt(task: Any) -> None:
    """Give a plain task's requests the dead set (before Celery builds its strategy)."""
    request_class: Any = symbol_by_name(task.Request)
    if not issubclass(request_class, PlainRequest):
        task.Request = type(f"Plain{request_class.__name__}", (PlainRequest, request_class), {})


def extra_queues() -> list[str]:
    """Queues this worker consumes besides its settings' (for the heartbeat)."""
    return list(_added)


def eta_of(raw: dict[str, Any]) -> float | None:
    """The message's `eta` header as a Unix time (naive: UTC, as Celery writes it), or None."""
    eta = (raw.get("headers") or {}).get("eta")
    if not isinstance(eta, str):
        return None
    parsed = envelope.parse_time(eta)  # envelope.problem checked it
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)).timestamp()


def park(client: redis.Redis, raw: dict[str, Any], list_key: str, tag: str, unacked_key: str,
         unacked_index_key: str) -> bool:
    """Move a message due later from this worker's in-flight keys to the scheduled set, in one
    step; True when the message is no longer this worker's to deliver."""
    due = eta_of(raw)
    if due is None or due - time.time() <= PARK_AFTER_SECONDS:
        return False
    headers = raw.get("headers") or {}
    queue = keys.queue_of(list_key)
    # Without its eta: when due (or run now from the dashboard) it runs at once, and a worker
    # whose clock is behind the poller's does not park it again.
    text = json.dumps(_as_kept(raw, "eta"))  # parked before the fetch's note is added
    member = entry_member(list_key, text, job_id=headers.get("id"),
                          job_class=headers.get("task"), queue=queue,
                          payload=_arguments(raw), retry_count=headers.get("retries") or 0)
    parked = client.register_script(_PARK)(
        keys=[unacked_key, unacked_index_key, keys.SCHEDULE, keys.QUEUES],
        args=[tag, due, member, queue])
    if parked:
        logger.info("jobkit: %s[%s] is due at %s: kept in the scheduled set until then",
                    headers.get("task"), headers.get("id"), headers.get("eta"))
    return True


class PlainRequest:
    """Mixed into a plain task's Celery request class: a failure for good goes to the dead set
    before Celery acknowledges the message (Celery's own handling follows, unchanged)."""

    _jobkit_buried = False

    def on_failure(self, exc_info: Any, send_failed_event: bool = True,
                   return_ok: bool = False) -> Any:
        exc = exc_info.exception
        if isinstance(exc, ExceptionWithTraceback):
            exc = exc.exc
        if _for_good(self, exc) and not self._bury(exc, exc_info.traceback):
            return None
        # A killed run is then rejected with requeue by Celery (reject_on_worker_lost, or
        # acks_on_timeout off): kombu's restore_by_tag finds no in-flight record left, so
        # nothing goes back to the queue.
        return super().on_failure(exc_info, send_failed_event, return_ok)  # type: ignore[misc]

    def on_timeout(self, soft: bool, timeout: float) -> None:
        if not soft and not _stopping() and not _cancelled(self) \
                and not self._bury(TimeLimitExceeded(timeout), ""):
            return
        super().on_timeout(soft, timeout)  # type: ignore[misc]

    def _bury(self, error: BaseException, backtrace: str) -> bool:
        """Keep the message in the dead set, out of the in-flight keys; False when Redis did
        not take it (the message then goes back to its queue). A message no longer in this
        worker's in-flight keys (taken for dead: the reaper handed it to another worker) is
        not kept again, unless the task acknowledges at start (`acks_late=False`)."""
        if self._jobkit_buried:  # the timeout and the lost process report one kill
            return True
        self._jobkit_buried = True
        me: Any = self
        message = me.message
        raw = message._raw
        properties = raw.get("properties") or {}
        headers = raw.get("headers") or {}
        # The list the fetch popped it from: a retry from the dead set pushes it back there
        # (the routing key need not name the queue).
        list_key = envelope.fetched_from(raw) or keys.list_key(
            (properties.get("delivery_info") or {}).get("routing_key") or CELERY_QUEUE,
            properties.get("priority"))
        retries = headers.get("retries") or 0
        error = get_pickled_exception(error)
        info = {"job_id": me.id, "job_class": me.name, "queue": keys.queue_of(list_key),
                "payload": {"args": list(me.args), "kwargs": dict(me.kwargs)},
                "retry_count": retries, "reason": _reason(me.task, retries, error),
                "error_class": class_path(type(error)),
                "backtrace": [line for line in str(backtrace or "").splitlines()
                              if line.strip()][-BACKTRACE_LINES:]}
        try:
            # No eta (used up) nor expires: Celery would silently discard a task retried by
            # hand after its expiry.
            kept = message.channel.jobkit_bury(
                message.delivery_tag, json.dumps(_as_kept(raw, "eta", "expires")), list_key,
                error, held_only=bool(getattr(me.task, "acks_late", True)), **info)
        except redis.RedisError:
            logger.exception("cannot keep failed task %s[%s] in the dead set; handing it back "
                             "to its queue", me.name, me.id)
            me.reject(requeue=True)
            return False
        if not kept:
            logger.warning("task %s[%s] failed for good (%s), but this worker was taken for "
                           "dead meanwhile and its message handed to another: not kept twice",
                           me.name, me.id, info["reason"])
            return True
        logger.error("task %s[%s] failed for good (%s); kept in the dead set", me.name, me.id,
                     info["reason"])
        return True


class PlainTasksStep(bootsteps.Step):
    """Worker bootstep: with plain tasks registered, consume Celery's default queue too (last
    in strict order, weight 1), and list it on the dashboard."""

    label = "jobkit plain tasks"

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        app = parent.app
        plain = sorted(name for name, task in app.tasks.items() if is_plain(task))
        queues = app.amqp.queues
        consumed = set(queues.consume_from or queues)
        # Given its queues with -q, a worker consumes those only (the CLI says so in the conf:
        # it hands Celery -Q either way).
        if not plain or CELERY_QUEUE in consumed or app.conf.get(QUEUES_GIVEN, False):
            return
        queues.select_add(CELERY_QUEUE)
        _added[:] = [CELERY_QUEUE]
        logger.info("jobkit: plain Celery tasks registered (%s): consuming queue %r too",
                    ", ".join(plain[:5]) + (", ..." if len(plain) > 5 else ""), CELERY_QUEUE)
        try:
            get_redis().sadd(keys.QUEUES, CELERY_QUEUE)  # the dashboard and `jobkit queues`
        except redis.RedisError as exc:
            logger.warning("jobkit: cannot list queue %r for the dashboard yet: %s",
                           CELERY_QUEUE, type(exc).__name__)


def _cancelled(request: Any) -> bool:
    """Revoked (Celery recorded it and acknowledged the message) or cancelled at a lost
    connection (Celery leaves the message for redelivery): not a failure of the task."""
    return bool(getattr(request, "_already_revoked", False)
                or getattr(request, "_already_cancelled", False))


def _for_good(request: Any, exc: BaseException) -> bool:
    """Whether Celery is about to drop this message for good after `exc`."""
    if isinstance(exc, Retry | Ignore | Reject | MemoryError | Terminated) or _cancelled(request):
        # Celery's own ways: a retry was sent; the task chose; the worker runs out of memory
        # (it stops); revoked or cancelled (Celery records the revoke, or redelivers)
        return False
    if isinstance(exc, _GONE):
        if _stopping():
            return False  # handed back to its queue, as a job of a stopping worker
        task = request.task
        retries = (request.message._raw.get("headers") or {}).get("retries") or 0
        if isinstance(exc, (WorkerLostError, *_EXITED)) \
                and getattr(task, "retry_on_worker_lost", False) \
                and (task.max_retries is None or retries < task.max_retries):
            return False  # Celery sends a retry
    return True


def _stopping() -> bool:
    return (shutdown.terminating or shutdown.handing_back
            or worker_state.should_stop not in (None, False)
            or worker_state.should_terminate not in (None, False))


def _reason(task: Any, retries: int, error: BaseException) -> str:
    if isinstance(error, _GONE):
        return "killed"
    max_retries = getattr(task, "max_retries", None)
    if retries and max_retries is not None and retries >= max_retries:
        return f"{retries} retries exhausted"
    return "failed without a retry"


def _arguments(raw: dict[str, Any]) -> dict[str, Any] | None:
    """The message's args and kwargs, for people (the scheduled set's entry)."""
    try:
        body = raw["body"]
        if (raw.get("properties") or {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args, kwargs, _embed = json.loads(body)
    except (KeyError, TypeError, ValueError):
        return None
    return {"args": args, "kwargs": kwargs}


def _as_kept(raw: dict[str, Any], *dropped: str) -> dict[str, Any]:
    """The message as it goes back to its queue later: a new delivery tag (the old one may
    still be acknowledged), without the `dropped` headers."""
    kept = copy.deepcopy(envelope.without_note(raw))
    kept.setdefault("properties", {})["delivery_tag"] = str(uuid.uuid4())
    headers = kept.get("headers") or {}
    for name in dropped:
        headers.pop(name, None)
    return kept
