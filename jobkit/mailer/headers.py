"""Header values encoded and folded by jobkit, and the one serializer of a message's bytes.

Why not the stdlib's folding: before Python 3.13 it can drop the space between two
RFC 2047 encoded-words when it folds a long non-ASCII header (python/cpython#144692:
`naïve café` arrives as `naïvecafé`). So jobkit writes each header value it is given
itself, already folded: plain printable ASCII as it is (folded at its spaces), anything
else as UTF-8 base64 encoded-words cut at character boundaries, with every space inside
the encoded text (a decoder drops the whitespace *between* encoded-words). These values
are stored with `set_raw` and written out unchanged by `wire_bytes`, whose policy never
refolds them.
"""

from __future__ import annotations

import base64
import copy
import email
import email.policy
import re
import unicodedata
from email.headerregistry import AddressHeader, BaseHeader
from email.message import EmailMessage
from typing import cast

__all__ = [
    "MESSAGE_POLICY",
    "control_character",
    "encode_phrase",
    "encode_text",
    "structured",
    "fold",
    "fold_addresses",
    "read_message",
    "wire_bytes",
]

#: Bodies are 7-bit (quoted-printable or base64 when not ASCII), so the bytes need neither
#: 8BITMIME nor SMTPUTF8 unless an address does; and jobkit's header values are never
#: refolded, even by a plain `message.as_bytes()` (a long display name's line passes 78).
MESSAGE_POLICY = email.policy.default.clone(cte_type="7bit", refold_source="none")
_WIRE = email.policy.SMTP.clone(cte_type="7bit", refold_source="none")
_WIRE_UTF8 = _WIRE.clone(utf8=True)

LINE = 78  # RFC 5322 2.1.1: lines SHOULD be at most 78 characters
_WORD_OCTETS = 39  # UTF-8 octets per encoded-word: "=?utf-8?b?" + 52 base64 + "?=" = 64 chars
_ATOM = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+$")


def control_character(value: str) -> str | None:
    """The first control character (Unicode Cc: NUL, DEL, C1, ...) in `value` other than
    TAB, or None."""
    for char in value:
        if char != "\t" and unicodedata.category(char) == "Cc":
            return char
    return None


def _plain(value: str) -> bool:
    """Text that can go as it is: printable ASCII words with single spaces between them,
    none long enough to need cutting, and nothing a decoder would take for an encoded-word."""
    return (value.isascii() and value.isprintable() and "=?" not in value
            and value == value.strip() and "  " not in value
            and all(len(word) <= LINE - 2 for word in value.split(" ")))


def _encoded_words(text: str) -> list[str]:
    """`text` as base64 UTF-8 encoded-words, each a whole number of characters."""
    chunks: list[bytes] = []
    chunk = b""
    for char in text:
        octets = char.encode("utf-8")
        if chunk and len(chunk) + len(octets) > _WORD_OCTETS:
            chunks.append(chunk)
            chunk = b""
        chunk += octets
    if chunk:
        chunks.append(chunk)
    return [f"=?utf-8?b?{base64.b64encode(c).decode('ascii')}?=" for c in chunks]


#: Headers with a grammar of their own (message ids, URLs in angle brackets, tokens), where
#: RFC 2047 forbids encoded-words: their values go as written (ASCII), folded at spaces.
STRUCTURED = frozenset({
    "message-id", "in-reply-to", "references", "return-path", "received", "date",
    "resent-date", "resent-message-id", "mime-version", "dkim-signature", "arc-seal",
    "arc-message-signature", "arc-authentication-results", "authentication-results",
    "feedback-id", "auto-submitted", "precedence", "archived-at", "autocrypt",
})
_STRUCTURED_PREFIXES = ("list-", "content-")


def structured(name: str) -> bool:
    lowered = name.lower()
    return lowered in STRUCTURED or lowered.startswith(_STRUCTURED_PREFIXES)


def encode_text(value: str, name: str = "") -> list[str]:
    """A header value as tokens for `fold`: unstructured text (Subject, a custom header)
    encoded as needed; the value of a `structured` header `name` as it is (the caller checks
    it is ASCII), its whitespace runs one space (they mean nothing there)."""
    if structured(name):
        return value.split()
    if value == "":
        return []
    return value.split(" ") if _plain(value) else _encoded_words(value)


def encode_phrase(name: str) -> str:
    """A display name: bare atoms, a quoted string, or one encoded-word.

    One encoded-word, even past RFC 2047's 75 characters: Python's parser keeps the
    whitespace between two encoded-words of a display name (RFC 2047 6.2 says to drop it), so
    no cut between words reads back the same in Python and in a parser that follows the RFC.
    """
    if _plain(name) and all(_ATOM.match(word) for word in name.split(" ")):
        return name
    if _plain(name) and len(name) <= LINE - 10:
        return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"=?utf-8?b?{base64.b64encode(name.encode('utf-8')).decode('ascii')}?="


def fold(name: str, tokens: list[str]) -> str:
    """Tokens joined by single spaces, each line at most LINE characters where the tokens
    allow it (a line break goes before a space, so unfolding restores the text)."""
    lines: list[str] = []
    line = f"{name}:"
    for token in tokens:
        if len(line) + 1 + len(token) > LINE and line != f"{name}:" and line.strip():
            lines.append(line)
            line = ""
        line += " " + token
    lines.append(line)
    return "\n".join(lines)[len(name) + 2:] if tokens else ""


def fold_addresses(name: str, forms: list[str]) -> str:
    """An address header's value folded like `fold`: `forms` (each `Name <addr>` or `addr`,
    already encoded) joined by commas, a line break only at a space."""
    tokens = [token for form in forms for token in (form + ",").split(" ")]
    tokens[-1] = tokens[-1].rstrip(",")
    return fold(name, tokens)


def _own_form(value: BaseHeader) -> str | None:
    """The encoded, folded text for a header value set as `message[name] = value` (by an
    interceptor or a callback; jobkit's own are set raw), or None to leave it to the stdlib:
    MIME headers, and values the stdlib cannot fold wrongly (short printable ASCII)."""
    name = value.name
    if name.lower().startswith("content-") or name.lower() == "mime-version":
        return None
    text = str(value)
    if _plain(text) and len(name) + 2 + len(text) <= LINE:
        return None
    if not isinstance(value, AddressHeader):
        if structured(name) and not text.isascii():
            return None  # not jobkit's to fix here: the stdlib's form
        return fold(name, encode_text(text, name))
    addresses = value.addresses
    if not addresses or any(group.display_name is not None for group in value.groups):
        return None  # group syntax: the stdlib's form (jobkit writes no groups)
    forms = [f"{encode_phrase(a.display_name)} <{a.addr_spec}>" if a.display_name
             else a.addr_spec for a in addresses]
    return fold_addresses(name, forms)


def _settled(message: EmailMessage) -> EmailMessage:
    """`message`, or a copy of it whose headers set as objects are in jobkit's own form."""
    items = message.raw_items()
    forms = [(name, value, _own_form(value) if isinstance(value, BaseHeader) else None)
             for name, value in items]
    if all(form is None for _, _, form in forms):
        return message
    message = copy.copy(message)
    for name in {name for name, _, _ in forms}:
        del message[name]
    for name, value, form in forms:
        message.set_raw(name, value if form is None else form)  # in its place
    return message


def wire_bytes(message: EmailMessage, *, keep_bcc: bool = False, utf8: bool = False) -> bytes:
    """The bytes of `message` as they go on the wire (CRLF, Bcc left out unless `keep_bcc`):
    what SMTP delivery sends, the `file` method writes and `jobkit mail preview --part raw`
    prints. `utf8` (RFC 6532 headers) when an address is not ASCII, i.e. with SMTPUTF8.
    Headers an interceptor or a callback set with `message[name] = value` are encoded and
    folded here as jobkit's own are (the stdlib's folding is the bug this module avoids)."""
    message = _settled(message)
    if not keep_bcc and ("Bcc" in message or "Resent-Bcc" in message):
        message = copy.copy(message)  # __delitem__ rebinds the header list: the original keeps it
        del message["Bcc"]
        del message["Resent-Bcc"]
    return message.as_bytes(policy=_WIRE_UTF8 if utf8 else _WIRE)


def read_message(data: bytes) -> EmailMessage:
    """The message `wire_bytes` wrote (e.g. with `keep_bcc=True, utf8=True` to carry it in a
    payload), its header values kept as written. Parsed from text: the bytes parser would
    read RFC 6532 UTF-8 headers as undecodable ASCII, and re-encode them on the way out.
    CRLF back to LF: a 7-bit part's content is its lines as they were set."""
    text = data.decode("utf-8").replace("\r\n", "\n")
    return cast(EmailMessage, email.message_from_string(text, policy=MESSAGE_POLICY))
