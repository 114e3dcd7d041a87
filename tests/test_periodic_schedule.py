"""jobkit.periodic_schedule: cron and every schedules, their refusals, and their ticks.

Expected ticks are worked out by hand (calendars of 2024: 1 January is a Monday, 1 September a
Sunday); a property test compares Cron.next()/previous() with a minute-by-minute search through
zoneinfo, near DST changes of several zones.
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobkit.periodic_schedule import Cron, Every, ScheduleError, parse_schedule


def utc(text: str) -> datetime:
    """An aware UTC datetime from "2024-01-15 09:00" (seconds and microseconds optional)."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def following(schedule: Cron | Every, start: str, count: int) -> list[str]:
    """The `count` ticks after `start`, written as UTC "YYYY-MM-DD HH:MM[:SS]"."""
    ticks, moment = [], utc(start)
    for _ in range(count):
        moment = schedule.next(moment)
        ticks.append(shown(moment))
    return ticks


def preceding(schedule: Cron | Every, start: str, count: int) -> list[str]:
    """The `count` ticks at or before `start`, latest first."""
    ticks, moment = [], utc(start)
    for _ in range(count):
        moment = schedule.previous(moment)
        ticks.append(shown(moment))
        moment -= timedelta(microseconds=1)
    return ticks


def shown(moment: datetime) -> str:
    assert moment.tzinfo is UTC
    if moment.microsecond:
        return moment.strftime("%Y-%m-%d %H:%M:%S.%f").rstrip("0")
    return moment.strftime("%Y-%m-%d %H:%M:%S" if moment.second else "%Y-%m-%d %H:%M")


# ---------------------------------------------------------------------------------------------
# Cron syntax


@pytest.mark.parametrize(("expression", "start", "expected"), [
    ("* * * * *", "2024-01-01 00:00:30", ["2024-01-01 00:01", "2024-01-01 00:02"]),
    ("*/15 * * * *", "2024-01-01 10:07",
     ["2024-01-01 10:15", "2024-01-01 10:30", "2024-01-01 10:45", "2024-01-01 11:00"]),
    ("5,10,50 * * * *", "2024-01-01 10:07",
     ["2024-01-01 10:10", "2024-01-01 10:50", "2024-01-01 11:05"]),
    ("10-12 * * * *", "2024-01-01 10:00",
     ["2024-01-01 10:10", "2024-01-01 10:11", "2024-01-01 10:12", "2024-01-01 11:10"]),
    ("1-30/10 * * * *", "2024-01-01 10:00",
     ["2024-01-01 10:01", "2024-01-01 10:11", "2024-01-01 10:21", "2024-01-01 11:01"]),
    ("50/5 * * * *", "2024-01-01 10:00",  # fugit / Quartz: 50-59/5
     ["2024-01-01 10:50", "2024-01-01 10:55", "2024-01-01 11:50"]),
    ("0 22-2 * * *", "2024-01-01 12:00",  # a backwards range wraps (fugit)
     ["2024-01-01 22:00", "2024-01-01 23:00", "2024-01-02 00:00", "2024-01-02 01:00",
      "2024-01-02 02:00", "2024-01-02 22:00"]),
    ("0 0 * * fri-mon", "2024-09-02 00:00",
     ["2024-09-06 00:00", "2024-09-07 00:00", "2024-09-08 00:00", "2024-09-09 00:00",
      "2024-09-13 00:00"]),
    ("0 0 * * sat-tue/2", "2024-09-02 00:00",  # sat sun mon tue, every other: sat, mon
     ["2024-09-07 00:00", "2024-09-09 00:00", "2024-09-14 00:00"]),
    ("0 12 * * 0", "2024-09-01 00:00", ["2024-09-01 12:00", "2024-09-08 12:00"]),
    ("0 12 * * 7", "2024-09-01 00:00", ["2024-09-01 12:00", "2024-09-08 12:00"]),
    ("0 12 * * SUN", "2024-09-01 00:00", ["2024-09-01 12:00", "2024-09-08 12:00"]),
    ("0 9 * * mon-fri", "2024-01-05 10:00", ["2024-01-08 09:00", "2024-01-09 09:00"]),
    ("0 9 * * 1-5", "2024-01-05 10:00", ["2024-01-08 09:00", "2024-01-09 09:00"]),
    ("0 0 1 jan,JUL *", "2024-01-01 00:00", ["2024-07-01 00:00", "2025-01-01 00:00"]),
    ("0 0 1 */6 *", "2024-01-01 00:00", ["2024-07-01 00:00", "2025-01-01 00:00"]),
    ("0 0 1 feb-apr *", "2024-01-01 00:00",
     ["2024-02-01 00:00", "2024-03-01 00:00", "2024-04-01 00:00", "2025-02-01 00:00"]),
    # six fields: seconds first (sidekiq-cron / fugit)
    ("*/20 * * * * *", "2024-01-01 10:00:05",
     ["2024-01-01 10:00:20", "2024-01-01 10:00:40", "2024-01-01 10:01"]),
    ("30 0 12 * * *", "2024-05-15 00:00", ["2024-05-15 12:00:30", "2024-05-16 12:00:30"]),
    ("15,45 30 9 * * mon-fri", "2024-01-05 09:30:20",
     ["2024-01-05 09:30:45", "2024-01-08 09:30:15", "2024-01-08 09:30:45"]),
    # aliases; 15 May 2024 is a Wednesday
    ("@yearly", "2024-05-15 10:20", ["2025-01-01 00:00"]),
    ("@annually", "2024-05-15 10:20", ["2025-01-01 00:00"]),
    ("@monthly", "2024-05-15 10:20", ["2024-06-01 00:00"]),
    ("@weekly", "2024-05-15 10:20", ["2024-05-19 00:00"]),
    ("@daily", "2024-05-15 10:20", ["2024-05-16 00:00"]),
    ("@midnight", "2024-05-15 10:20", ["2024-05-16 00:00"]),
    ("@hourly", "2024-05-15 10:20", ["2024-05-15 11:00"]),
    ("@DAILY", "2024-05-15 10:20", ["2024-05-16 00:00"]),
])
def test_cron_syntax(expression: str, start: str, expected: list[str]) -> None:
    assert following(Cron.parse(expression), start, len(expected)) == expected


def test_names_and_numbers_give_the_same_ticks() -> None:
    named = Cron.parse("0 6 * jan-mar,Dec Mon-fri")
    numbered = Cron.parse("0 6 * 1-3,12 1-5")
    assert following(named, "2024-11-20 00:00", 40) == following(numbered, "2024-11-20 00:00", 40)


def test_the_expression_and_zone_are_kept_as_written() -> None:
    cron = Cron.parse("0 9 * * 1-5  Europe/Paris")
    assert (cron.expression, cron.zone) == ("0 9 * * 1-5  Europe/Paris", "Europe/Paris")
    assert Cron.parse("0 9 * * *").zone == "UTC"
    assert Cron.parse("0 9 * * *", "Asia/Tokyo").zone == "Asia/Tokyo"
    assert Cron.parse("0 9 * * * Asia/Tokyo", "Asia/Tokyo").zone == "Asia/Tokyo"
    assert Cron.parse("@daily Europe/Paris").zone == "Europe/Paris"
    assert Cron.parse("0 9 * * *") == Cron("0 9 * * *", "UTC")
    assert hash(Cron.parse("0 9 * * *")) == hash(Cron("0 9 * * *", "UTC"))


def test_a_schedule_survives_pickling() -> None:
    """A worker may hand a schedule to another process."""
    for schedule in (Cron.parse("30 2 * * * Europe/Paris"), Every.parse("90s")):
        copy = pickle.loads(pickle.dumps(schedule))
        assert copy == schedule
        assert copy.next(utc("2024-10-26 12:00")) == schedule.next(utc("2024-10-26 12:00"))


CRON_REFUSALS = [
    ("", "cron '': is empty"),
    ("   ", "cron '   ': is empty"),
    ("* * * *", "cron '* * * *': expected 5 fields (minute hour day-of-month month "
                "day-of-week) or 6 (second first), got 4"),
    ("0 0 1 1 * 2025 *", "cron '0 0 1 1 * 2025 *': expected 5 fields (minute hour "
                         "day-of-month month day-of-week) or 6 (second first), got 7"),
    ("0 9 * * UTC", "cron '0 9 * * UTC': expected 5 fields (minute hour day-of-month month "
                    "day-of-week) or 6 (second first), got 4"),
    ("61 * * * *", "cron '61 * * * *': minute 61 is out of 0-59"),
    ("60 0 0 * * *", "cron '60 0 0 * * *': second 60 is out of 0-59"),
    ("0 24 * * *", "cron '0 24 * * *': hour 24 is out of 0-23"),
    ("0 0 0 * *", "cron '0 0 0 * *': day-of-month 0 is out of 1-31"),
    ("0 0 32 * *", "cron '0 0 32 * *': day-of-month 32 is out of 1-31"),
    ("0 0 * 13 *", "cron '0 0 * 13 *': month 13 is out of 1-12"),
    ("0 0 * 0 *", "cron '0 0 * 0 *': month 0 is out of 1-12"),
    ("0 0 * * 8", "cron '0 0 * * 8': day-of-week 8 is out of 0-7"),
    ("0 0-30 * * *", "cron '0 0-30 * * *': hour 30 is out of 0-23"),
    ("*/0 * * * *", "cron '*/0 * * * *': minute step 0 in '*/0' must be 1 or more"),
    ("1-10/0 * * * *", "cron '1-10/0 * * * *': minute step 0 in '1-10/0' must be 1 or more"),
    ("*/x * * * *", "cron '*/x * * * *': minute step 'x' in '*/x' is not a number"),
    ("*/ * * * *", "cron '*/ * * * *': minute step '' in '*/' is not a number"),
    ("1,,2 * * * *", "cron '1,,2 * * * *': minute has an empty item in '1,,2'"),
    ("1, * * * *", "cron '1, * * * *': minute has an empty item in '1,'"),
    ("-5 * * * *", "cron '-5 * * * *': minute '-5' is not a range such as 1-5"),
    ("1-5-7 * * * *", "cron '1-5-7 * * * *': minute '1-5-7' is not a range such as 1-5"),
    ("jan * * * *", "cron 'jan * * * *': minute 'jan' is not a number"),
    ("0 0 * mon *", "cron '0 0 * mon *': month 'mon' is not a number or a name (jan..dec)"),
    ("0 0 * * foo", "cron '0 0 * * foo': day-of-week 'foo' is not a number or a name "
                    "(sun..sat)"),
    ("0 0 * * monday", "cron '0 0 * * monday': day-of-week 'monday' is not a number or a "
                       "name (sun..sat)"),
    ("0 0 L * *", "cron '0 0 L * *': day-of-month 'L': L, W, # and ? are not supported"),
    ("0 0 LW * *", "cron '0 0 LW * *': day-of-month 'LW': L, W, # and ? are not supported"),
    ("0 0 15W * *", "cron '0 0 15W * *': day-of-month '15W': L, W, # and ? are not supported"),
    ("0 0 L-3 * *", "cron '0 0 L-3 * *': day-of-month 'L-3': L, W, # and ? are not supported"),
    ("0 0 * * 5L", "cron '0 0 * * 5L': day-of-week '5L': L, W, # and ? are not supported"),
    ("0 0 * * 1#2", "cron '0 0 * * 1#2': day-of-week '1#2': L, W, # and ? are not supported"),
    ("0 0 ? * 1", "cron '0 0 ? * 1': day-of-month '?': L, W, # and ? are not supported "
                  "(write * for ?)"),
    ("0 0 30 2 *", "cron '0 0 30 2 *': never fires: day-of-month 30 does not occur in month 2"),
    ("0 0 31 2,4,6,9,11 *", "cron '0 0 31 2,4,6,9,11 *': never fires: day-of-month 31 does "
                            "not occur in month 2,4,6,9,11"),
    ("0 0 30,31 feb *", "cron '0 0 30,31 feb *': never fires: day-of-month 30,31 does not "
                        "occur in month feb"),
    ("@reboot", "cron '@reboot': unknown alias @reboot (known: @yearly, @annually, @monthly, "
                "@weekly, @daily, @midnight, @hourly)"),
    ("@daily 0", "cron '@daily 0': @daily takes no fields, only a time zone after it"),
    ("0 9 * * * Mars/Olympus", "cron '0 9 * * * Mars/Olympus': unknown time zone "
                               "'Mars/Olympus' (an IANA name such as 'Europe/Paris' or 'UTC')"),
]


@pytest.mark.parametrize(("expression", "message"), CRON_REFUSALS)
def test_cron_refusals(expression: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=f"^{re.escape(message)}$"):
        Cron.parse(expression)


def test_cron_zone_refusals() -> None:
    with pytest.raises(ScheduleError, match=re.escape(
            "cron '0 9 * * * Europe/Paris': time zone 'Europe/Paris' at its end disagrees with "
            "timezone 'Europe/Berlin'")):
        Cron.parse("0 9 * * * Europe/Paris", "Europe/Berlin")
    with pytest.raises(ScheduleError, match=re.escape(
            "cron '0 9 * * *': unknown time zone 'Paris'")):
        Cron.parse("0 9 * * *", "Paris")
    with pytest.raises(ScheduleError, match=re.escape("unknown time zone 'Europe/Pariss'")):
        Cron("0 9 * * * Europe/Pariss", "Europe/Pariss")
    with pytest.raises(ScheduleError, match=re.escape(
            "cron must be a string such as '0 9 * * *', got 5")):
        Cron.parse(5)  # type: ignore[arg-type]


def test_a_schedule_error_is_a_value_error() -> None:
    assert issubclass(ScheduleError, ValueError)


# ---------------------------------------------------------------------------------------------
# Cron ticks


def test_next_is_strictly_after_and_previous_at_or_before() -> None:
    cron = Cron.parse("*/15 * * * *")
    assert shown(cron.next(utc("2024-01-01 10:15"))) == "2024-01-01 10:30"
    assert shown(cron.next(utc("2024-01-01 10:14:59.999999"))) == "2024-01-01 10:15"
    assert shown(cron.previous(utc("2024-01-01 10:15"))) == "2024-01-01 10:15"
    assert shown(cron.previous(utc("2024-01-01 10:14:59.999999"))) == "2024-01-01 10:00"
    assert shown(cron.previous(utc("2024-01-01 10:15:00.000001"))) == "2024-01-01 10:15"


def test_instants_in_other_zones_are_read_as_the_same_instants() -> None:
    cron = Cron.parse("0 9 * * *")
    paris = datetime(2024, 1, 15, 9, 30, tzinfo=ZoneInfo("Europe/Paris"))  # 08:30 UTC
    assert shown(cron.next(paris)) == "2024-01-15 09:00"
    assert shown(cron.previous(paris)) == "2024-01-14 09:00"


def test_a_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="has no time zone"):
        Cron.parse("* * * * *").next(datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="has no time zone"):
        Every.parse("1m").previous(datetime(2024, 1, 1))


def test_month_ends() -> None:
    cron = Cron.parse("0 0 31 * *")
    assert following(cron, "2024-01-31 00:00", 6) == [
        "2024-03-31 00:00", "2024-05-31 00:00", "2024-07-31 00:00", "2024-08-31 00:00",
        "2024-10-31 00:00", "2024-12-31 00:00"]
    assert preceding(Cron.parse("0 0 30 * *"), "2024-03-15 00:00", 2) == [
        "2024-01-30 00:00", "2023-12-30 00:00"]
    assert following(Cron.parse("59 23 31 12 *"), "2024-12-31 23:59", 1) == ["2025-12-31 23:59"]
    assert preceding(Cron.parse("0 0 1 * *"), "2024-03-01 00:00", 2) == [
        "2024-03-01 00:00", "2024-02-01 00:00"]


def test_leap_years() -> None:
    cron = Cron.parse("0 0 29 2 *")
    assert following(cron, "2024-03-01 00:00", 2) == ["2028-02-29 00:00", "2032-02-29 00:00"]
    assert following(cron, "2096-03-01 00:00", 1) == ["2104-02-29 00:00"]  # 2100 is not leap
    assert preceding(cron, "2101-01-01 00:00", 1) == ["2096-02-29 00:00"]
    assert following(Cron.parse("0 0 28-29 2 *"), "2023-02-27 00:00", 3) == [
        "2023-02-28 00:00", "2024-02-28 00:00", "2024-02-29 00:00"]


def test_both_day_fields_restricted_means_either() -> None:
    """man 5 crontab: "30 4 1,15 * 5" runs on the 1st and 15th of each month, plus every
    Friday. September 2024's Fridays are the 6th, 13th, 20th and 27th."""
    assert following(Cron.parse("30 4 1,15 * 5"), "2024-09-01 00:00", 6) == [
        "2024-09-01 04:30", "2024-09-06 04:30", "2024-09-13 04:30", "2024-09-15 04:30",
        "2024-09-20 04:30", "2024-09-27 04:30"]
    assert following(Cron.parse("0 0 13 * fri"), "2024-09-30 00:00", 4) == [
        "2024-10-04 00:00", "2024-10-11 00:00", "2024-10-13 00:00", "2024-10-18 00:00"]
    assert preceding(Cron.parse("0 0 13 * fri"), "2024-10-13 00:00", 3) == [
        "2024-10-13 00:00", "2024-10-11 00:00", "2024-10-04 00:00"]


def test_a_day_field_starting_with_a_star_does_not_restrict() -> None:
    """Vixie cron: only the other day field counts, so "*/2 * mon" is the odd-day Mondays
    (September 2024's Mondays are the 2nd, 9th, 16th, 23rd and 30th)."""
    assert following(Cron.parse("0 0 * * mon"), "2024-09-01 00:00", 2) == [
        "2024-09-02 00:00", "2024-09-09 00:00"]
    assert following(Cron.parse("0 0 13 * *"), "2024-09-01 00:00", 2) == [
        "2024-09-13 00:00", "2024-10-13 00:00"]
    assert following(Cron.parse("0 0 */2 * mon"), "2024-09-01 00:00", 4) == [
        "2024-09-09 00:00", "2024-09-23 00:00", "2024-10-07 00:00", "2024-10-21 00:00"]


def test_a_zone_moves_ticks_with_its_offset() -> None:
    cron = Cron.parse("0 9 * * * Europe/Paris")
    assert following(cron, "2024-01-15 00:00", 1) == ["2024-01-15 08:00"]  # CET, +1
    assert following(cron, "2024-07-15 00:00", 1) == ["2024-07-15 07:00"]  # CEST, +2
    assert preceding(cron, "2024-07-15 12:00", 1) == ["2024-07-15 07:00"]
    assert following(Cron.parse("0 9 * * *", "Asia/Kolkata"), "2024-07-15 00:00", 1) == [
        "2024-07-15 03:30"]


def test_a_wall_time_that_does_not_exist_is_skipped() -> None:
    """Europe/Paris jumps from 02:00 CET to 03:00 CEST on 31 March 2024: 02:30 is not."""
    cron = Cron.parse("30 2 * * *", "Europe/Paris")
    assert following(cron, "2024-03-29 12:00", 2) == ["2024-03-30 01:30", "2024-04-01 00:30"]
    assert preceding(cron, "2024-03-31 23:00", 1) == ["2024-03-30 01:30"]


def test_a_repeated_wall_time_fires_once() -> None:
    """Europe/Paris goes back from 03:00 CEST to 02:00 CET on 27 October 2024: 02:30 happens at
    00:30 and 01:30 UTC; it fires at the first."""
    cron = Cron.parse("30 2 * * *", "Europe/Paris")
    assert following(cron, "2024-10-25 12:00", 3) == [
        "2024-10-26 00:30", "2024-10-27 00:30", "2024-10-28 01:30"]
    assert preceding(cron, "2024-10-28 00:00", 2) == ["2024-10-27 00:30", "2024-10-26 00:30"]
    assert preceding(cron, "2024-10-27 01:30", 1) == ["2024-10-27 00:30"]


def test_an_hourly_expression_keeps_its_cadence_across_changes() -> None:
    """The repeated hour is another hour for an expression that fires every hour; the hour that
    does not exist has no ticks, but the UTC cadence stays hourly."""
    cron = Cron.parse("30 * * * * Europe/Paris")
    assert following(cron, "2024-10-26 23:00", 4) == [
        "2024-10-26 23:30", "2024-10-27 00:30", "2024-10-27 01:30", "2024-10-27 02:30"]
    assert preceding(cron, "2024-10-27 02:30", 4) == [
        "2024-10-27 02:30", "2024-10-27 01:30", "2024-10-27 00:30", "2024-10-26 23:30"]
    assert following(cron, "2024-03-30 23:00", 3) == [
        "2024-03-30 23:30", "2024-03-31 00:30", "2024-03-31 01:30"]


def test_a_half_hour_change() -> None:
    """Australia/Lord_Howe moves by 30 minutes: from 02:00 to 02:30 on 6 October 2024 (+10:30
    to +11), so 02:15 is not; from 02:00 back to 01:30 on 7 April 2024 (+11 to +10:30), so
    01:45 happens twice and fires at the first."""
    assert following(Cron.parse("15 2 * * * Australia/Lord_Howe"), "2024-10-04 00:00", 2) == [
        "2024-10-04 15:45", "2024-10-06 15:15"]
    assert following(Cron.parse("45 1 * * * Australia/Lord_Howe"), "2024-04-05 00:00", 3) == [
        "2024-04-05 14:45", "2024-04-06 14:45", "2024-04-07 15:15"]


def test_a_change_at_midnight() -> None:
    """America/Santiago moves from 24:00 to 01:00 on 7-8 September 2024 (-4 to -3): the
    midnight of 8 September does not exist, and @daily skips it."""
    cron = Cron.parse("@daily America/Santiago")
    assert following(cron, "2024-09-06 12:00", 3) == [
        "2024-09-07 04:00", "2024-09-09 03:00", "2024-09-10 03:00"]


# ---------------------------------------------------------------------------------------------
# Every


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30), ("5m", 300), ("1h", 3600), ("2d", 172_800), ("1w", 604_800),
    ("1h30m", 5400), ("1h 30m", 5400), ("1.5h", 5400), ("90", 90), ("0.5s", 0.5), (".5", 0.5),
    ("10S", 10), ("2H", 7200), ("1D", 86_400), ("1W", 604_800),
    ("30 seconds", 30), ("1 second", 1), ("5 minutes", 300), ("5 mins", 300),
    ("1 hour 30 minutes", 5400), ("2 Hours", 7200), ("3 days", 259_200), ("1 week", 604_800),
    ("1M", 2_592_000), ("1 month", 2_592_000), ("1y", 31_536_000),  # rufus: 30 and 365 days
    (30, 30), (2.5, 2.5),
])
def test_every_syntax(text: str | int | float, seconds: float) -> None:
    every = Every.parse(text)
    assert every.seconds == seconds
    assert every.text == str(text)


EVERY_REFUSALS: list[tuple[object, str]] = [
    (0, "every '0' must be more than 0 seconds"),
    ("0s", "every '0s' must be more than 0 seconds"),
    ("0", "every '0' must be more than 0 seconds"),
    (-5, "every '-5' must be more than 0 seconds"),
    ("-5m", "every '-5m' must be more than 0 seconds"),
    (float("nan"), "every 'nan' is not a finite number of seconds"),
    (float("inf"), "every 'inf' is not a finite number of seconds"),
    (True, "every True is not a duration such as '30s', '5m' or '1h'"),
    (None, "every None is not a duration such as '30s', '5m' or '1h'"),
    (["5m"], "every ['5m'] is not a duration such as '30s', '5m' or '1h'"),
    ("", "every '' is not a duration such as '30s', '5m', '1h30m' or a number of seconds"),
    ("garbage", "every 'garbage' is not a duration such as '30s', '5m', '1h30m' or a number "
                "of seconds"),
    ("nan", "every 'nan' is not a duration such as '30s', '5m', '1h30m' or a number of "
            "seconds"),
    ("1e3", "every '1e3' is not a duration such as '30s', '5m', '1h30m' or a number of "
            "seconds"),
    ("5m30", "every '5m30' is not a duration such as '30s', '5m', '1h30m' or a number of "
             "seconds"),
    ("5 parsecs", "every '5 parsecs': unknown unit 'parsecs' (s, m, h, d, w; M is 30 days and "
                  "y 365, as in rufus-scheduler)"),
    ("1x", "every '1x': unknown unit 'x' (s, m, h, d, w; M is 30 days and y 365, as in "
           "rufus-scheduler)"),
    ("2y", "every '2y' is over a year (366 days); use cron for rarer jobs"),
    (366 * 86_400 + 1, "every '31622401' is over a year (366 days); use cron for rarer jobs"),
    ("0.0000001", "every '0.0000001' is under a microsecond"),
]


@pytest.mark.parametrize(("text", "message"), EVERY_REFUSALS)
def test_every_refusals(text: object, message: str) -> None:
    with pytest.raises(ScheduleError, match=f"^{re.escape(message)}$"):
        Every.parse(text)  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "at", "previous", "next_"), [
    ("1h", "2024-01-01 10:20", "2024-01-01 10:00", "2024-01-01 11:00"),
    ("1h", "2024-01-01 10:00", "2024-01-01 10:00", "2024-01-01 11:00"),
    # 2024-01-01 00:00 UTC is 1704067200 s; 1704066840 = 4057302 * 420
    ("7m", "2024-01-01 00:00", "2023-12-31 23:54", "2024-01-01 00:01"),
    ("90m", "2024-01-01 00:00", "2024-01-01 00:00", "2024-01-01 01:30"),  # 315568 * 5400
    ("1d", "2024-01-01 10:20", "2024-01-01 00:00", "2024-01-02 00:00"),
    ("1w", "2024-01-01 10:20", "2023-12-28 00:00", "2024-01-04 00:00"),  # 1 Jan 1970: a Thursday
    ("0.25", "2024-01-01 10:00:00.300000", "2024-01-01 10:00:00.25", "2024-01-01 10:00:00.5"),
    ("1m", "1969-12-31 23:59:30", "1969-12-31 23:59", "1970-01-01 00:00"),
])
def test_every_ticks_are_multiples_of_the_period_since_the_epoch(
        text: str, at: str, previous: str, next_: str) -> None:
    every = Every.parse(text)
    assert (shown(every.previous(utc(at))), shown(every.next(utc(at)))) == (previous, next_)


@given(seconds=st.integers(1, 366 * 86_400),
       at=st.datetimes(datetime(1950, 1, 1), datetime(2200, 1, 1), timezones=st.just(UTC)))
@settings(max_examples=100, deadline=None)
def test_every_property(seconds: int, at: datetime) -> None:
    every = Every.parse(seconds)
    previous, following_ = every.previous(at), every.next(at)
    assert previous <= at < following_ == previous + timedelta(seconds=seconds)
    assert (previous - datetime(1970, 1, 1, tzinfo=UTC)) % timedelta(seconds=seconds) == \
        timedelta(0)


# ---------------------------------------------------------------------------------------------
# Entries


def test_parse_schedule() -> None:
    assert parse_schedule({"cron": "0 9 * * *", "class": "Report"}) == Cron("0 9 * * *", "UTC")
    assert parse_schedule({"cron": "0 9 * * *", "timezone": "Europe/Paris"}) == \
        Cron("0 9 * * *", "Europe/Paris")
    assert parse_schedule({"cron": "0 9 * * *", "tz": "Asia/Tokyo"}) == \
        Cron("0 9 * * *", "Asia/Tokyo")
    assert parse_schedule({"cron": "0 9 * * * Asia/Tokyo", "tz": "Asia/Tokyo"}) == \
        Cron("0 9 * * * Asia/Tokyo", "Asia/Tokyo")
    assert parse_schedule({"cron": "*/5 * * * * *"}) == Cron("*/5 * * * * *", "UTC")
    assert parse_schedule({"every": "30s", "queue": "low"}) == Every(30, "30s")
    assert parse_schedule({"every": 30}) == Every(30, "30")


@pytest.mark.parametrize(("entry", "message"), [
    ({}, "a schedule entry needs 'cron' or 'every'"),
    ({"class": "Report"}, "a schedule entry needs 'cron' or 'every'"),
    ({"interval": "5m"}, "a schedule entry needs 'cron' or 'every' ('interval' is "
                         "sidekiq-scheduler's; jobkit has cron and every)"),
    ({"at": "3000/01/01"}, "a schedule entry needs 'cron' or 'every' ('at' is "
                           "sidekiq-scheduler's; jobkit has cron and every)"),
    ({"cron": "* * * * *", "every": "1m"},
     "a schedule entry has both 'cron' and 'every'; keep one"),
    ({"every": "5m", "tz": "UTC"}, "'timezone' / 'tz' applies to 'cron' only, not 'every'"),
    ({"cron": "* * * * *", "timezone": "UTC", "tz": "UTC"},
     "a schedule entry has both 'timezone' and 'tz'; keep one"),
    ({"cron": "* * * * *", "timezone": 5},
     "timezone 5 is not a time zone name such as 'Europe/Paris'"),
    ({"cron": 5}, "cron must be a string such as '0 9 * * *', got 5"),
    ({"every": ["1h", {"first_in": "5m"}]},
     "every ['1h', {'first_in': '5m'}]: options after the every (first_in, ...) are not "
     "supported; write every: and the value alone"),
    ({"cron": "0 9 * * * Europe/Paris", "timezone": "UTC"},
     "cron '0 9 * * * Europe/Paris': time zone 'Europe/Paris' at its end disagrees with "
     "timezone 'UTC'"),
    ({"cron": "0 0 30 2 *"},
     "cron '0 0 30 2 *': never fires: day-of-month 30 does not occur in month 2"),
    ({"every": 0}, "every '0' must be more than 0 seconds"),
])
def test_parse_schedule_refusals(entry: dict[str, object], message: str) -> None:
    with pytest.raises(ScheduleError, match=f"^{re.escape(message)}$"):
        parse_schedule(entry)


# ---------------------------------------------------------------------------------------------
# Property: Cron against a minute-by-minute search through zoneinfo

ZONES = ["UTC", "Europe/Paris", "America/New_York", "Australia/Lord_Howe", "America/Santiago",
         "America/Havana", "Pacific/Chatham", "Asia/Kolkata"]
WINDOW = 36 * 3600  # seconds searched on each side of the instant
STEPS = 40  # ticks compared on each side


def offset_changes(zone: str, year: int) -> list[int]:
    """The epoch seconds at which `zone` changed its UTC offset in `year` (a day-by-day scan,
    then a bisection)."""
    tz, found = ZoneInfo(zone), []

    def offset(at: int) -> timedelta | None:
        return datetime.fromtimestamp(at, tz).utcoffset()

    start = int(datetime(year, 1, 1, tzinfo=UTC).timestamp())
    for low in range(start, start + 366 * 86_400, 86_400):
        high = low + 86_400
        if offset(low) != offset(high):
            while high - low > 1:
                middle = (low + high) // 2
                low, high = (middle, high) if offset(middle) == offset(low) else (low, middle)
            found.append(high)
    return found


CHANGES = {zone: offset_changes(zone, 2024) + offset_changes(zone, 2031) for zone in ZONES}


@dataclass(frozen=True)
class Case:
    expression: str
    zone: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # Sunday is 0
    days_star: bool
    weekdays_star: bool
    at: int  # epoch seconds

    def fires_at(self, moment: datetime) -> bool:
        """Whether the wall time `moment` (aware, in the zone) is a tick, seconds aside."""
        if moment.fold and len(self.hours) < 24:
            return False
        day_ok, weekday_ok = moment.day in self.days, (moment.isoweekday() % 7) in self.weekdays
        day = day_ok and weekday_ok if self.days_star or self.weekdays_star else \
            day_ok or weekday_ok
        return day and moment.month in self.months and moment.hour in self.hours and \
            moment.minute in self.minutes


NAMES = {4: ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"],
         5: ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]}


@st.composite
def field(draw: st.DrawFn, index: int, low: int, high: int) -> tuple[str, set[int]]:
    """A cron field's text and the values it allows (day-of-week: 7 kept, read as 0)."""
    names = NAMES.get(index, [])
    steps = st.integers(2, 4) | st.integers(1, high - low + 1)  # small ones keep ticks dense

    def written(number: int) -> str:
        named = number - low < len(names) and draw(st.booleans())
        return names[number - low] if named else str(number)

    def item() -> tuple[str, set[int]]:
        first, last = draw(st.integers(low, high)), draw(st.integers(low, high))
        step = draw(steps)
        if first > last:  # backwards: wraps after the highest value (Saturday for weekdays)
            wrap = 6 if index == 5 else high
            return f"{written(first)}-{written(last)}", {*range(first, wrap + 1),
                                                         *range(low, last + 1)}
        return draw(st.sampled_from([
            (written(first), {first}),
            (f"{written(first)}-{written(last)}", set(range(first, last + 1))),
            (f"{first}-{last}/{step}", set(range(first, last + 1, step))),
            (f"{first}/{step}", set(range(first, high + 1, step))),
        ]))

    kind = draw(st.sampled_from(["*", "*", "*/", "items"]))
    if kind == "*":
        return "*", set(range(low, high + 1))
    if kind == "*/":
        step = draw(steps)
        return f"*/{step}", set(range(low, high + 1, step))
    items = [item() for _ in range(draw(st.integers(1, 3)))]
    return ",".join(text for text, _ in items), set().union(*(values for _, values in items))


@st.composite
def seconds_field(draw: st.DrawFn) -> tuple[str, set[int]]:
    """A seconds field allowing few values, so that the brute force stays cheap."""
    first, other = draw(st.integers(0, 59)), draw(st.integers(0, 59))
    last, step = min(59, first + draw(st.integers(0, 3))), draw(st.integers(15, 60))
    return draw(st.sampled_from([
        (str(first), {first}),
        (f"{first},{other}", {first, other}),
        (f"{first}-{last}", set(range(first, last + 1))),
        (f"*/{step}", set(range(0, 60, step))),
        (f"{first}/{step}", set(range(first, 60, step))),
    ]))


@st.composite
def cases(draw: st.DrawFn) -> Case:
    with_seconds = draw(st.booleans())
    seconds_text, seconds = draw(seconds_field()) if with_seconds else ("", {0})
    texts_values = [draw(field(1, 0, 59)), draw(field(2, 0, 23)), draw(field(3, 1, 31)),
                    draw(field(4, 1, 12)), draw(field(5, 0, 7))]
    texts = [text for text, _ in texts_values]
    minutes, hours, days, months, weekdays = (values for _, values in texts_values)
    zone = draw(st.sampled_from(ZONES))
    if CHANGES[zone] and draw(st.booleans()):  # within hours of a change
        at = draw(st.sampled_from(CHANGES[zone])) + draw(st.integers(-6 * 3600, 6 * 3600))
    else:
        at = draw(st.integers(946_684_800, 2_208_988_800))  # 2000 to 2040
    expression = " ".join(([seconds_text] if with_seconds else []) + texts)
    if draw(st.booleans()):
        expression += f" {zone}"
    return Case(expression, zone, frozenset(seconds), frozenset(minutes), frozenset(hours),
                frozenset(days), frozenset(months), frozenset(day % 7 for day in weekdays),
                texts[2].startswith("*"), texts[4].startswith("*"), at)


def brute_force(case: Case) -> list[int]:
    """Every tick within WINDOW of `case.at`, by reading each UTC minute's wall time."""
    tz, ticks = ZoneInfo(case.zone), []
    for minute in range((case.at - WINDOW) // 60 * 60, case.at + WINDOW + 1, 60):
        if case.fires_at(datetime.fromtimestamp(minute, tz)):
            ticks.extend(minute + second for second in sorted(case.seconds))
    return [tick for tick in ticks if abs(tick - case.at) <= WINDOW]


@given(case=cases())
@settings(max_examples=200, deadline=None)
def test_cron_agrees_with_a_brute_force_search(case: Case) -> None:
    try:
        cron = Cron.parse(case.expression, case.zone)
    except ScheduleError as error:
        assert "never fires" in str(error)
        assert not any(day <= (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)[month - 1]
                       for month in case.months for day in case.days)
        return
    ticks = brute_force(case)
    later = [tick for tick in ticks if tick > case.at][:STEPS]
    earlier = [tick for tick in reversed(ticks) if tick <= case.at][:STEPS]
    forward, backward = walk(cron, case.at, len(later) + 1), walk(cron, case.at, -len(earlier) - 1)
    assert forward[:-1] == later
    assert backward[:-1] == earlier
    if len(later) < STEPS:  # none further within the window
        assert forward[-1] > case.at + WINDOW
    if len(earlier) < STEPS:
        assert backward[-1] < case.at - WINDOW


def walk(cron: Cron, at: int, count: int) -> list[int]:
    """`count` successive ticks after `at` by next(), or `-count` ticks at or before it by
    previous(), as epoch seconds."""
    ticks, moment = [], datetime.fromtimestamp(at, UTC)
    for _ in range(abs(count)):
        moment = cron.next(moment) if count > 0 else cron.previous(moment)
        ticks.append(int(moment.timestamp()))
        if count < 0:
            moment -= timedelta(microseconds=1)  # previous() would give `moment` again
    return ticks
