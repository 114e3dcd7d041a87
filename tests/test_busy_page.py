"""The Busy page on a real `jobkit worker`: each job's start time and runtime, running or
prefetched; the process's start time and memory; the Quiet and Stop buttons, which reach that
one process through Redis (worker/heartbeat.py)."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
import redis

from jobkit import Job, api, keys
from jobkit.testing_services import RedisServer
from jobkit.worker.heartbeat import HeartbeatProcess, send_command, take_commands
from tests.conftest import start_worker, wait_for
from tests.test_web import Client

QUEUE = "busy_test"
EVENTS = "busy-test:events"
RELEASE = "busy-test:release"


class GateJob(Job):
    """Runs until the test sets RELEASE (30 s at most)."""

    queue_as = QUEUE

    def perform(self, name: str) -> None:
        client = redis.Redis.from_url(os.environ["REDIS_URL"])
        client.rpush(EVENTS, f"{name}: started")
        deadline = time.monotonic() + 30
        while not client.exists(RELEASE) and time.monotonic() < deadline:
            time.sleep(0.02)
        client.rpush(EVENTS, f"{name}: done")


def events(client: redis.Redis) -> list[str]:
    return [event.decode() if isinstance(event, bytes) else event
            for event in client.lrange(EVENTS, 0, -1)]


def only_process() -> api.Process:
    [process] = wait_for(api.processes, what="the worker's heartbeat")  # type: ignore[misc]
    return process


def button(web: Client, action: str, process_id: str) -> int:
    status, _, _ = web.request("POST", "/busy", form={
        "csrf": web.csrf(), "action": action, "process": process_id})
    return status


def test_a_running_job_shows_its_start_and_runtime_and_the_process_its_memory(
        own_client: redis.Redis, own_redis: RedisServer, tmp_path: Path) -> None:
    first = GateJob.perform_later("first")
    second = GateJob.perform_later("second")
    # One pool process, two jobs held: one runs, the other waits prefetched behind it.
    worker = start_worker(own_redis.url, tmp_path / "worker.log", "-q", QUEUE, "-P", "prefork",
                          "-c", "1", "--prefetch-multiplier", "2")
    web = Client()
    try:
        wait_for(lambda: "first: started" in events(own_client), what="the first job to start")
        process = wait_for(lambda: next((p for p in api.processes()
                                         if any(j.running for j in p.in_flight)
                                         and len(p.in_flight) == 2 and p.rss), None),
                           what="the start time and memory in the heartbeat")
        assert isinstance(process, api.Process)
        running, waiting = process.in_flight
        assert (running.job_id, waiting.job_id) == (first.job_id, second.job_id)
        assert waiting.started_at is None and not waiting.running
        assert running.started_at is not None and time.time() - 30 < running.started_at
        assert process.started_at is not None and process.started_at <= running.started_at
        assert process.pool == "prefork" and process.concurrency == "1"
        assert process.rss and process.children_rss  # the pool process, apart
        _, _, page = web.get("/busy")
        row = re.search(rf"<td>{first.job_id}</td>.*?</tr>", page, re.S)
        assert row and "running" in row.group(0)
        assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC</td><td class=\"nowrap\">\d+ s",
                         row.group(0)), row.group(0)
        queued = re.search(rf"<td>{second.job_id}</td>.*?</tr>", page, re.S)
        assert queued and "prefetched" in queued.group(0)
        assert re.search(r"started \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(\d+ s ago\)", page)
        assert re.search(r"RSS [\d.]+ MiB, pool processes [\d.]+ MiB", page), page
    finally:
        own_client.set(RELEASE, 1)
        worker.stop()


def test_quiet_stops_the_worker_taking_jobs(own_client: redis.Redis, own_redis: RedisServer,
                                            tmp_path: Path) -> None:
    worker = start_worker(own_redis.url, tmp_path / "worker.log", "-q", QUEUE, "-P", "threads",
                          "-c", "1")
    web = Client()
    try:
        GateJob.perform_later("before")
        wait_for(lambda: "before: started" in events(own_client), what="the first job")
        process = only_process()
        assert process.takes_commands and not process.is_quiet
        assert button(web, "quiet", process.id) == 303
        wait_for(lambda: only_process().is_quiet, what="the worker to say it is quiet")
        page = web.get("/busy")[2]
        assert '<span class="paused">quiet</span>' in page
        assert 'value="quiet"' not in page and 'value="stop"' in page
        GateJob.perform_later("after")
        own_client.set(RELEASE, 1)
        # Its pool slot is free once the first job is acknowledged: a worker that still
        # consumed would take the second job at once. Two more beats, and it has not.
        wait_for(lambda: "before: done" in events(own_client)
                 and not only_process().in_flight, what="the first job to finish")
        freed_at = time.time()
        wait_for(lambda: (only_process().beat_at or 0) > freed_at + 2,
                 what="two more heartbeats")
        assert "after: started" not in events(own_client)
        assert api.Queue(QUEUE).size() == 1
        assert worker.proc.poll() is None  # quiet, not stopped
    finally:
        worker.stop()


def test_stop_ends_the_process_once_its_running_job_finished(
        own_client: redis.Redis, own_redis: RedisServer, tmp_path: Path) -> None:
    worker = start_worker(own_redis.url, tmp_path / "worker.log", "-q", QUEUE, "-P", "threads",
                          "-c", "1")
    web = Client()
    try:
        GateJob.perform_later("running")
        wait_for(lambda: "running: started" in events(own_client), what="the job to start")
        process = only_process()
        assert button(web, "stop", process.id) == 303
        wait_for(lambda: only_process().is_stopping, what="the worker to say it is stopping")
        assert '<span class="paused">stopping</span>' in web.get("/busy")[2]
        assert worker.proc.poll() is None  # waiting for its job
        own_client.set(RELEASE, 1)
        wait_for(lambda: worker.proc.poll() is not None, what="the worker to exit")
        assert worker.proc.returncode == 0
        assert events(own_client) == ["running: started", "running: done"]
        assert api.Queue(QUEUE).size() == 0 and not own_client.keys(keys.unacked("*"))
    finally:
        worker.stop()


def test_the_heartbeat_takes_what_the_worker_says_while_it_starts(
        own_client: redis.Redis, own_redis: RedisServer) -> None:
    # Written before the heartbeat process reads its first line: a buffered read of that
    # line would keep this one out of sight until the worker writes again.
    beating = HeartbeatProcess("host:1:a", 10, own_redis.url, None, {"running": {}})
    try:
        beating.update({"running": {"tag": 1.0}})

        def info() -> dict:
            raw = own_client.get(keys.heartbeat("host:1:a"))
            return json.loads(raw) if raw else {}
        wait_for(lambda: info().get("running") == {"tag": 1.0}, what="the update")
        assert info()["rss"] > 0 and "children_rss" in info()  # this test process's
    finally:
        beating.stop()


def test_commands_reach_one_process_and_expire(own_client: redis.Redis) -> None:
    send_command(own_client, "host:1:a", "quiet", 10)
    send_command(own_client, "host:1:a", "stop", 10)
    assert 0 < own_client.ttl(keys.process_commands("host:1:a")) <= 10
    assert take_commands(own_client, "host:2:b") == []
    assert take_commands(own_client, "host:1:a") == ["quiet", "stop"]
    assert take_commands(own_client, "host:1:a") == []  # taken once
    with pytest.raises(ValueError, match="unknown command"):
        send_command(own_client, "host:1:a", "restart", 10)


def test_the_buttons_refuse_a_process_that_takes_no_commands(own_client: redis.Redis) -> None:
    web = Client()
    own_client.set(keys.heartbeat("embedded:1:a"), json.dumps({"hostname": "embedded", "pid": 1}))
    own_client.sadd(keys.PROCESSES, "embedded:1:a")
    assert 'value="quiet"' not in web.get("/busy")[2]
    assert button(web, "stop", "embedded:1:a") == 400
    assert button(web, "stop", "gone:2:b") == 400
    assert not own_client.keys(keys.process_commands("*"))
