"""Jobs the control tests run on real workers. Each run records itself in Redis with Redis's
own clock, so the test measures what the jobs saw (a worker imports this module by path)."""

from __future__ import annotations

import json
import os
import time
import uuid

import redis

from jobkit import Job, limiter
from jobkit.controls import Concurrency, Debounce

QUEUE = "controls"
EVENTS = "controls-test:events"  # list of JSON events: {"event": "start"|"end", ...}
FIRST_RUN_SLOW = "controls-test:slow-once"  # set of names whose first run was the slow one


def _client() -> redis.Redis:
    return redis.Redis.from_url(os.environ["REDIS_URL"])


def _now(client: redis.Redis) -> float:
    seconds, micros = client.time()
    return seconds + micros / 1e6


def record(event: str, job: Job, run: str, **fields: object) -> None:
    client = _client()
    client.rpush(EVENTS, json.dumps({"event": event, "job": type(job).__name__,
                                     "job_id": job.job_id, "run": run, "at": _now(client),
                                     "args": job.arguments, **fields}))


class _Recorded(Job):
    queue_as = QUEUE

    def run_recorded(self, seconds: float = 0.0) -> None:
        run = uuid.uuid4().hex
        record("start", self, run)
        time.sleep(seconds)
        record("end", self, run)


class UniqueSyncJob(_Recorded):
    unique_for = 3600
    unique_by = lambda job: job.arguments[0]  # noqa: E731 - the documented form

    def perform(self, key: str, n: int) -> None:
        self.run_recorded()


class UniqueAtStartJob(_Recorded):
    unique_for = 3600
    unique_until = "start"

    def perform(self, key: str, seconds: float = 0.0) -> None:
        self.run_recorded(seconds)


class LimitedImportJob(_Recorded):
    limits_concurrency = Concurrency(to=2, key=lambda job: job.arguments[0], duration=60)

    def perform(self, key: str, n: int, seconds: float) -> None:
        self.run_recorded(seconds)


class PushJob(_Recorded):
    debounce = Debounce(within=1.5, by=lambda job: job.arguments[0])

    def perform(self, key: str, n: int) -> None:
        self.run_recorded()


class _SlowOnce(_Recorded):
    """Sleeps `seconds` on its first run only (the run a test kills), then is quick."""

    def perform(self, name: str, seconds: float) -> None:
        first = _client().sadd(FIRST_RUN_SLOW, f"{type(self).__name__}:{name}")
        self.run_recorded(seconds if first else 0.0)


class SlowLimitedJob(_SlowOnce):
    limits_concurrency = Concurrency(to=1, key=lambda job: "one", duration=4)


class SlowUniqueJob(_SlowOnce):
    unique_for = 3600


def events(client: redis.Redis) -> list[dict]:
    return [json.loads(e) for e in client.lrange(EVENTS, 0, -1)]


class BucketJob(_Recorded):
    limiter = limiter.bucket("controls-test-bucket", 50, "second")

    def perform(self, n: int) -> None:
        self.run_recorded()


class StingyJob(_Recorded):
    """One run a minute, and no waiting: the second job is over the limit at once."""

    limiter = limiter.window("controls-test-stingy", 1, 60, wait_timeout=0)

    def perform(self, n: int) -> None:
        self.run_recorded()


class RaisingLimitJob(_Recorded):
    """Uses a limiter inside perform, asking it to raise rather than reschedule."""

    max_retries = 0

    def perform(self, n: int) -> None:
        with limiter.window("controls-test-raise", 1, 60, wait_timeout=0,
                            reschedule=False).acquire():
            self.run_recorded()
