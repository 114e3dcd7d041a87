"""The worker under faults, with real processes: Redis restarted, connections dropped, a
worker frozen or killed, a job holding the GIL, a job killed by the hard time limit or a signal.

Each test runs its own redis-server, so restarting it disturbs no other test.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

import jobkit
from jobkit import keys
from jobkit.celery_message import build_task_message
from jobkit.config import current_settings, use_settings
from jobkit.job_sets import DeadSet, RetrySet
from jobkit.testing_services import JOBKIT_COMMAND, RedisServer, free_port, stop_process
from jobkit.worker.recovery import hand_back, reap_dead_processes
from tests.conftest import ROOT, start_worker, wait_for
from tests.fault_jobs import DONE, STARTS, GilJob, KillableJob, MarkJob

HEARTBEAT_TIMEOUT = 3  # seconds: short, so a wrongly reaped job shows up within the test
POLL_INTERVAL = 0.2  # WorkerProcess's default
FAST = {"JOBKIT_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT)}
LONG_JOB_SECONDS = 12


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A private redis-server with AOF (fsync always) that this test may kill and restart;
    jobkit in the test process points at it meanwhile."""
    server = RedisServer(aof=True)
    before = current_settings()
    jobkit.configure(redis_url=server.url)
    try:
        yield server
    finally:
        use_settings(before)
        server.stop()


def worker(server: RedisServer, log: Path, *args: str) -> object:
    return start_worker(server.url, log, "-q", "faults", *args, env=FAST)


def starts(client: redis.Redis) -> dict[str, int]:
    """How many times each job started (runs are counted by id: a retried write counts once)."""
    names = [k.decode()[len(STARTS):] for k in client.keys(STARTS + "*")]
    return {name: client.scard(STARTS + name) for name in names}


def done(client: redis.Redis) -> set[str]:
    return {m.decode() for m in client.smembers(DONE)}


def held(client: redis.Redis) -> int:
    return sum(client.hlen(k) for k in client.keys(keys.unacked("*")))


def assert_alive(*workers: object) -> None:
    for proc in workers:
        assert proc.proc.poll() is None, f"worker exited:\n{proc.output()[-3000:]}"
        assert "Unrecoverable error" not in proc.output(), proc.output()[-3000:]


def enqueue(job: type, *names: str, **kwargs: object) -> None:
    jobkit.perform_all_later([job(name, **kwargs).set(queue="faults") for name in names])


def drop_every_connection(server: RedisServer) -> None:
    server.client.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")


def restart(server: RedisServer) -> None:
    server.kill()  # SIGKILL: with appendfsync always, nothing acknowledged is lost
    server.start()


@pytest.mark.parametrize("pool", ["prefork", "threads"])
@pytest.mark.parametrize("fault", [restart, drop_every_connection], ids=["restart", "drop"])
def test_a_running_job_is_never_started_again_after_a_reconnect(
        own_redis: RedisServer, tmp_path: Path, pool: str, fault) -> None:
    r = own_redis.client
    long_jobs = ["long-1", "long-2", "long-3"]
    first = worker(own_redis, tmp_path / "first.log", "-P", pool, "-c", "3")
    enqueue(MarkJob, *long_jobs, seconds=LONG_JOB_SECONDS)
    wait_for(lambda: len(starts(r)) == 3, what="the three long jobs to start")
    # A second worker, idle: any job wrongly handed back would start again there.
    second = worker(own_redis, tmp_path / "second.log", "-P", pool, "-c", "2")
    try:
        fault(own_redis)
        enqueue(MarkJob, *[f"short-{i}" for i in range(20)])
        wait_for(lambda: len(done(r)) == 23, timeout=LONG_JOB_SECONDS + 30,
                 what="every job to finish")
        assert {name: n for name, n in starts(r).items() if n != 1} == {}, \
            "a job started twice"
        wait_for(lambda: held(r) == 0, what="no job left in flight")
        assert r.llen("faults") == 0
        assert DeadSet(r).size() == 0
        assert_alive(first, second)
    finally:
        second.stop()
        first.stop()


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_short_jobs_under_repeated_dropped_connections_run_once(
        own_redis: RedisServer, tmp_path: Path, pool: str) -> None:
    """Connections dropped every half second while two workers run short jobs: jobs fetched but
    not started, jobs handed to a pool process, acknowledgements cut off: each job runs once."""
    r = own_redis.client
    names = [f"short-{i}" for i in range(400)]
    first = worker(own_redis, tmp_path / "first.log", "-P", pool, "-c", "4")
    second = worker(own_redis, tmp_path / "second.log", "-P", pool, "-c", "4")
    try:
        enqueue(MarkJob, *names, seconds=0.02)
        deadline = time.monotonic() + 90
        while len(done(r)) < len(names) and time.monotonic() < deadline:
            drop_every_connection(own_redis)
            time.sleep(0.5)  # the fault's rhythm, not a wait for a result
        wait_for(lambda: len(done(r)) == len(names), timeout=30, what="every job to finish")
        wait_for(lambda: held(r) == 0, timeout=30, what="no job left in flight")
        assert {name: n for name, n in starts(r).items() if n != 1} == {}, "ran twice"
        assert r.llen("faults") == 0 and DeadSet(r).size() == 0
        assert_alive(first, second)
    finally:
        second.stop()
        first.stop()


@pytest.mark.parametrize("pool", ["threads", "solo"])
def test_a_job_holding_the_gil_keeps_its_worker_alive(own_redis: RedisServer, tmp_path: Path,
                                                      pool: str) -> None:
    r = own_redis.client
    holder = worker(own_redis, tmp_path / "holder.log", "-P", pool, "-c", "2")
    GilJob.set(queue="faults").perform_later("gil", 3 * HEARTBEAT_TIMEOUT)
    wait_for(lambda: starts(r).get("gil"), what="the GIL-holding job to start")
    other = worker(own_redis, tmp_path / "other.log", "-c", "1")
    try:
        wait_for(lambda: "gil" in done(r), timeout=3 * HEARTBEAT_TIMEOUT + 20,
                 what="the GIL-holding job to finish")
        assert starts(r) == {"gil": 1}, "the job was taken for abandoned and started again"
        assert "stopped beating" not in other.output() + holder.output()
        assert_alive(holder, other)
    finally:
        other.stop()
        holder.stop()


def test_a_frozen_worker_is_taken_for_dead_and_a_kill_after_it_is_recovered_in_time(
        own_redis: RedisServer, tmp_path: Path) -> None:
    """A worker frozen longer than heartbeat_timeout (SIGSTOP: its heartbeat process stops
    beating for it) is taken for dead: its job runs again elsewhere, the documented exception.
    Thawed, it says so, goes on, and when it is then killed its new job is back in time."""
    r = own_redis.client
    frozen = worker(own_redis, tmp_path / "frozen.log", "-P", "threads", "-c", "1")
    enqueue(MarkJob, "held-when-frozen", seconds=2 * HEARTBEAT_TIMEOUT + 4)
    wait_for(lambda: starts(r).get("held-when-frozen"), what="the job to start")
    rescuer = worker(own_redis, tmp_path / "rescuer.log", "-P", "threads", "-c", "2")
    try:
        os.kill(frozen.proc.pid, signal.SIGSTOP)
        wait_for(lambda: starts(r).get("held-when-frozen") == 2,
                 timeout=HEARTBEAT_TIMEOUT + 10, what="the frozen worker's job to run again")
        os.kill(frozen.proc.pid, signal.SIGCONT)
        wait_for(lambda: "was taken for dead" in frozen.output(), timeout=10,
                 what="the thawed worker to log that it was taken for dead")
        wait_for(lambda: "held-when-frozen" in done(r), timeout=30, what="the job to finish")
        # The thawed worker is a member again: a job it takes now is recovered after a kill.
        rescuer.stop()
        enqueue(MarkJob, "after-thaw", seconds=60)
        wait_for(lambda: starts(r).get("after-thaw"), what="the thawed worker to take a job")
        rescuer = worker(own_redis, tmp_path / "rescuer2.log", "-P", "threads", "-c", "2")
        killed_at = time.monotonic()
        os.killpg(frozen.proc.pid, signal.SIGKILL)
        wait_for(lambda: starts(r).get("after-thaw") == 2, timeout=HEARTBEAT_TIMEOUT + 10,
                 what="the killed worker's job to start again")
        recovered_in = time.monotonic() - killed_at
        assert recovered_in < HEARTBEAT_TIMEOUT + POLL_INTERVAL + 2.0, recovered_in
        assert_alive(rescuer)
    finally:
        os.killpg(frozen.proc.pid, signal.SIGCONT) if frozen.proc.poll() is None else None
        frozen.stop()
        rescuer.stop()


def test_two_deaths_in_a_row_are_each_recovered_in_time(own_redis: RedisServer,
                                                         tmp_path: Path) -> None:
    """The reaper holds no lock over the next death: each killed worker's job starts again
    within heartbeat_timeout + poll_interval (plus a start-up margin)."""
    r = own_redis.client
    survivor = worker(own_redis, tmp_path / "survivor.log", "-P", "threads", "-c", "1")
    enqueue(MarkJob, "keeps-survivor-busy", seconds=40)
    wait_for(lambda: starts(r).get("keeps-survivor-busy"), what="the survivor to be busy")
    try:
        for round_ in (1, 2):
            victim = worker(own_redis, tmp_path / f"victim{round_}.log", "-P", "threads",
                            "-c", "1")
            name = f"victim-job-{round_}"
            enqueue(MarkJob, name, seconds=2)
            wait_for(lambda name=name: starts(r).get(name), what="the victim to take its job")
            killed_at = time.monotonic()
            os.killpg(victim.proc.pid, signal.SIGKILL)
            victim.proc.wait()
            # The survivor's poller reaps; the next victim (or the survivor) runs it again.
            helper = worker(own_redis, tmp_path / f"helper{round_}.log", "-P", "threads",
                            "-c", "1")
            wait_for(lambda name=name: starts(r).get(name) == 2,
                     timeout=HEARTBEAT_TIMEOUT + 15, what=f"{name} to start again")
            assert time.monotonic() - killed_at < HEARTBEAT_TIMEOUT + POLL_INTERVAL + 4.0
            wait_for(lambda name=name: name in done(r), what=f"{name} to finish")
            helper.stop()
        assert_alive(survivor)
    finally:
        survivor.stop()


def test_a_job_killed_by_the_hard_time_limit_goes_to_the_retry_set(
        own_redis: RedisServer, tmp_path: Path) -> None:
    r = own_redis.client
    proc = worker(own_redis, tmp_path / "limit.log", "-P", "prefork", "-c", "2", "--",
                  "--time-limit", "3")
    try:
        enqueue(KillableJob, "too-long", seconds=30)
        retries = RetrySet(r)
        entry = wait_for(lambda: next(iter(retries), None), timeout=20,
                         what="the killed job in the retry set")
        assert entry.error_class == "jobkit.errors.JobKilled"
        assert "hard time limit (3 s) exceeded" in entry.error_message
        assert entry.job_class == "tests.fault_jobs.KillableJob"
        wait_for(lambda: held(r) == 0, what="the killed job's message acknowledged")
        assert r.llen("faults") == 0
        retries.retry(entry)  # its last attempt (max_retries = 1) is killed too: dead set
        dead = wait_for(lambda: next(iter(DeadSet(r)), None), timeout=20,
                        what="the job in the dead set after its last attempt")
        assert dead.error_class == "jobkit.errors.JobKilled"
        assert starts(r) == {"too-long": 2}
        assert_alive(proc)
    finally:
        proc.stop()


def test_a_job_whose_pool_process_is_killed_goes_to_the_retry_set(
        own_redis: RedisServer, tmp_path: Path) -> None:
    r = own_redis.client
    proc = worker(own_redis, tmp_path / "lost.log", "-P", "prefork", "-c", "2")
    try:
        enqueue(KillableJob, "oom", seconds=30)
        pid = int(wait_for(lambda: r.get("fault:pid:oom"), what="the job's process id"))
        os.kill(pid, signal.SIGKILL)  # as the OOM killer would
        entry = wait_for(lambda: next(iter(RetrySet(r)), None), timeout=20,
                         what="the killed job in the retry set")
        assert entry.error_class == "jobkit.errors.JobKilled"
        assert "WorkerLostError" in entry.error_message
        wait_for(lambda: held(r) == 0, what="the killed job's message acknowledged")
        assert r.llen("faults") == 0
        assert_alive(proc)
    finally:
        proc.stop()


@pytest.fixture
def cluster_node(tmp_path: Path) -> Iterator[int]:
    """A one-node Redis Cluster owning every slot; yields its port (at most 55535: the
    cluster bus listens 10,000 ports higher)."""
    port = next(p for p in iter(free_port, None) if p <= 55535)
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--cluster-enabled", "yes", "--cluster-config-file", str(tmp_path / "nodes.conf"),
         "--dir", str(tmp_path), "--logfile", str(tmp_path / "cluster.log")],
        start_new_session=True)
    try:
        client = redis.Redis(port=port)
        wait_for(lambda: _answers(client), what="the cluster node")
        client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        yield port
    finally:
        stop_process(proc)


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def test_redis_cluster_is_refused_with_one_line(cluster_node: int) -> None:
    env = {**os.environ, "REDIS_URL": f"redis://127.0.0.1:{cluster_node}/0"}
    for command in (["worker", "-q", "faults"], ["config", "check"]):
        result = subprocess.run([*JOBKIT_COMMAND, *command], env=env, cwd=ROOT, capture_output=True,
                                text=True, timeout=60)
        assert result.returncode != 0, (command, result.stdout, result.stderr)
        assert "Redis Cluster is not supported" in result.stderr, (command, result.stderr)
        assert "Traceback" not in result.stderr


def test_the_reaper_moves_only_what_a_dead_worker_held_and_spares_one_that_came_back(
        own_redis: RedisServer) -> None:
    """recovery.hand_back re-checks the heartbeat inside its atomic step and removes exactly
    the entries it moved (the reaper's decision may be stale by the time it acts)."""
    r = own_redis.client
    process_id = "host:1:cafe"

    held_messages = {}

    def hold(tag: str) -> None:
        """An in-flight record as the fetch script writes it, of a message whose bytes a JSON
        round trip in Lua would change (Infinity, an empty list, a big integer)."""
        _key, message = build_task_message("tests.jobs.NoopJob", tag, [{}], "faults", 0)
        data = json.loads(message)
        data["properties"]["delivery_tag"] = tag
        data["headers"].update(max_cost=float("inf"), stamped_headers=[], big=2**64 + 1)
        held_messages[tag] = message = json.dumps(data)
        r.hset(keys.unacked(process_id), tag, f'[{message},"","faults"]')
        r.zadd(keys.unacked_index(process_id), {tag: time.time()})

    hold("a")
    hold("b")
    r.sadd(keys.PROCESSES, process_id)
    r.set(keys.heartbeat(process_id), "{}", px=60_000)  # it came back: beating again
    assert hand_back(process_id, if_dead=True) == -1
    assert r.hlen(keys.unacked(process_id)) == 2 and r.llen("faults") == 0
    r.delete(keys.heartbeat(process_id))  # dead now
    assert hand_back(process_id, ["a"], if_dead=True) == 1  # only what it was asked to move
    assert r.hkeys(keys.unacked(process_id)) == [b"b"]
    assert r.sismember(keys.PROCESSES, process_id), "forgotten while it still held a job"
    hold("c")  # a fetch that landed after the reaper looked
    assert reap_dead_processes(r) == 2
    assert r.llen("faults") == 3
    assert not r.exists(keys.unacked(process_id), keys.unacked_index(process_id))
    assert not r.sismember(keys.PROCESSES, process_id)
    assert sorted(m.decode() for m in r.lrange("faults", 0, -1)) == sorted(
        held_messages.values()), "restored byte for byte"
    assert DeadSet(r).size() == 0
    assert not r.keys("jobkit:reaping:*"), "no lock is left behind"


def test_term_to_the_whole_process_group_keeps_the_heartbeat_while_jobs_finish(
        own_redis: RedisServer, tmp_path: Path) -> None:
    """Heroku sends TERM to every process of a dyno: the heartbeat must go on beating while a
    threads worker finishes a job longer than heartbeat_timeout, so nobody runs it again."""
    r = own_redis.client
    stopping = worker(own_redis, tmp_path / "stopping.log", "-P", "threads", "-c", "1")
    enqueue(MarkJob, "finishing", seconds=3 * HEARTBEAT_TIMEOUT)
    wait_for(lambda: starts(r).get("finishing"), what="the job to start")
    other = worker(own_redis, tmp_path / "other.log", "-P", "threads", "-c", "1")
    try:
        os.killpg(stopping.proc.pid, signal.SIGTERM)
        wait_for(lambda: "finishing" in done(r), timeout=3 * HEARTBEAT_TIMEOUT + 15,
                 what="the job to finish during the warm shutdown")
        stopping.proc.wait(20)
        assert starts(r) == {"finishing": 1}, "the job was started again while it ran"
        assert "stopped beating" not in other.output()
    finally:
        other.stop()
        stopping.stop()


def test_term_to_a_prefork_process_group_hands_the_job_back(own_redis: RedisServer,
                                                             tmp_path: Path) -> None:
    """The pool process dies with the TERM: its job is handed back to its queue (not counted
    as a failed run), and runs again from the start on another worker."""
    r = own_redis.client
    stopping = worker(own_redis, tmp_path / "stopping.log", "-P", "prefork", "-c", "1")
    enqueue(MarkJob, "cut-short", seconds=30)
    wait_for(lambda: starts(r).get("cut-short"), what="the job to start")
    try:
        os.killpg(stopping.proc.pid, signal.SIGTERM)
        stopping.proc.wait(30)
        assert RetrySet(r).size() == 0 and DeadSet(r).size() == 0, "counted as a failure"
        assert r.llen("faults") == 1, "not handed back to its queue"
    finally:
        stopping.stop()


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[str]:
    """A private redis-server speaking only TLS, with a self-signed certificate; yields a
    rediss:// URL (certificate checks off, as for Heroku's TLS plans)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "redis.crt", tmp_path / "redis.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-auth-clients", "no",
         "--save", "", "--dir", str(tmp_path), "--logfile", str(tmp_path / "redis.log")],
        start_new_session=True)
    url = f"rediss://127.0.0.1:{port}/0?ssl_cert_reqs=none"
    try:
        client = redis.Redis.from_url(url)
        wait_for(lambda: _answers(client), what="the TLS redis-server")
        before = current_settings()
        jobkit.configure(redis_url=url)
        try:
            yield url
        finally:
            use_settings(before)
    finally:
        stop_process(proc)


def test_rediss_urls_keep_working(tls_redis: str, tmp_path: Path) -> None:
    client = redis.Redis.from_url(tls_redis)
    proc = start_worker(tls_redis, tmp_path / "tls.log", "-q", "faults", "-c", "1", env=FAST)
    try:
        enqueue(MarkJob, "over-tls")
        wait_for(lambda: "over-tls" in done(client), what="the job to run over TLS")
        wait_for(lambda: held(client) == 0, what="its acknowledgement")
        assert client.exists(*[keys.heartbeat(i.decode())
                               for i in client.smembers(keys.PROCESSES)]), "no heartbeat"
        assert_alive(proc)
    finally:
        proc.stop()
