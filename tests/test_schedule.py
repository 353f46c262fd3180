"""Tests for ferry._schedule: Period and Cron parsing, next run times, DST, round trips."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from typing import Callable
from zoneinfo import ZoneInfo

import pytest

from ferry._schedule import Cron, Period, Schedule
from ferry.exception import InvalidError

UTC = timezone.utc
PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0,
        microsecond: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, microsecond, tzinfo=UTC)


def runs(schedule: Schedule, after: datetime, count: int) -> list[datetime]:
    result = []
    for _ in range(count):
        after = schedule.next_after(after)
        result.append(after)
    return result


# ---------------------------------------------------------------- Period


@pytest.mark.parametrize(
    "period, delta",
    [
        (Period(hours=5), timedelta(hours=5)),
        (Period(days=1), timedelta(days=1)),
        (Period(minutes=30), timedelta(minutes=30)),
        (Period(weeks=2), timedelta(weeks=2)),
        (Period(seconds=1.5), timedelta(seconds=1.5)),
        (Period(days=1, hours=2, minutes=3, seconds=4), timedelta(days=1, seconds=7384)),
        (Period(hours=0.5), timedelta(minutes=30)),
    ],
)
def test_period_adds_fixed_interval(period: Period, delta: timedelta) -> None:
    start = utc(2024, 3, 10, 12, 0)
    assert period.next_after(start) == start + delta
    assert runs(period, start, 3)[-1] == start + 3 * delta


@pytest.mark.parametrize(
    "period, start, expected",
    [
        (Period(months=1), utc(2024, 1, 15, 9), utc(2024, 2, 15, 9)),
        (Period(months=1), utc(2024, 1, 31), utc(2024, 2, 29)),  # clamped, leap year
        (Period(months=1), utc(2023, 1, 31), utc(2023, 2, 28)),
        (Period(months=1), utc(2024, 12, 31), utc(2025, 1, 31)),  # across the year
        (Period(months=13), utc(2024, 5, 31), utc(2025, 6, 30)),
        (Period(years=1), utc(2024, 2, 29), utc(2025, 2, 28)),
        (Period(years=1, months=1, days=1), utc(2024, 1, 31), utc(2025, 3, 1)),
        (Period(months=2.0), utc(2024, 1, 1), utc(2024, 3, 1)),  # whole floats are fine
    ],
)
def test_period_months_and_years_are_calendar_steps(
    period: Period, start: datetime, expected: datetime
) -> None:
    assert period.next_after(start) == expected


def test_period_returns_utc_for_any_aware_anchor() -> None:
    start = datetime(2024, 6, 1, 10, 0, tzinfo=PARIS)  # 08:00 UTC
    result = Period(hours=5).next_after(start)
    assert result == utc(2024, 6, 1, 13, 0)
    assert result.tzinfo is UTC


def test_period_next_is_strictly_after() -> None:
    start = utc(2024, 1, 1)
    assert Period(seconds=1).next_after(start) > start


@pytest.mark.parametrize(
    "kwargs", [{}, {"hours": 0}, {"seconds": 0.0, "days": 0}, {"seconds": 1e-9}]
)
def test_period_needs_positive_interval(kwargs: dict[str, float]) -> None:
    pattern = r"Period\(\) needs a positive interval.*Period\(hours=5\)"
    with pytest.raises(InvalidError, match=pattern):
        Period(**kwargs)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"hours": -1}, "Period(hours=-1)"),
        ({"days": "1"}, "Period(days='1')"),
        ({"minutes": True}, "Period(minutes=True)"),
        ({"seconds": float("nan")}, "Period(seconds=nan)"),
        ({"weeks": float("inf")}, "Period(weeks=inf)"),
        ({"minutes": None}, "Period(minutes=None)"),
    ],
)
def test_period_rejects_bad_numbers(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(InvalidError) as info:
        Period(**kwargs)  # type: ignore[arg-type]
    assert fragment in str(info.value)
    assert "non-negative number" in str(info.value)


@pytest.mark.parametrize("unit", ["months", "years"])
def test_period_months_and_years_must_be_whole(unit: str) -> None:
    with pytest.raises(InvalidError, match="whole numbers") as info:
        Period(**{unit: 1.5})
    assert f"Period({unit}=1.5)" in str(info.value)


def test_period_too_large() -> None:
    with pytest.raises(InvalidError, match="too large"):
        Period(days=1e12)


def test_period_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        Period(5)  # type: ignore[call-arg]


def test_period_rejects_naive_datetime() -> None:
    with pytest.raises(InvalidError, match="timezone-aware"):
        Period(hours=1).next_after(datetime(2024, 1, 1))


@pytest.mark.parametrize(
    "period, text",
    [
        (Period(hours=5), "Period(hours=5)"),
        (Period(days=1), "Period(days=1)"),
        (Period(minutes=30), "Period(minutes=30)"),
        (Period(years=1, days=2, seconds=0.5), "Period(years=1, days=2, seconds=0.5)"),
    ],
)
def test_period_repr(period: Period, text: str) -> None:
    assert repr(period) == text


@pytest.mark.parametrize(
    "period", [Period(hours=5), Period(days=1), Period(months=1, minutes=1.5), Period(years=2)]
)
def test_period_round_trip(period: Period) -> None:
    data = json.loads(json.dumps(period.to_dict()))
    assert data["type"] == "period"
    rebuilt = Schedule.from_dict(data)
    assert isinstance(rebuilt, Period)
    assert rebuilt == period and hash(rebuilt) == hash(period)
    assert repr(rebuilt) == repr(period)
    start = utc(2024, 1, 31, 6)
    assert rebuilt.next_after(start) == period.next_after(start)


def test_period_to_dict_is_stable() -> None:
    assert Period(hours=5).to_dict() == {"type": "period", "hours": 5}
    assert Period(minutes=30, days=1).to_dict() == {"type": "period", "days": 1, "minutes": 30}
    assert Period(hours=1) != Period(minutes=60)


# ---------------------------------------------------------------- Cron: basics


def test_cron_every_monday_8am_utc() -> None:
    cron = Cron("0 8 * * 1")
    assert runs(cron, utc(2024, 1, 1), 3) == [  # 2024-01-01 is a Monday
        utc(2024, 1, 1, 8),
        utc(2024, 1, 8, 8),
        utc(2024, 1, 15, 8),
    ]


def test_cron_next_is_strictly_after() -> None:
    cron = Cron("0 8 * * 1")
    assert cron.next_after(utc(2024, 1, 1, 8)) == utc(2024, 1, 8, 8)
    assert cron.next_after(utc(2024, 1, 1, 7, 59, 59, 999999)) == utc(2024, 1, 1, 8)
    assert cron.next_after(utc(2024, 1, 1, 8, 0, 0, 1)) == utc(2024, 1, 8, 8)


@pytest.mark.parametrize(
    "expr, after, expected",
    [
        ("0 0 * * *", utc(2024, 5, 5, 13, 7), [utc(2024, 5, 6), utc(2024, 5, 7)]),
        ("0 2 * * *", utc(2024, 5, 5, 1, 59), [utc(2024, 5, 5, 2), utc(2024, 5, 6, 2)]),
        ("0 2 * * *", utc(2024, 5, 5, 2, 0, 30), [utc(2024, 5, 6, 2), utc(2024, 5, 7, 2)]),
        ("0 * * * *", utc(2024, 12, 31, 22, 30), [utc(2024, 12, 31, 23), utc(2025, 1, 1, 0)]),
        (
            "*/15 * * * *",
            utc(2024, 1, 1, 23, 31),
            [utc(2024, 1, 1, 23, 45), utc(2024, 1, 2, 0, 0), utc(2024, 1, 2, 0, 15)],
        ),
        ("1-30/10 3 * * *", utc(2024, 1, 1), [utc(2024, 1, 1, 3, m) for m in (1, 11, 21)]),
        ("5/20 3 * * *", utc(2024, 1, 1), [utc(2024, 1, 1, 3, m) for m in (5, 25, 45)]),
        ("0,30 9,17 * * *", utc(2024, 1, 1), [utc(2024, 1, 1, 9), utc(2024, 1, 1, 9, 30),
                                              utc(2024, 1, 1, 17), utc(2024, 1, 1, 17, 30)]),
        ("0 0 31 * *", utc(2024, 3, 31, 1), [utc(2024, 5, 31), utc(2024, 7, 31)]),
        ("0 12 1 */3 *", utc(2024, 2, 1), [utc(2024, 4, 1, 12), utc(2024, 7, 1, 12)]),
        ("59 23 31 12 *", utc(2024, 1, 1), [utc(2024, 12, 31, 23, 59), utc(2025, 12, 31, 23, 59)]),
    ],
)
def test_cron_examples(expr: str, after: datetime, expected: list[datetime]) -> None:
    assert runs(Cron(expr), after, len(expected)) == expected


def test_cron_names_are_case_insensitive() -> None:
    lower = Cron("0 9 * jan-mar mon-fri")
    mixed = Cron("0 9 * JAN-Mar Mon-FRI")
    start = utc(2024, 3, 28)  # Thursday
    expected = [utc(2024, 3, 28, 9), utc(2024, 3, 29, 9), utc(2025, 1, 1, 9)]
    assert runs(lower, start, 3) == expected
    assert runs(mixed, start, 3) == expected
    assert Cron("0 0 1 DEC SUN").next_after(utc(2024, 1, 1)) == utc(2024, 12, 1)  # OR: Sundays too


@pytest.mark.parametrize("sunday", ["0", "7", "sun", "SUN", "7-7", "6-7/1"])
def test_cron_sunday_is_0_or_7(sunday: str) -> None:
    after = utc(2024, 1, 1)  # Monday
    assert Cron(f"0 0 * * {sunday}").next_after(after) in (utc(2024, 1, 6), utc(2024, 1, 7))
    assert Cron(f"0 0 * * {sunday}").next_after(utc(2024, 1, 6, 1)) == utc(2024, 1, 7)


@pytest.mark.parametrize(
    "macro, equivalent",
    [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
        ("@DAILY", "0 0 * * *"),
    ],
)
def test_cron_macros(macro: str, equivalent: str) -> None:
    after = utc(2024, 2, 14, 10, 30)
    assert runs(Cron(macro), after, 4) == runs(Cron(equivalent), after, 4)


def test_cron_feb_29_jumps_to_leap_years() -> None:
    cron = Cron("0 0 29 2 *")
    began = time.perf_counter()  # (a minute-by-minute search would take hours: a hang guard only)
    assert cron.next_after(utc(2024, 3, 1)) == utc(2028, 2, 29)
    assert cron.next_after(utc(2097, 1, 1)) == utc(2104, 2, 29)  # 2100 is not a leap year
    assert runs(cron, utc(2000, 1, 1), 30)[-1] == utc(2120, 2, 29)  # 2104 on
    new_year = Cron("59 23 31 12 *")
    assert new_year.next_after(utc(2024, 12, 31, 23, 59)) == utc(2025, 12, 31, 23, 59)
    assert time.perf_counter() - began < 60


def test_cron_dom_dow_or_semantics() -> None:
    cron = Cron("0 0 13 * 5")  # the 13th OR any Friday
    assert runs(cron, utc(2024, 1, 1), 5) == [
        utc(2024, 1, 5),  # Friday
        utc(2024, 1, 12),  # Friday
        utc(2024, 1, 13),  # the 13th (a Saturday)
        utc(2024, 1, 19),
        utc(2024, 1, 26),
    ]
    # Feb 30 never exists, but the Mondays of February match.
    assert Cron("0 0 30 2 1").next_after(utc(2024, 1, 1)) == utc(2024, 2, 5)


def test_cron_day_fields_and_when_one_starts_with_star() -> None:
    assert runs(Cron("0 0 1 * *"), utc(2024, 1, 1), 2) == [utc(2024, 2, 1), utc(2024, 3, 1)]
    assert runs(Cron("0 0 * * 1"), utc(2024, 1, 1), 2) == [utc(2024, 1, 8), utc(2024, 1, 15)]
    # Vixie cron: "*/2" counts as unrestricted, so both fields must match (odd days AND Mondays).
    assert runs(Cron("0 0 */2 * 1"), utc(2024, 1, 1), 2) == [utc(2024, 1, 15), utc(2024, 1, 29)]


def test_cron_returns_utc_for_any_aware_input() -> None:
    result = Cron("0 * * * *").next_after(datetime(2024, 7, 1, 10, 30, tzinfo=PARIS))
    assert result == utc(2024, 7, 1, 9) and result.tzinfo is UTC


def test_cron_rejects_naive_datetime() -> None:
    with pytest.raises(InvalidError, match="timezone-aware"):
        Cron("0 8 * * 1").next_after(datetime(2024, 1, 1))


# ---------------------------------------------------------------- Cron: timezones and DST


def test_cron_timezone_paris() -> None:
    cron = Cron("0 8 * * 1", timezone="Europe/Paris")
    assert cron.next_after(utc(2024, 1, 1)) == utc(2024, 1, 1, 7)  # CET, UTC+1
    assert cron.next_after(utc(2024, 7, 1)) == utc(2024, 7, 1, 6)  # CEST, UTC+2
    assert cron.next_after(utc(2024, 1, 1, 7)) == utc(2024, 1, 8, 7)


def test_cron_paris_spring_forward_skips_missing_time() -> None:
    cron = Cron("30 2 * * *", timezone="Europe/Paris")  # 2024-03-31 02:00 -> 03:00
    assert runs(cron, utc(2024, 3, 30, 0), 2) == [
        utc(2024, 3, 30, 1, 30),  # 02:30 CET
        utc(2024, 4, 1, 0, 30),  # 02:30 CEST; 2024-03-31 02:30 does not exist
    ]


def test_cron_paris_fall_back_fires_once() -> None:
    cron = Cron("30 2 * * *", timezone="Europe/Paris")  # 2024-10-27 03:00 -> 02:00
    assert runs(cron, utc(2024, 10, 26, 12), 2) == [
        utc(2024, 10, 27, 0, 30),  # first 02:30 (CEST)
        utc(2024, 10, 28, 1, 30),  # the repeated 02:30 (CET, 01:30Z) does not fire
    ]


def test_cron_new_york_spring_forward() -> None:
    hourly = Cron("0 * * * *", timezone="America/New_York")  # 2024-03-10 02:00 -> 03:00
    assert runs(hourly, utc(2024, 3, 10, 5), 3) == [
        utc(2024, 3, 10, 6),  # 01:00 EST
        utc(2024, 3, 10, 7),  # 03:00 EDT (02:00 does not exist)
        utc(2024, 3, 10, 8),  # 04:00 EDT
    ]
    daily = Cron("30 2 * * *", timezone="America/New_York")
    assert daily.next_after(utc(2024, 3, 9, 12)) == utc(2024, 3, 11, 6, 30)


def test_cron_new_york_fall_back() -> None:
    cron = Cron("*/30 * * * *", timezone="America/New_York")  # 2024-11-03 02:00 -> 01:00
    assert runs(cron, utc(2024, 11, 3, 4), 5) == [
        utc(2024, 11, 3, 4, 30),  # 00:30 EDT
        utc(2024, 11, 3, 5, 0),  # 01:00 EDT
        utc(2024, 11, 3, 5, 30),  # 01:30 EDT; the repeated 01:00 and 01:30 EST do not fire
        utc(2024, 11, 3, 7, 0),  # 02:00 EST
        utc(2024, 11, 3, 7, 30),
    ]
    # Asked from inside the repeated hour, the next 01:20 is the next day's.
    daily = Cron("20 1 * * *", timezone="America/New_York")
    assert daily.next_after(utc(2024, 11, 3, 6, 10)) == utc(2024, 11, 4, 6, 20)
    assert daily.next_after(utc(2024, 11, 3, 4)) == utc(2024, 11, 3, 5, 20)


Predicate = Callable[[datetime], bool]


@pytest.mark.parametrize(
    "expr, tz, predicate, start",
    [
        ("*/15 9-17 * * mon-fri", "UTC",
         lambda t: t.minute % 15 == 0 and 9 <= t.hour <= 17 and t.weekday() < 5, utc(2024, 1, 5)),
        ("*/20 * * * *", "America/New_York", lambda t: t.minute % 20 == 0, utc(2024, 11, 3, 3)),
        ("*/20 * * * *", "America/New_York", lambda t: t.minute % 20 == 0, utc(2024, 3, 10, 5)),
        ("10 1-3 * * *", "Europe/Paris", lambda t: t.minute == 10 and 1 <= t.hour <= 3,
         utc(2024, 10, 26, 12)),
        ("10 1-3 * * *", "Europe/Paris", lambda t: t.minute == 10 and 1 <= t.hour <= 3,
         utc(2024, 3, 30, 12)),
        ("0 0 13 * fri", "Europe/Paris",
         lambda t: t.minute == 0 and t.hour == 0 and (t.day == 13 or t.weekday() == 4),
         utc(2024, 10, 10)),
    ],
)
def test_cron_matches_brute_force(
    expr: str, tz: str, predicate: Predicate, start: datetime
) -> None:
    """Walk every UTC minute: a run is a matching local minute that is not a repeat (fold=1)."""
    zone = ZoneInfo(tz)
    end = start + timedelta(days=3)
    expected, moment = [], start + timedelta(minutes=1)
    while moment < end:
        local = moment.astimezone(zone)
        if predicate(local) and local.fold == 0:
            expected.append(moment)
        moment += timedelta(minutes=1)
    cron, actual, after = Cron(expr, timezone=tz), [], start
    while (after := cron.next_after(after)) < end:
        actual.append(after)
    assert actual == expected and expected


# ---------------------------------------------------------------- Cron: errors


@pytest.mark.parametrize(
    "expr, fragments",
    [
        ("", ["expected 5 fields", "got 0"]),
        ("0 8 * *", ["expected 5 fields", "got 4"]),
        ("0 8 * * 1 2024", ["expected 5 fields", "got 6"]),
        ("60 * * * *", ["minute field '60'", "out of range 0-59", "0-59"]),
        ("0 24 * * *", ["hour field '24'", "0-23"]),
        ("0 0 0 * *", ["day-of-month field '0'", "1-31"]),
        ("0 0 32 * *", ["day-of-month field '32'", "1-31"]),
        ("0 0 * 13 *", ["month field '13'", "1-12 or jan-dec"]),
        ("0 0 * 0 *", ["month field '0'", "1-12"]),
        ("0 0 * * 8", ["day-of-week field '8'", "0-7", "sun-sat"]),
        ("*/0 * * * *", ["minute field '*/0'", "bad step '0'"]),
        ("*/x * * * *", ["minute field", "bad step 'x'"]),
        ("1-30/ * * * *", ["minute field", "bad step ''"]),
        ("0 */-2 * * *", ["hour field", "bad step"]),
        ("0 0 * foo *", ["month field 'foo'", "unknown value 'foo'", "jan-dec"]),
        ("0 0 * Foo-DEC *", ["month field 'Foo-DEC'", "unknown value 'Foo'"]),
        ("0 0 * * funday", ["day-of-week field", "unknown value 'funday'", "sun-sat"]),
        ("0 0 * * mon-", ["day-of-week field", "empty value"]),
        ("1,,2 * * * *", ["minute field '1,,2'", "empty value"]),
        ("1, * * * *", ["minute field", "empty value"]),
        ("30-10 * * * *", ["minute field", "backwards range '30-10'"]),
        ("0 0 * * -1", ["day-of-week field", "empty value"]),
        ("0 0 L * *", ["day-of-month field 'L'", "unknown value 'L'"]),
        ("0 0 ? * *", ["day-of-month field", "unknown value '?'"]),
        ("0 0 1.5 * *", ["day-of-month field", "unknown value '1.5'"]),
        ("0 0 * jan mon tue", ["expected 5 fields", "got 6"]),
        ("@reboot", ["unknown macro", "@hourly"]),
        ("@every 5m", ["unknown macro"]),
        ("0 0 30 2 *", ["never", "day-of-month field '30'"]),
        ("0 0 31 4,6,9,11 *", ["never"]),
    ],
)
def test_cron_rejects_malformed_strings(expr: str, fragments: list[str]) -> None:
    with pytest.raises(InvalidError) as info:
        Cron(expr)
    message = str(info.value)
    assert f"Invalid cron string {expr!r}" in message
    assert '"0 8 * * 1"' in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


@pytest.mark.parametrize("value", [None, 5, ["0", "8", "*", "*", "1"]])
def test_cron_rejects_non_strings(value: object) -> None:
    with pytest.raises(InvalidError, match="needs a cron string"):
        Cron(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("tz", ["Mars/Olympus", "", "Europe", "../etc/passwd", "Europe/Paris/"])
def test_cron_unknown_timezone(tz: str) -> None:
    with pytest.raises(InvalidError) as info:
        Cron("0 8 * * 1", timezone=tz)
    assert f"Unknown timezone {tz!r}" in str(info.value)
    assert "Europe/Paris" in str(info.value)


def test_cron_timezone_must_be_string() -> None:
    with pytest.raises(InvalidError, match="IANA name"):
        Cron("0 8 * * 1", timezone=PARIS)  # type: ignore[arg-type]


# ---------------------------------------------------------------- Cron: repr and round trip


def test_cron_repr() -> None:
    assert repr(Cron("0 8 * * 1")) == "Cron('0 8 * * 1')"
    assert repr(Cron(" 0 8 * * 1 ")) == "Cron('0 8 * * 1')"
    assert repr(Cron("0 8 * * 1", timezone="Europe/Paris")) == (
        "Cron('0 8 * * 1', timezone='Europe/Paris')"
    )


@pytest.mark.parametrize(
    "cron",
    [Cron("0 8 * * 1"), Cron("*/15 * * * *"), Cron("@daily"),
     Cron("0 8 * * 1", timezone="Europe/Paris"), Cron("30 2 * * *", timezone="America/New_York")],
)
def test_cron_round_trip(cron: Cron) -> None:
    data = json.loads(json.dumps(cron.to_dict()))
    assert data == {"type": "cron", "cron_string": cron.cron_string, "timezone": cron.timezone}
    rebuilt = Schedule.from_dict(data)
    assert isinstance(rebuilt, Cron)
    assert rebuilt == cron and hash(rebuilt) == hash(cron) and repr(rebuilt) == repr(cron)
    after = utc(2024, 3, 9, 12)
    assert runs(rebuilt, after, 5) == runs(cron, after, 5)
    assert cron != Cron(cron.cron_string, timezone="Asia/Tokyo")
    assert cron != Period(hours=1)


@pytest.mark.parametrize(
    "data, fragment",
    [
        ({"type": "interval", "hours": 1}, "'type' must be 'period' or 'cron'"),
        ({"hours": 1}, "'type' must be 'period' or 'cron'"),
        ({"type": "period", "fortnights": 1}, "fortnights"),
        ({"type": "cron"}, "cron_string"),
        ({"type": "period"}, "positive interval"),
        ({"type": "cron", "cron_string": "bad"}, "expected 5 fields"),
        ("0 8 * * 1", "expected a dict"),
    ],
)
def test_from_dict_rejects_bad_data(data: object, fragment: str) -> None:
    with pytest.raises(InvalidError) as info:
        Schedule.from_dict(data)  # type: ignore[arg-type]
    assert fragment in str(info.value)


def test_schedule_is_abstract() -> None:
    with pytest.raises(TypeError):
        Schedule()  # type: ignore[abstract]
    assert isinstance(Period(hours=1), Schedule) and isinstance(Cron("@hourly"), Schedule)
