"""A mail job shows as its mailer's `UserMailer#welcome` with readable arguments: in the
dashboard, in the Celery message's argsrepr (what Flower shows) and in the task events a worker
sends from its start."""

from __future__ import annotations

import html
import json
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis

from jobkit import display
from jobkit.arguments import serialize
from jobkit.celery_message import read_task_args
from jobkit.config import current_settings
from jobkit.job_sets import DeadSet, RetrySet
from jobkit.worker.app import create_app
from mailers.user_mailer import UserMailer
from tests.conftest import SmtpServer, start_worker, wait_for
from tests.jobs import EchoJob
from tests.mailers_app import ReportMailer
from tests.models import User
from tests.test_web import Client

MAIL_JOB = "jobkit.mailer.job.MailDeliveryJob"
NAME_CELL = (f'<td title="{MAIL_JOB}">ReportMailer#monthly '
             '<small class="via">via MailDeliveryJob</small></td>')


@pytest.fixture
def user(make_user: Any) -> User:
    return make_user(email="ada@example.com", name="Ada")


def headers(client: redis.Redis, queue: str) -> dict[str, Any]:
    [message] = client.lrange(queue, 0, -1)
    return json.loads(message)["headers"]


def test_the_pages_name_a_mail_job_by_its_mailer_and_action(own_client: redis.Redis,
                                                            user: User) -> None:
    job = ReportMailer.with_(note="hi").monthly(user, "June").deliver_later()
    arguments = f"User({user.id}), 'June'; params {{'note': 'hi'}}"
    web = Client()

    def shows_the_mail(page: str) -> bool:  # and not the rendered mail it carries
        return NAME_CELL in page and arguments in html.unescape(page) \
            and "Report for June" not in page

    status, _, page = web.get("/queues/mailers")
    assert status == 200 and shows_the_mail(page)
    [message] = own_client.lrange("mailers", 0, -1)
    payload = read_task_args(message)[0]
    for job_set in (RetrySet(), DeadSet()):  # as the worker records a failed delivery
        job_set.add(time.time(), "mailers", display.shown(message), job_id=job.job_id,
                    job_class=MAIL_JOB, queue="mailers", payload=payload,
                    error_class="TransientDeliveryError", error_message="451 try later")
    for path in ("/retries", "/dead"):
        status, _, page = web.get(path)
        assert status == 200 and shows_the_mail(page), path
        for query in ("ReportMailer#monthly", "MailDeliveryJob"):
            assert job.job_id in web.get(f"{path}?q={quote(query)}")[2], (path, query)
    [entry] = RetrySet()
    status, _, page = web.get(f"/retries/{quote(entry.key, safe='')}")
    assert status == 200 and f"<h1>ReportMailer#monthly <small class=\"via\" title=\"" \
        f"{MAIL_JOB}\">via MailDeliveryJob</small></h1>" in page
    assert f"<p><code>{html.escape(arguments)}</code></p>" in page.replace("&#39;", "&#x27;")


def test_the_message_headers_carry_readable_arguments(own_client: redis.Redis,
                                                      user: User) -> None:
    ReportMailer.with_(note="hi").monthly(user, "June").deliver_later()
    EchoJob.perform_later(user, "x" * 5000, n=1)
    mail = headers(own_client, "mailers")
    assert (mail["argsrepr"], mail["kwargsrepr"]) == (
        f"ReportMailer#monthly(User({user.id}), 'June')", "{'params': {'note': 'hi'}}")
    echo = headers(own_client, "default")  # a record as User(42), never <User object at 0x…>
    assert echo["argsrepr"].startswith(f"(User({user.id}), 'xxx")
    assert len(echo["argsrepr"]) == display.REPR_LIMIT and echo["argsrepr"].endswith("…")
    assert echo["kwargsrepr"] == "{'n': 1}"


def test_serialized_values_read_as_what_they_stand_for() -> None:
    import datetime as dt
    import uuid
    from decimal import Decimal

    args, kwargs = serialize([(1,), {2}, b"abcd", dt.date(2026, 1, 2), Decimal("1.50"),
                              uuid.UUID(int=1), dt.timedelta(days=1), float("inf")],
                             {"when": dt.datetime(2026, 1, 2, tzinfo=dt.UTC)})
    assert display.task_reprs({"args": args, "kwargs": kwargs}) == (
        "((1,), {2}, <4 bytes>, date(2026-01-02), Decimal('1.50'), "
        "UUID('00000000-0000-0000-0000-000000000001'), timedelta(days=1), inf)",
        "{'when': datetime(2026-01-02T00:00:00+00:00)}")
    deep: list = []
    for _ in range(5000):  # deeper than repr walks: shown cut, never an error
        deep = [deep]
    assert display.readable(deep).startswith("[[[") and "…" in display.readable(deep)


def test_a_worker_sends_task_events_from_its_start(own_client: redis.Redis, own_redis: Any,
                                                   user: User, smtp: SmtpServer,
                                                   tmp_path: Path) -> None:
    app = create_app(current_settings())
    events: list[dict[str, Any]] = []
    with app.connection_for_read() as connection:
        receiver = app.events.Receiver(connection, handlers={"*": events.append})
        listening = threading.Thread(target=receiver.capture, daemon=True,
                                     kwargs={"limit": None, "timeout": None, "wakeup": False})
        listening.start()
        try:
            wait_for(own_client.pubsub_numpat, what="the event receiver to subscribe")
            job = UserMailer.welcome(user).deliver_later()  # waiting when the worker starts
            worker = start_worker(own_redis.url, tmp_path / "worker.log", "-q", "mailers",
                                  "-c", "1", env={"SMTP_URL": smtp.url})
            try:
                wait_for(lambda: any(e["type"] == "task-succeeded" for e in events),
                         what="a task-succeeded event")
            finally:
                worker.stop()
        finally:
            receiver.should_stop = True
            listening.join(5)
    [received] = [e for e in events if e["type"] == "task-received"]
    assert received["name"] == MAIL_JOB
    assert received["args"] == f"UserMailer#welcome(User({user.id}))"
    assert received["uuid"] == job.provider_job_id
    assert [e["uuid"] for e in events if e["type"] == "task-succeeded"] == [received["uuid"]]
