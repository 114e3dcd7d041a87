"""A partition of a worker host, in network namespaces (as root; skipped otherwise).

Three worker hosts and one Redis host, each a network namespace of its own, joined by a bridge
in the Redis namespace on a private /24 that exists only inside these namespaces. One real
`jobkit worker` per worker host, one private redis-server on the Redis host. The test process
talks to Redis over a unix socket (no network of the host is involved) and enqueues from inside
the Redis namespace.

A worker host is cut off by taking its bridge port down (its packets vanish), for longer than
`heartbeat_timeout`, then healed. docs/reliability.md says what may follow: the host is taken
for dead, the jobs it held are handed out again and may run twice ("No duplicates during a
partition" is not promised); nothing else runs twice, nothing is lost, and the host says in its
log that it was taken for dead. Second scenario: the same, then the host is killed with -9;
its jobs must start again elsewhere within `heartbeat_timeout` + `poll_interval`.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from jobkit import keys
from jobkit.testing_services import JOBKIT_COMMAND, stop_process
from tests.conftest import wait_for
from tests.partition_jobs import runs

ROOT = Path(__file__).resolve().parent.parent
HOSTS = ("w1", "w2", "w3")
QUEUE = "partition"
REDIS_PORT = 6390
HEARTBEAT_TIMEOUT = 3.0
POLL_INTERVAL = 0.5
PARTITION_SECONDS = 8.0  # > HEARTBEAT_TIMEOUT: the cut-off host is taken for dead
# From the kill to a restored job's start record elsewhere, on top of what the docs promise
# (back in the queue within heartbeat_timeout + poll_interval): an idle worker's wake-up,
# the job's start and its record, on a loaded 2-core machine.
START_SLACK = 1.0


class Unsupported(Exception):
    """Network namespaces, veths or a bridge cannot be made here."""


def ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if done.returncode != 0:
        raise Unsupported(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")
    return done.stdout


class Cluster:
    """The namespaces, the bridge, redis-server and one worker per worker host."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.ns = {name: f"jk-{tag}-{name}" for name in ("redis", *HOSTS)}
        net = f"10.213.{random.randint(1, 254)}"
        self.redis_ip = f"{net}.1"
        self.addr = {host: f"{net}.{i}" for i, host in enumerate(HOSTS, start=2)}
        self.port = {host: f"jkp-{host}" for host in HOSTS}  # bridge ports, in the redis ns
        self.dir = Path(tempfile.mkdtemp(prefix="jk-part-"))
        self.socket = self.dir / "redis.sock"
        self.url = f"redis://{self.redis_ip}:{REDIS_PORT}/0"
        self.made_ns: list[str] = []
        self.redis_proc: subprocess.Popen | None = None
        self.workers: dict[str, subprocess.Popen] = {}
        self.ids: dict[str, str] = {}
        self.logs = {host: self.dir / f"{host}.log" for host in HOSTS}
        self.r: redis.Redis | None = None

    # -- the network ------------------------------------------------------------------------

    def build_network(self) -> None:
        for ns in self.ns.values():
            ip("netns", "add", ns)
            self.made_ns.append(ns)
            ip("-n", ns, "link", "set", "lo", "up")
        hub = self.ns["redis"]
        ip("-n", hub, "link", "add", "br0", "type", "bridge")
        ip("-n", hub, "addr", "add", f"{self.redis_ip}/24", "dev", "br0")
        ip("-n", hub, "link", "set", "br0", "up")
        for host in HOSTS:
            port = self.port[host]
            ip("-n", hub, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns",
               self.ns[host])
            ip("-n", hub, "link", "set", port, "master", "br0")
            ip("-n", hub, "link", "set", port, "up")
            ip("-n", self.ns[host], "addr", "add", f"{self.addr[host]}/24", "dev", "eth0")
            ip("-n", self.ns[host], "link", "set", "eth0", "up")

    def cut(self, host: str) -> None:
        """Partition `host`: its bridge port goes down, so its packets go nowhere."""
        ip("-n", self.ns["redis"], "link", "set", self.port[host], "down")

    def heal(self, host: str) -> None:
        ip("-n", self.ns["redis"], "link", "set", self.port[host], "up")

    # -- the services -----------------------------------------------------------------------

    def env(self, **extra: str) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items()
                if not k.startswith("JOBKIT_") and k not in ("APP_ENV", "REDIS_URL")}
        return {**base, "REDIS_URL": self.url, "JOBKIT_ENV": "development",
                "JOBKIT_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
                "JOBKIT_POLL_INTERVAL": str(POLL_INTERVAL), "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                            os.environ.get("PYTHONPATH")])),
                **extra}

    def start_redis(self) -> None:
        binary = shutil.which("redis-server")
        self.redis_proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns["redis"], binary, "--port", str(REDIS_PORT),
             "--bind", self.redis_ip, "--protected-mode", "no", "--unixsocket",
             str(self.socket), "--unixsocketperm", "700", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir), "--logfile", str(self.dir / "redis.log")],
            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.r = redis.Redis(unix_socket_path=str(self.socket), decode_responses=True,
                             socket_timeout=10)
        wait_for(self._pings, timeout=15, what="redis-server in its namespace")

    def _pings(self) -> bool:
        try:
            return bool(self.r.ping())
        except (redis.ConnectionError, FileNotFoundError):
            return False

    def ensure_workers(self) -> None:
        """Start a worker on every host that has none running (all at once), wait until each
        is ready and beating, and learn its process id."""
        starting = [h for h in HOSTS if h not in self.workers or
                    self.workers[h].poll() is not None]
        for host in starting:
            with self.logs[host].open("ab") as out:
                self.workers[host] = subprocess.Popen(
                    ["ip", "netns", "exec", self.ns[host], *JOBKIT_COMMAND, "worker", "-l", "INFO",
                     "-n", f"{host}@partition", "-c", "2", "-q", QUEUE, "--without-gossip",
                     "--without-mingle"],
                    cwd=ROOT, env=self.env(JK_PARTITION_HOST=host), stdout=out,
                    stderr=subprocess.STDOUT, start_new_session=True)
        for host in starting:
            proc = self.workers[host]
            wait_for(lambda proc=proc, host=host: proc.poll() is not None
                     or self.log(host).count(" ready.") > 0 and self._beating(host),
                     timeout=60, what=f"worker {host} to be ready and beating")
            assert proc.poll() is None, f"worker {host} exited:\n{self.log(host)[-3000:]}"

    def _beating(self, host: str) -> bool:
        """True once `host`'s worker has a heartbeat; remembers its process id."""
        pid = self.workers[host].pid  # `ip netns exec` execs the worker: same pid
        for key in self.r.scan_iter(keys.heartbeat("*")):
            value = self.r.get(key)
            if value and json.loads(value).get("pid") == pid:
                self.ids[host] = json.loads(value)["id"]
                return True
        return False

    def log(self, host: str) -> str:
        return self.logs[host].read_text(errors="replace")

    def log_tails(self, size: int = 6000) -> str:
        """The end of each worker's log, without the lines of every task received and done."""
        tails = []
        for host in HOSTS:
            if self.logs[host].exists():
                lines = [line for line in self.log(host).splitlines()
                         if "Task tests.partition_jobs" not in line]
                tails.append(f"===== worker {host} log (tail) =====\n"
                             + "\n".join(lines)[-size:])
        return "\n".join(tails)

    def kill(self, host: str) -> None:
        """kill -9 the whole worker (main process, pool, heartbeat process)."""
        proc = self.workers[host]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def enqueue(self, prefix: str, jobs: list[list]) -> None:
        """perform_all_later of PartitionJob(prefix, *args) for each args, from a producer on
        the Redis host (the test process has no route to the namespaces' network)."""
        script = ("import json, sys\nimport jobkit\n"
                  "from tests.partition_jobs import PartitionJob\n"
                  "jobkit.perform_all_later([PartitionJob(sys.argv[1], *args).set(queue="
                  f"{QUEUE!r}) for args in json.loads(sys.argv[2])])\n")
        done = subprocess.run(
            ["ip", "netns", "exec", self.ns["redis"], sys.executable, "-c", script, prefix,
             json.dumps(jobs)], cwd=ROOT, env=self.env(), capture_output=True, text=True,
            timeout=60)
        assert done.returncode == 0, f"enqueue failed:\n{done.stdout}\n{done.stderr}"

    # -- what Redis says ---------------------------------------------------------------------

    def held(self, host: str) -> set[str]:
        """Job keys in `host`'s in-flight hash (what its worker fetched and not acknowledged)."""
        return {job_key(record) for record in
                self.r.hvals(keys.unacked(self.ids[host]))}

    def queued(self) -> int:
        return sum(self.r.llen(key) for key in keys.list_keys(QUEUE))

    def in_flight(self) -> dict[str, int]:
        found = {key: self.r.hlen(key) for key in self.r.scan_iter("jobkit:unacked:*")}
        return {key: n for key, n in found.items() if n}

    # -- the end -----------------------------------------------------------------------------

    def teardown(self) -> None:
        for proc in [*self.workers.values(), self.redis_proc]:
            if proc is not None:
                with contextlib.suppress(Exception):
                    stop_process(proc, grace=2)
        for ns in self.made_ns:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)
        shutil.rmtree(self.dir, ignore_errors=True)


def job_key(record: str) -> str:
    """The job key (second argument) of an in-flight record: [message, exchange, queue]."""
    message = json.loads(record)[0]
    body = json.loads(base64.b64decode(message["body"]))
    return body[0][0]["args"][1]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("ip") is None:
        pytest.skip("no `ip` (iproute2) on PATH")
    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server on PATH")
    made = Cluster()
    try:
        try:
            made.build_network()
        except Unsupported as exc:
            pytest.skip(f"cannot build network namespaces, veths and a bridge here: {exc}")
        made.start_redis()
        made.ensure_workers()
        yield made
    finally:
        made.teardown()


class Ledger:
    """What the jobs of one scenario recorded (prefix), read from Redis."""

    def __init__(self, cluster: Cluster, prefix: str, keys_: list[str]) -> None:
        self.r, self.prefix, self.keys = cluster.r, prefix, keys_

    def started(self, key: str) -> list[dict]:
        return runs(self.r, self.prefix, "started", key)

    def finished(self, key: str) -> list[dict]:
        return runs(self.r, self.prefix, "finished", key)

    def running_on(self, host: str) -> set[str]:
        """Keys with a run on `host` that started and has not finished."""
        out = set()
        for key in self.r.smembers(f"{self.prefix}:started"):
            ended = {run["run"] for run in self.finished(key)}
            if any(run["host"] == host and run["run"] not in ended
                   for run in self.started(key)):
                out.add(key)
        return out

    def all_finished(self) -> bool:
        return self.r.scard(f"{self.prefix}:finished") == len(self.keys)

    def starts(self) -> dict[str, int]:
        return {key: len(self.started(key)) for key in self.keys}

    def twice(self) -> dict[str, list[dict]]:
        """Jobs that started more than once, with their runs."""
        return {key: self.started(key) for key, n in self.starts().items() if n > 1}


def quiet(cluster: Cluster) -> bool:
    return cluster.queued() == 0 and not cluster.in_flight()


def check_end_state(cluster: Cluster, ledger: Ledger, alive: tuple[str, ...]) -> None:
    wait_for(ledger.all_finished, timeout=60,
             what=f"every {ledger.prefix} job to finish at least once")
    wait_for(lambda: quiet(cluster), timeout=20,
             what="empty queues and in-flight hashes (every message acknowledged)")
    assert cluster.r.zcard(keys.DEAD) == 0, cluster.r.zrange(keys.DEAD, 0, -1)
    assert cluster.r.zcard(keys.RETRY) == 0, cluster.r.zrange(keys.RETRY, 0, -1)
    for host in alive:
        assert cluster.workers[host].poll() is None, f"worker {host} exited"
    for host in HOSTS:
        assert "Unrecoverable error" not in cluster.log(host), host


def partition(cluster: Cluster, ledger: Ledger, victim: str) -> set[str]:
    """Cut `victim` off while it runs jobs, until it is taken for dead and its jobs handed
    out (and at least PARTITION_SECONDS), then heal; returns the jobs it held at the cut."""
    wait_for(lambda: len(ledger.running_on(victim)) >= 2, timeout=30,
             what=f"{victim} to be running two jobs")
    victim_id = cluster.ids[victim]
    offset = len(cluster.log(victim))
    cluster.cut(victim)
    cut_at = time.monotonic()
    held = cluster.held(victim)  # frozen: the victim cannot reach Redis any more
    assert held, f"{victim} held nothing at the cut: no test"
    try:
        wait_for(lambda: not cluster.r.exists(keys.unacked(victim_id))
                 and time.monotonic() - cut_at >= PARTITION_SECONDS, timeout=30,
                 what=f"the jobs of {victim} to be handed out while it is cut off")
    finally:
        cluster.heal(victim)
    wait_for(lambda: cluster.r.exists(keys.heartbeat(victim_id)), timeout=20,
             what=f"{victim} to beat again")
    check_taken_for_dead(cluster, victim, offset)
    reapers = [h for h in HOSTS if h != victim and
               f"process {victim_id} stopped beating" in cluster.log(h)]
    assert reapers, f"no other worker logged that it put back the jobs of {victim}"
    return held


def check_taken_for_dead(cluster: Cluster, victim: str, offset: int) -> None:
    """Back from the partition, the victim says in its log that it was taken for dead
    (heartbeat.py counts a silence longer than heartbeat_timeout, since a beat sent into the
    partition can reach Redis after the heal and write the heartbeat again)."""
    wait_for(lambda: "was taken for dead" in cluster.log(victim)[offset:], timeout=10,
             what=f"{victim} to log that it was taken for dead")


def check_duplicates(ledger: Ledger, victim: str, held: set[str]) -> dict[str, list[dict]]:
    """Only jobs the victim held may have run twice, and each such job ran on the victim."""
    twice = ledger.twice()
    assert set(twice) <= held, (
        f"jobs started twice that {victim} did not hold when it was cut off: "
        f"{ {k: v for k, v in twice.items() if k not in held} }")
    for key, started in twice.items():
        assert any(run["host"] == victim for run in started), (key, started)
    return twice


def test_partition_longer_than_heartbeat_timeout(cluster: Cluster) -> None:
    cluster.ensure_workers()
    victim = "w1"
    prefix = f"s1-{uuid.uuid4().hex[:6]}"
    job_keys = [f"j{i:02d}" for i in range(24)]
    ledger = Ledger(cluster, prefix, job_keys)
    try:
        cluster.enqueue(prefix, [[key, 2.5] for key in job_keys])
        held = partition(cluster, ledger, victim)
        check_end_state(cluster, ledger, alive=HOSTS)
        twice = check_duplicates(ledger, victim, held)
        print(f"{victim} held {sorted(held)} at the cut; started twice: {sorted(twice)}; "
              f"starts per host: {hosts_of(ledger)}")
    except BaseException:
        print(cluster.log_tails())
        raise


def test_partition_then_kill_9(cluster: Cluster) -> None:
    cluster.ensure_workers()
    victim = "w2"
    others = tuple(h for h in HOSTS if h != victim)
    prefix = f"s2-{uuid.uuid4().hex[:6]}"
    first = [f"a{i:02d}" for i in range(12)]
    try:
        cluster.enqueue(prefix, [[key, 2.5] for key in first])
        ledger = Ledger(cluster, prefix, first)
        held_at_cut = partition(cluster, ledger, victim)
        wait_for(ledger.all_finished, timeout=60, what="the first batch to finish")

        # Now jobs that are long only on the victim: the others run theirs and go idle, the
        # victim holds its own when it is killed. Batches until the victim takes some (it may
        # still be reconnecting after the heal).
        killed_jobs: set[str] = set()
        batch = 0
        while not killed_jobs:
            assert batch < 4, "the victim took no job after the partition"
            new = [f"b{batch}-{i:02d}" for i in range(10)]
            ledger.keys += new
            cluster.enqueue(prefix, [[key, 0.3, victim, 60.0] for key in new])
            batch += 1

            def settled(new: list[str] = new) -> bool:
                if cluster.queued():
                    return False
                held = cluster.held(victim)
                return all(k in held or ledger.finished(k) for k in new)

            wait_for(settled, timeout=30,
                     what="every job of the batch finished, or held by the victim")
            killed_jobs = ledger.running_on(victim) & set(new)
        assert cluster.workers[victim].poll() is None, f"{victim} exited before the kill"
        assert "Unrecoverable error" not in cluster.log(victim)
        held_at_kill = cluster.held(victim)
        cluster.kill(victim)
        killed_at = time.time()
        held_at_kill |= cluster.held(victim)  # a fetch answered just before the kill
        assert killed_jobs <= held_at_kill, (killed_jobs, held_at_kill)

        def restarted() -> dict[str, float] | None:
            delays = {}
            for key in held_at_kill:
                later = [run["started_at"] - killed_at for run in ledger.started(key)
                         if run["host"] != victim and run["started_at"] > killed_at]
                if not later:
                    return None
                delays[key] = min(later)
            return delays

        delays = wait_for(restarted, timeout=30,
                          what=f"the jobs {victim} held at the kill to start elsewhere")
        limit = HEARTBEAT_TIMEOUT + POLL_INTERVAL
        assert max(delays.values()) <= limit + START_SLACK, (
            f"killed worker's jobs started again after {delays} s; docs: back within "
            f"heartbeat_timeout + poll_interval = {limit} s")
        check_end_state(cluster, ledger, alive=others)
        assert not cluster.r.sismember(keys.PROCESSES, cluster.ids[victim])
        twice = check_duplicates(ledger, victim, held_at_cut | held_at_kill)
        print(f"{victim} held {sorted(held_at_cut)} at the cut, {sorted(held_at_kill)} at the "
              f"kill; restarted after {delays} s; started twice: {sorted(twice)}; starts per "
              f"host: {hosts_of(ledger)}")
    except BaseException:
        print(cluster.log_tails())
        raise


def hosts_of(ledger: Ledger) -> dict[str, int]:
    count: dict[str, int] = {}
    for key in ledger.keys:
        for run in ledger.started(key):
            count[run["host"]] = count.get(run["host"], 0) + 1
    return count
