"""Sentry on a real prefork worker set up as docs/observability.md says: sentry-sdk's
CeleryIntegration initialised in a `require` module (tests/sentry_worker.py), its events kept
in a Redis list instead of sent. Which failures become events, and one trace from the enqueue
to the run."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import sentry_sdk
from celery.signals import before_task_publish

import jobkit
from jobkit.config import current_settings, use_settings
from jobkit.testing_services import RedisServer
from tests.conftest import start_worker, wait_for
from tests.sentry_worker import (
    DoomedJob,
    ReportedRetriedJob,
    RetriedJob,
    TracedJob,
    from_the_docs,
)

EVENTS = "test:sentry:events"
FAILED_FOR_GOOD = "jobkit.worker.execution: job %s %s failed for good (%s): %r"


@pytest.fixture(scope="module")
def events(own_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[redis.Redis]:
    """A client on `own_redis`, where this process enqueues and the module's one worker
    pushes its Sentry events (onto EVENTS)."""
    before = current_settings()
    jobkit.configure(redis_url=own_redis.url)
    log: Path = tmp_path_factory.mktemp("sentry") / "worker.log"
    worker = start_worker(own_redis.url, log, "-r", "tests.sentry_worker", "-c", "1",
                          env={"JOBKIT_SENTRY_EVENTS": EVENTS})
    try:
        yield redis.Redis.from_url(own_redis.url)
    finally:
        worker.stop()
        use_settings(before)


def events_of(client: redis.Redis, job_class: type[jobkit.Job], attempts: int
              ) -> list[dict[str, Any]]:
    """The events whose task name and transaction are the job class's path, once its
    `attempts` runs sent their transactions (a run's events come before its transaction)."""
    task = f"{job_class.__module__}.{job_class.__qualname__}"

    def sent() -> list[dict[str, Any]]:
        return [e for e in map(json.loads, client.lrange(EVENTS, 0, -1))
                if e["extra"]["celery-job"]["task_name"] == task == e["transaction"]]

    wait_for(lambda: sum(e.get("type") == "transaction" for e in sent()) == attempts,
             timeout=30, what=f"{attempts} run(s) of {task}")
    return sent()


def summary(event: dict[str, Any]) -> tuple[str, str, str]:
    """(kind, task id, what): the exception and how it was caught, the log line, the
    transaction's status."""
    task_id = event["tags"]["celery_task_id"]
    if event.get("type") == "transaction":
        return "transaction", task_id, event["contexts"]["trace"]["status"]
    if "exception" in event:
        error = event["exception"]["values"][-1]
        how = "handled" if error["mechanism"]["handled"] else "unhandled"
        return "exception", task_id, \
            f"{error['type']}: {error['value']} ({error['mechanism']['type']}, {how})"
    return "log", task_id, f"{event['logger']}: {event['logentry']['message']}"


def test_a_job_that_fails_for_good_is_an_event_a_retried_attempt_is_not(
        events: redis.Redis) -> None:
    doomed, retried = DoomedJob.perform_later(), RetriedJob.perform_later()
    assert [summary(e) for e in events_of(events, DoomedJob, attempts=1)] == [
        ("log", doomed.provider_job_id, FAILED_FOR_GOOD),
        ("exception", doomed.provider_job_id, "ValueError: doomed (celery, unhandled)"),
        ("transaction", doomed.provider_job_id, "internal_error"),
    ]
    sent = [summary(e) for e in events_of(events, RetriedJob, attempts=2)]
    second = sent[-1][1]  # the retry's message has a task id of its own
    assert second != retried.provider_job_id
    assert sent == [
        ("transaction", retried.provider_job_id, "aborted"),  # Celery's Retry: no event
        ("log", second, FAILED_FOR_GOOD),
        ("exception", second, "RuntimeError: attempt 2 (celery, unhandled)"),
        ("transaction", second, "internal_error"),
    ]


def test_around_perform_reports_every_failed_attempt(events: redis.Redis) -> None:
    job = ReportedRetriedJob.perform_later()
    sent = [summary(e) for e in events_of(events, ReportedRetriedJob, attempts=2)]
    second = sent[-1][1]
    # The last attempt's exception is captured once: by the callback (the SDK drops the
    # integration's capture of the same exception as a duplicate).
    assert sent == [
        ("exception", job.provider_job_id, "RuntimeError: attempt 1 (generic, handled)"),
        ("transaction", job.provider_job_id, "aborted"),
        ("exception", second, "RuntimeError: attempt 2 (generic, handled)"),
        ("log", second, FAILED_FOR_GOOD),
        ("transaction", second, "internal_error"),
    ]


def test_the_enqueue_and_every_run_are_one_trace(events: redis.Redis) -> None:
    """The docs' receiver in this process (the web one) and in the worker (for the retry).

    This process's client is set on a scope, not by `sentry_sdk.init`, which would patch
    Celery here for the tests that follow."""
    client = sentry_sdk.Client(traces_sample_rate=1.0, default_integrations=False,
                               auto_enabling_integrations=False)
    receiver = from_the_docs("sentry_trace_headers")
    try:
        with sentry_sdk.isolation_scope() as scope:
            scope.set_client(client)
            with sentry_sdk.start_transaction(name="web request") as request:
                TracedJob.perform_later()
    finally:
        before_task_publish.disconnect(receiver)
        client.close()
    first, second = [e for e in events_of(events, TracedJob, attempts=2)
                     if e.get("type") == "transaction"]
    traces = [e["contexts"]["trace"] for e in (first, second)]
    assert [t["trace_id"] for t in traces] == [request.trace_id] * 2
    assert traces[0]["parent_span_id"] == request.span_id
    spans_of_the_first = {traces[0]["span_id"]} | {s["span_id"] for s in first["spans"]}
    assert traces[1]["parent_span_id"] in spans_of_the_first  # the retry was published there
