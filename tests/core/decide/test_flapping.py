"""Flapping, pure (DESIGN.md section 13): a fingerprint that opens and resolves
``changes`` times within ``window`` is held (``alert.flapping``, suppressed with cause
``flapping``) until stable for ``window``, then its state is notified once; time
injected, live state equal to a rebuild after every step."""

from __future__ import annotations

from tests.core.test_fold import MINUTE, T0, kinds, normalized, routed
from tests.core.test_groups import Clocked
from tocsin.core import clock, views
from tocsin.core import events as ev
from tocsin.core.fold import fold, rebuild

HOUR = 60 * MINUTE


def flapping_on(run: Clocked, changes: int | None = 4, window_minutes: int = 60) -> None:
    """Log the ``config.loaded`` of a service with ``[flapping]`` (``None``: off)."""
    fact = ev.ConfigLoaded(
        digest="d",
        receivers={},
        routes=2,
        dedup_window_seconds=600.0,
        flapping_changes=changes,
        flapping_window_seconds=None if changes is None else window_minutes * 60.0,
    )
    run.log.append((len(run.log) + 1, T0, fact))
    fold(run.state, len(run.log), T0, fact)


def cycles(run: Clocked, count: int, start: int = 0) -> list[ev.Event]:
    """``count`` openings and resolves, a minute apart, from minute ``start``."""
    facts: list[ev.Event] = []
    for n in range(count):
        facts += run.feed(normalized(start + 2 * n))
        facts += run.feed(normalized(start + 2 * n + 1, status="resolved"))
        assert run.state == rebuild(run.log)
    return facts


def test_five_cycles_are_one_flapping_fact_not_ten_pages() -> None:
    """Catches flapping that is never detected (ten pages), detected more than once,
    or that holds a resolve of an alert its receivers were told of."""
    run = Clocked()
    flapping_on(run)
    facts = cycles(run, 5)
    assert kinds(facts).count("alert.flapping") == 1
    [flap] = [f for f in facts if isinstance(f, ev.AlertFlapping)]
    assert (flap.changes, flap.window, flap.at) == (4, HOUR, T0 + 3 * MINUTE)
    # Told: the first opening, its resolve, the second opening and its resolve (the
    # change that made it flap: whoever heard of the alert hears it ended). Held: the
    # three openings after; their resolves reach nobody, as nobody heard of them.
    assert routed(facts) == [("firing", "hook"), ("resolved", "hook")] * 2
    held = [f for f in facts if isinstance(f, ev.AlertSuppressed)]
    assert [f.cause for f in held] == ["flapping"] * 3
    assert views.stats(run.state, 1, T0 + 10 * MINUTE).flapping == 3


def test_a_flapping_alert_that_ends_firing_is_notified_once_when_stable() -> None:
    """Catches a settle that never comes, comes before ``window`` of calm, or pages
    more than once."""
    run = Clocked()
    flapping_on(run)
    cycles(run, 3)
    last = run.feed(normalized(6))  # opens again, held
    assert routed(last) == []
    assert clock.next_due(run.state) == T0 + 6 * MINUTE + HOUR
    assert run.tick(T0 + 6 * MINUTE + HOUR - 1) == []
    settled = run.tick(T0 + 6 * MINUTE + HOUR)
    assert isinstance(settled[0], ev.AlertSettled)
    assert (settled[0].status, settled[0].alert_id) == ("firing", last[0].alert_id)  # type: ignore[attr-defined]
    assert routed(settled) == [("firing", "hook")]
    assert clock.next_due(run.state) is None
    assert run.tick(T0 + 5 * HOUR) == []
    # Settled: it starts from nothing; a single resolve is told, not held.
    assert routed(run.feed(normalized(400, status="resolved"))) == [("resolved", "hook")]


def test_a_flapping_alert_that_ends_resolved_settles_with_nothing_more_to_say() -> None:
    run = Clocked()
    flapping_on(run)
    cycles(run, 4)
    due = T0 + 7 * MINUTE + HOUR
    assert clock.next_due(run.state) == due
    settled = run.tick(due)
    assert kinds(settled) == ["alert.settled"]
    assert settled[0].status == "resolved"  # type: ignore[attr-defined]


def test_each_change_while_flapping_moves_the_settling() -> None:
    """Catches a settle timed from the start of flapping rather than the last change."""
    run = Clocked()
    flapping_on(run)
    cycles(run, 2)
    run.feed(normalized(50))
    assert clock.next_due(run.state) == T0 + 50 * MINUTE + HOUR
    reminder = run.feed(normalized(61))  # a new dedup bucket: news, held, not a change
    assert [f.cause for f in reminder if isinstance(f, ev.AlertSuppressed)] == ["flapping"]
    assert clock.next_due(run.state) == T0 + 50 * MINUTE + HOUR


def test_changes_further_apart_than_the_window_are_not_flapping() -> None:
    run = Clocked()
    flapping_on(run, changes=4, window_minutes=2)
    facts = cycles(run, 5)
    assert "alert.flapping" not in kinds(facts)
    assert len(routed(facts)) == 10


def test_off_unless_configured() -> None:
    """Catches flapping applied with no ``[flapping]``: every change is told."""
    run = Clocked()
    facts = cycles(run, 5)
    assert "alert.flapping" not in kinds(facts)
    assert len(routed(facts)) == 10
    assert run.state.flaps == {}


def test_a_config_without_flapping_still_settles_what_flaps() -> None:
    """Catches a fingerprint held for ever when ``[flapping]`` is taken out."""
    run = Clocked()
    flapping_on(run)
    cycles(run, 2)
    run.feed(normalized(5))
    flapping_on(run, changes=None)
    reminder = run.feed(normalized(11))  # news of the same alert, still held
    assert [f.cause for f in reminder if isinstance(f, ev.AlertSuppressed)] == ["flapping"]
    assert clock.next_due(run.state) == T0 + 5 * MINUTE + HOUR
    assert routed(run.tick(T0 + 5 * MINUTE + HOUR)) == [("firing", "hook")]
    assert run.state.flaps == {}


def test_the_alert_detail_says_it_flaps_and_until_when() -> None:
    from tocsin.core.times import format_us

    run = Clocked()
    flapping_on(run)
    cycles(run, 2)
    opened = run.feed(normalized(9))
    alert = run.state.alerts[opened[0].alert_id]  # type: ignore[attr-defined,index]
    shown = views.alert_detail(run.state, alert, [], T0 + 9 * MINUTE).flapping
    assert shown is not None
    assert (shown.since, shown.settles_at) == (
        format_us(T0 + 3 * MINUTE),
        format_us(T0 + 9 * MINUTE + HOUR),
    )
