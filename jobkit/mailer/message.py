"""Build a stdlib `EmailMessage` from a mailer's `mail(...)` call, refusing bad input.

Every header value is checked for CR/LF (header injection) and every address for the
user@domain shape before anything is built, so a bad message never reaches a queue.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from email.message import EmailMessage
from email.utils import formatdate, getaddresses, make_msgid
from typing import cast

from jobkit.mailer.attachments import Attachments
from jobkit.mailer.errors import HeaderInjectionError, InvalidAddressError, MissingRecipientError

__all__ = ["ADDRESS_HEADERS", "build_message", "check_header"]

ADDRESS_HEADERS = ("From", "To", "Cc", "Bcc", "Reply-To")
_ADDRESS = re.compile(r"^[^@\s<>(),;:\"\[\]]+@[^@\s<>(),;:\"\[\]]+$")
_HEADER_NAME = re.compile(r"^[!-9;-~]+$")  # RFC 5322: printable ASCII but ":"


def check_header(name: str, value: str) -> str:
    if not _HEADER_NAME.match(name):
        raise HeaderInjectionError(f"header name {name!r} is not a valid header name")
    if "\r" in value or "\n" in value:
        raise HeaderInjectionError(f"header {name}: value contains CR or LF: {value!r}")
    return value


def _addresses(name: str, value: str | Iterable[str] | None) -> str | None:
    if value is None:
        return None
    items = [value] if isinstance(value, str) else list(value)
    for item in items:
        if not isinstance(item, str):
            raise InvalidAddressError(f"{name}: {item!r} is not an address")
        check_header(name, item)
    pairs = getaddresses(items)
    if not pairs or len(pairs) < len(items):
        raise InvalidAddressError(f"{name}: cannot read addresses from {items!r}")
    for display, address in pairs:
        if not _ADDRESS.match(address):
            culprit = address or display or ", ".join(items)
            raise InvalidAddressError(f"{name}: {culprit!r} is not a valid email address "
                                      "(want user@domain)")
    return ", ".join(items)


def build_message(headers: Mapping[str, str | Iterable[str] | None],
                  parts: Mapping[str, str], attachments: Attachments) -> EmailMessage:
    """`headers` maps header names (From, To, Subject, ...) to values; `parts` maps "txt" and
    "html" to bodies."""
    if not headers.get("To"):
        raise MissingRecipientError("mail() needs a `to` address")
    if not headers.get("From"):
        raise MissingRecipientError("mail() needs a `from_` address (or default['from'])")
    message = EmailMessage()
    for name, value in headers.items():
        if value is None or value == [] or value == "":
            continue
        if name in ADDRESS_HEADERS:
            message[name] = _addresses(name, value)
        else:
            message[name] = check_header(name, str(value))
    if "Date" not in message:
        message["Date"] = formatdate(localtime=False, usegmt=True)
    if "Message-ID" not in message:
        message["Message-ID"] = make_msgid(domain="jobkit")
    _set_body(message, parts, attachments)
    return message


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
                               filename=attachment.filename)
