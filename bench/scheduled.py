"""Delayed jobs: worker memory while they wait (jobkit vs raw Celery ETA), and the poller's rate.

Run from the repository root: ``.venv/bin/python bench/scheduled.py [--n 100000]``.

Everything runs against one private ``redis-server`` (bench/harness.py: free port, never 6379,
``--save '' --appendonly no``, temporary directory, stopped by PID at the end, on error and on
Ctrl-C). The DB is flushed before every phase.

1. **Worker memory** (BASELINES.md, "Celery ETA memory"). Start a worker (prefork ``-c 2``,
   WARNING logs, no gossip/mingle/heartbeat; raw Celery with jobkit's settings: acks late,
   prefetch multiplier 1), wait until it blocks on Redis waiting for work and its main process's
   RSS (``VmRSS`` in ``/proc/<pid>/status``) is steady, and read it. Then enqueue N jobs due in
   an hour and wait until all are parked, wait 3 s more, and read RSS again.

   * jobkit: ``perform_all_later([NoopJob().set(wait=3600) ...])`` in chunks of 1,000; parked
     = ``ZCARD jobkit:schedule == N``.
   * raw Celery: ``noop.apply_async(countdown=3600)`` one by one; parked = the worker pulled
     every message into its memory (``LLEN default == 0``). This has a time limit
     (``--raw-timeout``); if it is reached, the row says how many jobs got there.

2. **Poller move rate**. With no worker running, park N jobs all due at the same moment
   (``NoopJob().set(wait_until=T)``), then time ``ScheduledSet().move_due(now=T)``: once from one
   client, and once (after parking N again) from 4 racing threads, each with its own Redis
   client, released together by a barrier. Afterwards the queue's list must hold exactly the N
   messages that were parked, each once, and the set must be empty (OK / FAIL).

The exit status is 0 unless the benchmark itself crashes (this is a report, not a test).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import redis

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    CELERY_WORKER,
    JOBKIT_WORKER,
    QUEUE,
    UNACKED,
    load_jobs,
    private_redis,
    run_main,
    start_worker,
    stop_process,
    tail,
)

DEFAULT_N = 100_000
CHUNK = 1_000  # jobs per perform_all_later call
DELAY_SECONDS = 3600
SETTLE_SECONDS = 3.0  # after the last job is parked, before reading RSS again
RAW_TIMEOUT_SECONDS = 180.0  # raw Celery: enqueue + every message pulled into the worker
JOBKIT_TIMEOUT_SECONDS = 60.0  # jobkit parks synchronously: ZCARD is N once enqueued
IDLE_TIMEOUT_SECONDS = 60.0  # worker start-up until it blocks waiting for work
RACERS = 4
PAGE = 10_000  # messages read per LRANGE / ZRANGE when verifying
MIB = 1024  # KiB per MiB


# -- worker memory ----------------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    """VmRSS of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for PID {pid}")


def wait_until_idle(r: redis.Redis, worker: subprocess.Popen, log: Path) -> None:
    """Until some client (the worker's consumer) is blocked on Redis waiting for work."""
    deadline = time.monotonic() + IDLE_TIMEOUT_SECONDS
    while not any("b" in c["flags"] for c in r.client_list()):
        if worker.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"worker not waiting for work (exit {worker.returncode}):\n"
                               f"{tail(log)}")
        time.sleep(0.1)


def steady_rss_kib(pid: int, window: int = 8, tolerance: int = 128, limit: int = 60) -> int:
    """RSS once `window` samples 0.25 s apart stay within `tolerance` KiB (at most `limit`)."""
    samples = [rss_kib(pid)]
    while len(samples) < limit:
        time.sleep(0.25)
        samples.append(rss_kib(pid))
        recent = samples[-window:]
        if len(recent) == window and max(recent) - min(recent) <= tolerance:
            break
    return samples[-1]


@dataclass
class Side:
    """One side of the memory measurement: its worker, how it enqueues, what 'parked' means."""

    name: str
    argv: list[str]
    enqueue: Callable[[int, float], int]  # (n, deadline) -> jobs sent
    parked: Callable[[redis.Redis, int], int]  # (client, jobs sent) -> jobs parked so far
    timeout: float


@dataclass
class Memory:
    side: str
    n: int
    sent: int
    parked: int
    before_kib: int
    after_kib: int
    enqueue_seconds: float
    park_seconds: float
    redis_delta_bytes: int

    @property
    def delta_kib(self) -> int:
        return self.after_kib - self.before_kib

    @property
    def per_job_kib(self) -> float:
        return self.delta_kib / self.parked if self.parked else float("nan")

    @property
    def complete(self) -> bool:
        return self.parked == self.n


def jobkit_side(jobs: ModuleType) -> Side:
    from jobkit import perform_all_later
    from jobkit.job_sets import ScheduledSet

    def enqueue(n: int, deadline: float) -> int:
        for sent in range(0, n, CHUNK):
            perform_all_later([jobs.NoopJob().set(wait=DELAY_SECONDS)
                               for _ in range(min(CHUNK, n - sent))])
        return n

    return Side("jobkit", JOBKIT_WORKER, enqueue, lambda r, sent: ScheduledSet(r).size(),
                timeout=JOBKIT_TIMEOUT_SECONDS)


def raw_side(jobs: ModuleType, timeout: float) -> Side:
    def enqueue(n: int, deadline: float) -> int:
        for sent in range(n):
            if sent % CHUNK == 0 and time.monotonic() > deadline:
                return sent
            jobs.noop.apply_async(countdown=DELAY_SECONDS)
        return n

    return Side("raw Celery ETA", CELERY_WORKER, enqueue, lambda r, sent: sent - r.llen(QUEUE),
                timeout=timeout)


def wait_parked(r: redis.Redis, side: Side, n: int, sent: int, deadline: float) -> int:
    """Jobs parked once all `n` are, or when `deadline` passes (monotonic time)."""
    while True:
        parked = side.parked(r, sent)
        if parked >= n or time.monotonic() > deadline:
            return parked
        time.sleep(0.05)


def measure_memory(r: redis.Redis, url: str, side: Side, n: int, workdir: Path) -> Memory:
    """Worker main-process RSS idle, then with `n` jobs parked an hour ahead (+3 s)."""
    r.flushdb()
    log = workdir / f"{side.name.split()[0]}-worker.log"
    worker = start_worker(side.argv, url, log)
    try:
        wait_until_idle(r, worker, log)
        before, redis_before = steady_rss_kib(worker.pid), r.info("memory")["used_memory"]
        start = time.monotonic()
        sent = side.enqueue(n, start + side.timeout)
        enqueue_seconds = time.monotonic() - start
        parked = wait_parked(r, side, n, sent, start + side.timeout)
        park_seconds = time.monotonic() - start
        time.sleep(SETTLE_SECONDS)
        after = rss_kib(worker.pid)
        redis_delta = r.info("memory")["used_memory"] - redis_before
        unacked = r.hlen(UNACKED)
    finally:
        stop_process(worker, grace=10.0)
    print(f"  {side.name}: {sent:,} sent in {enqueue_seconds:.1f} s, {parked:,}/{n:,} parked "
          f"after {park_seconds:.1f} s, RSS "
          f"{before / MIB:.1f} -> {after / MIB:.1f} MiB; kombu unacked hash: {unacked:,}",
          flush=True)
    return Memory(side.name, n, sent, parked, before, after, enqueue_seconds, park_seconds,
                  redis_delta)


# -- poller move rate -------------------------------------------------------------------------


def digest(message: str | bytes) -> bytes:
    data = message.encode() if isinstance(message, str) else message
    return hashlib.blake2b(data, digest_size=16).digest()


def park_due(jobs: ModuleType, n: int, due: float) -> set[bytes]:
    """Park `n` jobs due at `due`; returns the digests of the messages parked."""
    from jobkit import perform_all_later
    from jobkit.job_sets import ScheduledSet

    for sent in range(0, n, CHUNK):
        perform_all_later([jobs.NoopJob().set(wait_until=due)
                           for _ in range(min(CHUNK, n - sent))])
    key = ScheduledSet().key
    r = ScheduledSet().client
    return {digest(json.loads(member)["message"])
            for start in range(0, n, PAGE) for member in r.zrange(key, start, start + PAGE - 1)}


def queued_digests(r: redis.Redis) -> tuple[int, set[bytes]]:
    """(LLEN, distinct message digests) of the queue's list."""
    length = r.llen(QUEUE)
    seen = {digest(m) for start in range(0, length, PAGE)
            for m in r.lrange(QUEUE, start, start + PAGE - 1)}
    return length, seen


@dataclass
class Move:
    label: str
    n: int
    seconds: float
    moved: list[int]
    verdict: str

    @property
    def rate(self) -> float:
        return self.n / self.seconds


def verify(r: redis.Redis, n: int, parked: set[bytes], moved: list[int]) -> str:
    from jobkit.job_sets import ScheduledSet

    length, seen = queued_digests(r)
    left = ScheduledSet(r).size()
    ok = length == n == len(seen) == sum(moved) and seen == parked and left == 0
    return (f"{'OK' if ok else 'FAIL'} ({length:,} in list, {len(seen):,} distinct, "
            f"{'same as' if seen == parked else 'DIFFERENT from'} the {len(parked):,} parked; "
            f"{left:,} left in set)")


def move_single(url: str, due: float) -> tuple[float, list[int]]:
    from jobkit.job_sets import ScheduledSet

    job_set = ScheduledSet(redis.Redis.from_url(url))
    start = time.perf_counter()
    moved = job_set.move_due(now=due)
    return time.perf_counter() - start, [moved]


def move_racing(url: str, due: float, racers: int = RACERS) -> tuple[float, list[int]]:
    """`racers` threads, each its own client, released together; (seconds, moved per thread)."""
    from jobkit.job_sets import ScheduledSet

    sets = [ScheduledSet(redis.Redis.from_url(url)) for _ in range(racers)]
    moved = [0] * racers
    barrier = threading.Barrier(racers + 1)

    def race(i: int) -> None:
        barrier.wait()
        moved[i] = sets[i].move_due(now=due)

    threads = [threading.Thread(target=race, args=(i,), daemon=True) for i in range(racers)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start, moved


def measure_move(r: redis.Redis, url: str, jobs: ModuleType, n: int, label: str,
                 mover: Callable[[str, float], tuple[float, list[int]]]) -> Move:
    r.flushdb()
    due = float(int(time.time()) + DELAY_SECONDS)  # whole seconds: every score is exactly `due`
    parked = park_due(jobs, n, due)
    seconds, moved = mover(url, due)
    result = Move(label, n, seconds, moved, verify(r, n, parked, moved))
    print(f"  {label}: {n:,} in {seconds:.2f} s = {result.rate:,.0f} jobs/s; moved per poller "
          f"{'/'.join(f'{m:,}' for m in moved)}; {result.verdict}", flush=True)
    return result


# -- the report -------------------------------------------------------------------------------


def _mib(kib: float) -> str:
    return f"{kib / MIB:,.1f}"


def print_memory_table(rows: list[Memory]) -> None:
    print(f"{'worker memory, jobs due in 1 h':<32}" + "".join(f"{m.side:>18}" for m in rows))
    lines = [
        ("jobs parked / N", lambda m: f"{m.parked:,}/{m.n:,}"),
        ("enqueue time (s)", lambda m: f"{m.enqueue_seconds:,.1f}"),
        ("time until all parked (s)", lambda m: f"{m.park_seconds:,.1f}"),
        ("main RSS before (MiB)", lambda m: _mib(m.before_kib)),
        ("main RSS after (MiB)", lambda m: _mib(m.after_kib)),
        ("main RSS delta (MiB)", lambda m: _mib(m.delta_kib)),
        ("per parked job (KiB)", lambda m: f"{m.per_job_kib:,.2f}"),
        ("Redis used_memory delta (MiB)", lambda m: _mib(m.redis_delta_bytes / 1024)),
        ("complete", lambda m: "yes" if m.complete else "NO: time limit"),
    ]
    for label, cell in lines:
        print(f"{label:<32}" + "".join(f"{cell(m):>18}" for m in rows))


def print_move_table(rows: list[Move]) -> None:
    print(f"\n{'poller move_due, all due at once':<32}{'jobs':>10}{'seconds':>10}{'jobs/s':>12}"
          f"  check")
    for m in rows:
        print(f"{m.label:<32}{m.n:>10,}{m.seconds:>10.2f}{m.rate:>12,.0f}  "
              f"{m.verdict.split()[0]}")


def print_context(url: str, r: redis.Redis, args: argparse.Namespace) -> None:
    import celery
    import kombu

    from jobkit.job_sets import PAGE_SIZE

    server = r.info("server")
    print(f"delayed jobs, jobkit vs raw Celery: Python {sys.version.split()[0]}, celery "
          f"{celery.__version__}, kombu {kombu.__version__}, redis-py {redis.__version__}, "
          f"{os.cpu_count()} CPUs")
    print(f"private redis-server {server['redis_version']} at {url}; N={args.n:,} (raw Celery "
          f"N={args.raw_n:,}, time limit {args.raw_timeout:.0f} s); move_due batch {PAGE_SIZE}\n")


# -- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=DEFAULT_N, help="delayed jobs per measurement")
    parser.add_argument("--raw-n", type=int, help="raw Celery ETA jobs (default: --n)")
    parser.add_argument("--raw-timeout", type=float, default=RAW_TIMEOUT_SECONDS,
                        help="seconds for raw Celery to enqueue and pull every ETA job")
    args = parser.parse_args(argv)
    args.raw_n = args.raw_n or args.n
    if args.n < 1 or args.raw_n < 1 or args.raw_timeout <= 0:
        parser.error("--n and --raw-n must be at least 1, --raw-timeout above 0")
    return args


def benchmark(url: str, args: argparse.Namespace, workdir: Path) -> None:
    jobs = load_jobs(url)
    r = redis.Redis.from_url(url)
    print_context(url, r, args)
    print("1. worker memory", flush=True)
    memory = [measure_memory(r, url, jobkit_side(jobs), args.n, workdir),
              measure_memory(r, url, raw_side(jobs, args.raw_timeout), args.raw_n, workdir)]
    print("2. poller move rate", flush=True)
    moves = [measure_move(r, url, jobs, args.n, "1 poller", move_single),
             measure_move(r, url, jobs, args.n, f"{RACERS} racing pollers", move_racing)]
    print()
    print_memory_table(memory)
    print_move_table(moves)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body(workdir: Path) -> None:
        with private_redis(workdir) as url:
            benchmark(url, args, workdir)

    return run_main(body, prefix="jobkit-bench-scheduled-")


if __name__ == "__main__":
    sys.exit(main())
