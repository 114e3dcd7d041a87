"""Queue order on a real worker: strict (config order) and weighted (sampled by weight)."""

from __future__ import annotations

import json
import random
from collections import Counter

import redis

import jobkit
from jobkit.queues import fetch_order
from tests.conftest import start_worker
from tests.jobs import RESULTS, EchoJob
from tests.test_worker_integration import results


def started_order(r: redis.Redis, n: int) -> list[str]:
    return [json.loads(item)["args"] for item in r.lrange(RESULTS, 0, n - 1)]


def test_strict_order_drains_earlier_queues_first(r: redis.Redis, redis_server, tmp_path) -> None:
    for _ in range(3):
        for queue in ("q_low", "q_mid", "q_high"):
            EchoJob.set(queue=queue).perform_later(queue)
    EchoJob.set(queue="q_high", priority=9).perform_later("q_high p9")
    EchoJob.set(queue="q_high", priority=0).perform_later("q_high p0")
    EchoJob.set(queue="q_mid", priority=4).perform_later("q_mid p4")
    worker = start_worker(redis_server, tmp_path / "w.log", "-c", "1",
                          "-q", "q_high", "-q", "q_mid", "-q", "q_low")
    try:
        results(r, 12)
    finally:
        worker.stop()
    order = [a.strip("(),'") for a in started_order(r, 12)]
    assert order == (["q_high"] * 3 + ["q_high p0", "q_high p9"]
                     + ["q_mid"] * 3 + ["q_mid p4"] + ["q_low"] * 3)


def test_weighted_order_samples_by_weight_and_starves_nobody(
        r: redis.Redis, redis_server, tmp_path) -> None:
    jobkit.perform_all_later(
        [EchoJob("heavy").set(queue="q_heavy") for _ in range(150)]
        + [EchoJob("light").set(queue="q_light") for _ in range(150)]
    )
    worker = start_worker(redis_server, tmp_path / "w.log", "-c", "1", "-P", "solo",
                          "-q", "q_heavy,3", "-q", "q_light,1")
    try:
        results(r, 100, timeout=60)
    finally:
        worker.stop()
    first = Counter(started_order(r, 100))
    assert 60 <= first["('heavy',)"] <= 90, first
    assert first["('light',)"] >= 10, first


def test_fetch_order_rules() -> None:
    weights = {"a": 3, "b": 1}
    assert fetch_order(["a", "b", "c"], weights, "strict") == ["a", "b", "c"]
    rng = random.Random(7)
    leaders = Counter(fetch_order(["a", "b"], weights, "weighted", rng)[0] for _ in range(4000))
    assert 0.70 < leaders["a"] / 4000 < 0.80
    assert sorted(fetch_order(["a", "b", "c"], weights, "weighted", rng)) == ["a", "b", "c"]
