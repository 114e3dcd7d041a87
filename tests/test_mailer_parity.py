"""Action Mailer parity: callbacks, rescue_from, per-mailer delivery options,
deliver_all_later, the mail test helpers, and the docs' examples for them."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import jobkit
import jobkit.mailer
from jobkit import testing
from jobkit.errors import JobClassError
from jobkit.mailer import (
    MailDeliveryJob,
    Mailer,
    TransientDeliveryError,
    deliver_all_later,
    deliveries,
)
from jobkit.mailer import delivery as delivery_module
from jobkit.mailer.callbacks import (
    after_action,
    after_deliver,
    around_action,
    around_deliver,
    before_action,
    before_deliver,
    rescue_from,
)
from jobkit.testing_services import wait_until
from tests import doc_examples

calls: list[str] = []


class NoticeJob(MailDeliveryJob):
    """A mailer's own delivery job."""

    queue_as = "notices"


class HookedMailer(Mailer):
    default = {"from": "app@example.com"}
    deliver_later_queue_name = "mail_low"

    @before_action
    def load(self) -> None:
        calls.append("before_action")
        if self.params.get("stop") == "action":
            raise jobkit.Abort("unsubscribed")

    @around_action
    def timed(self, proceed: Any) -> None:
        calls.append("around_action:in")
        proceed()
        calls.append("around_action:out")

    @after_action
    def retarget(self) -> None:
        calls.append("after_action")
        assert self.message is not None
        self.message["X-Campaign"] = "spring"
        if self.params.get("redirect"):
            self.message.replace_header("To", self.params["redirect"])
        if self.params.get("stop") == "quietly":
            self.perform_deliveries = False

    @before_deliver
    def check(self) -> None:
        calls.append("before_deliver")
        if self.params.get("stop") == "deliver":
            raise jobkit.Abort("not now")

    @around_deliver
    def wrap(self, proceed: Any) -> None:
        calls.append("around_deliver:in")
        proceed()
        calls.append("around_deliver:out")

    @after_deliver
    def record(self) -> None:
        calls.append("after_deliver")

    def hello(self, to: str) -> Any:
        calls.append("action")
        if to == "boom@example.com":
            raise LookupError("no such user")
        return self.mail(to=to, subject="Hello", body="hi")


class RescuingMailer(HookedMailer):
    delivery_job = NoticeJob
    handled: list[str] = []

    @rescue_from(Exception)
    def anything(self, error: Exception) -> None:
        self.handled.append(f"anything:{type(error).__name__}")

    @rescue_from(LookupError, TransientDeliveryError)
    def known(self, error: Exception) -> None:  # declared last: tried first
        self.handled.append(f"known:{type(error).__name__}")


class OnlyRescueMailer(Mailer):
    """No deliver callbacks, one handler: the worker builds the mail again for it."""

    default = {"from": "app@example.com"}
    seen: list[str] = []

    @rescue_from(TransientDeliveryError)
    def later(self, error: Exception) -> None:
        self.seen.append(self.who)  # set by the action: needs the action run on the worker

    def hi(self, to: str) -> Any:
        self.who = to
        return self.mail(to=to, subject="hi", body="hi")


class TestMethodMailer(Mailer):
    __test__ = False
    default = {"from": "app@example.com"}
    delivery_method = "test"

    def ping(self, to: str) -> Any:
        return self.mail(to=to, subject="ping", body="ping")


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    calls.clear()
    RescuingMailer.handled.clear()
    deliveries.clear()
    yield
    deliveries.clear()
    jobkit.configure()


def test_callbacks_run_in_order_around_the_action_and_the_delivery() -> None:
    with testing.fake():
        message = HookedMailer.with_(redirect="grace@example.com").hello("ada@example.com") \
            .deliver_now()
    assert calls == ["before_action", "around_action:in", "action", "around_action:out",
                     "after_action", "before_deliver", "around_deliver:in",
                     "around_deliver:out", "after_deliver"]
    assert message is not None and testing.outbox() == [message]
    assert message["To"] == "grace@example.com" and message["X-Campaign"] == "spring"
    assert HookedMailer.action_names() == ["hello"]  # callbacks are not actions


def test_stopping_in_before_action_after_action_or_before_deliver() -> None:
    with testing.fake():
        stopped = HookedMailer.with_(stop="action").hello("ada@example.com")
        assert stopped.deliver_now() is None and stopped.deliver_later() is None
        assert "action" not in calls
        quiet = HookedMailer.with_(stop="quietly").hello("ada@example.com")
        assert quiet.message is not None  # built (a preview shows it), never delivered
        assert quiet.deliver_now() is quiet.message and quiet.deliver_later() is None
        assert "before_deliver" not in calls
        held = HookedMailer.with_(stop="deliver").hello("ada@example.com")
        assert held.deliver_now() is not None and "around_deliver:in" not in calls
        testing.assert_no_enqueued_emails()
    assert deliveries == []


def test_deliver_callbacks_run_on_the_worker_side_too() -> None:
    with testing.inline():
        job = HookedMailer.hello("ada@example.com").deliver_later()
    assert calls.count("action") == 2  # checked in the caller, built again by the job
    assert calls[-1] == "after_deliver" and len(deliveries) == 1
    assert deliveries[0]["Message-ID"].startswith(f"<{job.job_id}@")  # set by the job


def test_rescue_from_handles_action_and_delivery_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with testing.fake():
        assert RescuingMailer.hello("boom@example.com").deliver_now() is None
        assert RescuingMailer.handled == ["known:LookupError"]
        with pytest.raises(LookupError, match="no such user"):  # no handler on the parent
            HookedMailer.hello("boom@example.com").deliver_now()

    class Refusing:
        def delivering_email(self, message: Any) -> None:
            raise TransientDeliveryError("451 try later")

    monkeypatch.setattr(delivery_module, "_interceptors", [Refusing()])
    with testing.inline():  # on the worker: handled, so the job succeeds and is not retried
        RescuingMailer.hello("ada@example.com").deliver_later()
        job = testing.performed()[0]
    assert job.job_class.endswith("NoticeJob") and job.queue == "mail_low"
    assert RescuingMailer.handled == ["known:LookupError", "known:TransientDeliveryError"]
    with pytest.raises(TransientDeliveryError):
        HookedMailer.hello("ada@example.com").deliver_now()
    assert "after_deliver" not in calls
    with testing.fake():
        assert "rendered" in TestMethodMailer.ping("a@example.com").deliver_later().kwargs
        testing.clear()
        job = OnlyRescueMailer.hi("grace@example.com").deliver_later()
        assert "rendered" not in job.kwargs  # a handler: rendered again on the worker
        testing.deliver_enqueued_emails()
    assert OnlyRescueMailer.seen == ["grace@example.com"]


def test_bad_callbacks_and_class_options_are_refused_at_definition() -> None:
    with pytest.raises(JobClassError, match="delivery_method 'smtpp'"):
        type("Bad", (Mailer,), {"delivery_method": "smtpp"})
    with pytest.raises(JobClassError, match="delivery_job"):
        type("Bad", (Mailer,), {"delivery_job": jobkit.Job})
    with pytest.raises(JobClassError, match="deliver_later_queue_name"):
        type("Bad", (Mailer,), {"deliver_later_queue_name": ""})
    with pytest.raises(JobClassError, match="before_action is not a callback"):
        class BadJob(jobkit.Job):
            @before_action
            def prep(self) -> None: ...

            def perform(self) -> None: ...
    with pytest.raises(TypeError, match="Exception subclasses"):
        rescue_from(KeyboardInterrupt)  # type: ignore[arg-type]

    async def handler(self: Any, error: Exception) -> None: ...
    with pytest.raises(JobClassError, match="async def"):
        type("Bad", (Mailer,), {"h": rescue_from(ValueError)(handler)})


def test_per_mailer_delivery_method_except_under_test(capsys: pytest.CaptureFixture) -> None:
    jobkit.configure(mailer={"delivery_method": "console"})
    TestMethodMailer.ping("ada@example.com").deliver_now()
    assert len(deliveries) == 1 and capsys.readouterr().out == ""
    with testing.fake():  # configured `test` wins over a mailer's own method
        ConsoleMailer = type("ConsoleMailer", (TestMethodMailer,), {"delivery_method": "console",
                                                                    "__module__": __name__})
        ConsoleMailer.ping("ada@example.com").deliver_now()
        assert len(testing.outbox()) == 1 and capsys.readouterr().out == ""


def test_deliver_later_options_and_deliver_all_later() -> None:
    with testing.fake():
        job = RescuingMailer.hello("ada@example.com").deliver_later(priority=3, queue="urgent")
        assert isinstance(job, NoticeJob) and job.priority == 3 and job.queue_name == "urgent"
        testing.assert_enqueued_email_with(RescuingMailer.hello, args=["ada@example.com"],
                                           queue="urgent")
        with pytest.raises(AssertionError, match="queue=mail_low"):
            testing.assert_enqueued_email_with(RescuingMailer.hello, queue="mail_low")
        jobs = deliver_all_later([HookedMailer.hello("a@example.com"),
                                  HookedMailer.with_(stop="action").hello("b@example.com"),
                                  TestMethodMailer.ping("c@example.com")], wait=60)
        assert [type(j) for j in jobs] == [MailDeliveryJob, MailDeliveryJob]
        assert [j.queue_name for j in jobs] == ["mail_low", "mailers"]
        assert all(j.scheduled_at is not None for j in jobs)
        testing.assert_enqueued_emails(3)


def test_deliver_all_later_sends_one_round_trip(r: Any) -> None:
    with testing.disable():
        r.execute_command("CONFIG", "RESETSTAT")
        deliver_all_later([TestMethodMailer.ping(f"u{i}@example.com") for i in range(20)],
                          queue="parity_bulk")
        stats = r.info("commandstats")
    assert r.llen("parity_bulk") == 20
    # perform_all_later pipelines every push; one EVALSHA/EVAL or pipeline at most per job
    # would show as 20 calls of something: no command ran 20 times.
    assert all(v["calls"] < 20 for k, v in stats.items() if k != "cmdstat_info"), stats


def test_mail_assertions_call_and_block_forms() -> None:
    with testing.fake():
        testing.assert_no_enqueued_emails()
        with testing.assert_enqueued_emails(2):
            HookedMailer.hello("a@example.com").deliver_later()
            TestMethodMailer.ping("b@example.com").deliver_later()
        testing.assert_enqueued_emails(2)
        with pytest.raises(AssertionError, match="expected 1 enqueued email"):
            testing.assert_enqueued_emails(1)
        with pytest.raises(AssertionError, match="expected 0 enqueued email"):
            testing.assert_no_enqueued_emails()
        with pytest.raises(AssertionError, match="expected 0 enqueued email"), \
                testing.assert_no_enqueued_emails():
            HookedMailer.hello("c@example.com").deliver_later()
        with testing.deliver_enqueued_emails():
            TestMethodMailer.ping("d@example.com").deliver_later()
        assert [m["To"] for m in testing.outbox()] == ["d@example.com"]
        testing.deliver_enqueued_emails(queue="mail_low")
        assert len(testing.outbox()) == 3 and len(testing.jobs()) == 1
        testing.deliver_enqueued_emails()
        testing.assert_no_enqueued_emails()
        with testing.capture_emails() as mails:
            HookedMailer.hello("e@example.com").deliver_later()
            TestMethodMailer.ping("f@example.com").deliver_now()
            assert mails == []
        assert sorted(m["To"] for m in mails) == ["e@example.com", "f@example.com"]
        testing.assert_enqueued_emails(5)  # delivered ones count: they were enqueued


class LinkMailer(Mailer):
    default = {"from": "app@example.com"}
    default_url_options = {"protocol": "https"}

    def invite(self, to: str, token: str) -> Any:
        self.token = token
        unsubscribe = self.url("unsubscribe", t=token)
        return self.mail(to=to, subject="Join", headers={"List-Unsubscribe": f"<{unsubscribe}>"})


def test_url_helper_in_templates_and_actions() -> None:
    jobkit.configure(mailer={"default_url_options": {"host": "app.example.com", "port": 8443,
                                                     "protocol": "http"}})
    message = LinkMailer.invite("ada@example.com", "t k").message
    assert message is not None
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "Join: https://app.example.com:8443/invites/t%20k?ref=mail" in text
    assert 'href="https://app.example.com:8443/invites/t%20k?ref=mail&amp;via=a+b"' in html
    assert message["List-Unsubscribe"] == "<https://app.example.com:8443/unsubscribe?t=t+k>"
    Local = type("Local", (LinkMailer,), {"default_url_options": {"port": 443},
                                          "__module__": __name__})
    assert Local().url("/a/b", q=[1, 2]) == "https://app.example.com/a/b?q=1&q=2"
    assert Local().url("https://cdn.example.com/x?v=1", s=2) == \
        "https://cdn.example.com/x?v=1&s=2"
    jobkit.configure()
    with pytest.raises(jobkit.mailer.MailerError, match="LinkMailer.invite: no host"):
        LinkMailer.invite("ada@example.com", "t").deliver_later()
    with pytest.raises(JobClassError, match="Bad.default_url_options.host"):
        type("Bad", (Mailer,), {"default_url_options": {"host": "https://x.example"}})
    with pytest.raises(jobkit.ConfigError, match="default_url_options.protocol"):
        jobkit.configure(mailer={"default_url_options": {"host": "x.example",
                                                         "protocol": "ftp"}})


class SendmailMailer(Mailer):
    default = {"from": "App <app@example.com>"}

    def note(self, to: str, cc: str = "-oQ/tmp/x@example.com") -> Any:
        return self.mail(to=to, cc=cc, bcc="hidden@example.com",
                         subject="naïve café", body="line\n.\nafter a lone dot")


FAKE_SENDMAIL = """#!/bin/sh
# A user-side stand-in for sendmail: records its arguments and stdin, exits $FAKE_EXIT.
printf '%s\\n' "$@" > "$FAKE_DIR/argv"
cat > "$FAKE_DIR/stdin"
echo "fake sendmail says no" >&2
exit "${FAKE_EXIT:-0}"
"""


def test_sendmail_command_and_exit_statuses(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "sendmail"
    script.write_text(FAKE_SENDMAIL)
    script.chmod(0o755)
    monkeypatch.setenv("FAKE_DIR", str(tmp_path))
    jobkit.configure(mailer={"delivery_method": "sendmail", "sendmail_location": str(script)})
    SendmailMailer.note("ada@example.com").deliver_now()
    assert (tmp_path / "argv").read_text().splitlines() == [
        "-i", "-f", "app@example.com", "--", "ada@example.com", "-oQ/tmp/x@example.com",
        "hidden@example.com"]
    sent = (tmp_path / "stdin").read_bytes()
    assert b"Bcc" not in sent and b"\r\n.\r\n" in sent  # -i: a lone dot is text
    jobkit.configure(mailer={"delivery_method": "sendmail", "sendmail_location": str(script),
                             "sendmail_arguments": "-i -t -oi"})
    SendmailMailer.note("ada@example.com").deliver_now()
    assert (tmp_path / "argv").read_text().splitlines()[:4] == ["-i", "-t", "-oi", "-f"]
    for code, error in [("75", TransientDeliveryError), ("71", TransientDeliveryError),
                        ("67", jobkit.mailer.PermanentDeliveryError)]:
        monkeypatch.setenv("FAKE_EXIT", code)
        with pytest.raises(error, match=f"exited {code}.*fake sendmail says no"):
            SendmailMailer.note("ada@example.com").deliver_now()
    jobkit.configure(mailer={"delivery_method": "sendmail",
                             "sendmail_location": str(tmp_path / "missing")})
    with pytest.raises(jobkit.mailer.PermanentDeliveryError, match="sendmail_location.*no such"):
        SendmailMailer.note("ada@example.com").deliver_now()
    with pytest.raises(jobkit.ConfigError, match="sendmail_arguments"):
        jobkit.configure(mailer={"sendmail_arguments": [1]})


def test_sendmail_delivers_through_a_real_postfix() -> None:
    from tests.postfix import PrivatePostfix

    if (why := PrivatePostfix.unavailable()) is not None:
        pytest.skip(why)
    postfix = PrivatePostfix()
    postfix.start()
    try:  # -C: the private instance's config, so its pickup delivers to its Maildir
        jobkit.configure(mailer={"delivery_method": "sendmail",
                                 "sendmail_arguments": ["-C", str(postfix.root), "-i"]})
        SendmailMailer.note("ada@example.com", cc="grace@example.com").deliver_now()
        wait_until(lambda: len(postfix.delivered()) == 3, timeout=20,
                   what=f"3 copies in the Maildir; log: {postfix.log()[-1000:]}")
        got = postfix.delivered()
        assert {m["Subject"] for m in got} == {"naïve café"}
        assert all(m["Bcc"] is None and m.get_content() == "line\n.\nafter a lone dot\n"
                   for m in got)
        assert {m["Return-Path"] for m in got} == {"<app@example.com>"}
    finally:
        postfix.stop()


FRENCH_PO = r"""
msgid ""
msgstr ""
"Content-Type: text/plain; charset=UTF-8\n"
"Plural-Forms: nplurals=2; plural=(n > 1);\n"

msgid "Hello %(name)s"
msgstr "Bonjour %(name)s"

msgid "%(count)s new message"
msgid_plural "%(count)s new messages"
msgstr[0] "%(count)s nouveau message"
msgstr[1] "%(count)s nouveaux messages"

msgid "Thanks"
msgstr "Merci"

msgid "i18n_mailer.welcome.subject"
msgstr "Bienvenue, {name} !"
"""


class I18nMailer(Mailer):
    default = {"from": "app@example.com"}

    def welcome(self, to: str, name: str, unread: int) -> Any:
        self.user_name, self.unread = name, unread
        return self.mail(to=to, subject=self.default_i18n_subject(name=name))

    def password_reset(self, to: str) -> Any:
        return self.mail(to=to, body=jobkit.mailer.i18n.gettext("Thanks"))


class RerenderingI18nMailer(I18nMailer):
    @classmethod
    def mailer_name(cls) -> str:
        return "i18n_mailer"  # its parent's templates and catalog entries

    @after_deliver
    def noted(self) -> None:  # deliver callbacks: the worker builds the mail again
        calls.append(jobkit.mailer.i18n.current_locale())


@pytest.fixture
def catalogs(tmp_path: Path) -> Path:
    import shutil
    import subprocess

    if shutil.which("msgfmt") is None:
        pytest.skip("msgfmt (GNU gettext) is not installed")
    folder = tmp_path / "pt" / "LC_MESSAGES"  # pt_BR falls back to it
    folder.mkdir(parents=True)
    (folder / "messages.po").write_text(FRENCH_PO.replace("Bonjour", "Olá"))
    subprocess.run(["msgfmt", "-o", str(folder / "messages.mo"), str(folder / "messages.po")],
                   check=True)
    folder = tmp_path / "fr" / "LC_MESSAGES"
    folder.mkdir(parents=True)
    (folder / "messages.po").write_text(FRENCH_PO)
    subprocess.run(["msgfmt", "-o", str(folder / "messages.mo"), str(folder / "messages.po")],
                   check=True)
    jobkit.configure(mailer={"locale_dir": str(tmp_path)})
    return tmp_path


def test_i18n_templates_subjects_and_with_locale(catalogs: Path) -> None:
    from jobkit.mailer import with_locale

    english = I18nMailer.welcome("ada@example.com", "Ada", 1).message
    assert english is not None and english["Subject"] == "Welcome"  # no entry: the action name
    assert english.get_body(("plain",)).get_content() == \
        "Hello Ada\n1 new message\nThanks\n"  # type: ignore[union-attr]
    with with_locale("fr"):
        french = I18nMailer.welcome("ada@example.com", "Ada <3", 2).message
        assert I18nMailer.password_reset("ada@example.com").message.get_content() == "Merci\n"  # type: ignore[union-attr]
    assert french is not None and french["Subject"] == "Bienvenue, Ada <3 !"
    assert french.get_body(("plain",)).get_content() == \
        "Bonjour Ada <3\n2 nouveaux messages\nMerci\n"  # type: ignore[union-attr]
    assert french.get_body(("html",)).get_content() == \
        '<p lang="fr">Bonjour Ada &lt;3</p>\n'  # type: ignore[union-attr]
    with with_locale("pt-BR"):
        brazil = I18nMailer.welcome("ada@example.com", "Ada", 1).message
    assert brazil is not None and "Olá Ada" in brazil.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert I18nMailer.password_reset("ada@example.com").message["Subject"] == "Password reset"  # type: ignore[index]
    jobkit.configure(mailer={"locale_dir": str(catalogs), "default_locale": "fr"})
    assert I18nMailer.welcome("ada@example.com", "Ada", 1).message["Subject"] == \
        "Bienvenue, Ada !"  # type: ignore[index]
    with pytest.raises(ValueError, match="language tag"), with_locale("../../etc"):
        pass
    with pytest.raises(jobkit.ConfigError, match="default_locale"):
        jobkit.configure(mailer={"default_locale": "french!"})


def test_deliver_later_keeps_the_locale_for_the_worker(catalogs: Path) -> None:
    from jobkit.mailer import with_locale

    with testing.fake():
        with with_locale("fr"):
            job = RerenderingI18nMailer.welcome("ada@example.com", "Ada", 3).deliver_later()
        assert job.kwargs["locale"] == "fr" and "rendered" not in job.kwargs
        testing.deliver_enqueued_emails()  # outside the block: the job's locale applies
        (mail,) = testing.outbox()
    assert mail["Subject"] == "Bienvenue, Ada !" and calls == ["fr"]
    assert "3 nouveaux messages" in mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]


class HeaderCaseMailer(Mailer):
    default = {"from": "app@example.com", "subject": "from default", "reply_to": "r@example.com",
               "X-Kind": "default"}

    def given(self, **mail: Any) -> Any:
        return self.mail(to="ada@example.com", body="hi", **mail)


def test_one_header_a_name_whatever_its_case() -> None:
    """`default`, mail()'s arguments and `headers=` name a header in any case; the message
    has one of each, headers= over the arguments over `default` (a lowercase `to` in
    headers= was a second, unchecked To header that reached the envelope)."""
    def headers(message: Any) -> list[tuple[str, str]]:
        return [(k, v) for k, v in message.items() if k not in (
            "Date", "Message-ID", "Content-Type", "Content-Transfer-Encoding", "MIME-Version")]

    assert headers(HeaderCaseMailer.given().message) == [
        ("From", "app@example.com"), ("Subject", "from default"), ("Reply-To", "r@example.com"),
        ("X-Kind", "default"), ("To", "ada@example.com")]
    message = HeaderCaseMailer.given(subject="given", headers={
        "TO": "eve@example.com", "x-kind": "given", "REPLY-TO": "s@example.com"}).message
    assert headers(message) == [
        ("From", "app@example.com"), ("Subject", "given"), ("Reply-To", "s@example.com"),
        ("x-kind", "given"), ("To", "eve@example.com")]
    with pytest.raises(jobkit.mailer.InvalidAddressError, match="To: 'eve@@example.com'"):
        HeaderCaseMailer.given(headers={"to": "eve@@example.com"}).deliver_now()


class LocalelessJob(MailDeliveryJob):
    """A delivery job of the version before locales and render once."""

    def perform(self, mailer: str, action: str, args: list, kwargs: dict,  # type: ignore[override]
                params: dict) -> None:
        calls.append("localeless")
        super().perform(mailer, action, args, kwargs, params)


class LocalelessMailer(TestMethodMailer):
    delivery_job = LocalelessJob


def test_a_delivery_job_without_locale_or_rendered_gets_the_arguments_only() -> None:
    from jobkit.mailer import with_locale

    with testing.fake():
        with with_locale("fr"):
            job = LocalelessMailer.ping("ada@example.com").deliver_later()
        assert set(job.kwargs) == set()  # neither `locale` nor `rendered`
        testing.deliver_enqueued_emails()
        assert calls == ["localeless"] and [m["Subject"] for m in testing.outbox()] == ["ping"]


def test_attachments_and_content_ids() -> None:
    class AttachingMailer(BadgeMailer):
        def bad(self) -> Any:
            self.attachments["a.txt"] = {"mime_type": "text/plain"}
            return self.mail(to="ada@example.com", body="x")

    with pytest.raises(TypeError, match="attachment 'a.txt': a dict needs \"content\""):
        _ = AttachingMailer.bad().message
    from jobkit.mailer.attachments import Attachments

    for name, error in (("inv\x00oice.pdf", jobkit.mailer.InvalidHeaderError),
                        ("a\r\nX-Evil: 1.pdf", jobkit.mailer.HeaderInjectionError)):
        with pytest.raises(error, match="attachment .*: the name"):
            Attachments()[name] = b"%PDF"
    message = BadgeMailer.badge("Ada").message
    [logo] = [p for p in message.walk() if p.get_filename() == "logo.png"]
    assert logo["Content-ID"].endswith("@jobkit.invalid>")  # not the bare word `jobkit`
    jobkit.configure(mailer={"message_id_domain": "mx.example.org"})
    message = BadgeMailer.badge("Ada").message
    [logo] = [p for p in message.walk() if p.get_filename() == "logo.png"]
    assert logo["Content-ID"].endswith("@mx.example.org>")


PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360000002000100ffff03000006000557bfabd4"
                    "0000000049454e44ae426082")


class BadgeMailer(Mailer):
    default = {"from": "app@example.com"}

    def badge(self, name: str) -> Any:
        self.name = name
        self.attachments.inline["logo.png"] = PNG
        return self.mail(to="ada@example.com", subject=f"Badge for {name}")


class BadgeMailerPreview(jobkit.mailer.Preview):
    def badge(self) -> Any:  # a default, so previews without parameters render too
        return BadgeMailer.badge(self.params.get("name", "Ada"))


def test_previews_take_parameters_and_show_inline_images() -> None:
    from click.testing import CliRunner

    from jobkit.cli import main as cli
    from jobkit.mailer.previews import render_preview
    from tests.test_web import Client

    assert render_preview("BadgeMailer.badge")["Subject"] == "Badge for Ada"
    assert render_preview("BadgeMailer.badge", {"name": "Grace"})["Subject"] == \
        "Badge for Grace"
    client = Client()
    status, _, page = client.get("/mail/previews/BadgeMailer.badge?name=Grace%20H")
    assert status == 200 and "Badge for Grace H" in page
    assert "/mail/previews/BadgeMailer.badge?name=Grace+H&amp;part=html" in page
    status, headers, html = client.get("/mail/previews/BadgeMailer.badge?name=Grace&part=html")
    assert status == 200 and "<p>Grace</p>" in html and "img-src data:" in \
        headers["Content-Security-Policy"]
    logo = re.search(r'alt="logo" src="data:image/png;base64,([^"]+)"', html)
    assert logo is not None and base64.b64decode(logo.group(1)) == PNG
    assert 'src="cid:unknown@x"' in html  # no such part: left alone
    result = CliRunner().invoke(cli, ["mail", "preview", "BadgeMailer.badge", "-p", "name=Lin",
                                      "--param", "x=1=2", "--part", "html"])
    assert result.exit_code == 0 and "<p>Lin</p>" in result.output, result.output
    result = CliRunner().invoke(cli, ["mail", "preview", "BadgeMailer.badge", "-p", "name"])
    assert result.exit_code == 2 and "'name': want KEY=VALUE" in result.output


@pytest.mark.usefixtures("worker")
def test_a_real_worker_runs_the_callbacks_and_the_handler(r: Any, smtp: Any) -> None:
    from jobkit.job_sets import DeadSet, RetrySet
    from tests.parity_mailers import BOUNCED, DELIVERED, CampaignMailer

    jobs = deliver_all_later([CampaignMailer.with_(email=e).issue(7)
                              for e in ("ada@example.com", "nobody@bounce.example")])
    wait_until(lambda: r.llen(DELIVERED) == 1 and r.llen(BOUNCED) == 1, timeout=20,
               what="one mail delivered and one bounce handled by the worker")
    assert r.lrange(DELIVERED, 0, -1) == ["ada@example.com"]
    [bounce] = r.lrange(BOUNCED, 0, -1)
    assert bounce.startswith("nobody@bounce.example: SMTP refused recipients") and "550" in bounce
    [mail] = [m for m in smtp.received if m["Subject"] == "Issue 7"]
    assert mail["X-Campaign"] == "spring"
    assert "Read it: https://news.example.com/issues/7?ref=mail" in mail.get_content()
    assert mail["Message-ID"].startswith(f"<{jobs[0].job_id}@")
    assert list(DeadSet()) == [] and list(RetrySet()) == []  # a handled bounce: no failure


def _section(doc: str, heading: str) -> str:
    text = (doc_examples.DOCS / doc).read_text()
    return re.split(r"\n## ", text.split(f"\n{heading}\n", 1)[1], maxsplit=1)[0]


@pytest.mark.parametrize("doc,heading", [("mailers.md", "## Callbacks and rescue_from"),
                                         ("mailers.md", "## Per-mailer delivery options"),
                                         ("mailers.md", "## Links: default_url_options and url()"),
                                         ("mailers.md", "## Translations (i18n)"),
                                         ("mailers.md", "## The bytes on the wire"),
                                         ("testing.md", "### Mail test helpers")])
def test_docs_examples_run(doc: str, heading: str) -> None:
    blocks = doc_examples.python_blocks(_section(doc, heading))
    assert blocks, f"no python example under {heading} in docs/{doc}"
    # A module of its own, importable by name: deliver_later refuses mailers a worker could
    # not import.
    name = f"tests.docs_example_{re.sub(r'[^a-z]+', '_', heading.lower()).strip('_')}"
    with doc_examples.example_module(name) as module:
        for block in blocks:
            doc_examples.run(block, module, f"docs/{doc}")
