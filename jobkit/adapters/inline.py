"""Perform at enqueue, after a full JSON round trip, so a bad argument fails as in production."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from jobkit.adapters.base import Adapter

if TYPE_CHECKING:
    from jobkit.job import Job


def wire_copy(job: Job) -> dict:
    """The job's payload exactly as a worker would receive it (through JSON)."""
    return json.loads(json.dumps(job.serialize()))


def perform_payload(payload: dict) -> object:
    """Rebuild the job from its payload and perform it, as a worker does."""
    from jobkit.job import Job

    return Job.deserialize(payload).perform_now()


class InlineAdapter(Adapter):
    """Runs each job now, in the caller, ignoring any delay; errors reach the caller."""

    name = "inline"

    def enqueue(self, job: Job) -> None:
        perform_payload(wire_copy(job))
