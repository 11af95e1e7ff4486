"""The composition: idempotency, dedup, flapping, then mute, then route, each stage
seeing what the ones before it decided and a stopped candidate going no further."""

from __future__ import annotations

from tests.core.decide.support import ack, silence
from tests.core.test_fold import MINUTE, T0, Run, kinds, normalized, routed
from tocsin.core import events as ev
from tocsin.core.decide import triage
from tocsin.core.decide.dedup import dedup
from tocsin.core.decide.flapping import flapping
from tocsin.core.decide.idempotency import idempotency
from tocsin.core.decide.route import route


def test_the_stages_run_in_order_idempotency_dedup_flapping_mute_route() -> None:
    first, second, third, _mute, last = triage.STAGES
    assert (first, second, third, last) == (idempotency, dedup, flapping, route)


def test_a_held_back_escalation_is_not_recorded_as_one() -> None:
    """Mute comes before route: a silenced escalation leaves the routed severity as it
    was, so the next worse event after the silence still escalates."""
    run = Run()
    run.feed(normalized(0, "warning"))
    silence(run, T0 + MINUTE, ends_at="2m", type="disk_full")
    assert kinds(run.feed(normalized(1, "critical"))) == ["alert.received", "alert.silenced"]
    assert routed(run.feed(normalized(4, "critical"))) == [
        ("escalated", "pager"),
        ("escalated", "hook"),
    ]


def test_a_resolve_passes_a_silence_and_reaches_everyone_told() -> None:
    run = Run()
    run.feed(normalized(0, "critical"))
    silence(run, T0, type="disk_full")
    resolved = run.feed(normalized(1, status="resolved"))
    assert kinds(resolved)[:2] == ["alert.received", "alert.resolved"]
    assert routed(resolved) == [("resolved", "pager"), ("resolved", "hook")]


def test_an_acknowledged_reminder_stops_at_dedup_whatever_mute_and_route_would_say() -> None:
    run = Run()
    run.feed(normalized(0))
    ack(run, next(iter(run.state.alerts)), T0)
    silence(run, T0, type="disk_full")
    facts = run.feed(normalized(10))
    assert kinds(facts) == ["alert.received", "alert.suppressed"]
    assert isinstance(facts[1], ev.AlertSuppressed)
    assert facts[1].cause == "acked"
