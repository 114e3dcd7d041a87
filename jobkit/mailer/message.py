"""Build a stdlib `EmailMessage` from a mailer's `mail(...)` call, refusing bad input.

Every header value is checked for control characters (CR/LF: header injection; NUL and
the rest) and every address by jobkit.mailer.addresses before anything is built, so a bad
message never reaches a queue. Header values are encoded and folded by jobkit.mailer.headers
(not by the stdlib, whose folding loses spaces before Python 3.13).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, cast

from jobkit.config import current_settings
from jobkit.mailer.addresses import parse_addresses
from jobkit.mailer.attachments import Attachments
from jobkit.mailer.errors import (
    HeaderInjectionError,
    InvalidAddressError,
    InvalidHeaderError,
    MissingRecipientError,
)
from jobkit.mailer.headers import (
    MESSAGE_POLICY,
    control_character,
    encode_text,
    fold,
    fold_addresses,
    structured,
)

__all__ = ["ADDRESS_HEADERS", "HeaderValues", "build_message", "check_header", "envelope",
           "message_id_domain", "needs_smtputf8", "read_addresses"]

MAX_LINE = 998  # octets, CRLF excluded (RFC 5322 2.1.1)
ADDRESS_HEADERS = ("From", "To", "Cc", "Bcc", "Reply-To")
RECIPIENT_HEADERS = ("To", "Cc", "Bcc")
_HEADER_NAME = re.compile(r"^[!-9;-~]+$")  # RFC 5322: printable ASCII but ":"


_STANDARD_NAMES = {name.lower(): name for name in (*ADDRESS_HEADERS, "Subject")} | {
    "reply_to": "Reply-To"}  # how `default` and mail()'s keyword spell it


class HeaderValues(Mapping[str, Any]):
    """Header values by name, one a name whatever its case (`subject` is `Subject`, and
    `reply_to` is `Reply-To`): a later value replaces an earlier one, under the standard
    spelling of a standard header, else under its latest spelling."""

    def __init__(self, values: Mapping[str, Any] | None = None) -> None:
        self._values: dict[str, tuple[str, Any]] = {}
        self.update(values or {})

    @staticmethod
    def _key(name: str) -> tuple[str, str]:
        lowered = name.lower()
        return lowered if lowered != "reply_to" else "reply-to", \
            _STANDARD_NAMES.get(lowered, name)

    def __setitem__(self, name: str, value: Any) -> None:
        key, spelled = self._key(name)
        self._values[key] = (spelled, value)

    def update(self, values: Mapping[str, Any], *, skip_empty: bool = False) -> None:
        """Set each of `values`; with `skip_empty`, not those that are None, "" or []."""
        for name, value in values.items():
            if not (skip_empty and (value is None or value == "" or value == [])):
                self[name] = value

    def __getitem__(self, name: str) -> Any:
        return self._values[self._key(name)[0]][1]

    def __iter__(self) -> Iterator[str]:
        return (spelled for spelled, _ in self._values.values())

    def __len__(self) -> int:
        return len(self._values)


def check_header(name: str, value: str) -> str:
    if not _HEADER_NAME.match(name):
        raise HeaderInjectionError(f"header name {name!r} is not a valid header name")
    if "\r" in value or "\n" in value:
        raise HeaderInjectionError(f"header {name}: value contains CR or LF: {value!r}")
    bad = control_character(value)
    if bad is not None:
        raise InvalidHeaderError(f"header {name}: value holds the control character {bad!r}: "
                                 f"{value!r}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidHeaderError(f"header {name}: value holds a lone surrogate "
                                 f"{value[exc.start]!r} (not text): {value!r}") from None
    if structured(name) and not value.isascii():
        raise InvalidHeaderError(f"header {name}: a structured header takes ASCII only (RFC "
                                 f"2047 allows no encoded-words there): {value!r}")
    if structured(name) and any(len(name) + 2 + len(word) > MAX_LINE for word in value.split()):
        raise InvalidHeaderError(f"header {name}: a word of it would not fit in a line of "
                                 f"{MAX_LINE} octets (RFC 5322 2.1.1): {value[:60]!r}...")
    return value


def message_id_domain(message: EmailMessage) -> str:
    """The right-hand side of `message`'s Message-ID: `mailer.message_id_domain`, else the
    From address's domain: a name the sender owns (not the bare word a container's
    socket.getfqdn() often is), and what DMARC aligns with."""
    configured = current_settings().mailer.get("message_id_domain")
    if configured:
        return str(configured)
    senders = _header_addresses(message, ("From",))  # From only: the stdlib parses per read
    return senders[0].rpartition("@")[2] if senders else ""


def build_message(headers: Mapping[str, str | Iterable[str] | None],
                  parts: Mapping[str, str], attachments: Attachments) -> EmailMessage:
    """`headers` maps header names (From, To, Subject, ...) to values; `parts` maps "txt" and
    "html" to bodies."""
    if not headers.get("To"):
        raise MissingRecipientError("mail() needs a `to` address")
    if not headers.get("From"):
        raise MissingRecipientError("mail() needs a `from_` address (or default['from'])")
    message = EmailMessage(policy=MESSAGE_POLICY)
    for name, value in headers.items():
        if value is None or value == [] or value == "":
            continue
        check_header(name, "")  # the name
        if name in ADDRESS_HEADERS:
            addresses = parse_addresses(name, cast(str | Iterable[str], value))
            if name == "From" and len(addresses) > 1:
                raise InvalidAddressError(
                    f"From: {value!r} holds {len(addresses)} addresses; give one (several "
                    "authors need a Sender header, which mail() does not write)")
            folded = fold_addresses(name, [address.header_form() for address in addresses])
        else:
            folded = fold(name, encode_text(check_header(name, str(value)), name))
        # set_raw: the value is already encoded and folded (see jobkit.mailer.headers)
        message.set_raw(name, folded)
    if "Date" not in message:
        message["Date"] = formatdate(localtime=False, usegmt=True)
    if "Message-ID" not in message:
        message["Message-ID"] = make_msgid(domain=message_id_domain(message))
    _set_body(message, parts, attachments)
    return message


def _header_addresses(message: EmailMessage, names: Iterable[str]) -> list[str]:
    found: list[str] = []
    for name in names:
        for header in message.get_all(name) or []:
            found += [cast(Address, a).addr_spec for a in getattr(header, "addresses", ())]
    return found


def read_addresses(message: EmailMessage) -> tuple[str, list[str], bool]:
    """(MAIL FROM, RCPT TO list, needs SMTPUTF8) of a built message, each address header
    parsed once (the stdlib parses a header anew on every read, most of a send's cost):
    From; To + Cc + Bcc; whether an address is not ASCII (its header is then raw UTF-8,
    RFC 6532, and the server must offer SMTPUTF8)."""
    found = {name: _header_addresses(message, (name,)) for name in ADDRESS_HEADERS}
    senders = found["From"]
    recipients = list(dict.fromkeys(a for name in RECIPIENT_HEADERS for a in found[name]))
    utf8 = not all(a.isascii() for addresses in found.values() for a in addresses)
    return (senders[0] if senders else "", recipients, utf8)


def envelope(message: EmailMessage) -> tuple[str, list[str]]:
    """(MAIL FROM, RCPT TO list) of a built message: From, and To + Cc + Bcc."""
    return read_addresses(message)[:2]


def needs_smtputf8(message: EmailMessage) -> bool:
    """True when an address is not ASCII (see read_addresses)."""
    return read_addresses(message)[2]


def _set_body(message: EmailMessage, parts: Mapping[str, str], attachments: Attachments
              ) -> None:
    text, html = parts.get("txt"), parts.get("html")
    if text is not None:
        message.set_content(text)
    if html is not None:
        if text is None:
            message.set_content(html, subtype="html")
        else:
            message.add_alternative(html, subtype="html")
        # After add_alternative the payload is the list of parts, html last (typeshed
        # cannot tell a multipart payload from a plain one).
        html_part = message if text is None else cast(list[EmailMessage],
                                                      message.get_payload())[-1]
        for inline in attachments.inline.values():
            maintype, subtype = inline.mime_type.split("/", 1)
            html_part.add_related(inline.content, maintype, subtype, cid=inline.content_id,
                                  filename=inline.filename, disposition="inline")
    for attachment in attachments.values():
        maintype, subtype = attachment.mime_type.split("/", 1)
        message.add_attachment(attachment.content, maintype, subtype,
                               filename=attachment.filename,
                               params={"charset": attachment.charset} if attachment.charset
                               else {})
