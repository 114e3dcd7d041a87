"""`Procfile.dev` under honcho, as `make dev` runs it: a job goes through, Ctrl-C stops all."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import redis

from jobkit.testing_services import free_port, stop_process
from tests.conftest import ROOT, wait_for
from tests.jobs import RESULTS, TaskLoggerJob

HONCHO = Path(sys.executable).with_name("honcho")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_procfile_dev_runs_a_job_and_stops_cleanly(tmp_path: Path, monkeypatch,
                                                   sqlite_tables) -> None:
    redis_port, flower_port, web_port, smtp_port = (free_port() for _ in range(4))
    url = f"redis://127.0.0.1:{redis_port}/0"
    env = {**os.environ, "REDIS_URL": url, "DEV_REDIS_PORT": str(redis_port),
           "FLOWER_PORT": str(flower_port), "DEV_REDIS_DIR": str(tmp_path / "redis"),
           "WEB_PORT": str(web_port), "MAILCATCHER_PORT": str(smtp_port),
           "SMTP_URL": f"smtp://127.0.0.1:{smtp_port}",
           "PATH": f"{HONCHO.parent}:{os.environ['PATH']}",
           "JOBKIT_POLL_INTERVAL": "0.2", "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "honcho.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(HONCHO), "start", "-f", "Procfile.dev"], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: " ready." in log.read_text(), timeout=40, what="the dev worker")
        monkeypatch.setenv("REDIS_URL", url)
        import jobkit

        jobkit.configure()
        job = TaskLoggerJob.perform_later(77)
        client = redis.Redis.from_url(url)
        wait_for(lambda: client.llen(RESULTS) == 1, what="the job to run")
        assert job.job_id.encode() in client.lindex(RESULTS, 0)
        flower = f"http://127.0.0.1:{flower_port}/"
        wait_for(lambda: _http_ok(flower), timeout=30, what="Flower to answer")
        wait_for(lambda: _http_ok(f"http://127.0.0.1:{web_port}/mail/previews"), timeout=30,
                 what="the web app to answer")
        from mailers.user_mailer import UserMailer
        from tests.models import SqliteSession, User

        session = SqliteSession()
        user = User(email="dev@example.com")
        session.add(user)
        session.commit()
        UserMailer.welcome(user).deliver_later()
        wait_for(lambda: _http_ok(f"http://127.0.0.1:{web_port}/mail/inbox/0"), timeout=30,
                 what="the welcome mail in the catcher's inbox")
        pids = [int(p) for p in re.findall(r"started \(pid=(\d+)\)", log.read_text())]
        assert len(pids) == 5, log.read_text()
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in the terminal
        proc.wait(30)
        wait_for(lambda: not any(alive(pid) for pid in pids), timeout=15,
                 what="every dev process to exit")
    finally:
        stop_process(proc)
        monkeypatch.undo()
        import jobkit

        jobkit.configure()


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False
