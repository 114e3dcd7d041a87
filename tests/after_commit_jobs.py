"""Jobs for tests/test_after_commit.py; the session worker imports this module by path."""

from __future__ import annotations

from sqlalchemy.orm import sessionmaker

from jobkit import Job, transactions
from tests.jobs import record
from tests.models import Account, PgSession, pg_engine


class SeeAccountJob(Job):
    """Records whether the account it names was visible to the worker when it ran."""

    def perform(self, code: str) -> None:
        with PgSession() as session:
            account = session.get(Account, (code, 1))
            record(job="SeeAccountJob", code=code, job_id=self.job_id,
                   name=account.name if account is not None else None)


class AtOnceJob(SeeAccountJob):
    """Sent at once, even inside a transaction."""

    enqueue_after_transaction_commit = False


class UniqueRaisingJob(Job):
    unique_for = 3600
    unique_conflict = "raise"

    def perform(self, code: str) -> None:
        record(job="UniqueRaisingJob", code=code)


RAN: list[str] = []


class NoteJob(Job):
    """Notes its argument in this process (inline mode)."""

    def perform(self, code: str) -> None:
        RAN.append(code)


LEAKED: list = []  # sessions LeakJob left open in this (worker) process, kept alive on purpose
LeakSession = sessionmaker(pg_engine)


class LeakJob(Job):
    """Enqueues a SeeAccountJob, then leaves a watched session's transaction open, never
    closed: the next job this process performs must not have its enqueues held by it."""

    def perform(self, code: str) -> None:
        transactions.watch(LeakSession)
        SeeAccountJob.perform_later(code)
        session = LeakSession()
        session.begin()  # explicit: it would hold jobs (no connection is taken yet)
        LEAKED.append(session)
