"""Per job class metrics, as Sidekiq's Metrics tab keeps them: executions, failures, execution
time and a histogram of it.

Counted in memory where the job runs and written by a background thread about once a second,
in one pipelined round trip (as jobkit.stats), so recording costs no Redis round trip per job;
a process killed with -9 loses its last second of counts. Each class has one hash per minute
(kept MINUTE_TTL_SECONDS), one per hour (kept HOUR_TTL_SECONDS) and one of all time (for
`/metrics`), all with the same fields: `e` executions, `f` failures, `ms` total milliseconds,
and `0` .. `25` the runs in each histogram bucket (only those not zero).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
import time
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import redis

from jobkit import display, keys
from jobkit.config import current_settings
from jobkit.masking import mask_secrets
from jobkit.redis_client import get_redis

__all__ = ["BUCKET_BOUNDS_MS", "WINDOW_HOURS", "ClassMetrics", "Counts", "all_time", "flush",
           "read", "record", "timed"]

logger = logging.getLogger(__name__)

# Sidekiq 7's histogram: a run lands in the first bucket whose bound (ms) is at least its
# duration (Prometheus' `le`); longer than the last bound, in one more bucket.
BUCKET_BOUNDS_MS = (20, 30, 45, 65, 100, 150, 225, 335, 500, 750, 1100, 1700, 2500, 3800, 5750,
                    8500, 13000, 20000, 30000, 45000, 65000, 100000, 150000, 225000, 335000)
BUCKETS = len(BUCKET_BOUNDS_MS) + 1

FLUSH_EVERY_SECONDS = 1.0
MINUTE_TTL_SECONDS = 72 * 3600 + 3600  # 72 hours readable to the minute, and an hour's margin
HOUR_TTL_SECONDS = 30 * 24 * 3600 + 3600  # 30 days readable to the hour
WINDOW_HOURS = (1, 8, 24, 72, 7 * 24, 30 * 24)  # what `read` offers (the Metrics page's menu)
MINUTE_SERIES_UP_TO_HOURS = 8  # longer windows are charted by the hour

EXECUTIONS, FAILURES, MILLISECONDS = b"e", b"f", b"ms"


@dataclass
class Counts:
    """What one bucket (or a sum of them) holds."""

    executions: int = 0
    failures: int = 0
    total_ms: float = 0.0
    histogram: list[int] = field(default_factory=lambda: [0] * BUCKETS)

    def add(self, other: Counts) -> None:
        self.executions += other.executions
        self.failures += other.failures
        self.total_ms += other.total_ms
        self.histogram = [a + b for a, b in zip(self.histogram, other.histogram, strict=True)]

    def fields(self) -> dict[bytes, int]:
        """The hash fields to increment (zeros left out)."""
        counted = {EXECUTIONS: self.executions, FAILURES: self.failures,
                   MILLISECONDS: round(self.total_ms),
                   **{str(i).encode(): n for i, n in enumerate(self.histogram)}}
        return {name: n for name, n in counted.items() if n}

    def add_stored(self, raw: Mapping[bytes, bytes]) -> Counts:
        """Add a stored hash; a field or value that is not ours (bad bytes, a float) is
        skipped."""
        for name, value in raw.items():
            try:
                number = int(value)
            except ValueError:
                continue
            if name == EXECUTIONS:
                self.executions += number
            elif name == FAILURES:
                self.failures += number
            elif name == MILLISECONDS:
                self.total_ms += number
            elif name.isdigit() and int(name) < BUCKETS:
                self.histogram[int(name)] += number
        return self

    @property
    def mean_ms(self) -> float | None:
        return self.total_ms / self.executions if self.executions else None

    def percentile(self, q: float) -> float | None:
        """The duration (ms) under which a fraction `q` of the runs fell, estimated from the
        histogram by linear interpolation in the bucket that holds it. In the last bucket
        (beyond BUCKET_BOUNDS_MS[-1]) it says that bound: at least that long."""
        count = sum(self.histogram)
        if count <= 0:
            return None
        rank, seen = q * count, 0
        for index, n in enumerate(self.histogram):
            if n > 0 and seen + n >= rank:
                low = BUCKET_BOUNDS_MS[index - 1] if index else 0
                if index == len(BUCKET_BOUNDS_MS):
                    return float(low)
                return low + (BUCKET_BOUNDS_MS[index] - low) * max(0.0, rank - seen) / n
            seen += max(n, 0)
        return float(BUCKET_BOUNDS_MS[-1])


def bucket_of(ms: float) -> int:
    """The histogram bucket of a run that took `ms` milliseconds."""
    return bisect_left(BUCKET_BOUNDS_MS, ms)


def minute_of(stamp: float) -> int:
    """The start (Unix seconds) of the minute `stamp` falls in."""
    return int(stamp // 60) * 60


# -- recording ---------------------------------------------------------------------------

_pending: defaultdict[tuple[str, int], Counts] = defaultdict(Counts)
_lock = threading.Lock()
_flusher_pid: list[int] = []


def record(job_class: str, seconds: float, failed: bool) -> None:
    """Count one run of `job_class` that took `seconds`, ended now (nothing when the `metrics`
    setting is off)."""
    if not current_settings().metrics:
        return
    ms = seconds * 1000
    with _lock:
        counts = _pending[(job_class, minute_of(time.time()))]
        counts.executions += 1
        counts.failures += failed
        counts.total_ms += ms
        counts.histogram[bucket_of(ms)] += 1
        if _flusher_pid != [os.getpid()]:  # first run in this process (or since a fork)
            _flusher_pid[:] = [os.getpid()]
            threading.Thread(target=_flush_forever, name="jobkit-metrics", daemon=True).start()
            atexit.register(flush)


@contextlib.contextmanager
def timed(job_class: str, not_failures: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Record the run inside the block: a failure if it raises, unless what it raises is one
    of `not_failures` (a job handed back to its queue, which runs again)."""
    started, failed = time.perf_counter(), False
    try:
        yield
    except not_failures:
        raise
    except BaseException:
        failed = True
        raise
    finally:
        record(job_class, time.perf_counter() - started, failed)


def flush(client: redis.Redis | None = None) -> None:
    """Write the pending counts now: one MULTI, in one round trip. If Redis will not take
    them, they are kept for the next try; a key holding something else (another type, a
    field that is no whole number) refuses its own counts only, which are dropped: kept,
    they would be tried again each second, adding the others' again each time."""
    with _lock:
        pending = dict(_pending)
        _pending.clear()
    if not pending:
        return
    try:
        with (client or get_redis()).pipeline() as pipe:
            for (job_class, minute), counts in pending.items():
                name = display.as_bytes(job_class)
                increments = counts.fields()
                for key, ttl in ((keys.metrics(name, "m", minute), MINUTE_TTL_SECONDS),
                                 (keys.metrics(name, "h", minute), HOUR_TTL_SECONDS),
                                 (keys.metrics(name), None)):
                    for field_name, n in increments.items():
                        pipe.hincrby(key, field_name, n)
                    if ttl is not None:
                        pipe.expire(key, ttl)
                pipe.zadd(keys.METRICS_CLASSES, {name: minute}, gt=True)
            replies = pipe.execute(raise_on_error=False)
    except redis.RedisError as exc:  # MULTI: nothing written (unless only the reply was lost)
        logger.warning("jobkit metrics not written, will try again: %s", mask_secrets(str(exc)))
        with _lock:
            for key, counts in pending.items():
                _pending[key].add(counts)
        return
    refused = [reply for reply in replies if isinstance(reply, redis.ResponseError)]
    if refused:
        logger.warning("jobkit metrics: %d write(s) refused by keys holding something else, "
                       "dropped: %s", len(refused), refused[0])


def _flush_forever() -> None:
    while True:
        time.sleep(FLUSH_EVERY_SECONDS)
        flush()


# -- reading -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Point:
    """One step of a chart: the minute or hour starting at `start` (Unix seconds)."""

    start: int
    counts: Counts


@dataclass(frozen=True)
class ClassMetrics:
    """One job class over a window (or all time): totals, histogram, and a chart series."""

    raw_class: bytes
    counts: Counts
    series: tuple[Point, ...] = ()

    @property
    def job_class(self) -> str:
        """The class name as shown (odd bytes escaped)."""
        return display.escaped(self.raw_class)


def read(hours: int, match: str = "", now: float | None = None,
         client: redis.Redis | None = None) -> list[ClassMetrics]:
    """The classes that ran in the last `hours` (one of WINDOW_HOURS), whose name holds
    `match` (case-insensitive), most executions first: totals to the minute, and a series
    per minute (windows up to MINUTE_SERIES_UP_TO_HOURS) or per hour. One round trip for the
    class names, one for their buckets."""
    client = client or get_redis()
    end = minute_of(time.time() if now is None else now)
    start = end - hours * 3600 + 60
    step = 60 if hours <= MINUTE_SERIES_UP_TO_HOURS else 3600
    names = [name for name in _classes(client, start)
             if match.lower() in display.escaped(name).lower()]
    spans = _spans(start, end, step)
    with client.pipeline(transaction=False) as pipe:
        for name in names:
            for resolution, bucket, _ in spans:
                pipe.hgetall(keys.metrics(name, resolution, bucket))
        replies = pipe.execute(raise_on_error=False)
    found = []
    for index, name in enumerate(names):
        points = {at: Counts() for at in range(start - start % step, end + 1, step)}
        own = replies[index * len(spans):(index + 1) * len(spans)]
        for (_, _, at), raw in zip(spans, own, strict=True):
            if isinstance(raw, dict):  # a key of another type answers with an error
                points[at].add_stored(raw)
        total = Counts()
        for counts in points.values():
            total.add(counts)
        if total.executions or total.failures:
            found.append(ClassMetrics(name, total, tuple(
                Point(at, counts) for at, counts in points.items())))
    return sorted(found, key=lambda m: (-m.counts.executions, m.raw_class))


def all_time(client: redis.Redis | None = None) -> list[ClassMetrics]:
    """Every class that ever ran, with its totals since, by name (for `/metrics`)."""
    client = client or get_redis()
    names = sorted(_classes(client, "-inf"))
    with client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hgetall(keys.metrics(name))
        replies = pipe.execute(raise_on_error=False)
    return [ClassMetrics(name, Counts().add_stored(raw if isinstance(raw, dict) else {}))
            for name, raw in zip(names, replies, strict=True)]


def _classes(client: redis.Redis, since: float | str) -> list[bytes]:
    """The classes that ran since `since` (Unix seconds, or "-inf")."""
    return [display.as_bytes(name) for name in
            client.zrangebyscore(keys.METRICS_CLASSES, since, "+inf")
            if isinstance(name, bytes | str)]


def _spans(start: int, end: int, step: int) -> list[tuple[str, int, int]]:
    """(resolution "m" or "h", bucket start, chart point start) covering the minutes from
    `start` to `end`: with hourly points, each hour that starts in the window from its hourly
    bucket (the current one holds nothing later than now), and the minutes before the first
    one from their own buckets (so the totals are exact to the minute)."""
    spans, at = [], start
    while at <= end:
        if step == 3600 and at % 3600 == 0:
            spans.append(("h", at, at))
            at += 3600
        else:
            spans.append(("m", at, at - at % step))
            at += 60
    return spans
