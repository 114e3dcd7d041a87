"""What Celery needs of a task message before it can hold it safely.

Why: Celery reads a message's headers and body at several moments: when it arrives, when a
pool process frees up (`Request.execute_using_pool` unpacks `timelimit`), when it is acked. A
header of the wrong type breaks the later ones outside any handler, and the whole consumer
stops (`Unrecoverable error`). The fetch script already checks the envelope (transport.py);
this checks, before Celery sees the message, the task fields Celery reads, so a malformed
message is buried with a reason instead.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from typing import Any

from celery.utils.time import maybe_iso8601

from jobkit.controls.concurrency import header_problem

__all__ = ["FETCHED_FROM", "fetched_from", "note_fetched_from", "parse_time", "problem",
           "without_note"]

FETCHED_FROM = "jobkit_list"  # in delivery_info: the list the fetch popped the message from

_STR = (str,)
_OPTIONAL_STR = (str, type(None))
_OPTIONAL_INT = (int, type(None))
# header: the types Celery's protocol 2 allows (celery/app/amqp.py as_task_v2).
_HEADERS: dict[str, tuple[type, ...]] = {
    "task": _STR,
    "id": _STR,
    "lang": _OPTIONAL_STR,
    "root_id": _OPTIONAL_STR,
    "parent_id": _OPTIONAL_STR,
    "group": _OPTIONAL_STR,
    "shadow": _OPTIONAL_STR,
    "origin": _OPTIONAL_STR,
    "argsrepr": _OPTIONAL_STR,
    "kwargsrepr": _OPTIONAL_STR,
    "eta": _OPTIONAL_STR,
    "expires": _OPTIONAL_STR,
    "retries": _OPTIONAL_INT,
    "group_index": _OPTIONAL_INT,
    "replaced_task_nesting": _OPTIONAL_INT,
    "ignore_result": (bool, type(None)),
    "stamps": (dict, type(None)),
    "stamped_headers": (list, type(None)),
    "timelimit": (list, type(None)),
}
_EMBED = ("callbacks", "errbacks", "chain")


def problem(raw: dict[str, Any]) -> str | None:
    """Why Celery cannot hold this message safely, or None."""
    properties = raw.get("properties")
    if not isinstance(properties, dict) or not isinstance(properties.get("delivery_info"),
                                                           dict):
        return "properties or properties.delivery_info is not an object"
    headers = raw.get("headers") or {}
    if not isinstance(headers, dict):
        return "headers is not an object"
    for name, types in _HEADERS.items():
        if name in headers and not _is(headers[name], types):
            return f"header {name!r} is a {type(headers[name]).__name__}"
        if name in ("id", "task") and name not in headers:
            return f"no {name!r} header (not a Celery task message, protocol 2)"
    for name in ("eta", "expires"):
        if headers.get(name) is not None and not _is_time(headers[name]):
            return f"header {name!r} is not an ISO 8601 time Celery can use"
    if "jobkit_concurrency" in headers:
        why = header_problem(headers["jobkit_concurrency"])
        if why is not None:
            return why
    limit = headers.get("timelimit")
    if limit is not None and (len(limit) != 2 or not all(
            _is(value, (int, float, type(None))) for value in limit)):
        return "header 'timelimit' is not [hard, soft] seconds"
    return _body_problem(raw)


def _body_problem(raw: dict[str, Any]) -> str | None:
    """Decoded here although Celery decodes it again: Celery accepts some bodies it then
    cannot run (`[5, {}, {}]` fails in the pool process and is acknowledged, so the job is
    lost; a number for `callbacks` breaks after the run), and only this check buries them."""
    body: Any = raw.get("body")  # anything: a wrong type raises TypeError, caught below
    try:
        if raw.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body, validate=True)
        decoded = json.loads(body)
    except (binascii.Error, ValueError, TypeError) as exc:
        return f"body cannot be decoded: {exc}"
    if not (isinstance(decoded, list) and len(decoded) == 3 and isinstance(decoded[0], list)
            and isinstance(decoded[1], dict) and isinstance(decoded[2], dict | None)):
        return "body is not [args list, kwargs object, embed object]"
    embed = decoded[2] or {}
    for name in _EMBED:
        if not _is(embed.get(name), (list, type(None))):
            return f"body's {name} is not a list"
    if not _is(embed.get("chord"), (dict, type(None))):
        return "body's chord is not an object"
    return None


def parse_time(text: str) -> dt.datetime:
    """An `eta` or `expires` header as Celery's request reads it (its own parser, dateutil's
    isoparse: it refuses `2020-01-01T00:00:00 +00:00`, which fromisoformat takes, and takes
    `2020-01-01T24:00:00`, which fromisoformat refuses); ValueError when it cannot."""
    parsed = maybe_iso8601(text)
    if parsed is None:  # "": Celery would fail on it outside any handler
        raise ValueError("empty time")
    return parsed


def _is_time(text: str) -> bool:
    """Whether Celery can parse the time and convert it between time zones; a time it cannot
    convert (year 9999 at -14:00) would have it drop the message."""
    try:
        parsed = parse_time(text)
        (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)
        parsed.astimezone()  # to the worker's local zone, as Celery does too
    except (ValueError, OverflowError, TypeError, AttributeError):
        return False
    return True


def note_fetched_from(raw: dict[str, Any], list_key: str) -> None:
    """Remember the Redis list the fetch popped the message from (its queue and priority
    list): kombu's delivery_info has only the exchange and routing key, which need not name
    the queue (a queue bound to a named exchange under another routing key)."""
    raw["properties"]["delivery_info"][FETCHED_FROM] = list_key


def fetched_from(raw: dict[str, Any]) -> str | None:
    """The list `note_fetched_from` noted, or None (a message this worker did not fetch)."""
    info = (raw.get("properties") or {}).get("delivery_info") or {}
    key = info.get(FETCHED_FROM) if isinstance(info, dict) else None
    return key if isinstance(key, str) else None


def without_note(raw: dict[str, Any]) -> dict[str, Any]:
    """The message as it came out of its list (a copy without the note), to keep or push back."""
    info = (raw.get("properties") or {}).get("delivery_info")
    if not isinstance(info, dict) or FETCHED_FROM not in info:
        return raw
    kept = {**raw, "properties": {**raw["properties"], "delivery_info": dict(info)}}
    del kept["properties"]["delivery_info"][FETCHED_FROM]
    return kept


def _is(value: Any, types: tuple[type, ...]) -> bool:
    """isinstance, but a bool is not an int here (JSON true is not a number)."""
    return isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
