"""Mailers: building, bad input, delivery methods, and delivery by a real worker over SMTP."""

from __future__ import annotations

import email.policy
import re
from collections.abc import Iterator

import pytest
import redis

import jobkit
from jobkit.job_sets import RetrySet
from jobkit.mailer import (
    HeaderInjectionError,
    InvalidAddressError,
    MailDeliveryJob,
    MissingRecipientError,
    TemplateMissingError,
    deliveries,
    register_interceptor,
    register_observer,
)
from jobkit.mailer import delivery as delivery_module
from jobkit.mailer.previews import all_previews, render_preview
from mailers.tokens import InvalidToken, make_token, read_token
from mailers.user_mailer import UserMailer
from tests.conftest import SmtpServer, job_keys, wait_for
from tests.mailers_app import BareMailer, ReportMailer
from tests.models import User
from tests.test_worker_integration import dead_entries


@pytest.fixture
def user(make_user) -> User:
    return make_user(email="ada@example.com", name="Ada <Lovelace>")


@pytest.fixture
def outbox() -> Iterator[list]:
    jobkit.configure(mailer={"delivery_method": "test"})
    deliveries.clear()
    yield deliveries
    deliveries.clear()
    jobkit.configure()


def test_actions_are_lazy(user: User, monkeypatch) -> None:
    rendered = []
    monkeypatch.setattr(ReportMailer, "_template_context",
                        lambda self: rendered.append(1) or {"user": user, "month": "May",
                                                            "note": "", "mailer": self,
                                                            "attachments": self.attachments})
    delivery = ReportMailer.monthly(user, "May")
    assert rendered == []
    assert delivery.message["Subject"] == "Report for May"
    assert delivery.message is delivery.message and rendered == [1]


def test_message_has_every_part(user: User) -> None:
    message = ReportMailer.with_(note="<b>bold?</b>").monthly(user, "May").message
    assert message["From"] == "Example <no-reply@example.com>"
    assert message["To"] == "ada@example.com, boss@example.com"
    assert (message["Cc"], message["Bcc"]) == ("cc@example.com", "audit@example.com")
    assert message["Reply-To"] == "support@example.com"
    assert (message["X-Report-Kind"], message["X-Month"]) == ("monthly", "May")
    assert message.get_content_type() == "multipart/mixed"
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert "Report for May, ada@example.com." in text
    assert "&lt;b&gt;bold?&lt;/b&gt;" in html  # params reach templates; HTML is escaped
    assert "Example Inc." in html and "Example Inc." in text  # the layouts
    files = {p.get_filename(): p.get_payload(decode=True) for p in message.iter_attachments()}
    assert files == {"report.csv": b"user,month\nada@example.com,May\n",
                     "data.bin": b"\x00\x01\x02"}


def test_single_part_and_inline_images() -> None:
    plain = ReportMailer.plain_only("x@example.com").message
    assert plain.get_content_type() == "text/plain"
    welcome = render_preview("UserMailer.welcome")
    html_part = welcome.get_body(("html",))
    [logo] = [p for p in welcome.walk() if p.get_filename() == "logo.png"]
    cid = logo["Content-ID"].strip("<>")
    assert f'src="cid:{cid}"' in html_part.get_content()
    assert logo.get_content_disposition() == "inline"


@pytest.mark.parametrize("call, error, message", [
    (lambda: ReportMailer.plain_only("not-an-address"), InvalidAddressError,
     "To: 'not-an-address' is not a valid email address"),
    (lambda: ReportMailer.plain_only("a@example.com", "Hi\r\nBcc: victim@example.com"),
     HeaderInjectionError, "header Subject: value contains CR or LF"),
    (lambda: ReportMailer.plain_only("a@example.com\nBcc: x@example.com"),
     HeaderInjectionError, "header To"),
    (lambda: ReportMailer.to_anyone(None), MissingRecipientError, "needs a `to` address"),
    (lambda: ReportMailer.no_template("a@example.com"), TemplateMissingError,
     "no template report_mailer/no_template.txt.j2 or report_mailer/no_template.html.j2"),
    (lambda: BareMailer.hello("a@example.com"), MissingRecipientError, "needs a `from_`"),
])
def test_bad_input_is_refused_and_nothing_enqueued(r: redis.Redis, call, error,
                                                   message: str) -> None:
    with pytest.raises(error, match=re.escape(message)):
        call().deliver_later()
    with pytest.raises(error):
        call().deliver_now()
    assert job_keys(r) == []


def test_action_arguments_are_checked_at_the_call() -> None:
    with pytest.raises(TypeError, match=r"ReportMailer.monthly\(\)"):
        ReportMailer.monthly("only one")


def test_unserializable_argument_is_refused_at_deliver_later(r: redis.Redis) -> None:
    from mailers.previews.user_mailer_preview import sample_user

    assert UserMailer.welcome(sample_user()).message  # a sample object renders a preview...
    with pytest.raises(jobkit.SerializationError, match=r"args\[2\]\[0\]"):
        UserMailer.welcome(sample_user()).deliver_later()  # ...but cannot cross the wire
    assert job_keys(r) == []


def test_deliver_now_with_test_method_interceptors_and_observers(outbox: list) -> None:
    seen = []

    class Tagger:
        def delivering_email(self, message):
            message.replace_header("Subject", "[staging] " + message["Subject"])

    class Blocker:
        def delivering_email(self, message):
            return "blocked@" not in message["To"]

    class Watcher:
        def delivered_email(self, message):
            seen.append(message["Subject"])

    interceptors = list(delivery_module._interceptors)
    observers = list(delivery_module._observers)
    try:
        register_interceptor(Tagger())
        register_interceptor(Blocker())
        register_observer(Watcher())
        ReportMailer.plain_only("a@example.com", "One").deliver_now()
        ReportMailer.plain_only("blocked@example.com", "Two").deliver_now()
    finally:
        delivery_module._interceptors[:] = interceptors
        delivery_module._observers[:] = observers
    assert [m["Subject"] for m in outbox] == ["[staging] One"]
    assert seen == ["[staging] One"]
    assert ReportMailer.nothing().deliver_now() is None and len(outbox) == 1


def test_file_and_console_delivery(tmp_path, capsys) -> None:
    jobkit.configure(mailer={"delivery_method": "file", "file_dir": str(tmp_path)})
    try:
        ReportMailer.plain_only("a@example.com", "Filed").deliver_now()
        jobkit.configure(mailer={"delivery_method": "console"})
        ReportMailer.plain_only("a@example.com", "Printed").deliver_now()
    finally:
        jobkit.configure()
    [saved] = list(tmp_path.glob("*.eml"))
    assert "Subject: Filed" in saved.read_text()
    assert "Subject: Printed" in capsys.readouterr().out


def received_with(smtp: SmtpServer, subject: str, timeout: float = 20) -> list:
    wait_for(lambda: any(m["Subject"] == subject for m in smtp.received), timeout=timeout,
             what=f"mail {subject!r} over SMTP")
    return [m for m in smtp.received if m["Subject"] == subject]


@pytest.mark.usefixtures("worker")
def test_deliver_later_is_rendered_by_the_worker_and_sent_over_smtp(
        r: redis.Redis, smtp: SmtpServer, user: User) -> None:
    job = ReportMailer.with_(note="from params").monthly(user, "June").deliver_later()
    assert isinstance(job, MailDeliveryJob) and job.queue_name == "mailers"
    assert job.arguments[0] == "tests.mailers_app.ReportMailer"
    [message] = received_with(smtp, "Report for June")
    assert message["Message-ID"] == f"<{job.job_id}@example.com>"  # the From domain
    assert message["To"] == "ada@example.com, boss@example.com"
    assert message["Bcc"] is None  # Bcc reaches the envelope, not the headers
    assert "Report for June, ada@example.com. from params" in \
        message.get_body(("plain",)).get_content()
    assert "<b>June</b>" in message.get_body(("html",)).get_content()
    names = [p.get_filename() for p in message.iter_attachments()]
    assert names == ["report.csv", "data.bin"]


@pytest.mark.usefixtures("worker")
def test_welcome_mail_with_a_record_reference_and_a_delay(
        r: redis.Redis, smtp: SmtpServer, user: User) -> None:
    job = UserMailer.welcome(user).deliver_later(wait=0.5)
    assert job.scheduled_at is not None
    [message] = received_with(smtp, "Welcome to Example")
    html = message.get_body(("html",)).get_content()
    assert "Welcome, Ada &lt;Lovelace&gt;!" in html
    assert any(p.get_filename() == "logo.png" for p in message.walk())


@pytest.mark.usefixtures("worker")
def test_transient_smtp_failure_is_retried_then_delivered_once(
        r: redis.Redis, smtp: SmtpServer) -> None:
    job = ReportMailer.plain_only("a@example.com", "[flaky] status").deliver_later()
    wait_for(lambda: r.zcard("jobkit:retry") == 1, what="the 451 to be scheduled for retry")
    [entry] = list(RetrySet())
    assert "451" in entry.error_message
    messages = received_with(smtp, "[flaky] status", timeout=30)
    assert len(messages) == 1 and messages[0]["Message-ID"] == f"<{job.job_id}@example.com>"


@pytest.mark.usefixtures("worker")
def test_permanent_smtp_failure_goes_to_the_dead_set_with_the_reply(
        r: redis.Redis, smtp: SmtpServer) -> None:
    job = ReportMailer.plain_only("nobody@bounce.example", "bounce").deliver_later()
    [dead] = dead_entries(r, 1)
    assert dead.job_id == job.job_id
    assert dead.error_class == "jobkit.mailer.errors.PermanentDeliveryError"
    assert "550" in dead.error_message and "no such user" in dead.error_message
    assert r.zcard("jobkit:retry") == 0


def test_previews_render_every_email() -> None:
    previews = all_previews()
    assert set(previews["UserMailer"].emails()) == {"welcome", "password_reset"}
    for name, preview in previews.items():
        for mail in preview.emails():
            assert render_preview(f"{name}.{mail}")["To"]


def test_password_reset_link_carries_a_signed_expiring_token() -> None:
    html = render_preview("UserMailer.password_reset").get_body(("html",)).get_content()
    token = html.split("token=")[1].split('"')[0]
    assert read_token(token) == "42"
    forged = token.replace("42.", "43.", 1)
    with pytest.raises(InvalidToken, match="bad signature"):
        read_token(forged)
    with pytest.raises(InvalidToken, match="expired"):
        read_token(make_token(42, expires_in=10, now=1000.0), now=1011.0)
    with pytest.raises(InvalidToken, match="malformed"):
        read_token("garbage")


def test_email_policy_is_the_modern_one() -> None:
    # policy.default but 7-bit bodies
    from jobkit.mailer.headers import MESSAGE_POLICY

    policy = render_preview("UserMailer.welcome").policy
    assert policy is MESSAGE_POLICY and policy.cte_type == "7bit" and \
        policy.refold_source == "none"
    assert type(policy) is type(email.policy.default)


@pytest.mark.parametrize("path", ["tests.jobs.EchoJob", "email.policy.default"])
def test_a_delivery_job_naming_something_else_than_a_mailer_is_refused(path: str) -> None:
    from jobkit.mailer.job import MailDeliveryJob

    with pytest.raises(jobkit.mailer.MailerError, match=f"{path} is not a Mailer class"), \
            jobkit.testing.inline():
        MailDeliveryJob.perform_now(path, "welcome", [], {}, {})


@pytest.mark.parametrize("url", ["smtp://ada:s3cret@mail.example:99999",
                                 "smtp://ada:s3cret@mail.example:0", "http://mail.example"])
def test_an_smtp_url_changed_after_load_is_checked_by_the_same_rule(url: str) -> None:
    from jobkit.mailer.smtp import SmtpSettings

    with pytest.raises(jobkit.ConfigError, match="port from 1 to 65535") as refused:
        SmtpSettings.from_url(url)
    assert "s3cret" not in str(refused.value)
