"""Model references (GlobalID): SQLAlchemy on SQLite and PostgreSQL through a real worker,
Django in-process; a record deleted before perform gives a clear error in the dead set."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis

import jobkit
from jobkit import DeserializationError, GlobalID, SerializationError
from jobkit.references import locate, to_global_id
from tests.conftest import job_keys
from tests.jobs import RESULTS
from tests.models import Account, PgSession, SqliteSession, User, WelcomeJob
from tests.test_worker_integration import dead_entries, results


@pytest.fixture
def records(databases: None) -> Iterator[tuple[User, list[Account]]]:
    sqlite, pg = SqliteSession(), PgSession()
    user = User(email="ada@example.com")
    accounts = [Account(code="A/1,x", region=1, name="first"),
                Account(code="B", region=2, name="second")]
    sqlite.add(user)
    pg.add_all(accounts)
    sqlite.commit()
    pg.commit()
    yield user, accounts
    sqlite.query(User).delete()
    pg.query(Account).delete()
    sqlite.commit()
    pg.commit()
    SqliteSession.remove()
    pg.close()


def test_references_are_global_ids(records) -> None:
    user, accounts = records
    assert to_global_id(user).uri == f"gid://app/tests.models.User/{user.id}"
    gid = to_global_id(accounts[0])
    assert gid.uri == "gid://app/tests.models.Account/A%2F1%2Cx,1"  # composite key, escaped
    assert GlobalID.parse(gid.uri) == gid


def test_worker_locates_records_in_sqlite_and_postgresql(
        r: redis.Redis, worker, records) -> None:
    user, accounts = records
    WelcomeJob.perform_later(user, accounts)
    wire = json.loads(json.dumps(WelcomeJob(user, accounts).serialize()))
    assert wire  # serializable: references, not rows
    [done] = results(r, 1)
    assert done == {"job": "WelcomeJob", "user_type": "User", "email": "ada@example.com",
                    "accounts": [["A/1,x", 1, "first"], ["B", 2, "second"]]}


def test_worker_sees_fresh_data(r: redis.Redis, worker, records) -> None:
    user, accounts = records
    WelcomeJob.set(wait=0.5).perform_later(user, accounts[:1])
    session = SqliteSession()
    session.get(User, user.id).email = "changed@example.com"
    session.commit()
    [done] = results(r, 1)
    assert done["email"] == "changed@example.com"


def test_record_deleted_before_perform_goes_to_the_dead_set(
        r: redis.Redis, worker, records) -> None:
    user, accounts = records
    job = WelcomeJob.set(wait=0.5).perform_later(user, accounts)
    pg = PgSession()
    pg.query(Account).filter_by(code="B").delete()
    pg.commit()
    [dead] = dead_entries(r, 1)
    assert dead.job_id == job.job_id
    assert dead.error_class == "jobkit.errors.DeserializationError"
    assert "args[1][1]: gid://app/tests.models.Account/B,2: record not found" in dead.error_message
    assert r.llen(RESULTS) == 0


def test_unsaved_record_cannot_be_enqueued(r: redis.Redis) -> None:
    with pytest.raises(SerializationError, match=r"args\[0\]: User has no primary key yet"):
        WelcomeJob.perform_later(User(email="new@example.com"), [])
    assert job_keys(r) == []


def test_unknown_model_in_a_reference_is_clear() -> None:
    with pytest.raises(DeserializationError, match="no registered locator knows model"):
        locate("gid://app/nowhere.Model/1")
    with pytest.raises(DeserializationError, match="not a global id"):
        locate("http://example.com/1")


def test_django_models_round_trip_as_references(django_db: None) -> None:
    from tests.django_app.jobs import SEEN, PublishJob
    from tests.django_app.models import Post

    post = Post.objects.create(title="Hello")
    assert to_global_id(post).uri == f"gid://app/django_app.Post/{post.pk}"
    previous = jobkit.use_adapter("inline")
    try:
        PublishJob.perform_later(post)
        assert SEEN == ["Hello"]
        job = PublishJob(post)
        payload = json.loads(json.dumps(job.serialize()))
        post.delete()
        with pytest.raises(DeserializationError, match="record not found"):
            jobkit.Job.deserialize(payload)
    finally:
        jobkit.use_adapter(previous)


def test_reference_from_another_app_is_refused(records, monkeypatch) -> None:
    user, _ = records
    uri = to_global_id(user).uri
    monkeypatch.setenv("JOBKIT_APP", "billing")
    with pytest.raises(DeserializationError, match="written by app 'app', this is app 'billing'"):
        locate(uri)
