"""How a worker runs one job: the Celery task of a Job class, and what follows a failure.

Every outcome leaves the job somewhere: done (acked), in the retry set, in the dead set,
discarded on purpose, or, if Redis cannot even take the failure record, back in its queue.
A job of a batch has its outcome counted in the batch before that (jobkit.batch.state), so a
crash in between runs the job again rather than leave the batch waiting for it.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
import uuid
from typing import Any

import redis
from celery import Task
from celery.exceptions import Reject, Retry
from redis.exceptions import ReadOnlyError

from jobkit import cancellation, metrics, references, stats, transactions
from jobkit.batch import state as batch_state
from jobkit.celery_message import build_message, build_task_message
from jobkit.controls import concurrency
from jobkit.controls.release import released
from jobkit.controls.unique import release_lock
from jobkit.errors import JobKilled, JobkitError, OverLimit
from jobkit.iteration import Interrupted
from jobkit.iteration.stop import run_by_worker
from jobkit.job import Job
from jobkit.job_sets import DeadSet, RetrySet, ScheduledSet, describe_error
from jobkit.publish_signals import Publication, listening, message_for
from jobkit.redis_client import get_redis
from jobkit.retries import decide

__all__ = ["JobTask"]

logger = logging.getLogger(__name__)

# A job over a rate limit waits the limiter's retry_after, plus n × this (jittered), the
# backoff at most OVER_LIMIT_MAX_SECONDS.
OVER_LIMIT_STEP_SECONDS = 5.0
OVER_LIMIT_MAX_SECONDS = 600.0

# A failure's decision (retries.decide) as a batch member's outcome; any other: dead.
_BATCH_OUTCOMES: dict[str, batch_state.Outcome] = {"discard": "discarded", "retry": "failing"}


class JobTask(Task):
    """The Celery task of one Job class: rebuild the job from its payload and perform it."""

    job_class: type[Job]
    name: str  # the Job's import path, given by JobRegistry
    typing = False  # arguments are checked against perform() at enqueue, by jobkit
    Request = "jobkit.worker.request:JobRequest"

    def run(self, payload: Any) -> Any:
        stats.count("processed")
        transactions.reset()  # a session an earlier job left open holds nothing of this one's
        try:
            with metrics.timed(self.name, not_failures=(Reject,)):
                return self._run(payload)
        finally:
            references.release_all()  # sessions the locators opened for this job, on any path
            transactions.reset()
            _release_slot(payload)

    def _run(self, payload: Any) -> Any:
        if self._guarded_redis(cancellation.refused, payload, self.name, self.request.id):
            self._guarded_redis(self._cancelled, payload)  # recorded before it started: never runs
            return None
        try:
            job = Job.deserialize(payload, self.request.id, self.job_class)
        except JobkitError as exc:  # unreadable payload, unknown class, record gone: no retry
            stats.count("failed")
            self._guarded(exc, payload, self._bury_as_received, payload, exc)
            logger.error("job %s cannot run; kept in the dead set: %s", self.name, exc)
            unique = _control(payload, "unique")
            if unique is not None and isinstance(payload.get("job_id"), str):
                _release_unique(unique, payload["job_id"])  # dead: the lock goes
            raise
        except Exception as exc:  # e.g. the database is down while locating a record
            stats.count("failed")
            job = self._stand_in(payload, self.request.id)
            return self._guarded(exc, payload, self._after_failure, job, payload, exc)
        job._cancel_probe = cancellation.Probe(job.job_id, job.provider_job_id)  # job.cancelled
        unique = _control(payload, "unique")
        try:
            with contextlib.ExitStack() as limits:
                for limiter in _limiters(type(job)):
                    limits.enter_context(limiter.acquire())
                if unique is not None and unique.get("until") == "start":
                    _release_unique(unique, job.job_id)  # it starts now: past its limiters
                with run_by_worker(job.job_id):  # an IterableJob saves its cursor, may stop
                    result = job.perform_now()
        except Interrupted as stop:  # between items, cursor saved: the message goes back as is
            raise Reject(str(stop), requeue=True) from None
        except OverLimit as exc:
            if not exc.reschedule:
                stats.count("failed")
                return self._guarded(exc, payload, self._after_failure, job, payload, exc)
            return self._guarded(exc, payload, self._wait_for_limit, job, payload, exc)
        except Exception as exc:
            stats.count("failed")
            return self._guarded(exc, payload, self._after_failure, job, payload, exc)
        try:
            _count_in_batch(payload, "succeeded")
        except redis.RedisError as exc:  # the job runs again, and is counted then
            logger.exception("cannot count job %s in its batch; handing it back to its queue",
                             self.request.id)
            raise Reject(exc, requeue=True) from exc
        if unique is not None and unique.get("until") == "success":
            _release_unique(unique, job.job_id)
        return result

    def _wait_for_limit(self, job: Job, payload: dict, error: OverLimit) -> None:
        """A rate limiter stayed over its limit: park the job in the scheduled set for a while
        (a backoff that grows with each time, jittered), as it was: not a retry, no dead set,
        its executions unchanged."""
        times = payload.get("over_limit", 0) + 1
        backoff = min(times * OVER_LIMIT_STEP_SECONDS * random.uniform(0.5, 1.5),
                      OVER_LIMIT_MAX_SECONDS)
        delay = max(0.0, error.retry_after) + backoff
        due = time.time() + delay
        next_payload = {**payload, "over_limit": times, "scheduled_at": due}
        key, message = build_message(next_payload, str(uuid.uuid4()))
        ScheduledSet().add(due, key, message, job_id=job.job_id, job_class=self.name,
                           queue=job.queue_name, over_limit=times, limiter=error.limiter)
        logger.info("job %s %s over rate limit %r (%d time(s)); runs again in %.0f s",
                    self.name, job.job_id, error.limiter, times, delay)

    def record_kill(self, payload: Any, error: JobKilled, task_id: str | None = None) -> None:
        """A run that ended with its process killed (request.py): in the worker's main
        process, record it as a failure, per the retry policy, without performing."""
        stats.count("failed")
        _release_slot(payload)
        if not isinstance(payload, dict) or not {"job_id", "queue_name", "executions"} <= set(
                payload):
            self._bury_as_received(payload, error)
            return
        with contextlib.suppress(Retry, JobKilled):  # recorded in the retry or dead set
            self._after_failure(self._stand_in(payload, task_id), payload, error)

    def _after_failure(self, job: Job, payload: dict, error: Exception) -> None:
        if cancellation.is_cancelled(job.job_id, job.provider_job_id):  # never retried
            cancellation.record({**payload, "executions": job.executions}, self.name,
                                "cancelled while running", error, type(job).backtrace)
            self._cancelled(payload)
            return
        decision = decide(job, error)
        unique = _control(payload, "unique")
        if unique is not None and decision.action != "retry":  # failed for good: let it go
            _release_unique(unique, job.job_id)
        _count_in_batch(payload, _BATCH_OUTCOMES.get(decision.action, "dead"))
        if decision.action == "discard":
            logger.info("job %s %s discarded (%s): %r", self.name, job.job_id, decision.reason,
                        error)
            _call_hook(job.after_discard, error)
            return
        retry_at = time.time() + decision.delay if decision.action == "retry" else None
        next_payload = {**payload, "executions": job.executions,
                        "scheduled_at": retry_at or payload.get("scheduled_at")}
        # A retry is a publish (Celery's Task.retry sends one): its signals link the next
        # run to this one, so a tracer keeps one trace across attempts.
        published: list[Publication] | None = \
            [] if retry_at is not None and listening() else None
        key, message = message_for(next_payload, str(uuid.uuid4()), published=published)
        info = {"job_id": job.job_id, "job_class": self.name, "queue": job.queue_name,
                "payload": next_payload, "retry_count": job.executions - 1,
                "failed_at": time.time(),
                **describe_error(error, type(job).backtrace)}
        if retry_at is not None:
            RetrySet().add(retry_at, key, message, **info)
            for publication in published or ():
                publication.after()
            raise Retry(f"retry in {decision.delay:.0f}s", exc=error, when=decision.delay)
        if type(job).dead:
            DeadSet().add(time.time(), key, message, reason=decision.reason, **info)
        logger.error("job %s %s failed for good (%s): %r", self.name, job.job_id,
                     decision.reason, error)
        _call_hook(job.retries_exhausted, error)
        raise error

    def _cancelled(self, payload: dict) -> None:
        """After a cancelled job was recorded in the dead set: its unique lock goes, and its
        batch counts it dead."""
        unique = _control(payload, "unique")
        if unique is not None:
            _release_unique(unique, payload["job_id"])
        _count_in_batch(payload, "dead")
        logger.info("job %s %s cancelled; kept in the dead set", self.name, payload["job_id"])

    def _guarded_redis(self, step: Any, *args: Any) -> Any:
        """A Redis step before the job runs: if Redis will not answer, the message goes back
        to its queue (as `_guarded` does)."""
        try:
            return step(*args)
        except redis.RedisError as exc:
            logger.exception("cannot check job %s; handing it back to its queue",
                             self.request.id)
            raise Reject(exc, requeue=True) from exc

    def _bury_as_received(self, payload: Any, error: Exception) -> None:
        """Keep the message as received (payload unchanged, readable or not)."""
        _count_in_batch(payload, "dead")
        request = self.request
        info = request.delivery_info or {}
        queue = info.get("routing_key") or "default"
        key, message = build_task_message(
            self.name, request.id, [payload], queue, info.get("priority"),
            retries=request.retries or 0, argsrepr=getattr(request, "argsrepr", None) or "",
        )
        job = payload if isinstance(payload, dict) else {}
        DeadSet().add(time.time(), key, message, job_id=job.get("job_id"), job_class=self.name,
                      queue=queue, payload=payload, failed_at=time.time(),
                      **describe_error(error, self.job_class.backtrace))

    def _stand_in(self, payload: dict, task_id: str | None) -> Job:
        """A job with the payload's identity (and its message's task id) but no arguments, for
        the retry policy when the arguments themselves could not be loaded."""
        job = self.job_class.__new__(self.job_class)
        Job.__init__(job)
        job.job_id, job.queue_name = payload["job_id"], payload["queue_name"]
        job.provider_job_id = task_id
        job.executions = payload["executions"] + 1
        return job

    def _guarded(self, error: Exception, payload: Any, handler: Any, *args: Any) -> Any:
        """Run a failure handler so that the job always ends up somewhere.

        If Redis will not take the record, the message goes back to its queue instead of being
        acked. If the handler itself breaks (say a `retry_in` hook raises), the job is kept in
        the dead set with that error rather than requeued in a hot loop.
        """
        try:
            return handler(*args)
        except Retry:
            raise
        except redis.RedisError as exc:
            logger.exception("cannot record failed job %s; handing it back to its queue",
                             self.request.id)
            raise Reject(exc, requeue=True) from error
        except Exception as exc:
            if exc is error:
                raise
            logger.exception("handling the failure of job %s failed", self.request.id)
            try:
                self._bury_as_received(payload, exc)
            except redis.RedisError as redis_error:
                raise Reject(redis_error, requeue=True) from error
            raise error from exc


def _control(payload: Any, name: str) -> dict[str, Any] | None:
    """A control of the payload (jobkit.controls), or None."""
    controls = payload.get("controls") if isinstance(payload, dict) else None
    control = controls.get(name) if isinstance(controls, dict) else None
    return control if isinstance(control, dict) and isinstance(control.get("key"), str) \
        else None


def _count_in_batch(payload: Any, outcome: batch_state.Outcome) -> None:
    """Count the run's outcome in the job's batch, if it has one (and a payload readable
    enough to say so: an undecodable message names no batch). A Redis that cannot be reached
    raises: the job goes back to its queue and is counted when it runs again. Any other Redis
    error (say, a batch key of another type) is logged: it would fail every run the same."""
    batch_id = payload.get("batch") if isinstance(payload, dict) else None
    job_id = payload.get("job_id") if isinstance(payload, dict) else None
    if not (isinstance(batch_id, str) and isinstance(job_id, str)):
        return
    try:
        batch_state.record(get_redis(), batch_id, job_id, outcome)
    except (redis.ConnectionError, redis.TimeoutError, ReadOnlyError):
        raise
    except redis.RedisError:
        logger.exception("job %s: cannot count it %s in batch %s", job_id, outcome, batch_id)


def _release_unique(unique: dict[str, Any], job_id: str) -> None:
    """Let the unique lock go (tried again through a Redis restart: controls/release.py)."""
    released(lambda: release_lock(unique, job_id), f"job {job_id}: unique lock")


def _release_slot(payload: Any) -> None:
    """Free the job's concurrency slot, however the run ended, and start the held jobs it
    makes room for (tried again through a Redis restart: controls/release.py)."""
    control = _control(payload, "concurrency")
    if control is None or not isinstance(job_id := payload.get("job_id"), str):
        return
    released(lambda: concurrency.release(control, job_id), f"job {job_id}: concurrency slot")


def _limiters(cls: type[Job]) -> tuple[Any, ...]:
    """The class option `limiter`: one limiter or several."""
    limiter = cls.limiter
    if limiter is None:
        return ()
    return limiter if isinstance(limiter, tuple) else (limiter,)


def _call_hook(hook: Any, error: Exception) -> None:
    """A user hook that raises is logged; it must not undo what was decided for the job."""
    try:
        hook(error)
    except Exception:
        logger.exception("%s raised", getattr(hook, "__qualname__", hook))
