"""jobkit.cancel on a real prefork worker (queued, scheduled, retry-set, racing, running:
cooperative, raising, hard), the CLI, the dashboard's Cancel buttons and the test modes."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

import jobkit
from jobkit import api, cancellation, keys, testing
from jobkit.cli import main
from jobkit.testing_services import RedisServer, WorkerProcess, wait_until
from tests.cancel_jobs import (
    EVENTS,
    QUEUE,
    AsyncSleepingJob,
    CheckingJob,
    CooperativeJob,
    FailingJob,
    LimitedJob,
    SleepingJob,
    UniqueJob,
    WaitingJob,
)
from tests.doc_examples import example_module, run
from tests.test_web import Client

ROOT = Path(__file__).resolve().parent.parent
HELD_KEY = "tests.cancel_jobs.LimitedJob:cancel-test"  # concurrency key: class, then key
HELD_LIST = keys.concurrency_held(HELD_KEY)


def dead(client: redis.Redis) -> dict[str, dict]:
    """The dead set's entries by job id."""
    return {e["job_id"]: e for e in map(json.loads, client.zrange(keys.DEAD, 0, -1))}


def events(client: redis.Redis) -> list[str]:
    return [e.decode() for e in client.lrange(EVENTS, 0, -1)]


def get_calls(client: redis.Redis) -> int:
    return int(client.info("commandstats").get("cmdstat_get", {}).get("calls", 0))


def test_cancel_waiting_and_running_jobs_on_prefork(own_client: redis.Redis,
                                                    own_redis: RedisServer) -> None:
    queued = WaitingJob.perform_later("queued")
    scheduled = WaitingJob.set(wait=3600).perform_later("scheduled")
    assert jobkit.cancel(queued.job_id) == jobkit.Cancellation(queued.job_id, "queued", QUEUE)
    assert jobkit.cancel(scheduled.job_id).outcome == "scheduled"
    assert jobkit.cancel("no-such-job").outcome == "not_found"
    # A copy the search cannot find (moved by the poller meanwhile, say) meets the mark.
    raced = WaitingJob("raced")
    cancellation.mark(raced.job_id)
    raced.enqueue()
    # Enqueued twice: the cancel removes one copy; the other is refused as it starts.
    twice = WaitingJob("twice")
    twice.enqueue()
    twice.enqueue()
    assert jobkit.cancel(twice.job_id).outcome == "queued"
    failing = FailingJob.perform_later("failing")
    cooperative = CooperativeJob.perform_later("cooperative")
    raising = CooperativeJob.perform_later("raising", True)
    sleeping = SleepingJob.perform_later("sleeping")
    worker = WorkerProcess(own_redis.url, "-q", QUEUE, "-P", "prefork", "-c", "4", cwd=ROOT)
    try:
        wait_until(lambda: api.RetrySet().size() == 1 and {
            "cooperative: started", "raising: started", "sleeping: started"
        } <= set(events(own_client)), timeout=20, what="failing in the retry set, 3 running")
        assert jobkit.cancel(failing.job_id).outcome == "retry"
        own_client.config_resetstat()
        started_at = time.monotonic()
        running = jobkit.cancel(cooperative.job_id)
        assert (running.outcome, running.removed) == ("running", False)
        assert running.where in {p.id for p in api.processes()}
        # The busy page's Cancel button, on a job that raises once it sees the cancel.
        web = Client()
        _, _, busy = web.get("/busy")
        assert f'name="job_id" value="{raising.job_id}"' in busy and 'value="cancel_hard"' in busy
        status, _, _ = web.request("POST", "/busy", form={
            "csrf": web.csrf("/busy"), "action": "cancel", "job_id": raising.job_id})
        assert status in (302, 303)
        assert jobkit.cancel(sleeping.job_id, hard=True).hard
        wait_until(lambda: {queued.job_id, scheduled.job_id, raced.job_id, failing.job_id,
                            raising.job_id, sleeping.job_id} <= set(dead(own_client))
                   and own_client.zcard(keys.DEAD) == 8
                   and any(e.startswith("cooperative: saw") for e in events(own_client)),
                   timeout=15, what="every cancelled job recorded")
        seconds = time.monotonic() - started_at
        reads = get_calls(own_client)
        entries = dead(own_client)
        # A worker keeps the mark as `done:<id of the copy it kept>`: that copy, retried from
        # the dead set, runs; another copy (as after a crash before the ack) is refused again.
        kept = api.DeadSet().find(raced.job_id)
        assert kept is not None and api.DeadSet().retry(kept)
        wait_until(lambda: "raced: ran" in events(own_client), timeout=15,
                   what="the retried copy to run")
        again = WaitingJob("raced again")
        again.job_id = raced.job_id
        again.enqueue()
        wait_until(lambda: api.DeadSet().find(raced.job_id) is not None, timeout=15,
                   what="the other copy refused")
    finally:
        worker.stop()
    assert "raced again: ran" not in events(own_client)
    assert len(entries) == 7 and cooperative.job_id not in entries  # it ended normally: done
    assert {e["reason"] for e in entries.values()} == {"cancelled"}
    assert {e["error_class"] for e in entries.values()} == {"jobkit.Cancelled"}
    assert "killed" in entries[sleeping.job_id]["error_message"].lower()
    assert "stopping after the cancel" in entries[raising.job_id]["error_message"]
    assert entries[raced.job_id]["error_message"] == "cancelled before it started"
    assert api.RetrySet().size() == api.ScheduledSet().size() == api.Queue(QUEUE).size() == 0
    seen = events(own_client)
    # failing ran once (not retried); raced, only when retried from the dead set
    assert [e for e in seen if e.endswith(": ran")] == ["failing: ran", "raced: ran"]
    assert "sleeping: woke" not in seen and not any("never saw" in e for e in seen)
    checks = int(next(e for e in seen if e.startswith("cooperative: saw")).split()[-2])
    # A job asking `cancelled` every millisecond reads Redis about once a second.
    assert checks > 100 and reads < checks / 5 and reads < 10 * seconds + 10, (checks, reads)
    # Removed from a queue or set, or recorded by the worker: the mark is `done:` with the task
    # id of the copy kept in the dead set (that one runs if retried, as `raced` did).
    for job_id in (queued.job_id, scheduled.job_id, failing.job_id, raising.job_id,
                   sleeping.job_id):
        task_id = json.loads(entries[job_id]["message"])["headers"]["id"]
        assert own_client.get(keys.cancel_mark(job_id)) == f"done:{task_id}".encode()
    assert own_client.get(keys.cancel_mark(cooperative.job_id)) == b"soft"
    assert {e.job_id for e in api.cancelled_jobs()} == set(entries)


def test_hard_cancel_on_the_asyncio_pool(own_client: redis.Redis,
                                         own_redis: RedisServer) -> None:
    """An async job's task is cancelled; a sync job (in a thread, as on `threads`) is left to
    check job.cancelled."""
    sync = CooperativeJob.perform_later("threads", True)
    async_job = AsyncSleepingJob.perform_later("async")
    worker = WorkerProcess(own_redis.url, "-q", QUEUE, "-P", "asyncio", "-c", "2", cwd=ROOT)
    try:
        wait_until(lambda: {"threads: started", "async: started"} <= set(events(own_client)),
                   timeout=15, what="both jobs to start")
        assert jobkit.cancel(sync.job_id, hard=True).outcome == "running"
        assert jobkit.cancel(async_job.job_id, hard=True).outcome == "running"
        wait_until(lambda: {sync.job_id, async_job.job_id} <= set(dead(own_client)),
                   timeout=15, what="both jobs recorded as cancelled")
    finally:
        worker.stop()
    assert any(e.startswith("threads: saw the cancel") for e in events(own_client))
    assert "async: cleaned up" in events(own_client)
    assert "async: woke" not in events(own_client)
    assert "cannot stop it: it runs until it checks job.cancelled" in worker.output()
    assert "its task on the asyncio pool's loop is cancelled" in worker.output()
    assert {dead(own_client)[j.job_id]["reason"] for j in (sync, async_job)} == {"cancelled"}
    assert api.RetrySet().size() == 0


def test_held_jobs_and_a_mark_key_of_another_type_on_a_worker(own_client: redis.Redis,
                                                               own_redis: RedisServer) -> None:
    first = LimitedJob.perform_later("first")
    held = LimitedJob.perform_later("held")
    # Not jobkit's mark: the job runs once (it used to be handed back to its queue forever).
    odd = WaitingJob("odd mark")
    own_client.hset(keys.cancel_mark(odd.job_id), "not", "a mark")
    odd.enqueue()
    worker = WorkerProcess(own_redis.url, "-q", QUEUE, "-P", "threads", "-c", "3", cwd=ROOT)
    try:
        wait_until(lambda: own_client.llen(HELD_LIST) == 1
                   and "odd mark: ran" in events(own_client), timeout=15,
                   what="the second job held by the limit, the oddly marked one run")
        assert jobkit.cancel(held.job_id) == jobkit.Cancellation(held.job_id, "held",
                                                                 HELD_KEY)
        assert own_client.llen(HELD_LIST) == 0
        assert jobkit.cancel(first.job_id).outcome == "running"
        wait_until(lambda: "first: ended" in events(own_client), timeout=15,
                   what="the running one to see its cancel")
        after = LimitedJob.perform_later("after")  # the slot was not kept by the held one
        wait_until(lambda: "after: started" in events(own_client), timeout=15,
                   what="the next job to get the slot")
        jobkit.cancel(after.job_id)
        wait_until(lambda: "after: ended" in events(own_client), timeout=15,
                   what="the last job to end")
    finally:
        worker.stop()
    seen = events(own_client)
    assert "held: started" not in seen and seen.count("odd mark: ran") == 1
    assert "cannot check job" not in worker.output()
    assert f"Redis key '{keys.cancel_mark(odd.job_id)}' holds no cancel mark" in worker.output()
    entry = dead(own_client)[held.job_id]
    assert (entry["reason"], entry["queue"], entry["error_message"]) == (
        "cancelled", QUEUE, "cancelled while held by its concurrency limit")


def test_odd_ids_bad_ids_and_a_mark_key_of_another_type(own_client: redis.Redis) -> None:
    odd = "'); alert(\"x/é\\\"); ('"  # quotes, a backslash, a slash, non-ASCII
    queued, scheduled = WaitingJob("queued"), WaitingJob("scheduled")
    queued.job_id, scheduled.job_id = odd, odd + "2"
    queued.enqueue()
    scheduled.enqueue(wait=3600)
    web = Client()
    _, _, page = web.get(f"/queues/{QUEUE}")
    # The id reaches no script: HTML-escaped in an attribute that confirm() only reads.
    assert "confirm('Cancel job" not in page
    assert 'data-confirm="Cancel job &#39;); alert(&#34;x/é\\&#34;); (&#39;?"' in page
    # Keys of the wrong type where a queue, a held list and a worker's in-flight hash should
    # be: skipped (each used to make every cancel fail with WRONGTYPE).
    bogus = ["not-a-list", keys.concurrency_held("not-a-list"), keys.unacked("not-a-hash")]
    own_client.hset(bogus[0], "x", "y")
    own_client.set(bogus[1], "x")
    own_client.set(bogus[2], "x")
    own_client.sadd(keys.QUEUES, "not-a-list")
    own_client.sadd(keys.CONCURRENCY_HELD_KEYS, "not-a-list")
    own_client.sadd(keys.PROCESSES, "not-a-hash")
    assert jobkit.cancel(odd) == jobkit.Cancellation(odd, "queued", QUEUE)
    assert jobkit.cancel(odd + "2").outcome == "scheduled"
    assert jobkit.cancel("elsewhere").outcome == "not_found"
    own_client.delete(*bogus)
    assert {odd, odd + "2"} == set(dead(own_client))
    assert dead(own_client)[odd]["error_message"] == f"cancelled while in queue {QUEUE}"
    assert dead(own_client)[odd + "2"]["error_message"] == "cancelled while in the scheduled set"
    huge = "x" * (cancellation.MAX_JOB_ID_LENGTH + 1)
    with pytest.raises(ValueError, match="job_id is 1,001 characters long"):
        jobkit.cancel(huge)
    assert CliRunner().invoke(main, ["cancel", huge]).exit_code == 2
    status, _, body = web.request("POST", "/busy", form={
        "csrf": web.csrf(), "action": "cancel", "job_id": huge})
    assert status == 400 and "characters long" in body
    key = keys.cancel_mark("taken")
    own_client.rpush(key, "something else")
    with pytest.raises(ValueError, match=f"Redis key '{key}' holds a list, not a cancel mark"):
        jobkit.cancel("taken")
    assert own_client.lrange(key, 0, -1) == [b"something else"]


def test_a_long_queue_is_scanned_in_chunks(own_client: redis.Redis) -> None:
    target = UniqueJob.perform_later("oldest")  # at the far end of the list
    others = 2 * cancellation.QUEUE_CHUNK + 100
    waiting = WaitingJob.perform_bulk([f"job {n}"] for n in range(others))
    assert jobkit.cancel(target.job_id).outcome == "queued"
    assert api.Queue(QUEUE).size() == others
    assert set(dead(own_client)) == {target.job_id}
    assert UniqueJob.perform_later("oldest").successfully_enqueued  # its lock went
    # Past 128 entries Redis keeps the dead set as a skiplist, which ZSCAN reads in hash
    # order: `cancelled_jobs` must still give the newest.
    newest = [job.job_id for job in waiting[-150:]]
    for job_id in newest:
        jobkit.cancel(job_id)
    assert own_client.object("encoding", keys.DEAD) == b"skiplist"
    assert [e.job_id for e in api.cancelled_jobs(limit=5)] == newest[::-1][:5]
    with pytest.raises(ValueError, match="job_id must be a non-empty string"):
        jobkit.cancel("")
    with pytest.raises(TypeError, match="hard must be True or False"):
        jobkit.cancel("x", hard="yes")  # type: ignore[arg-type]


def test_cli_cancel(own_client: redis.Redis) -> None:
    job = WaitingJob.perform_later("cli")
    runner = CliRunner()
    done = runner.invoke(main, ["cancel", job.job_id])
    assert done.exit_code == 0, done.output
    assert f"job {job.job_id}: removed from queue {QUEUE}; kept in the dead set" in done.output
    missing = runner.invoke(main, ["cancel", "no-such-job", "--hard"])
    assert missing.exit_code == 1 and "not found in any queue, set or worker" in missing.output
    assert runner.invoke(main, ["cancel", ""]).exit_code == 2


def test_dashboard_cancel_buttons(own_client: redis.Redis) -> None:
    queued = WaitingJob.perform_later("queued")
    scheduled = WaitingJob.set(wait=3600).perform_later("scheduled")
    web = Client()
    _, _, page = web.get(f"/queues/{QUEUE}")
    assert 'value="cancel"' in page and queued.job_id in page
    status, _, _ = web.request("POST", f"/queues/{QUEUE}", form={
        "csrf": web.csrf(), "queue": QUEUE, "action": "cancel", "job_id": queued.job_id})
    assert status in (302, 303) and api.Queue(QUEUE).size() == 0
    entry = api.ScheduledSet().find(scheduled.job_id)
    assert entry is not None
    _, _, page = web.get("/scheduled")
    assert "Cancel selected" in page
    status, _, _ = web.request("POST", "/scheduled", form={
        "csrf": web.csrf(), "action": "cancel", "key": entry.key})
    assert status in (302, 303) and api.ScheduledSet().size() == 0
    forged = web.request("POST", "/busy", form={"csrf": "forged", "action": "cancel",
                                                "job_id": "x"})
    assert forged[0] == 403
    _, _, page = web.get('/dead?q="reason":"cancelled"')
    assert queued.job_id in page and scheduled.job_id in page and "jobkit.Cancelled" in page


def test_the_test_modes() -> None:
    with testing.fake() as adapter:
        job = WaitingJob.perform_later("fake")
        assert jobkit.cancel(job.job_id).outcome == "queued"
        assert WaitingJob.jobs == [] and [r.job_id for r in adapter.cancelled] == [job.job_id]
        assert CheckingJob.perform_now() is False
        checking = CheckingJob()
        assert jobkit.cancel(checking.job_id).outcome == "not_found"
        assert checking.perform_now() is True  # how a test simulates a cancel while it runs
        # A batch member cancelled while waiting counts dead, as in Redis: the batch completes.
        with jobkit.Batch(on_complete=WaitingJob, on_death=WaitingJob) as batch:
            member, other = CheckingJob.perform_later(), CheckingJob.perform_later()
        assert jobkit.cancel(member.job_id).removed
        testing.drain_all(CheckingJob)
        status = batch.status
        assert (status.dead, status.succeeded, set(status.fired)) == (1, 1, {"complete",
                                                                          "death"})
        assert len(WaitingJob.jobs) == 2 and other.job_id not in adapter.cancelled_ids
    with testing.inline():
        checking = CheckingJob()
        jobkit.cancel(checking.job_id)
        assert checking.perform_now() is True
    assert CheckingJob().perform_now() is False  # outside the test modes, outside a worker


def test_the_examples_in_jobs_md_run(own_client: redis.Redis) -> None:
    text = (ROOT / "docs" / "jobs.md").read_text()
    section = text.split("## Cancelling jobs", 1)[1].split("\n## ", 1)[0]
    examples = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    assert len(examples) == 2
    with example_module("docs_cancel_example") as module:
        run(examples[0], module, "docs/jobs.md")
        started = time.monotonic()
        run(examples[1], module, "docs/jobs.md")
    assert (module.result.outcome, module.result.where) == ("queued", "default")
    # 1,000 pages of 10 ms, had it not seen the cancel at its first check
    assert module.running.executions == 1 and time.monotonic() - started < 5
