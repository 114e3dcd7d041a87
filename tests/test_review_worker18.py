"""Review of issue 18's worker side: per class metrics and the heartbeat's commands when
Redis holds garbage; Quiet on a solo worker busy with a job; the heartbeat's information
updated from two threads at once."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
import redis

from jobkit import api, keys, metrics
from jobkit.testing_services import RedisServer
from jobkit.worker import membership
from jobkit.worker.heartbeat import take_commands
from tests.conftest import start_worker, wait_for
from tests.test_busy_page import QUEUE, RELEASE, GateJob, events, only_process

GOOD, BAD = "tests.review.Good", "tests.review.Bad"


def executions(client: redis.Redis, job_class: str) -> int:
    found = {m.job_class: m.counts for m in metrics.all_time(client)}
    return found[job_class].executions


def test_a_metrics_key_of_another_type_costs_its_own_counts_only(
        own_client: redis.Redis) -> None:
    minute = metrics.minute_of(time.time())
    own_client.set(keys.metrics(BAD.encode(), "m", minute), "not a hash")
    own_client.hset(keys.metrics(BAD.encode()), "e", "many")  # not a whole number
    metrics.record(GOOD, 0.01, failed=False)
    metrics.record(BAD, 0.01, failed=False)
    metrics.flush(own_client)
    metrics.flush(own_client)  # nothing left: the refused counts are not tried again
    assert executions(own_client, GOOD) == 1
    assert not metrics._pending
    assert own_client.ttl(keys.metrics(BAD.encode(), "m", minute)) > 0  # the garbage goes


def test_garbage_commands_are_taken_and_dropped(own_client: redis.Redis) -> None:
    key = keys.process_commands("host:1:a")
    own_client.sadd(key, b"\xff\xfe", "stop", "quiet")
    assert take_commands(own_client, "host:1:a") == ["quiet", "stop", "\ufffd\ufffd"]
    own_client.set(key, "not a set")
    with pytest.raises(redis.ResponseError):  # the beat loop logs it and beats on
        take_commands(own_client, "host:1:a")
    assert not own_client.exists(key)  # taken in the same MULTI: it cannot jam the next beat


def test_quiet_shows_on_a_solo_worker_while_its_job_runs(
        own_client: redis.Redis, own_redis: RedisServer, tmp_path: Path) -> None:
    # The job holds the solo worker's event loop: the queues are cancelled once it ends, but
    # the worker took TSTP and fetches nothing more, so the Busy page says quiet now.
    worker = start_worker(own_redis.url, tmp_path / "worker.log", "-q", QUEUE, "-P", "solo")
    try:
        GateJob.perform_later("long")
        wait_for(lambda: "long: started" in events(own_client), what="the job to start")
        only_process().quiet()
        wait_for(lambda: only_process().is_quiet, what="the worker to say it is quiet")
        GateJob.perform_later("after")
        own_client.set(RELEASE, 1)
        wait_for(lambda: "long: done" in events(own_client) and not only_process().in_flight,
                 what="the job to finish")
        assert api.Queue(QUEUE).size() == 1  # and quiet it is
    finally:
        own_client.set(RELEASE, 1)
        worker.stop()


def test_the_last_line_the_heartbeat_gets_holds_all_that_was_said(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The poller's line (the running jobs) goes out slowly while TSTP says quiet from the
    # signals thread: the heartbeat must not end with the poller's line, taken before quiet.
    sent: list[dict] = []
    poller_writing = threading.Event()

    class Beating:
        def update(self, info: dict) -> None:
            if threading.current_thread().name == "poller":
                poller_writing.set()
                time.sleep(0.3)
            sent.append(info)

    monkeypatch.setattr(membership, "process_info", {})
    monkeypatch.setitem(membership._heartbeat, os.getpid(), Beating())
    poller = threading.Thread(target=membership.update_info, kwargs={"running": {}},
                              name="poller")
    poller.start()
    poller_writing.wait(5)
    membership.update_info(quiet=True)
    poller.join(5)
    assert sent[-1]["quiet"] is True and sent[-1]["running"] == {}
