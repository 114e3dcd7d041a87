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
from kombu.entity import Exchange, Queue

import jobkit
from jobkit import api, display, keys, testing
from jobkit.job_sets import DeadSet, JobEntry, RetrySet, ScheduledSet
from jobkit.retries import Decision, decide
from jobkit.testing_services import RedisServer
from jobkit.worker.recovery import hand_back
from tests import plain_celery_tasks as tasks
from tests.conftest import start_worker, wait_for
from tests.doc_examples import DOCS, example_module, python_blocks, run

TASKS = "tests.plain_celery_tasks"
FAST = {"JOBKIT_HEARTBEAT_TIMEOUT": "3"}
#: `celery` bound to a named exchange under another routing key (as a Celery app's
#: task_queues may have it): the message's delivery_info does not name its queue.
ROUTED = Queue("celery", Exchange("tasks", type="direct"), routing_key="tasks.invoices")


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
        # Given its queues with -q, a worker consumes those only.
        only = start_worker(own_redis.url, tmp_path / "only.log", "-c", "1", "-q", "critical",
                            "-r", TASKS, env=FAST)
        only.stop()
        assert ".> critical" in only.output() and ".> celery" not in only.output()
        assert "consuming queue 'celery' too" not in only.output()

        # Revoked with terminate=True: Celery's (it records the revoke), not the dead set.
        sleeping = cast(Any, tasks.sleeps).delay()
        wait_for(lambda: "sleeps" in runs(own_client), timeout=30, what="the task to start")
        tasks.app.control.revoke(sleeping.id, terminate=True)
        wait_for(lambda: in_flight(own_client) == 0, timeout=30, what="the revoke")

        # A job raising SystemExit is killed, counted against its retries (not requeued).
        tasks.ExitsJob.perform_later()
        wait_for(lambda: RetrySet(own_client).size(), timeout=30,
                 what="the job that exited in the retry set")
        exited_job = next(iter(RetrySet(own_client)))
        assert exited_job.error_class == "jobkit.errors.JobKilled"
        assert "SystemExit" in (exited_job.error_message or "")
        assert RetrySet(own_client).delete(exited_job)  # its retry would run during the test

        # Failed for good: a plain exception, Celery's retries exhausted, a hard time limit,
        # a killed pool process, SystemExit, a task acknowledged at start (acks_late=False).
        with tasks.app.connection_for_write() as connection:
            ROUTED(connection.default_channel).declare()
        own_client.set("plain:crash", 1)
        crashed = tasks.crash.apply_async(args=["invoice"], exchange="tasks",
                                          routing_key="tasks.invoices")
        cast(Any, tasks.exhausted).delay("report")  # Celery types decorated tasks loosely
        cast(Any, tasks.hangs).delay()
        cast(Any, tasks.dies).delay()
        cast(Any, tasks.exits).delay()
        cast(Any, tasks.early_ack).delay()
        failed = ("crash", "exhausted", "hangs", "dies", "exits", "early_ack")
        wait_for(lambda: all(entry_of(DeadSet(own_client), name) for name in failed),
                 timeout=30, what="the six failed plain tasks in the dead set")
        exits = entry_of(DeadSet(own_client), "exits")
        assert exits is not None and exits.data["reason"] == "killed"
        assert exits.error_class == "builtins.SystemExit"
        # kombu's requeue (Reject(requeue=True)) of a message whose routing key is not its
        # queue's name puts it back in its queue.
        cast(Any, tasks.rejects_once).apply_async(args=["routed"], exchange="tasks",
                                                  routing_key="tasks.invoices")
        # An eta Celery's parser takes (fromisoformat does not) is not refused.
        spare = tasks.record.apply_async(args=["midnight"], queue="spare")
        message = json.loads(cast(bytes, wait_for(lambda: own_client.rpop("spare"), timeout=30,
                                                  what=f"{spare.id} in queue 'spare'")))
        message["headers"]["eta"] = "2020-01-01T24:00:00"
        own_client.lpush("celery", json.dumps(message))
        wait_for(lambda: {"rejects_once:routed", "midnight"} <= set(runs(own_client)),
                 timeout=30, what="the requeued task and the midnight eta to run")
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
        assert dead.data["list_key"] == "celery"  # where it came from: the retry goes there
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

        # Taken for dead while a task runs: the reaper hands the message to a worker (this
        # one, which beats again); both runs fail, and the dead set has it once.
        own_client.delete("plain:go")
        cast(Any, tasks.fails_when_told).delay()
        wait_for(lambda: "fails_when_told" in runs(own_client), timeout=30,
                 what="the task to start")
        process = next(p for p in api.processes(own_client) if p.pid == first.proc.pid)

        def take_for_dead() -> bool:
            own_client.delete(keys.heartbeat(process.id))
            return hand_back(process.id, if_dead=True, client=own_client) == 1

        wait_for(take_for_dead, timeout=30, what="the reaper to hand the message back")
        wait_for(lambda: runs(own_client).count("fails_when_told") == 2, timeout=30,
                 what="the handed-back message to run again")
        own_client.set("plain:go", 1)
        wait_for(lambda: "not kept twice" in first.output(), timeout=30,
                 what="the first run's failure to be left out of the dead set")
        wait_for(lambda: entry_of(DeadSet(own_client), "fails_when_told"), timeout=30,
                 what="the second run's failure in the dead set")

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
        # `exhausted` (again), `hangs`, `dies`, `exits`, `early_ack`, `fails_when_told`; not
        # the revoked one
        assert DeadSet(own_client).size() == 6
        assert entry_of(DeadSet(own_client), "sleeps") is None
        assert runs(own_client).count("dies") == 1  # not requeued after its kill
        assert runs(own_client).count("exits") == 1
        assert runs(own_client).count("exits_job") == 1
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
