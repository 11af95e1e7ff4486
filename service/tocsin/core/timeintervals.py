"""Time intervals (pure): when a route may notify (DESIGN.md section 12).

Alertmanager's fields and meaning: ``times`` (``{start = "09:00", end = "17:30"}``,
start included, end excluded, ``"24:00"`` allowed as an end), ``weekdays``
(``"monday:friday"``, ``"sunday"``), ``days_of_month`` (``"1:7"``, ``"-1"`` = the
last day), ``months`` (``"january:march"`` or ``"1:3"``), ``years`` (``"2026:2027"``),
``location`` (an IANA zone; default UTC). An interval covers an instant when every
field it gives covers it (a field left out covers everything); a named interval is a
list of them and covers an instant when any does.

The zone is resolved by the configuration (``tocsin.config``) and handed in as a
``tzinfo``, so this module reads no files. Instants are microseconds since the epoch.
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from msgspec import Struct

from tocsin.core.errors import ConfigError

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MONTHS = tuple(m.lower() for m in calendar.month_name[1:])
HORIZON_DAYS = 400
"""How far ``next_change`` looks: past a year, an interval that never changes again
within it (e.g. limited to a past year) is reported as never changing."""

_MINUTES_A_DAY = 24 * 60
_US = 1_000_000

_Parse = Callable[[str, str], int]


class TimeRange(Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    start: str
    end: str


class TimeIntervalSpec(Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """One ``[time_intervals.<name>]`` entry as written."""

    times: list[TimeRange] = []
    weekdays: list[str] = []
    days_of_month: list[str] = []
    months: list[str] = []
    years: list[str] = []
    location: str = "UTC"


@dataclass(frozen=True, slots=True)
class Interval:
    """One interval, compiled: minute ranges of the day and inclusive ranges of the
    calendar fields (``None``: the field was not given, any value)."""

    minutes: tuple[tuple[int, int], ...] | None
    weekdays: tuple[tuple[int, int], ...] | None
    days_of_month: tuple[tuple[int, int], ...] | None
    months: tuple[tuple[int, int], ...] | None
    years: tuple[tuple[int, int], ...] | None
    zone: dt.tzinfo

    def covers_local(self, local: dt.datetime) -> bool:
        if not _within(self.weekdays, local.weekday()):
            return False
        if not _within(self.months, local.month):
            return False
        if not _within(self.years, local.year):
            return False
        if self.days_of_month is not None:
            last = calendar.monthrange(local.year, local.month)[1]
            if not any(
                _day(lo, last) <= local.day <= _day(hi, last) for lo, hi in self.days_of_month
            ):
                return False
        if self.minutes is None:
            return True
        minute = local.hour * 60 + local.minute
        return any(lo <= minute < hi for lo, hi in self.minutes)


def _within(ranges: tuple[tuple[int, int], ...] | None, value: int) -> bool:
    return ranges is None or any(lo <= value <= hi for lo, hi in ranges)


def _day(day: int, last: int) -> int:
    """A day of the month counted from its end when negative (-1: the last day)."""
    return last + 1 + day if day < 0 else day


def compile_interval(spec: TimeIntervalSpec, zone: dt.tzinfo, where: str) -> Interval:
    """``spec`` checked and compiled; ``ConfigError`` naming ``where`` and the field."""
    return Interval(
        minutes=_times(spec.times, f"{where}.times") if spec.times else None,
        weekdays=_ranges(spec.weekdays, f"{where}.weekdays", _weekday) if spec.weekdays else None,
        days_of_month=(
            _ranges(spec.days_of_month, f"{where}.days_of_month", _day_of_month, ordered=False)
            if spec.days_of_month
            else None
        ),
        months=_ranges(spec.months, f"{where}.months", _month) if spec.months else None,
        years=_ranges(spec.years, f"{where}.years", _year) if spec.years else None,
        zone=zone,
    )


def _times(times: Sequence[TimeRange], where: str) -> tuple[tuple[int, int], ...]:
    out = []
    for index, span in enumerate(times):
        start = _clock(span.start, f"{where}[{index}].start", end=False)
        end = _clock(span.end, f"{where}[{index}].end", end=True)
        if end <= start:
            raise ConfigError(f"{where}[{index}]: end {span.end!r} is not after start")
        out.append((start, end))
    return tuple(out)


def _clock(text: str, where: str, *, end: bool) -> int:
    """``"HH:MM"`` as minutes of the day (``"24:00"`` only as an end)."""
    hours, sep, minutes = text.partition(":")
    if not (sep and hours.isdigit() and minutes.isdigit() and len(minutes) == 2):
        raise ConfigError(f"{where}: expected HH:MM, got {text!r}")
    value = int(hours) * 60 + int(minutes)
    if int(minutes) > 59 or value > _MINUTES_A_DAY or (value == _MINUTES_A_DAY and not end):
        raise ConfigError(f"{where}: not a time of day: {text!r}")
    return value


def _ranges(
    items: Sequence[str], where: str, parse: _Parse, *, ordered: bool = True
) -> tuple[tuple[int, int], ...]:
    out = []
    for index, item in enumerate(items):
        lo_text, sep, hi_text = item.partition(":")
        at = f"{where}[{index}]"
        lo = parse(lo_text.strip(), at)
        hi = parse(hi_text.strip(), at) if sep else lo
        if ordered and hi < lo:
            raise ConfigError(f"{at}: range {item!r} ends before it starts")
        if not ordered and (lo < 0) == (hi < 0) and hi < lo:
            raise ConfigError(f"{at}: range {item!r} ends before it starts")
        out.append((lo, hi))
    return tuple(out)


def _weekday(text: str, where: str) -> int:
    try:
        return WEEKDAYS.index(text.lower())
    except ValueError:
        raise ConfigError(f"{where}: unknown weekday {text!r}") from None


def _month(text: str, where: str) -> int:
    if text.isdigit() and 1 <= int(text) <= 12:
        return int(text)
    try:
        return MONTHS.index(text.lower()) + 1
    except ValueError:
        raise ConfigError(f"{where}: unknown month {text!r}") from None


def _number(text: str, where: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{where}: expected a number, got {text!r}") from None


def _day_of_month(text: str, where: str) -> int:
    day = _number(text, where)
    if day == 0 or not -31 <= day <= 31:
        raise ConfigError(f"{where}: a day of the month is 1..31 or -31..-1, got {text!r}")
    return day


def _year(text: str, where: str) -> int:
    year = _number(text, where)
    if not 1 <= year <= 9999:
        raise ConfigError(f"{where}: not a year: {text!r}")
    return year


def covers(intervals: Sequence[Interval], at: int) -> bool:
    """Whether any of ``intervals`` covers the instant ``at``."""
    utc = dt.datetime.fromtimestamp(at / _US, dt.UTC)
    return any(interval.covers_local(utc.astimezone(interval.zone)) for interval in intervals)


def next_change(intervals: Sequence[Interval], at: int) -> int | None:
    """The first instant after ``at`` at which ``covers`` gives another answer, or
    ``None`` when it does not change within ``HORIZON_DAYS``. Coverage can only change
    at a local midnight or at a ``times`` bound, so those are the instants looked at,
    in order."""
    now = covers(intervals, at)
    for candidate in _candidates(intervals, at):
        if covers(intervals, candidate) != now:
            return candidate
    return None


def _candidates(intervals: Sequence[Interval], at: int) -> list[int]:
    """Every local midnight and ``times`` bound of the intervals' zones from ``at``'s
    day on, as instants after ``at``, sorted."""
    found: set[int] = set()
    for interval in intervals:
        start = dt.datetime.fromtimestamp(at / _US, dt.UTC).astimezone(interval.zone).date()
        bounds = sorted({0, *(m for span in interval.minutes or () for m in span)})
        for offset in range(HORIZON_DAYS + 1):
            day = start + dt.timedelta(days=offset)
            for minute in bounds:
                local = dt.datetime.combine(day, dt.time()) + dt.timedelta(minutes=minute)
                instant = int(local.replace(tzinfo=interval.zone).timestamp()) * _US
                if instant > at:
                    found.add(instant)
    return sorted(found)


@dataclass(frozen=True, slots=True)
class TimeIntervals:
    """Every named interval of the config, compiled."""

    named: dict[str, tuple[Interval, ...]]

    def covers(self, names: Sequence[str], at: int) -> bool:
        """Whether any of the named intervals covers ``at``."""
        return covers([i for name in names for i in self.named[name]], at)

    def next_change(self, names: Sequence[str], at: int) -> int | None:
        return next_change([i for name in names for i in self.named[name]], at)
