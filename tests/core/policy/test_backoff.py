"""The one "ask again" rule: doubling delays up to a ceiling."""

from __future__ import annotations

import pytest

from tocsin.core.policy.backoff import Backoff


def test_delays_double_from_the_first_and_stop_at_the_ceiling() -> None:
    backoff = Backoff(first=0.2, ceiling=5.0)
    assert [backoff.next() for _ in range(7)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]


def test_each_backoff_starts_afresh() -> None:
    used = Backoff(first=0.25, ceiling=2.0)
    used.next()
    used.next()
    assert Backoff(first=0.25, ceiling=2.0).next() == 0.25


@pytest.mark.parametrize(("first", "ceiling"), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_a_backoff_that_could_never_wait_or_never_grow_is_refused(
    first: float, ceiling: float
) -> None:
    with pytest.raises(ValueError, match="backoff"):
        Backoff(first=first, ceiling=ceiling)
