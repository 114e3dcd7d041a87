"""Redis Sentinel, with real processes: a master, one replica and one sentinel on private
ports (jobkit.testing_services.SentinelSetup), a real `jobkit worker` on the sentinel:// URL,
and jobs enqueued without pause while the master fails over (SENTINEL FAILOVER, or the master
killed). Every enqueue that returned without error must run; the worker must live on.

The jobs record their runs in the suite's plain Redis (tests/sentinel_jobs.py), outside the
set-up that fails over, so a run is never lost with the data of the old master.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

import jobkit
from jobkit.config import current_settings, use_settings
from jobkit.testing_services import JOBKIT_COMMAND, SentinelSetup, WorkerProcess
from tests.conftest import ROOT, wait_for
from tests.sentinel_jobs import DONE, RUNS, SentinelCountJob

MASTER = "jobkit-test"


@pytest.fixture
def sentinel_setup() -> Iterator[SentinelSetup]:
    setup = SentinelSetup(MASTER)
    yield setup
    setup.stop()


@pytest.fixture
def sentinel_settings(sentinel_setup: SentinelSetup, r: redis.Redis) -> Iterator[None]:
    """This process enqueues through the sentinel; the settings before are put back after."""
    before = current_settings()
    jobkit.use_adapter(None)
    jobkit.configure(redis_url=sentinel_setup.url, sentinel_master=MASTER)
    yield
    use_settings(before)


def sentinel_env(setup: SentinelSetup, record_url: str) -> dict[str, str]:
    return {"REDIS_URL": setup.url, "REDIS_SENTINEL_MASTER": MASTER,
            "JOBKIT_TEST_RECORD_URL": record_url, "PYTHONPATH": str(ROOT)}


class Enqueuer(threading.Thread):
    """Enqueues SentinelCountJob(0), (1)... without pause; remembers which enqueues returned
    without error (acknowledged) and when."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.acked: dict[int, float] = {}
        self.failed: dict[int, str] = {}
        self.stopping = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stopping.is_set():
            try:
                SentinelCountJob.perform_later(n)
                self.acked[n] = time.time()
            except Exception as exc:  # noqa: BLE001 - an enqueue that failed is not acked
                self.failed[n] = f"{type(exc).__name__}: {exc}"
                time.sleep(0.05)
            n += 1
            time.sleep(0.005)

    def acked_since(self, when: float) -> int:
        return sum(1 for at in list(self.acked.values()) if at > when)

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)


def survive(setup: SentinelSetup, r: redis.Redis, record_url: str, tmp_path: Path,
            fail_over, wait_for_replicas: int = 0) -> None:
    """Start a worker and the enqueuer, fail over with `fail_over()`, go on enqueuing; check
    that every acknowledged job ran and the worker lives. Prints the measured figures (the
    ones docs/reliability.md quotes; run with -s)."""
    jobkit.configure(redis_url=setup.url, sentinel_master=MASTER,
                     wait_for_replicas=wait_for_replicas)
    worker = WorkerProcess(setup.url, "-c", "4", "-P", "threads", cwd=ROOT,
                           env=sentinel_env(setup, record_url),
                           log=tmp_path / "worker.log")
    enqueuer = Enqueuer()
    try:
        enqueuer.start()
        wait_for(lambda: r.zcard(DONE) >= 50, timeout=20, what="jobs run before the failover")
        failed_at = time.time()
        fail_over()
        switched_at = time.time()
        # Enqueues succeed again, and go on for long enough that the old master, demoted,
        # has dropped whatever it took after the switch (Sentinel waits ~8 s to demote it).
        wait_for(lambda: enqueuer.acked_since(switched_at) >= 50, timeout=25,
                 what="enqueues to succeed after the failover")
        wait_for(lambda: time.time() > switched_at + 10 and enqueuer.acked_since(
            switched_at + 10) >= 20, timeout=30, what="enqueues 10 s after the failover")
        enqueuer.stop()
        acked = set(enqueuer.acked)

        def missing() -> set[int]:
            return acked - {int(n) for n in r.zrange(DONE, 0, -1)}

        try:
            wait_for(lambda: not missing(), timeout=25, what="every acknowledged job to run")
        finally:
            lost = missing()
            runs = dict(r.zrange(DONE, 0, -1, withscores=True))  # job number -> when it ran
            times = sorted(runs.values())
            around = [t for t in times if t >= failed_at - 1]
            gaps = [b - a for a, b in zip(around, around[1:], strict=False)]
            first_after = min((at for name, at in runs.items()
                               if enqueuer.acked.get(int(name), 0) > switched_at), default=None)
            figures = {
                "acked": len(acked), "failed_enqueues": len(enqueuer.failed),
                "lost_acked": len(lost), "lost_sample": sorted(lost)[:10],
                "runs": int(r.get(RUNS) or 0), "distinct_done": len(runs),
                "failover_seconds": round(switched_at - failed_at, 2),
                "longest_gap_between_runs": round(max(gaps, default=0), 2),
                "first_new_job_ran_after": first_after and round(first_after - failed_at, 2),
                "failure_sample": sorted(set(enqueuer.failed.values()))[:3],
            }
            print("sentinel figures:", json.dumps(figures))
        assert worker.proc.poll() is None, worker.output()[-3000:]
        assert "Unrecoverable error" not in worker.output(), worker.output()[-3000:]
        # The worker still takes new work on the new master.
        SentinelCountJob.perform_later(-1)
        wait_for(lambda: r.zscore(DONE, "-1") is not None, timeout=15,
                 what="a job enqueued after everything to run")
    finally:
        enqueuer.stop()
        worker.stop()


def test_sentinel_failover_under_load(sentinel_setup: SentinelSetup, sentinel_settings: None,
                                      r: redis.Redis, redis_server: str,
                                      tmp_path: Path) -> None:
    """SENTINEL FAILOVER: the old master takes writes until Sentinel demotes it, seconds
    later, and drops them then; only an enqueue a replica confirmed (wait_for_replicas: 1)
    is sure to outlive it. With one replica, enqueues fail until the old master has rejoined
    as a replica of the new one."""
    survive(sentinel_setup, r, redis_server, tmp_path, sentinel_setup.failover,
            wait_for_replicas=1)


def test_master_killed_under_load(sentinel_setup: SentinelSetup, sentinel_settings: None,
                                  r: redis.Redis, redis_server: str, tmp_path: Path) -> None:
    """The master killed: enqueues fail until the replica is promoted, then go to it; only
    what had not reached the replica when the master died could be lost (default settings:
    wait_for_replicas 0, as a killed master leaves no replica to confirm anything)."""
    survive(sentinel_setup, r, redis_server, tmp_path, sentinel_setup.kill_master)


def test_cli_and_status_through_sentinel(sentinel_setup: SentinelSetup,
                                         sentinel_settings: None, r: redis.Redis) -> None:
    from tests.test_web import Client

    SentinelCountJob.perform_later(1)
    assert sentinel_setup.master().llen("default") == 1
    env = {**os.environ, "REDIS_URL": sentinel_setup.url, "REDIS_SENTINEL_MASTER": MASTER}
    check = subprocess.run([*JOBKIT_COMMAND, "config", "check"], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr
    assert f"redis_url: {sentinel_setup.url}" in check.stdout
    assert f"sentinel_master: {MASTER}" in check.stdout
    queues = subprocess.run([*JOBKIT_COMMAND, "queues"], env=env, cwd=ROOT, capture_output=True,
                            text=True, timeout=30)
    assert queues.returncode == 0, queues.stderr
    assert any(line.split()[:2] == ["default", "1"] for line in queues.stdout.splitlines())
    status, _, body = Client().get("/status.json")
    data = json.loads(body)
    assert data["job"]["sizes"]["default"] == 1
    assert status == 503 and "no live worker" in data["notice"]["notices"][0]
