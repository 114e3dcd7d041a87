"""What each control costs per job, against a plain job: enqueue, processing, Redis commands.

Run from the repository root: ``.venv/bin/python bench/controls.py [--quick]``.

Everything runs against one private ``redis-server`` (bench/harness.py: free port, never 6379,
``--save '' --appendonly no``, temporary directory, stopped by PID at the end, on error and on
Ctrl-C). The jobs are bench/control_jobs.py: the same no-op job taking one number, with one
control each. These machines are shared and noisy, so every measurement is made in turns, the
variants taking turns in an order rotated each turn (a slow moment slows them all alike); a
repetition's figure for a variant is the median of its turns, the table gives the median of
``--repeat`` repetitions (default 5), and ratios are of medians, against the plain job
measured in the same turns.

* **single enqueue**: one process, one connection. Each turn starts on an empty DB with one
  untimed warm-up job per variant, then times ``--block`` sequential ``Job.perform_later(i)``
  per variant. "distinct keys": i = 0..N-1, every job accepted; "same key": i = -2 every time
  (the warm-up took that key), so a unique job is refused (its `duplicate_of` set) and a
  debounced job replaces the pending one. µs/job = a turn's time / its jobs.
* **bulk enqueue**: the same, each turn one ``jobkit.perform_all_later([Job(i) ...])`` of
  ``--chunk`` new jobs per variant (building the jobs is timed too).
  After each turn every job must have been accepted or refused as it should, and the DB must
  hold exactly those jobs (the queue's list; the scheduled set for debounced jobs).
* **processing**: one ``jobkit worker`` per repetition (prefork ``-c 2``, WARNING logs, no
  gossip/mingle/heartbeat: bench/harness.py, as the other benchmarks), warmed up with a few
  jobs of each class. A turn fills ``--process-block`` jobs of one variant (bulk) while the
  worker waits for work (it wakes at the first push and works during the fill), then polls
  Redis every 5 ms until the queue's list, the worker's in-flight hash
  (``jobkit:unacked:<id>``) and, for a concurrency limit on one key, its held list are all
  empty. jobs/s = the jobs not done when the fill ended / (fill ended -> last job done): the
  steady rate, without the worker's wake-up or the contention of the fill. After each turn the
  jobs must have left no trace: no unique lock, no concurrency slot or held job, nothing
  waiting, scheduled, retried or dead (a limiter over its limit would have rescheduled).
* **held-heavy**: the same with ``Concurrency(to=1)`` on one key: the worker fetches every job
  and holds all but the running one; each release promotes the oldest held job to the front
  of the queue, so the rate is that of one job after another being promoted, fetched again,
  admitted and run.
* **Redis calls per job**: the ``INFO commandstats`` delta (every command, including those a
  Lua script calls) over the timed enqueue calls, or for processing from the end of the fill
  to the last job done, less the commands this benchmark sent meanwhile (its INFO and polls),
  divided by the jobs. "scripts" counts EVALSHA + EVAL. Processing counts also include the
  worker's background traffic (heartbeat, poller, stats: per second, not per job).

The exit status is 0 unless the benchmark itself fails (this is a report, not a test).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import redis

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    JOBKIT_WORKER,
    QUEUE,
    load_jobs,
    private_redis,
    run_main,
    start_worker,
    stop_process,
    tail,
)

POLL_SECONDS = 0.005
WARM_UP_JOBS = 20  # of each class, through the worker before its first timed turn
SCRIPT_COMMANDS = ("evalsha", "eval", "evalsha_ro", "eval_ro", "fcall", "fcall_ro")


# -- the variants -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    label: str
    job: str  # class name in bench.control_jobs
    same_key: bool = False  # every job gets argument -2 (one key) instead of 0..N-1
    processing: bool = True  # also run on a worker (debounced jobs wait an hour: enqueue only)

    def arg(self, i: int) -> int:
        """The job's argument: -1 is the warm-up job's; -2 is the one key of a same-key
        variant (no distinct-key job has it)."""
        return -2 if self.same_key else i


PLAIN = Variant("plain", "PlainJob")
VARIANTS = [
    PLAIN,
    Variant("unique (distinct keys)", "UniqueJob"),
    Variant("unique duplicate (refused)", "UniqueJob", same_key=True, processing=False),
    Variant("debounced (distinct keys)", "DebouncedJob", processing=False),
    Variant("debounced, same key (replaces)", "DebouncedJob", same_key=True, processing=False),
    Variant("concurrency to=1000, 8 keys", "ConcurrencyJob"),
    Variant("limiter bucket 1M/s", "LimitedJob"),
]
HELD = Variant("held-heavy: to=1, one key", "HeldJob")


# -- Redis command counts ---------------------------------------------------------------------


def command_calls(r: redis.Redis) -> Counter[str]:
    """Calls per command name so far (INFO commandstats; script-called commands included)."""
    return Counter({name.removeprefix("cmdstat_"): stat["calls"]
                    for name, stat in r.info("commandstats").items()})


@dataclass
class Commands:
    """Commands per job over one measurement."""

    total: float
    scripts: float
    top: str  # the most frequent commands per job, for the details

    @classmethod
    def of(cls, before: Counter[str], after: Counter[str], mine: Counter[str], jobs: int
           ) -> Commands:
        delta = after - before
        delta.subtract(mine)
        delta = +delta  # drop zero and negative counts
        top = ", ".join(f"{name} {calls / jobs:.2f}" for name, calls in delta.most_common(10))
        return cls(sum(delta.values()) / jobs,
                   sum(delta[name] for name in SCRIPT_COMMANDS) / jobs, top)


# -- enqueue ----------------------------------------------------------------------------------


def job_class(jobs: ModuleType, variant: Variant) -> type:
    return getattr(jobs, variant.job)


@dataclass
class Enqueued:
    """One variant's enqueue measurement in one repetition: seconds per job of each turn, and
    the commands of all its turns."""

    per_job: list[float] = field(default_factory=list)
    jobs: int = 0
    calls: Counter[str] = field(default_factory=Counter)

    def add(self, seconds: float, jobs: list, before: Counter[str], after: Counter[str]
            ) -> None:
        self.per_job.append(seconds / len(jobs))
        self.jobs += len(jobs)
        self.calls += after - before
        self.calls["info"] -= 1  # the INFO that read `before`
        self.calls = +self.calls

    def seconds_per_job(self) -> float:
        """The median of the turns: a burst of another process's work during one turn (these
        machines are shared) does not move it."""
        return statistics.median(self.per_job)

    def commands(self) -> Commands:
        return Commands.of(Counter(), self.calls, Counter(), self.jobs)


def measure_enqueue(r: redis.Redis, n: int, block: int, jobs: ModuleType,
                    variants: list[Variant], bulk: bool, repetition: int
                    ) -> dict[str, Enqueued]:
    """Every variant's N jobs in turns of `block` jobs, the variants taking turns in an order
    rotated each turn (so a slow moment of this noisy machine slows them all alike). Single:
    `block` sequential perform_later calls; bulk: one perform_all_later of `block` new jobs
    (building them is timed too). Each turn starts on an empty DB with one warm-up job per
    variant (untimed), which takes the same-key variants' key, and ends with a check of what
    Redis holds."""
    from jobkit import perform_all_later

    results = {variant.label: Enqueued() for variant in variants}
    for turn, first in enumerate(range(0, n, block)):
        args = range(first, min(n, first + block))
        r.flushdb()
        for variant in variants:
            job_class(jobs, variant).perform_later(variant.arg(-1))
        for variant in rotated(variants, repetition + turn):
            cls = job_class(jobs, variant)
            gc.collect()  # each block pays for the garbage it makes, not the one before's
            before = command_calls(r)
            if bulk:
                start = time.perf_counter()
                done = perform_all_later([cls(variant.arg(i)) for i in args])
                seconds = time.perf_counter() - start
            else:
                start = time.perf_counter()
                done = [cls.perform_later(variant.arg(i)) for i in args]
                seconds = time.perf_counter() - start
            results[variant.label].add(seconds, done, before, command_calls(r))
            check_accepted(variant, done, "bulk" if bulk else "single")
        check_enqueued(r, len(args), variants, "bulk" if bulk else "single")
    return results


def check_accepted(variant: Variant, done: list, what: str) -> None:
    """Every job accepted, except a unique job's duplicates: every one refused."""
    refused = variant.same_key and variant.job == "UniqueJob"
    accepted = sum(1 for job in done if job.successfully_enqueued)
    if accepted != (0 if refused else len(done)):
        raise RuntimeError(f"{variant.label}, {what} enqueue: {accepted} of {len(done)} jobs "
                           f"accepted, expected {0 if refused else len(done)}")


def check_enqueued(r: redis.Redis, n: int, variants: list[Variant], what: str) -> None:
    """Fail loudly unless Redis holds exactly the jobs of one turn of `n` jobs per variant:
    accepted ones in the queue's list, debounced ones in the scheduled set (one per key), and
    the warm-up jobs."""
    from jobkit import keys

    listed = parked = 0
    for variant in variants:
        if variant.job == "DebouncedJob":
            parked += 1 if variant.same_key else n + 1
        else:
            listed += 1 if variant.same_key else n + 1
    found = (r.llen(QUEUE), r.zcard(keys.SCHEDULE))
    if found != (listed, parked):
        raise RuntimeError(f"{what} enqueue: {found[0]} in {QUEUE!r} and {found[1]} in the "
                           f"scheduled set; expected {listed} and {parked}")


# -- processing -------------------------------------------------------------------------------


@dataclass
class Drain:
    rate: float  # jobs/s from the start of the drain to the last job done
    jobs: int  # jobs not yet done at the start (the rate's numerator)
    commands: Commands


class Poller:
    """Polls the queue, the worker's in-flight hashes and a held list; counts its own commands
    so they can be taken out of the commandstats delta."""

    def __init__(self, r: redis.Redis, processes: list[str], held_key: str | None) -> None:
        self.r = r
        self.processes = processes
        self.held_key = held_key
        self.mine: Counter[str] = Counter()

    def poll(self) -> tuple[int, int, int]:
        """(waiting, in flight, held)."""
        from jobkit import keys

        pipe = self.r.pipeline(transaction=False)
        pipe.llen(QUEUE)
        pipe.llen(self.held_key or QUEUE)
        for process in self.processes:
            pipe.hlen(keys.unacked(process))
        waiting, held, *unacked = pipe.execute()
        self.mine.update({"llen": 2, "hlen": len(self.processes)})
        return waiting, sum(unacked), held if self.held_key else 0


def drain(r: redis.Redis, processes: list[str], worker: subprocess.Popen,
          held_key: str | None, timeout: float, log: Path) -> Drain:
    """From now until every job is done (acked, none waiting or held): the rate of the jobs
    not done yet now, and the Redis commands meanwhile."""
    poller = Poller(r, processes, held_key)
    before = command_calls(r)
    poller.mine["info"] = 1  # that INFO: counted by the next one
    start = time.perf_counter()
    waiting, unacked, held = poller.poll()
    remaining = waiting + unacked + held
    while waiting or unacked or held:
        if worker.poll() is not None:
            raise RuntimeError(f"worker exited ({worker.returncode}) with {waiting} waiting, "
                               f"{unacked} in flight, {held} held:\n{tail(log)}")
        if time.perf_counter() - start > timeout:
            raise TimeoutError(f"not drained after {timeout:.0f} s ({waiting} waiting, "
                               f"{unacked} in flight, {held} held):\n{tail(log)}")
        time.sleep(POLL_SECONDS)
        waiting, unacked, held = poller.poll()
    drained = time.perf_counter()
    after = command_calls(r)
    if remaining == 0:
        raise RuntimeError("every job was done before the drain started: use more jobs "
                           "per turn (--process-block)")
    return Drain(remaining / (drained - start), remaining,
                 Commands.of(before, after, poller.mine, remaining))


def fill(n: int, chunk: int, jobs: ModuleType, variant: Variant) -> None:
    from jobkit import perform_all_later

    cls = job_class(jobs, variant)
    for sent in range(0, n, chunk):
        perform_all_later([cls(variant.arg(i)) for i in range(sent, min(n, sent + chunk))])


def count_keys(r: redis.Redis, pattern: str) -> int:
    return sum(1 for _ in r.scan_iter(match=pattern, count=1000))


def leftovers(r: redis.Redis) -> str:
    """'' when the jobs left no trace; else what they left."""
    from jobkit import keys

    found = {
        "unique locks": count_keys(r, keys.unique("*")),
        "concurrency slot keys": count_keys(r, keys.concurrency_slots("*")),
        "held lists": count_keys(r, keys.concurrency_held("*")),
        "held keys": r.scard(keys.CONCURRENCY_HELD_KEYS),
        "scheduled": r.zcard(keys.SCHEDULE),
        "retries": r.zcard(keys.RETRY),
        "dead": r.zcard(keys.DEAD),
        "waiting": r.llen(QUEUE),
    }
    return ", ".join(f"{count} {name}" for name, count in found.items() if count)


def held_key_of(jobs: ModuleType, variant: Variant) -> str | None:
    """The held list of a variant whose concurrency limit has one key (the class's path)."""
    from jobkit import keys
    from jobkit.imports import class_path

    cls = job_class(jobs, variant)
    limit = cls.limits_concurrency
    if limit is None or limit.key is not None:
        return None
    return keys.concurrency_held(class_path(cls))


class Worker:
    """One ``jobkit worker`` for a repetition's processing turns, started on an empty DB. A
    turn fills its jobs while the worker waits for work (it wakes at the first push), then
    times from the end of the fill to the last job done."""

    def __init__(self, r: redis.Redis, url: str, log: Path) -> None:
        self.r, self.log = r, log
        r.flushdb()
        self.proc = start_worker(JOBKIT_WORKER, url, log)
        self.processes = self._wait_joined()

    def _wait_joined(self, timeout: float = 60.0) -> list[str]:
        """The worker's process id, once it is in Redis (before its first fetch)."""
        from jobkit import keys

        deadline = time.monotonic() + timeout
        while not (members := self.r.smembers(keys.PROCESSES)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start (exit {self.proc.returncode}):\n"
                                   f"{tail(self.log)}")
            time.sleep(0.05)
        return sorted(m.decode() if isinstance(m, bytes) else m for m in members)

    def warm_up(self, n: int, jobs: ModuleType, variants: list[Variant]) -> None:
        """`n` jobs of every variant at once, untimed: the worker's first jobs of a class
        import it and load its scripts, which no turn should pay for."""
        from jobkit import perform_all_later

        perform_all_later([job_class(jobs, v)(i) for v in variants for i in range(n)])
        held = [key for v in variants if (key := held_key_of(jobs, v))]
        drain(self.r, self.processes, self.proc, held[0] if held else None, 60.0, self.log)

    def turn(self, n: int, chunk: int, jobs: ModuleType, variant: Variant) -> Drain:
        fill(n, chunk, jobs, variant)
        result = drain(self.r, self.processes, self.proc, held_key_of(jobs, variant),
                       max(60.0, n / 20), self.log)
        left = leftovers(self.r)
        if left:
            raise RuntimeError(f"{variant.label}: the jobs left {left}:\n{tail(self.log)}")
        return result

    def stop(self) -> None:
        stop_process(self.proc, grace=10.0)


# -- one repetition ---------------------------------------------------------------------------


@dataclass
class Samples:
    single: list[float] = field(default_factory=list)  # seconds per job
    bulk: list[float] = field(default_factory=list)
    processing: list[float] = field(default_factory=list)  # jobs/s
    single_commands: list[Commands] = field(default_factory=list)
    bulk_commands: list[Commands] = field(default_factory=list)
    processing_commands: list[Commands] = field(default_factory=list)


def rotated(items: list[Variant], i: int) -> list[Variant]:
    k = i % len(items)
    return items[k:] + items[:k]


def run_repetition(r: redis.Redis, url: str, args: argparse.Namespace, jobs: ModuleType,
                   samples: dict[str, Samples], i: int, workdir: Path) -> None:
    for bulk in (False, True):
        results = measure_enqueue(r, args.bulk_n if bulk else args.n,
                                  args.chunk if bulk else args.block, jobs, VARIANTS, bulk, i)
        for label, result in results.items():
            s = samples[label]
            (s.bulk if bulk else s.single).append(result.seconds_per_job())
            (s.bulk_commands if bulk else s.single_commands).append(result.commands())
    run_processing(r, url, args, jobs, samples, i, workdir)


def run_processing(r: redis.Redis, url: str, args: argparse.Namespace, jobs: ModuleType,
                   samples: dict[str, Samples], i: int, workdir: Path) -> None:
    """Turns of `--process-block` jobs, the variants taking turns (rotated each turn) on one
    worker; a variant's figure for the repetition is the median of its turns."""
    totals = {variant: args.held_n if variant is HELD else args.process_n
              for variant in [v for v in VARIANTS if v.processing] + [HELD]}
    rates: dict[Variant, list[float]] = {variant: [] for variant in totals}
    calls: dict[Variant, list[Commands]] = {variant: [] for variant in totals}
    worker = Worker(r, url, workdir / f"worker-{i + 1}.log")
    try:
        worker.warm_up(WARM_UP_JOBS, jobs, list(totals))
        for turn, first in enumerate(range(0, max(totals.values()), args.process_block)):
            for variant in rotated(list(totals), i + turn):
                n = min(args.process_block, totals[variant] - first)
                if n <= 0:
                    continue
                result = worker.turn(n, args.chunk, jobs, variant)
                rates[variant].append(result.rate)
                calls[variant].append(result.commands)
                print(f"  {variant.label}: {result.jobs:,} jobs at {result.rate:,.0f} jobs/s; "
                      f"{result.commands.total:.2f} Redis calls/job ({result.commands.top})",
                      flush=True)
    finally:
        worker.stop()
    for variant in totals:
        samples[variant.label].processing.append(statistics.median(rates[variant]))
        samples[variant.label].processing_commands.append(median_of(calls[variant]))


def median_of(values: list[Commands]) -> Commands:
    return Commands(statistics.median(c.total for c in values),
                    statistics.median(c.scripts for c in values), values[0].top)


# -- the report -------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _cost(s: list[float], base: list[float]) -> str:
    """Enqueue: µs/job, jobs/s and the cost against plain (1.50x: takes 1.5 times as long)."""
    if not s:
        return f"{'-':>10}{'':>9}{'':>8}"
    per_job = median(s)
    return f"{per_job * 1e6:>10.1f}{1 / per_job:>9,.0f}{per_job / median(base):>7.2f}x"


def _rate(s: list[float], base: list[float]) -> str:
    """Processing: jobs/s and the rate against plain (0.80x: 80 % of plain's rate)."""
    if not s:
        return f"{'-':>10}{'':>8}"
    return f"{median(s):>10,.0f}{median(s) / median(base):>7.2f}x"


def _calls(values: list[Commands]) -> str:
    if not values:
        return f"{'-':>16}"
    total = median([c.total for c in values])
    scripts = median([c.scripts for c in values])
    shown = f"{total:.3f}" if total < 0.1 else f"{total:.2f}"  # bulk plain: a few per call
    return f"{shown:>9} ({scripts:.2f})"


def print_report(samples: dict[str, Samples]) -> None:
    base = samples[PLAIN.label]
    print(f"{'':<31}{'single enqueue':^27}{'bulk enqueue':^27}{'processing':^18}")
    print(f"{'control':<31}" + f"{'µs/job':>10}{'jobs/s':>9}{'cost':>8}" * 2
          + f"{'jobs/s':>10}{'rate':>8}")
    print("-" * 103)
    for variant in [*VARIANTS, HELD]:
        s = samples[variant.label]
        print(f"{variant.label:<31}{_cost(s.single, base.single)}{_cost(s.bulk, base.bulk)}"
              f"{_rate(s.processing, base.processing)}")
    print("\ncost = µs/job / plain's (above 1: slower); rate = jobs/s / plain's (below 1: "
          "slower); medians of the repetitions, ratios of medians.")
    print(f"\n{'Redis calls per job (scripts)':<31}{'single enqueue':>16}{'bulk enqueue':>16}"
          f"{'processing':>16}")
    print("-" * 79)
    for variant in [*VARIANTS, HELD]:
        s = samples[variant.label]
        print(f"{variant.label:<31}{_calls(s.single_commands)}{_calls(s.bulk_commands)}"
              f"{_calls(s.processing_commands)}")
    print("\nINFO commandstats deltas: every command, those Lua scripts call included, less "
          "the benchmark's own; (scripts) = EVALSHA/EVAL per job.")


def print_spread(samples: dict[str, Samples]) -> None:
    print("\nspread, min-max over the repetitions:")
    for variant in [*VARIANTS, HELD]:
        s = samples[variant.label]
        parts = []
        if s.single:
            parts.append(f"single {min(s.single) * 1e6:.1f}-{max(s.single) * 1e6:.1f} µs")
            parts.append(f"bulk {min(s.bulk) * 1e6:.1f}-{max(s.bulk) * 1e6:.1f} µs")
        if s.processing:
            parts.append(f"processing {min(s.processing):,.0f}-{max(s.processing):,.0f} jobs/s")
        print(f"  {variant.label:<31}{'; '.join(parts)}")


def print_context(url: str, r: redis.Redis, args: argparse.Namespace) -> None:
    import celery
    import kombu

    server = r.info("server")
    print(f"jobkit controls vs a plain job: Python {sys.version.split()[0]}, celery "
          f"{celery.__version__}, kombu {kombu.__version__}, redis-py {redis.__version__}, "
          f"{os.cpu_count()} CPUs")
    print(f"private redis-server {server['redis_version']} at {url}; single enqueue "
          f"N={args.n:,} (turns of {args.block:,}), bulk N={args.bulk_n:,} ({args.chunk:,} per "
          f"call), processing N={args.process_n:,} (held-heavy {args.held_n:,}; turns of "
          f"{args.process_block:,}) on `jobkit worker -P prefork -c 2`; {args.repeat} "
          f"repetition(s); load average "
          f"{_load()}\n")


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# -- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, help="jobs per single enqueue measurement "
                        "(default 4200: 42 turns, each order of the 7 variants 6 times)")
    parser.add_argument("--bulk-n", type=int, help="jobs per bulk enqueue measurement "
                        "(default 14000: 7 turns)")
    parser.add_argument("--process-n", type=int, help="jobs per processing measurement "
                        "(default 6000)")
    parser.add_argument("--held-n", type=int, help="jobs in the held-heavy case (default 3000)")
    parser.add_argument("--process-block", type=int, help="jobs per processing turn "
                        "(default 1000)")
    parser.add_argument("--repeat", type=int, help="repetitions (default 5)")
    parser.add_argument("--chunk", type=int, default=2000, help="jobs per perform_all_later "
                        "call (default 2000)")
    parser.add_argument("--block", type=int, default=100, help="single enqueue: sequential "
                        "calls per variant before the next variant's turn (default 100)")
    parser.add_argument("--quick", action="store_true",
                        help="n=1400, bulk 4000, processing 1000 and held-heavy 500 in "
                        "turns of 500, one repetition (~20 s)")
    args = parser.parse_args(argv)
    args.n = args.n or (1400 if args.quick else 4200)
    args.bulk_n = args.bulk_n or (4000 if args.quick else 14_000)
    args.process_n = args.process_n or (1000 if args.quick else 6000)
    args.held_n = args.held_n or (500 if args.quick else 3000)
    args.process_block = args.process_block or (500 if args.quick else 1000)
    args.repeat = args.repeat or (1 if args.quick else 5)
    if min(args.n, args.bulk_n, args.process_n, args.held_n, args.repeat, args.chunk,
           args.block, args.process_block) < 1:
        parser.error("every number must be at least 1")
    return args


def benchmark(url: str, args: argparse.Namespace, workdir: Path) -> dict[str, Samples]:
    load_jobs(url)  # points jobkit (celery adapter) at the private server
    from bench import control_jobs

    r = redis.Redis.from_url(url)
    print_context(url, r, args)
    samples = {variant.label: Samples() for variant in [*VARIANTS, HELD]}
    for i in range(args.repeat):
        started = time.perf_counter()
        run_repetition(r, url, args, control_jobs, samples, i, workdir)
        print(f"repetition {i + 1}/{args.repeat} done in {time.perf_counter() - started:.1f} s "
              f"(load average {_load()})", flush=True)
    print()
    return samples


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body(workdir: Path) -> None:
        with private_redis(workdir) as url:
            samples = benchmark(url, args, workdir)
        print_report(samples)
        print_spread(samples)

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
