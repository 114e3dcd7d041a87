"""The asyncio pool on real workers: many async jobs at once on one shared loop, failures to the
retry and dead sets, kill -9 and TERM lose nothing; a sync job's soft time limit on the thread
pools, which never reaches the thread's next job."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import time
import types
from pathlib import Path

import redis
from click.testing import CliRunner

import jobkit
from jobkit import api, keys
from jobkit.cli import main
from jobkit.job_sets import RetrySet
from jobkit.testing_services import RedisServer, wait_until
from tests.async_pool_jobs import (
    DONE,
    EVENTS,
    FAULTS_QUEUE,
    LOOPS,
    MOST,
    QUEUE,
    RELEASE,
    STARTED,
    AsyncFailingJob,
    AsyncHardLimitedJob,
    AsyncRetriedJob,
    HeldJob,
    LoopBreakerJob,
    OrphanJob,
    SleepJob,
    SyncLimitedJob,
)
from tests.conftest import start_worker

ROOT = Path(__file__).resolve().parent.parent
NO_NOISE = ("Task was destroyed but it is pending", "never awaited", "Exception in callback")


def dead(client: redis.Redis) -> dict[str, dict]:
    """The dead set's entries, by the job's first argument."""
    entries = [json.loads(m) for m in client.zrange(keys.DEAD, 0, -1)]
    return {str(e["payload"]["args"][0]): e for e in entries}


def events(client: redis.Redis) -> list[str]:
    return [e.decode() for e in client.lrange(EVENTS, 0, -1)]


def test_a_thousand_async_jobs_run_at_once_on_one_loop(own_client: redis.Redis,
                                                       own_redis: RedisServer,
                                                       tmp_path: Path) -> None:
    """200 long jobs first (they must all overlap), then 1,000 × sleep(0.1); a failing async
    job goes to the dead set, a retried one to the retry set; a sync job over its soft limit
    cleans up and the next sync job runs untouched; an async job over its hard limit is
    cancelled and dead. A clean stop cancels the task a job left on the loop. A job that stops
    the loop, or lets SystemExit out of it, does not end it for the others."""
    LoopBreakerJob.perform_later("stop")
    LoopBreakerJob.perform_later("exit")
    jobkit.perform_all_later([SleepJob(1.0) for _ in range(200)])
    jobkit.perform_all_later([SleepJob(0.1) for _ in range(1000)])
    AsyncFailingJob.perform_later("dies")
    AsyncRetriedJob.perform_later("retried")
    SyncLimitedJob.perform_later("over", 5)
    SyncLimitedJob.perform_later("under", 0.1)
    AsyncHardLimitedJob.perform_later("hard", 30)
    OrphanJob.perform_later()
    worker = start_worker(own_redis.url, tmp_path / "worker.log", "-q", QUEUE,
                          "-P", "asyncio", "-c", "200")
    started = time.time()
    try:
        wait_until(lambda: own_client.llen(DONE) == 1200 and len(events(own_client)) == 4
                   and RetrySet(own_client).size() == 1, timeout=30,
                   what="1,200 sleeps, four events and the retried job")
        finished = max(float(at) for at in own_client.lrange(DONE, 0, -1))
        (process,) = api.processes(own_client)
        listing = CliRunner().invoke(main, ["processes"]).output
    finally:
        worker.stop()
    assert worker.proc.returncode == 0
    assert process.pool == "asyncio" and f"{process.id}  pool asyncio  beat" in listing
    assert int(own_client.get(MOST) or 0) >= 100, "the jobs did not run at once"
    assert own_client.scard(LOOPS) == 1, "the async jobs did not share one loop"
    assert finished - started < 20
    assert "async failure: dies" in dead(own_client)["dies"]["error_message"]
    (retried,) = RetrySet(own_client).page()
    assert retried.payload["args"] == ["retried"]
    assert "async failure: retried" in (retried.error_message or "")
    hard, orphan, over, stop, under = sorted(events(own_client))
    assert stop == "stop: went on"
    assert "SystemExit: exit: out of the loop" in worker.output()
    assert orphan == "orphan: cancelled", "the task left on the loop was not cancelled at stop"
    assert hard == "hard: cancelled"
    assert dead(own_client)["hard"]["error_class"] == "jobkit.errors.JobKilled"
    assert "hard time limit (0.5 s) exceeded" in dead(own_client)["hard"]["error_message"]
    assert over.startswith("over: cleaned up in ") and under.startswith("under: finished in ")
    assert dead(own_client)["over"]["error_class"] == "billiard.exceptions.SoftTimeLimitExceeded"
    assert not any(noise in worker.output() for noise in NO_NOISE), worker.output()[-3000:]


def test_kill_9_and_term_lose_no_async_job(own_client: redis.Redis, own_redis: RedisServer,
                                           tmp_path: Path) -> None:
    """Jobs running on a worker killed with -9 start again on another; TTIN logs where each
    awaits; TERM with jobs still running at `timeout` hands them back and exits in time; a
    third worker finishes each exactly once."""
    config = tmp_path / "jobkit.yml"
    config.write_text("timeout: 1\npool: asyncio\n")  # the pool from the file, not -P
    fast = {"JOBKIT_HEARTBEAT_TIMEOUT": "2"}
    jobkit.perform_all_later([HeldJob(n) for n in range(30)])
    args = ("-C", str(config), "-q", FAULTS_QUEUE, "-c", "40")
    killed = start_worker(own_redis.url, tmp_path / "killed.log", *args, env=fast)
    try:
        wait_until(lambda: own_client.llen(STARTED) == 30, timeout=15, what="30 jobs started")
        os.killpg(killed.proc.pid, signal.SIGKILL)
    finally:
        killed.stop()
    termed = start_worker(own_redis.url, tmp_path / "termed.log", *args, env=fast)
    try:
        wait_until(lambda: own_client.llen(STARTED) == 60, timeout=20,
                   what="the killed worker's 30 jobs started again")
        os.kill(termed.proc.pid, signal.SIGTTIN)  # the stacks of the jobs on the loop too
        wait_until(lambda: termed.output().count("async_pool_jobs.py\", line") >= 30,
                   what="TTIN to log where each held job awaits")
        assert "TTIN: asyncio task" in termed.output()
        asked = time.monotonic()
        os.kill(termed.proc.pid, signal.SIGTERM)
        termed.proc.wait(15)
        assert time.monotonic() - asked < 1 + 4, "TERM took longer than timeout + margin"
    finally:
        termed.stop()
    assert own_client.llen(FAULTS_QUEUE) == 30, "the running jobs were not handed back"
    assert "Task was destroyed but it is pending" not in termed.output()
    own_client.set(RELEASE, 1)
    last = start_worker(own_redis.url, tmp_path / "last.log", *args)
    try:
        wait_until(lambda: own_client.llen(DONE) == 30, timeout=15, what="all 30 jobs done")
    finally:
        last.stop()
    assert sorted(int(n) for n in own_client.lrange(DONE, 0, -1)) == list(range(30))
    assert own_client.scard(LOOPS) == 3, "not one shared loop per worker: pool: asyncio unread"
    assert not any(noise in last.output() for noise in NO_NOISE), last.output()[-3000:]


def test_a_sync_soft_limit_on_threads_stops_the_job_and_spares_the_next(
        own_client: redis.Redis, own_redis: RedisServer, tmp_path: Path) -> None:
    """On `threads` with one thread: the job over its limit gets SoftTimeLimitExceeded and
    cleans up; the jobs after it on that same thread run to their end."""
    SyncLimitedJob.perform_later("over", 5)
    SyncLimitedJob.perform_later("next", 0.4)
    SyncLimitedJob.set(time_limit=5).perform_later("longer limit", 0.8)
    worker = start_worker(own_redis.url, tmp_path / "worker.log", "-q", QUEUE,
                          "-P", "threads", "-c", "1")
    try:
        wait_until(lambda: len(events(own_client)) == 3, timeout=20, what="the three jobs")
    finally:
        worker.stop()
    over, following, longer = events(own_client)
    thread = over.rsplit(" ", 1)[1]
    assert over == f"over: cleaned up in {thread}"
    assert following == f"next: finished in {thread}"
    assert longer == f"longer limit: finished in {thread}"
    assert set(dead(own_client)) == {"over"}


def test_the_shared_client_example_in_jobs_md_runs(own_client: redis.Redis) -> None:
    """The docs' `cache()` serves several jobs on one loop, as on the asyncio pool."""
    text = (ROOT / "docs" / "jobs.md").read_text()
    (example,) = re.findall(r"#### The asyncio pool\n.*?```python\n(.*?)```", text, re.DOTALL)
    module = types.ModuleType("docs_asyncio_pool_example")
    sys.modules[module.__name__] = module
    try:
        exec(compile(example, "docs/jobs.md", "exec"), module.__dict__)  # noqa: S102

        async def three_jobs() -> list[int]:
            jobs = [module.CountVisitJob("home") for _ in range(3)]
            return list(await asyncio.gather(*(job.perform("home") for job in jobs)))

        assert sorted(asyncio.run(three_jobs())) == [1, 2, 3]
        asyncio.run(module.cache().aclose())
    finally:
        del sys.modules[module.__name__]
    assert own_client.get("visits:home") == b"3"


def test_a_pool_given_to_celery_after_the_double_dash_is_refused() -> None:
    """`-- -P threads` would be Celery's thread pool (no soft limits), `-- -P prefork` the
    configured pool: jobkit's -P (or `pool:`) is the one way to choose it."""
    for args in (["-P", "threads"], ["--pool=asyncio"], ["-Psolo"], ["--pool", "prefork"]):
        result = CliRunner().invoke(main, ["worker", "-q", QUEUE, "-r", "no_such_module_here",
                                           "--", *args])  # refused before the -r import
        assert result.exit_code == 2, result.output
        assert f"{args[0]} after --: the pool is jobkit's option" in result.output
