"""Bytes and values read from Redis, as shown to people: never failing, nothing hidden.

Anything can sit in a queue or a set (bytes that are not UTF-8, JSON strings with lone
surrogates such as ``"\\ud800"``, fields of any type). The API, the dashboard and the CLI show
it with the odd bytes and characters escaped (``\\xNN``), and name it by its job id when that
is plain text, else by a digest of its exact bytes.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from typing import Any

__all__ = ["as_bytes", "digest", "escaped", "field_text", "ident", "printable", "shown",
           "when"]

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def as_bytes(raw: bytes | str) -> bytes:
    """The exact bytes of something read from Redis (a str keeps its undecodable bytes as
    surrogates, as ``surrogateescape`` decoding leaves them)."""
    if isinstance(raw, bytes):
        return raw
    try:
        return raw.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # other lone surrogates (JSON "\ud800"): keep them as they are
        return raw.encode("utf-8", "surrogatepass")


def shown(raw: bytes | str) -> str:
    """As text: undecodable bytes as ``\\xNN``."""
    return as_bytes(raw).decode("utf-8", "backslashreplace")


def escaped(raw: bytes | str) -> str:
    """As text, with control characters as ``\\xNN`` too (a whole item or member)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", shown(raw))


def printable(text: str) -> str:
    """`text` that encodes to UTF-8: lone surrogates escaped."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def field_text(value: Any) -> str | None:
    """A stored field as text: None stays None, other non-strings are their JSON."""
    if value is None:
        return None
    if isinstance(value, str):
        return printable(value)
    try:
        return printable(json.dumps(value, ensure_ascii=False))
    except (TypeError, ValueError):
        return repr(value)


def field_number(value: Any) -> float | None:
    """A stored field as a finite number, or None (a bool, a string, NaN are not numbers)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def digest(raw: bytes | str) -> str:
    """A short hash of the exact bytes: names what has no usable job id."""
    return "~" + hashlib.sha1(as_bytes(raw)).hexdigest()[:16]


def ident(job_id: Any, raw: bytes | str) -> str:
    """The job id when it is plain text, else the digest of `raw` (what pages post)."""
    if isinstance(job_id, str) and job_id and printable(job_id) == job_id:
        return job_id
    return digest(raw)


def when(stamp: Any) -> str:
    """A Unix time as UTC text (``-`` for none); whatever else was stored, as it is."""
    if not stamp:
        return "-"
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(stamp)))
    except (TypeError, ValueError, OverflowError, OSError):
        return str(stamp)
