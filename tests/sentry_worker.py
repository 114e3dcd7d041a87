"""The worker side of tests/test_sentry.py: `jobkit worker -r tests.sentry_worker`.

With JOBKIT_SENTRY_EVENTS set (a Redis list's key), the worker initialises sentry-sdk as
docs/observability.md says, with a transport that pushes every event and transaction it would
send to Sentry onto that list (as JSON), and connects the docs' `sentry_trace_headers`
receiver. Without it (the test process imports this module for its job classes) nothing is set
up. The docs' `ApplicationJob` is run from the docs in both processes.
"""

from __future__ import annotations

import json
import os
import re
import textwrap
from typing import cast

import redis
import sentry_sdk
from sentry_sdk.envelope import Envelope
from sentry_sdk.integrations.celery import CeleryIntegration
from sentry_sdk.transport import Transport

from jobkit import Job, retry_on
from tests.doc_examples import DOCS, example_module, python_blocks, run

DSN = "https://public@sentry.invalid/1"  # never reached: the transport sends nothing


def from_the_docs(name: str) -> object:
    """Run the docs' python block that defines `name` (indented in a list item there) in a
    module of its own; what it defined."""
    [block] = [b for b in python_blocks((DOCS / "observability.md").read_text())
               if re.search(rf"^\s*(class|def) {name}\b", b, re.MULTILINE)]
    with example_module(f"docs_observability_{name}") as module:
        run(textwrap.dedent(block), module, "docs/observability.md")
    return getattr(module, name)


class RedisListTransport(Transport):
    """What the SDK would send, pushed onto a Redis list: one JSON object per event."""

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key
        self.redis = redis.Redis.from_url(os.environ["REDIS_URL"])

    def capture_envelope(self, envelope: Envelope) -> None:
        for item in envelope.items:
            event = item.get_event() or item.get_transaction_event()
            if event is not None:
                self.redis.rpush(self.key, json.dumps(event, default=str))


ApplicationJob = cast(type[Job], from_the_docs("ApplicationJob"))


class DoomedJob(Job):
    """Fails for good at once: no retries."""

    max_retries = 0

    def perform(self) -> None:
        raise ValueError("doomed")


@retry_on(RuntimeError, wait=0, attempts=2)
class RetriedJob(Job):
    """Fails both attempts: the first is retried, the second is out of retries."""

    def perform(self) -> None:
        raise RuntimeError(f"attempt {self.executions}")


class ReportedRetriedJob(RetriedJob, ApplicationJob):
    """RetriedJob with the docs' `around_perform` capture."""


class TracedJob(RetriedJob):
    """RetriedJob for the trace test alone: its events are told apart by class."""


if os.environ.get("JOBKIT_SENTRY_EVENTS"):
    sentry_sdk.init(dsn=DSN, transport=RedisListTransport(os.environ["JOBKIT_SENTRY_EVENTS"]),
                    integrations=[CeleryIntegration()], traces_sample_rate=1.0)
    from_the_docs("sentry_trace_headers")  # connects it: a retry is a publish too
