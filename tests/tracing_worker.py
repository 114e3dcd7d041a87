"""The worker side of tests/test_tracing.py: `jobkit worker -r tests.tracing_worker`.

With JOBKIT_TRACE_FILE set, the worker runs the OpenTelemetry set-up of docs/observability.md
as written (its first python block), exporting every span as one JSON line to that file.
Without it (the test process imports this module for its job class) nothing is set up.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import redis
from celery import current_task
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from jobkit import Debounce, Job, retry_on
from tests.doc_examples import DOCS, example_module, python_blocks, run

SEEN = "test:tracing:seen"


class JsonLinesExporter(SpanExporter):
    """Appends each span as a JSON line: what the test needs to rebuild the trace."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = []
        for span in spans:
            context, parent = span.get_span_context(), span.parent
            lines.append(json.dumps({
                "name": span.name, "kind": span.kind.name,
                "trace_id": f"{context.trace_id:032x}" if context else None,
                "span_id": f"{context.span_id:016x}" if context else None,
                "parent_span_id": f"{parent.span_id:016x}" if parent else None,
                "attributes": dict(span.attributes or {}),
            }, default=str))
        with self.path.open("a") as out:
            out.write("".join(line + "\n" for line in lines))
        return SpanExportResult.SUCCESS


class TracedJob(Job):
    """Records the trace headers and the extra headers its Celery request carries."""

    def perform(self, marker: str) -> None:
        request = cast(Any, current_task).request  # the proxy hides its type
        seen = {"marker": marker, "job_id": self.job_id, "task_id": request.id,
                "traceparent": getattr(request, "traceparent", None),
                "tenant": getattr(request, "tenant", None),
                "inner_headers": request.headers}
        redis.Redis.from_url(os.environ["REDIS_URL"]).hset(SEEN, marker, json.dumps(seen))


@retry_on(RuntimeError, wait=1, attempts=2)
class FlakyTracedJob(TracedJob):
    """Fails its first run: the retry is published, and the second run records as TracedJob."""

    def perform(self, marker: str) -> None:
        if self.executions == 1:
            raise RuntimeError("first run fails")
        super().perform(marker)


class UniqueTracedJob(TracedJob):
    unique_for = 60


class DebouncedTracedJob(TracedJob):
    debounce = Debounce(within=60, by=lambda job: job.arguments[0])


if os.environ.get("JOBKIT_TRACE_FILE"):
    with example_module("docs_observability_worker") as _module:
        run(python_blocks((DOCS / "observability.md").read_text())[0], _module,
            "docs/observability.md")
        _module.init_tracing(JsonLinesExporter(os.environ["JOBKIT_TRACE_FILE"]))
