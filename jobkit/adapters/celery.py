"""The durable adapter: jobs become Celery messages in Redis, run by `jobkit worker`."""

from __future__ import annotations

import functools
import json
import logging
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from redis.exceptions import NoScriptError

from jobkit.adapters.base import Adapter
from jobkit.batch.state import RedisBatches, count_members
from jobkit.config import current_settings
from jobkit.controls.enqueue import ControlledPush, ScriptCall
from jobkit.errors import NotReplicatedError
from jobkit.imports import class_path, require_importable
from jobkit.job_sets import ScheduledSet, entry_member
from jobkit.keys import QUEUES, SCHEDULE, wake_key
from jobkit.on_demand import start_worker_if_needed
from jobkit.publish_signals import Publication, listening, message_for
from jobkit.queues import WAKE_TOKENS_MAX
from jobkit.redis_client import get_redis

if TYPE_CHECKING:
    from redis import Redis
    from redis.client import Pipeline

    from jobkit.job import Job


logger = logging.getLogger(__name__)

REPLICA_WAIT_MS = 1000  # wait_for_replicas: how long an enqueue waits for replicas (WAIT)


class CeleryAdapter(Adapter):
    """Due now: LPUSH to the queue's list. Due later: the scheduled set (see scheduling.py)."""

    name = "celery"

    def enqueue(self, job: Job) -> None:
        self.enqueue_all((job,))

    def batches(self) -> CeleryBatches:
        return CeleryBatches()

    def enqueue_all(self, jobs: Sequence[Job]) -> None:
        """Every job in one pipelined round trip (not a transaction: each push stands alone),
        then wake tokens for the queues that got jobs now. A unique or debounced job is one
        script in the same pipeline (jobkit.controls.enqueue); a duplicate gets its
        `duplicate_of` set. Jobs of a batch (never unique or debounced: jobkit.batch.scope)
        are counted in it first, in one transaction with their pushes (a plain pipeline, the
        count first, with `wait_for_replicas`: WAIT inside MULTI would not wait).
        Celery's publish signals fire for each job when anything receives them
        (jobkit.publish_signals): `before` as its message is built, `after` once the round
        trip succeeded; a job due later is published as it is parked (as Celery's `countdown`)."""
        ready: dict[str, list[str]] = defaultdict(list)  # list key -> messages, in order
        woken: Counter[str] = Counter()
        queues: set[str] = set()  # every queue a job went to (a script adds its own to QUEUES)
        scheduled_queues: set[str] = set()
        scheduled = ScheduledSet()
        scripts: dict[int, tuple[Job, ScriptCall]] = {}  # place in the pipeline -> its call
        client = get_redis()
        batched = Counter(job.batch_id for job in jobs if job.batch_id is not None)
        replicas = current_settings().wait_for_replicas
        published: list[Publication] | None = [] if listening() else None
        with client.pipeline(transaction=bool(batched) and not replicas) as pipe:
            for batch_id, count in batched.items():
                count_members(pipe, batch_id, count)
            for job in jobs:
                queue, key, message, controls = job_message(job, published)
                _warn_if_unconsumed(queue)
                queues.add(queue)
                if controls and ("unique" in controls or "debounce" in controls):
                    _push_ready(pipe, ready)  # the jobs before it go first, as one by one
                    call = _controlled(job, controls, queue, key, message)
                    scripts[call.queue(pipe)] = (job, call)
                    continue
                sent = self._park_or_ready(job, queue, key, message, pipe, scheduled)
                if sent is not None:
                    ready[sent[0]].append(sent[1])
                    woken[queue] += 1
                else:
                    scheduled_queues.add(queue)
            _push_ready(pipe, ready)
            if woken or scheduled_queues:
                pipe.sadd(QUEUES, *woken, *scheduled_queues)  # for the dashboard
            for queue, count in woken.items():
                pipe.lpush(wake_key(queue), *["1"] * min(count, WAKE_TOKENS_MAX))
                pipe.ltrim(wake_key(queue), 0, WAKE_TOKENS_MAX - 1)
            if replicas:
                pipe.wait(replicas, REPLICA_WAIT_MS)
            results = pipe.execute(raise_on_error=False)
        for place, (_, call) in scripts.items():
            if isinstance(results[place], NoScriptError):  # not run: Redis lost its scripts
                results[place] = call.run(client)
        error = next((r for r in results if isinstance(r, Exception)), None)
        if error is not None:
            raise error
        for publication in published or ():
            publication.after()
        for place, (job, _) in scripts.items():
            reply = results[place]
            if isinstance(reply, list) and not reply[0]:  # a unique job's lock was held
                job.duplicate_of = reply[1].decode() if isinstance(reply[1], bytes) \
                    else str(reply[1])
        if replicas and results[-1] < replicas:
            raise NotReplicatedError(
                f"enqueue confirmed by {results[-1]} replica(s) of the {replicas} wanted "
                f"(wait_for_replicas) within {REPLICA_WAIT_MS} ms: not counted as enqueued")
        if queues and current_settings().mode == "on_demand":
            start_worker_if_needed(queues)

    def _park_or_ready(self, job: Job, queue: str, key: str, message: str, pipe: Pipeline,
                       scheduled: ScheduledSet) -> tuple[str, str] | None:
        """The job's (list key, message) if it is due now; else it is parked in the
        scheduled set."""
        due = job.scheduled_at.timestamp() if job.scheduled_at else None
        if due is not None and due > time.time():
            scheduled.add(due, key, message, pipe=pipe, job_id=job.job_id,
                          job_class=class_path(type(job)), queue=queue)
            return None
        return key, message


class CeleryBatches(RedisBatches):
    """Batches in Redis, their callbacks stored as the message a worker will receive."""

    def callback_entry(self, job: Job) -> str:
        queue, key, message, _ = job_message(job)
        return json.dumps({"list_key": key, "message": message, "queue": queue,
                           "job_class": class_path(type(job)), "job_id": job.job_id})


def _push_ready(pipe: Pipeline, ready: dict[str, list[str]]) -> None:
    """Queue the collected pushes, one command per list (the same order as one by one)."""
    for key, messages in ready.items():
        pipe.lpush(key, *messages)
    ready.clear()


@functools.cache
def _controlled_push(client: Redis) -> ControlledPush:
    """One per client (get_redis keeps one per process and URL): its scripts loaded there."""
    return ControlledPush(client)


def _controlled(job: Job, controls: dict[str, Any], queue: str, key: str, message: str
                ) -> ScriptCall:
    """A unique or debounced job's script call (the check and the push in one step)."""
    now = time.time()
    due = job.scheduled_at.timestamp() if job.scheduled_at else None
    push = _controlled_push(get_redis())
    if "debounce" in controls or (due is not None and due > now):
        member = entry_member(key, message, job_id=job.job_id, job_class=class_path(type(job)),
                              queue=queue)
        if "debounce" in controls:
            return push.debounced(controls["debounce"], member,
                                  max(due or now, now) + controls["debounce"]["within"],
                                  queue, now)
        return push.unique(controls["unique"], job.job_id, SCHEDULE, member, due, queue, now)
    return push.unique(controls["unique"], job.job_id, key, message, None, queue, now)


class JobMessage(NamedTuple):
    queue: str
    list_key: str
    message: str
    controls: dict[str, Any] | None  # the payload's (jobkit.controls)


def job_message(job: Job, published: list[Publication] | None = None) -> JobMessage:
    """A prepared job's queue, list key and message as a worker will receive it; sets its
    `provider_job_id`. JobClassError when no worker could import its class. Given a
    `published` list, fires ``before_task_publish`` (receivers may add headers) and appends
    the publication whose `after` the caller fires once the message is in Redis."""
    require_importable(type(job), "job class")
    task_id = str(uuid.uuid4())
    payload = job.serialize()
    key, message = message_for(payload, task_id, published)
    job.provider_job_id = task_id
    return JobMessage(payload["queue_name"], key, message, payload.get("controls"))


_warned_queues: set[str] = set()  # per process: a bulk enqueue warns once, not per job


def _warn_if_unconsumed(queue: str) -> None:
    """In development, say so (once per queue) when no configured worker would ever take
    this queue."""
    settings = current_settings()
    if settings.environment == "development" and queue not in settings.queue_names \
            and queue not in _warned_queues:
        _warned_queues.add(queue)
        logger.warning("job enqueued to queue %r, which no configured worker consumes "
                       "(queues: %s)", queue, ", ".join(settings.queue_names))
