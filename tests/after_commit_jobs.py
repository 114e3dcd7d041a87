"""Jobs for tests/test_after_commit.py; the session worker imports this module by path."""

from __future__ import annotations

from jobkit import Job
from tests.jobs import record
from tests.models import Account, PgSession


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
