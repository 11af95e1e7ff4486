"""Instants out: ``format_us`` (its whole-second part is cached)."""

from __future__ import annotations

import time

from tocsin.core.times import ARRIVAL_CREDIT_US, format_us, parse_rfc3339, received_at


def test_format_us_matches_strftime_and_round_trips() -> None:
    for us in (0, 1, 999_999, 1_000_000, 1_775_000_000_123_456, 1_775_000_000_999_999, -1):
        seconds, micros = divmod(us, 1_000_000)
        expected = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{micros:06d}Z"
        assert format_us(us) == expected
        assert format_us(us) == expected  # from the cache
        assert parse_rfc3339(format_us(us)) == us


def test_a_batch_is_received_when_it_arrived_within_the_credit_and_never_before_the_log() -> None:
    """Catches a received time taken when the router decides (a storm's backlog then
    adds to every group_wait: issue #20, W5), a credit without bound (a broker whose
    clock runs behind would move every time back by its skew) and a time before the
    log's newest (the log's times must never go backwards)."""
    now, second = 1_700_000_000 * 1_000_000, 1_000_000
    assert received_at(now, 250_000, last=0) == now - 250_000  # waited 0.25 s
    assert received_at(now, 0, last=0) == now
    assert received_at(now, -5_000, last=0) == now  # the broker's clock ahead of ours
    assert received_at(now, 3600 * second, last=0) == now - ARRIVAL_CREDIT_US
    assert received_at(now, 250_000, last=now - 100_000) == now - 100_000
    assert received_at(now, 0, last=now + 7) == now + 7  # this host's clock stepped back
