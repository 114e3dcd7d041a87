"""Celery's publish signals on jobkit's enqueue path, and one OpenTelemetry trace from a request
in this process to the run on a real worker (prefork, set up as docs/observability.md says)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery, current_app, signals
from opentelemetry import trace
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.semconv._incubating.attributes.messaging_attributes import (
    MESSAGING_MESSAGE_ID,
)

import jobkit
from jobkit import perform_all_later
from jobkit.keys import SCHEDULE
from jobkit.publish_signals import listening
from jobkit.testing_services import RedisServer
from tests.conftest import start_worker, wait_for
from tests.doc_examples import DOCS, example_module, python_blocks
from tests.doc_examples import run as run_example
from tests.tracing_worker import (
    SEEN,
    DebouncedTracedJob,
    FlakyTracedJob,
    TracedJob,
    UniqueTracedJob,
)

TASK = "tests.tracing_worker.TracedJob"


@pytest.fixture
def provider() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    """This process traced into memory (no global provider: the instrumentor is given it)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    CeleryInstrumentor().instrument(tracer_provider=provider)
    try:
        yield provider, exporter
    finally:
        CeleryInstrumentor().uninstrument()


def _message_id(span: ReadableSpan | dict) -> Any:
    attributes = span["attributes"] if isinstance(span, dict) else span.attributes or {}
    return attributes.get(MESSAGING_MESSAGE_ID)  # the instrumentation's name for it


def test_one_trace_from_the_request_to_the_worker(
        own_client: redis.Redis, own_redis: RedisServer, tmp_path: Path,
        provider: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    spans_file = tmp_path / "worker-spans.jsonl"
    worker = start_worker(own_redis.url, tmp_path / "worker.log", "-r", "tests.tracing_worker",
                          "-c", "1", env={"JOBKIT_TRACE_FILE": str(spans_file),
                                          "OTEL_BSP_SCHEDULE_DELAY": "100"})
    try:
        _check_one_trace(own_client, spans_file, *provider)
        _check_a_retry_stays_in_the_trace(own_client, spans_file, *provider)
    finally:
        worker.stop()


def _worker_spans(spans_file: Path) -> list[dict[str, Any]]:
    lines = spans_file.read_text().splitlines() if spans_file.exists() else []
    return [json.loads(line) for line in lines]


def _check_a_retry_stays_in_the_trace(own_client: redis.Redis, spans_file: Path,
                                      tracer_provider: TracerProvider,
                                      exporter: InMemorySpanExporter) -> None:
    """request -> enqueue -> first run (fails) -> the retry's publish -> second run."""
    with tracer_provider.get_tracer("test").start_as_current_span("retried request") as request:
        job = FlakyTracedJob.perform_later("flaky")
    wait_for(lambda: own_client.hexists(SEEN, "flaky"), timeout=60, what="the retried run")
    name = "tests.tracing_worker.FlakyTracedJob"

    def spans_of_the_job() -> list[dict[str, Any]]:
        return [s for s in _worker_spans(spans_file) if s["name"].endswith(name)]

    wait_for(lambda: len(spans_of_the_job()) == 3, timeout=30, what="run, retry publish, run")
    spans = spans_of_the_job()
    trace_id = f"{request.get_span_context().trace_id:032x}"
    assert {s["trace_id"] for s in spans} == {trace_id}
    [sent] = [s for s in exporter.get_finished_spans() if _message_id(s) == job.provider_job_id]
    first = next(s for s in spans if s["kind"] == "CONSUMER"
                 and _message_id(s) == job.provider_job_id)
    retry = next(s for s in spans if s["kind"] == "PRODUCER")
    second = next(s for s in spans if s["kind"] == "CONSUMER" and s is not first)
    assert sent.context is not None and first["parent_span_id"] == f"{sent.context.span_id:016x}"
    assert retry["parent_span_id"] == first["span_id"]
    assert second["parent_span_id"] == retry["span_id"]


def _check_one_trace(own_client: redis.Redis, spans_file: Path,
                     tracer_provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    before: list[dict[str, Any]] = []
    after: list[dict[str, Any]] = []

    def on_before(sender: Any, **kwargs: Any) -> None:
        before.append({"sender": sender, **kwargs, "headers": dict(kwargs["headers"])})
        kwargs["headers"].setdefault("headers", {})["x_inner"] = "1"  # as Sentry's recipe

    def on_after(sender: Any, **kwargs: Any) -> None:
        stored = [json.loads(m)["headers"] for m in own_client.lrange("unserved", 0, -1)]
        after.append({"sender": sender, **kwargs, "stored": stored})

    signals.before_task_publish.connect(on_before, weak=False)
    signals.after_task_publish.connect(on_after, weak=False)
    with example_module("docs_observability_tenant") as docs:
        run_example(python_blocks((DOCS / "observability.md").read_text())[1], docs,
                    "docs/observability.md")  # its receiver adds the `tenant` header
        try:
            with tracer_provider.get_tracer("test").start_as_current_span("web request") \
                    as request:
                docs.tenant.set("acme")
                now = TracedJob.perform_later("now")
                later = TracedJob.set(wait=1).perform_later("later")
                bulk = perform_all_later([TracedJob("bulk-1"), TracedJob("bulk-2")])
                unserved = TracedJob.set(queue="unserved").perform_later("unserved")
            assert not trace.get_current_span().get_span_context().is_valid  # nothing leaked
        finally:
            signals.before_task_publish.disconnect(on_before)
            signals.after_task_publish.disconnect(on_after)
            signals.before_task_publish.disconnect(docs.carry_tenant)
    jobs = {"now": now, "later": later, "bulk-1": bulk[0], "bulk-2": bulk[1],
            "unserved": unserved}

    # The arguments Celery's send_task_message passes, for every path.
    assert [b["headers"]["id"] for b in before] == [j.provider_job_id for j in jobs.values()]
    for seen, job in zip(before, jobs.values(), strict=True):
        assert seen["sender"] == TASK and seen["exchange"] == ""
        assert seen["routing_key"] == job.queue_name == seen["declare"][0].name
        assert seen["body"][0][0]["job_id"] == job.job_id  # (args, kwargs, embed): [payload]
        assert seen["headers"]["task"] == TASK and seen["headers"]["job_id"] == job.job_id
        assert seen["properties"]["correlation_id"] == job.provider_job_id
        assert seen["retry_policy"] == {"max_retries": 0}
    assert [(a["sender"], a["headers"]["id"]) for a in after] == \
        [(TASK, j.provider_job_id) for j in jobs.values()]
    # `after` fires once the message is in Redis, with what receivers added to its headers.
    stored = after[-1]["stored"]
    assert [(h["id"], h["tenant"]) for h in stored] == [(unserved.provider_job_id, "acme")]
    assert stored[0]["traceparent"].split("-")[1] == f"{request.get_span_context().trace_id:032x}"
    assert own_client.zcard(SCHEDULE) in (0, 1)  # `later` was parked (or already moved)

    # Worker side: each run's span is the child of its enqueue's span, in the request's trace.
    ran = ("now", "later", "bulk-1", "bulk-2")
    wait_for(lambda: own_client.hlen(SEEN) == len(ran), timeout=60, what="the jobs to run")

    def worker_spans() -> dict[Any, dict]:
        lines = spans_file.read_text().splitlines() if spans_file.exists() else []
        return {_message_id(s): s for s in map(json.loads, lines) if s["kind"] == "CONSUMER"}

    wait_for(lambda: len(worker_spans()) == len(ran), timeout=30, what="the worker's spans")
    runs = worker_spans()
    producers: dict[Any, ReadableSpan] = {_message_id(s): s for s in exporter.get_finished_spans()
                 if s.kind == trace.SpanKind.PRODUCER}
    trace_id = f"{request.get_span_context().trace_id:032x}"
    for marker in ran:
        job = jobs[marker]
        sent, run = producers[job.provider_job_id], runs[job.provider_job_id]
        assert sent.name == f"apply_async/{TASK}" and run["name"] == f"run/{TASK}"
        assert sent.parent is not None and sent.parent.span_id == request.get_span_context().span_id
        assert (sent.attributes or {}).get("messaging.destination") == job.queue_name
        assert run["trace_id"] == trace_id, marker
        assert sent.context is not None and run["parent_span_id"] == f"{sent.context.span_id:016x}"
        seen = json.loads(own_client.hget(SEEN, marker) or "{}")
        assert seen["task_id"] == job.provider_job_id and seen["tenant"] == "acme"
        assert seen["inner_headers"] == {"x_inner": "1"}  # `task.request.headers`
        assert seen["traceparent"].split("-")[2] == run["parent_span_id"]


def test_batches_unique_and_debounced_jobs_fire_the_pair(own_client: redis.Redis) -> None:
    fired: list[tuple[str, str, str]] = []

    def on_before(sender: Any, headers: dict, **_: Any) -> None:
        fired.append(("before", sender.rpartition(".")[2], headers["id"]))

    def on_after(sender: Any, headers: dict, **_: Any) -> None:
        fired.append(("after", sender.rpartition(".")[2], headers["id"]))

    def unique_only(sender: Any, **_: Any) -> None:
        fired.append(("unique only", sender, ""))

    signals.before_task_publish.connect(on_before, weak=False)
    signals.after_task_publish.connect(on_after, weak=False)
    unique = "tests.tracing_worker.UniqueTracedJob"  # another str than the one jobkit sends
    signals.before_task_publish.connect(unique_only, sender=unique, weak=False)
    try:
        with jobkit.Batch():
            member = TracedJob.perform_later("member")
        first = UniqueTracedJob.perform_later("same")
        duplicate = UniqueTracedJob.perform_later("same")  # not pushed: after fires all the same
        debounced = DebouncedTracedJob.perform_later("key")
    finally:
        signals.before_task_publish.disconnect(on_before)
        signals.after_task_publish.disconnect(on_after)
        signals.before_task_publish.disconnect(unique_only, sender=unique)
    assert member.batch_id is not None and duplicate.duplicate_of == first.job_id
    expected = []
    for job in (member, first, duplicate, debounced):
        assert job.provider_job_id is not None
        expected += [(step, type(job).__name__, job.provider_job_id)
                     for step in ("before", "after")]
    # a receiver connected with sender= hears that class only (names compared by value)
    assert [f for f in fired if f[0] != "unique only"] == expected
    assert [f for f in fired if f[0] == "unique only"] == [("unique only", unique, "")] * 2


def test_a_receiver_that_leaves_an_unencodable_header_is_named(own_client: redis.Redis) -> None:
    def bad(headers: dict, **_: Any) -> None:
        headers["tenant"] = object()

    signals.before_task_publish.connect(bad, weak=False)
    try:
        with pytest.raises(TypeError, match=rf"^{TASK}: a before_task_publish receiver left "
                                            r"headers\['tenant'\] = <object object"):
            TracedJob.perform_later("never sent")
    finally:
        signals.before_task_publish.disconnect(bad)
    assert own_client.llen("default") == 0


def test_an_unreadable_celery_registry_does_not_stop_the_enqueue(
        own_client: redis.Redis, caplog: pytest.LogCaptureFixture) -> None:
    previous = current_app._get_current_object()
    Celery("unfinalized", autofinalize=False).set_current()  # its `tasks` raises
    fired: list[str] = []

    def on_before(headers: dict, **_: Any) -> None:
        fired.append(headers["id"])

    signals.before_task_publish.connect(on_before, weak=False)
    try:
        job = TracedJob.perform_later("enqueued anyway")
    finally:
        signals.before_task_publish.disconnect(on_before)
        previous.set_current()
    assert fired == [job.provider_job_id] and own_client.llen("default") == 1
    assert f"cannot register {TASK} in the current Celery app's tasks" in caplog.text


def test_nothing_listening_costs_nothing(own_client: redis.Redis,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    for signal in (signals.before_task_publish, signals.after_task_publish):
        monkeypatch.setattr(signal, "receivers", [])  # whatever else this process connected
    assert not listening()

    def refused(*_: Any) -> None:
        raise AssertionError("a publication built with nothing listening")

    monkeypatch.setattr("jobkit.publish_signals.Publication", refused)
    job = TracedJob.perform_later("quiet")
    [message] = own_client.lrange("default", 0, -1)
    headers = json.loads(message)["headers"]
    assert headers["id"] == job.provider_job_id and "traceparent" not in headers


def test_a_failed_push_fires_only_before(own_client: redis.Redis,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    fired: list[str] = []

    def on_before(sender: Any, **_: Any) -> None:
        fired.append(f"before {sender}")

    def on_after(sender: Any, **_: Any) -> None:
        fired.append(f"after {sender}")

    signals.before_task_publish.connect(on_before, weak=False)
    signals.after_task_publish.connect(on_after, weak=False)
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{_closed_port()}/0")
    jobkit.configure()
    try:
        with pytest.raises(redis.ConnectionError):
            TracedJob.perform_later("lost")
    finally:
        signals.before_task_publish.disconnect(on_before)
        signals.after_task_publish.disconnect(on_after)
    assert fired == [f"before {TASK}"]


def _closed_port() -> int:
    from jobkit.testing_services import free_port

    return free_port()
