"""jobkit.api and the CLI over it, against the real Redis and worker."""

from __future__ import annotations

import time

import pytest
import redis
from click.testing import CliRunner

import jobkit
from jobkit import api
from jobkit.cli import main
from tests.conftest import wait_for
from tests.jobs import FailingJob, TaskLoggerJob
from tests.test_worker_integration import dead_entries, results

pytestmark = pytest.mark.usefixtures("worker")


def test_queue_size_latency_order_and_clear(r: redis.Redis) -> None:
    jobs = [TaskLoggerJob(i).set(queue="idle_q", priority=p) for i, p in
            enumerate([0, 5, 0, 9, 0])]
    jobkit.perform_all_later(jobs)
    queue = api.Queue("idle_q")
    assert queue.size() == 5
    time.sleep(0.05)
    assert 0.04 < queue.latency() < 5
    in_order = [job.payload["args"][0] for job in queue.jobs(0, 10)]
    assert in_order == [0, 2, 4, 1, 3]  # priority step first, then first in, first out
    assert [j.payload["args"][0] for j in queue.jobs(1, 2)] == [2, 4]
    assert [j.payload["args"][0] for j in queue.jobs(3, 10)] == [1, 3]
    found = queue.find(jobs[3].job_id)
    assert found.job_class == "tests.jobs.TaskLoggerJob"
    assert queue.delete(found) and queue.size() == 4
    assert "idle_q" in [q.name for q in api.queues()]
    assert queue.clear() == 4 and queue.size() == 0 and queue.latency() == 0.0


def test_processes_show_the_live_worker(r: redis.Redis) -> None:
    [process] = wait_for(api.processes, what="the next heartbeat")  # r emptied Redis
    assert process.pid and process.hostname
    assert time.time() - process.beat_at < 10


def test_stats_count_processed_and_failed(r: redis.Redis) -> None:
    TaskLoggerJob.perform_later(1)
    FailingJob.perform_later("x")
    results(r, 1)
    dead_entries(r, 1)
    stats = api.Stats()
    wait_for(lambda: stats.processed == 2 and stats.failed == 1, what="stats to be flushed")
    [(today, counts)] = list(stats.history(1).items())
    assert counts == (2, 1)


def test_cli_lists_retries_and_deletes_dead_jobs(r: redis.Redis) -> None:
    first = FailingJob.perform_later("one")
    second = FailingJob.perform_later("two")
    dead_entries(r, 2)
    runner = CliRunner()
    listing = runner.invoke(main, ["dead"])
    assert listing.exit_code == 0
    assert "2 in dead" in listing.output and first.job_id in listing.output
    assert "builtins.RuntimeError: failing on purpose: one" in listing.output
    deleted = runner.invoke(main, ["dead", "delete", first.job_id])
    assert deleted.exit_code == 0 and "delete: 1 job(s)" in deleted.output
    retried = runner.invoke(main, ["dead", "retry", second.job_id, "no-such-id"])
    assert retried.exit_code == 1
    assert "retry: 1 job(s)" in retried.output and "not in dead: no-such-id" in retried.output
    wait_for(lambda: api.DeadSet().size() == 1, what="the retried job to fail again")
    assert api.DeadSet().page()[0].job_id == second.job_id


def test_cli_queues_scheduled_and_stats(r: redis.Redis) -> None:
    job = TaskLoggerJob.set(wait=3600).perform_later(1)
    runner = CliRunner()
    assert "default" in runner.invoke(main, ["queues"]).output
    listing = runner.invoke(main, ["scheduled"]).output
    assert "1 in scheduled" in listing and job.job_id in listing
    ran = runner.invoke(main, ["scheduled", "run", "--all"])
    assert "run: 1 job(s)" in ran.output
    assert results(r, 1)[0]["task_id"] == 1
    assert runner.invoke(main, ["stats", "--days", "2"]).exit_code == 0
    assert runner.invoke(main, ["dead", "retry"]).exit_code == 2  # neither ids nor --all


def test_celery_inspect_works_and_leaves_no_in_flight_keys(r: redis.Redis) -> None:
    from jobkit.celery_app import app, apply_settings

    apply_settings(app, jobkit.config.current_settings())  # built at import, maybe before r
    wait_for(api.processes, what="the worker's heartbeat")
    replies = app.control.inspect(timeout=2).ping()
    assert replies and all(reply == {"ok": "pong"} for reply in replies.values())
    live = r.smembers("jobkit:processes")
    leftovers = {key.split(":", 2)[2] for key in r.keys("jobkit:unacked:*")}
    assert leftovers <= live


def test_scheduled_job_can_be_killed_into_the_dead_set(r: redis.Redis) -> None:
    job = TaskLoggerJob.set(wait=3600).perform_later(3)
    [entry] = api.ScheduledSet().page()
    assert api.ScheduledSet().kill(entry) and not api.ScheduledSet().kill(entry)
    assert api.ScheduledSet().size() == 0
    assert api.DeadSet().find(job.job_id) is not None
