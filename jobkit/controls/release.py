"""Letting a job's unique lock and concurrency slot go, as surely as Redis allows.

A lock or slot left behind does not lose a job, but it refuses duplicates (for up to
`unique_for`) or holds the key's other jobs (for up to `duration`) after the job is gone. So a
release that meets a Redis restart or failover is tried again until Redis answers (at most
RETRY_SECONDS), and a job that will never run (buried in the dead set before it reached its
task, or cancelled while waiting) lets both go too, and counts as dead in its batch.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import redis
from redis.exceptions import ReadOnlyError

from jobkit.batch import state as batch_state
from jobkit.celery_message import read_task_args
from jobkit.controls.concurrency import header_problem, release
from jobkit.controls.unique import release_lock
from jobkit.masking import mask_secrets
from jobkit.redis_client import get_redis

__all__ = ["RETRY_SECONDS", "let_go", "released"]

logger = logging.getLogger(__name__)

RETRY_SECONDS = 30.0
_PAUSE_SECONDS = 0.25
_UNREACHABLE = (redis.ConnectionError, redis.TimeoutError, ReadOnlyError)


def released(release_it: Callable[[], object], what: str) -> None:
    """Run a release; while Redis is unreachable (or a replica during a failover), try again
    for up to RETRY_SECONDS, then log that it expires by itself. Never raises a Redis error:
    the job it belongs to is done, and must not fail for this."""
    deadline = time.monotonic() + RETRY_SECONDS
    while True:
        try:
            release_it()
            return
        except _UNREACHABLE as exc:
            if time.monotonic() < deadline:
                time.sleep(_PAUSE_SECONDS)
                continue
            error: redis.RedisError = exc
        except redis.RedisError as exc:
            error = exc
        logger.warning("%s not released (%s); it expires by itself", what,
                       mask_secrets(str(error)))
        return


def let_go(message: bytes | str) -> None:
    """For a message that will not run (buried before its task ran): free its concurrency slot
    (its ``jobkit_concurrency`` header) and its unique lock (its payload's control), and count
    it dead in its batch (the payload's ``batch``), as a job buried by its task is."""
    try:
        envelope = json.loads(message)
        headers = envelope.get("headers") or {}
        payload = read_task_args(message)[0]
    except Exception:  # any shape: a message we cannot read names no lock or slot
        return
    if not isinstance(headers, dict) or not isinstance(payload, dict):
        return
    job_id = payload.get("job_id") or headers.get("job_id")
    if not isinstance(job_id, str):
        return
    control: Any = headers.get("jobkit_concurrency")
    if control is not None and header_problem(control) is None:
        released(lambda: release(control, job_id), f"job {job_id}: concurrency slot")
    controls = payload.get("controls")
    unique = controls.get("unique") if isinstance(controls, dict) else None
    if isinstance(unique, dict) and isinstance(unique.get("key"), str):
        released(lambda: release_lock(unique, job_id), f"job {job_id}: unique lock")
    batch_id, member = payload.get("batch"), payload.get("job_id")
    if isinstance(batch_id, str) and isinstance(member, str):
        released(lambda: batch_state.record(get_redis(), batch_id, member, "dead"),
                 f"job {member}: its count in batch {batch_id}")
