"""Nothing lost: workers killed with -9 or stopped with SIGTERM mid-run, racing pollers."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import redis

import jobkit
from jobkit import keys
from jobkit.celery_message import build_message
from jobkit.job_sets import DeadSet, ScheduledSet
from tests.conftest import start_worker, wait_for
from tests.jobs import CountJob

JOBS = 1000
FAST_RECOVERY = {"JOBKIT_HEARTBEAT_TIMEOUT": "3"}


def fill(n: int = JOBS, sleep: float = 0.003) -> None:
    jobkit.perform_all_later([CountJob(i, sleep).set(queue="reliable") for i in range(n)])


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_no_job_lost_when_a_worker_dies_mid_run(r: redis.Redis, redis_server, tmp_path,
                                               how: signal.Signals) -> None:
    fill()
    first = start_worker(redis_server, tmp_path / "a.log", "-c", "2", "-q", "reliable",
                         env=FAST_RECOVERY)
    wait_for(lambda: r.scard("test:done") >= 200, what="the first worker to be mid-run")
    stopped_at = time.monotonic()
    os.killpg(first.proc.pid, how)  # the whole worker: main process and pool children
    first.proc.wait(30)
    done_when_stopped = r.scard("test:done")
    assert done_when_stopped < JOBS, "the worker finished before it was stopped: no test"
    second = start_worker(redis_server, tmp_path / "b.log", "-c", "2", "-q", "reliable",
                          env=FAST_RECOVERY)
    try:  # a job done but not yet acked when the first worker died comes back from recovery
        # (after heartbeat_timeout), possibly once all are done: wait for it to run too
        wait_for(lambda: _settled(r), timeout=60,
                 what=f"all {JOBS} jobs (had {done_when_stopped} at the stop), none left over")
    finally:
        second.stop()
    assert time.monotonic() - stopped_at < 60
    assert r.llen("reliable") == 0
    assert DeadSet().size() == 0
    runs = int(r.get("test:runs"))
    assert JOBS <= runs <= JOBS + 10, "at least once, and only the in-flight few twice"
    live = r.smembers(keys.PROCESSES)  # the session's worker may be among them
    assert all(r.exists(keys.heartbeat(process_id)) for process_id in live)
    leftovers = {key.split(":", 2)[2] for key in r.keys("jobkit:unacked*")}
    assert leftovers <= live, "stopped workers leave no in-flight keys"


def _settled(r: redis.Redis) -> bool:
    """Every job done, the queue empty, and no in-flight keys but a live worker's."""
    live = {p for p in r.smembers(keys.PROCESSES) if r.exists(keys.heartbeat(p))}
    in_flight = {key.split(":", 2)[2] for key in r.keys("jobkit:unacked*")}
    return r.scard("test:done") == JOBS and r.llen("reliable") == 0 and in_flight <= live


def test_racing_pollers_deliver_each_due_job_exactly_once(r: redis.Redis) -> None:
    due = time.time() + 3600  # out of reach of the session worker's own poller
    scheduled = ScheduledSet()
    with r.pipeline(transaction=False) as pipe:
        for i in range(10_000):
            job = CountJob(i)
            job._prepare(queue="race")
            key, message = build_message(job.serialize(), f"task-{i}")
            scheduled.add(due, key, message, pipe=pipe, job_id=job.job_id)
        pipe.execute()
    assert scheduled.size() == 10_000
    moved: list[int] = []
    start = threading.Barrier(4)

    def poll() -> None:
        own = ScheduledSet(redis.Redis.from_url(redis_url(r)))
        start.wait()
        moved.append(own.move_due(now=due + 1, batch=50))

    threads = [threading.Thread(target=poll) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(moved) == 10_000, moved  # each job moved by exactly one poller
    messages = r.lrange("race", 0, -1)
    assert len(messages) == 10_000
    assert len(set(messages)) == 10_000
    assert scheduled.size() == 0


def redis_url(client: redis.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs.get('db', 0)}"
