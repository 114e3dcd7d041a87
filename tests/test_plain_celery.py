"""Plain Celery tasks on a jobkit worker: the dead set, the durable scheduled set for
countdown/eta, and Celery's default `celery` queue (docs/migrating.md)."""

from __future__ import annotations

import json
import os
import signal
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
import redis

import jobkit
from jobkit import api, display, testing
from jobkit.job_sets import DeadSet, JobEntry, ScheduledSet
from jobkit.retries import Decision, decide
from jobkit.testing_services import RedisServer
from tests import plain_celery_tasks as tasks
from tests.conftest import start_worker, wait_for
from tests.doc_examples import DOCS, example_module, python_blocks, run

TASKS = "tests.plain_celery_tasks"
FAST = {"JOBKIT_HEARTBEAT_TIMEOUT": "3"}


@pytest.fixture
def producer(own_redis: RedisServer) -> Iterator[None]:
    """The app's own Celery app, sending to the test's Redis as a web process would."""
    tasks.app.conf.update(broker_url=own_redis.url)
    yield
    tasks.app.close()


def runs(client: redis.Redis) -> list[str]:
    return [display.shown(run) for run in client.lrange("plain:runs", 0, -1)]


def entry_of(job_set: DeadSet | ScheduledSet, task: str) -> JobEntry | None:
    return next((e for e in job_set if e.job_class == f"{TASKS}.{task}"), None)


def in_flight(client: redis.Redis) -> int:
    return sum(client.hlen(key) for key in client.keys("jobkit:unacked:*"))


def test_plain_tasks_get_the_dead_set_the_scheduled_set_and_the_celery_queue(
        own_client: redis.Redis, own_redis: RedisServer, producer: None, tmp_path) -> None:
    first = start_worker(own_redis.url, tmp_path / "first.log", "-c", "2", "-r", TASKS,
                         env=FAST)
    second = None
    try:
        assert "consuming queue 'celery' too" in first.output()
        assert "celery" in [queue.name for queue in api.queues(own_client)]

        # Failed for good: a plain exception, Celery's retries exhausted, a hard time limit.
        own_client.set("plain:crash", 1)
        crashed = tasks.crash.delay("invoice")
        cast(Any, tasks.exhausted).delay("report")  # Celery types decorated tasks loosely
        cast(Any, tasks.hangs).delay()
        cast(Any, tasks.dies).delay()
        wait_for(lambda: all(entry_of(DeadSet(own_client), name)
                             for name in ("crash", "exhausted", "hangs", "dies")), timeout=30,
                 what="the four failed plain tasks in the dead set")
        killed = entry_of(DeadSet(own_client), "hangs")
        assert killed is not None and killed.data["reason"] == "killed"
        assert (killed.error_class or "").endswith("TimeLimitExceeded")
        lost = entry_of(DeadSet(own_client), "dies")
        assert lost is not None and lost.data["reason"] == "killed"
        assert (lost.error_class or "").endswith("WorkerLostError")
        dead = entry_of(DeadSet(own_client), "crash")
        assert dead is not None
        assert (dead.job_id, dead.queue, dead.error_class, dead.error_message) == (
            crashed.id, "celery", "builtins.LookupError", "no invoice yet")
        assert dead.payload == {"args": ["invoice"], "kwargs": {}}
        assert any("plain_celery_tasks.py" in line for line in dead.backtrace)
        assert dead.data["reason"] == "failed without a retry"
        out_of_retries = entry_of(DeadSet(own_client), "exhausted")
        assert out_of_retries is not None
        assert (out_of_retries.retry_count, out_of_retries.data["reason"]) == (
            1, "1 retries exhausted")
        assert runs(own_client).count("exhausted:report") == 2  # the run and its one retry
        # Retried from the dead set with its retries used up: one more run, then dead again.
        assert DeadSet(own_client).retry(out_of_retries)
        wait_for(lambda: runs(own_client).count("exhausted:report") == 3
                 and entry_of(DeadSet(own_client), "exhausted"), timeout=30,
                 what="the retried task to run once and return to the dead set")

        # Retried from the dead set: the same plain task runs again, and succeeds.
        own_client.delete("plain:crash")
        assert DeadSet(own_client).retry(dead)
        wait_for(lambda: "crash:invoice" in runs(own_client), timeout=30,
                 what="the retried plain task to run")
        assert entry_of(DeadSet(own_client), "crash") is None

        # countdown: parked in the scheduled set, not in the worker's memory.
        tasks.record.apply_async(args=["late"], countdown=4)
        wait_for(lambda: entry_of(ScheduledSet(own_client), "record"), timeout=30,
                 what="the countdown task in the scheduled set")
        parked = entry_of(ScheduledSet(own_client), "record")
        assert parked is not None and parked.payload == {"args": ["late"], "kwargs": {}}
        assert in_flight(own_client) == 0 and "late" not in runs(own_client)
        os.killpg(first.proc.pid, signal.SIGKILL)  # before it is due
        first.proc.wait(30)
        second = start_worker(own_redis.url, tmp_path / "second.log", "-c", "2", "-r", TASKS,
                              env=FAST)
        wait_for(lambda: "late" in runs(own_client), timeout=30,
                 what="the countdown task to run on the second worker")
        assert parked.score <= time.time()

        # Celery's self.retry(countdown=...): the retry waits in the scheduled set too, and
        # "run now" (dashboard, CLI) runs it at once: the parked message has no eta left.
        cast(Any, tasks.retries_later).delay("again", 3600)
        wait_for(lambda: entry_of(ScheduledSet(own_client), "retries_later"), timeout=30,
                 what="the self.retry message in the scheduled set")
        retry = entry_of(ScheduledSet(own_client), "retries_later")
        assert retry is not None and retry.score > time.time() + 3000
        assert "eta" not in json.loads(retry.data["message"])["headers"]
        assert runs(own_client).count("again:0") == 1 and "again:1" not in runs(own_client)
        assert ScheduledSet(own_client).run_now(retry)
        wait_for(lambda: "again:1" in runs(own_client), timeout=30,
                 what="the retry to run when run now")
        wait_for(lambda: ScheduledSet(own_client).size() == 0 and in_flight(own_client) == 0
                 and own_client.llen("celery") == 0, timeout=30, what="nothing left over")
        assert runs(own_client).count("late") == 1
        assert runs(own_client).count("again:1") == 1
        assert DeadSet(own_client).size() == 3  # `exhausted` (again), `hangs`, `dies`
        assert runs(own_client).count("dies") == 1  # not requeued after its kill
        assert runs(own_client).count("exhausted:report") == 3
    finally:
        for worker in (first, second):
            if worker is not None:
                worker.stop()


def test_migrating_examples_run_as_written() -> None:
    """docs/migrating.md's python blocks, in fake mode: what they enqueue, and the retry
    rules the Celery and Active Job tables promise."""
    with testing.fake(), example_module("migrating_examples") as module:
        module.__dict__.update(UTC=UTC, datetime=datetime, timedelta=timedelta, jobkit=jobkit)
        blocks = python_blocks((DOCS / "migrating.md").read_text())
        assert len(blocks) == 3
        for block in blocks:
            run(textwrap.dedent(block), module, "docs/migrating.md")  # some are in list items
        now = time.time()
        enqueued = {(job.job_class.rsplit(".", 1)[1], job.queue, round((job.at or now) - now),
                     repr(job.args), repr(job.kwargs)) for job in testing.jobs()}
    assert enqueued == {
        ("SendInvoiceJob", "mailers", 0, "[42]", "{}"),
        ("SendInvoiceJob", "mailers", 600, "[42]", "{'copy_to': 'ops@example.com'}"),
        ("HardJob", "critical", 0, "['bob', 5]", "{}"),
        ("HardJob", "critical", 300, "['bob', 5]", "{}"),
        ("GuestsCleanupJob", "low", 7 * 86400, "[7]", "{}"),
    }
    invoice = module.SendInvoiceJob(42)
    invoice.executions = 3  # the third run failed: Celery's retry_backoff waits 4 s then
    assert decide(invoice, ConnectionError()) == Decision("retry", 4.0)
    invoice.executions = 6
    assert decide(invoice, ConnectionError()).action == "dead"
    assert module.HardJob.max_retries == 5 and module.HardJob("a", 1).retry_in(2, None) == 30
    assert decide(module.GuestsCleanupJob(7), LookupError()).action == "discard"
