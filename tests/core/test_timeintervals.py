"""tocsin.core.timeintervals: Alertmanager's time interval fields (DESIGN.md section 12),
with instants injected (no clock read), in UTC and in a zone with daylight saving."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest

from tocsin.core.errors import ConfigError
from tocsin.core.timeintervals import (
    Interval,
    TimeIntervals,
    TimeIntervalSpec,
    TimeRange,
    compile_interval,
    covers,
    next_change,
)

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")


def us(text: str) -> int:
    """An RFC 3339 instant as microseconds."""
    return int(dt.datetime.fromisoformat(text).timestamp()) * 1_000_000


def interval(zone: dt.tzinfo = dt.UTC, **fields: object) -> Interval:
    spec = TimeIntervalSpec(**fields)  # type: ignore[arg-type]
    return compile_interval(spec, zone, "time_intervals.x")


BUSINESS = interval(
    BERLIN, weekdays=["monday:friday"], times=[TimeRange(start="09:00", end="17:30")]
)


def test_business_hours_in_berlin() -> None:
    # 2026-12-04 is a Friday; Berlin is UTC+1 in winter.
    assert covers([BUSINESS], us("2026-12-04T08:00:00+00:00"))  # 09:00 local: start included
    assert not covers([BUSINESS], us("2026-12-04T07:59:00+00:00"))
    assert covers([BUSINESS], us("2026-12-04T16:29:00+00:00"))
    assert not covers([BUSINESS], us("2026-12-04T16:30:00+00:00"))  # 17:30 local: end excluded
    assert not covers([BUSINESS], us("2026-12-05T10:00:00+00:00"))  # Saturday


def test_daylight_saving_moves_the_utc_window() -> None:
    # 2026-07-03 is a Friday; Berlin is UTC+2 in summer.
    assert covers([BUSINESS], us("2026-07-03T07:00:00+00:00"))
    assert not covers([BUSINESS], us("2026-07-03T15:30:00+00:00"))


def test_fields_left_out_cover_everything() -> None:
    assert covers([interval()], us("2031-02-03T04:05:06+00:00"))


@pytest.mark.parametrize(
    ("fields", "inside", "outside"),
    [
        ({"weekdays": ["sunday"]}, "2026-12-06T12:00:00+00:00", "2026-12-07T12:00:00+00:00"),
        (
            {"weekdays": ["Saturday:Sunday"]},
            "2026-12-05T00:00:00+00:00",
            "2026-12-04T23:59:59+00:00",
        ),
        ({"days_of_month": ["1:7"]}, "2026-12-07T23:00:00+00:00", "2026-12-08T00:00:00+00:00"),
        ({"days_of_month": ["-1"]}, "2026-02-28T10:00:00+00:00", "2026-02-27T10:00:00+00:00"),
        ({"days_of_month": ["-3:-1"]}, "2026-12-29T10:00:00+00:00", "2026-12-28T10:00:00+00:00"),
        ({"months": ["december"]}, "2026-12-04T10:00:00+00:00", "2026-11-30T10:00:00+00:00"),
        ({"months": ["1:3"]}, "2027-03-31T10:00:00+00:00", "2027-04-01T10:00:00+00:00"),
        ({"years": ["2026:2027"]}, "2027-12-31T23:59:00+00:00", "2028-01-01T00:00:00+00:00"),
        (
            {"times": [TimeRange(start="22:00", end="24:00")]},
            "2026-12-04T23:59:00+00:00",
            "2026-12-04T21:59:00+00:00",
        ),
    ],
)
def test_each_field(fields: dict[str, object], inside: str, outside: str) -> None:
    compiled = interval(**fields)
    assert covers([compiled], us(inside))
    assert not covers([compiled], us(outside))


def test_any_interval_of_a_list_covers() -> None:
    weekend = interval(weekdays=["saturday:sunday"])
    nights = interval(times=[TimeRange(start="00:00", end="06:00")])
    assert covers([weekend, nights], us("2026-12-04T05:00:00+00:00"))  # Friday night
    assert covers([weekend, nights], us("2026-12-05T12:00:00+00:00"))  # Saturday
    assert not covers([weekend, nights], us("2026-12-04T12:00:00+00:00"))


def test_next_change_is_the_end_of_the_business_day_then_monday_morning() -> None:
    friday_noon = us("2026-12-04T11:00:00+00:00")
    end = next_change([BUSINESS], friday_noon)
    assert end == us("2026-12-04T16:30:00+00:00")
    assert next_change([BUSINESS], end) == us("2026-12-07T08:00:00+00:00")  # Monday 09:00


def test_next_change_is_none_when_it_never_changes() -> None:
    assert next_change([interval(years=["2020"])], us("2026-12-04T00:00:00+00:00")) is None
    assert next_change([interval()], us("2026-12-04T00:00:00+00:00")) is None


def test_named_intervals() -> None:
    named = TimeIntervals({"business": (BUSINESS,), "never": (interval(years=["1999"]),)})
    friday_noon = us("2026-12-04T11:00:00+00:00")
    assert named.covers(["business"], friday_noon)
    assert not named.covers(["never"], friday_noon)
    assert named.covers(["never", "business"], friday_noon)
    assert named.next_change(["never"], friday_noon) is None


@pytest.mark.parametrize(
    ("fields", "key"),
    [
        ({"times": [TimeRange(start="9", end="17:00")]}, "time_intervals.x.times[0].start"),
        ({"times": [TimeRange(start="09:00", end="25:00")]}, "time_intervals.x.times[0].end"),
        ({"times": [TimeRange(start="24:00", end="24:00")]}, "time_intervals.x.times[0].start"),
        ({"times": [TimeRange(start="10:00", end="09:00")]}, "time_intervals.x.times[0]"),
        ({"weekdays": ["funday"]}, "time_intervals.x.weekdays[0]"),
        ({"weekdays": ["friday:monday"]}, "time_intervals.x.weekdays[0]"),
        ({"months": ["13"]}, "time_intervals.x.months[0]"),
        ({"days_of_month": ["0"]}, "time_intervals.x.days_of_month[0]"),
        ({"days_of_month": ["10:5"]}, "time_intervals.x.days_of_month[0]"),
        ({"years": ["twenty"]}, "time_intervals.x.years[0]"),
    ],
)
def test_bad_fields_are_refused_naming_the_key(fields: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as error:
        interval(**fields)
    assert str(error.value).startswith(key + ":")
