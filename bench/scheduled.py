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
     (``--raw-timeout``, default 180 s for enqueue + pull); if it is reached, enqueueing stops
     and the figures are for the jobs the worker had pulled when RSS was read (the largest N
     that fit), which the output says.

2. **Poller move rate**. With no worker running, park N jobs all due at the same moment T
   (``NoopJob().set(wait_until=T)``, T in whole seconds so every score is exactly T) and keep a
   snapshot of the set. Each trial restores the snapshot (FLUSHDB + ZADD) and times
   ``ScheduledSet().move_due(now=T)``: from one client, or from 4 racing threads, each with its
   own Redis client, released together by a barrier. ``--repeat`` trials of each (interleaved);
   the table gives the median and min-max. After every trial the queue's list must hold exactly
   the N parked messages, each once, and the set must be empty (OK / FAIL).

The exit status is 0 unless the benchmark itself crashes (this is a report, not a test).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
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
            if sent % 100 == 0 and time.monotonic() > deadline:
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
        wait_parked(r, side, n, sent, start + side.timeout)
        park_seconds = time.monotonic() - start
        time.sleep(SETTLE_SECONDS)
        after, parked = rss_kib(worker.pid), side.parked(r, sent)  # both as of now
        redis_delta = r.info("memory")["used_memory"] - redis_before
        unacked = r.hlen(UNACKED)
    finally:
        stop_process(worker, grace=10.0)
    result = Memory(side.name, n, sent, parked, before, after, enqueue_seconds, park_seconds,
                    redis_delta)
    print(f"  {side.name}: {sent:,} sent in {enqueue_seconds:.1f} s, {parked:,}/{n:,} parked "
          f"after {park_seconds:.1f} s (+{SETTLE_SECONDS:g} s), RSS {_mib(before)} -> "
          f"{_mib(after)} MiB = {result.per_job_kib:.2f} KiB/job; kombu unacked hash: "
          f"{unacked:,}", flush=True)
    return result


# -- poller move rate -------------------------------------------------------------------------


def digest(message: str | bytes) -> bytes:
    data = message.encode() if isinstance(message, str) else message
    return hashlib.blake2b(data, digest_size=16).digest()


@dataclass
class Parked:
    """A snapshot of the scheduled set, to put back before every trial."""

    due: float
    members: list[bytes]
    messages: set[bytes]  # digests of the messages the queue must end up holding


def park_due(r: redis.Redis, jobs: ModuleType, n: int) -> Parked:
    """Park `n` jobs all due at one moment (whole seconds: every score is exactly `due`)."""
    from jobkit import perform_all_later
    from jobkit.job_sets import ScheduledSet

    r.flushdb()
    due = float(int(time.time()) + DELAY_SECONDS)
    for sent in range(0, n, CHUNK):
        perform_all_later([jobs.NoopJob().set(wait_until=due)
                           for _ in range(min(CHUNK, n - sent))])
    key = ScheduledSet(r).key
    members = [m for start in range(0, n, PAGE) for m in r.zrange(key, start, start + PAGE - 1)]
    return Parked(due, members, {digest(json.loads(m)["message"]) for m in members})


def restore(r: redis.Redis, parked: Parked) -> None:
    """An empty DB holding exactly the parked snapshot."""
    from jobkit.job_sets import ScheduledSet

    key = ScheduledSet(r).key
    r.flushdb()
    with r.pipeline(transaction=False) as pipe:
        for start in range(0, len(parked.members), CHUNK):
            pipe.zadd(key, dict.fromkeys(parked.members[start:start + CHUNK], parked.due))
        pipe.execute()


def queued_digests(r: redis.Redis) -> tuple[int, set[bytes]]:
    """(LLEN, distinct message digests) of the queue's list."""
    length = r.llen(QUEUE)
    seen = {digest(m) for start in range(0, length, PAGE)
            for m in r.lrange(QUEUE, start, start + PAGE - 1)}
    return length, seen


def verify(r: redis.Redis, parked: Parked, moved: list[int]) -> str:
    """OK when the queue holds each parked message exactly once and the set is empty."""
    from jobkit.job_sets import ScheduledSet

    n = len(parked.members)
    length, seen = queued_digests(r)
    left = ScheduledSet(r).size()
    same = seen == parked.messages
    ok = length == n == len(seen) == sum(moved) and same and left == 0
    return (f"{'OK' if ok else 'FAIL'} ({length:,} in list, {len(seen):,} distinct, "
            f"{'same as' if same else 'DIFFERENT from'} the {n:,} parked; {left:,} left in set)")


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


Mover = Callable[[str, float], tuple[float, list[int]]]


@dataclass
class Move:
    label: str
    mover: Mover
    n: int
    seconds: list[float] = field(default_factory=list)
    verdicts: list[str] = field(default_factory=list)

    def rates(self) -> list[float]:
        return [self.n / s for s in self.seconds]

    @property
    def ok(self) -> bool:
        return all(v.startswith("OK") for v in self.verdicts)


def trial(r: redis.Redis, url: str, parked: Parked, move: Move) -> None:
    """Put the snapshot back, move it all once, check the queue."""
    restore(r, parked)
    seconds, moved = move.mover(url, parked.due)
    move.seconds.append(seconds)
    move.verdicts.append(verify(r, parked, moved))
    print(f"  {move.label}: {move.n:,} in {seconds:.2f} s = {move.n / seconds:,.0f} jobs/s; "
          f"moved per poller {'/'.join(f'{m:,}' for m in moved)}; {move.verdicts[-1]}",
          flush=True)


def measure_moves(r: redis.Redis, url: str, jobs: ModuleType, n: int, repeat: int
                  ) -> list[Move]:
    """`repeat` trials of each mover, interleaved, on the same parked snapshot."""
    parked = park_due(r, jobs, n)
    moves = [Move("1 poller", move_single, n), Move(f"{RACERS} racing pollers", move_racing, n)]
    for i in range(repeat):
        for move in moves if i % 2 == 0 else moves[::-1]:
            trial(r, url, parked, move)
    return moves


# -- the report -------------------------------------------------------------------------------


def _mib(kib: float) -> str:
    return f"{kib / MIB:,.1f}"


def print_memory_table(rows: list[Memory]) -> None:
    print(f"{'worker memory, jobs due in 1 h':<32}" + "".join(f"{m.side:>18}" for m in rows))
    lines = [
        ("jobs parked / N", lambda m: f"{m.parked:,}/{m.n:,}"),
        ("enqueue time (s)", lambda m: f"{m.enqueue_seconds:,.1f}"),
        ("time until parked (s)", lambda m: f"{m.park_seconds:,.1f}"),
        ("main RSS before (MiB)", lambda m: _mib(m.before_kib)),
        ("main RSS after (MiB)", lambda m: _mib(m.after_kib)),
        ("main RSS delta (MiB)", lambda m: _mib(m.delta_kib)),
        ("per parked job (KiB)", lambda m: f"{m.per_job_kib:,.2f}"),
        ("Redis used_memory delta (MiB)", lambda m: _mib(m.redis_delta_bytes / 1024)),
        ("complete", lambda m: "yes" if m.complete else "NO: time limit"),
    ]
    for label, cell in lines:
        print(f"{label:<32}" + "".join(f"{cell(m):>18}" for m in rows))
    for m in rows:
        if not m.complete:
            print(f"NOTE: {m.side} did not park N={m.n:,} within its time limit; its figures "
                  f"are for the {m.parked:,} it reached (the largest N that fit). Use "
                  "--raw-timeout or --raw-n to change this.")


def print_move_table(rows: list[Move]) -> None:
    print(f"\n{'poller move_due, all due at once':<32}{'jobs':>10}{'jobs/s median [min-max]':>28}"
          f"  check")
    for m in rows:
        rates = m.rates()
        spread = f"{statistics.median(rates):,.0f} [{min(rates):,.0f}-{max(rates):,.0f}]"
        print(f"{m.label:<32}{m.n:>10,}{spread:>28}  "
              f"{'OK' if m.ok else 'FAIL'} ({len(m.verdicts)} trials)")


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
    parser.add_argument("--repeat", type=int, default=3, help="trials of each poller run")
    parser.add_argument("--raw-timeout", type=float, default=RAW_TIMEOUT_SECONDS,
                        help="seconds for raw Celery to enqueue and pull every ETA job")
    args = parser.parse_args(argv)
    args.raw_n = args.raw_n or args.n
    if min(args.n, args.raw_n, args.repeat) < 1 or args.raw_timeout <= 0:
        parser.error("--n, --raw-n and --repeat must be at least 1, --raw-timeout above 0")
    return args


def benchmark(url: str, args: argparse.Namespace, workdir: Path) -> None:
    jobs = load_jobs(url)
    r = redis.Redis.from_url(url)
    print_context(url, r, args)
    print("1. worker memory", flush=True)
    memory = [measure_memory(r, url, jobkit_side(jobs), args.n, workdir),
              measure_memory(r, url, raw_side(jobs, args.raw_timeout), args.raw_n, workdir)]
    print("2. poller move rate", flush=True)
    moves = measure_moves(r, url, jobs, args.n, args.repeat)
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
