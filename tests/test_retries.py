"""Retries, discards and the dead set, on a real worker."""

from __future__ import annotations

import json

import pytest
import redis

import jobkit
from jobkit import Job, retry_on
from jobkit.job_sets import DeadSet, RetrySet
from jobkit.retries import decide, polynomially_longer, sidekiq_backoff
from tests.conftest import wait_for
from tests.jobs import DiscardedJob, FixableJob, FlakyJob, KilledJob
from tests.test_worker_integration import dead_entries, results

pytestmark = pytest.mark.usefixtures("worker")


def test_job_failing_twice_then_succeeding(r: redis.Redis) -> None:
    job = FlakyJob.perform_later("f")
    wait_for(lambda: RetrySet().size() == 1, what="the first failure in the retry set")
    [entry] = list(RetrySet())
    assert entry.job_id == job.job_id
    assert entry.error_class == "builtins.ConnectionError"
    assert entry.error_message == "flaky 1" and entry.retry_count == 0
    done = results(r, 3)
    assert [d["executions"] for d in done] == [1, 2, 3]
    wait_for(lambda: RetrySet().size() == 0, what="the retry set to empty")
    assert DeadSet().size() == 0


def test_exhausted_job_lands_in_the_dead_set_and_comes_back_with_retry(r: redis.Redis) -> None:
    job = FixableJob.perform_later()
    [dead] = dead_entries(r, 1)
    assert dead.job_id == job.job_id
    assert dead.error_message == "not fixed yet"
    assert dead.data["reason"] == "retry_on: 2 attempts exhausted"
    attempts = results(r, 3)
    assert attempts == [{"job": "FixableJob", "executions": 1},
                        {"job": "FixableJob", "executions": 2},
                        {"job": "FixableJob", "exhausted": "ValueError('not fixed yet')"}]
    r.set("test:fixed", "1")
    assert DeadSet().retry(dead)
    assert results(r, 4)[-1] == {"job": "FixableJob", "executions": 3}
    assert DeadSet().size() == 0 and RetrySet().size() == 0


def test_discard_on_drops_the_job_and_calls_after_discard(r: redis.Redis) -> None:
    DiscardedJob.perform_later()
    [done] = results(r, 1)
    assert done == {"job": "DiscardedJob", "discarded": "KeyError('gone')"}
    assert DeadSet().size() == 0 and RetrySet().size() == 0


def test_retry_in_kill_goes_dead_at_once(r: redis.Redis) -> None:
    KilledJob.perform_later()
    [dead] = dead_entries(r, 1)
    assert dead.data["reason"] == "retry_in: kill"
    assert RetrySet().size() == 0


def test_retry_set_entry_can_be_killed_or_run_now(r: redis.Redis) -> None:
    FlakyJob.set(queue="nobody_consumes").perform_later("k")  # nobody runs it: stays queued
    assert r.llen("nobody_consumes") == 1
    message = r.lpop("nobody_consumes")
    RetrySet().add(9e9, "nobody_consumes", message, job_id="x", error_message="e")
    [entry] = list(RetrySet())
    assert RetrySet().run_now(entry)
    assert r.llen("nobody_consumes") == 1 and RetrySet().size() == 0
    RetrySet().add(9e9, "nobody_consumes", r.lpop("nobody_consumes"), job_id="y")
    [entry] = list(RetrySet())
    assert RetrySet().kill(entry)
    assert [e.job_id for e in DeadSet()] == ["y"]
    assert json.loads(DeadSet().find("y").data["message"])["headers"]["task"] == \
        "tests.jobs.FlakyJob"


class _Policy(Job):
    max_retries = 2

    def perform(self) -> None:
        pass


def _failed(cls: type[Job], executions: int) -> Job:
    job = cls()
    job.executions = executions
    return job


def test_default_policy_counts_retries_like_sidekiq() -> None:
    assert decide(_failed(_Policy, 1), RuntimeError()).action == "retry"
    assert decide(_failed(_Policy, 2), RuntimeError()).action == "retry"
    exhausted = decide(_failed(_Policy, 3), RuntimeError())
    assert (exhausted.action, exhausted.reason) == ("dead", "2 retries exhausted")
    assert 15 <= decide(_failed(_Policy, 1), RuntimeError()).delay < 25


def test_retry_on_rules_newest_first_and_subclass_first() -> None:
    @retry_on(LookupError, wait=7, attempts=3, jitter=0)
    class Parent(Job):
        def perform(self) -> None:
            pass

    @retry_on(KeyError, wait=lambda n: n * 100, attempts=9)
    class Child(Parent):
        pass

    assert decide(_failed(Child, 2), KeyError()).delay == 200
    assert decide(_failed(Child, 2), IndexError()).delay == 7
    assert decide(_failed(Child, 3), IndexError()).action == "dead"
    assert decide(_failed(Parent, 2), KeyError()).delay == 7


def test_a_delay_no_retry_could_wait_sends_the_job_dead_saying_why() -> None:
    @retry_on(KeyError, wait=lambda n: float("inf"))
    class Forever(Job):
        def retry_in(self, retry_count: int, error: BaseException) -> float:
            return float("nan")

        def perform(self) -> None:
            pass

    by_rule = decide(_failed(Forever, 1), KeyError())
    assert (by_rule.action, by_rule.reason) == (
        "dead", "retry_on's wait gave inf: want seconds from 0 to 1000000000")
    by_hook = decide(_failed(Forever, 1), RuntimeError())
    assert by_hook.action == "dead" and by_hook.reason.startswith("retry_in returned nan")


def test_backoff_formulas() -> None:
    assert 15 <= sidekiq_backoff(0) <= 24
    assert 10000 + 15 <= sidekiq_backoff(10) <= 10000 + 15 + 9 * 11
    assert 3 <= polynomially_longer(1) <= 3 + 0.15
    assert 83 <= polynomially_longer(3, jitter=0) <= 83


@pytest.mark.parametrize("kwargs, message", [
    ({"attempts": 0}, "attempts must be a whole number >= 1"),
    ({"wait": "soon"}, "wait must be seconds"),
    ({"wait": float("inf")}, "wait must be seconds"),
    ({"wait": 1e300}, "wait must be seconds"),
    ({"wait": True}, "wait must be seconds"),
    ({"jitter": -1}, "jitter must be a finite number >= 0"),
    ({"jitter": float("inf")}, "jitter must be a finite number >= 0"),
])
def test_retry_on_checks_its_options(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        retry_on(RuntimeError, **kwargs)


def test_retry_on_takes_exception_classes() -> None:
    with pytest.raises(TypeError, match="takes Exception classes"):
        retry_on("RuntimeError")


def test_max_retries_is_checked_at_definition() -> None:
    from jobkit import JobClassError

    with pytest.raises(JobClassError, match="max_retries must be a whole number"):
        type("Bad", (Job,), {"max_retries": -1})


def test_dead_set_limits_are_settings(r: redis.Redis) -> None:
    jobkit.configure(dead_max_jobs=2, dead_timeout=100)
    try:
        now = __import__("time").time()
        for i, age in enumerate([500, 10, 5, 1]):
            DeadSet().add(now - age, "default", "{}", job_id=f"d{i}")
    finally:
        jobkit.configure()
    assert [e.job_id for e in DeadSet()] == ["d3", "d2"]


def test_backtrace_length_is_a_class_option() -> None:
    from jobkit.job_sets import describe_error

    try:
        raise ValueError("x")
    except ValueError as exc:
        assert describe_error(exc, 0)["backtrace"] == []
        assert 0 < len(describe_error(exc, 2)["backtrace"]) <= 2


def test_an_error_whose_str_raises_is_still_described() -> None:
    from jobkit.job_sets import describe_error

    class Odd(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no text")

    try:
        raise Odd()
    except Odd as exc:
        info = describe_error(exc)
    assert info["error_message"] == "<exception str() failed>"
    assert info["error_class"].endswith("Odd") and info["backtrace"]
