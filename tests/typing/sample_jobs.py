"""A user's module as `make lint` type-checks it (pyright, basic): what jobkit's types promise.

Every `assert_type` here is checked by pyright and is a no-op at runtime; the module is also
imported by tests/test_typing.py, so the classes must be valid jobs.
"""

from __future__ import annotations

import datetime as dt
from contextlib import AbstractContextManager
from typing import Any, ClassVar, assert_type

import jobkit
from jobkit import ConfiguredJob, Job, retry_on, testing
from jobkit.testing import EnqueuedJob, MatchedJob, TestAdapter


class ImportError_(Exception):
    pass


@retry_on(ImportError_, attempts=3)
class ImportJob(Job):
    queue_as = "storage_analysis"
    max_retries = 5
    batch: ClassVar[int] = 100  # a class attribute of the user's own, declared

    def perform(self, account_id: int, *, dry_run: bool = False) -> int:
        return account_id


def enqueue_things() -> None:
    job = ImportJob.perform_later(1, dry_run=True)
    assert_type(job, ImportJob)
    assert_type(job.successfully_enqueued, bool)
    assert_type(ImportJob.perform_async(2), ImportJob)
    assert_type(ImportJob.perform_in(30, 3), ImportJob)
    assert_type(ImportJob.perform_at(dt.datetime.now(dt.UTC), 4), ImportJob)
    assert_type(ImportJob.perform_bulk([[5], [6]]), list[ImportJob])
    assert_type(ImportJob.perform_now(7), int)
    assert_type(ImportJob(8).perform_now(), int)

    configured: ConfiguredJob[..., int, ImportJob] = ImportJob.set(
        wait=dt.timedelta(minutes=5), queue="default", priority=1)
    assert_type(configured.perform_later(9, dry_run=False), ImportJob)
    assert_type(configured.perform_now(10), int)
    assert_type(ImportJob(11).set(queue="default"), ImportJob)
    assert_type(jobkit.perform_all_later([ImportJob(12), ImportJob(13)]), list[ImportJob])


def in_a_test() -> None:
    with testing.fake() as adapter:
        assert_type(adapter, TestAdapter)
        ImportJob.perform_later(1)
        assert_type(ImportJob.jobs, list[EnqueuedJob])
        assert_type(ImportJob.drain(), int)
        record = testing.assert_enqueued_with(job=ImportJob, args=[1], queue="storage_analysis")
        assert_type(record, MatchedJob)  # an EnqueuedJob
        assert_type(record.args, list[Any])
        assert_type(testing.jobs(ImportJob), list[EnqueuedJob])
        assert_type(testing.assert_enqueued_jobs(1), AbstractContextManager[None])
        with testing.assert_enqueued_jobs(1, job=ImportJob):
            ImportJob.perform_later(2)
        with testing.assert_performed_jobs(1):
            ImportJob.perform_later(3)
        with testing.assert_enqueued_with(job=ImportJob, args=[4]) as found:
            ImportJob.perform_later(4)
        assert_type(found, MatchedJob)
        with testing.perform_enqueued_jobs(only=[ImportJob], at=0.0):
            ImportJob.perform_later(5)
        assert_type(testing.drain_all(), int)


stripe = jobkit.limiter.bucket("stripe", 100, "second")


class SyncAccountJob(Job):
    unique_for = dt.timedelta(hours=1)
    unique_until = "start"
    unique_by = lambda job: job.arguments[0]  # noqa: E731 - the documented form
    unique_conflict = "raise"
    limits_concurrency = jobkit.Concurrency(to=2, key=lambda job: job.arguments[0])
    limiter = stripe

    def perform(self, account_id: int) -> None:
        with stripe.acquire():
            pass


class PushJob(Job):
    debounce = jobkit.Debounce(within=30, by=lambda job: job.arguments[0])

    def perform(self, user_id: int, badge: int) -> None:
        pass


def controls() -> None:
    job = SyncAccountJob.perform_later(1)
    assert_type(job.duplicate_of, str | None)
    try:
        SyncAccountJob.perform_later(1)
    except jobkit.NotUniqueError as error:
        assert_type(error.jobs, list[Any])
    with testing.fake():
        PushJob.perform_later(1, 2)
        assert_type(testing.skipped(PushJob), list[testing.SkippedJob])
        assert_type(testing.held(), list[EnqueuedJob])
        assert_type(PushJob.jobs[0].debounce_key, str | None)


class FetchJob(Job):
    async def perform(self, url: str) -> bytes:
        return url.encode()


def async_jobs() -> None:
    assert_type(FetchJob.perform_later("https://example.com"), FetchJob)
    assert_type(FetchJob.perform_now("https://example.com"), bytes)
    assert_type(FetchJob("u").perform_now(), bytes)
    assert_type(FetchJob.set(queue="io").perform_now("u"), bytes)
    assert_type(ImportJob.set(queue="io").perform_now(1), int)


def time_limits() -> None:
    limited = ImportJob.set(time_limit=60, hard_time_limit=dt.timedelta(minutes=2))
    assert_type(limited.perform_later(1), ImportJob)
    jobkit.perform_all_later([ImportJob(1).set(time_limit=30)])
    try:
        ImportJob.perform_now(1)
    except jobkit.SoftTimeLimitExceeded as error:
        assert_type(error, jobkit.SoftTimeLimitExceeded)


class BatchDoneJob(Job):
    def perform(self, batch_id: str, who: str = "ops") -> None: ...


def batches() -> None:
    batch = jobkit.Batch(on_success=BatchDoneJob, on_death=BatchDoneJob.set(queue="ops"),
                         description="import")
    with batch.on("complete", BatchDoneJob(batch.batch_id, "reports")):
        assert_type(batch, jobkit.Batch)
        assert_type(batch.perform_all_later(ImportJob(n) for n in range(3)), int)
        assert_type(jobkit.Batch.open(ImportJob(1).batch_id), jobkit.OpenBatch)
    status = batch.status
    if status is not None:
        assert_type(status, jobkit.BatchStatus)
        assert_type((status.total, status.pending, status.failed), tuple[int, int, int])
