"""The controls under faults and odd data, without a worker: Redis restarting while a lock or
slot is released, limits raised by a deploy, held entries that are broken, bulk order."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest
import redis

import jobkit
from jobkit import keys, limiter
from jobkit.celery_message import build_message
from jobkit.controls import concurrency
from jobkit.controls.release import released
from jobkit.controls.unique import release_lock
from jobkit.testing_services import RedisServer, wait_until
from jobkit.worker.envelope import problem
from tests.test_control_options import QUEUE, Import, Sync

UNACKED, INDEX = keys.unacked("test"), keys.unacked_index("test")


@pytest.fixture
def restartable(monkeypatch: pytest.MonkeyPatch) -> Iterator[RedisServer]:
    server = RedisServer(aof=True)
    monkeypatch.setenv("REDIS_URL", server.url)
    saved = jobkit.config.current_settings()
    jobkit.configure()
    yield server
    jobkit.config.use_settings(saved)
    server.stop()


def test_a_release_that_meets_a_redis_restart_is_sent_once_redis_is_back(
        restartable: RedisServer) -> None:
    client = redis.Redis.from_url(restartable.url)
    client.set(keys.unique("k"), "job-1")
    restartable.kill()
    done = threading.Event()
    thread = threading.Thread(target=lambda: (released(
        lambda: release_lock({"key": "k"}, "job-1", client), "the lock"), done.set()))
    thread.start()
    assert not done.wait(0.6)  # still trying: Redis is down
    restartable.start()
    assert done.wait(15)
    assert not client.exists(keys.unique("k"))


def test_a_concurrent_limiter_whose_release_meets_redis_down_does_not_fail_the_block(
        restartable: RedisServer) -> None:
    erp = limiter.concurrent("erp", 1, lock_timeout=1)
    with erp.acquire():
        restartable.kill()  # the work is done; the place frees itself after lock_timeout
    restartable.start()
    wait_until(lambda: erp.state()["used"] == 0, timeout=5, what="the place to free itself")


def _held(r: redis.Redis, job_id: str, to: int, list_key: str = QUEUE,
          duration: float = 60) -> bool:
    """Admit a job of key "k" as a worker's transport would; True when it got a slot."""
    _, message = build_message({"job_class": "x.Job", "job_id": job_id, "queue_name": QUEUE,
                                "priority": None, "args": [], "kwargs": {},
                                "executions": 0}, job_id)
    r.hset(UNACKED, job_id, "[]")
    return concurrency.admit(r, {"key": "k", "to": to, "duration": duration}, job_id, job_id,
                             list_key, message, UNACKED, INDEX)


def _front(r: redis.Redis) -> list[str]:
    """The job ids in QUEUE, the next to be fetched first."""
    return [json.loads(m)["headers"]["id"] for m in reversed(r.lrange(QUEUE, 0, -1))]


def test_a_raised_limit_starts_the_jobs_held_under_the_old_one_first(r: redis.Redis) -> None:
    assert _held(r, "a", 1) and not _held(r, "b", 1) and not _held(r, "c", 1)
    assert not r.hexists(UNACKED, "b")  # a held job left the in-flight keys in the same step
    assert _held(r, "d", 4)  # to=4 now: b and c go first, then d fits
    assert _front(r) == ["b", "c"]
    assert r.zcard(keys.concurrency_slots("k")) == 4 and r.llen(keys.concurrency_held("k")) == 0
    assert not _held(r, "e", 4)  # and no further


def test_held_jobs_promoted_together_are_fetched_oldest_first(own_client: redis.Redis) -> None:
    r = own_client  # no worker's poller sweeps here: only the test does
    assert all(_held(r, f"run{n}", 3, duration=1) for n in range(3))
    assert not any(_held(r, f"held{n}", 3) for n in range(3))
    last_expiry = max(score for _, score in r.zrange(keys.concurrency_slots("k"), 0, -1,
                                                     withscores=True))
    # the slots expire a few ms apart: sweep once, after the last, so all three go together
    wait_until(lambda: float(r.time()[0]) > last_expiry, timeout=5, what="the slots to expire")
    assert concurrency.sweep(r) == 3
    assert _front(r) == ["held0", "held1", "held2"]


def test_a_broken_held_entry_is_buried_and_the_sweep_goes_on(own_client: redis.Redis) -> None:
    r = own_client  # no worker's poller sweeps here: only the test does
    r.hset("not-a-list", "x", "1")
    assert _held(r, "run", 1, duration=1)
    assert not _held(r, "odd", 1, list_key="not-a-list") and not _held(r, "ok", 1)
    r.sadd(keys.CONCURRENCY_HELD_KEYS, "broken")
    r.set(keys.concurrency_held("broken"), "a string")  # sweeping it fails; others go on
    wait_until(lambda: concurrency.sweep(r) == 1, timeout=5, what="the slot to expire")
    assert _front(r) == ["ok"]
    (dead,) = r.zrange(keys.DEAD, 0, -1)
    assert "its queue key not-a-list is a hash, not a list" in json.loads(dead)["error_message"]


def test_a_bulk_enqueue_of_plain_and_unique_jobs_keeps_its_order(r: redis.Redis) -> None:
    jobkit.perform_all_later([Import("p", 1), Sync("u2"), Import("p", 3), Sync("u4")])
    order = [json.loads(m)["headers"]["argsrepr"] for m in reversed(r.lrange(QUEUE, 0, -1))]
    assert order == ["('p', 1)", "('u2',)", "('p', 3)", "('u4',)"]


@pytest.mark.parametrize("duration", [float("inf"), float("nan"), 0, -1, True])
def test_a_concurrency_header_without_a_finite_duration_is_refused(duration: float) -> None:
    _, message = build_message({"job_class": "x.Job", "job_id": "j", "queue_name": QUEUE,
                                "priority": None, "args": [], "kwargs": {}, "executions": 0},
                               "j")
    raw = json.loads(message)
    raw["headers"]["jobkit_concurrency"] = {"key": "k", "to": 1, "duration": duration}
    assert problem(raw) == "header 'jobkit_concurrency' has no positive, finite `duration`"


def test_a_unique_enqueue_works_after_redis_lost_its_scripts(r: redis.Redis) -> None:
    assert Sync.perform_later("a").successfully_enqueued
    r.script_flush()  # as a restarted Redis: the EVALSHA is refused, then sent again
    assert Sync.perform_later("b").successfully_enqueued
    assert Sync.perform_later("b").duplicate_of is not None
    jobkit.perform_all_later([Sync("c"), Import("p", 1)])
    assert r.llen(QUEUE) == 4
