"""The Metrics page (per job class, over a window, with charts) and `/metrics` for Prometheus.

Both read what workers record (jobkit.metrics); `/metrics` is Prometheus' text exposition
format 0.0.4, behind the same auth as every page.
"""

from __future__ import annotations

from dataclasses import dataclass

from jobkit import api, display, metrics
from jobkit.metrics import BUCKET_BOUNDS_MS, WINDOW_HOURS, ClassMetrics
from jobkit.web.http import Request, Response
from jobkit.web.routes import page, router

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PERCENTILES = (0.5, 0.95, 0.99)


def _bound(ms: int) -> str:
    return f"{ms / 1000:g} s" if ms >= 1000 else f"{ms} ms"


HISTOGRAM_LABELS = (*(f"≤ {_bound(b)}" for b in BUCKET_BOUNDS_MS),
                    f"> {_bound(BUCKET_BOUNDS_MS[-1])}")


@dataclass(frozen=True)
class Bar:
    """One bar of a chart, its height a fraction of the chart's tallest."""

    height: float
    failed: float
    title: str
    label: str = ""


@router.route("GET", "/metrics/page")
def metrics_page(request: Request) -> Response:
    hours = _window(request.query.get("window", ""))
    match = request.query.get("class", "")
    found = metrics.read(hours, match)
    return page(request, "metrics.html", classes=found, hours=hours, windows=WINDOW_HOURS,
                match=match, charts={m.raw_class: _series_bars(m) for m in found},
                histograms={m.raw_class: _histogram_bars(m) for m in found},
                percentiles=PERCENTILES, duration=duration)


@router.route("GET", "/metrics")
def prometheus(request: Request) -> Response:
    return Response(exposition(metrics.all_time(), api.Stats(), api.queues()),
                    content_type=PROMETHEUS_CONTENT_TYPE)


def exposition(classes: list[ClassMetrics], stats: api.Stats, queues: list[api.Queue]) -> str:
    """The text exposition: per class counters and duration histogram, then the totals and
    each queue's size and latency."""
    lines = [*_family("jobkit_jobs_executed_total", "counter", "Job runs by class.",
                      [(f'{{class="{label(m.raw_class)}"}}', m.counts.executions)
                       for m in classes]),
             *_family("jobkit_jobs_failed_total", "counter", "Job runs that failed, by class.",
                      [(f'{{class="{label(m.raw_class)}"}}', m.counts.failures)
                       for m in classes]),
             "# HELP jobkit_job_duration_seconds Job run time by class.",
             "# TYPE jobkit_job_duration_seconds histogram"]
    for m in classes:
        name, seen = label(m.raw_class), 0
        for bound, n in zip((*(f"{b / 1000:g}" for b in BUCKET_BOUNDS_MS), "+Inf"),
                            m.counts.histogram, strict=True):
            seen += n
            lines.append(f'jobkit_job_duration_seconds_bucket{{class="{name}",le="{bound}"}} '
                         f"{seen}")
        lines.append(f'jobkit_job_duration_seconds_sum{{class="{name}"}} '
                     f"{m.counts.total_ms / 1000!r}")
        lines.append(f'jobkit_job_duration_seconds_count{{class="{name}"}} {seen}')
    lines += [*_family("jobkit_processed_total", "counter", "Jobs processed.",
                       [("", stats.processed)]),
              *_family("jobkit_failed_total", "counter", "Jobs failed.", [("", stats.failed)]),
              *_family("jobkit_queue_size", "gauge", "Jobs waiting in each queue.",
                       [(f'{{queue="{label(q.raw_name)}"}}', q.size()) for q in queues]),
              *_family("jobkit_queue_latency_seconds", "gauge",
                       "How long the next job of each queue has waited.",
                       [(f'{{queue="{label(q.raw_name)}"}}', round(q.latency(), 3))
                        for q in queues])]
    return "\n".join(lines) + "\n"


def label(value: bytes | str) -> str:
    """A label value as the text format wants it: UTF-8 (odd bytes as \\xNN), and backslash,
    double quote and line feed escaped."""
    return display.shown(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def duration(ms: float | None) -> str:
    """Milliseconds as people read them: 12 ms, 1.5 s, 2.3 min; none: a dash."""
    if ms is None:
        return "–"
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    return f"{ms / 60_000:.1f} min"


def _family(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]
            ) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}",
            *(f"{name}{labels} {value!r}" for labels, value in samples)]


def _window(given: str) -> int:
    """The window asked for, in hours, if it is one of WINDOW_HOURS; else the first."""
    return next((hours for hours in WINDOW_HOURS if str(hours) == given), WINDOW_HOURS[0])


def _series_bars(found: ClassMetrics) -> list[Bar]:
    peak = max([1, *(p.counts.executions for p in found.series)])
    return [Bar(p.counts.executions / peak, p.counts.failures / peak,
                f"{display.when(p.start)}: {p.counts.executions} run(s), "
                f"{p.counts.failures} failed") for p in found.series]


def _histogram_bars(found: ClassMetrics) -> list[Bar]:
    peak = max([1, *found.counts.histogram])
    return [Bar(n / peak, 0.0, f"{label_}: {n} run(s)", label_)
            for label_, n in zip(HISTOGRAM_LABELS, found.counts.histogram, strict=True)]
