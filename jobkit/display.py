"""Bytes and values read from Redis, as shown to people: never failing, nothing hidden.

Anything can sit in a queue or a set (bytes that are not UTF-8, JSON strings with lone
surrogates such as ``"\\ud800"``, fields of any type). The API, the dashboard and the CLI show
it with the odd bytes and characters escaped (``\\xNN``), and name it by its job id when that
is plain text, else by a digest of its exact bytes.

A job is shown by what it does: its arguments as a Python reader would write them, records as
``User(42)`` rather than their ``gid://`` reference, and a mail delivery job as its mailer's
``UserMailer#welcome``, as Sidekiq shows it (the dashboard and, through the Celery message's
``argsrepr`` header, Flower).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jobkit.references import GlobalID

__all__ = ["MAIL_DELIVERY_JOBS", "REPR_LIMIT", "ShownJob", "as_bytes", "digest", "escaped",
           "field_text", "ident", "printable", "readable", "shown", "shown_job", "task_reprs",
           "when"]

#: Characters of one argument text (Celery's own `argsrepr` bound, amqp.argsrepr_maxsize).
REPR_LIMIT = 1024
#: Containers within containers shown; deeper ones as ``…``.
SHOWN_DEPTH = 12
#: The job classes whose payload is a mail delivery (mailer, action, args, kwargs, params):
#: MailDeliveryJob and, once imported, its subclasses (jobkit.mailer.job adds them).
MAIL_DELIVERY_JOBS = {"jobkit.mailer.job.MailDeliveryJob"}
_MARKER_TEXT = "'_jk'"  # in a repr, where jobkit.arguments' markers are (or a string says so)

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


@dataclass(frozen=True, slots=True)
class ShownJob:
    """A job as the pages name it: `name` is ``UserMailer#welcome`` for a mail delivery, else
    the job class; `job_class` the class that runs it; `arguments` readable (`readable`)."""

    name: str | None
    job_class: str | None
    arguments: str

    @property
    def via(self) -> str | None:
        """The running class's short name when `name` is not that class (a mail's job)."""
        if self.job_class is None or self.name == self.job_class:
            return None
        return self.job_class.rpartition(".")[2]


def shown_job(payload: Any, job_class: str | None = None, limit: int = REPR_LIMIT
              ) -> ShownJob:
    """How a payload read from Redis is shown; never fails. `job_class`: the class a set
    entry records (else the payload's)."""
    if not isinstance(payload, dict):
        return ShownJob(job_class, job_class, "" if payload is None else readable(payload,
                                                                                   limit))
    job_class = job_class or field_text(payload.get("job_class"))
    mail = _mail(payload)
    if mail is not None:
        name, args, kwargs, params = mail
        text = _call(args, kwargs, limit)
        if params:
            text = f"{text}; params {readable(params, limit - len(text))}" if text else \
                f"params {readable(params, limit)}"
        return ShownJob(name, job_class, text[:limit])
    return ShownJob(job_class, job_class, _call(payload.get("args"), payload.get("kwargs"),
                                                limit))


def task_reprs(payload: dict[str, Any], limit: int = REPR_LIMIT) -> tuple[str, str]:
    """The ``argsrepr`` and ``kwargsrepr`` headers of a job's Celery message, which the worker
    sends in its task events (Flower's args and kwargs): ``(User(42), 'hi')`` and
    ``{'note': 'x'}``; for a mail, ``UserMailer#welcome(User(42))`` and its params. Each at
    most `limit` characters, the walk stopping there (this runs on every enqueue)."""
    mail = _mail(payload)
    if mail is not None:
        name, args, kwargs, params = mail
        call = f"{name}({_call(args, kwargs, limit)})"
        return call[:limit], readable({"params": params} if params else {}, limit)
    args = payload.get("args")
    args = args if isinstance(args, list) else []
    end = ",)" if len(args) == 1 else ")"
    return (_fast(tuple(args), limit, lambda writer: writer.items("(", args, end, 0)),
            readable(payload.get("kwargs", {}), limit))


def readable(value: Any, limit: int = REPR_LIMIT) -> str:
    """A serialized value (jobkit.arguments) as a reader would write it, markers as what they
    stand for: ``User(42)`` for a record, ``datetime(2026-01-02T03:04:05+00:00)``,
    ``<12 bytes>``. At most `limit` characters (cut with ``…``); never fails."""
    return _fast(value, limit, lambda writer: writer.value(value, 0))


def _fast(value: Any, limit: int, write: Callable[[_Writer], None]) -> str:
    """`repr(value)` when that is what `write` would write (no marker in it: a walk at C
    speed, a few microseconds less per enqueue), else what `write` writes; cut to `limit`."""
    try:
        text = repr(value)
    except RecursionError:  # nested deeper than repr walks: the writer stops at SHOWN_DEPTH
        return _written(limit, write)
    if _MARKER_TEXT in text:
        return _written(limit, write)
    return text if len(text) <= limit else text[:max(limit - 1, 0)] + "…"


def _mail(payload: dict[str, Any]) -> tuple[str, list, dict, dict] | None:
    """(``Mailer#action``, args, kwargs, params) of a mail delivery payload, else None."""
    job_class = payload.get("job_class")
    if not (isinstance(job_class, str) and job_class in MAIL_DELIVERY_JOBS):
        return None
    args = payload.get("args")
    if not (isinstance(args, list) and len(args) >= 5):
        return None
    mailer, action, mail_args, mail_kwargs, params = args[:5]
    if not (isinstance(mailer, str) and isinstance(action, str) and isinstance(mail_args, list)
            and isinstance(mail_kwargs, dict) and isinstance(params, dict)):
        return None
    return f"{printable(mailer.rpartition('.')[2])}#{printable(action)}", mail_args, \
        mail_kwargs, params


def _call(args: Any, kwargs: Any, limit: int) -> str:
    """Arguments as in a call: ``User(42), 'hi', note='x'``."""
    return _written(limit, lambda writer: writer.call(args, kwargs))


def _written(limit: int, write: Callable[[_Writer], None]) -> str:
    """What `write` wrote, cut to `limit` characters with ``…`` when it went past."""
    writer = _Writer(limit)
    try:
        write(writer)
    except _Full:
        return "".join(writer.parts)[:max(limit - 1, 0)] + "…"
    return "".join(writer.parts)


class _Full(Exception):
    """The text has reached its limit: stop walking."""


class _Writer:
    """Writes a JSON value out in parts, raising _Full once past `left` characters."""

    __slots__ = ("left", "parts")

    def __init__(self, limit: int) -> None:
        self.parts: list[str] = []
        self.left = limit

    def put(self, text: str) -> None:
        self.parts.append(text)
        self.left -= len(text)
        if self.left < 0:
            raise _Full

    def call(self, args: Any, kwargs: Any) -> None:
        items = args if isinstance(args, list) else [] if args is None else [args]
        for i, item in enumerate(items):
            if i:
                self.put(", ")
            self.value(item, 1)
        if isinstance(kwargs, dict):
            for i, (key, item) in enumerate(kwargs.items()):
                self.put(f"{', ' if items or i else ''}{printable(str(key))}=")
                self.value(item, 1)

    def value(self, value: Any, depth: int) -> None:
        kind = type(value)
        if kind is str:  # cut before repr: a mail body or a document costs nothing past it
            self.put(repr(value[:self.left + 1]))
        elif kind is list:
            self.items("[", value, "]", depth)
        elif kind is dict:
            self.mapping(value, depth)
        elif kind in (int, float, bool, type(None)):
            self.put(repr(value))
        else:  # not from JSON (a caller's own value): its type only, repr could be anything
            self.put(f"<{kind.__name__}>")

    def items(self, start: str, values: Any, end: str, depth: int) -> None:
        if not isinstance(values, list):
            self.value(values, depth)
            return
        if depth >= SHOWN_DEPTH and values:
            self.put(f"{start}…{end}")
            return
        self.put(start)
        for i, item in enumerate(values):
            if i:
                self.put(", ")
            self.value(item, depth + 1)
        self.put(end)

    def mapping(self, value: dict, depth: int) -> None:
        marker = value.get("_jk")
        if isinstance(marker, str) and "v" in value and self.marker(marker, value, depth):
            return
        if depth >= SHOWN_DEPTH and value:
            self.put("{…}")
            return
        self.put("{")
        for i, (key, item) in enumerate(value.items()):
            self.put(f"{', ' if i else ''}{key!r}: ")
            self.value(item, depth + 1)
        self.put("}")

    def marker(self, kind: str, marked: dict, depth: int) -> bool:
        """Write a jobkit.arguments marker; False when it is not one this knows."""
        data = marked["v"]
        if kind == "gid" and isinstance(data, str):
            try:
                gid = GlobalID.parse(data)
            except ValueError:
                return False
            keys = ", ".join(part if part.isdigit() else repr(part) for part in gid.model_id)
            self.put(f"{printable(gid.model.rpartition('.')[2])}({printable(keys)})")
        elif kind in ("tuple", "set", "frozenset") and isinstance(data, list):
            start, end = _BRACKETS[kind]
            self.items(start, data, ",)" if kind == "tuple" and len(data) == 1 else end, depth)
        elif kind == "dict" and isinstance(data, list):
            self.pairs(data, depth)
        elif kind == "enum" and isinstance(data, list) and len(data) == 2 \
                and all(isinstance(part, str) for part in data):
            self.put(f"{printable(data[0].rpartition(':')[2].rpartition('.')[2])}."
                     f"{printable(data[1])}")
        elif kind == "bytes" and isinstance(data, str):  # base64: 4 characters, 3 bytes
            self.put(f"<{len(data) * 3 // 4 - data[-2:].count('=')} bytes>")
        elif kind == "custom":
            self.put(f"{printable(str(marked.get('s')))}(")
            self.value(data, depth + 1)
            self.put(")")
        elif kind in _SCALAR_MARKERS:
            self.put(_SCALAR_MARKERS[kind](data))
        else:
            return False
        return True

    def pairs(self, pairs: list, depth: int) -> None:
        """A dict whose keys JSON cannot hold (jobkit.arguments' "dict" marker)."""
        self.put("{")
        for i, pair in enumerate(pairs):
            if i:
                self.put(", ")
            if isinstance(pair, list) and len(pair) == 2:
                self.value(pair[0], depth + 1)
                self.put(": ")
                self.value(pair[1], depth + 1)
            else:
                self.value(pair, depth + 1)
        self.put("}")


_BRACKETS = {"tuple": ("(", ")"), "set": ("{", "}"), "frozenset": ("frozenset({", "})")}


def _zoned(kind: str) -> Callable[[Any], str]:
    """A datetime or time marker: its ISO text, and its zone's name when it has one."""
    def text(data: Any) -> str:
        if isinstance(data, list) and data:
            zone = data[1] if len(data) > 1 and data[1] else None
            return f"{kind}({printable(str(data[0]))}{f' {printable(str(zone))}' if zone else ''})"
        return f"{kind}({printable(str(data))})"
    return text


def _timedelta(data: Any) -> str:
    if isinstance(data, list) and len(data) == 3:
        parts = [f"{name}={amount!r}" for name, amount in
                 zip(("days", "seconds", "microseconds"), data, strict=True) if amount]
        return f"timedelta({', '.join(parts)})"
    return f"timedelta({data!r})"


_SCALAR_MARKERS: dict[str, Callable[[Any], str]] = {
    "datetime": _zoned("datetime"),
    "time": _zoned("time"),
    "date": lambda data: f"date({printable(str(data))})",
    "timedelta": _timedelta,
    "decimal": lambda data: f"Decimal({printable(str(data))!r})",
    "uuid": lambda data: f"UUID({printable(str(data))!r})",
    "float": lambda data: printable(str(data)),  # nan, inf, -inf
}
