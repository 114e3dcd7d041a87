"""Record jobs instead of running them (no Redis): the base of jobkit's test helpers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from jobkit.adapters.base import Adapter

if TYPE_CHECKING:
    from jobkit.job import Job


class TestAdapter(Adapter):
    """Keeps every enqueued job's payload in `enqueued`, in order; performs nothing."""

    __test__ = False  # not a pytest test class
    name = "test"

    def __init__(self) -> None:
        self.enqueued: list[dict] = []

    def enqueue(self, job: Job) -> None:
        self.enqueued.append(job.serialize())  # serializing proves the arguments would travel

    def clear(self) -> None:
        self.enqueued.clear()
