"""Sidekiq's worker signals on a real worker: TSTP quiet, TERM within `timeout`, TTIN."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
import redis

from tests.conftest import start_worker, wait_for
from tests.jobs import RESULTS, SleepJob


def steps(r: redis.Redis) -> list[tuple[str, str]]:
    return [(d["name"], d["step"]) for d in map(json.loads, r.lrange(RESULTS, 0, -1))]


def worker_with_timeout(redis_server: str, tmp_path, timeout: float, pool: str):
    config = tmp_path / "jobkit.yml"
    config.write_text(f"timeout: {timeout}\nqueues: [signals]\n")
    return start_worker(redis_server, tmp_path / "w.log", "-C", str(config), "-c", "2",
                        "-P", pool)


@pytest.mark.parametrize("pool", ["prefork", "threads", "solo"])
def test_term_hands_unfinished_jobs_back_after_timeout(
        r: redis.Redis, redis_server, tmp_path, pool: str) -> None:
    worker = worker_with_timeout(redis_server, tmp_path, 2, pool)
    SleepJob.set(queue="signals").perform_later("long", 60)
    wait_for(lambda: ("long", "start") in steps(r), what="the long job to start")
    sent = time.monotonic()
    os.kill(worker.proc.pid, signal.SIGTERM)  # the main process, as Heroku and systemd do
    worker.proc.wait(20)
    assert 1.5 < time.monotonic() - sent < 10
    assert ("long", "finish") not in steps(r)
    assert r.llen("signals") == 1, worker.output()[-2000:]  # back in its queue, not lost
    assert r.keys("jobkit:unacked*") == [] or all(
        r.hlen(key) == 0 for key in r.keys("jobkit:unacked:*"))
    assert "timeout reached" in worker.output()
    worker.stop()


def test_term_lets_a_short_job_finish_and_exits_early(r: redis.Redis, redis_server,
                                                      tmp_path) -> None:
    worker = worker_with_timeout(redis_server, tmp_path, 20, "prefork")
    SleepJob.set(queue="signals").perform_later("short", 1)
    wait_for(lambda: ("short", "start") in steps(r), what="the job to start")
    sent = time.monotonic()
    os.kill(worker.proc.pid, signal.SIGTERM)
    worker.proc.wait(20)
    assert time.monotonic() - sent < 10
    assert steps(r) == [("short", "start"), ("short", "finish")]
    assert r.llen("signals") == 0  # finished, not handed back to run twice
    assert "timeout reached" not in worker.output()
    worker.stop()


def test_tstp_quiets_the_worker_and_ttin_dumps_stacks(r: redis.Redis, redis_server,
                                                      tmp_path) -> None:
    worker = worker_with_timeout(redis_server, tmp_path, 5, "prefork")
    SleepJob.set(queue="signals").perform_later("running", 1.5)
    wait_for(lambda: ("running", "start") in steps(r), what="the job to start")
    os.kill(worker.proc.pid, signal.SIGTSTP)
    wait_for(lambda: "TSTP: quiet" in worker.output(), what="quiet")
    time.sleep(0.3)
    SleepJob.set(queue="signals").perform_later("after quiet", 0)
    wait_for(lambda: ("running", "finish") in steps(r), what="the running job to finish")
    time.sleep(1.0)
    assert ("after quiet", "start") not in steps(r)
    assert r.llen("signals") == 1 and worker.proc.poll() is None  # quiet, but alive
    os.kill(worker.proc.pid, signal.SIGTTIN)
    wait_for(lambda: "TTIN: thread jobkit-poller" in worker.output(), what="a stack dump")
    os.kill(worker.proc.pid, signal.SIGTERM)
    worker.proc.wait(20)
    assert r.llen("signals") == 1  # still waiting for a worker that is not quiet
    worker.stop()
