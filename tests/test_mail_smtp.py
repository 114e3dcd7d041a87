"""SMTP transport: TLS settings against Debian's postfix, connection reuse and reconnects
against aiosmtpd, render once, and the settings' checks."""

from __future__ import annotations

import email
import email.message
import email.policy
import email.utils
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult

import jobkit
from jobkit.api import DeadSet
from jobkit.config import load_settings
from jobkit.mailer import (
    MailDeliveryJob,
    Mailer,
    PermanentDeliveryError,
    TransientDeliveryError,
    deliveries,
    rendered,
)
from jobkit.mailer.delivery import deliver
from jobkit.mailer.errors import MailerError
from jobkit.mailer.smtp import SmtpSettings, close_connections, connections_opened
from jobkit.testing_services import free_port, wait_until
from tests.mail_samples import assert_read_back, send_random_mails
from tests.mailers_app import ReportMailer
from tests.postfix import PrivatePostfix, self_signed_certificate


def _mail(to: str, subject: str) -> email.message.EmailMessage:
    message = email.message.EmailMessage()
    message["From"] = "app@example.org"
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = email.utils.make_msgid(domain="example.org")
    message.set_content(f"body of {subject}\n")
    return message


@pytest.fixture(autouse=True)
def _own_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("SMTP_URL", raising=False)  # it would win over smtp_url
    yield
    close_connections()
    jobkit.configure()


# -- Debian's postfix: STARTTLS with a self-signed certificate ---------------------------------


@pytest.fixture(scope="module")
def postfix() -> Iterator[PrivatePostfix]:
    reason = PrivatePostfix.unavailable()
    if reason:
        pytest.skip(f"private postfix: {reason}")
    server = PrivatePostfix()
    try:
        server.start()
        yield server
    finally:
        server.stop()


def test_postfix_starttls_verification_settings(postfix: PrivatePostfix) -> None:
    url = f"smtp://localhost:{postfix.port}"  # the certificate is for CN=localhost
    # Stock behaviour (auto STARTTLS, verify peer): a permanent error naming the settings.
    jobkit.configure(mailer={"delivery_method": "smtp", "smtp_url": url})
    with pytest.raises(PermanentDeliveryError) as refused:
        deliver(_mail("ada@example.com", "verify peer, no CA"))
    assert "mailer.ca_file" in str(refused.value)
    assert "mailer.openssl_verify_mode: none" in str(refused.value)
    job = MailDeliveryJob("m", "a", [], {}, {})
    assert job.retry_in(1, refused.value) == "kill"  # the dead set, not hours of retries

    jobkit.configure(mailer={"delivery_method": "smtp", "smtp_url": url,
                             "openssl_verify_mode": "none"})
    deliver(_mail("ada@example.com", "verify none"))
    jobkit.configure(mailer={"delivery_method": "smtp", "smtp_url": url,
                             "ca_file": postfix.cert, "enable_starttls": "always"})
    deliver(_mail("bob@example.com", "verify peer with the CA file"))

    wait_until(lambda: len(postfix.delivered()) == 2, timeout=15,
               what=f"two mails in postfix's Maildir; log: {postfix.log()[-1500:]}")
    got = {m["Subject"]: m for m in postfix.delivered()}
    assert set(got) == {"verify none", "verify peer with the CA file"}
    assert got["verify none"]["Delivered-To"] == "ada@example.com"
    assert "ESMTPS" in got["verify peer with the CA file"]["Received"]  # sent over TLS
    assert got["verify peer with the CA file"].get_content() == \
        "body of verify peer with the CA file\n"


def test_200_random_subjects_and_names_round_trip_through_postfix(
        postfix: PrivatePostfix) -> None:
    """Through a real MTA's queue and local delivery, over one reused STARTTLS connection:
    both parsers read back from the Maildir exactly what was sent."""
    jobkit.configure(mailer={"delivery_method": "smtp", "openssl_verify_mode": "none",
                             "smtp_url": f"smtp://localhost:{postfix.port}"})
    sent = send_random_mails(200)
    by_recipient: dict[str, bytes] = {}

    def all_delivered() -> bool:
        for raw in postfix.delivered_bytes():
            recipient = email.message_from_bytes(raw)["Delivered-To"]
            by_recipient[str(recipient)] = raw
        return all(mail.to in by_recipient for mail in sent)

    wait_until(all_delivered, timeout=60, what=f"200 mails in postfix's Maildir; log: "
               f"{postfix.log()[-1500:]}")
    assert_read_back([by_recipient[mail.to] for mail in sent], sent)


# -- aiosmtpd: implicit TLS (smtps) and AUTH ---------------------------------------------------


class AuthServer:
    """aiosmtpd over implicit TLS, with AUTH (PLAIN, LOGIN) for ada / secret; records each
    mail's (mechanism, login, TLS cipher) and refuses MAIL before AUTH with 530."""

    def __init__(self, folder: Path) -> None:
        cert, key = self_signed_certificate(folder)
        self.ca_file = str(cert)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        self.mails: list[tuple[str, str, object]] = []
        self.mechanism = ""
        # Implicit TLS is not STARTTLS, so aiosmtpd's auth_require_tls would refuse AUTH.
        self.controller = Controller(self, hostname="127.0.0.1", port=free_port(),
                                     ssl_context=context, server_hostname="localhost",
                                     authenticator=self.check, auth_require_tls=False,
                                     auth_required=True)

    def check(self, server: Any, session: Any, envelope: Any, mechanism: str,
              auth_data: Any) -> AuthResult:
        self.mechanism = mechanism
        ok = (auth_data.login, auth_data.password) == (b"ada", b"s3cr\xc3\xa9t:/@")
        return AuthResult(success=ok, handled=False, auth_data=auth_data)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        cipher = server.transport.get_extra_info("cipher")
        self.mails.append((self.mechanism, session.auth_data.login.decode(), cipher))
        return "250 accepted"


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")  # it is implicit
def test_implicit_tls_and_auth(tmp_path: Path) -> None:
    server = AuthServer(tmp_path)
    server.controller.start()
    where = f"localhost:{server.controller.port}"
    password = "s3cr%C3%A9t%3A%2F%40"  # "s3cré t:/@" percent-encoded, as a URL needs
    try:
        jobkit.configure(mailer={"delivery_method": "smtp", "ca_file": server.ca_file,
                                 "smtp_url": f"smtps://ada:{password}@{where}"})
        deliver(_mail("bob@example.com", "smtps, best mechanism"))
        jobkit.configure(mailer={"delivery_method": "smtp", "ca_file": server.ca_file,
                                 "tls": True, "authentication": "login",
                                 "smtp_url": f"smtp://ada:{password}@{where}"})
        deliver(_mail("bob@example.com", "tls: true, LOGIN"))
        assert [(m, login) for m, login, _ in server.mails] == [("PLAIN", "ada"),
                                                                ("LOGIN", "ada")]
        assert all(cipher for _, _, cipher in server.mails)  # both over TLS

        jobkit.configure(mailer={"delivery_method": "smtp", "ca_file": server.ca_file,
                                 "smtp_url": f"smtps://ada:wrong@{where}"})
        with pytest.raises(PermanentDeliveryError, match="535"):
            deliver(_mail("bob@example.com", "wrong password"))
        jobkit.configure(mailer={"delivery_method": "smtp", "ca_file": server.ca_file,
                                 "smtp_url": f"smtps://{where}"})
        with pytest.raises(PermanentDeliveryError, match="530"):  # no credentials given
            deliver(_mail("bob@example.com", "no AUTH"))
        jobkit.configure(mailer={"delivery_method": "smtp",
                                 "smtp_url": f"smtps://ada:{password}@{where}"})
        with pytest.raises(PermanentDeliveryError, match="mailer.ca_file"):  # verify peer
            deliver(_mail("bob@example.com", "unknown CA"))
        assert len(server.mails) == 2
    finally:
        server.controller.stop()


def test_credentials_for_a_server_without_auth_are_a_permanent_error(
        counting: CountingServer) -> None:
    _use(counting, smtp_url=f"smtp://ada:secret@127.0.0.1:{counting.controller.port}")
    with pytest.raises(PermanentDeliveryError, match="AUTH"):
        deliver(_mail("bob@example.com", "credentials, no AUTH offered"))
    assert counting.mails == []


# -- aiosmtpd: reuse, limits, health check, 421 --------------------------------------------------


class CountingServer:
    """aiosmtpd handler that records the connection (client port) of each mail, NOOPs and
    QUITs, and answers MAIL FROM with 421 for subjects listed in `refuse_once`."""

    def __init__(self) -> None:
        self.mails: list[tuple[int, str]] = []  # (client port, subject)
        self.envelopes: list[tuple[list[str], bytes]] = []  # (RCPT TO, DATA)
        self.noops = 0
        self.quits = 0
        self.refuse_mail_numbers: set[int] = set()  # the n-th MAIL FROM gets a 421
        self.mail_commands = 0
        self.controller = Controller(self, hostname="127.0.0.1", port=free_port(),
                                     server_hostname="counting.test")

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str,  # noqa: N802
                          options: list[str]) -> str:
        self.mail_commands += 1
        if self.mail_commands in self.refuse_mail_numbers:
            return "421 4.3.2 service shutting down, closing channel"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,  # noqa: N802
                          options: list[str]) -> str:
        if address.endswith("@bounce.example"):
            return f"550 5.1.1 <{address}>: no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.mails.append((session.peer[1], str(message["Subject"])))
        self.envelopes.append((list(envelope.rcpt_tos), envelope.content))
        return "250 accepted"

    async def handle_NOOP(self, server: Any, session: Any, envelope: Any, arg: str) -> str:  # noqa: N802
        self.noops += 1
        return "250 OK"

    async def handle_QUIT(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.quits += 1
        return "221 Bye"

    def connections(self) -> int:
        return len({port for port, _ in self.mails})


@pytest.fixture(scope="module")
def counting_server() -> Iterator[CountingServer]:
    server = CountingServer()
    server.controller.start()
    yield server
    server.controller.stop()


@pytest.fixture
def counting(counting_server: CountingServer) -> CountingServer:
    counting_server.mails.clear()
    counting_server.envelopes.clear()
    counting_server.noops = counting_server.quits = counting_server.mail_commands = 0
    counting_server.refuse_mail_numbers = set()
    return counting_server


def _use(server: CountingServer, **mailer: Any) -> SmtpSettings:
    settings = {"delivery_method": "smtp", "smtp_url": f"smtp://127.0.0.1:"
                f"{server.controller.port}", **mailer}
    jobkit.configure(mailer=settings)
    return SmtpSettings.from_mailer(settings)


def test_one_connection_is_reused_up_to_its_limit_then_quit(counting: CountingServer) -> None:
    settings = _use(counting, pool_size=1, max_messages_per_connection=10)
    for i in range(25):
        deliver(_mail("ada@example.com", f"mail {i}"))
    assert [subject for _, subject in counting.mails] == [f"mail {i}" for i in range(25)]
    assert counting.connections() == 3 == connections_opened(settings)  # 10 + 10 + 5
    wait_until(lambda: counting.quits == 2, timeout=5, what="QUIT of the two full connections")
    assert counting.noops == 0  # never idle for idle_check_after (5 s) between these mails
    close_connections()
    assert counting.quits == 3  # the open one is closed at shutdown too


def test_idle_connection_is_checked_and_421_reconnects(counting: CountingServer) -> None:
    _use(counting, pool_size=1, idle_check_after=0)
    counting.refuse_mail_numbers = {3}
    for i in range(5):
        deliver(_mail("ada@example.com", f"mail {i}"))
    # Mail 2 got a 421 at MAIL FROM (nothing sent yet): resent at once on a new connection.
    assert [subject for _, subject in counting.mails] == [f"mail {i}" for i in range(5)]
    ports = [port for port, _ in counting.mails]
    assert ports[0] == ports[1] != ports[2] == ports[3] == ports[4]
    assert counting.mail_commands == 6
    # NOOP before each reuse of an idle connection (idle_check_after 0): mails 1 to 4, not
    # mail 0 nor the resend of mail 2 (fresh connections).
    assert counting.noops == 4
    # A refused recipient is the mail's problem, not the session's: the connection stays.
    with pytest.raises(PermanentDeliveryError, match="550 5.1.1 <x@bounce.example>"):
        deliver(_mail("x@bounce.example", "bounced"))
    deliver(_mail("ada@example.com", "after the bounce"))
    assert counting.mails[-1] == (ports[4], "after the bounce")


class _DataRefusingSMTP(SMTP):
    """Answers the DATA command of the first mail with 451 and keeps the transaction open,
    as postfix does when its DATA-stage policy service is down: the next MAIL FROM on the
    connection is then "503 nested MAIL command" unless the client said RSET."""

    refused = 0

    async def smtp_DATA(self, arg: str) -> None:  # noqa: N802
        if _DataRefusingSMTP.refused == 0:
            _DataRefusingSMTP.refused += 1
            await self.push("451 4.3.5 Server configuration problem")
            return
        await super().smtp_DATA(arg)


class _DataRefusingController(Controller):
    def factory(self) -> SMTP:
        return _DataRefusingSMTP(self.handler, **self.SMTP_kwargs)


def test_a_refused_data_leaves_the_connection_good_for_the_next_mail() -> None:
    handler = CountingServer()  # its own controller unused: the refusing one serves it
    server = _DataRefusingController(handler, hostname="127.0.0.1", port=free_port(),
                                     server_hostname="refusing.test")
    server.start()
    try:
        mailer = {"delivery_method": "smtp", "pool_size": 1,
                  "smtp_url": f"smtp://127.0.0.1:{server.port}"}
        jobkit.configure(mailer=mailer)
        with pytest.raises(TransientDeliveryError, match="451 4.3.5"):
            deliver(_mail("ada@example.com", "refused at DATA"))  # retried later: a 4xx
        deliver(_mail("bob@example.com", "the next mail"))  # was 503 nested MAIL: permanent
        assert [subject for _, subject in handler.mails] == ["the next mail"]
        assert connections_opened(SmtpSettings.from_mailer(mailer)) == 1  # the same one
    finally:
        server.stop()


def test_connections_are_not_shared_across_fork(counting: CountingServer) -> None:
    import os

    _use(counting, pool_size=1)
    deliver(_mail("ada@example.com", "parent before fork"))
    pid = os.fork()
    if pid == 0:  # the child sends on a connection of its own, and leaves without QUIT
        try:
            deliver(_mail("ada@example.com", "child"))
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    deliver(_mail("ada@example.com", "parent after fork"))
    ports = dict((subject, port) for port, subject in counting.mails)
    assert ports["parent before fork"] == ports["parent after fork"] != ports["child"]


# -- render once ---------------------------------------------------------------------------------


def test_deliver_later_sends_what_the_caller_rendered(monkeypatch: pytest.MonkeyPatch) -> None:
    jobkit.configure(mailer={"delivery_method": "test"})
    deliveries.clear()
    delivery = ReportMailer.plain_only("ada@example.com", subject="Once")
    job = delivery._job(wait=None, wait_until=None, queue=None, priority=None)
    assert "rendered" in job.kwargs and job.arguments[:2] == [
        "tests.mailers_app.ReportMailer", "plain_only"]  # shown as mailer, action, args
    monkeypatch.setattr(ReportMailer, "process", lambda *a, **k: pytest.fail("rendered again"))
    job.perform(*job.arguments, **job.kwargs)
    [sent] = deliveries
    assert sent["Subject"] == "Once" and sent["Message-ID"].startswith(f"<{job.job_id}@")
    assert sent.get_body(("plain",)).get_content() == \
        delivery.message.get_body(("plain",)).get_content()
    deliveries.clear()


class BccMailer(Mailer):
    def note(self, to: str, bcc: str) -> Any:
        return self.mail(to=to, bcc=bcc, from_="app@example.org", subject="with bcc",
                         body="hi\n")


def test_the_payload_bytes_go_out_as_they_are_bcc_in_the_envelope_only(
        counting: CountingServer) -> None:
    job = BccMailer.note("ada@example.com", "boss@example.com")._job(
        wait=None, wait_until=None, queue=None, priority=None)
    packed = job.kwargs["rendered"]
    assert (packed["from"], packed["to"]) == ("app@example.org",
                                              ["ada@example.com", "boss@example.com"])
    _use(counting)
    job.perform(*job.arguments, **job.kwargs)  # smtp, no interceptor: the bytes, unparsed
    [(rcpts, data)] = counting.envelopes
    assert rcpts == ["ada@example.com", "boss@example.com"]
    assert data.replace(b"\r\n", b"\n") == packed["ascii"].encode().replace(b"\r\n", b"\n")
    assert b"boss@" not in data and f"Message-ID: <{job.job_id}@".encode() in data
    assert packed["message_id"].startswith(f"<{job.job_id}@")  # for log lines
    # Another delivery method gets an EmailMessage, its Bcc put back from the envelope.
    jobkit.configure(mailer={"delivery_method": "test"})
    deliveries.clear()
    again = BccMailer.note("ada@example.com", "boss@example.com")._job(
        wait=None, wait_until=None, queue=None, priority=None)
    again.perform(*again.arguments, **again.kwargs)
    [sent] = deliveries
    assert (sent["To"], sent["Bcc"]) == ("ada@example.com", "boss@example.com")
    deliveries.clear()


def test_the_worker_sends_the_bytes_in_the_payload(worker: Any, smtp: Any) -> None:
    """The session worker (prefork, its own SMTP connections) sends the rendered bytes, not
    what the arguments would render now: the payload of a mail for subject "args" carries the
    bytes of one for subject "bytes"."""
    job = ReportMailer.plain_only("ada@example.com", subject="args")._job(
        wait=None, wait_until=None, queue=None, priority=None)
    other = ReportMailer.plain_only("ada@example.com", subject="bytes").message
    assert other is not None
    job.kwargs["rendered"] = rendered.pack(ReportMailer, other, job.job_id)
    job.enqueue()
    wait_until(lambda: smtp.received, timeout=20, what="the mail at the session's SMTP server")
    [got] = smtp.received
    assert got["Subject"] == "bytes" and got["Message-ID"].startswith(f"<{job.job_id}@")


@pytest.mark.parametrize("bad", [
    "not a dict", {"ascii": "x"}, {"base64": "%%%", "from": "a@b.example",
                                   "to": ["c@d.example"], "utf8": False},
    {"ascii": "Subject: x\r\n\r\nhi\r\n", "from": "a@b.example", "to": "c@d.example",
     "utf8": False},  # `to` a string: was sent as one RCPT TO per character
    {"ascii": "Subject: x\r\n\r\nhi", "size": 22, "from": "a@b.example",
     "to": ["c@d.example"], "utf8": False},  # cut short: was sent as a shorter mail
])
def test_a_malformed_rendered_payload_is_refused_naming_it(bad: Any) -> None:
    jobkit.configure(mailer={"delivery_method": "test"})
    deliveries.clear()
    job = ReportMailer.plain_only("ada@example.com", subject="x")._job(
        wait=None, wait_until=None, queue=None, priority=None)
    job.kwargs["rendered"] = bad
    with pytest.raises(MailerError, match="`rendered` payload is malformed") as caught:
        job.perform(*job.arguments, **job.kwargs)
    assert job.retry_in(0, caught.value) == "kill" and deliveries == []


def test_queued_before_render_once_and_malformed_payloads_on_a_real_worker(
        worker: Any, smtp: Any, r: Any) -> None:
    """A job enqueued by the version before render once (positional arguments, no
    `rendered`, no `locale`) still delivers; a malformed payload goes to the dead set at once
    with an error naming it (no retries)."""
    old = MailDeliveryJob("tests.mailers_app.ReportMailer", "plain_only",
                          ["ada@example.com"], {"subject": "queued before"}, {})
    old.enqueue()
    bad = ReportMailer.plain_only("ada@example.com", subject="never")._job(
        wait=None, wait_until=None, queue=None, priority=None)
    bad.kwargs["rendered"] = {"base64": "%%%", "from": "a@b.example", "to": ["c@d.example"],
                              "utf8": False}
    bad.enqueue()
    wait_until(lambda: smtp.received and r.zcard("jobkit:dead"), timeout=20,
               what="the old job's mail and the malformed one's dead entry")
    [got] = smtp.received
    assert got["Subject"] == "queued before" and got["Message-ID"].startswith(f"<{old.job_id}@")
    [dead] = list(DeadSet())
    assert dead.job_id == bad.job_id
    assert "`rendered` payload is malformed" in str(dead.error_message)
    assert r.zcard("jobkit:retry") == 0


# -- settings -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("mailer", "message"), [
    ({"openssl_verify_mode": "strict"}, "mailer.openssl_verify_mode: 'strict' is not valid: "
                                        "expected one of peer, none"),
    ({"enable_starttls": True}, "mailer.enable_starttls: True is not valid: expected one of "
                                "auto, always, never"),
    ({"ca_file": "/no/such/ca.pem"}, "mailer.ca_file: '/no/such/ca.pem' is not a readable file"),
    ({"authentication": "ntlm"}, "expected one of plain, login, cram_md5"),
    ({"tls": "maybe"}, "mailer.tls: 'maybe' is not valid: expected true or false"),
    ({"local_hostname": "bad host"}, "mailer.local_hostname: 'bad host' is not valid"),
    ({"read_timeout": 0}, "mailer.read_timeout: 0 is not valid: expected seconds > 0"),
    ({"max_messages_per_connection": 0}, "expected a whole number >= 1"),
    ({"smtp_url": "smtps://mail.example", "enable_starttls": "always"}, "contradict"),
    ({"smtp_url": "smtp://ho st:25"}, "mailer.smtp_url: 'smtp://ho st:25' is not valid"),
    ({"ca_file": "/etc/hostname"}, "mailer.ca_file: '/etc/hostname' holds no PEM CA"),
    ({"sendmail_arguments": "-i '"}, "mailer.sendmail_arguments: \"-i '\" does not split"),
    ({"file_dir": "/etc/hostname"}, "mailer.file_dir: '/etc/hostname' exists and is not a"),
    ({"tls": True, "enable_starttls": "always"}, "contradict"),  # a worker will not start
])
def test_bad_smtp_settings_are_refused_naming_the_key(mailer: dict, message: str) -> None:
    with pytest.raises(jobkit.ConfigError, match=message.replace("(", r"\(")):
        load_settings(None, environ={}, mailer=mailer)


def test_settings_win_over_what_the_scheme_implies() -> None:
    plain = SmtpSettings.from_mailer({"smtp_url": "smtp://u%40x:p@mail.example"}, environ={})
    assert (plain.port, plain.tls, plain.enable_starttls, plain.username) == \
        (25, False, "auto", "u@x")
    implicit = SmtpSettings.from_mailer({"smtp_url": "smtps://mail.example"}, environ={})
    assert (implicit.port, implicit.tls, implicit.enable_starttls) == (465, True, "never")
    never = SmtpSettings.from_mailer({"smtp_url": "smtp+starttls://mail.example",
                                      "enable_starttls": "never", "timeout": 3,
                                      "read_timeout": 30}, environ={})
    assert (never.enable_starttls, never.open_timeout, never.read_timeout) == ("never", 3, 30)
    from_env = SmtpSettings.from_mailer({"smtp_url": "smtp://file.example"},
                                        environ={"SMTP_URL": "smtp://env.example:2525"})
    assert (from_env.hostname, from_env.port) == ("env.example", 2525)
    with pytest.raises(jobkit.ConfigError, match="contradict"):
        SmtpSettings.from_mailer({"smtp_url": "smtps://mail.example",
                                  "enable_starttls": "always"}, environ={})


def test_config_check_shows_and_checks_the_smtp_settings(tmp_path: Any) -> None:
    from click.testing import CliRunner

    from jobkit.cli import main

    good = tmp_path / "good.yml"
    good.write_text("mailer:\n  smtp_url: smtp://u:secret@mail.example\n"
                    "  openssl_verify_mode: none\n  enable_starttls: always\n")
    result = CliRunner().invoke(main, ["config", "check", "-C", str(good)])
    assert result.exit_code == 0, result.output
    assert "'openssl_verify_mode': 'none', 'enable_starttls': 'always'" in result.output
    assert "secret" not in result.output
    bad = tmp_path / "bad.yml"
    bad.write_text("mailer:\n  smtp_url: smtps://mail.example\n  enable_starttls: always\n")
    result = CliRunner().invoke(main, ["config", "check", "-C", str(bad)])
    assert result.exit_code == 1
    assert "tls: true (implicit TLS) and enable_starttls: always contradict" in result.output
