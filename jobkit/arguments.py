"""Job arguments to JSON and back, exactly.

JSON-native values pass through untouched (the fast path). Every other supported value becomes a
marker object ``{"_jk": "<type>", "v": ...}``. A plain dict that happens to hold the key ``_jk``
(or kombu's own ``__type__``) is written as a list of pairs, so user data is never misread as a
marker. Anything else raises SerializationError naming the argument's path, and so does a
value that some adapter or the worker could not carry: a string holding a surrogate (not UTF-8),
an int of more digits than a worker's JSON reader takes, an Enum value that is not one member
(combined flags), nesting deeper than MAX_DEPTH (or a container holding itself). Refused here,
at enqueue, they fail the same way under every adapter.
"""

from __future__ import annotations

import base64
import datetime as dt
import enum
import math
import sys
import uuid
import zoneinfo
from collections.abc import Callable
from decimal import Decimal
from typing import Any, NoReturn

from jobkit import references
from jobkit.errors import DeserializationError, JobClassError, SerializationError
from jobkit.imports import import_object, require_importable

__all__ = [
    "Serializer",
    "deserialize",
    "deserialize_value",
    "register_serializer",
    "serialize",
    "serialize_value",
]

MARKER = "_jk"
# kombu's JSON decoder turns {"__type__": ...} into objects on its own, so that key is ours too.
RESERVED_KEYS = frozenset({MARKER, "__type__"})
MAX_DEPTH = 100  # containers within containers, as many as Ruby's JSON (and so Sidekiq) reads
# JSON writes an int as decimal text; Python reads and writes at most this many digits by
# default (sys.set_int_max_str_digits), so a worker could not read a longer one.
MAX_INT_DIGITS = sys.int_info.default_max_str_digits
_INT_MAX = 10**MAX_INT_DIGITS - 1
_INT_MIN = -_INT_MAX
_SCALARS = (bool, type(None))


class Serializer:
    """A custom type's (de)serializer: subclass, set `name` and `type`, register an instance.

    `serialize` may return any value jobkit can serialize (dates and references included).
    """

    name: str = ""
    type: type = object

    def handles(self, value: Any) -> bool:
        return isinstance(value, self.type)

    def serialize(self, value: Any) -> Any:
        raise NotImplementedError

    def deserialize(self, data: Any) -> Any:
        raise NotImplementedError


_custom: dict[str, Serializer] = {}


def register_serializer(serializer: Serializer) -> Serializer:
    """Make a custom type serializable in job arguments; its `name` must be unique."""
    if not serializer.name:
        raise ValueError(f"{type(serializer).__name__} needs a non-empty `name`")
    _custom[serializer.name] = serializer
    return serializer


def serialize(args: tuple | list, kwargs: dict) -> tuple[list, dict]:
    """Serialize a call's arguments; paths read ``args[i]...`` and ``kwargs['k']...``."""
    if "__type__" in kwargs:  # the payload's kwargs object is sent as it is, so not escaped
        raise SerializationError("kwargs['__type__']", "__type__ is kombu's JSON type marker; "
                                 "a keyword argument cannot have that name")
    return (
        [_value(value, f"args[{i}]", 0) for i, value in enumerate(args)],
        {key if key.isascii() else _text(key, f"kwargs<key {key!r}>"):
            _value(value, f"kwargs[{key!r}]", 0) for key, value in kwargs.items()},
    )


def deserialize(args: list, kwargs: dict) -> tuple[list, dict]:
    """The inverse of `serialize`."""
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise DeserializationError("arguments", "expected a list and a dict")
    return (
        [deserialize_value(value, f"args[{i}]") for i, value in enumerate(args)],
        {key: deserialize_value(value, f"kwargs[{key!r}]") for key, value in kwargs.items()},
    )


def serialize_value(value: Any, path: str = "value") -> Any:
    """One value as JSON-ready data; SerializationError names `path` (or where inside it)."""
    return _value(value, path, 0)


def _value(value: Any, path: str, depth: int) -> Any:
    """`value` serialized; `depth` counts the containers it sits in."""
    kind = type(value)
    if kind is str:
        return value if value.isascii() else _text(value, path)
    if kind is int:
        return value if _INT_MIN <= value <= _INT_MAX else _too_many_digits(value, path)
    if kind in _SCALARS:
        return value
    if kind is float:
        return value if math.isfinite(value) else _mark("float", repr(value))
    if depth >= MAX_DEPTH:
        raise SerializationError(path, f"nested more than {MAX_DEPTH} levels deep (or a "
                                       "container holds itself)")
    if kind is list:
        return [_value(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)]
    if kind is dict:
        return _serialize_dict(value, path, depth)
    return _serialize_other(value, path, depth)


def _text(value: str, path: str) -> str:
    """A string as it is, if UTF-8 can carry it (Redis and the Celery message are UTF-8)."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise SerializationError(path, f"{value[exc.start]!r} at index {exc.start} is a "
                                           "surrogate, not text UTF-8 can carry (decoded with "
                                           "surrogateescape? send bytes)") from None
    return value


def _too_many_digits(value: int, path: str) -> NoReturn:
    raise SerializationError(path, f"an int of {value.bit_length()} bits has more than "
                                   f"{MAX_INT_DIGITS} digits, more than a worker reads "
                                   "(int_max_str_digits); send it as str or bytes")


def _mark(kind: str, data: Any, **extra: Any) -> dict:
    return {MARKER: kind, "v": data, **extra}


def _serialize_dict(value: dict, path: str, depth: int) -> Any:
    inner = depth + 1
    if all(type(key) is str for key in value) and RESERVED_KEYS.isdisjoint(value):
        return {
            key if key.isascii() else _text(key, f"{path}<key {key!r}>"):
                _value(item, f"{path}[{key!r}]", inner)
            for key, item in value.items()
        }
    return _mark("dict", [
        [_value(key, f"{path}<key {key!r}>", inner), _value(item, f"{path}[{key!r}]", inner)]
        for key, item in value.items()
    ])


def _serialize_other(value: Any, path: str, depth: int) -> Any:
    for serializer in _custom.values():
        if serializer.handles(value):
            return _mark("custom", _value(serializer.serialize(value), path, depth + 1),
                         s=serializer.name)
    for kind, test, write in _BUILTINS:
        if test(value):
            return _mark(kind, write(value, path, depth))
    if isinstance(value, list):  # subclasses travel as their base type
        return _value(list(value), path, depth)
    if isinstance(value, dict):
        return _serialize_dict(dict(value), path, depth)
    gid = references.to_global_id(value, path)
    if gid is not None:
        return _mark("gid", gid.uri)
    raise SerializationError(path, f"object of type {type(value).__name__} is not serializable")


def _items(value: Any, path: str, depth: int) -> list:
    return [_value(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)]


def _write_zoned(value: dt.datetime | dt.time, path: str, depth: int) -> Any:
    """The ISO text, plus the IANA zone name when there is one, so the zone round-trips too."""
    zone = value.tzinfo.key if isinstance(value.tzinfo, zoneinfo.ZoneInfo) else None
    return [value.isoformat(), zone, value.fold] if zone or value.fold else value.isoformat()


def _write_enum(value: enum.Enum, path: str, depth: int) -> Any:
    """The class path and the member's name; a worker looks the member up by that name."""
    cls = type(value)
    try:
        require_importable(cls, "enum")
    except JobClassError as exc:
        raise SerializationError(path, str(exc)) from None
    if cls.__members__.get(value.name) is not value:  # e.g. Perm.R | Perm.W, named "R|W"
        raise SerializationError(path, f"{value!r} is not one {cls.__qualname__} member "
                                       "(combined flags?); send the members, e.g. as a set")
    return [f"{cls.__module__}:{cls.__qualname__}", _text(value.name, path)]


def _instance_of(kind: type) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, kind)


# Order matters: Enum before the types its members may subclass, datetime before date.
_BUILTINS: list[tuple[str, Callable[[Any], bool], Callable[[Any, str, int], Any]]] = [
    ("enum", _instance_of(enum.Enum), _write_enum),
    ("datetime", _instance_of(dt.datetime), _write_zoned),
    ("date", _instance_of(dt.date), lambda v, p, d: v.isoformat()),
    ("time", _instance_of(dt.time), _write_zoned),
    ("timedelta", _instance_of(dt.timedelta),
     lambda v, p, d: [v.days, v.seconds, v.microseconds]),
    ("decimal", _instance_of(Decimal), lambda v, p, d: str(v)),
    ("uuid", _instance_of(uuid.UUID), lambda v, p, d: str(v)),
    ("bytes", _instance_of(bytes), lambda v, p, d: base64.b64encode(v).decode("ascii")),
    ("tuple", _instance_of(tuple), _items),
    ("frozenset", _instance_of(frozenset), _items),
    ("set", _instance_of(set), _items),
]


def deserialize_value(data: Any, path: str = "value") -> Any:
    kind = type(data)
    if kind is list:
        return [deserialize_value(item, f"{path}[{i}]") for i, item in enumerate(data)]
    if kind is dict:
        if MARKER in data:
            return _read_marker(data, path)
        return {key: deserialize_value(item, f"{path}[{key!r}]") for key, item in data.items()}
    return data


def _read_marker(data: dict, path: str) -> Any:
    kind = data[MARKER]
    reader = _READERS.get(kind)
    if reader is None or "v" not in data:
        raise DeserializationError(path, f"unknown argument marker {kind!r}")
    if kind == "gid":  # a database that is down is not a bad argument: let it be retried
        return reader(data, path)
    try:
        return reader(data, path)
    except DeserializationError:
        raise
    except Exception as exc:
        raise DeserializationError(path, f"bad {kind} value {data['v']!r}: {exc}") from exc


def _read_zoned(parse: Callable[[str], Any]) -> Callable[[dict, str], Any]:
    def read(data: dict, path: str) -> Any:
        raw = data["v"]
        if isinstance(raw, str):
            return parse(raw)
        text, zone, fold = raw
        value = parse(text)
        if zone:
            value = value.replace(tzinfo=zoneinfo.ZoneInfo(zone))
        return value.replace(fold=fold)

    return read


def _read_enum(data: dict, path: str) -> Any:
    class_path, name = data["v"]
    obj = import_object(class_path.replace(":", "."), "enum")
    if not (isinstance(obj, type) and issubclass(obj, enum.Enum)):
        raise DeserializationError(path, f"{class_path} is not an Enum")
    return obj[name]


def _read_items(build: Callable[[list], Any]) -> Callable[[dict, str], Any]:
    return lambda data, path: build([
        deserialize_value(item, f"{path}[{i}]") for i, item in enumerate(data["v"])
    ])


def _read_dict(data: dict, path: str) -> dict:
    return {
        deserialize_value(key, f"{path}<key>"): deserialize_value(item, f"{path}[{i}]")
        for i, (key, item) in enumerate(data["v"])
    }


def _read_custom(data: dict, path: str) -> Any:
    name = data.get("s")
    serializer = _custom.get(name) if isinstance(name, str) else None
    if serializer is None:
        raise DeserializationError(path, f"no serializer registered as {name!r}")
    return serializer.deserialize(deserialize_value(data["v"], path))


_READERS: dict[str, Callable[[dict, str], Any]] = {
    "float": lambda data, path: float(data["v"]),
    "enum": _read_enum,
    "datetime": _read_zoned(dt.datetime.fromisoformat),
    "date": lambda data, path: dt.date.fromisoformat(data["v"]),
    "time": _read_zoned(dt.time.fromisoformat),
    "timedelta": lambda data, path: dt.timedelta(*data["v"]),
    "decimal": lambda data, path: Decimal(data["v"]),
    "uuid": lambda data, path: uuid.UUID(data["v"]),
    "bytes": lambda data, path: base64.b64decode(data["v"], validate=True),
    "tuple": _read_items(tuple),
    "set": _read_items(set),
    "frozenset": _read_items(frozenset),
    "dict": _read_dict,
    "custom": _read_custom,
    "gid": lambda data, path: references.locate(data["v"], path),
}
