"""The clock's auto-resolve, pure (DESIGN.md section 11): ``ends_at`` on an event, and
``[alerts] resolve_timeout``, with instants injected; live state equal to a rebuild."""

from __future__ import annotations

import msgspec

from tests.core.test_fold import MINUTE, T0, normalized
from tests.core.test_groups import BY_SERVICE, Clocked, notified
from tocsin.core import clock
from tocsin.core import events as ev
from tocsin.core.fold import fold


def ending(at_minute: int, ends_minute: int, **labels: str) -> object:
    return msgspec.structs.replace(
        normalized(at_minute, **labels), ends_at=T0 + ends_minute * MINUTE
    )


def configure(run: Clocked, resolve_timeout: float | None) -> None:
    fact = ev.ConfigLoaded(
        digest="d",
        receivers={},
        routes=2,
        dedup_window_seconds=600.0,
        resolve_timeout_seconds=resolve_timeout,
    )
    run.log.append((len(run.log) + 1, T0, fact))
    fold(run.state, len(run.log), T0, fact)


def test_an_alert_resolves_when_its_ends_at_passes_and_its_resolve_is_routed() -> None:
    run = Clocked()
    run.feed(ending(0, 5))  # type: ignore[arg-type]
    assert clock.next_due(run.state) == T0 + 5 * MINUTE
    assert run.tick(T0 + 5 * MINUTE - 1) == []
    facts = run.tick(T0 + 6 * MINUTE)
    resolved = facts[0]
    assert isinstance(resolved, ev.AlertResolved)
    assert (resolved.by, resolved.resolved_at, resolved.due_at) == (
        "ends_at",
        T0 + 5 * MINUTE,
        T0 + 5 * MINUTE,
    )
    assert resolved.fired_at == T0 + 6 * MINUTE
    routed = [(f.reason, f.receiver) for f in facts if isinstance(f, ev.AlertRouted)]
    assert routed == [("resolved", "hook")]
    assert run.state.open_by_fingerprint == {}
    assert clock.next_due(run.state) is None


def test_a_later_event_moves_ends_at() -> None:
    run = Clocked()
    run.feed(ending(0, 5))  # type: ignore[arg-type]
    run.feed(ending(4, 30))  # type: ignore[arg-type]
    assert clock.next_due(run.state) == T0 + 30 * MINUTE
    assert run.tick(T0 + 10 * MINUTE) == []


def test_a_resolved_event_ends_the_timer() -> None:
    run = Clocked()
    run.feed(ending(0, 5))  # type: ignore[arg-type]
    run.feed(normalized(1, status="resolved"))
    assert clock.next_due(run.state) is None


def test_resolve_timeout_counts_from_the_last_event() -> None:
    run = Clocked()
    configure(run, 300.0)
    run.feed(normalized(0))
    run.feed(normalized(3))
    due = T0 + 3 * MINUTE + 300 * 1_000_000
    assert clock.next_due(run.state) == due
    [resolved, *_] = run.tick(due)
    assert isinstance(resolved, ev.AlertResolved)
    assert resolved.by == "timeout"


def test_ends_at_wins_over_resolve_timeout_and_no_timeout_means_none() -> None:
    run = Clocked()
    run.feed(normalized(0))
    assert clock.next_due(run.state) is None  # neither set: the alert stays open
    configure(run, 60.0)
    run.feed(ending(1, 50))  # type: ignore[arg-type]
    assert clock.next_due(run.state) == T0 + 50 * MINUTE


def test_a_config_without_the_timeout_lifts_the_timers_it_set() -> None:
    run = Clocked()
    configure(run, 60.0)
    run.feed(normalized(0))
    assert clock.next_due(run.state) == T0 + 60 * 1_000_000
    configure(run, None)
    assert clock.next_due(run.state) is None


def test_a_grouped_alert_resolved_by_the_clock_is_listed_resolved_by_its_group() -> None:
    run = Clocked()
    run.feed(ending(0, 5, host="a", service="api"), BY_SERVICE)  # type: ignore[arg-type]
    run.feed(normalized(0, host="b", service="api"), BY_SERVICE)
    run.tick(T0 + 30 * 1_000_000)
    run.tick(T0 + 5 * MINUTE)  # the resolve
    [update] = notified(run.tick(T0 + 30 * 1_000_000 + 300 * 1_000_000))
    assert update.reason == "update"
    assert [a.status for a in update.alerts if a.labels["host"] == "a"] == ["resolved"]


def test_a_silence_that_expires_routes_what_it_held_back_as_firing() -> None:
    from tests.core.decide.support import silence

    run = Clocked()
    silence_id = silence(run, T0, ends_at="30m", labels={"host": "db1"})
    assert kinds_of(run.feed(normalized(1))) == ["alert.received", "alert.opened", "alert.silenced"]
    assert clock.next_due(run.state) == T0 + 30 * MINUTE
    assert run.tick(T0 + 30 * MINUTE - 1) == []
    expired, *routed = run.tick(T0 + 31 * MINUTE)
    assert isinstance(expired, ev.SilenceExpired)
    assert (expired.silence_id, expired.at, expired.fired_at) == (
        silence_id,
        T0 + 30 * MINUTE,
        T0 + 31 * MINUTE,
    )
    assert [(f.reason, f.receiver) for f in routed if isinstance(f, ev.AlertRouted)] == [
        ("firing", "hook")
    ]
    assert expired.alert_ids == [routed[0].alert_id]  # type: ignore[attr-defined]
    assert clock.next_due(run.state) is None  # each silence expires once
    assert run.tick(T0 + 40 * MINUTE) == []


def test_a_deleted_silence_releases_at_once_unless_another_still_covers() -> None:
    from tests.core.decide.support import apply, silence
    from tocsin.core import commands

    run = Clocked()
    first = silence(run, T0, ends_at="2h", labels={"host": "db1"})
    silence(run, T0, ends_at="1h", severity="warning")
    run.feed(normalized(1))
    apply(run, commands.delete_silence(run.state, first, by="ana", at=T0 + 2 * MINUTE), T0)
    [expired] = run.tick(T0 + 2 * MINUTE)
    assert isinstance(expired, ev.SilenceExpired)
    assert expired.alert_ids == []  # the second silence still covers the alert


def test_resolved_alerts_are_not_released_by_an_expiring_silence() -> None:
    from tests.core.decide.support import silence

    run = Clocked()
    silence(run, T0, ends_at="30m", labels={"host": "db1"})
    run.feed(normalized(1))
    run.feed(normalized(2, status="resolved"))
    [expired] = run.tick(T0 + 30 * MINUTE)
    assert isinstance(expired, ev.SilenceExpired)
    assert expired.alert_ids == []


def kinds_of(facts: list[ev.Event]) -> list[str]:
    return [ev.kind_of(f) for f in facts]


def test_a_later_event_without_ends_at_drops_it() -> None:
    run = Clocked()
    run.feed(ending(0, 5))  # type: ignore[arg-type]
    run.feed(normalized(1))
    assert clock.next_due(run.state) is None
    assert run.tick(T0 + 10 * MINUTE) == []


def test_two_alerts_a_silence_releases_into_one_new_group_open_it_once() -> None:
    """Both released alerts join the same group that did not exist yet: one
    ``group.opened``, not one per alert (the facts are decided before either is folded)."""
    from tests.core.decide.support import silence

    run = Clocked()
    silence(run, T0, ends_at="30m", labels={"service": "api"})
    run.feed(normalized(1, host="a", service="api"), BY_SERVICE)
    run.feed(normalized(1, host="b", service="api"), BY_SERVICE)
    assert run.state.groups == {}
    facts = run.tick(T0 + 30 * MINUTE, routing=BY_SERVICE)
    assert kinds_of(facts).count("group.opened") == 1
    assert kinds_of(facts).count("alert.grouped") == 2
    assert len(run.state.groups) == 1


def test_a_commit_wakes_the_clock_only_for_a_due_time_before_its_planned_look() -> None:
    """``wakes_sooner``: the router tells the clock of every commit (issue #20, W3);
    only a timer due before the clock's next look is worth a wake-up."""
    assert clock.wakes_sooner(T0, T0 + MINUTE)
    assert not clock.wakes_sooner(T0 + MINUTE, T0 + MINUTE)
    assert not clock.wakes_sooner(T0 + 2 * MINUTE, T0 + MINUTE)
    assert not clock.wakes_sooner(None, T0 + MINUTE)


def test_a_timer_is_near_due_within_the_lead_before_it_and_once_due() -> None:
    """``near_due``: the router's inbound batches stop every chunk from ``LEAD_US``
    before a timer falls due (issue #20, W5: the first tick of a flush waited 50-90 ms
    for a storm's batch of 1,000 to commit). Catches a lead counted from the wrong side
    of the due time, a timer seen near long before (every batch a chunk), or none."""
    lead = clock.LEAD_US
    assert clock.near_due(T0, T0)
    assert clock.near_due(T0, T0 + MINUTE)  # past due: still (the clock is on it)
    assert clock.near_due(T0 + lead, T0)
    assert not clock.near_due(T0 + lead + 1, T0)
    assert clock.near_due(T0 + 10, T0, lead=10)
    assert not clock.near_due(T0 + 11, T0, lead=10)
    assert not clock.near_due(None, T0)
    assert 0 < lead <= 1_000_000  # never a second's worth of small batches


def test_a_due_timer_goes_before_the_next_inbound_batch_and_a_later_one_does_not() -> None:
    """``goes_first``: the router asks before each inbound batch whether the clock's
    timers take the turn (issue #20, W5: a group's flush waited behind a storm's
    batches). Catches a router that serves the clock before its timer is due (a flush
    before ``group_wait`` ends) or not once it is."""
    assert clock.goes_first(T0, T0)
    assert clock.goes_first(T0, T0 + MINUTE)
    assert not clock.goes_first(T0 + 1, T0)
    assert not clock.goes_first(None, T0)
