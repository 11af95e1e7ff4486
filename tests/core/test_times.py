"""Instants out: ``format_us`` (its whole-second part is cached)."""

from __future__ import annotations

import time

from tocsin.core.times import format_us, parse_rfc3339


def test_format_us_matches_strftime_and_round_trips() -> None:
    for us in (0, 1, 999_999, 1_000_000, 1_775_000_000_123_456, 1_775_000_000_999_999, -1):
        seconds, micros = divmod(us, 1_000_000)
        expected = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{micros:06d}Z"
        assert format_us(us) == expected
        assert format_us(us) == expected  # from the cache
        assert parse_rfc3339(format_us(us)) == us
