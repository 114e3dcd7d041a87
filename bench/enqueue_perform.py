"""jobkit vs raw Celery on no-op jobs: enqueue rate, bulk enqueue rate and processing rate.

Run from the repository root: ``.venv/bin/python bench/enqueue_perform.py [--quick]``.

Everything runs against a private ``redis-server`` started here on a free port
(``--save '' --appendonly no``, temporary directory; port 6379 is never used) and stopped by its
PID at the end, also on an error or Ctrl-C. Method as in BASELINES.md:

* **single enqueue**: one process, one connection. After one warm-up call, time N sequential
  ``NoopJob.perform_later()`` (jobkit, celery adapter) and N sequential ``noop.apply_async()``
  (a plain Celery app on the same broker: JSON, ``ignore_result``, no result backend).
* **bulk enqueue**: ``jobkit.perform_all_later([NoopJob() ...])`` in chunks of ``--chunk`` jobs
  per call (building the jobs is timed too), compared with jobkit's and raw Celery's single rate.
* **processing**: pre-fill N jobs, start the worker as a subprocess in its own session
  (``jobkit worker`` or ``celery -A bench.noop_jobs worker``, both prefork ``-c 2``, WARNING logs,
  no gossip/mingle/heartbeat, the same reliability settings), poll Redis every 5 ms and stop when
  the queue's list is empty and the in-flight hashes are empty (every job acked): kombu's
  ``unacked`` for Celery, each process's ``jobkit:unacked:<id>`` for jobkit.
  "steady" = N / (first dequeue observed -> drained); "incl. start-up" = N / (spawn -> drained).
  The worker is then stopped with SIGTERM, and its process group with SIGKILL.

The DB is flushed before every phase. Each measurement is repeated ``--repeat`` times (jobkit and
raw Celery interleaved, order alternating); the table gives the median and min-max, ratios are
of medians. Targets: single enqueue >= 0.9x raw Celery, bulk enqueue >= 5x jobkit single,
processing >= 0.9x raw Celery. The exit status is 0 whether targets are met or not (this is a
report, not a test); it is non-zero only if the benchmark itself fails.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
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
from jobkit import keys

POLL_SECONDS = 0.005


def timed_rate(n: int, call: Callable[[], object]) -> float:
    """Calls per second over `n` sequential calls, after one warm-up call."""
    call()
    start = time.perf_counter()
    for _ in range(n):
        call()
    return n / (time.perf_counter() - start)


def bulk_rate(n: int, chunk: int, jobs: ModuleType) -> float:
    """Jobs per second through `perform_all_later`, `chunk` new jobs per call."""
    from jobkit import perform_all_later

    perform_all_later([jobs.NoopJob()])  # warm-up
    start = time.perf_counter()
    for sent in range(0, n, chunk):
        perform_all_later([jobs.NoopJob() for _ in range(min(chunk, n - sent))])
    return n / (time.perf_counter() - start)


def fill_jobkit(n: int, jobs: ModuleType) -> None:
    from jobkit import perform_all_later

    for sent in range(0, n, 1000):
        perform_all_later([jobs.NoopJob() for _ in range(min(1000, n - sent))])


def fill_raw(n: int, jobs: ModuleType) -> None:
    for _ in range(n):
        jobs.noop.apply_async()


def expect_waiting(r: redis.Redis, expected: int, what: str) -> None:
    """Fail loudly if an enqueue phase did not leave exactly the jobs it sent."""
    waiting = r.llen(QUEUE)
    if waiting != expected:
        raise RuntimeError(f"{what}: {waiting} messages in {QUEUE!r}, expected {expected}")


# -- processing -------------------------------------------------------------------------------


@dataclass
class Drain:
    steady: float  # jobs/s from the first dequeue observed to drained
    wall: float  # jobs/s from spawning the worker to drained


def _poll_until_drained(r: redis.Redis, n: int, worker: subprocess.Popen, spawned: float,
                        timeout: float, log: Path) -> tuple[float, float]:
    """(first dequeue seen, drained) as perf_counter times, polling every POLL_SECONDS."""
    first: float | None = None
    pipe = r.pipeline(transaction=False)
    while True:
        in_flight = [UNACKED, *r.scan_iter(keys.unacked("*"))]  # Celery's, and jobkit's
        pipe.llen(QUEUE)
        for key in in_flight:
            pipe.hlen(key)
        waiting, *held = pipe.execute()
        unacked = sum(held)
        now = time.perf_counter()
        if first is None and (waiting < n or unacked):
            first = now
        if waiting == 0 and unacked == 0:
            return first if first is not None else now, now
        if worker.poll() is not None:
            raise RuntimeError(f"worker exited ({worker.returncode}) with {waiting} waiting, "
                               f"{unacked} unacked:\n{tail(log)}")
        if now - spawned > timeout:
            raise TimeoutError(f"not drained after {timeout:.0f} s ({waiting} waiting, "
                               f"{unacked} unacked):\n{tail(log)}")
        time.sleep(POLL_SECONDS)


def processing_rate(r: redis.Redis, n: int, argv: list[str], url: str, log: Path) -> Drain:
    """Start a worker on `n` pre-filled jobs and time it until every job is acked."""
    timeout = max(60.0, n / 50)
    spawned = time.perf_counter()
    worker = start_worker(argv, url, log)
    try:
        first, drained = _poll_until_drained(r, n, worker, spawned, timeout, log)
    finally:
        stop_process(worker, grace=10.0)
    return Drain(steady=n / (drained - first), wall=n / (drained - spawned))


# -- one repetition ---------------------------------------------------------------------------


@dataclass
class Samples:
    single_jobkit: list[float] = field(default_factory=list)
    single_raw: list[float] = field(default_factory=list)
    bulk_jobkit: list[float] = field(default_factory=list)
    steady_jobkit: list[float] = field(default_factory=list)
    steady_raw: list[float] = field(default_factory=list)
    wall_jobkit: list[float] = field(default_factory=list)
    wall_raw: list[float] = field(default_factory=list)


def run_enqueue(r: redis.Redis, n: int, chunk: int, jobs: ModuleType, samples: Samples,
                jobkit_first: bool) -> None:
    def jobkit_single() -> None:
        r.flushdb()
        samples.single_jobkit.append(timed_rate(n, jobs.NoopJob.perform_later))
        expect_waiting(r, n + 1, "jobkit single enqueue")

    def raw_single() -> None:
        r.flushdb()
        samples.single_raw.append(timed_rate(n, jobs.noop.apply_async))
        expect_waiting(r, n + 1, "raw Celery single enqueue")

    for phase in (jobkit_single, raw_single) if jobkit_first else (raw_single, jobkit_single):
        phase()
    r.flushdb()
    samples.bulk_jobkit.append(bulk_rate(n, chunk, jobs))
    expect_waiting(r, n + 1, "jobkit bulk enqueue")


def run_processing(r: redis.Redis, n: int, url: str, jobs: ModuleType, samples: Samples,
                   workdir: Path, jobkit_first: bool) -> None:
    def jobkit_side() -> None:
        r.flushdb()
        fill_jobkit(n, jobs)
        expect_waiting(r, n, "jobkit pre-fill")
        drain = processing_rate(r, n, JOBKIT_WORKER, url, workdir / "jobkit-worker.log")
        samples.steady_jobkit.append(drain.steady)
        samples.wall_jobkit.append(drain.wall)

    def raw_side() -> None:
        r.flushdb()
        fill_raw(n, jobs)
        expect_waiting(r, n, "raw Celery pre-fill")
        drain = processing_rate(r, n, CELERY_WORKER, url, workdir / "celery-worker.log")
        samples.steady_raw.append(drain.steady)
        samples.wall_raw.append(drain.wall)

    for side in (jobkit_side, raw_side) if jobkit_first else (raw_side, jobkit_side):
        side()


# -- the report -------------------------------------------------------------------------------


@dataclass
class Row:
    measure: str
    jobkit: list[float]
    baseline_name: str
    baseline: list[float]
    target: float | None  # minimum ratio jobkit/baseline, None for information only

    @property
    def ratio(self) -> float:
        return statistics.median(self.jobkit) / statistics.median(self.baseline)

    @property
    def verdict(self) -> str:
        if self.target is None:
            return "info"
        return "PASS" if self.ratio >= self.target else "MISS"


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):>8,.0f} [{min(values):,.0f}-{max(values):,.0f}]"


def rows(s: Samples) -> list[Row]:
    return [
        Row("single enqueue", s.single_jobkit, "raw Celery apply_async", s.single_raw, 0.9),
        Row("bulk enqueue", s.bulk_jobkit, "jobkit single enqueue", s.single_jobkit, 5.0),
        Row("bulk enqueue", s.bulk_jobkit, "raw Celery apply_async", s.single_raw, None),
        Row("processing, steady", s.steady_jobkit, "raw Celery worker", s.steady_raw, 0.9),
        Row("processing, incl. start-up", s.wall_jobkit, "raw Celery worker", s.wall_raw, None),
    ]


def print_report(table: list[Row]) -> None:
    header = (f"{'measure':<27} {'jobkit jobs/s':>27}  {'baseline':<23} {'baseline jobs/s':>25}"
              f"  {'ratio':>7}  {'target':>7}  result")
    print(header)
    print("-" * len(header))
    for row in table:
        target = f">={row.target:g}x" if row.target is not None else "-"
        print(f"{row.measure:<27} {_spread(row.jobkit):>27}  {row.baseline_name:<23} "
              f"{_spread(row.baseline):>25}  {row.ratio:>6.2f}x  {target:>7}  {row.verdict}")
    print("\njobs/s: median [min-max]; ratio = median jobkit / median baseline.")


def print_context(url: str, r: redis.Redis, n: int, chunk: int, repeat: int) -> None:
    import celery
    import kombu

    server = r.info("server")
    print(f"jobkit vs raw Celery, no-op jobs: Python {sys.version.split()[0]}, celery "
          f"{celery.__version__}, kombu {kombu.__version__}, redis-py {redis.__version__}, "
          f"{os.cpu_count()} CPUs")
    print(f"private redis-server {server['redis_version']} at {url}; N={n:,} jobs per "
          f"measurement, bulk chunk {chunk:,}, {repeat} repetition(s)\n")


# -- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, help="jobs per measurement (default 5000)")
    parser.add_argument("--repeat", type=int, help="repetitions (default 3)")
    parser.add_argument("--chunk", type=int, default=1000, help="jobs per perform_all_later call")
    parser.add_argument("--quick", action="store_true", help="n=1000, repeat 1")
    args = parser.parse_args(argv)
    args.n = args.n or (1000 if args.quick else 5000)
    args.repeat = args.repeat or (1 if args.quick else 3)
    if args.n < 1 or args.repeat < 1 or args.chunk < 1:
        parser.error("--n, --repeat and --chunk must be at least 1")
    return args


def benchmark(url: str, n: int, chunk: int, repeat: int, workdir: Path) -> list[Row]:
    jobs = load_jobs(url)
    r = redis.Redis.from_url(url)
    print_context(url, r, n, chunk, repeat)
    samples = Samples()
    for i in range(repeat):
        started = time.perf_counter()
        run_enqueue(r, n, chunk, jobs, samples, jobkit_first=i % 2 == 0)
        run_processing(r, n, url, jobs, samples, workdir, jobkit_first=i % 2 == 0)
        print(f"repetition {i + 1}/{repeat} done in {time.perf_counter() - started:.1f} s",
              flush=True)
    print()
    return rows(samples)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body(workdir: Path) -> None:
        with private_redis(workdir) as url:
            table = benchmark(url, args.n, args.chunk, args.repeat, workdir)
        print_report(table)

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
