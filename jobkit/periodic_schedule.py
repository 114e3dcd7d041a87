"""When a periodic job is due: the `cron` and `every` schedules of sidekiq-cron and
sidekiq-scheduler entries, and the ticks they give.

A tick is a UTC instant that depends on the schedule alone, never on when a process started, so
every worker computes the same ticks without talking to the others (a claim per entry and tick
then makes one of them enqueue it).

`Cron` ticks are wall-clock times in the schedule's zone. Across a DST change:

* a wall time that does not exist that day (spring forward) is skipped: "30 2 * * *" in
  Europe/Paris has no tick on the last Sunday of March (Vixie/Debian cron would run it right
  after the jump instead);
* a wall time that happens twice (fall back) fires once, at its first occurrence (fold=0), unless
  the expression fires every hour: then the repeated hour is just another hour and fires too, so
  "*/15 * * * *" keeps its cadence and "30 2 * * *" still runs once.

`Every` ticks are the multiples of its period since the Unix epoch (UTC, no zone).
"""

from __future__ import annotations

import calendar
import math
import re
from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import cache, lru_cache
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo, available_timezones

__all__ = ["Cron", "Every", "Schedule", "ScheduleError", "parse_schedule"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_ORDINAL = _EPOCH.toordinal()
_ONE_SECOND = timedelta(seconds=1)
_ONE_MICROSECOND = timedelta(microseconds=1)
_DAY = 86_400
# How far next()/previous() search. The Gregorian calendar repeats every 400 years, so an
# expression that passed the parse-time check matches within that; finding no tick means the
# zone's DST changes skip every matching wall time.
_HORIZON_YEARS = 400
_HORIZON = _HORIZON_YEARS * 366 * _DAY
_MAX_EVERY = 366 * _DAY
_LONGEST_MONTH = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # by month number


class ScheduleError(ValueError):
    """A cron expression, an interval or a schedule entry that cannot be used; the message says
    what is wrong and where."""


# ---------------------------------------------------------------------------------------------
# Cron fields


class _Rule(NamedTuple):
    """One field of a cron expression: its name in messages, its bounds and its names."""

    name: str
    low: int
    high: int
    names: Mapping[str, int]
    wrap_high: int  # a backwards range (fri-mon, 22-2) wraps after this value


def _names(*words: str, first: int) -> dict[str, int]:
    return {word: first + index for index, word in enumerate(words)}


_SECOND = _Rule("second", 0, 59, {}, 59)
_MINUTE = _Rule("minute", 0, 59, {}, 59)
_HOUR = _Rule("hour", 0, 23, {}, 23)
_DAY_OF_MONTH = _Rule("day-of-month", 1, 31, {}, 31)
_MONTH = _Rule("month", 1, 12, _names("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug",
                                      "sep", "oct", "nov", "dec", first=1), 12)
# 0 and 7 are both Sunday; a backwards range wraps after Saturday (sat-mon is 6,0,1).
_DAY_OF_WEEK = _Rule("day-of-week", 0, 7, _names("sun", "mon", "tue", "wed", "thu", "fri",
                                                 "sat", first=0), 6)

_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_DIGITS = re.compile(r"[0-9]+")
_QUARTZ = re.compile(r"[0-9]*[LW]|L-?[0-9]*|LW", re.IGNORECASE)
# A word that can only be a time zone (Area/Location), even a misspelled one.
_ZONE_SHAPE = re.compile(r"[A-Za-z][\w+-]*(?:/[A-Za-z][\w+-]*)+")


def _fail(expression: str, problem: str) -> ScheduleError:
    return ScheduleError(f"cron {expression!r}: {problem}")


def _parse_value(rule: _Rule, text: str, item: str, expression: str) -> int:
    """A number in the field's bounds, or a month or day name."""
    if _DIGITS.fullmatch(text):
        number = int(text)
        if not rule.low <= number <= rule.high:
            raise _fail(expression, f"{rule.name} {number} is out of {rule.low}-{rule.high}")
        return number
    if text.lower() in rule.names:
        return rule.names[text.lower()]
    if "?" in item or "#" in item or _QUARTZ.fullmatch(text):
        hint = " (write * for ?)" if "?" in item else ""
        raise _fail(expression, f"{rule.name} {item!r}: L, W, # and ? are not supported{hint}")
    names = list(rule.names)
    named = f" or a name ({names[0]}..{names[-1]})" if names else ""
    raise _fail(expression, f"{rule.name} {text or item!r} is not a number{named}")


def _parse_step(rule: _Rule, text: str, item: str, expression: str) -> int:
    if not _DIGITS.fullmatch(text):
        raise _fail(expression, f"{rule.name} step {text!r} in {item!r} is not a number")
    step = int(text)
    if step == 0:
        raise _fail(expression, f"{rule.name} step 0 in {item!r} must be 1 or more")
    return step


def _parse_item(rule: _Rule, item: str, expression: str) -> list[int]:
    """`*`, `5`, `1-5`, `fri-mon` (wraps, as fugit), each optionally with `/step`; `5/15`
    means 5-max/15 (fugit, Quartz)."""
    base, slash, step_text = item.partition("/")
    step = _parse_step(rule, step_text, item, expression) if slash else 1
    if base == "*":
        first, last = rule.low, rule.high
    elif "-" in base:
        start, _, end = base.partition("-")
        if not start or not end or "-" in end:
            raise _fail(expression, f"{rule.name} {item!r} is not a range such as 1-5")
        first = _parse_value(rule, start, item, expression)
        last = _parse_value(rule, end, item, expression)
    else:
        first = _parse_value(rule, base, item, expression)
        last = rule.high if slash else first
    if first <= last:
        return list(range(first, last + 1, step))
    wrapped = [*range(first, rule.wrap_high + 1), *range(rule.low, last + 1)]
    return wrapped[::step]


def _parse_field(rule: _Rule, text: str, expression: str) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise _fail(expression, f"{rule.name} has an empty item in {text!r}")
        values.update(_parse_item(rule, item, expression))
    if rule is _DAY_OF_WEEK:
        return frozenset(value % 7 for value in values)
    return frozenset(values)


def _ceil(fields: Sequence[Sequence[int]], target: Sequence[int]) -> list[int] | None:
    """The smallest combination of field values (each field sorted) >= target, compared
    lexicographically: the next (hour, minute, second) of a day."""
    values = fields[0]
    index = bisect_left(values, target[0])
    if index < len(values) and values[index] == target[0]:
        if len(fields) == 1:
            return [values[index]]
        rest = _ceil(fields[1:], target[1:])
        if rest is not None:
            return [values[index], *rest]
        index += 1
    if index == len(values):
        return None
    return [values[index], *(later[0] for later in fields[1:])]


def _floor(fields: Sequence[Sequence[int]], target: Sequence[int]) -> list[int] | None:
    """The largest combination of field values (each field sorted) <= target."""
    values = fields[0]
    index = bisect_right(values, target[0]) - 1
    if index >= 0 and values[index] == target[0]:
        if len(fields) == 1:
            return [values[index]]
        rest = _floor(fields[1:], target[1:])
        if rest is not None:
            return [values[index], *rest]
        index -= 1
    if index < 0:
        return None
    return [values[index], *(later[-1] for later in fields[1:])]


def _clock(seconds: int) -> list[int]:
    hour, rest = divmod(seconds, 3600)
    return [hour, *divmod(rest, 60)]


@dataclass(frozen=True)
class _Fields:
    """What a cron expression allows, field by field (sorted; Sunday is 0)."""

    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: tuple[int, ...]
    weekdays: frozenset[int]
    either_day: bool  # both day fields restricted: a day matches if either does (Vixie cron)

    @property
    def every_hour(self) -> bool:
        return len(self.hours) == 24

    def day_matches(self, day: int, weekday: int) -> bool:
        if self.either_day:
            return day in self.days or weekday in self.weekdays
        return day in self.days and weekday in self.weekdays

    def fires(self) -> bool:
        """Whether some date ever matches (29 Feb counts: it comes back)."""
        return self.either_day or any(
            day <= _LONGEST_MONTH[month] for month in self.months for day in self.days)

    def _first_day(self, year: int, month: int, day: int) -> int | None:
        monday_first, length = calendar.monthrange(year, month)
        for candidate in range(day, length + 1):
            if self.day_matches(candidate, (monday_first + candidate) % 7):
                return candidate
        return None

    def _last_day(self, year: int, month: int, day: int) -> int | None:
        monday_first, length = calendar.monthrange(year, month)
        for candidate in range(min(day, length), 0, -1):
            if self.day_matches(candidate, (monday_first + candidate) % 7):
                return candidate
        return None

    def _first_date(self, ordinal: int, stop: int) -> int | None:
        """The first matching date (ordinal) from `ordinal`, giving up after `stop`'s month."""
        start, end = date.fromordinal(ordinal), date.fromordinal(stop)
        year, month, day = start.year, start.month, start.day
        while (year, month) <= (end.year, end.month):
            if month in self.months and (found := self._first_day(year, month, day)):
                return date(year, month, found).toordinal()
            index = bisect_right(self.months, month)
            year, month = (year, self.months[index]) if index < len(self.months) else \
                (year + 1, self.months[0])
            day = 1
        return None

    def _last_date(self, ordinal: int, stop: int) -> int | None:
        """The last matching date (ordinal) up to `ordinal`, giving up before `stop`'s month."""
        start, end = date.fromordinal(ordinal), date.fromordinal(stop)
        year, month, day = start.year, start.month, start.day
        while (year, month) >= (end.year, end.month):
            if month in self.months and (found := self._last_day(year, month, day)):
                return date(year, month, found).toordinal()
            index = bisect_left(self.months, month) - 1
            year, month = (year, self.months[index]) if index >= 0 else \
                (year - 1, self.months[-1])
            day = 31
        return None

    def first_at_or_after(self, wall: int, stop: int) -> int | None:
        """The first matching wall time >= `wall` (both in seconds since 1970-01-01 as a naive
        date-time), or None if none is found by `stop`."""
        start = _EPOCH_ORDINAL + wall // _DAY
        found = self._first_date(start, _EPOCH_ORDINAL + stop // _DAY)
        clock = _ceil(self._clock_fields, _clock(wall % _DAY)) if found == start else None
        if found == start and clock is None:
            found = self._first_date(start + 1, _EPOCH_ORDINAL + stop // _DAY)
        if found is None:
            return None
        return _wall(found, clock or [self.hours[0], self.minutes[0], self.seconds[0]])

    def last_at_or_before(self, wall: int, stop: int) -> int | None:
        """The last matching wall time <= `wall`, or None if none is found by `stop`."""
        start = _EPOCH_ORDINAL + wall // _DAY
        found = self._last_date(start, _EPOCH_ORDINAL + stop // _DAY)
        clock = _floor(self._clock_fields, _clock(wall % _DAY)) if found == start else None
        if found == start and clock is None:
            found = self._last_date(start - 1, _EPOCH_ORDINAL + stop // _DAY)
        if found is None:
            return None
        return _wall(found, clock or [self.hours[-1], self.minutes[-1], self.seconds[-1]])

    @property
    def _clock_fields(self) -> tuple[tuple[int, ...], ...]:
        return self.hours, self.minutes, self.seconds


def _wall(ordinal: int, clock: Sequence[int]) -> int:
    """A naive date-time as seconds since 1970-01-01 00:00."""
    hour, minute, second = clock
    return (ordinal - _EPOCH_ORDINAL) * _DAY + hour * 3600 + minute * 60 + second


def _parse_fields(texts: Sequence[str], expression: str) -> _Fields:
    """Five fields, or six with seconds first (sidekiq-cron / fugit)."""
    if len(texts) not in (5, 6):
        raise _fail(expression, "expected 5 fields (minute hour day-of-month month day-of-week) "
                                f"or 6 (second first), got {len(texts)}")
    if len(texts) == 5:
        texts = ["0", *texts]
    rules = (_SECOND, _MINUTE, _HOUR, _DAY_OF_MONTH, _MONTH, _DAY_OF_WEEK)
    seconds, minutes, hours, days, months, weekdays = (
        _parse_field(rule, text, expression) for rule, text in zip(rules, texts, strict=True))
    fields = _Fields(
        seconds=tuple(sorted(seconds)), minutes=tuple(sorted(minutes)),
        hours=tuple(sorted(hours)), days=days, months=tuple(sorted(months)), weekdays=weekdays,
        # Vixie cron: a day field counts as restricted unless it starts with "*".
        either_day=not texts[3].startswith("*") and not texts[5].startswith("*"))
    if not fields.fires():
        raise _fail(expression, f"never fires: day-of-month {texts[3]} does not occur in "
                                f"month {texts[4]}")
    return fields


# ---------------------------------------------------------------------------------------------
# Time zones


@cache
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones())


def _split_zone(expression: str) -> tuple[list[str], str | None]:
    """The expression's words, and the time zone written as its last word (sidekiq-cron's
    "0 9 * * 1-5 Europe/Paris") if there is one."""
    words = expression.split()
    if len(words) > 1 and (words[-1] in _zone_names() or _ZONE_SHAPE.fullmatch(words[-1])):
        return words[:-1], words[-1]
    return words, None


def _load_zone(zone: str, expression: str) -> ZoneInfo:
    if zone not in _zone_names():
        raise _fail(expression, f"unknown time zone {zone!r} (an IANA name such as "
                                "'Europe/Paris' or 'UTC')")
    return ZoneInfo(zone)


class _Change(NamedTuple):
    """A change of a zone's UTC offset (seconds east of UTC)."""

    at: int  # epoch second from which `after` applies
    before: int
    after: int


def _offset(zone: ZoneInfo, at: int) -> int:
    offset = datetime.fromtimestamp(at, zone).utcoffset()
    assert offset is not None  # a ZoneInfo always has one
    return offset // _ONE_SECOND


@lru_cache(maxsize=4096)
def _changes_in_year(zone: str, year: int) -> tuple[_Change, ...]:
    """The offset changes after 1 January 00:00 UTC of `year` up to the next one included.

    Found by reading the offset at each midnight UTC and bisecting where it differs: no two
    changes hide between two readings, as tzdata has none closer than six days (since 1990).
    """
    tz = ZoneInfo(zone)
    start = int(datetime(year, 1, 1, tzinfo=UTC).timestamp())
    end = int(datetime(year + 1, 1, 1, tzinfo=UTC).timestamp())
    changes: list[_Change] = []
    previous = _offset(tz, start)
    for low in range(start, end, _DAY):
        high = min(low + _DAY, end)
        offset = _offset(tz, high)
        if offset != previous:
            while high - low > 1:  # the offset is `previous` at low, something else at high
                middle = (low + high) // 2
                low, high = (middle, high) if _offset(tz, middle) == previous else (low, middle)
            changes.append(_Change(high, previous, offset))
        previous = offset
    return tuple(changes)


def _year(at: int) -> int:
    return date.fromordinal(_EPOCH_ORDINAL + at // _DAY).year


def _first_change(zone: str, low: int, high: int) -> _Change | None:
    """The first offset change in (low, high]."""
    for year in range(_year(low), _year(high) + 1):
        for change in _changes_in_year(zone, year):
            if low < change.at <= high:
                return change
    return None


def _last_change(zone: str, low: int, high: int) -> _Change | None:
    """The last offset change in (low, high]."""
    for year in range(_year(high), _year(low) - 1, -1):
        for change in reversed(_changes_in_year(zone, year)):
            if low < change.at <= high:
                return change
    return None


# ---------------------------------------------------------------------------------------------
# Instants


def _epoch_micros(moment: datetime) -> int:
    if moment.utcoffset() is None:
        raise ValueError(f"{moment!r} has no time zone: pass an aware datetime (UTC)")
    return (moment - _EPOCH) // _ONE_MICROSECOND


def _epoch_seconds(moment: datetime) -> int:
    return _epoch_micros(moment) // 1_000_000


def _instant(seconds: int) -> datetime:
    return _EPOCH + timedelta(seconds=seconds)


# ---------------------------------------------------------------------------------------------
# Schedules


@dataclass(frozen=True)
class Cron:
    """A cron expression: 5 fields (minute hour day-of-month month day-of-week), or 6 with
    seconds first, or an alias (@daily...), optionally followed by a time zone.

    Fields take *, lists, ranges (backwards ones wrap: fri-mon), steps (*/15, 1-30/5, 5/15),
    month and day names; 0 and 7 are Sunday. When both day fields are restricted (neither
    starts with *), a day matches if either does (Vixie cron); else both must. Constructing one
    checks it: a ScheduleError names the field and value, or says it never fires.
    """

    expression: str  # as written
    zone: str  # IANA name
    _fields: _Fields = field(init=False, repr=False, compare=False)
    _tz: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        words, written = _split_zone(self.expression)
        if written is not None and written != self.zone:
            raise _fail(self.expression, f"time zone {written!r} at its end disagrees with "
                                         f"timezone {self.zone!r}")
        object.__setattr__(self, "_tz", _load_zone(self.zone, self.expression))
        object.__setattr__(self, "_fields", _parse_fields(_expand(words, self.expression),
                                                          self.expression))

    @classmethod
    def parse(cls, expression: str, zone: str | None = None) -> Cron:
        """The zone is the one written at the end of `expression`, else `zone`, else UTC; when
        both are given they must agree."""
        if not isinstance(expression, str):
            raise ScheduleError(f"cron must be a string such as '0 9 * * *', got {expression!r}")
        written = _split_zone(expression)[1]
        return cls(expression, zone if zone is not None else written or "UTC")

    def next(self, after: datetime) -> datetime:
        """The earliest tick strictly after `after` (UTC); ScheduleError if DST changes skip
        every matching wall time for 400 years."""
        low = _epoch_seconds(after) + 1
        stop = low + _HORIZON
        offset = _offset(self._tz, low)
        while (wall := self._fields.first_at_or_after(low + offset, stop + offset)) is not None:
            tick = wall - offset
            if change := _first_change(self.zone, low, tick):  # `wall` is read with another offset
                low, offset = change.at, change.after
            elif repeat := self._repeat(tick):
                low = repeat.at + repeat.before - repeat.after
            else:
                return _instant(tick)
        raise self._no_tick("after", after)

    def previous(self, at: datetime) -> datetime:
        """The latest tick at or before `at` (UTC); ScheduleError as next()."""
        high = _epoch_seconds(at)
        stop = high - _HORIZON
        offset = _offset(self._tz, high)
        while (wall := self._fields.last_at_or_before(high + offset, stop + offset)) is not None:
            tick = wall - offset
            if change := _last_change(self.zone, tick, high):
                high, offset = change.at - 1, change.before
            elif repeat := self._repeat(tick):
                high, offset = repeat.at - 1, repeat.before
            else:
                return _instant(tick)
        raise self._no_tick("before", at)

    def _repeat(self, tick: int) -> _Change | None:
        """The fall-back change whose repeated wall times `tick` is one of the second
        occurrences of, when those do not fire."""
        if self._fields.every_hour:
            return None
        change = _last_change(self.zone, tick - _DAY, tick)
        if change and change.before > change.after and \
                tick < change.at + change.before - change.after:
            return change
        return None

    def _no_tick(self, direction: str, moment: datetime) -> ScheduleError:
        return _fail(self.expression, f"no tick in {self.zone} within {_HORIZON_YEARS} years "
                                      f"{direction} {moment.isoformat()}: its DST changes skip "
                                      "every matching time")


def _expand(words: list[str], expression: str) -> list[str]:
    """The fields, an alias replaced by its expression."""
    if not words:
        raise _fail(expression, "is empty")
    if not words[0].startswith("@"):
        return words
    alias = _ALIASES.get(words[0].lower())
    if alias is None:
        raise _fail(expression, f"unknown alias {words[0]} (known: {', '.join(_ALIASES)})")
    if len(words) > 1:
        raise _fail(expression, f"{words[0]} takes no fields, only a time zone after it")
    return alias.split()


# Duration units of rufus-scheduler / fugit (M is a 30-day month there, m a minute) and words.
_UNITS = {
    "s": 1, "S": 1, "m": 60, "h": 3600, "H": 3600, "d": _DAY, "D": _DAY,
    "w": 7 * _DAY, "W": 7 * _DAY, "M": 30 * _DAY, "y": 365 * _DAY, "Y": 365 * _DAY,
    "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
    "day": _DAY, "days": _DAY, "week": 7 * _DAY, "weeks": 7 * _DAY,
    "month": 30 * _DAY, "months": 30 * _DAY, "year": 365 * _DAY, "years": 365 * _DAY,
}
_NUMBER = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_PART = r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([A-Za-z]+)\s*"
_PARTS = re.compile(f"(?:{_PART})+")


def _duration(text: str) -> float:
    """Seconds in "90", "30s", "1h30m", "1.5 hours"; a leading "-" is kept for the message."""
    body = text.strip()
    if _NUMBER.fullmatch(body):
        return float(body)
    sign, body = (-1, body[1:]) if body.startswith("-") else (1, body)
    if not _PARTS.fullmatch(body):
        raise ScheduleError(f"every {text!r} is not a duration such as '30s', '5m', '1h30m' "
                            "or a number of seconds")
    return sign * sum(float(number) * _unit(unit, text) for number, unit in re.findall(_PART, body))


def _unit(unit: str, text: str) -> int:
    """Units are case-sensitive letters (m is a minute, M a month) or words in any case."""
    size = _UNITS.get(unit) if len(unit) == 1 else _UNITS.get(unit.lower())
    if size is None:
        raise ScheduleError(f"every {text!r}: unknown unit {unit!r} (s, m, h, d, w; M is 30 "
                            "days and y 365, as in rufus-scheduler)")
    return size


@dataclass(frozen=True)
class Every:
    """A fixed interval; its ticks are the multiples of it since the Unix epoch, so workers agree
    without talking (every "1d" ticks at midnight UTC, every "1w" on Thursdays)."""

    seconds: float
    text: str  # as written
    _micros: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not math.isfinite(self.seconds):
            raise ScheduleError(f"every {self.text!r} is not a finite number of seconds")
        if self.seconds <= 0:
            raise ScheduleError(f"every {self.text!r} must be more than 0 seconds")
        if self.seconds > _MAX_EVERY:
            raise ScheduleError(f"every {self.text!r} is over a year ({_MAX_EVERY // _DAY} "
                                "days); use cron for rarer jobs")
        micros = round(self.seconds * 1_000_000)
        if micros == 0:
            raise ScheduleError(f"every {self.text!r} is under a microsecond")
        object.__setattr__(self, "_micros", micros)

    @classmethod
    def parse(cls, text: str | int | float) -> Every:
        """Reads "30s", "5m", "1h", "2d", "1w", "1h30m", "1.5h", "30 seconds", or seconds as a
        number or a numeric string."""
        if isinstance(text, bool) or not isinstance(text, str | int | float):
            raise ScheduleError(f"every {text!r} is not a duration such as '30s', '5m' or '1h'")
        if isinstance(text, str):
            return cls(_duration(text), text)
        return cls(float(text), str(text))

    def previous(self, at: datetime) -> datetime:
        """The latest tick at or before `at` (UTC)."""
        return _EPOCH + (_epoch_micros(at) // self._micros * self._micros) * _ONE_MICROSECOND

    def next(self, after: datetime) -> datetime:
        """The earliest tick strictly after `after` (UTC); ScheduleError if DST changes skip
        every matching wall time for 400 years."""
        return _EPOCH + ((_epoch_micros(after) // self._micros + 1) * self._micros) * \
            _ONE_MICROSECOND


Schedule = Cron | Every

_OTHER_KINDS = ("interval", "at", "in")  # sidekiq-scheduler's, which jobkit does not have


def parse_schedule(entry: Mapping[str, Any]) -> Schedule:
    """The schedule of a sidekiq-cron / sidekiq-scheduler entry: exactly one of `cron` and
    `every`; `timezone` (or `tz`) gives a cron's zone."""
    kinds = [key for key in ("cron", "every") if key in entry]
    if not kinds:
        other = next((key for key in _OTHER_KINDS if key in entry), None)
        hint = f" ({other!r} is sidekiq-scheduler's; jobkit has cron and every)" if other else ""
        raise ScheduleError(f"a schedule entry needs 'cron' or 'every'{hint}")
    if len(kinds) > 1:
        raise ScheduleError("a schedule entry has both 'cron' and 'every'; keep one")
    kind = kinds[0]
    value = entry[kind]
    if isinstance(value, list):
        raise ScheduleError(f"{kind} {value!r}: options after the {kind} (first_in, ...) are "
                            f"not supported; write {kind}: and the value alone")
    zone = _entry_zone(entry)
    if kind == "every":
        if zone is not None:
            raise ScheduleError("'timezone' / 'tz' applies to 'cron' only, not 'every'")
        return Every.parse(value)
    return Cron.parse(value, zone)


def _entry_zone(entry: Mapping[str, Any]) -> str | None:
    keys = [key for key in ("timezone", "tz") if key in entry]
    if len(keys) > 1:
        raise ScheduleError("a schedule entry has both 'timezone' and 'tz'; keep one")
    if not keys:
        return None
    zone = entry[keys[0]]
    if not isinstance(zone, str):
        raise ScheduleError(f"{keys[0]} {zone!r} is not a time zone name such as 'Europe/Paris'")
    return zone
