"""Instants out: ``format_us`` (its whole-second part is cached)."""

from __future__ import annotations

import time

import pytest

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


def test_an_instant_in_format_us_form_parses_as_the_general_parse_does() -> None:
    """The recorder parses an instant per outcome; one in ``format_us``'s form whose
    second was parsed before is read from the learnt head (issue #20). Catches the
    quick read giving another value than the general parse, learning a head from a
    text that is not in that form, or taking a look-alike (other digits, another
    offset, a lower-case ``z``) the general parse reads otherwise or refuses."""
    base = 1_775_000_000_000_000
    for us in (base, base + 1, base + 999_999, base + 1_000_000, 0, -1):
        text = format_us(us)
        assert parse_rfc3339(text) == us  # learns its head
        assert parse_rfc3339(text) == us  # read from it
        assert parse_rfc3339(text[:20] + "000007Z") == us - us % 1_000_000 + 7
    head = format_us(base)[:20]
    assert parse_rfc3339(head + "5z") == base + 500_000  # the general parse's
    assert parse_rfc3339(head[:-1] + "+01:00") == base - 3_600_000_000
    assert parse_rfc3339(head + "123456789Z") == base + 123_456
    arabic_indic = "".join(chr(0x0661 + i) for i in range(6))  # digits to ``\\d``
    for refused, why in (
        (head + "12345xZ", "not RFC 3339"),
        (head + arabic_indic + "Z", "isoformat"),
        (head + "123456", "no UTC offset"),
        (head + " 12345Z", "not RFC 3339"),
    ):
        with pytest.raises(ValueError, match=why):
            parse_rfc3339(refused)
