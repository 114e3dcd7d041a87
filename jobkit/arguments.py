"""Job arguments to JSON and back, exactly.

JSON-native values pass through untouched (the fast path). Every other supported value becomes a
marker object ``{"_jk": "<type>", "v": ...}``. A plain dict that happens to hold the key ``_jk``
(or kombu's own ``__type__``) is written as a list of pairs, so user data is never misread as a
marker. Anything else raises SerializationError naming the argument's path.
"""

from __future__ import annotations

import base64
import datetime as dt
import enum
import math
import uuid
import zoneinfo
from collections.abc import Callable
from decimal import Decimal
from typing import Any

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
_PLAIN = (str, int, bool, type(None))


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
    return (
        [serialize_value(value, f"args[{i}]") for i, value in enumerate(args)],
        {key: serialize_value(value, f"kwargs[{key!r}]") for key, value in kwargs.items()},
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
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is float:
        return value if math.isfinite(value) else _mark("float", repr(value))
    if kind is list:
        return [serialize_value(item, f"{path}[{i}]") for i, item in enumerate(value)]
    if kind is dict:
        return _serialize_dict(value, path)
    return _serialize_other(value, path)


def _mark(kind: str, data: Any, **extra: Any) -> dict:
    return {MARKER: kind, "v": data, **extra}


def _serialize_dict(value: dict, path: str) -> Any:
    if all(type(key) is str for key in value) and RESERVED_KEYS.isdisjoint(value):
        return {key: serialize_value(item, f"{path}[{key!r}]") for key, item in value.items()}
    return _mark("dict", [
        [serialize_value(key, f"{path}<key {key!r}>"), serialize_value(item, f"{path}[{key!r}]")]
        for key, item in value.items()
    ])


def _serialize_other(value: Any, path: str) -> Any:
    for serializer in _custom.values():
        if serializer.handles(value):
            return _mark("custom", serialize_value(serializer.serialize(value), path),
                         s=serializer.name)
    for kind, test, write in _BUILTINS:
        if test(value):
            return _mark(kind, write(value, path))
    if isinstance(value, list):  # subclasses travel as their base type
        return serialize_value(list(value), path)
    if isinstance(value, dict):
        return _serialize_dict(dict(value), path)
    gid = references.to_global_id(value, path)
    if gid is not None:
        return _mark("gid", gid.uri)
    raise SerializationError(path, f"object of type {type(value).__name__} is not serializable")


def _items(value: Any, path: str) -> list:
    return [serialize_value(item, f"{path}[{i}]") for i, item in enumerate(value)]


def _write_zoned(value: dt.datetime | dt.time, path: str) -> Any:
    """The ISO text, plus the IANA zone name when there is one, so the zone round-trips too."""
    zone = value.tzinfo.key if isinstance(value.tzinfo, zoneinfo.ZoneInfo) else None
    return [value.isoformat(), zone, value.fold] if zone or value.fold else value.isoformat()


def _write_enum(value: enum.Enum, path: str) -> Any:
    cls = type(value)
    try:
        require_importable(cls, "enum")
    except JobClassError as exc:
        raise SerializationError(path, str(exc)) from None
    return [f"{cls.__module__}:{cls.__qualname__}", value.name]


def _instance_of(kind: type) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, kind)


# Order matters: Enum before the types its members may subclass, datetime before date.
_BUILTINS: list[tuple[str, Callable[[Any], bool], Callable[[Any, str], Any]]] = [
    ("enum", _instance_of(enum.Enum), _write_enum),
    ("datetime", _instance_of(dt.datetime), _write_zoned),
    ("date", _instance_of(dt.date), lambda v, p: v.isoformat()),
    ("time", _instance_of(dt.time), _write_zoned),
    ("timedelta", _instance_of(dt.timedelta), lambda v, p: [v.days, v.seconds, v.microseconds]),
    ("decimal", _instance_of(Decimal), lambda v, p: str(v)),
    ("uuid", _instance_of(uuid.UUID), lambda v, p: str(v)),
    ("bytes", _instance_of(bytes), lambda v, p: base64.b64encode(v).decode("ascii")),
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
    serializer = _custom.get(data.get("s"))
    if serializer is None:
        raise DeserializationError(path, f"no serializer registered as {data.get('s')!r}")
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
