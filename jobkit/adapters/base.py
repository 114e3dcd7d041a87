"""The one seam every adapter implements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from jobkit import cancellation
from jobkit.cancellation import Cancellation
from jobkit.errors import NotRecordingError

if TYPE_CHECKING:
    from jobkit.adapters.test import TestAdapter
    from jobkit.batch.state import BatchStore
    from jobkit.job import Job


class Adapter:
    """Take prepared jobs (queue, priority and due time set) and see that they get performed."""

    name = "base"

    def enqueue(self, job: Job) -> None:
        """Send one job; set `job.provider_job_id` when the backend has its own id."""
        raise NotImplementedError

    def enqueue_all(self, jobs: Sequence[Job]) -> None:
        """Send many jobs; adapters with a cheaper bulk path override this."""
        for job in jobs:
            self.enqueue(job)

    def batches(self) -> BatchStore:
        """Where this adapter keeps batches (jobkit.Batch): Redis, or the test modes' memory."""
        raise NotImplementedError(
            f"batches need the celery adapter or a test mode (jobkit.testing.fake / inline), "
            f"not the {self.name!r} adapter")

    def cancel(self, job_id: str, hard: bool = False) -> Cancellation:
        """`jobkit.cancel`: in Redis, where the celery adapter's jobs wait and run (the inline
        and async adapters run a job at once: their jobs are never found)."""
        return cancellation.cancel(job_id, hard)

    def is_cancelled(self, job_id: str) -> bool:
        """`Job.cancelled` outside a worker: no job run here is ever cancelled."""
        return False

    def recorder(self) -> TestAdapter:
        """The adapter that records jobs for tests (`MyJob.jobs`, `jobkit.testing`); only the
        `test` adapter is one, so any other says how to get it."""
        raise NotRecordingError(
            f"jobs are not recorded with the {self.name!r} adapter: use "
            "`with jobkit.testing.fake():`, the jobkit_fake fixture, or the `test` adapter")
