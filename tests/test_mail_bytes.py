"""The bytes jobkit sends: headers independent of CPython's folding, checked by two parsers
(Python's email and postal-mime on node), addresses refused at the call or converted, the
`file` method, and the dev tools (catcher inbox, `jobkit mail preview --part raw`)."""

from __future__ import annotations

import email
import email.errors
import email.generator
import random
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any, cast

import pytest
import redis
from aiosmtpd.controller import Controller
from click.testing import CliRunner

import jobkit
from jobkit.cli import main as cli
from jobkit.mailer import (
    HeaderInjectionError,
    InvalidAddressError,
    InvalidHeaderError,
    MailDeliveryJob,
    PermanentDeliveryError,
)
from jobkit.mailer import delivery as delivery_module
from jobkit.mailer.catcher import CaughtMail, Inbox, start_catcher
from jobkit.mailer.headers import read_message, wire_bytes
from jobkit.mailer.previews import render_preview
from jobkit.testing_services import free_port
from tests.conftest import job_keys, wait_for
from tests.mail_samples import (
    ByteMailer,
    assert_read_back,
    postal_mime,
    python_email,
    quoted,
    random_text,
    send_random_mails,
)
from tests.test_web import Client


@pytest.fixture
def catcher(r: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> Iterator[Inbox]:
    """jobkit's own catcher (aiosmtpd, SMTPUTF8 offered) as this process's SMTP server: it
    keeps each mail's bytes and envelope in Redis."""
    monkeypatch.delenv("SMTP_URL", raising=False)
    inbox, port = Inbox(r), free_port()
    controller = start_catcher("127.0.0.1", port, inbox)
    jobkit.configure(mailer={"delivery_method": "smtp", "smtp_url": f"smtp://127.0.0.1:{port}"})
    try:
        yield inbox
    finally:
        jobkit.configure()
        controller.stop()


def caught(inbox: Inbox, n: int) -> list[CaughtMail]:
    wait_for(lambda: len(inbox.messages(0, n)) >= n, what=f"{n} caught mails")
    return list(reversed(inbox.messages(0, n)))  # oldest first: the order they were sent


def test_200_random_subjects_and_names_round_trip_in_two_parsers(catcher: Inbox) -> None:
    sent = send_random_mails(200)
    raws = [mail.raw for mail in caught(catcher, 200)]
    for raw in raws:
        assert raw.isascii() and b"\r\n\r\n" in raw  # 7-bit, CRLF: needs no 8BITMIME
        header_lines = raw.split(b"\r\n\r\n")[0].split(b"\r\n")
        assert all(len(line) <= 78 for line in header_lines if not line.startswith(b"From:"))
        assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    assert_read_back(raws, sent)


def test_headers_an_interceptor_sets_are_encoded_as_jobkits_own(
        catcher: Inbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """`message[name] = value` in an interceptor goes through jobkit's encoder, not the
    stdlib's folding (which drops spaces between encoded-words before Python 3.13)."""
    rng = random.Random(44)
    wanted = [(random_text(rng), " ".join(random_text(rng).split()), random_text(rng))
              for _ in range(60)]

    held: dict[int, tuple[str, str, str]] = {}  # what each message holds after the rewrite

    class Rewriter:
        def delivering_email(self, message: EmailMessage) -> None:
            i = int(message["To"].addresses[0].username[2:])
            subject, name, note = wanted[i]
            del message["Subject"], message["From"]
            message["Subject"] = subject
            message["From"] = f"{quoted(name)} <a@example.com>"
            message["X-Note"] = note
            held[i] = (str(message["Subject"]), message["From"].addresses[0].display_name,
                       str(message["X-Note"]))

    monkeypatch.setattr(delivery_module, "_interceptors", [Rewriter()])
    for i in range(len(wanted)):
        ByteMailer.note(f"to{i}@example.com").deliver_now()
    raws = [mail.raw for mail in caught(catcher, len(wanted))]
    # The stdlib strips a value's leading whitespace on assignment: `held` has the rest.
    assert [held[i][0].strip() for i in range(len(wanted))] == [s.strip() for s, _, _ in wanted]
    for i, raw in enumerate(raws):
        message = python_email(raw)
        assert (message["Subject"], message["From"].addresses[0].display_name,
                message["X-Note"]) == held[i]
    for i, read in enumerate(postal_mime(raws)):
        assert (read["subject"], read["from"]["name"]) == held[i][:2]


@pytest.mark.parametrize(("header", "value", "error", "culprit"), [
    ("to", "ada@example.com\x00", InvalidAddressError, r"To: 'ada@example.com\\x00'"),
    ("to", "ada\x01@example.com", InvalidAddressError, r"To: 'ada\\x01@example.com'"),
    ("to", "Ada\x7f <ada@example.com>", InvalidAddressError, r"control character '\\x7f'"),
    ("to", "ada@example..com", InvalidAddressError, "To: 'ada@example..com'.*empty label"),
    ("to", "ada@.example.com", InvalidAddressError, "empty label"),
    ("to", "ada..b@example.com", InvalidAddressError, "To: 'ada..b@example.com'.*empty part"),
    ("to", ".ada@example.com", InvalidAddressError, "empty part"),
    ("to", "a" * 65 + "@example.com", InvalidAddressError, "longer than 64 octets"),
    ("to", "ada@" + "a" * 64 + ".com", InvalidAddressError, "label longer than 63"),
    ("to", "ada@" + ".".join(["abcdefghi"] * 26) + ".com", InvalidAddressError, "253 octets"),
    ("to", "ada@-bad.example", InvalidAddressError, "'-bad'"),
    ("to", "ada@exa mple.com", InvalidAddressError, "To:"),
    ("to", ["ok@example.com", "ada@bad_host.example"], InvalidAddressError, "bad_host"),
    ("from_", "ada@example..com", InvalidAddressError, "From: 'ada@example..com'"),
    ("bcc", "ada@\u2603\u0000.example", InvalidAddressError, "Bcc:"),
    ("to", "ada@example.com\nBcc: x@example.com", HeaderInjectionError, "header To"),
    ("to", "<attacker@evil.example> new.hire@example.com", InvalidAddressError,
     "reads as 2 addresses"),  # no comma, two recipients: Python < 3.11.10's parser
    ("to", "attacker@evil.example <ceo@example.com>", InvalidAddressError, "reads as 2"),
    ("to", "ada\u00a0x@example.com", InvalidAddressError, "whitespace or an invisible"),
    ("to", "ada\u2028@example.com", InvalidAddressError, "whitespace or an invisible"),
    ("from_", "a@example.com, b@example.com", InvalidAddressError, "From: .* holds 2 addresses"),
    ("subject", "hi\ud800", InvalidHeaderError, "header Subject.*lone surrogate"),
    ("headers", {"List-Unsubscribe": "<https://exämple.com/u>"}, InvalidHeaderError,
     "header List-Unsubscribe: a structured header takes ASCII only"),
    ("subject", "hi\x00there", InvalidHeaderError, r"header Subject.*'\\x00'"),
    ("subject", "hi\x1bthere", InvalidHeaderError, r"header Subject.*'\\x1b'"),
    ("headers", {"X-Note": "a\x85b"}, InvalidHeaderError, r"header X-Note.*'\\x85'"),
])
def test_bad_addresses_and_control_characters_are_refused_at_the_call(
        r: redis.Redis, header: str, value: Any, error: type[Exception], culprit: str) -> None:
    kwargs: dict[str, Any] = {"to": "ok@example.com", header: value}
    to = kwargs.pop("to")
    for call in ("deliver_now", "deliver_later"):
        with pytest.raises(error, match=culprit):
            getattr(ByteMailer.note(to, **kwargs), call)()
    assert job_keys(r) == []  # nothing enqueued


def test_structured_headers_go_as_written() -> None:
    """No encoded-words where RFC 2047 allows none: a long List-Unsubscribe URL or msg-id
    goes as it is (its line past 78, within 998), whitespace runs in References as one."""
    unsubscribe = "<https://example.com/unsubscribe?token=" + "a" * 100 + ">"
    message = ByteMailer.note("a@example.com", headers={
        "List-Unsubscribe": unsubscribe, "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "References": "<a@example.com>  <b@example.com>",
        "In-Reply-To": "<" + "x" * 90 + "@example.com>"}).message
    assert message is not None
    raw = wire_bytes(message)
    assert f"List-Unsubscribe: {unsubscribe}\r\n".encode() in raw and b"=?" not in raw
    assert b"References: <a@example.com> <b@example.com>\r\n" in raw
    parsed = python_email(raw)
    assert parsed["List-Unsubscribe"] == unsubscribe
    assert parsed["In-Reply-To"] == "<" + "x" * 90 + "@example.com>"


def test_idn_is_punycode_and_a_utf8_local_part_goes_with_smtputf8(catcher: Inbox) -> None:
    ByteMailer.note(["ada@Bücher.example", "ünï@example.com"], "IDN",
                    bcc="hidden@example.com").deliver_now()
    [mail] = caught(catcher, 1)
    assert mail["rcpt_tos"] == ["ada@xn--bcher-kva.example", "ünï@example.com",
                                "hidden@example.com"]  # Bcc: in the envelope only
    raw = mail.raw
    assert b"Bcc" not in raw and "ünï@example.com".encode() in raw  # RFC 6532 header
    # Python's parser knows no RFC 6532: a UTF-8 local part is a "defect" to it
    message = python_email(raw, allow=(email.errors.NonASCIILocalPartDefect,))
    assert [a.addr_spec for a in message["To"].addresses] == ["ada@xn--bcher-kva.example",
                                                               "ünï@example.com"]
    [read] = postal_mime([raw])
    assert [a["address"] for a in read["to"]] == ["ada@xn--bcher-kva.example",
                                                  "ünï@example.com"]


class _Plain:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        return "250 accepted"


def test_a_server_without_smtputf8_is_a_permanent_failure(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SMTP_URL", raising=False)
    port = free_port()
    server = Controller(_Plain(), hostname="127.0.0.1", port=port, enable_SMTPUTF8=False)
    server.start()
    jobkit.configure(mailer={"delivery_method": "smtp", "smtp_url": f"smtp://127.0.0.1:{port}"})
    try:
        ByteMailer.note("ascii@example.com").deliver_now()  # the server works
        with pytest.raises(PermanentDeliveryError, match="ünï@example.com.*SMTPUTF8") as caught:
            ByteMailer.note("ünï@example.com").deliver_now()
    finally:
        jobkit.configure()
        server.stop()
    # so a MailDeliveryJob goes to the dead set at once with that reason, never retried
    assert MailDeliveryJob().retry_in(0, caught.value) == "kill"


def test_message_id_domain_is_the_from_domain_or_the_setting(catcher: Inbox) -> None:
    message = ByteMailer.note("a@example.com", from_="x@Mail.Bücher.example").message
    assert message is not None and message["Message-ID"].endswith("@mail.xn--bcher-kva.example>")
    jobkit.configure(mailer={"message_id_domain": "mx.example.org"})
    message = ByteMailer.note("a@example.com").message
    assert message is not None and message["Message-ID"].endswith("@mx.example.org>")
    with pytest.raises(jobkit.ConfigError, match="message_id_domain.*fully qualified"):
        jobkit.configure(mailer={"message_id_domain": "jobkit"})


def test_file_delivery_never_overwrites(tmp_path: Path) -> None:
    jobkit.configure(mailer={"delivery_method": "file", "file_dir": str(tmp_path)})
    try:
        for i in range(50):
            ByteMailer.note("a@example.com", f"file {i}", bcc="b@example.com").deliver_now()
    finally:
        jobkit.configure()
    files = sorted(tmp_path.iterdir())
    assert len(files) == 50 and all(f.suffix == ".eml" for f in files)  # no temporary left
    subjects = {python_email(f.read_bytes())["Subject"] for f in files}
    assert subjects == {f"file {i}" for i in range(50)}
    assert all(python_email(f.read_bytes())["Bcc"] == "b@example.com" for f in files)


def test_inbox_shows_envelope_recipients_and_survives_an_unknown_charset(
        catcher: Inbox) -> None:
    ByteMailer.note("ada@example.com", "With Bcc", bcc="hidden@example.com").deliver_now()
    caught(catcher, 1)
    catcher.add("x@example.com", ["y@example.com"],
                b"From: x@example.com\r\nTo: y@example.com\r\nSubject: Odd charset\r\n"
                b"Content-Type: text/plain; charset=x-no-such-charset\r\n\r\ncaf\xe9 \xff\r\n")
    client = Client()
    status, _, listing = client.get("/mail/inbox")
    assert status == 200 and "hidden@example.com" in listing and "Odd charset" in listing
    status, _, page = client.get("/mail/inbox/0")  # newest first: the odd one
    assert status == 200 and "x-no-such-charset" in page and "caf\ufffd \ufffd" in page
    status, _, page = client.get("/mail/inbox/1")
    assert status == 200 and "RCPT TO" in page and "hidden@example.com" in page


def test_preview_raw_is_the_bytes_smtp_sends(monkeypatch: pytest.MonkeyPatch) -> None:
    """`--part raw` prints wire_bytes (SMTP delivery's serializer) byte for byte; Date,
    Message-ID and the MIME boundary are pinned so two renders can be compared."""
    monkeypatch.setattr("jobkit.mailer.message.formatdate", lambda **_: "Tue, 01 Dec 2026")
    monkeypatch.setattr("jobkit.mailer.message.make_msgid", lambda **_: "<1@example.com>")
    monkeypatch.setattr("jobkit.mailer.attachments.make_msgid", lambda **_: "<2@example.com>")
    monkeypatch.setattr(email.generator.Generator, "_make_boundary",
                        classmethod(lambda cls, text=None: "==boundary=="))
    result = CliRunner().invoke(cli, ["mail", "preview", "UserMailer.welcome", "--part", "raw"])
    assert result.exit_code == 0, result.output
    expected = wire_bytes(cast(EmailMessage, render_preview("UserMailer.welcome")))
    assert result.stdout_bytes == expected and b"\r\n" in expected


def test_read_message_gives_back_the_same_bytes() -> None:
    """read_message (how the render-once payload's bytes become a message again on the
    worker) serializes to the very same bytes, long display names and UTF-8 headers too."""
    message = ByteMailer.note(["ünï@example.com", "ada@Bücher.example"], "Grüße " * 30,
                              from_=f"{quoted('Zoë ' * 40)} <zoe@example.com>",
                              bcc="hidden@example.com", attachment="naïve\n").message
    assert message is not None
    again = read_message(wire_bytes(message, keep_bcc=True, utf8=True))
    for keep_bcc in (False, True):
        assert wire_bytes(again, keep_bcc=keep_bcc, utf8=True) == \
            wire_bytes(message, keep_bcc=keep_bcc, utf8=True)


def test_a_long_display_name_survives_a_plain_as_bytes() -> None:
    """Code that serializes the message itself (message.as_bytes()) does not refold it."""
    name = "Zoë Dupré " * 12
    message = ByteMailer.note("a@example.com", from_=f"{quoted(name)} <zoe@example.com>"
                              ).message
    assert message is not None
    again = python_email(message.as_bytes())
    assert again["From"].addresses[0].display_name == name.strip()
    [read] = postal_mime([message.as_bytes()])
    assert read["from"]["name"] == name.strip()
