"""Rate limiters on the session's private Redis: each kind grants exactly its count, resets,
slides, drains or frees as it says, waits within wait_timeout, and holds under racing
processes. Test modes never limit and never touch Redis."""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import multiprocessing
import os
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
import redis

import jobkit
import jobkit.limiter
from jobkit import keys, testing
from jobkit.adapters import use_adapter
from jobkit.errors import ConfigError, OverLimit
from jobkit.limiter import Limiter
from tests.conftest import wait_for


def redis_now(r: redis.Redis) -> float:
    seconds, micros = r.time()
    return seconds + micros / 1e6


def make(kind: str, name: str, count: int, **options: Any) -> Limiter:
    """A limiter of `kind` with an interval of 60 s (concurrent: lock_timeout 30 s)."""
    if kind == "concurrent":
        return jobkit.limiter.concurrent(name, count, **options)
    return getattr(jobkit.limiter, kind)(name, count, "minute", **options)


def snapshot(r: redis.Redis, key: str) -> Any:
    """Everything a key holds (not its TTL, which runs down by itself)."""
    kind = r.type(key)
    if kind == "hash":
        return kind, r.hgetall(key)
    if kind == "zset":
        return kind, r.zrange(key, 0, -1, withscores=True)
    return kind, None


# -- each kind: exactly count, then OverLimit ---------------------------------------------------

# The retry estimate when full (interval 60 s, count 3): the bucket's next minute, the window's
# oldest grant leaving, the leaky level draining one unit (20 s), the earliest lock expiry.
RETRY_BOUNDS = {"bucket": (0.0, 60.0), "window": (58.0, 60.0), "leaky": (18.0, 20.0),
                "concurrent": (28.0, 30.0)}


@pytest.mark.parametrize("kind", ["bucket", "window", "leaky", "concurrent"])
def test_each_kind_grants_exactly_count_then_refuses(r: redis.Redis, kind: str) -> None:
    if kind == "bucket":  # three grants and the refusal in one minute
        wait_for(lambda: redis_now(r) % 60 < 58, timeout=5, what="not the end of a minute")
    limiter = make(kind, "api", 3, wait_timeout=0)
    with contextlib.ExitStack() as held:  # concurrent slots stay held until the end
        grants = [held.enter_context(limiter.acquire()) for _ in range(3)]
        for _ in range(2):
            with pytest.raises(OverLimit) as refused, limiter.acquire():
                pytest.fail("a fourth call was let through")
        assert refused.value.limiter == "api"
        assert refused.value.reschedule is True
        low, high = RETRY_BOUNDS[kind]
        assert low < refused.value.retry_after <= high, refused.value.retry_after
        state = limiter.state()
        assert math.isclose(state["used"], 3, abs_tol=0.01)  # refusals took nothing
    assert all(abs(g.granted_at - redis_now(r)) < 2 for g in grants)
    assert [g.limiter for g in grants] == ["api"] * 3


def test_over_limit_carries_reschedule_false_when_asked(r: redis.Redis) -> None:
    limiter = jobkit.limiter.window("erp", 1, 30, wait_timeout=0, reschedule=False)
    with limiter.acquire():
        pass
    with pytest.raises(OverLimit) as refused, limiter.acquire():
        pass
    assert refused.value.reschedule is False
    assert "'erp' is over its limit" in str(refused.value)


# -- how each kind frees capacity ----------------------------------------------------------------

def test_bucket_resets_at_the_next_aligned_interval(r: redis.Redis) -> None:
    wait_for(lambda: redis_now(r) % 0.5 < 0.3, what="the start of a half second")
    refusing = jobkit.limiter.bucket("half", 2, 0.5, wait_timeout=0)
    waiting = jobkit.limiter.bucket("half", 2, 0.5, wait_timeout=2)
    with refusing.acquire(), refusing.acquire() as last:
        pass
    with pytest.raises(OverLimit) as refused, refusing.acquire():
        pass
    boundary = math.floor(last.granted_at / 0.5) * 0.5 + 0.5
    assert 0 < refused.value.retry_after <= 0.5
    with waiting.acquire() as grant:
        pass
    assert boundary <= grant.granted_at < boundary + 0.1  # the new interval, at its start
    assert 0 < grant.waited < 0.6
    assert refusing.state()["used"] == 1  # a fresh bucket


def test_window_slides_one_grant_at_a_time(r: redis.Redis) -> None:
    limiter = jobkit.limiter.window("slide", 2, 0.6, wait_timeout=0)
    with limiter.acquire() as first:
        pass
    wait_for(lambda: redis_now(r) > first.granted_at + 0.3, what="half the window")
    with limiter.acquire() as second:
        pass
    with pytest.raises(OverLimit) as refused, limiter.acquire():
        pass
    left = first.granted_at + 0.6 - redis_now(r)
    assert left - 0.05 < refused.value.retry_after <= first.granted_at + 0.6 - second.granted_at
    wait_for(lambda: redis_now(r) > first.granted_at + 0.6, what="the first grant to leave")
    with limiter.acquire():  # the first grant left the window; the second has not
        pass
    with pytest.raises(OverLimit) as again, limiter.acquire():
        pass
    assert 0 < again.value.retry_after <= second.granted_at + 0.6 - redis_now(r) + 0.01


def test_leaky_bucket_drains_at_count_per_interval(r: redis.Redis) -> None:
    limiter = jobkit.limiter.leaky("drip", 2, 1, wait_timeout=0)  # burst 2, one per 0.5 s
    for _ in range(2):
        with limiter.acquire():
            pass
    started = time.monotonic()
    with pytest.raises(OverLimit) as refused, limiter.acquire():
        pass
    assert 0.4 < refused.value.retry_after <= 0.5
    level = limiter.state()["used"]
    assert 1.8 < level <= 2
    wait_for(lambda: limiter.state()["used"] <= 1, timeout=3, every=0.01, what="one unit out")
    assert 0.3 < time.monotonic() - started < 0.8  # about 0.5 s for one unit at 2/s
    with limiter.acquire():
        pass
    with pytest.raises(OverLimit), limiter.acquire():
        pass


def test_concurrent_slot_is_released_on_exit_even_on_error(r: redis.Redis) -> None:
    limiter = jobkit.limiter.concurrent("erp", 2, wait_timeout=0)
    with limiter.acquire():
        with pytest.raises(KeyError), limiter.acquire():
            assert limiter.state()["used"] == 2
            with pytest.raises(OverLimit), limiter.acquire():
                pass
            raise KeyError("the job failed")
        assert limiter.state()["used"] == 1  # only its own slot was given back
    assert limiter.state() == {"kind": "concurrent", "name": "erp", "count": 2,
                               "interval": None, "used": 0.0, "retry_after": 0.0}
    with limiter.acquire(), limiter.acquire():
        pass


def test_concurrent_lock_expires_after_lock_timeout(r: redis.Redis, caplog) -> None:
    limiter = jobkit.limiter.concurrent("erp", 1, wait_timeout=0, lock_timeout=0.3)
    dead = limiter.acquire()  # a holder whose process dies: never exits
    dead.__enter__()
    started = time.monotonic()
    with pytest.raises(OverLimit) as refused, limiter.acquire():
        pass
    assert 0.2 < refused.value.retry_after <= 0.3

    def free() -> bool:
        try:
            with limiter.acquire():
                return True
        except OverLimit:
            return False

    wait_for(free, timeout=3, every=0.02, what="the slot to expire")
    assert 0.25 < time.monotonic() - started < 1.0
    live = limiter.acquire()
    live.__enter__()
    with caplog.at_level(logging.WARNING, "jobkit.limiter"):
        dead.__exit__(None, None, None)  # late: must not free the live holder's slot
    assert any("past lock_timeout" in m for m in caplog.messages)
    assert limiter.state()["used"] == 1
    live.__exit__(None, None, None)
    assert limiter.state()["used"] == 0


# -- waiting -----------------------------------------------------------------------------------

def test_acquire_waits_for_a_released_slot(r: redis.Redis) -> None:
    limiter = jobkit.limiter.concurrent("erp", 1, wait_timeout=3)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with limiter.acquire():
            held.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        held.wait(5)
        releaser = threading.Timer(0.4, release.set)
        releaser.start()
        with limiter.acquire() as grant:
            assert release.is_set()
        assert 0.35 < grant.waited < 1.0  # freed at 0.4 s, polled every 0.1 s at most
    finally:
        release.set()
        holder.join(5)


def test_acquire_waits_for_the_window_then_succeeds(r: redis.Redis) -> None:
    limiter = jobkit.limiter.window("later", 1, 0.4, wait_timeout=2)
    with limiter.acquire() as first:
        pass
    with limiter.acquire() as second:
        pass
    assert second.granted_at - first.granted_at >= 0.4
    assert 0.2 < second.waited < 0.6


def test_acquire_gives_up_after_wait_timeout(r: redis.Redis) -> None:
    limiter = jobkit.limiter.bucket("slow", 1, timedelta(minutes=10), wait_timeout=0.3)
    with limiter.acquire():
        pass
    started = time.monotonic()
    with pytest.raises(OverLimit) as refused, limiter.acquire():
        pass
    assert 0.3 <= time.monotonic() - started < 0.5  # waited its 0.3 s, not the 10 minutes
    assert 0 < refused.value.retry_after <= 600


# -- validation --------------------------------------------------------------------------------

@pytest.mark.parametrize(("call", "message"), [
    (lambda: jobkit.limiter.bucket("", 1, "second"), "name must be a non-empty string"),
    (lambda: jobkit.limiter.bucket(7, 1, "second"), "not 7"),
    (lambda: jobkit.limiter.bucket("x", 0, "second"), "count must be a positive whole number"),
    (lambda: jobkit.limiter.window("x", True, "second"), "not True"),
    (lambda: jobkit.limiter.leaky("x", 2.5, "second"), "not 2.5"),
    (lambda: jobkit.limiter.bucket("x", 1, "secnd"), "did you mean 'second'?"),
    (lambda: jobkit.limiter.window("x", 1, "fortnight"), "unknown limiter interval 'fortnight'"),
    (lambda: jobkit.limiter.window("x", 1, 0), "interval must be more than 0 seconds"),
    (lambda: jobkit.limiter.leaky("x", 1, float("inf")), "not inf"),
    (lambda: jobkit.limiter.leaky("x", 1, timedelta(seconds=-1)), "interval must be"),
    (lambda: jobkit.limiter.bucket("x", 1, 0.0001), "at least 0.001 s"),
    (lambda: jobkit.limiter.bucket("x", 1, "second", wait_timeout=-1), "wait_timeout"),
    (lambda: jobkit.limiter.window("x", 1, 1, wait_timeout=float("nan")), "wait_timeout"),
    (lambda: jobkit.limiter.concurrent("x", 1, lock_timeout=0), "lock_timeout"),
    (lambda: jobkit.limiter.concurrent("x", 1, reschedule="no"), "reschedule"),
])
def test_bad_settings_are_refused_naming_the_culprit(call: Any, message: str) -> None:
    with pytest.raises(ConfigError, match="limiter") as error:
        call()
    assert message in str(error.value)
    assert isinstance(error.value, ValueError)


def test_settings_are_kept_in_seconds() -> None:
    limiter = jobkit.limiter.window("x", 10, "hour", wait_timeout=timedelta(seconds=2))
    assert (limiter.name, limiter.kind, limiter.count, limiter.interval, limiter.wait_timeout,
            limiter.reschedule) == ("x", "window", 10, 3600.0, 2.0, True)
    erp = jobkit.limiter.concurrent("erp", 5, lock_timeout=timedelta(milliseconds=300))
    assert (erp.kind, erp.interval, erp.lock_timeout, erp.wait_timeout) == (
        "concurrent", None, 0.3, 5.0)
    assert jobkit.limiter.leaky("m", 60, 1.5).interval == 1.5


# -- state and states ----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["bucket", "window", "leaky", "concurrent"])
def test_state_reads_without_changing_anything(r: redis.Redis, kind: str) -> None:
    limiter = make(kind, "look", 2, wait_timeout=0)
    assert limiter.state()["used"] == 0
    assert r.exists(limiter.key) == 0  # looking at an unused limiter creates nothing
    with contextlib.ExitStack() as held:
        for _ in range(2):
            held.enter_context(limiter.acquire())
        before = snapshot(r, limiter.key)
        states = [limiter.state() for _ in range(5)] + jobkit.limiter.states()
        assert snapshot(r, limiter.key) == before
        assert all(math.isclose(s["used"], 2, abs_tol=0.01) for s in states)
        assert all(s["retry_after"] > 0 for s in states)
        assert states[0]["kind"] == kind and states[0]["count"] == 2


def test_states_lists_every_limiter_from_what_redis_holds(r: redis.Redis) -> None:
    made = [jobkit.limiter.bucket("stripe", 100, "second"),
            jobkit.limiter.window("api:v2", 10, "minute"),
            jobkit.limiter.leaky("mail", 60, 90),
            jobkit.limiter.concurrent("erp", 5, lock_timeout=30)]
    with contextlib.ExitStack() as held:
        for limiter in made:
            held.enter_context(limiter.acquire())
        r.set(keys.limiter("window", "broken"), "not a limiter")  # skipped, not fatal
        listed = jobkit.limiter.states()
    assert [(s["kind"], s["name"], s["count"], s["interval"]) for s in listed] == [
        ("bucket", "stripe", 100, 1.0), ("concurrent", "erp", 5, None),
        ("leaky", "mail", 60, 90.0), ("window", "api:v2", 10, 60.0)]
    assert [s["used"] for s in listed][1:] == [1, pytest.approx(1, abs=0.01), 1]
    assert r.exists(keys.limiter("window", "broken"))


# -- test modes ----------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["fake", "inline", "test adapter"])
def test_test_modes_never_limit_and_never_touch_redis(r: redis.Redis, mode: str) -> None:
    jobkit.configure(redis_url="redis://127.0.0.1:1/0")  # nothing listens there
    try:
        with testing.fake() if mode == "fake" else testing.inline() if mode == "inline" \
                else contextlib.nullcontext():
            if mode == "test adapter":
                use_adapter("test")
            for limiter in (jobkit.limiter.bucket("b", 1, "day", wait_timeout=0),
                            jobkit.limiter.concurrent("c", 1, wait_timeout=0)):
                with limiter.acquire(), limiter.acquire() as grant:
                    assert grant.waited == 0
    finally:
        use_adapter(None)
        jobkit.configure()
    assert r.keys(keys.limiter("*", "*")) == []  # (the session worker's heartbeat may be there)
    with pytest.raises(redis.ConnectionError):  # and Redis would indeed have failed
        jobkit.configure(redis_url="redis://127.0.0.1:1/0")
        try:
            jobkit.limiter.bucket("b", 1, "day").state()
        finally:
            jobkit.configure()


# -- races between processes ---------------------------------------------------------------------

def hammer(url: str, kind: str, count: int, interval: float, seconds: float,
           ready: Any, out: Any) -> None:
    """In a spawned process: take units for `seconds` (waiting when over), then send back the
    Redis times of the grants."""
    os.environ["REDIS_URL"] = url
    jobkit.configure()
    limiter = getattr(jobkit.limiter, kind)("race", count, interval, wait_timeout=2)
    granted = []
    ready.wait(30)
    stop = time.monotonic() + seconds
    while time.monotonic() < stop:
        with limiter.acquire() as grant:
            granted.append(grant.granted_at)
    out.put(granted)


def race(url: str, kind: str, count: int, interval: float, seconds: float) -> list[float]:
    """The grant times of 4 spawned processes hammering one limiter at once."""
    spawn = multiprocessing.get_context("spawn")
    ready, out = spawn.Barrier(5), spawn.Queue()
    racers = [spawn.Process(target=hammer, args=(url, kind, count, interval, seconds, ready,
                                                 out)) for _ in range(4)]
    for racer in racers:
        racer.start()
    try:
        ready.wait(30)
        granted = sorted(t for _ in racers for t in out.get(timeout=seconds + 20))
    finally:
        for racer in racers:
            racer.join(10)
            if racer.is_alive():
                racer.kill()
    return granted


def test_racing_processes_never_pass_a_bucket(r: redis.Redis, redis_server: str) -> None:
    granted = race(redis_server, "bucket", 50, 1.0, 3.2)
    per_second = collections.Counter(math.floor(t) for t in granted)
    assert max(per_second.values()) <= 50, per_second
    first, last = min(per_second), max(per_second)
    inner = [per_second[s] for s in range(first + 1, last)]  # whole seconds of hammering
    assert len(inner) >= 2, per_second
    assert sum(inner) >= 0.97 * 50 * len(inner), per_second


def test_racing_processes_never_pass_a_window(r: redis.Redis, redis_server: str) -> None:
    granted = race(redis_server, "window", 20, 0.5, 2.0)
    gaps = [later - earlier for earlier, later in zip(granted, granted[20:], strict=False)]
    assert min(gaps) >= 0.5 - 1e-6  # 21 grants always span at least one interval
    span = granted[-1] - granted[0]
    assert len(granted) >= 0.9 * 20 * math.floor(span / 0.5), (len(granted), span)
