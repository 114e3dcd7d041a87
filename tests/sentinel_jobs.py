"""A job for tests/test_sentinel.py: it records its runs in a plain Redis outside the Sentinel
set-up (JOBKIT_TEST_RECORD_URL), so a failover cannot lose the record of a run."""

from __future__ import annotations

import os
import time

import redis

from jobkit import Job

DONE = "sentinel-test:done"  # zset: job number -> when it (last) ran
RUNS = "sentinel-test:runs"


class SentinelCountJob(Job):
    queue_as = "default"

    def perform(self, n: int) -> None:
        client = redis.Redis.from_url(os.environ["JOBKIT_TEST_RECORD_URL"])
        with client.pipeline(transaction=False) as pipe:
            pipe.zadd(DONE, {str(n): time.time()})
            pipe.incr(RUNS)
            pipe.execute()
