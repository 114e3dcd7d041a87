"""End to end: jobs enqueued here, run by a real `jobkit worker` on a private redis-server.

Through pytest-celery's `celery_setup`, on jobkit's local nodes (jobkit.contrib.pytest_celery):
the session's redis-server as the broker node, the session's worker as the worker node."""

from __future__ import annotations

import base64
import datetime as dt
import json
import sys
import textwrap
import time
from pathlib import Path

import pytest
import redis
from pytest_celery import CeleryTestSetup

import jobkit
from jobkit import SerializationError
from jobkit.job_sets import DeadSet, ScheduledSet
from jobkit.keys import list_key
from tests.conftest import job_keys, wait_for
from tests.jobs import RESULTS, CallbackJob, EchoJob, FailingJob, TaskLoggerJob
from tests.test_arguments import ROUND_TRIPS

pytest_plugins = ["jobkit.contrib.pytest_celery"]
pytestmark = pytest.mark.usefixtures("celery_setup")


def results(r: redis.Redis, n: int, timeout: float = 15.0) -> list[dict]:
    """Wait until jobs have recorded `n` results; return them."""
    wait_for(lambda: r.llen(RESULTS) >= n, timeout=timeout, what=f"{n} job results")
    return [json.loads(item) for item in r.lrange(RESULTS, 0, -1)]


def dead_entries(r: redis.Redis, n: int) -> list:
    wait_for(lambda: r.zcard("jobkit:dead") >= n, what=f"{n} dead-set entries")
    return list(DeadSet())


def test_perform_later_runs_on_a_real_worker(r: redis.Redis, celery_setup: CeleryTestSetup
                                              ) -> None:
    job = TaskLoggerJob.perform_later(42)
    [done] = results(r, 1)
    assert done["task_id"] == 42
    assert done["job_id"] == job.job_id
    assert done["provider_job_id"] == job.provider_job_id
    assert done["executions"] == 1
    assert done["queue"] == "default"
    assert dt.datetime.fromisoformat(done["enqueued_at"]) == job.enqueued_at
    # Each job class is its own Celery task, named by its import path.
    celery_setup.worker.assert_log_exists(f"tests.jobs.TaskLoggerJob[{job.provider_job_id}]")


def test_sidekiq_aliases_and_bulk_run(r: redis.Redis) -> None:
    TaskLoggerJob.perform_async(1)
    TaskLoggerJob.perform_bulk([[2], [3]])
    jobkit.perform_all_later([TaskLoggerJob(4), EchoJob("five")])
    done = results(r, 5)
    assert sorted(d.get("task_id", 0) for d in done) == [0, 1, 2, 3, 4]
    assert any(d.get("args") == "('five',)" for d in done)


@pytest.mark.parametrize("how", ["wait", "wait_until", "perform_in", "perform_at"])
def test_delayed_job_waits_in_redis_then_runs(r: redis.Redis, how: str) -> None:
    delay = 1.5
    due = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=delay)
    job = {
        "wait": lambda: TaskLoggerJob.set(wait=delay).perform_later(7),
        "wait_until": lambda: TaskLoggerJob.set(wait_until=due).perform_later(7),
        "perform_in": lambda: TaskLoggerJob.perform_in(dt.timedelta(seconds=delay), 7),
        "perform_at": lambda: TaskLoggerJob.perform_at(due, 7),
    }[how]()
    assert ScheduledSet().size() == 1  # parked in the sorted set, not held by a worker
    assert r.llen("default") == 0
    time.sleep(delay - 0.6)
    assert r.llen(RESULTS) == 0, "ran before it was due"
    [done] = results(r, 1)
    assert done["ran_at"] >= job.scheduled_at.timestamp()
    assert dt.datetime.fromisoformat(done["scheduled_at"]) == job.scheduled_at
    assert ScheduledSet().size() == 0


def test_due_or_past_wait_runs_now(r: redis.Redis) -> None:
    TaskLoggerJob.set(wait=-10).perform_later(8)
    assert ScheduledSet().size() == 0
    assert results(r, 1)[0]["task_id"] == 8


def test_every_argument_type_survives_the_worker(r: redis.Redis) -> None:
    EchoJob.perform_later(*ROUND_TRIPS, when=dt.date(2020, 2, 29), tags={"a"})
    [done] = results(r, 1)
    assert done["args"] == repr(tuple(ROUND_TRIPS))
    assert done["kwargs"] == repr({"when": dt.date(2020, 2, 29), "tags": {"a"}})


def test_callbacks_run_around_perform_on_the_worker(r: redis.Redis) -> None:
    CallbackJob.perform_later()
    steps = [d["step"] for d in results(r, 4)]
    assert steps == ["before", "around-in", "perform", "around-out"]


def test_queue_and_priority_pick_kombus_list(r: redis.Redis) -> None:
    TaskLoggerJob.set(queue="nobody_consumes", priority=5).perform_later(1)
    TaskLoggerJob.set(queue="nobody_consumes").perform_later(2)
    assert r.llen(list_key("nobody_consumes", 5)) == 1
    assert list_key("nobody_consumes", 5) == "nobody_consumes\x06\x163"
    assert r.llen("nobody_consumes") == 1


def test_priority_job_runs_on_a_consumed_queue(r: redis.Redis) -> None:
    TaskLoggerJob.set(queue="mailers", priority=9).perform_later(9)
    [done] = results(r, 1)
    assert (done["queue"], done["priority"]) == ("mailers", 9)


def test_bad_arguments_leave_nothing_in_redis(r: redis.Redis) -> None:
    with pytest.raises(SerializationError, match=r"args\[0\]\['x'\]: object of type object"):
        EchoJob.perform_later({"x": object()})
    with pytest.raises(TypeError, match="missing a required argument"):
        TaskLoggerJob.perform_later()
    with pytest.raises(SerializationError):
        jobkit.perform_all_later([TaskLoggerJob(1), EchoJob(object())])
    assert job_keys(r) == []


def test_failed_job_goes_to_the_dead_set_with_its_error(r: redis.Redis) -> None:
    job = FailingJob.perform_later("boom")
    [dead] = dead_entries(r, 1)
    assert dead.job_id == job.job_id
    assert dead.job_class == "tests.jobs.FailingJob"
    assert dead.error_class == "builtins.RuntimeError"
    assert dead.error_message == "failing on purpose: boom"
    assert any("raise RuntimeError" in line for line in dead.backtrace)


def _raw_message(r: redis.Redis, job_class: str, payload: object) -> str:
    body = base64.b64encode(json.dumps([[payload], {}, {}]).encode()).decode()
    return json.dumps({
        "body": body, "content-encoding": "utf-8", "content-type": "application/json",
        "headers": {"lang": "py", "task": job_class, "id": "raw-1", "root_id": "raw-1",
                    "parent_id": None, "group": None, "retries": 0, "eta": None,
                    "expires": None, "timelimit": [None, None]},
        "properties": {"correlation_id": "raw-1", "reply_to": "", "delivery_mode": 2,
                       "delivery_info": {"exchange": "", "routing_key": "default"},
                       "priority": 0, "body_encoding": "base64", "delivery_tag": "raw-tag"},
    })


@pytest.mark.parametrize("payload, reason", [
    ({"v": 1, "job_class": "tests.jobs.TaskLoggerJob"}, "payload field 'job_id' is missing"),
    ("not a dict", "payload must be an object"),
])
def test_malformed_payload_is_kept_in_the_dead_set(r: redis.Redis, payload, reason) -> None:
    r.lpush("default", _raw_message(r, "tests.jobs.TaskLoggerJob", payload))
    [dead] = dead_entries(r, 1)
    assert dead.error_class == "jobkit.errors.PayloadError"
    assert reason in dead.error_message
    assert r.llen("default") == 0 and r.llen(RESULTS) == 0


def test_bad_argument_marker_is_kept_in_the_dead_set(r: redis.Redis) -> None:
    payload = TaskLoggerJob(1)
    payload._prepare()
    data = payload.serialize()
    data["args"] = [{"_jk": "date", "v": "not-a-date"}]
    r.lpush("default", _raw_message(r, "tests.jobs.TaskLoggerJob", data))
    [dead] = dead_entries(r, 1)
    assert dead.error_class == "jobkit.errors.DeserializationError"
    assert "args[0]: bad date value 'not-a-date'" in dead.error_message


def test_unknown_job_class_is_kept_and_runs_once_deployed(
        r: redis.Redis, celery_setup: CeleryTestSetup, late_code: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    source = textwrap.dedent("""
        from jobkit import Job
        from tests.jobs import record

        class ShinyNewJob(Job):
            def perform(self, n):
                record(job="ShinyNewJob", n=n)
    """)
    (tmp_path / "shiny_jobs.py").write_text(source)  # deployed to the web process only
    monkeypatch.syspath_prepend(str(tmp_path))
    request.addfinalizer(lambda: sys.modules.pop("shiny_jobs", None))
    import shiny_jobs

    job = shiny_jobs.ShinyNewJob.perform_later(5)
    [dead] = dead_entries(r, 1)
    assert dead.job_id == job.job_id
    assert "unknown job class 'shiny_jobs.ShinyNewJob'" in dead.error_message
    assert "No module named 'shiny_jobs'" in dead.error_message
    # The worker logs the error after it has written the dead-set entry.
    celery_setup.worker.wait_for_log("unknown job class 'shiny_jobs.ShinyNewJob'", timeout=15)

    (late_code / "shiny_jobs.py").write_text(source)  # now deployed to the worker
    assert DeadSet().retry(dead)
    assert not DeadSet().retry(dead), "a second retry of the same entry must do nothing"
    [done] = results(r, 1)
    assert done == {"job": "ShinyNewJob", "n": 5}
    assert DeadSet().size() == 0


def test_message_for_a_non_job_is_kept_too(r: redis.Redis) -> None:
    r.lpush("default", _raw_message(r, "os.path", {}))
    [dead] = dead_entries(r, 1)
    assert "is not a jobkit Job class" in dead.error_message or "cannot import" in (
        dead.error_message)


def test_message_without_a_task_header_is_kept(r: redis.Redis) -> None:
    raw = json.loads(_raw_message(r, "tests.jobs.TaskLoggerJob", {}))
    raw["headers"] = {}
    r.lpush("default", json.dumps(raw))
    [dead] = dead_entries(r, 1)
    assert dead.error_message == "no 'task' header (not a Celery task message, protocol 2)"
    assert dead.error_class == "jobkit.UnreadableMessage"
    assert r.llen("default") == 0


def test_empty_bulk_enqueue_is_fine(r: redis.Redis) -> None:
    assert jobkit.perform_all_later([]) == []
    assert TaskLoggerJob.perform_bulk([]) == []
