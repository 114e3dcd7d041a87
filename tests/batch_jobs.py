"""Jobs for tests/test_batches.py (imported by path by the workers). Each records what it did
in a Redis list, so the test reads what ran, and how often, from any process."""

from __future__ import annotations

import os
import time

import redis

import jobkit
from jobkit import Job, api

QUEUE = "batches"
EVENTS = "batches-test:events"
HEAL = "batches-test:heal"  # set: Doomed jobs that succeed from now on
GATE = "batches-test:gate"  # string: once set, Gate jobs finish


def client() -> redis.Redis:
    return redis.Redis.from_url(os.environ["REDIS_URL"])


def record(event: str) -> None:
    client().rpush(EVENTS, event)


class Work(Job):
    queue_as = QUEUE

    def perform(self, name: str) -> None:
        record(f"ran {name}")


class Flaky(Job):
    """Fails its first run (the retry set), then succeeds."""

    queue_as = QUEUE

    def retry_in(self, retry_count: int, error: BaseException) -> float:
        return 0.1

    def perform(self, name: str) -> None:
        if client().incr(f"batches-test:runs:{name}") == 1:
            raise RuntimeError(f"{name} fails once")
        record(f"ran {name}")


class Doomed(Job):
    """Dies at once (no retries), until the test heals it (then a dead-set retry succeeds)."""

    queue_as = QUEUE
    max_retries = 0

    def perform(self, name: str) -> None:
        if not client().sismember(HEAL, name):
            raise RuntimeError(f"{name} is doomed")
        record(f"ran {name}")


class Gate(Job):
    """Records its start, then waits (at most 30 s) for the test to open the gate."""

    queue_as = QUEUE

    def perform(self, name: str) -> None:
        record(f"started {name}")
        deadline = time.monotonic() + 30
        while not client().exists(GATE) and time.monotonic() < deadline:
            time.sleep(0.05)
        record(f"ran {name}")


class Spawner(Job):
    """A batch job that adds jobs to its own batch, and creates a child batch, as it runs."""

    queue_as = QUEUE

    def perform(self, name: str) -> None:
        with jobkit.Batch.open(self.batch_id):
            Work.perform_later(f"{name}/added-1")
            Work.perform_later(f"{name}/added-2")
        child = jobkit.Batch(description="from a job")
        with child.on("success", Callback(child.batch_id, "grandchild success")):
            Work.perform_later(f"{name}/grandchild")
        record(f"ran {name}")


class Callback(Job):
    """A callback: records its label with the batch's counts as it runs."""

    queue_as = QUEUE

    def perform(self, batch_id: str, label: str) -> None:
        status = api.batch(batch_id)
        assert status is not None
        record(f"{label}: total={status.total} succeeded={status.succeeded} "
               f"dead={status.dead} pending={status.pending}")
