"""Batches (docs/batches.md): callbacks exactly once on a real worker (a member retried then
succeeding, a member dying then retried from the dead set, a member delivered twice, nested
batches, jobs added from inside a batch job, a worker killed -9 mid-run), a 100,000-job
batch created in chunks, the state rules on real Redis, the test modes, `jobkit.api` and the
dashboard pages."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import threading
import time
import tracemalloc
from collections import Counter
from pathlib import Path

import pytest
import redis

import jobkit
from jobkit import api, keys, testing
from jobkit.batch import scope, state
from jobkit.testing_services import RedisServer, WorkerProcess, wait_until
from tests.batch_jobs import (
    EVENTS,
    GATE,
    HEAL,
    QUEUE,
    Callback,
    Doomed,
    Flaky,
    Gate,
    Spawner,
    Work,
)
from tests.doc_examples import DOCS, example_module, python_blocks, run
from tests.test_web import Client

ROOT = Path(__file__).resolve().parent.parent


def events(client: redis.Redis) -> list[str]:
    return [e.decode() for e in client.lrange(EVENTS, 0, -1)]


def labels(client: redis.Redis) -> Counter[str]:
    """How many times each callback ran, by its label."""
    return Counter(e.split(":")[0] for e in events(client) if ": " in e)


def status_of(batch_id: str) -> state.BatchStatus:
    status = api.batch(batch_id)
    assert status is not None, f"batch {batch_id} not found"
    return status


def deliver_twice(client: redis.Redis, queue: str) -> None:
    """Push a copy of the queue's oldest message, as a redelivery after a lost ack would (its
    own delivery tag: a worker tells deliveries apart by it)."""
    message = json.loads(client.lindex(queue, -1))
    message["properties"]["delivery_tag"] = "again"
    client.lpush(queue, json.dumps(message))


def labeled(label: str, description: str = "",
            events: tuple[state.Event, ...] = state.EVENTS) -> jobkit.Batch:
    """A batch whose callbacks record "<label> <event>" (each a job built with the batch's
    id, through `Batch.on`)."""
    batch = jobkit.Batch(description=description)
    for event in events:
        batch.on(event, Callback(batch.batch_id, f"{label} {event}"))
    return batch


def test_callbacks_run_once_each_on_a_real_worker(own_client: redis.Redis,
                                                  own_redis: RedisServer) -> None:
    with labeled("A", "retried once") as a:
        Work.perform_later("a1")
        Flaky.perform_later("a2")  # fails, waits in the retry set, then succeeds
    deliver_twice(own_client, QUEUE)  # a1, the oldest
    with labeled("B") as b:
        Work.perform_later("b1")
        Doomed.perform_later("b2")
    with labeled("C") as c:
        Spawner.perform_later("c1")  # adds two jobs and a child batch as it runs
        with labeled("child", events=("success",)) as child:
            Work.perform_later("c-child")
        assert child.parent_id == c.batch_id
    assert status_of(c.batch_id).total == 2  # Spawner and the child, so far

    done = ["A success", "A complete", "B death", "B complete", "C success", "C complete",
            "child success", "grandchild success"]
    worker = WorkerProcess(own_redis.url, "-q", QUEUE, "-P", "threads", "-c", "4", cwd=ROOT)
    try:
        wait_until(lambda: set(done) <= set(labels(own_client)), timeout=20,
                   what="every callback but B's success")
        own_client.sadd(HEAL, "b2")
        entry = api.DeadSet().page(0, 1)[0]
        assert entry.payload["batch"] == b.batch_id
        api.DeadSet().retry(entry)
        wait_until(lambda: "B success" in labels(own_client), timeout=10,
                   what="B's success after its dead member was retried")
        wait_until(lambda: own_client.llen(QUEUE) == 0 and not own_client.zcard(keys.RETRY),
                   timeout=10, what="the queue drained")
    finally:
        worker.stop()

    assert labels(own_client) == Counter({label: 1 for label in [*done, "B success"]})
    ran = Counter(e for e in events(own_client) if e.startswith("ran "))
    assert ran["ran a1"] == 2  # run twice, counted once:
    assert (status_of(a.batch_id).succeeded, status_of(a.batch_id).total) == (2, 2)
    got = {e.split(":")[0]: e.split(": ")[1] for e in events(own_client) if ":" in e}
    assert got["A success"] == "total=2 succeeded=2 dead=0 pending=0"
    assert got["B death"] == "total=2 succeeded=1 dead=1 pending=0"
    assert got["B success"] == "total=2 succeeded=2 dead=0 pending=0"  # dead -> succeeded
    # C: Spawner, the child batch, the two jobs Spawner added and the batch it created.
    assert got["C success"] == "total=5 succeeded=5 dead=0 pending=0"
    order = events(own_client)
    assert order.index(next(e for e in order if e.startswith("C success"))) > max(
        order.index(f"ran c1/{name}") for name in ("added-1", "added-2", "grandchild"))
    final = status_of(b.batch_id)
    assert final.success and set(final.fired) == {"success", "complete", "death"}
    assert own_client.ttl(keys.batch(a.batch_id)) <= state.DONE_SECONDS


def test_a_member_killed_mid_run_runs_again_and_counts_once(own_client: redis.Redis,
                                                           own_redis: RedisServer) -> None:
    with labeled("K") as batch:
        Gate.perform_later("g")
        Work.perform_later("k1")
    fast = {"JOBKIT_HEARTBEAT_TIMEOUT": "3"}  # the killed worker's job is handed back soon
    first = WorkerProcess(own_redis.url, "-q", QUEUE, "-P", "threads", "-c", "2", cwd=ROOT,
                          env=fast)
    try:
        wait_until(lambda: {"started g", "ran k1"} <= set(events(own_client)), timeout=15,
                   what="the gate job running")
        os.killpg(first.proc.pid, signal.SIGKILL)  # kill -9, mid-run: no outcome recorded
    finally:
        first.stop()
    assert status_of(batch.batch_id).pending == 1
    own_client.set(GATE, "1")
    second = WorkerProcess(own_redis.url, "-q", QUEUE, "-P", "threads", "-c", "2", cwd=ROOT,
                           env=fast)
    try:
        wait_until(lambda: {"K success", "K complete"} <= set(labels(own_client)), timeout=20,
                   what="the batch's callbacks after the gate job ran again")
        wait_until(lambda: own_client.llen(QUEUE) == 0, timeout=10, what="the queue drained")
    finally:
        second.stop()
    ran = Counter(events(own_client))
    assert (ran["started g"], ran["ran g"]) == (2, 1)
    assert labels(own_client) == Counter({"K success": 1, "K complete": 1})
    status = status_of(batch.batch_id)
    assert (status.total, status.succeeded, status.pending) == (2, 2, 0)


def test_a_100000_job_batch_is_created_in_chunks(own_client: redis.Redis) -> None:
    started = time.perf_counter()
    with labeled("big", "big", ("success",)) as batch:
        assert batch.perform_all_later(Work(f"n{i}") for i in range(100_000)) == 100_000
        assert batch.status is not None and not batch.status.sealed  # nothing finishes yet
    elapsed = time.perf_counter() - started
    status = api.batch(batch.batch_id)
    assert status is not None and status.sealed
    assert (status.total, status.pending, status.failed) == (100_000, 100_000, 0)
    assert own_client.llen(QUEUE) == 100_000
    print(f"100,000 jobs in a batch: {elapsed:.1f} s")
    own_client.delete(QUEUE)

    # The memory a batch's creation holds does not grow with its size (one chunk at most).
    peaks = []
    for size in (2 * scope.CHUNK, 8 * scope.CHUNK):
        tracemalloc.start()
        with jobkit.Batch() as batch:
            for i in range(size):
                Work.perform_later(f"n{i}")
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        own_client.delete(QUEUE)
    print(f"peak memory: {peaks[0] / 1e6:.1f} MB for 2,000 jobs, {peaks[1] / 1e6:.1f} MB "
          "for 8,000")
    assert peaks[1] < 1.5 * peaks[0]


def test_the_state_rules_on_redis(own_client: redis.Redis) -> None:
    """Outcomes as a worker records them (state.record), on real Redis, without a worker."""
    with labeled("S", "<b>rules</b>") as batch:
        one, two = Work.perform_later("1"), Work.perform_later("2")
    bid = batch.batch_id
    pushed = lambda: [json.loads(m) for m in own_client.lrange(QUEUE, 0, -1)]  # noqa: E731
    state.record(own_client, bid, one.job_id, "failing")
    assert (status_of(bid).failed, status_of(bid).pending) == (1, 2)
    state.record(own_client, bid, one.job_id, "dead")
    state.record(own_client, bid, one.job_id, "dead")  # the same again: counted once
    state.record(own_client, bid, two.job_id, "discarded")  # counts as a success
    state.record(own_client, bid, two.job_id, "dead")  # after a final outcome: ignored
    status = status_of(bid)
    assert (status.dead, status.discarded, status.pending) == (1, 1, 0)
    assert status.complete and not status.success and set(status.fired) == {"death", "complete"}
    state.record(own_client, bid, one.job_id, "succeeded")  # a dead-set retry succeeded
    state.record(own_client, bid, one.job_id, "succeeded")
    assert status_of(bid).success
    assert len(pushed()) == 2 + 3  # the two members, each callback once

    with pytest.raises(RuntimeError, match="boom"), labeled("X") as aborted:
        sent = Work.perform_later("sent")
        aborted.flush()
        Work.perform_later("never sent")
        raise RuntimeError("boom")
    state.record(own_client, aborted.batch_id, sent.job_id, "succeeded")
    status = status_of(aborted.batch_id)
    assert status.aborted and status.complete and status.total == 1 and not status.fired
    assert len(pushed()) == 6  # "sent" only
    # A member that dies while the block still runs: on_death waits for the block's end (it
    # may raise: then no callback runs at all).
    for raises in (True, False):
        with contextlib.suppress(RuntimeError), labeled("D", events=("death",)) as early:
            dies = Work.perform_later("dies early")
            early.flush()
            state.record(own_client, early.batch_id, dies.job_id, "dead")
            assert not status_of(early.batch_id).fired
            if raises:
                raise RuntimeError("the block fails")
        assert set(status_of(early.batch_id).fired) == (set() if raises else {"death",
                                                                                "complete"})
    assert len(pushed()) == 6 + 2 + 1  # the two members, D's death once
    with pytest.raises(LookupError, match="complete"):
        jobkit.Batch.open(bid)

    # A member that will never run (cancelled while waiting; buried by a worker before its
    # task) counts as dead; a callback entry that is not jobkit's is skipped, not fatal.
    with labeled("never", events=("success",)) as other:
        waiting = Work.perform_later("waits")
    own_client.hset(keys.batch(other.batch_id), "on_death", "not json")
    assert jobkit.cancel(waiting.job_id).outcome == "queued"
    status = status_of(other.batch_id)
    assert (status.dead, status.complete, set(status.fired)) == (1, True, {"death",
                                                                        "complete"})
    assert len(pushed()) == 9


def test_a_child_whose_creator_died_in_its_block_does_not_hold_its_parent(
        own_client: redis.Redis) -> None:
    """A batch job's worker killed -9 inside a child batch's block leaves that child never
    sealed: the parent counts a child only once its block ended, so it still completes (the
    job runs again and makes a new child, which the parent waits for)."""
    with labeled("P", events=("success",)) as parent:
        maker = Work.perform_later("maker")
    with scope.running(parent.batch_id):  # as inside perform of the parent's job
        orphan = jobkit.Batch(description="its creator was killed")
        orphan.__enter__()  # never left: no __exit__ (the running scope resets the block)
        lost = Work.perform_later("in the orphan")
        orphan.flush()
    assert orphan.parent_id == parent.batch_id and not status_of(orphan.batch_id).sealed
    assert status_of(parent.batch_id).total == 1  # the orphan is not a member
    with scope.running(parent.batch_id), jobkit.Batch() as child:  # the job's second run
        again = Work.perform_later("in the new child")
        assert status_of(parent.batch_id).total == 1  # counted when its block ends
    assert status_of(parent.batch_id).total == 2
    state.record(own_client, child.batch_id, again.job_id, "succeeded")
    state.record(own_client, orphan.batch_id, lost.job_id, "succeeded")
    state.record(own_client, parent.batch_id, maker.job_id, "succeeded")
    status = status_of(parent.batch_id)
    assert status.success and (status.total, status.succeeded) == (2, 2)
    assert not own_client.hexists(keys.batch(orphan.batch_id), "fired_success")


def test_the_seal_waits_for_a_redis_restart() -> None:
    """The block's jobs are sent; Redis restarts as the block ends: the seal is tried again
    until Redis answers (an unsealed batch would never call back)."""
    server = RedisServer(aof=True)  # appendfsync always: the restart keeps every write
    before = jobkit.config.current_settings()
    jobkit.configure(redis_url=server.url)
    restart = threading.Timer(1.0, server.start)
    try:
        with labeled("R", events=("success",)) as batch:
            Work.perform_later("r")
            batch.flush()
            server.kill()
            restart.start()
        status = status_of(batch.batch_id)
        assert status.sealed and (status.total, status.pending) == (1, 1)
    finally:
        jobkit.config.use_settings(before)
        if restart.is_alive():
            restart.join()
        server.stop()


def test_keys_jobkit_did_not_write_are_named_and_never_half_changed(
        own_client: redis.Redis) -> None:
    with jobkit.Batch() as counters, jobkit.Batch() as members:
        one, two = Work.perform_later("1"), Work.perform_later("2")
    assert status_of(members.batch_id).parent == counters.batch_id
    own_client.hset(keys.batch(counters.batch_id), "failing", "x")
    own_client.set(keys.batch_members(members.batch_id), "not a hash")
    with pytest.raises(redis.ResponseError, match=re.escape(
            f"jobkit batch key {keys.batch(counters.batch_id)}: its failing is \"x\", not a "
            "whole number")):
        state.record(own_client, counters.batch_id, one.job_id, "succeeded")
    with pytest.raises(redis.ResponseError, match=re.escape(
            f"jobkit batch key {keys.batch_members(members.batch_id)} is a string, not a hash")):
        state.record(own_client, members.batch_id, two.job_id, "succeeded")
    assert not own_client.exists(keys.batch_members(counters.batch_id))  # nothing half-done
    assert status_of(counters.batch_id).succeeded == 0

    own_client.delete(keys.batch(members.batch_id))
    own_client.set(keys.batch(members.batch_id), "not a hash")
    with pytest.raises(ValueError, match=f"its key {keys.batch(members.batch_id)} cannot be "
                                         "read .*WRONGTYPE"):
        api.batch(members.batch_id)
    assert [b.batch_id for b in api.batches()] == [counters.batch_id]  # the bad one left out
    client = Client()
    code, _, page = client.request("GET", "/batches")
    assert code == 200 and counters.batch_id in page and "cannot be read" in page
    code, _, text = client.request("GET", f"/batches/{members.batch_id}")
    assert code == 500 and "cannot be read" in text
    own_client.delete(keys.BATCHES)
    own_client.set(keys.BATCHES, "not a sorted set")
    with pytest.raises(ValueError, match=f"the batch index {keys.BATCHES} cannot be read"):
        api.batches()
    with pytest.raises(redis.ResponseError, match=f"jobkit batch index {keys.BATCHES} is a "
                                                  "string, not a sorted set"):
        jobkit.Batch().__enter__()
    code, _, text = client.request("GET", "/batches")
    assert code == 500 and f"the batch index {keys.BATCHES} cannot be read" in text


def test_bad_batches_are_refused(own_client: redis.Redis) -> None:
    class Unique(jobkit.Job):
        queue_as = QUEUE
        unique_for = 60

        def perform(self) -> None: ...

    with pytest.raises(ValueError, match="Unique is unique or debounced: it cannot join"), \
            jobkit.Batch():
        Unique.perform_later()
    class NoArguments(jobkit.Job):
        def perform(self) -> None: ...

    with pytest.raises(TypeError, match="on_success: a callback class's perform takes the "
                                        "batch id as its one argument"):
        jobkit.Batch(on_success=NoArguments)
    with pytest.raises(ValueError, match="the events are success, complete, death, not 'done'"):
        jobkit.Batch().on("done", Callback)  # type: ignore[arg-type]  # not an event
    with pytest.raises(ValueError, match="on_success=.*Unique: a callback cannot be unique"):
        jobkit.Batch(on_success=Unique)
    with pytest.raises(ValueError, match="on_death=Callback: a callback .* cannot be delayed"):
        jobkit.Batch(on_death=Callback.set(wait=10))
    received = Callback("id", "a member's copy")
    received.batch_id = "its batch"  # as a batch job's own job, received by its worker
    assert jobkit.Batch().on("success", received).callbacks["success"].batch_id is None
    with pytest.raises(TypeError, match="on_complete must be a Job class"):
        jobkit.Batch(on_complete=print)  # type: ignore[arg-type]  # not a job
    with pytest.raises(LookupError, match="not found"):
        jobkit.Batch.open("no-such-batch")
    with pytest.raises(LookupError, match="the job is in no batch"):
        jobkit.Batch.open(Work("alone").batch_id)
    jobkit.use_adapter("inline")
    try:
        with pytest.raises(NotImplementedError, match="not the 'inline' adapter"), \
                jobkit.Batch():
            pass
    finally:
        jobkit.use_adapter(None)


notes: list[str] = []  # what the test-mode jobs did (they run in this process)


class Noted(jobkit.Job):
    def perform(self, name: str) -> None:
        if name == "fails":
            raise RuntimeError(f"{name} fails")
        notes.append(name)


class Notice(jobkit.Job):
    def perform(self, batch_id: str, label: str = "notice") -> None:
        notes.append(f"{label} {batch_id}")


def test_fake_mode_records_membership_and_inline_runs_callbacks() -> None:
    notes.clear()
    with testing.fake() as adapter:
        with jobkit.Batch(on_success=Notice, on_death=Notice.set(queue="deaths")) as batch:
            Noted.perform_later("1")
            Noted.perform_later("fails")
        assert [r.batch_id for r in adapter.jobs()] == [batch.batch_id] * 2
        assert batch.status is not None and batch.status.pending == 2
        with pytest.raises(RuntimeError, match="fails"):
            Noted.drain()  # no retry set in the test modes: counted as dead
        assert [(r.args, r.queue) for r in adapter.jobs(Notice)] == [([batch.batch_id],
                                                                      "deaths")]
        status = adapter.batches().status(batch.batch_id)
        assert status is not None and (status.dead, status.succeeded) == (1, 1)
    with testing.inline() as adapter:
        with jobkit.Batch(on_success=Notice.set(queue="x")) as batch:
            Noted.perform_later("3")
            assert not adapter.performed  # sent (and run) with its chunk: at the block's end
        assert [r.queue for r in adapter.performed] == ["default", "x"]
        assert batch.status is not None and batch.status.success
    assert notes == ["1", "3", f"notice {batch.batch_id}"]


def test_api_and_dashboard(own_client: redis.Redis) -> None:
    with labeled("report", "<b>first</b>\x1b", ("complete",)) as first:
        Work.perform_later("1")
    with jobkit.Batch(description="second") as second:
        pass  # empty: succeeds as it is sealed
    assert [b.batch_id for b in api.batches()] == [second.batch_id, first.batch_id]
    status = status_of(first.batch_id)
    assert (status.total, status.pending, status.failed) == (1, 1, 0)
    assert status.callbacks == {"complete": "tests.batch_jobs.Callback"}
    assert api.batch("nope") is None

    client = Client()
    code, _, page = client.request("GET", "/batches")
    assert code == 200 and '<a href="/batches">Batches</a>' in page
    assert "&lt;b&gt;first&lt;/b&gt;\\x1b" in page and "<b>first</b>" not in page
    assert page.index(second.batch_id) < page.index(first.batch_id)
    code, _, page = client.request("GET", f"/batches/{first.batch_id}")
    assert code == 200 and "<b>1</b>pending" in page and "tests.batch_jobs.Callback" in page
    assert f"/dead?q={first.batch_id}" in page
    code, _, page = client.request("GET", f"/batches/{second.batch_id}")
    assert "succeeded" in page and page.count("not yet") == 1  # on_death only: empty, so done
    assert client.request("GET", "/batches/nope")[0] == 404
    # An id (from Redis, not jobkit's) with a slash and a control character: linked, shown
    # escaped, reachable (PATH_INFO as the server decodes it).
    odd = "a/b\x1b"
    own_client.hset(keys.batch(odd), mapping={"total": 1, "parent": "p\x1b"})
    own_client.zadd(keys.BATCHES, {odd: time.time()})
    page = client.request("GET", "/batches")[2]
    assert '<a href="/batches/a%2Fb%1B"><code>a/b\\x1b</code>' in page and "\x1b" not in page
    code, _, page = client.request("GET", "/batches/a/b\x1b")
    assert code == 200 and "<code>a/b\\x1b</code>" in page and "<code>p\\x1b</code>" in page
    assert "\x1b" not in page


def test_the_examples_in_batches_md_run(own_client: redis.Redis) -> None:
    """Each python block of docs/batches.md, in order, on the celery adapter (no worker: the
    jobs wait in the private Redis, where the counts are read)."""
    doc = DOCS / "batches.md"
    blocks = python_blocks(doc.read_text())
    assert len(blocks) == 5
    with example_module("docs_batches_example") as module:
        for block in blocks:
            run(block, module, str(doc))
    totals = sorted(status.total for status in api.batches())
    assert totals == [1, 1, 100, 1000]
    assert own_client.llen("default") == 1102
