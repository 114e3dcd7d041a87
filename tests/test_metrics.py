"""Per class metrics: what a real worker records, the Metrics page, `/metrics` for Prometheus,
the bucket math, the retention, the setting, and garbage in Redis."""

from __future__ import annotations

import calendar
import re
import time

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

import jobkit
from jobkit import keys, metrics
from jobkit.config import load_settings
from jobkit.errors import ConfigError
from jobkit.metrics import BUCKET_BOUNDS_MS, Counts
from jobkit.web.metrics_pages import PROMETHEUS_CONTENT_TYPE, label
from tests.conftest import wait_for
from tests.jobs import FailingJob, FlakyJob, NoopJob
from tests.test_web import Client

FAILING, FLAKY, NOOP = "tests.jobs.FailingJob", "tests.jobs.FlakyJob", "tests.jobs.NoopJob"


@pytest.fixture
def client(r: redis.Redis) -> Client:
    return Client()


@pytest.fixture
def raw(r: redis.Redis, redis_server: str) -> redis.Redis:
    """The same Redis, replying in bytes."""
    return redis.Redis.from_url(redis_server)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """/metrics parsed by Prometheus' own parser: (sample name, labels) -> value."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def row(page: str, job_class: str) -> list[str]:
    """The cells of a class's row in the Metrics page's table."""
    match = re.search(rf'<tr><td><a href="#class-\d+">{re.escape(job_class)}</a></td>(.*?)</tr>',
                      page, re.S)
    assert match, f"no row for {job_class}"
    return re.findall(r"<td[^>]*>([^<]*)</td>", match.group(1))


@pytest.mark.usefixtures("worker")
def test_a_worker_records_runs_and_failures_shown_on_the_page_and_in_prometheus(
        client: Client) -> None:
    NoopJob.perform_later()
    NoopJob.perform_later()
    FailingJob.perform_later("for metrics")
    FlakyJob.perform_later("for metrics")  # its first attempt fails, and is retried

    def shown() -> str | None:
        _, _, text = client.get("/metrics")
        found = samples(text)
        done = found.get(("jobkit_jobs_executed_total", (("class", NOOP),)), 0) >= 2 and \
            found.get(("jobkit_jobs_failed_total", (("class", FAILING),)), 0) >= 1 and \
            found.get(("jobkit_jobs_failed_total", (("class", FLAKY),)), 0) >= 1
        return text if done else None

    # At least: the last second of counts of a test before may land in this one's Redis.
    text = wait_for(shown, what="the runs in /metrics")
    assert isinstance(text, str)
    found = samples(text)
    assert found[("jobkit_jobs_failed_total", (("class", NOOP),))] == 0
    assert found[("jobkit_jobs_executed_total", (("class", FAILING),))] == \
        found[("jobkit_jobs_failed_total", (("class", FAILING),))]
    runs = found[("jobkit_jobs_executed_total", (("class", NOOP),))]
    assert found[("jobkit_job_duration_seconds_count", (("class", NOOP),))] == runs
    assert found[("jobkit_job_duration_seconds_bucket", (("class", NOOP), ("le", "+Inf")))] == runs
    status, headers, page = client.get("/metrics/page?window=1")
    assert status == 200
    noop = row(page, NOOP)
    assert int(noop[0]) >= 2 and noop[1] == "0"
    failing = row(page, FAILING)
    assert failing[0] == failing[1] != "0"
    assert int(row(page, FLAKY)[1]) >= 1
    _, _, filtered = client.get("/metrics/page?window=24&class=failing")
    assert FAILING in filtered and NOOP not in filtered
    assert '<a href="/metrics/page">Metrics</a>' in page  # in the nav


def test_prometheus_format_content_type_and_auth(client: Client, r: redis.Redis,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    metrics.record("app.Odd\"Job\\\nx", 0.03, failed=True)
    metrics.flush()
    status, headers, text = client.get("/metrics")
    assert status == 200 and headers["Content-Type"] == PROMETHEUS_CONTENT_TYPE
    found = samples(text)  # Prometheus' parser reads the escaped label back
    assert found[("jobkit_jobs_failed_total", (("class", "app.Odd\"Job\\\nx"),))] == 1
    assert found[("jobkit_job_duration_seconds_bucket",
                  (("class", "app.Odd\"Job\\\nx"), ("le", "0.03")))] == 1
    assert found[("jobkit_job_duration_seconds_bucket",
                  (("class", "app.Odd\"Job\\\nx"), ("le", "0.02")))] == 0
    assert ("jobkit_queue_size", (("queue", "default"),)) in found
    monkeypatch.setenv("JOBKIT_WEB_USERNAME", "admin")
    monkeypatch.setenv("JOBKIT_WEB_PASSWORD", "secret")
    assert client.get("/metrics")[0] == 401
    assert client.get("/metrics/page")[0] == 401


def test_label_escaping() -> None:
    assert label('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    assert label(b"caf\xc3\xa9 \xff") == "café \\\\xff"  # odd bytes as \xNN, the \ escaped


def test_histogram_buckets_and_percentiles() -> None:
    assert metrics.bucket_of(0) == 0 and metrics.bucket_of(20) == 0  # Prometheus' le: <=
    assert metrics.bucket_of(20.5) == 1
    assert metrics.bucket_of(BUCKET_BOUNDS_MS[-1] + 1) == len(BUCKET_BOUNDS_MS)
    counts = Counts()
    counts.histogram[0] = 50  # 0-20 ms
    counts.histogram[1] = 50  # 20-30 ms
    assert counts.percentile(0.5) == pytest.approx(20)
    assert counts.percentile(0.25) == pytest.approx(10)
    assert counts.percentile(0.99) == pytest.approx(29.8)
    counts.histogram[-1] = 100_000  # beyond the last bound: at least that long
    assert counts.percentile(0.99) == BUCKET_BOUNDS_MS[-1]
    assert Counts().percentile(0.5) is None and Counts().mean_ms is None


def test_flush_writes_minute_hour_and_total_with_their_retention(r: redis.Redis) -> None:
    metrics.record("app.RetentionJob", 0.5, failed=False)
    metrics.record("app.RetentionJob", 0.004, failed=True)
    metrics.flush()
    minute = r.keys("jobkit:metrics:m:*:app.RetentionJob")
    hour = r.keys("jobkit:metrics:h:*:app.RetentionJob")
    assert len(minute) == 1 and len(hour) == 1
    assert r.hgetall(minute[0]) == r.hgetall(hour[0]) == r.hgetall(
        "jobkit:metrics:total:app.RetentionJob") == {"e": "2", "f": "1", "ms": "504", "0": "1",
                                                     "8": "1"}
    assert 72 * 3600 < r.ttl(minute[0]) <= metrics.MINUTE_TTL_SECONDS
    assert 30 * 86400 < r.ttl(hour[0]) <= metrics.HOUR_TTL_SECONDS
    assert r.ttl("jobkit:metrics:total:app.RetentionJob") == -1
    assert r.zscore(keys.METRICS_CLASSES, "app.RetentionJob") is not None


def test_a_window_reads_its_hours_hourly_and_the_minutes_before_them_one_by_one(
        raw: redis.Redis) -> None:
    now = calendar.timegm((2026, 3, 2, 10, 30, 15))  # 24 h window: 2026-03-01 10:31 .. now
    at = calendar.timegm

    def put(resolution: str, stamp: int, executions: int) -> None:
        raw.hset(keys.metrics(b"app.W", resolution, stamp), "e", executions)

    put("m", at((2026, 3, 1, 10, 30, 0)), 1000)  # a minute before the window
    put("m", at((2026, 3, 1, 10, 31, 0)), 1)  # its first minute
    put("h", at((2026, 3, 1, 10, 0, 0)), 2000)  # a partial hour: read minute by minute
    put("h", at((2026, 3, 1, 11, 0, 0)), 10)  # whole hours inside
    put("h", at((2026, 3, 2, 9, 0, 0)), 100)
    put("m", at((2026, 3, 2, 9, 59, 0)), 3000)  # inside hour 9: read through the hour
    put("h", at((2026, 3, 2, 10, 0, 0)), 10_000)  # the current hour, up to now
    put("m", at((2026, 3, 2, 10, 30, 0)), 20_000)  # the current minute, inside it
    raw.zadd(keys.METRICS_CLASSES, {b"app.W": now})
    (found,) = metrics.read(24, now=now, client=raw)
    assert found.counts.executions == 1 + 10 + 100 + 10_000
    assert [p.counts.executions for p in found.series if p.counts.executions] == [1, 10, 100,
                                                                                    10_000]
    (hourly,) = metrics.read(1, now=now, client=raw)  # minute by minute: 09:31 .. 10:30
    assert hourly.counts.executions == 3000 + 20_000 and len(hourly.series) == 60


def test_garbage_in_metrics_keys_does_not_break_the_page_or_prometheus(
        client: Client, raw: redis.Redis) -> None:
    now = metrics.minute_of(time.time())
    odd = b"app.<b>Odd\xff\"\n"
    raw.zadd(keys.METRICS_CLASSES, {odd: now, b"app.WrongType": now, b"app.Fine": now})
    raw.hset(keys.metrics(odd, "m", now), mapping={b"e": b"3", b"f": b"\xff", b"ms": b"1.5",
                                                   b"99": b"4", b"\xfe": b"1", b"2": b"x"})
    raw.hset(keys.metrics(odd), mapping={b"e": b"3", b"0": b"nan"})
    raw.set(keys.metrics(b"app.WrongType", "m", now), b"not a hash")
    raw.set(keys.metrics(b"app.WrongType"), b"not a hash")
    raw.hset(keys.metrics(b"app.Fine", "m", now), mapping={b"e": b"1", b"0": b"1"})
    status, _, page = client.get("/metrics/page?window=8")
    assert status == 200
    assert "<b>Odd" not in page
    assert row(page, "app.&lt;b&gt;Odd\\xff&#34;\n")[:2] == ["3", "0"]
    assert row(page, "app.Fine")[:2] == ["1", "0"]
    status, _, text = client.get("/metrics")
    assert status == 200
    found = samples(text)
    assert found[("jobkit_jobs_executed_total", (("class", 'app.<b>Odd\\xff"\n'),))] == 3
    assert found[("jobkit_jobs_executed_total", (("class", "app.WrongType"),))] == 0


def test_the_setting_turns_recording_off(r: redis.Redis) -> None:
    jobkit.configure(metrics=False)
    metrics.record("app.OffJob", 0.01, failed=False)
    metrics.flush()
    assert r.keys("jobkit:metrics:*") == []
    jobkit.configure(metrics=True)
    metrics.record("app.OffJob", 0.01, failed=False)
    metrics.flush()
    assert r.keys("jobkit:metrics:*")
    assert load_settings(environ={"JOBKIT_METRICS": "false"}).metrics is False
    assert load_settings(environ={}).metrics is True
    with pytest.raises(ConfigError, match="JOBKIT_METRICS"):
        load_settings(environ={"JOBKIT_METRICS": "sometimes"})


def test_a_run_that_raises_is_a_failure_unless_handed_back(
        monkeypatch: pytest.MonkeyPatch) -> None:
    class HandedBack(Exception):
        pass

    recorded: list[tuple[str, bool]] = []
    monkeypatch.setattr(metrics, "record",
                        lambda name, seconds, failed: recorded.append((name, failed)))
    with pytest.raises(ValueError), metrics.timed("app.TimedJob"):
        raise ValueError("boom")
    with pytest.raises(HandedBack), metrics.timed("app.TimedJob", not_failures=(HandedBack,)):
        raise HandedBack()
    with metrics.timed("app.TimedJob"):
        pass
    assert recorded == [("app.TimedJob", True), ("app.TimedJob", False),
                        ("app.TimedJob", False)]
