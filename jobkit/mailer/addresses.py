"""Addresses as mailers give them, checked and put in the form that goes on the wire.

Refused at the call (InvalidAddressError naming the header and the culprit): control
characters, empty or over-long parts, `..` or an empty label in the domain or local part.
An IDN domain is sent as punycode (IDNA 2008, UTS 46 mapping, by the `idna` package); a
non-ASCII local part is kept as it is and needs a server offering SMTPUTF8 (RFC 6531).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.utils import getaddresses

import idna

from jobkit.mailer.errors import HeaderInjectionError, InvalidAddressError
from jobkit.mailer.headers import control_character, encode_phrase

__all__ = ["Address", "parse_addresses"]

MAX_LOCAL_OCTETS = 64  # RFC 5321 4.5.3.1.1
MAX_DOMAIN_OCTETS = 253  # the longest name DNS can carry (255 octets on the wire)
MAX_LABEL_OCTETS = 63
MAX_ADDRESS_OCTETS = 254  # RFC 5321's 256-octet path less the angle brackets
MAX_NAME_OCTETS = 600  # one encoded-word (headers.encode_phrase) within a 998-octet line

_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~-"
_LOCAL_ATOM = re.compile(rf"^[\u0080-\U0010ffff{_ATEXT}]+$")  # non-ASCII: RFC 6531
_LDH_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?$")


@dataclass(frozen=True)
class Address:
    display_name: str
    local: str
    domain: str  # ASCII: punycode for an IDN

    @property
    def addr_spec(self) -> str:
        return f"{self.local}@{self.domain}"

    def header_form(self) -> str:
        """`Name <local@domain>` as it goes in a header (the name encoded as needed)."""
        if not self.display_name:
            return self.addr_spec
        return f"{encode_phrase(self.display_name)} <{self.addr_spec}>"


def parse_addresses(header: str, value: str | Iterable[str]) -> list[Address]:
    """The addresses of one header's value (a string or a list of them), each checked."""
    items = [value] if isinstance(value, str) else list(value)
    addresses: list[Address] = []
    for item in items:
        if not isinstance(item, str):
            raise InvalidAddressError(f"{header}: {item!r} is not an address")
        if "\r" in item or "\n" in item:
            raise HeaderInjectionError(f"header {header}: value contains CR or LF: {item!r}")
        bad = control_character(item)
        if bad is not None:
            raise InvalidAddressError(f"{header}: {item!r} holds the control character {bad!r}")
        pairs = getaddresses([item])
        if not pairs or not any(address for _, address in pairs):
            raise InvalidAddressError(f"{header}: cannot read an address from {item!r}")
        if len(pairs) != len(_entries(item)):  # Python < 3.11.10's lenient parser (CVE-2023-27043)
            raise InvalidAddressError(
                f"{header}: {item!r} reads as {len(pairs)} addresses "
                f"({', '.join(a or repr(d) for d, a in pairs)}); give one address an entry, "
                "and separate addresses with commas")
        for display, address in pairs:
            if address and address not in item:  # the parser joined or dropped something
                raise InvalidAddressError(f"{header}: {item!r} is not a valid email address "
                                          f"(read as {address!r}: spaces or comments in it?)")
            # A phrase's whitespace runs mean one space (RFC 5322 3.2.2; Python reads a
            # display name so), so a name is kept that way, and reads back exactly.
            name = " ".join(display.split())
            if len(name.encode()) > MAX_NAME_OCTETS:
                raise InvalidAddressError(f"{header}: display name {name[:40]!r}... is longer "
                                          f"than {MAX_NAME_OCTETS} octets")
            addresses.append(_address(header, name, address or display or item))
    if not addresses:
        raise InvalidAddressError(f"{header}: no address in {items!r}")
    return addresses


def _entries(text: str) -> list[str]:
    """`text` cut at its commas outside quoted strings, comments and angle brackets: the
    addresses it means to hold (empty entries left out)."""
    entries, current, quoted, escaped, depth = [], [], False, False, 0
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"' and depth == 0:
            quoted = not quoted
        elif not quoted and char in "(<":
            depth += 1
        elif not quoted and char in ")>" and depth:
            depth -= 1
        elif char == "," and not quoted and depth == 0:
            entries.append("".join(current))
            current = []
            continue
        current.append(char)
    entries.append("".join(current))
    return [entry for entry in entries if entry.strip()]


def _hidden(char: str) -> bool:
    """Whitespace or an invisible character (Unicode Z*, Cf): never in a mailbox."""
    return char.isspace() or unicodedata.category(char)[0] == "Z" or \
        unicodedata.category(char) == "Cf"


def _address(header: str, display: str, addr_spec: str) -> Address:
    def refuse(why: str) -> InvalidAddressError:
        return InvalidAddressError(f"{header}: {addr_spec!r} is not a valid email address "
                                   f"({why})")

    local, at, domain = addr_spec.rpartition("@")
    if not at or not local or not domain:
        raise refuse("want user@domain")
    if len(local.encode()) > MAX_LOCAL_OCTETS:
        raise refuse(f"the part before @ is longer than {MAX_LOCAL_OCTETS} octets")
    if any(not atom for atom in local.split(".")):
        raise refuse("an empty part between dots before @")
    if not all(_LOCAL_ATOM.match(atom) for atom in local.split(".")):
        raise refuse("a character not allowed before @")
    if any(_hidden(char) for char in local):
        raise refuse("whitespace or an invisible character before @")
    ascii_domain = _ascii_domain(domain, refuse)
    if len(local.encode()) + 1 + len(ascii_domain) > MAX_ADDRESS_OCTETS:
        raise refuse(f"longer than {MAX_ADDRESS_OCTETS} octets")
    return Address(display, local, ascii_domain)


def _ascii_domain(domain: str, refuse: Callable[[str], InvalidAddressError]) -> str:
    labels = domain.split(".")
    if any(not label for label in labels):
        raise refuse("an empty label in the domain (`..` or a dot at an end)")
    ascii_labels = []
    for label in labels:
        if label.isascii():
            if not _LDH_LABEL.match(label):
                raise refuse(f"domain label {label!r}: letters, digits and inner hyphens only")
            ascii_labels.append(label.lower())
            continue
        try:
            ascii_labels.append(idna.encode(label, uts46=True).decode("ascii"))
        except idna.IDNAError as exc:
            raise refuse(f"domain label {label!r} is not a valid IDN: {exc}") from None
    if any(len(label) > MAX_LABEL_OCTETS for label in ascii_labels):
        raise refuse(f"a domain label longer than {MAX_LABEL_OCTETS} octets")
    ascii_domain = ".".join(ascii_labels)
    if len(ascii_domain) > MAX_DOMAIN_OCTETS:
        raise refuse(f"the domain is longer than {MAX_DOMAIN_OCTETS} octets")
    return ascii_domain
