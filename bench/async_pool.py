"""The asyncio pool against the threads pool for I/O-bound jobs, in the same run.

Run from the repository root: ``.venv/bin/python bench/async_pool.py [--jobs N] [--seconds S]
[--concurrency C] [--repeat R]``.

Three variants, each ``--jobs`` jobs (default 1,000) that wait ``--seconds`` (default 0.1) on a
worker with ``--concurrency`` (default 200); the jobs are bench/async_pool_jobs.py:

* **asyncio pool, async job**: ``await asyncio.sleep(S)``, every job on the worker's one loop;
* **threads pool, async job**: the same job, each run in an event loop of its own;
* **threads pool, sync job**: ``time.sleep(S)``.

One private ``redis-server`` (bench/harness.py: free port, never 6379, no persistence, stopped
by PID at the end, on error and on Ctrl-C). A repetition runs the three variants in an order
rotated each repetition (a slow moment on this shared machine slows them alike), each on a
fresh ``jobkit worker`` (WARNING logs, no gossip/mingle/heartbeat) that first runs one warm-up
job. A turn fills the queue with one bulk enqueue while the worker waits, then polls Redis
every 5 ms until the queue and the worker's in-flight hash (``jobkit:unacked:<id>``) are empty:
wall time = fill start -> last job acknowledged. Also the worker's CPU time over the turn
(``/proc/<pid>/stat``, every thread), per job. The table gives medians of ``--repeat``
repetitions (default 5) and the ratio of each median to the asyncio pool's.

The exit status is 0 unless the benchmark itself fails (this is a report, not a test).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.async_pool_jobs import QUEUE, AsyncSleepJob, SyncSleepJob  # noqa: E402
from bench.harness import (  # noqa: E402 - after the path, for `python bench/async_pool.py`
    BIN,
    QUIET_FLAGS,
    private_redis,
    run_main,
    start_worker,
    stop_process,
    tail,
)
from jobkit import Job  # noqa: E402

POLL_SECONDS = 0.005
TICKS = os.sysconf("SC_CLK_TCK")

VARIANTS = (("asyncio pool, async job", "asyncio", AsyncSleepJob),
            ("threads pool, async job", "threads", AsyncSleepJob),
            ("threads pool, sync job", "threads", SyncSleepJob))


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def drained(client: redis.Redis) -> bool:
    if client.llen(QUEUE):
        return False
    return not any(client.hlen(key) for key in client.keys("jobkit:unacked:*"))


def wait_drained(client: redis.Redis, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not drained(client):
        if time.monotonic() > deadline:
            raise TimeoutError("the worker did not drain its queue")
        time.sleep(POLL_SECONDS)


def turn(url: str, log: Path, pool: str, job_class: type[Job], args: argparse.Namespace
         ) -> tuple[float, float]:
    """(wall seconds, worker CPU seconds) for one fill on a fresh worker."""
    import jobkit

    client = redis.Redis.from_url(url)
    worker = start_worker([str(BIN / "jobkit"), "worker", "-q", QUEUE, "-P", pool,
                           "-c", str(args.concurrency), "-l", "WARNING", *QUIET_FLAGS], url, log)
    try:
        job_class.perform_later(0)  # warm-up: the worker is up and has imported the job
        wait_drained(client)
        jobs = [job_class(args.seconds) for _ in range(args.jobs)]
        cpu_before, started = cpu_seconds(worker.pid), time.perf_counter()
        jobkit.perform_all_later(jobs)
        wait_drained(client)
        return time.perf_counter() - started, cpu_seconds(worker.pid) - cpu_before
    except Exception:
        print(tail(log), file=sys.stderr)
        raise
    finally:
        stop_process(worker, grace=30.0)


def body(workdir: Path, args: argparse.Namespace) -> None:
    import jobkit
    from jobkit.adapters import use_adapter

    with private_redis(workdir) as url:
        os.environ["REDIS_URL"] = url
        jobkit.configure(redis_url=url, queues=[(QUEUE, 1)])  # no "no worker consumes" note
        use_adapter("celery")
        walls: dict[str, list[float]] = {name: [] for name, _, _ in VARIANTS}
        cpus: dict[str, list[float]] = {name: [] for name, _, _ in VARIANTS}
        for repetition in range(args.repeat):
            shift = repetition % len(VARIANTS)
            for name, pool, job_class in VARIANTS[shift:] + VARIANTS[:shift]:
                wall, cpu = turn(url, workdir / "worker.log", pool, job_class, args)
                walls[name].append(wall)
                cpus[name].append(cpu)
                print(f"  repetition {repetition + 1}: {name}: {wall:.2f} s", file=sys.stderr)
        report(walls, cpus, args)


def report(walls: dict[str, list[float]], cpus: dict[str, list[float]],
           args: argparse.Namespace) -> None:
    print(f"{args.jobs} jobs waiting {args.seconds:g} s each, concurrency {args.concurrency}, "
          f"medians of {args.repeat} repetitions")
    print("| variant | wall time, s | jobs/s | vs asyncio pool (time) | worker CPU, ms/job |")
    print("|---|---|---|---|---|")
    base = statistics.median(walls[VARIANTS[0][0]])
    for name, _, _ in VARIANTS:
        wall = statistics.median(walls[name])
        cpu = statistics.median(cpus[name]) / args.jobs * 1000
        print(f"| {name} | {wall:.2f} | {args.jobs / wall:,.0f} | {wall / base:.2f}x "
              f"| {cpu:.2f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=0.1)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    return run_main(lambda workdir: body(workdir, args), prefix="jobkit-bench-async-")


if __name__ == "__main__":
    sys.exit(main())
