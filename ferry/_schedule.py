"""Schedules for `@app.function(schedule=...)`: `Period` (every N units) and `Cron` (wall clock).

- `Period(hours=5)` runs every interval after the previous run: `next_after(last)` is `last`
  plus the period. Months and years are calendar steps, clamped to the end of the month
  (Jan 31 + 1 month = Feb 28 or 29); the other units are exact durations.
- `Cron("0 8 * * 1", timezone="Europe/Paris")` runs at the minutes matching a standard 5-field
  cron string (minute hour day-of-month month day-of-week) in an IANA timezone. As in Vixie
  cron, when neither day field starts with `*` a day matches if EITHER field matches. Local
  times skipped by a DST change never fire; repeated local times fire once (first occurrence).

Both take timezone-aware datetimes and return UTC-aware ones, and round-trip through
`to_dict()` / `Schedule.from_dict()` for storage.
"""

from __future__ import annotations

import abc
import calendar
import math
from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .exception import InvalidError

_CRON_EXAMPLE = 'e.g. Cron("0 8 * * 1") runs every Monday at 08:00'
_MACROS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTH_NAMES = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAY_NAMES = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
# (name, low, high, names mapped to low.., description of the valid values)
_FIELDS: list[tuple[str, int, int, list[str], str]] = [
    ("minute", 0, 59, [], "0-59"),
    ("hour", 0, 23, [], "0-23"),
    ("day-of-month", 1, 31, [], "1-31"),
    ("month", 1, 12, _MONTH_NAMES, "1-12 or jan-dec"),
    ("day-of-week", 0, 7, _DAY_NAMES, "0-7 (0 and 7 are Sunday) or sun-sat"),
]
_PERIOD_UNITS = ("years", "months", "weeks", "days", "hours", "minutes", "seconds")
_UTC = timezone.utc  # module constant: Cron's `timezone` parameter shadows the name
_SEARCH_YEARS = 9  # every satisfiable cron matches within 8 years (Feb 29 across 2100)


def _require_aware(moment: datetime, method: str) -> datetime:
    if not isinstance(moment, datetime) or moment.utcoffset() is None:
        raise InvalidError(
            f"{method}() needs a timezone-aware datetime, e.g. datetime.now(timezone.utc); "
            f"got {moment!r}"
        )
    return moment


def _add_months(moment: datetime, months: int) -> datetime:
    year, month0 = divmod(moment.month - 1 + months, 12)
    day = min(moment.day, calendar.monthrange(moment.year + year, month0 + 1)[1])
    return moment.replace(year=moment.year + year, month=month0 + 1, day=day)


class Schedule(abc.ABC):
    """When a scheduled function runs. Subclasses: `Period` and `Cron`."""

    @abc.abstractmethod
    def next_after(self, after: datetime) -> datetime:
        """The next run time strictly after `after` (aware), as a UTC-aware datetime."""

    @abc.abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description; `Schedule.from_dict` rebuilds the schedule."""

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Schedule:
        """Rebuild a schedule from `to_dict()` output."""
        if not isinstance(data, dict):
            raise InvalidError(f"Cannot rebuild a schedule from {data!r}: expected a dict")
        kind = data.get("type")
        fields = {k: v for k, v in data.items() if k != "type"}
        try:
            if kind == "period":
                return Period(**fields)
            if kind == "cron":
                return Cron(**fields)
        except TypeError as exc:
            raise InvalidError(f"Cannot rebuild a schedule from {data!r}: {exc}") from None
        raise InvalidError(
            f"Cannot rebuild a schedule from {data!r}: 'type' must be 'period' or 'cron'"
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Schedule) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.to_dict().items())))


class Period(Schedule):
    """Run every fixed interval, e.g. `Period(hours=5)` or `Period(days=1)`."""

    def __init__(
        self, *, years: float = 0, months: float = 0, weeks: float = 0, days: float = 0,
        hours: float = 0, minutes: float = 0, seconds: float = 0,
    ) -> None:
        numbers = (years, months, weeks, days, hours, minutes, seconds)
        given = dict(zip(_PERIOD_UNITS, numbers, strict=True))
        for unit, value in given.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value) or value < 0:
                raise InvalidError(
                    f"Period({unit}={value!r}) is invalid: each interval must be a non-negative "
                    "number, e.g. Period(hours=5)"
                )
            if unit in ("years", "months") and value != int(value):
                raise InvalidError(
                    f"Period({unit}={value!r}) is invalid: years and months are calendar steps "
                    "and must be whole numbers, e.g. Period(months=1) or Period(days=45)"
                )
        self._values = {unit: value for unit, value in given.items() if value}
        self._months = int(years) * 12 + int(months)
        try:
            self._delta = timedelta(
                weeks=weeks, days=days, hours=hours, minutes=minutes, seconds=seconds
            )
        except OverflowError:
            raise InvalidError(f"{self!r} is too large") from None
        if self._months == 0 and self._delta <= timedelta(0):
            raise InvalidError("Period() needs a positive interval, e.g. Period(hours=5)")

    def next_after(self, last: datetime) -> datetime:
        """`last` (the previous run, or the anchor) plus this period, in UTC."""
        moment = _require_aware(last, "Period.next_after").astimezone(_UTC)
        return _add_months(moment, self._months) + self._delta

    def to_dict(self) -> dict[str, Any]:
        return {"type": "period", **self._values}

    def __repr__(self) -> str:
        return "Period(" + ", ".join(f"{k}={v!r}" for k, v in self._values.items()) + ")"


class Cron(Schedule):
    """Run at the minutes matching a 5-field cron string in `timezone`: `Cron("0 8 * * 1")`."""

    def __init__(self, cron_string: str, timezone: str = "UTC") -> None:
        if not isinstance(timezone, str):
            raise InvalidError(
                f"Cron timezone must be an IANA name such as 'Europe/Paris', got {timezone!r}"
            )
        try:
            self._tz = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise InvalidError(
                f"Unknown timezone {timezone!r} for Cron: use an IANA name such as 'UTC', "
                "'Europe/Paris' or 'America/New_York'"
            ) from None
        if not isinstance(cron_string, str):
            raise InvalidError(f"Cron() needs a cron string, got {cron_string!r}; {_CRON_EXAMPLE}")
        self.cron_string = cron_string.strip()
        self.timezone = timezone
        text = self.cron_string
        if text.startswith("@"):
            if text.lower() not in _MACROS:
                raise InvalidError(
                    f"Invalid cron string {cron_string!r}: unknown macro; use one of "
                    f"{', '.join(_MACROS)}, or 5 fields, {_CRON_EXAMPLE}"
                )
            text = _MACROS[text.lower()]
        parts = text.split()
        if len(parts) != 5:
            raise InvalidError(
                f"Invalid cron string {cron_string!r}: expected 5 fields (minute hour day-of-month "
                f"month day-of-week), got {len(parts)}; {_CRON_EXAMPLE}"
            )
        sets = [
            self._parse_field(cron_string, part, *spec)
            for part, spec in zip(parts, _FIELDS, strict=True)
        ]
        self._minutes, self._hours = sorted(sets[0]), sorted(sets[1])
        self._doms, self._months = sets[2], sorted(sets[3])
        self._dows = {d % 7 for d in sets[4]}
        self._dom_star, self._dow_star = parts[2].startswith("*"), parts[4].startswith("*")
        longest = {m: 29 if m == 2 else calendar.monthrange(2001, m)[1] for m in self._months}
        if not self._dom_star and self._dow_star and min(self._doms) > max(longest.values()):
            raise InvalidError(
                f"Invalid cron string {cron_string!r}: the day-of-month field {parts[2]!r} never "
                f"occurs in the month field {parts[3]!r}, so it would never run; {_CRON_EXAMPLE}"
            )

    @staticmethod
    def _parse_field(
        cron_string: str, text: str, name: str, low: int, high: int, names: list[str], valid: str
    ) -> set[int]:
        def fail(problem: str) -> InvalidError:
            return InvalidError(
                f"Invalid cron string {cron_string!r}: the {name} field {text!r} {problem}; "
                f"valid values are {valid}, {_CRON_EXAMPLE}"
            )

        def value(token: str) -> int:
            if token.lower() in names:
                return low + names.index(token.lower())
            if not (token.isascii() and token.isdigit()):
                raise fail(f"has an unknown value {token!r}" if token else "has an empty value")
            if not low <= int(token) <= high:
                raise fail(f"has value {int(token)}, out of range {low}-{high}")
            return int(token)

        result: set[int] = set()
        for item in text.split(","):
            base, slash, step_text = item.partition("/")
            step = 1
            if slash:
                if not (step_text.isascii() and step_text.isdigit()) or int(step_text) == 0:
                    raise fail(f"has a bad step {step_text!r} (use a positive number, e.g. */15)")
                step = int(step_text)
            if base == "*":
                start, end = low, high
            elif "-" in base:
                first, last = base.split("-", 1)
                start, end = value(first), value(last)
                if start > end:
                    raise fail(f"has a backwards range {base!r} (start must be <= end)")
            else:
                start = value(base)
                end = high if slash else start
            result.update(range(start, end + 1, step))
        return result

    def _day_matches(self, day: date) -> bool:
        dom_ok, dow_ok = day.day in self._doms, day.isoweekday() % 7 in self._dows
        return (dom_ok and dow_ok) if self._dom_star or self._dow_star else (dom_ok or dow_ok)

    def next_after(self, after: datetime) -> datetime:
        """The first matching minute strictly after `after`, as a UTC-aware datetime."""
        after = _require_aware(after, "Cron.next_after")
        start = after.astimezone(self._tz).replace(tzinfo=None)
        day = start.date()
        while day.year <= start.year + _SEARCH_YEARS:
            if day.month not in self._months:  # jump to the first day of the next allowed month
                later = [m for m in self._months if m > day.month]
                year, month = (day.year, later[0]) if later else (day.year + 1, self._months[0])
                day = date(year, month, 1)
                continue
            if self._day_matches(day):
                for hour in self._hours:
                    if day == start.date() and hour < start.hour:
                        continue
                    for minute in self._minutes:
                        wall = datetime.combine(day, time(hour, minute))
                        if wall <= start:
                            continue
                        # fold=0: a repeated local time means its first occurrence
                        utc = wall.replace(tzinfo=self._tz).astimezone(_UTC)
                        if utc.astimezone(self._tz).replace(tzinfo=None) != wall:
                            continue  # skipped by a DST change
                        if utc > after:
                            return utc
            day += timedelta(days=1)
        raise InvalidError(f"{self!r} has no run time within {_SEARCH_YEARS} years after {after}")

    def to_dict(self) -> dict[str, Any]:
        return {"type": "cron", "cron_string": self.cron_string, "timezone": self.timezone}

    def __repr__(self) -> str:
        tz = "" if self.timezone == "UTC" else f", timezone={self.timezone!r}"
        return f"Cron({self.cron_string!r}{tz})"
