"""The job tests/test_partition.py runs on worker hosts in network namespaces.

Every run records its start and its finish in Redis, with the worker host that ran it
(`JK_PARTITION_HOST`, set in each worker's environment). A run's records are members of sets,
written again until Redis takes them: a write retried after a lost reply (the host may be cut
off at any moment) adds nothing twice, so a job with two start records really started twice.
"""

from __future__ import annotations

import json
import os
import time
import uuid

import redis

from jobkit import Job

#: How long a run keeps trying to write one record (longer than any partition in the test).
RECORD_FOR_SECONDS = 90.0

_clients: dict[int, redis.Redis] = {}


def _redis() -> redis.Redis:
    client = _clients.get(os.getpid())
    if client is None:
        client = _clients[os.getpid()] = redis.Redis.from_url(
            os.environ["REDIS_URL"], socket_timeout=2, socket_connect_timeout=2)
    return client


def _record(prefix: str, step: str, key: str, member: str) -> None:
    deadline = time.monotonic() + RECORD_FOR_SECONDS
    while True:
        try:
            with _redis().pipeline() as pipe:  # MULTI: both sets or neither
                pipe.sadd(f"{prefix}:{step}:{key}", member)
                pipe.sadd(f"{prefix}:{step}", key)
                pipe.execute()
            return
        except redis.RedisError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def runs(client: redis.Redis, prefix: str, step: str, key: str) -> list[dict]:
    """The runs of job `key` that recorded `step` ("started" or "finished")."""
    return [json.loads(m) for m in client.smembers(f"{prefix}:{step}:{key}")]


class PartitionJob(Job):
    """Sleeps `seconds`, or `seconds_on_slow_host` on the host named `slow_host`."""

    def perform(self, prefix: str, key: str, seconds: float, slow_host: str = "",
                seconds_on_slow_host: float = 0.0) -> None:
        host = os.environ.get("JK_PARTITION_HOST", "?")
        run = {"run": uuid.uuid4().hex, "host": host, "pid": os.getpid(),
               "job_id": self.job_id, "started_at": time.time()}
        _record(prefix, "started", key, json.dumps(run, sort_keys=True))
        time.sleep(seconds_on_slow_host if host == slow_host else seconds)
        _record(prefix, "finished", key,
                json.dumps({**run, "finished_at": time.time()}, sort_keys=True))
