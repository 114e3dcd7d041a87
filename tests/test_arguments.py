"""Argument serialization: every supported type round-trips exactly through JSON."""

from __future__ import annotations

import datetime as dt
import enum
import json
import math
import uuid
import zoneinfo
from decimal import Decimal

import pytest

from jobkit import DeserializationError, SerializationError, Serializer, register_serializer
from jobkit.arguments import deserialize, deserialize_value, serialize, serialize_value


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1


PARIS = zoneinfo.ZoneInfo("Europe/Paris")

ROUND_TRIPS = [
    None, True, False, 0, -7, 2**70, 1.5, "", "héllo ✓", [], [1, [2, [3]]],
    {"a": 1, "b": {"c": [None]}},
    (1, "two", (3,)), set(), {1, 2, 3}, frozenset({"x"}),
    {1: "one", (2, 3): "tuple key", None: 0, 1.5: "float"},
    dt.datetime(2024, 3, 31, 2, 30, tzinfo=dt.UTC),
    dt.datetime(2024, 10, 27, 2, 30, fold=1, tzinfo=PARIS),
    dt.datetime(2024, 1, 2, 3, 4, 5, 678901),
    dt.datetime(2024, 1, 2, tzinfo=dt.timezone(dt.timedelta(hours=-5, minutes=-30))),
    dt.date(1999, 12, 31), dt.time(23, 59, 1, 5), dt.time(8, 0, tzinfo=PARIS),
    dt.timedelta(days=-1, seconds=5, microseconds=7),
    Decimal("3.140"), Decimal("-1E+3"), uuid.UUID("12345678-1234-5678-1234-567812345678"),
    Color.BLUE, Level.LOW, b"\x00\xffbytes",
    {"_jk": "datetime", "v": "not a marker"}, {"__type__": "datetime", "__value__": "x"},
    [{"nested": (Decimal("1"), {2: dt.date(2020, 1, 1)})}],
]


def wire(value: object) -> object:
    """Serialize, pass through real JSON text, deserialize."""
    return deserialize_value(json.loads(json.dumps(serialize_value(value))))


@pytest.mark.parametrize("value", ROUND_TRIPS, ids=repr)
def test_round_trip_is_exact(value: object) -> None:
    back = wire(value)
    assert back == value
    assert type(back) is type(value)
    if isinstance(value, dt.datetime | dt.time):
        assert back.tzinfo == value.tzinfo
        assert back.fold == value.fold


def test_types_inside_containers_keep_their_types() -> None:
    back = wire({"when": [dt.date(2020, 1, 1), (Decimal("1.0"),)]})
    assert type(back["when"][0]) is dt.date
    assert type(back["when"][1]) is tuple and type(back["when"][1][0]) is Decimal


@pytest.mark.parametrize("value", [math.inf, -math.inf])
def test_infinities_round_trip(value: float) -> None:
    assert wire(value) == value


def test_nan_round_trips_as_nan() -> None:
    assert math.isnan(wire(math.nan))


def test_zone_name_survives() -> None:
    back = wire(dt.datetime(2024, 7, 1, 12, tzinfo=PARIS))
    assert back.tzinfo is PARIS


def test_json_natives_pass_through_unchanged() -> None:
    value = {"a": [1, 2.5, "x", None, True]}
    assert serialize_value(value) == value


def test_user_dict_with_marker_key_is_escaped_not_misread() -> None:
    sneaky = {"_jk": "gid", "v": "gid://app/Secret/1"}
    assert serialize_value(sneaky)["_jk"] == "dict"
    assert wire(sneaky) == sneaky


def test_unserializable_value_names_its_path() -> None:
    class Foo:
        pass

    with pytest.raises(SerializationError) as info:
        serialize([1, {"user": Foo()}], {})
    assert str(info.value) == "args[1]['user']: object of type Foo is not serializable"
    assert info.value.path == "args[1]['user']"


def test_unserializable_keyword_names_its_path() -> None:
    with pytest.raises(SerializationError, match=r"kwargs\['cb'\]\[0\]: object of type function"):
        serialize([], {"cb": [lambda: None]})


def test_unserializable_dict_key_names_its_path() -> None:
    with pytest.raises(SerializationError, match=r"args\[0\]<key .*object"):
        serialize([{object(): 1}], {})


def test_serialization_error_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        serialize([object()], {})


def test_unknown_marker_is_a_clear_deserialization_error() -> None:
    with pytest.raises(DeserializationError, match=r"args\[0\]: unknown argument marker 'nope'"):
        deserialize([{"_jk": "nope", "v": 1}], {})


def test_corrupt_marker_value_is_a_clear_deserialization_error() -> None:
    with pytest.raises(DeserializationError, match=r"args\[0\]: bad date value 'yesterday'"):
        deserialize([{"_jk": "date", "v": "yesterday"}], {})


def test_enum_marker_must_name_an_enum() -> None:
    with pytest.raises(DeserializationError, match="is not an Enum"):
        deserialize_value({"_jk": "enum", "v": ["os:environ", "PATH"]})


class Money:
    def __init__(self, cents: int, currency: str) -> None:
        self.cents, self.currency = cents, currency

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Money) and (other.cents, other.currency) == (
            self.cents, self.currency)


class MoneySerializer(Serializer):
    name = "money"
    type = Money

    def serialize(self, value: Money) -> object:
        return {"cents": value.cents, "currency": value.currency, "at": dt.date(2020, 1, 1)}

    def deserialize(self, data: dict) -> Money:
        assert data["at"] == dt.date(2020, 1, 1)  # nested values come back typed
        return Money(data["cents"], data["currency"])


def test_custom_serializer_round_trips() -> None:
    register_serializer(MoneySerializer())
    assert wire([Money(150, "EUR")]) == [Money(150, "EUR")]


def test_custom_serializer_needs_a_name() -> None:
    with pytest.raises(ValueError, match="needs a non-empty `name`"):
        register_serializer(Serializer())


def test_unregistered_custom_marker_is_a_clear_error() -> None:
    with pytest.raises(DeserializationError, match="no serializer registered as 'ghost'"):
        deserialize_value({"_jk": "custom", "s": "ghost", "v": 1})
