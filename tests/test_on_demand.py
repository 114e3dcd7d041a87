"""on_demand mode: an enqueue starts a worker when none serves the queue, at most
`on_demand_workers` of them, and each exits after `idle_timeout`; status.json reports the mode.
Real processes: four enqueuing processes, the detached workers they start, a private Redis."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import redis
from click.testing import CliRunner

from jobkit import keys
from jobkit.cli import main
from jobkit.testing_services import RedisServer, wait_until
from tests.periodic_jobs import RUNS

ROOT = Path(__file__).resolve().parent.parent
ENQUEUE = """
import logging
import sys
import jobkit
logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s")  # "started a worker"
from tests.periodic_jobs import ReportJob
jobkit.configure(sys.argv[3], "production", redis_url=sys.argv[4])  # the worker must follow
for n in range(int(sys.argv[1]), int(sys.argv[2])):
    ReportJob.perform_later(n)
"""


def _pid(process_id: bytes) -> int:
    return int(process_id.decode().split(":")[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_jobs_from_four_processes_start_at_most_two_workers_which_then_exit(
        tmp_path: Path) -> None:
    server = RedisServer()
    config = tmp_path / "jobkit.yml"
    config.write_text("queues: [periodic_test]\nconcurrency: 2\nproduction:\n  mode: on_demand\n"
                      "  on_demand_workers: 2\n  idle_timeout: 3\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("REDIS_URL", "JOBKIT_CONFIG", "JOBKIT_ENV", "APP_ENV")}
    env.update(JOBKIT_POLL_INTERVAL="0.5", PYTHONPATH=str(ROOT))
    client = redis.Redis.from_url(server.url)
    seen: set[bytes] = set()
    try:
        enqueuers = [subprocess.Popen([sys.executable, "-c", ENQUEUE, str(25 * i),
                                       str(25 * i + 25), str(config), server.url],
                                      cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
                     for i in range(4)]
        logs = [p.communicate(timeout=60)[1] for p in enqueuers]
        assert [p.returncode for p in enqueuers] == [0, 0, 0, 0], logs
        started = sum(log.count("jobkit on_demand: started a worker") for log in logs)
        assert 1 <= started <= 2, f"the enqueuers started {started} workers:\n{logs}"

        def all_ran() -> bool:
            seen.update(client.smembers(keys.PROCESSES))
            return client.llen(RUNS) >= 100

        wait_until(all_ran, timeout=60, what="the 100 jobs to run")
        runs = sorted(json.loads(r)["args"][0] for r in client.lrange(RUNS, 0, -1))
        assert runs == list(range(100))
        assert 1 <= len(seen) <= 2, f"{len(seen)} workers started"
        pids = [_pid(process_id) for process_id in seen]
        wait_until(lambda: not any(_alive(pid) for pid in pids), timeout=30,
                   what="the on-demand workers to exit after idle_timeout")
        # each left cleanly: out of the process set, its heartbeat gone
        assert client.smembers(keys.PROCESSES) == set()
        assert client.keys(keys.heartbeat("*")) == []
        assert not client.keys(keys.on_demand_slot(0).rsplit(":", 1)[0] + ":*")
    finally:
        for process_id in seen:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(_pid(process_id), signal.SIGKILL)
        server.stop()


def test_service_mode_starts_nothing_and_status_reports_the_mode(tmp_path: Path) -> None:
    import jobkit
    from jobkit.web.status import service_status

    server = RedisServer()
    saved = jobkit.config.current_settings()
    try:
        jobkit.configure(redis_url=server.url)
        from tests.periodic_jobs import ReportJob

        ReportJob.perform_later(1)
        assert server.client.keys("jobkit:on_demand:*") == []
        assert service_status()[1]["job"]["mode"] == "service"
        jobkit.configure(redis_url=server.url, mode="on_demand")
        ok, body = service_status()
        assert body["job"]["mode"] == "on_demand"
        assert not any("no live worker process" in n for n in body["notice"]["notices"])
    finally:
        jobkit.config.use_settings(saved)
        server.stop()


def test_jobkit_systemd_prints_a_unit_that_hands_jobs_back_on_stop(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["systemd", "--user", "app"])
    assert result.exit_code == 0, result.output
    unit = result.output
    assert f"ExecStart={sys.executable} -m jobkit worker -e production" in unit
    assert "ExecStop=/bin/kill -TERM $MAINPID" in unit
    assert "KillMode=mixed" in unit and "User=app" in unit
    assert "TimeoutStopSec=" in unit and "WantedBy=multi-user.target" in unit
    template = CliRunner().invoke(main, ["systemd", "--instances"]).output
    assert "-n %i@%%h" in template and "jobkit-worker@.service" in template
