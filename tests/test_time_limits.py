"""Per-job time limits on real workers: the soft limit raises inside the job (it cleans up),
the hard one stops it (prefork), an async job's soft limit holds on every pool; the job goes
the way of its retry policy with that reason. Limits from the class and from set(...)."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest
import redis

import jobkit
from jobkit import JobClassError, keys
from jobkit.celery_message import read_task_args
from jobkit.errors import PayloadError
from jobkit.payload import Payload
from jobkit.testing_services import RedisServer, WorkerProcess, wait_until
from tests.doc_examples import DOCS, example_module, run
from tests.time_limit_jobs import (
    EVENTS,
    QUEUE,
    AsyncCleanupJob,
    AsyncLimitedJob,
    HardLimitedJob,
    SoftLimitedJob,
)

ROOT = Path(__file__).resolve().parent.parent



def dead(own_client: redis.Redis) -> dict[str, dict]:
    """The dead set's entries, by the job's first argument."""
    entries = [json.loads(m) for m in own_client.zrange(keys.DEAD, 0, -1)]
    return {e["payload"]["args"][0]: e for e in entries}


def events(own_client: redis.Redis) -> list[str]:
    return sorted(e.decode() for e in own_client.lrange(EVENTS, 0, -1))


def test_soft_and_hard_limits_on_prefork(own_client: redis.Redis, own_redis: RedisServer) -> None:
    SoftLimitedJob.perform_later("soft", 5)
    SoftLimitedJob.perform_later("quick", 0)
    HardLimitedJob.perform_later("hard", 5)
    SoftLimitedJob.set(time_limit=dt.timedelta(seconds=10)).perform_later("raised", 1)
    AsyncLimitedJob.perform_later("async", 5)
    AsyncCleanupJob.perform_later("awaiting")
    worker = WorkerProcess(own_redis.url, "-q", QUEUE, "-P", "prefork", "-c", "2", cwd=ROOT)
    try:
        wait_until(lambda: len(dead(own_client)) == 4 and len(events(own_client)) == 5, timeout=30,
                   what="four jobs over their limits in the dead set")
    finally:
        worker.stop()
    assert events(own_client) == ["async: cancelled", "awaiting: cleaned up after awaiting",
                              "quick: finished", "raised: finished", "soft: cleaned up"]
    assert "time limit (0.5 s) exceeded" in dead(own_client)["awaiting"]["error_message"]
    over = dead(own_client)
    assert over["soft"]["error_class"] == "billiard.exceptions.SoftTimeLimitExceeded"
    assert over["async"]["error_class"] == "billiard.exceptions.SoftTimeLimitExceeded"
    assert over["hard"]["error_class"] == "jobkit.errors.JobKilled"
    assert "time limit" in over["hard"]["error_message"].lower()


def test_an_async_jobs_soft_limit_holds_on_the_threads_pool(own_client: redis.Redis,
                                                            own_redis: RedisServer) -> None:
    AsyncLimitedJob.perform_later("async", 5)
    AsyncLimitedJob.perform_later("async-quick", 0)
    worker = WorkerProcess(own_redis.url, "-q", QUEUE, "-P", "threads", "-c", "2", cwd=ROOT)
    try:
        wait_until(lambda: len(dead(own_client)) == 1 and len(events(own_client)) == 2, timeout=30,
                   what="the slow async job in the dead set")
    finally:
        worker.stop()
    assert events(own_client) == ["async-quick: finished", "async: cancelled"]
    assert "time limit (0.5 s) exceeded" in dead(own_client)["async"]["error_message"]


def test_limits_travel_in_the_payload_and_the_celery_header(own_client: redis.Redis) -> None:
    SoftLimitedJob.set(hard_time_limit=30).perform_later("x", 0)
    message = own_client.lindex(QUEUE, 0)
    assert json.loads(message)["headers"]["timelimit"] == [30.0, 0.5]
    assert read_task_args(message)[0]["time_limits"] == [0.5, 30.0]
    AsyncLimitedJob.set(hard_time_limit=30).perform_later("y", 0)  # soft: jobkit's, not Celery's
    message = own_client.lindex(QUEUE, 0)
    assert json.loads(message)["headers"]["timelimit"] == [30.0, None]
    assert read_task_args(message)[0]["time_limits"] == [0.5, 30.0]


@pytest.mark.parametrize("limits", [[10, 5], [float("inf"), None], [1e300, None], "10"])
def test_a_payload_with_limits_no_class_could_have_is_refused(limits: object) -> None:
    with pytest.raises(PayloadError, match="time_limit|time_limits"):
        Payload.from_dict({"v": 1, "job_class": "a.B", "job_id": "j", "queue_name": "q",
                           "priority": None, "args": [], "kwargs": {}, "executions": 0,
                           "enqueued_at": None, "scheduled_at": None, "time_limits": limits})


@pytest.mark.parametrize(("body", "message"), [
    ({"time_limit": 0}, "time_limit must be more than 0 seconds"),
    ({"hard_time_limit": "1m"}, "hard_time_limit must be seconds (a number) or a timedelta"),
    ({"time_limit": 10, "hard_time_limit": 5}, "hard_time_limit (5 s) must be more than"),
    ({"timeout": 10}, "(did you mean time_limit (soft) or hard_time_limit?)"),
])
def test_bad_limits_are_refused_when_the_class_is_defined(body: dict, message: str) -> None:
    with pytest.raises(JobClassError) as info:
        type("Bad", (jobkit.Job,), {**body, "perform": lambda self: None})
    assert message in str(info.value)


def test_bad_limits_in_set_are_refused_before_anything_is_sent() -> None:
    with pytest.raises(ValueError, match="time_limit must be more than 0 seconds"):
        SoftLimitedJob.set(time_limit=-1)
    with pytest.raises(ValueError, match=r"HardLimitedJob.set\(...\): hard_time_limit \(0.5 s\)"):
        HardLimitedJob.set(time_limit=0.7)  # the class's hard limit is 0.5
    with pytest.raises(ValueError, match="must be more than time_limit"):
        SoftLimitedJob("x", 0).set(hard_time_limit=0.2)  # below the class's soft 0.5


def test_the_example_in_jobs_md_defines_and_enqueues(own_client: redis.Redis) -> None:
    text = (DOCS / "jobs.md").read_text()
    (example,) = re.findall(r"#### Time limits\n\n```python\n(.*?)```", text, re.DOTALL)
    with example_module("docs_time_limits_example") as module:
        run(example, module, "docs/jobs.md")
    message = own_client.lindex("default", 0)
    assert json.loads(message)["headers"]["timelimit"] == [3700.0, 3600.0]
