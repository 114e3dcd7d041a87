"""The controls without a worker: class options refused with a reason, what an enqueue leaves
in Redis (locks, debounce windows, headers), and what fake and inline modes record."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import redis

import jobkit
from jobkit import Concurrency, Debounce, Job, JobClassError, NotUniqueError, keys, testing
from jobkit.celery_message import read_task_args
from jobkit.testing_services import wait_until
from jobkit.worker.envelope import problem

QUEUE = "controls"  # not consumed by the session worker


class Sync(Job):
    queue_as = QUEUE
    unique_for = 60
    unique_by = lambda job: job.arguments[0]  # noqa: E731

    def perform(self, account: str, n: int = 0) -> None:
        pass


class Strict(Job):
    queue_as = QUEUE
    unique_for = dt.timedelta(minutes=5)
    unique_conflict = "raise"

    def perform(self, account: str) -> None:
        pass


class Brief(Job):
    queue_as = QUEUE
    unique_for = 0.3

    def perform(self) -> None:
        pass


class Push(Job):
    queue_as = QUEUE
    debounce = Debounce(within=30, by=lambda job: job.arguments[0])

    def perform(self, user: str, n: int) -> None:
        pass


class Import(Job):
    queue_as = QUEUE
    limits_concurrency = Concurrency(to=2, key=lambda job: job.arguments[0])

    def perform(self, account: str, n: int = 0) -> None:
        pass


RAN: list[tuple[str, int]] = []


class Counted(Job):
    unique_for = 60

    def perform(self, name: str, n: int) -> None:
        RAN.append((name, n))
        if n < 1:
            Counted.perform_later(name, n)  # a duplicate while this one runs: refused


# -- class options -------------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "message"), [
    ({"unique_for": 0}, "unique_for must be more than 0 seconds"),
    ({"unique_for": "1h"}, "unique_for must be seconds (a number) or a timedelta"),
    ({"unique_for": 5, "unique_until": "finish"}, "unique_until must be 'start' or 'success'"),
    ({"unique_for": 5, "unique_conflict": "error"}, "unique_conflict must be 'skip' or 'raise'"),
    ({"limits_concurrency": 2}, "limits_concurrency must be a jobkit.Concurrency(...)"),
    ({"debounce": 30}, "debounce must be a jobkit.Debounce(...)"),
    ({"limiter": 100}, "limiter must be a jobkit.limiter"),
    ({"unique_for": 5, "debounce": Debounce(within=1)}, "sets both unique_for and debounce"),
    ({"unique": 60}, "(did you mean unique_for?)"),
    ({"concurrency": 2}, "(did you mean limits_concurrency?)"),
])
def test_bad_control_options_are_refused_when_the_class_is_defined(body: dict,
                                                                   message: str) -> None:
    with pytest.raises(JobClassError) as info:
        type("Bad", (Job,), {**body, "perform": lambda self: None})
    assert message in str(info.value)


@pytest.mark.parametrize(("make", "message"), [
    (lambda: Concurrency(to=0), "`to` must be a whole number >= 1"),
    (lambda: Concurrency(to=True), "`to` must be a whole number >= 1"),
    (lambda: Concurrency(to=1, key="account"), "`key` must be a callable"),
    (lambda: Concurrency(to=1, duration=-1), "Concurrency(duration=...) must be more than 0"),
    (lambda: Concurrency(to=1, group=""), "Concurrency(group='') must be a non-empty string"),
    (lambda: Debounce(within=float("nan")), "Debounce(within=...) must be more than 0"),
    (lambda: Debounce(within=1, by="user"), "`by` must be a callable"),
])
def test_bad_control_values_name_the_culprit(make, message: str) -> None:
    with pytest.raises(JobClassError) as info:
        make()
    assert message in str(info.value)


# -- unique jobs in Redis ------------------------------------------------------------------------

def test_a_duplicate_is_not_enqueued_and_says_which_job_holds_the_lock(r: redis.Redis) -> None:
    first = Sync.perform_later("acme", 1)
    second = Sync.perform_later("acme", 2)  # unique_by: the account only
    other = Sync.set(queue=QUEUE).perform_later("globex")
    assert (first.successfully_enqueued, second.successfully_enqueued,
            other.successfully_enqueued) == (True, False, True)
    assert second.duplicate_of == first.job_id and first.duplicate_of is None
    assert r.llen(QUEUE) == 2
    (lock,) = [k for k in r.scan_iter(keys.unique("tests.test_control_options.Sync:*"))
               if r.get(k) == first.job_id]
    assert 55 < r.pttl(lock) / 1000 <= 60


def test_unique_conflict_raise_raises_and_a_bulk_enqueue_sends_the_others(
        r: redis.Redis) -> None:
    Strict.perform_later("acme")
    with pytest.raises(NotUniqueError, match="same unique key") as info:
        Strict.perform_later("acme")
    assert [job.arguments for job in info.value.jobs] == [["acme"]]
    with pytest.raises(NotUniqueError) as info:
        jobkit.perform_all_later([Strict("acme"), Strict("globex")])
    assert len(info.value.jobs) == 1 and r.llen(QUEUE) == 2


def test_a_delayed_unique_job_holds_its_lock_until_it_is_due_plus_unique_for(
        r: redis.Redis) -> None:
    job = Sync.perform_in(100, "acme")
    assert r.zcard(keys.SCHEDULE) == 1 and r.llen(QUEUE) == 0
    lock = next(k for k in r.scan_iter(keys.unique("*")) if r.get(k) == job.job_id)
    assert 155 < r.pttl(lock) / 1000 <= 160
    assert not Sync.perform_later("acme").successfully_enqueued


def test_a_unique_lock_expires_by_itself(r: redis.Redis) -> None:
    assert Brief.perform_later().successfully_enqueued
    assert not Brief.perform_later().successfully_enqueued
    wait_until(lambda: not list(r.scan_iter(keys.unique("*"))), timeout=5,
               what="the lock to expire")
    assert Brief.perform_later().successfully_enqueued


# -- debounce and concurrency in Redis ------------------------------------------------------------

def test_debounce_keeps_one_pending_job_per_key_due_at_the_end_of_the_first_window(
        r: redis.Redis) -> None:
    first = Push.perform_later("ada", 1)
    (due,) = [score for _, score in r.zrange(keys.SCHEDULE, 0, -1, withscores=True)]
    Push.perform_later("ada", 2)
    jobkit.perform_all_later([Push("ada", 3), Push("bob", 1)])
    last = Push.set(wait=5).perform_later("ada", 4)
    entries = {json.loads(m)["job_id"]: s for m, s in r.zrange(keys.SCHEDULE, 0, -1,
                                                                withscores=True)}
    assert len(entries) == 2 and first.job_id not in entries
    assert entries[last.job_id] == due  # the window does not move with each enqueue
    assert r.llen(QUEUE) == 0


def test_a_concurrency_limited_job_carries_its_key_in_a_header(r: redis.Redis) -> None:
    Import.perform_later("acme", 1)
    raw = json.loads(r.lindex(QUEUE, 0))
    header = raw["headers"]["jobkit_concurrency"]
    assert header == {"key": "tests.test_control_options.Import:acme", "to": 2,
                      "duration": 900.0}
    assert read_task_args(r.lindex(QUEUE, 0))[0]["controls"]["concurrency"] == header
    assert problem(raw) is None
    raw["headers"]["jobkit_concurrency"] = {"key": "x", "to": 0, "duration": 1}
    assert problem(raw) == "header 'jobkit_concurrency' has no whole number `to` >= 1"


# -- test modes ---------------------------------------------------------------------------------

def test_fake_mode_records_skipped_and_held_jobs() -> None:
    with testing.fake():
        first = Sync.perform_later("acme", 1)
        duplicate = Sync.perform_later("acme", 2)
        for n in range(3):
            Push.perform_later("ada", n)
        for n in range(4):
            Import.perform_later("acme" if n < 3 else "globex", n)
        assert not duplicate.successfully_enqueued and duplicate.duplicate_of == first.job_id
        skipped = testing.skipped()
        assert [(s.reason, s.record.args) for s in skipped] == [
            ("unique", ["acme", 2]), ("debounced", ["ada", 0]), ("debounced", ["ada", 1])]
        assert skipped[0].by == first.job_id
        assert [job.args for job in testing.held(Import)] == [["acme", 2]]
        assert [job.args for job in Push.jobs] == [["ada", 2]]
        assert Push.jobs[0].at is not None
        assert testing.drain_all() == 6
        assert Sync.perform_later("acme", 3).successfully_enqueued  # the lock went with success
        Sync.clear()
        assert Sync.perform_later("acme", 4).successfully_enqueued  # clear() lets locks go


def test_inline_mode_refuses_a_duplicate_enqueued_while_the_job_runs() -> None:
    RAN.clear()
    with testing.inline():
        Counted.perform_later("a", 0)
        assert RAN == [("a", 0)]
        assert [s.reason for s in testing.skipped()] == ["unique"]
        Counted.perform_later("a", 1)  # the first one succeeded: its lock is gone
    assert RAN == [("a", 0), ("a", 1)]
