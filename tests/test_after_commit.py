"""Enqueue after the transaction commits (jobkit.transactions): real PostgreSQL through
SQLAlchemy with the session worker, Django's `atomic` on its test database with a real Redis,
and the test modes."""

from __future__ import annotations

import contextvars
import gc
import json
import logging
import subprocess
import sys
import uuid
import weakref
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any, cast

import pytest
import redis
from sqlalchemy import create_engine, event, insert, select, update
from sqlalchemy.orm import Session

import jobkit
import jobkit.testing
from jobkit import transactions
from jobkit.api import Queue
from jobkit.config import current_settings, use_settings
from jobkit.errors import ConfigError, JobClassError, NotUniqueError
from tests.after_commit_jobs import (
    RAN,
    AtOnceJob,
    LeakJob,
    NoteJob,
    SeeAccountJob,
    UniqueRaisingJob,
)
from tests.conftest import ROOT, wait_for
from tests.doc_examples import DOCS, example_module, python_blocks, run
from tests.jobs import RESULTS
from tests.models import Account, PgSession, pg_engine


@pytest.fixture
def watched(pg_tables: None) -> Iterator[Any]:
    transactions.watch(PgSession)
    yield PgSession
    transactions.unwatch(PgSession)


def _records(client: redis.Redis) -> dict[str, dict]:
    """The SeeAccountJob records so far, by job id."""
    rows = [json.loads(raw) for raw in client.lrange(RESULTS, 0, -1)]
    return {row["job_id"]: row for row in rows if row.get("job") == "SeeAccountJob"}


def test_sqlalchemy_on_a_real_worker(r: redis.Redis, worker: Any, watched: Any) -> None:
    code = uuid.uuid4().hex[:8]
    rolled, committed, kept, dropped = (f"{name}-{code}" for name in
                                        ("rolled", "committed", "kept", "dropped"))

    # A rollback: the held job is never sent.
    with pytest.raises(RuntimeError), PgSession.begin() as session:
        session.add(Account(code=rolled, region=1, name="rolled back"))
        lost = SeeAccountJob.perform_later(rolled)
        assert lost.waiting_for_commit and not lost.successfully_enqueued
        assert transactions.held_jobs(session) == [lost]
        raise RuntimeError("roll back")
    assert not lost.waiting_for_commit and not lost.successfully_enqueued

    # A session that began by itself and wrote (a flush): held until commit; a class that says
    # False is sent at once and runs before the commit, where the row is not visible yet.
    with PgSession() as session:
        session.add(Account(code=committed, region=1, name="committed"))
        session.flush()
        held = SeeAccountJob.set(queue="default").perform_later(committed)
        at_once = AtOnceJob.perform_later(committed)
        bulk = jobkit.perform_all_later([SeeAccountJob(committed), AtOnceJob(committed)])
        assert held.waiting_for_commit and bulk[0].waiting_for_commit
        assert at_once.successfully_enqueued and bulk[1].successfully_enqueued
        wait_for(lambda: {at_once.job_id, bulk[1].job_id} <= _records(r).keys(),
                 timeout=60, what="the jobs sent at once to run before the commit")
        assert _records(r)[at_once.job_id]["name"] is None
        assert held.job_id not in _records(r)
        session.commit()
    assert held.successfully_enqueued and bulk[0].successfully_enqueued
    assert not held.waiting_for_commit and held.enqueue_error is None

    # Savepoints: a released one's jobs wait for the outer commit; a rolled-back one's are
    # dropped while the outer transaction commits.
    with PgSession.begin() as session:
        session.add(Account(code=kept, region=1, name="kept"))
        outer = SeeAccountJob.perform_later(kept)
        with session.begin_nested():
            released = SeeAccountJob.perform_later(kept)
        savepoint = session.begin_nested()
        session.add(Account(code=dropped, region=1, name="dropped"))
        gone = SeeAccountJob.perform_later(dropped)
        savepoint.rollback()
        assert not gone.waiting_for_commit
        assert transactions.held_jobs(session) == [outer, released]
        assert outer.waiting_for_commit and released.waiting_for_commit
    assert outer.successfully_enqueued and released.successfully_enqueued
    assert not gone.successfully_enqueued

    # Outside a transaction, and in a session that has only read: sent at once.
    plain = SeeAccountJob.perform_later(kept)
    assert plain.successfully_enqueued
    with PgSession() as session:
        session.execute(select(Account).limit(1))
        assert session.in_transaction()
        reader = SeeAccountJob.perform_later(kept)
        assert reader.successfully_enqueued and not reader.waiting_for_commit

    ran = {held, bulk[0], outer, released, plain, reader}
    wait_for(lambda: {job.job_id for job in ran} <= _records(r).keys(), timeout=60,
             what="the committed jobs to run")
    seen = _records(r)
    assert {seen[job.job_id]["name"] for job in (held, bulk[0])} == {"committed"}
    assert {seen[job.job_id]["name"] for job in (outer, released, plain, reader)} == {"kept"}
    # Every job sent ran; the two never sent are not there.
    assert lost.job_id not in seen and gone.job_id not in seen

    # Each LeakJob enqueues a job, then leaves a watched session's transaction open: the
    # worker forgets it before the next job, whose enqueue is not held by it (more jobs than
    # worker processes, so some process runs two).
    leak = f"leak-{code}"
    for _ in range(12):
        LeakJob.perform_later(leak)

    def follow_ups() -> int:
        return sum(1 for row in _records(r).values() if row["code"] == leak)

    wait_for(lambda: follow_ups() == 12, timeout=60,
             what="the 12 jobs enqueued by jobs run after a leaked session")


def test_errors_settings_and_test_modes(watched: Any, caplog: pytest.LogCaptureFixture
                                        ) -> None:
    from jobkit.mailer import deliver_all_later
    from tests.mailers_app import ReportMailer

    code = uuid.uuid4().hex[:8]
    saved = current_settings()
    try:
        with jobkit.testing.fake():
            # In the test modes too, a held job is recorded only once the commit happens.
            with PgSession.begin() as session:
                session.add(Account(code=code, region=1, name="mode"))
                job = SeeAccountJob.perform_later(code)
                mail = ReportMailer.plain_only("a@example.com").deliver_later()
                mails = deliver_all_later([ReportMailer.plain_only("b@example.com")])
                assert job.waiting_for_commit and mail.waiting_for_commit
                assert mails[0].waiting_for_commit
                assert jobkit.testing.jobs() == []
            assert {r.job_id for r in jobkit.testing.jobs()} == \
                {job.job_id, mail.job_id, mails[0].job_id}
            jobkit.testing.clear()

            # A session that began by itself holds jobs once it has written: unflushed
            # changes, or an ORM update run with execute.
            with PgSession() as session:
                session.add(Account(code=code, region=4, name="unflushed"))
                assert SeeAccountJob.perform_later(code).waiting_for_commit
                session.rollback()
                session.execute(update(Account).where(Account.code == code)
                                .values(name="updated"))
                assert SeeAccountJob.perform_later(code).waiting_for_commit
                session.rollback()
            assert jobkit.testing.jobs() == []

            # An enqueue that fails after the commit: logged with its traceback, kept on the
            # job; the commit stands.
            first = UniqueRaisingJob.perform_later(code)
            assert first.successfully_enqueued
            caplog.set_level(logging.ERROR, logger="jobkit.transactions")
            with PgSession.begin() as session:
                session.add(Account(code=code, region=2, name="after"))
                again = UniqueRaisingJob.perform_later(code)
            assert isinstance(again.enqueue_error, NotUniqueError)
            assert not again.successfully_enqueued
            assert f"UniqueRaisingJob {again.job_id}" in caplog.text
            assert "Traceback" in caplog.text or caplog.records[-1].exc_info
            with PgSession() as session:
                assert session.get(Account, (code, 2)) is not None

            # The setting off: sent at once, unless the class says True.
            jobkit.configure(enqueue_after_transaction_commit=False)
            jobkit.testing.clear()
            with PgSession.begin() as session:
                session.add(Account(code=code, region=3, name="off"))
                now = SeeAccountJob.perform_later(code)
                assert now.successfully_enqueued and len(jobkit.testing.jobs()) == 1

                class Always(SeeAccountJob):
                    enqueue_after_transaction_commit = True

                assert Always.perform_later(code).waiting_for_commit
        use_settings(saved)

        # Inline mode performs a held job once the commit happened, in this process.
        with jobkit.testing.inline():
            with PgSession.begin() as session:
                session.add(Account(code=code, region=5, name="inline"))
                inline_job = NoteJob.perform_later(code)
                assert RAN == []
            assert [code] == RAN and inline_job.enqueue_error is None
    finally:
        use_settings(saved)

    with pytest.raises(ConfigError, match="enqueue_after_transaction_commit: 'yes'"):
        jobkit.configure(enqueue_after_transaction_commit="yes")
    with pytest.raises(JobClassError, match="must be True, False or None, not 1"):
        type("Wrong", (SeeAccountJob,), {"enqueue_after_transaction_commit": 1})
    with pytest.raises(TypeError, match="not engines"):
        transactions.watch(create_engine("sqlite://"))


def _atomic() -> AbstractContextManager[Any]:
    """Django's transaction.atomic() on the default database, typed (atomic also decorates,
    which pyright cannot tell apart)."""
    from django.db import transaction

    return cast(AbstractContextManager[Any], transaction.atomic())


def _posts() -> Any:
    from tests.django_app.models import Post

    return cast(Any, Post).objects


def test_django_atomic(own_client: redis.Redis, django_db: None) -> None:
    from tests.django_app.jobs import PublishJob

    queue = Queue("default")
    with pytest.raises(RuntimeError), _atomic():
        lost = PublishJob.perform_later(_posts().create(title="rolled back"))
        raise RuntimeError("roll back")
    assert not lost.successfully_enqueued and queue.size() == 0

    with _atomic():
        held = PublishJob.perform_later(_posts().create(title="kept"))
        try:
            with _atomic():  # a savepoint, rolled back
                gone = PublishJob.perform_later(_posts().create(title="gone"))
                raise RuntimeError("roll back the savepoint")
        except RuntimeError:
            pass
        assert held.waiting_for_commit and queue.size() == 0
    assert held.successfully_enqueued and not gone.successfully_enqueued
    assert queue.size() == 1

    plain = PublishJob.perform_later(_posts().create(title="autocommit"))
    assert plain.successfully_enqueued and queue.size() == 2


def test_docs_examples(monkeypatch: pytest.MonkeyPatch) -> None:
    """The docs section's python examples, run as written in fake mode on the suite's
    PostgreSQL (the Django example, a `py` block, is test_django_atomic's case)."""
    from tests.models import pg_engine

    monkeypatch.setenv("DATABASE_URL", pg_engine.url.render_as_string(hide_password=False))
    text = (DOCS / "jobs.md").read_text()
    section = text.split("## Enqueue after the transaction commits", 1)[1].split("\n## ", 1)[0]
    blocks = python_blocks(section)
    assert len(blocks) == 4
    with jobkit.testing.fake(), example_module("after_commit_docs") as module:
        try:
            for block in blocks:
                run(block, module, "docs/jobs.md")
            assert [r.args for r in jobkit.testing.jobs()] == \
                [[module.receipt.arguments[0]], [module.order_id]]
        finally:
            if hasattr(module, "Session"):
                transactions.unwatch(module.Session)
                module.Base.metadata.drop_all(module.engine)
                module.engine.dispose()


def test_without_sqlalchemy_or_django() -> None:
    """An enqueue imports neither SQLAlchemy nor Django when the program does not use them
    (as if they were not installed)."""
    code = """
import sys
sys.modules["sqlalchemy"] = sys.modules["django"] = sys.modules["django.db"] = None
import jobkit, jobkit.testing

class Plain(jobkit.Job):
    def perform(self): ...

with jobkit.testing.fake():
    assert Plain.perform_later().successfully_enqueued
    assert all(job.successfully_enqueued for job in jobkit.perform_all_later([Plain()]))
    assert len(jobkit.testing.jobs()) == 2
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr


def test_dropped_sessions_bindings_and_write_paths(watched: Any,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    code = uuid.uuid4().hex[:8]
    caplog.set_level(logging.ERROR, logger="jobkit.transactions")
    with jobkit.testing.fake():
        # A session dropped without commit or close: its jobs are logged when it is
        # collected; `reset` (what the worker does around each job) frees this context.
        dropped = PgSession()
        dropped.begin()
        lost = NoteJob.perform_later(code)
        assert lost.waiting_for_commit and NoteJob.perform_later(code).waiting_for_commit
        transactions.reset()
        assert NoteJob.perform_later(code).successfully_enqueued
        del dropped
        gc.collect()
        assert f"NoteJob {lost.job_id}" in caplog.text and "garbage-collected" in caplog.text
        assert not lost.waiting_for_commit and not lost.successfully_enqueued
        reader = PgSession()
        reader.execute(select(1))  # begun by itself: its connection is followed for writes
        collected = [weakref.ref(reader), weakref.ref(reader.connection())]
        del reader
        gc.collect()
        assert [ref() for ref in collected] == [None, None]  # jobkit keeps nothing alive
        jobkit.testing.clear()

        # A session begun in one context (a FastAPI dependency's thread), used in another:
        # not seen there unless named with `holding`.
        def dependency() -> Iterator[Any]:
            with PgSession.begin() as session:
                yield session

        def endpoint(session: Any, bind: bool) -> Any:
            session.add(Account(code=code, region=int(bind), name="endpoint"))
            session.flush()
            if not bind:
                return NoteJob.perform_later(code)
            with transactions.holding(session):
                return NoteJob.perform_later(code)

        for bind in (False, True):
            gen = dependency()
            session = contextvars.copy_context().run(next, gen)
            job = contextvars.copy_context().run(endpoint, session, bind)
            assert job.waiting_for_commit is bind
            contextvars.copy_context().run(next, gen, None)  # commits
            assert job.successfully_enqueued
        with pytest.raises(TypeError, match="is not watched"), \
                transactions.holding(Session(pg_engine)):
            pass
        jobkit.testing.clear()

        # Writes that bypass the ORM's flush are seen (through the connection).
        for write in ("bulk", "connection"):
            with PgSession() as session:
                if write == "bulk":
                    session.bulk_insert_mappings(Account, [  # type: ignore[arg-type]
                        {"code": code, "region": 7, "name": "bulk"}])
                else:
                    session.connection().execute(insert(Account).values(
                        code=code, region=8, name="core"))
                assert NoteJob.perform_later(code).waiting_for_commit, write
                session.rollback()
        assert jobkit.testing.jobs() == []

        # A job enqueued while the transaction rolls back (an after_rollback listener) is
        # sent at once; unwatch during a transaction still sends what it holds at the commit.
        alerts: list[Any] = []
        with PgSession() as session:
            event.listen(session, "after_rollback",
                         lambda s: alerts.append(NoteJob.perform_later("alert")))
            session.add(Account(code=code, region=9, name="rolled"))
            session.flush()
            session.rollback()
        assert alerts and alerts[0].successfully_enqueued
        with PgSession() as session:
            session.add(Account(code=code, region=10, name="unwatched"))
            kept = NoteJob.perform_later(code)
            transactions.unwatch(PgSession)
            session.commit()
        transactions.watch(PgSession)
        assert kept.successfully_enqueued


def test_django_testcase(own_client: redis.Redis, django_db: None) -> None:
    """Inside Django's TestCase (pytest-django's django_db too) the atomic blocks it opens
    around each test, which never commit, hold nothing; the test's own blocks still do."""
    import unittest

    from django.test import TestCase

    from tests.django_app.jobs import PublishJob

    queue = Queue("default")

    class Case(TestCase):
        def test_enqueue(self) -> None:
            post = _posts().create(title="in a test")
            self.assertTrue(PublishJob.perform_later(post).successfully_enqueued)
            with self.captureOnCommitCallbacks(execute=True), _atomic():
                held = PublishJob.perform_later(post)
                self.assertTrue(held.waiting_for_commit)
                self.assertEqual(queue.size(), 1)
            self.assertTrue(held.successfully_enqueued)
            self.assertEqual(queue.size(), 2)

    result = unittest.TestResult()
    unittest.defaultTestLoader.loadTestsFromTestCase(Case).run(result)
    assert result.testsRun == 1 and result.wasSuccessful(), result.errors + result.failures


def test_django_several_databases() -> None:
    """Inside atomic blocks of two databases, a job is sent after the last commit, and never
    if one rolls back (a subprocess: Django set up with two databases)."""
    code = """
import django
from django.conf import settings
memory = {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}
settings.configure(DATABASES={"default": memory, "other": memory})
django.setup()
from django.db import transaction
import jobkit, jobkit.testing

class Plain(jobkit.Job):
    def perform(self): ...

with jobkit.testing.fake():
    with transaction.atomic():
        with transaction.atomic(using="other"):
            job = Plain.perform_later()
        assert job.waiting_for_commit and jobkit.testing.jobs() == []
    assert job.successfully_enqueued and len(jobkit.testing.jobs()) == 1
    with transaction.atomic(), transaction.atomic(using="other"):
        lost = Plain.perform_later()
        transaction.set_rollback(True, using="other")
    assert not lost.successfully_enqueued and len(jobkit.testing.jobs()) == 1
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
