"""Resumable jobs (jobkit.IterableJob) on real workers: a job over 10,000 items survives three
TERMs (the last to the whole process group) and a kill -9 on prefork, every item done once but
for the documented window, and TERM to a pool process alone stops it between items too; on
threads, max_iteration_runtime puts the job back in its queue, a failure is retried from the
cursor, a cancel stops it between items and TERM too; TERM on solo; a key that is no cursor;
class checks and the docs' examples."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import redis

import jobkit
from jobkit import IterableJob, JobClassError, keys, testing
from jobkit.cancellation import cancelled_jobs
from jobkit.celery_message import read_task_args
from jobkit.display import shown
from jobkit.iteration import cursor as saved_cursor
from jobkit.iteration import indexed
from jobkit.iteration.stop import run_by_worker
from jobkit.job_sets import DeadSet
from jobkit.testing_services import RedisServer, WorkerProcess, wait_until
from tests.conftest import start_worker
from tests.doc_examples import DOCS, example_module, python_blocks, run
from tests.resumable_jobs import DONE, PID, QUEUE, RUNS, CountItems, FailsOnce, ShortRuns

FAST = {"JOBKIT_HEARTBEAT_TIMEOUT": "2"}  # a killed worker's job comes back within seconds
TOTAL = 10_000


def done(own_client: redis.Redis, name: str) -> dict[int, int]:
    return {int(k): int(v) for k, v in own_client.hgetall(DONE + name).items()}


def runs(own_client: redis.Redis, name: str) -> list[str]:
    return [shown(r) for r in own_client.lrange(RUNS + name, 0, -1)]


def saved(own_client: redis.Redis, job_id: str) -> Any:
    raw = own_client.get(keys.iteration(job_id))
    return None if raw is None else json.loads(raw)


def process_ended(pid: int) -> bool:
    """Gone, or a zombie its parent has not reaped yet (Linux's /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def worker(own_redis: RedisServer, log: Path, pool: str = "prefork", concurrency: int = 2
           ) -> WorkerProcess:
    return start_worker(own_redis.url, log, "-q", QUEUE, "-P", pool, "-c", str(concurrency),
                        env=FAST)


def term_stops_between_items(own_client: redis.Redis, proc: WorkerProcess,
                             jobs: dict[str, str], *, group: bool = False) -> None:
    """TERM to the worker's main process (as systemd sends it), or with `group` to its whole
    process group (as Heroku and `docker stop` with an init do, reaching the pool processes
    too): each job (name -> job id) stops after its current item, its exact cursor saved, and
    its message is back in the queue as it was."""
    sent = time.monotonic()
    (os.killpg if group else os.kill)(proc.proc.pid, signal.SIGTERM)
    proc.proc.wait(timeout=20)
    assert time.monotonic() - sent < 10, proc.output()[-3000:]  # stopped, not timed out (25 s)
    assert "timeout reached" not in proc.output()
    assert not any(own_client.hlen(k) for k in own_client.keys(keys.unacked("*")))
    queued = sorted((payload["job_id"], payload["executions"]) for message in own_client.lrange(
        QUEUE, 0, -1) for payload in read_task_args(message))
    assert queued == sorted((job_id, 0) for job_id in jobs.values())  # each once, as it was
    for name, job_id in jobs.items():
        items = done(own_client, name)
        assert saved(own_client, job_id) == {"cursor": max(items)}, (name, proc.output())
        assert items == dict.fromkeys(range(max(items) + 1), 1)
        assert runs(own_client, name)[-1] == f"stop after {max(items)}"


def test_ten_thousand_items_through_three_terms_and_a_kill(
        own_client: redis.Redis, own_redis: RedisServer, tmp_path: Path) -> None:
    job = CountItems.perform_later("big", TOTAL, 0.0002)
    for n, at in enumerate((1_500, 3_500)):  # TERM the main process, as systemd does
        proc = worker(own_redis, tmp_path / f"term{n}.log")
        wait_until(lambda at=at: len(done(own_client, "big")) >= at, timeout=20,
                   what=f"{at} items done")
        term_stops_between_items(own_client, proc, {"big": job.job_id})
    # TERM to the process group reaches the pool processes too; the items of `slow`, mostly a
    # sleep, would be cut short in the middle if billiard's TERM handler were left in place.
    slow = CountItems.perform_later("slow", 60, 0.05)
    proc = worker(own_redis, tmp_path / "group.log")
    wait_until(lambda: len(done(own_client, "big")) >= 5_500 and done(own_client, "slow"),
               timeout=20, what="5,500 items done, and one slow item")
    term_stops_between_items(own_client, proc, {"big": job.job_id, "slow": slow.job_id},
                             group=True)

    proc = worker(own_redis, tmp_path / "kill.log")
    wait_until(lambda: len(done(own_client, "big")) >= 7_500, timeout=20, what="7,500 items")
    os.killpg(proc.proc.pid, signal.SIGKILL)  # the main process and its pool children
    proc.proc.wait(timeout=10)
    at_kill = saved(own_client, job.job_id)["cursor"]
    last_done = max(done(own_client, "big"))

    proc = worker(own_redis, tmp_path / "after.log")  # its poller puts the killed job back
    try:
        wait_until(lambda: "complete" in runs(own_client, "big"), timeout=30,
                   what="the job to complete")
        # TERM to one pool process alone (as billiard sends it for a hard time limit or a cold
        # shutdown): its item ends and the exact cursor is saved, then the process ends as
        # that TERM would have ended it (Celery records the job as killed at its next pool
        # check, up to 5 s later: not waited for here).
        alone = CountItems.perform_later("alone", 1000, 0.02)
        wait_until(lambda: len(done(own_client, "alone")) >= 3, what="3 items done")
        pid = int(wait_until(lambda: own_client.get(PID + "alone"), what="its pid"))
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: process_ended(pid), what="the pool process to end")
    finally:
        proc.stop()
    alone_items = done(own_client, "alone")
    assert saved(own_client, alone.job_id) == {"cursor": max(alone_items)}
    assert alone_items == dict.fromkeys(range(max(alone_items) + 1), 1)
    assert runs(own_client, "alone") == ["start", f"stop after {max(alone_items)}"]
    counts = done(own_client, "big")
    assert sorted(counts) == list(range(TOTAL))
    twice = sorted(item for item, times in counts.items() if times == 2)
    assert set(counts.values()) <= {1, 2}
    # The window: the items after the last saved cursor, up to the one running at the kill;
    # fewer than cursor_save_items = 50 done since that save, plus the one running (whose
    # write may reach Redis just after `last_done` was read).
    assert twice == list(range(at_kill + 1, at_kill + 1 + len(twice)))
    assert last_done <= at_kill + len(twice) <= last_done + 1
    assert len(twice) <= 50
    stops = [r for r in runs(own_client, "big") if r.startswith("stop")]
    resumes = [r for r in runs(own_client, "big") if r.startswith("resume")]
    assert runs(own_client, "big")[0] == "start" and len(stops) == 3
    assert [r.removeprefix("stop after ") for r in stops] == [
        r.removeprefix("resume after ").split(" ")[0] for r in resumes[:3]]
    assert resumes[3] == f"resume after {at_kill} (executions 1)"
    assert all(r.endswith("(executions 1)") for r in resumes)  # stops are no retries
    assert saved(own_client, job.job_id) == {"finished": True}
    assert 0 < own_client.ttl(keys.iteration(job.job_id)) <= saved_cursor.FINISHED_SECONDS


def test_runtime_limit_retry_cancel_and_term_on_threads(
        own_client: redis.Redis, own_redis: RedisServer, tmp_path: Path) -> None:
    short = ShortRuns.perform_later("short", 40, 0.025)
    failing = FailsOnce.perform_later("failing", 20, 0.0)
    cancelled = CountItems.perform_later("cancelled", 400, 0.005)
    proc = worker(own_redis, tmp_path / "threads.log", pool="threads", concurrency=3)
    try:
        wait_until(lambda: len(done(own_client, "cancelled")) >= 50, what="50 items done")
        jobkit.cancel(cancelled.job_id)
        wait_until(lambda: any(e.data["job_id"] == cancelled.job_id
                               for e in cancelled_jobs(client=own_client)),
                   what="the cancelled job in the dead set")
        at = saved(own_client, cancelled.job_id)["cursor"]
        assert runs(own_client, "cancelled") == ["start", f"cancel after {at}"]
        assert done(own_client, "cancelled") == dict.fromkeys(range(at + 1), 1)
        (entry,) = cancelled_jobs(client=own_client)
        DeadSet(own_client).push_now(entry)  # the dead page's Retry: it goes on from there
        wait_until(lambda: all("complete" in runs(own_client, name)
                               for name in ("short", "failing", "cancelled")), timeout=20,
                   what="the three jobs to complete")
        term = CountItems.perform_later("term", 1000, 0.005)
        wait_until(lambda: len(done(own_client, "term")) >= 20, what="20 items done")
        term_stops_between_items(own_client, proc, {"term": term.job_id})
    finally:
        proc.stop()
    assert done(own_client, "cancelled") == dict.fromkeys(range(400), 1)
    assert runs(own_client, "cancelled")[2:] == [f"resume after {at} (executions 2)",
                                                 "complete"]
    assert done(own_client, "short") == dict.fromkeys(range(40), 1)
    short_runs = runs(own_client, "short")
    assert short_runs[0] == "start" and short_runs[-1] == "complete"
    assert len([r for r in short_runs if r.startswith("stop")]) >= 2  # 1 s of items, 0.3 s runs
    assert all(r.endswith("(executions 1)") for r in short_runs if r.startswith("resume"))
    # A failure saved the cursor of the last item done; the retry (executions 2) goes on there.
    assert done(own_client, "failing") == dict.fromkeys(range(20), 1)
    assert runs(own_client, "failing") == ["start", "resume after 9 (executions 2)", "complete"]
    for job in (short, failing, cancelled):
        assert saved(own_client, job.job_id) == {"finished": True}
    assert "max_iteration_runtime (0.3 s) reached" in proc.output()


def test_term_on_solo_stops_between_items(own_client: redis.Redis, own_redis: RedisServer,
                                          tmp_path: Path) -> None:
    """The solo pool runs the job in the worker's main process, whose TERM handler sets the
    flag (as the threads test; prefork is the first test)."""
    job = CountItems.perform_later("solo", 1000, 0.005)
    proc = worker(own_redis, tmp_path / "solo.log", pool="solo", concurrency=1)
    try:
        wait_until(lambda: len(done(own_client, "solo")) >= 20, what="20 items done")
        term_stops_between_items(own_client, proc, {"solo": job.job_id})
    finally:
        proc.stop()


class Steps(IterableJob):
    def build_enumerator(self, *, cursor: int | None) -> Any:
        return indexed(["extract", "load"], cursor=cursor)

    def each_iteration(self, item: str) -> None:
        self.seen = [*getattr(self, "seen", []), item]


def test_outside_a_worker_every_item_runs_and_nothing_is_saved(own_client: redis.Redis
                                                               ) -> None:
    job = Steps()
    job.perform_now()
    assert job.seen == ["extract", "load"] and job.cursor == 1
    assert own_client.keys("*") == []


def test_a_finished_job_run_again_does_nothing(own_client: redis.Redis) -> None:
    """A worker killed between the last item and the acknowledgement: the message comes back,
    and its run finds the finished mark."""
    job = Steps()
    with run_by_worker(job.job_id):
        job.perform_now()
        assert saved(own_client, job.job_id) == {"finished": True}
        again = Steps()
        again.job_id = job.job_id
        again.perform_now()
    assert not hasattr(again, "seen")


def test_cursor_and_enumerator_errors_name_the_job(own_client: redis.Redis) -> None:
    class BadCursor(IterableJob):
        cursor_save_seconds = 0

        def build_enumerator(self, *, cursor: Any) -> Any:
            return [("item", object())]

        def each_iteration(self, item: str) -> None:
            pass

    class NoPairs(BadCursor):
        def build_enumerator(self, *, cursor: Any) -> Any:
            return [1, 2]

    job = BadCursor()
    with run_by_worker(job.job_id), pytest.raises(TypeError, match=(
            rf"BadCursor {job.job_id}: the cursor <object .*> cannot be saved: it must be JSON")):
        job.perform_now()
    with pytest.raises(TypeError, match=r"NoPairs.build_enumerator must yield \(item, cursor\)"):
        NoPairs.perform_now()
    with pytest.raises(TypeError, match=r"indexed\(\): cursor must be None or an index"):
        indexed([1], cursor="3")  # pyright: ignore[reportArgumentType]
    assert list(indexed(iter("abc"), cursor=0)) == [("b", 1), ("c", 2)]
    with pytest.raises(TypeError, match=r"CountItems.build_enumerator\(\): missing a required"):
        CountItems.perform_later("name", 1)


@pytest.mark.parametrize(("value", "message"), [
    (b"\xff\xfe not JSON", r"holds b'\\xff\\xfe not JSON', not a saved cursor; delete the key"),
    (b'["a list"]', r"holds b'\[\"a list\"\]', not a saved cursor; delete the key"),
    ({"a": "hash"}, r"is not a string, so not a saved cursor; delete the key"),
])
def test_a_key_that_is_no_saved_cursor_is_named(own_client: redis.Redis, value: Any,
                                                message: str) -> None:
    job = Steps()
    key = keys.iteration(job.job_id)
    own_client.hset(key, mapping=value) if isinstance(value, dict) else own_client.set(key, value)
    with run_by_worker(job.job_id), pytest.raises(ValueError, match=re.escape(key) + " " + message):
        job.perform_now()
    assert not hasattr(job, "seen")


@pytest.mark.parametrize(("body", "message"), [
    ("def perform(self): pass", "is an IterableJob: define build_enumerator"),
    ("async def each_iteration(self, item): pass", "each_iteration must be a def method"),
    ("def each_iteration(self, item): yield item", "each_iteration must be a def method"),
    ("async def build_enumerator(self, *, cursor): pass", "build_enumerator must be a def"),
    ("def build_enumerator(self, start): pass", "must take a `cursor` keyword argument"),
    ("max_iteration_runtime = 0", "max_iteration_runtime must be more than 0 seconds"),
    ("cursor_save_seconds = -1", "cursor_save_seconds must be 0 seconds or more"),
    ("cursor_save_items = 0", "cursor_save_items must be a whole number >= 1"),
    ("cursor_ttl = '1 day'", "cursor_ttl must be seconds"),
    ("max_iteration_runtim = 5", "(did you mean max_iteration_runtime?)"),
])
def test_bad_definitions_are_refused(body: str, message: str) -> None:
    with pytest.raises(JobClassError, match=re.escape(message)):
        exec(f"class Bad(IterableJob):\n    {body}\n", {"IterableJob": IterableJob})


def test_good_options() -> None:
    class Tuned(Steps):
        max_iteration_runtime = dt.timedelta(minutes=5)
        cursor_save_seconds = 0
        cursor_save_items = 100
        cursor_ttl = 3600

    assert Tuned.max_iteration_runtime == dt.timedelta(minutes=5)


def test_the_examples_of_resumable_md_run() -> None:
    doc = DOCS / "resumable.md"
    blocks = python_blocks(doc.read_text())
    assert len(blocks) == 3
    with example_module("docs_resumable_example") as module:
        try:
            with testing.fake():
                for block in blocks:
                    run(block, module, str(doc))
                testing.assert_enqueued_with(job=module.ImportRows, args=[module.out.name],
                                             queue="imports")
                section = (DOCS / "jobs.md").read_text().split("## Resumable jobs\n")[1]
                (short,) = python_blocks(section.split("\n## ")[0])
                run(short, module, "docs/jobs.md")
                testing.assert_enqueued_with(job=module.ResizeImages, args=[["a.png", "b.png"]])
        finally:
            os.unlink(module.out.name)
