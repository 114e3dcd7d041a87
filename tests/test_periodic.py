"""Periodic jobs: entries from the settings, each tick enqueued once by any number of real
workers (killed and restarted too), pause / resume / run from the CLI."""

from __future__ import annotations

import json
import signal
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

import jobkit
from jobkit import ConfigError, keys, periodic
from jobkit.cli import main
from jobkit.config import load_settings
from jobkit.testing_services import RedisServer, WorkerProcess, wait_until
from tests.periodic_jobs import RUNS

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "jobkit.yml"
    path.write_text(text)
    return path


# -- entries in the settings -----------------------------------------------------------------

def test_entries_in_both_shapes_with_an_environment_replacing_by_name(tmp_path: Path) -> None:
    path = write(tmp_path, """
schedule:
  tick:
    every: 30s
    class: tests.periodic_jobs.TickJob
    date_as_argument: true
  report:
    cron: "0 9 * * 1-5 Europe/Paris"
    class: tests.periodic_jobs.ReportJob
    args: [weekly]
    queue: reports
    description: the Monday report
production:
  schedule:
    tick:
      every: 5m
      class: tests.periodic_jobs.TickJob
""")
    development = {e.name: e for e in load_settings(path, environ={}).schedule}
    assert development["tick"].schedule_text == "every 30s"
    assert development["tick"].date_as_argument
    report = development["report"]
    assert report.schedule_text == "cron 0 9 * * 1-5 Europe/Paris"
    assert (report.args, report.queue, report.description) == (("weekly",), "reports",
                                                               "the Monday report")
    production = {e.name: e for e in load_settings(path, "production", environ={}).schedule}
    assert production["tick"].schedule_text == "every 5m"
    assert "report" in production


def test_sidekiq_scheduler_shape_is_read_as_schedule(tmp_path: Path) -> None:
    path = write(tmp_path, """
:scheduler:
  :enabled: true
  :schedule:
    hello:
      every: 1m
      class: tests.periodic_jobs.ReportJob
""")
    settings = load_settings(path, environ={})
    assert [e.name for e in settings.schedule] == ["hello"]
    assert any("scheduler.enabled: sidekiq-scheduler's setting" in n for n in settings.notes)


@pytest.mark.parametrize(("entry", "message"), [
    ("cron: '61 * * * *'\n    class: tests.periodic_jobs.TickJob", r"jobkit.yml:3: schedule.bad"),
    ("every: 0\n    class: tests.periodic_jobs.TickJob", r"jobkit.yml:3: schedule.bad"),
    ("every: 1m\n    class: HardWorker",
     r"jobkit.yml:3: schedule.bad.class: write the job class's import path"),
    ("every: 1m", r"jobkit.yml:3: schedule.bad.class"),
    ("every: 1m\n    cron: '* * * * *'\n    class: tests.periodic_jobs.TickJob",
     r"jobkit.yml:3: schedule.bad"),
    ("every: 1m\n    klass: tests.periodic_jobs.TickJob", r"schedule.bad.klass: unknown key"),
])
def test_bad_entries_are_refused_with_file_line_and_key(tmp_path: Path, entry: str,
                                                        message: str) -> None:
    path = write(tmp_path, f"schedule:\n  # the entry\n  bad:\n    {entry}\n")
    with pytest.raises(ConfigError, match=message):
        load_settings(path, environ={})


def test_config_check_refuses_arguments_perform_cannot_take(tmp_path: Path) -> None:
    path = write(tmp_path, "schedule:\n  tick:\n    every: 1m\n"
                           "    class: tests.periodic_jobs.TickJob\n")  # perform needs a tick
    result = CliRunner().invoke(main, ["config", "check", "-C", str(path)])
    assert result.exit_code == 1
    assert f"{path}:2: schedule.tick.args: TickJob.perform(): missing a required argument: " \
           "'tick'" in result.output


def test_config_check_refuses_a_class_that_cannot_be_imported(tmp_path: Path) -> None:
    path = write(tmp_path, "schedule:\n  gone:\n    every: 1m\n    class: tests.nowhere.GoneJob\n")
    result = CliRunner().invoke(main, ["config", "check", "-C", str(path)])
    assert result.exit_code == 1
    assert f"{path}:2: schedule.gone.class: tests.nowhere.GoneJob: module tests has no " \
           "nowhere.GoneJob" in result.output


# -- the scheduler, in process ----------------------------------------------------------------

@pytest.fixture
def private_redis(monkeypatch: pytest.MonkeyPatch) -> Iterator[redis.Redis]:
    server = RedisServer()
    monkeypatch.setenv("REDIS_URL", server.url)
    saved = jobkit.config.current_settings()
    yield redis.Redis.from_url(server.url)
    jobkit.config.use_settings(saved)
    server.stop()


def test_two_schedulers_take_each_tick_once_and_skip_a_tick_missed_long_ago(
        private_redis: redis.Redis) -> None:
    jobkit.configure(schedule={"tick": {"every": "1s", "class": "tests.periodic_jobs.TickJob",
                                        "date_as_argument": True}})
    first, second = periodic.PeriodicScheduler(), periodic.PeriodicScheduler()
    deadline = time.monotonic() + 3.2
    taken = 0
    while time.monotonic() < deadline:
        taken += first.look() + second.look()
        time.sleep(0.05)
    messages = private_redis.lrange("periodic_test", 0, -1)
    ticks = sorted(_tick(m) for m in messages)
    assert taken == len(messages) == len(set(ticks))
    assert 3 <= len(ticks) <= 5  # 3.2 s of ticks, and the one just before the first look
    assert ticks == list(range(int(ticks[0]), int(ticks[0]) + len(ticks)))
    private_redis.hset(keys.PERIODIC_LAST, "tick:tick", 0)  # as if down for ages
    assert periodic.PeriodicScheduler().look() <= 1  # only the latest tick, never a backlog


def _tick(message: bytes) -> float:
    import base64

    body = json.loads(base64.b64decode(json.loads(message)["body"]))
    return body[0][0]["args"][0]


def test_pause_resume_and_run_from_the_cli(private_redis: redis.Redis, tmp_path: Path) -> None:
    path = write(tmp_path, "schedule:\n  report:\n    cron: '0 9 * * *'\n"
                           "    class: tests.periodic_jobs.ReportJob\n    args: [daily]\n")
    jobkit.configure(path)
    runner = CliRunner()
    assert runner.invoke(main, ["periodic", "pause", "report"]).output == "report: paused\n"
    listing = runner.invoke(main, ["periodic"]).output
    assert "report" in listing and "paused" in listing and "cron 0 9 * * *" in listing
    assert private_redis.sismember(keys.PERIODIC_PAUSED, "report")
    ran = runner.invoke(main, ["periodic", "run", "report"])
    assert ran.output.startswith("report: enqueued: job ")
    assert private_redis.llen("periodic_test") == 1
    assert runner.invoke(main, ["periodic", "resume", "report"]).output == "report: resumed\n"
    assert "(skipped)" in runner.invoke(main, ["periodic"]).output  # resume took the tick
    assert not private_redis.sismember(keys.PERIODIC_PAUSED, "report")
    missing = runner.invoke(main, ["periodic", "pause", "nope"])
    assert missing.exit_code == 1 and "no periodic entry named 'nope'" in missing.output


def test_a_new_run_last_entry_does_not_run_a_tick_from_before_it_existed(
        private_redis: redis.Redis) -> None:
    jobkit.configure(schedule={"nightly": {"cron": "0 3 * * *", "missed": "run_last",
                                           "class": "tests.periodic_jobs.ReportJob"}})
    scheduler = periodic.PeriodicScheduler()
    assert scheduler.look() == 0  # recorded as skipped: nothing was missed
    assert private_redis.hget(keys.PERIODIC_LAST, "nightly:tick") is not None
    private_redis.hset(keys.PERIODIC_LAST, "nightly:tick", 0)  # now one was missed
    assert periodic.PeriodicScheduler().look() == 1


def test_removing_a_file_entry_keeps_its_pause(private_redis: redis.Redis) -> None:
    jobkit.configure(schedule={"nightly": {"cron": "0 3 * * *",
                                           "class": "tests.periodic_jobs.ReportJob"}})
    periodic.pause("nightly")
    assert not periodic.remove("nightly")
    assert private_redis.sismember(keys.PERIODIC_PAUSED, "nightly")


def test_resume_runs_no_tick_that_passed_while_paused(private_redis: redis.Redis) -> None:
    jobkit.configure(schedule={"tick": {"every": "1s", "class": "tests.periodic_jobs.TickJob",
                                        "date_as_argument": True, "missed": "run_last"}})
    periodic.pause("tick")
    scheduler = periodic.PeriodicScheduler()
    paused_at = time.time()
    wait_until(lambda: time.time() - paused_at > 1.2, what="a tick to pass while paused")
    assert scheduler.look() == 0
    periodic.resume("tick")
    assert scheduler.look() == 0  # the tick that passed while paused is taken, not run
    wait_until(scheduler.look, timeout=5, what="the next tick after the resume")
    assert private_redis.llen("periodic_test") == 1


def test_entries_added_at_runtime_persist_and_run(private_redis: redis.Redis) -> None:
    from tests.periodic_jobs import ReportJob

    jobkit.configure()
    periodic.add("nightly", job=ReportJob, cron="0 3 * * *", args=["nightly"])
    assert [e.name for e in periodic.entries()] == ["nightly"]
    assert periodic.run_now("nightly").queue_name == "periodic_test"
    assert periodic.remove("nightly") and periodic.entries() == []


# -- three real workers -------------------------------------------------------------------------

def test_three_workers_enqueue_every_tick_once_while_workers_die_and_come_back(
        tmp_path: Path) -> None:
    server = RedisServer()
    config = write(tmp_path, "schedule:\n  tick:\n    every: 1s\n"
                             "    class: tests.periodic_jobs.TickJob\n"
                             "    date_as_argument: true\n")
    env = {"JOBKIT_CONFIG": str(config)}
    workers = [WorkerProcess(server.url, "-q", "periodic_test", "-c", "1", cwd=ROOT, env=env)
               for _ in range(3)]
    client = redis.Redis.from_url(server.url)
    try:
        def runs() -> list[dict]:
            return [json.loads(r) for r in client.lrange(RUNS, 0, -1)]

        wait_until(lambda: len(runs()) >= 3, timeout=20, what="the first ticks")
        started = time.time()
        workers[0].proc.send_signal(signal.SIGKILL)  # kill -9 one scheduler mid-stream
        workers[0].proc.wait()
        wait_until(lambda: time.time() - started > 4, timeout=10, what="4 s with two workers")
        workers[0] = WorkerProcess(server.url, "-q", "periodic_test", "-c", "1", cwd=ROOT,
                                   env=env)
        wait_until(lambda: time.time() - started > 10, timeout=20, what="10 s of ticks")
        for worker in workers:
            worker.stop()
        done = runs()
    finally:
        for worker in workers:
            worker.stop()
        server.stop()
    ticks = sorted(run["tick"] for run in done)
    assert len(ticks) == len(set(ticks)), "a tick was enqueued twice"
    expected = list(range(int(ticks[0]), int(ticks[-1]) + 1))
    missing = sorted(set(expected) - {int(t) for t in ticks})
    assert not missing, f"ticks missed while workers lived: {missing}"
    lateness = sorted(run["enqueued_at"] - run["tick"] for run in done)
    p99 = lateness[min(len(lateness) - 1, int(len(lateness) * 0.99))]
    print(f"\nperiodic every 1s, 3 workers (one killed and restarted): {len(ticks)} ticks, "
          f"0 twice, 0 missed; lateness p50 {statistics.median(lateness) * 1000:.0f} ms, "
          f"p99 {p99 * 1000:.0f} ms")
    assert len(ticks) >= 10
