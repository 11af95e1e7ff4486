"""Escalation chains, pure (DESIGN.md section 13): a firing notification nobody
acknowledges is told to the next step's receivers when its ``after`` passes, with
time injected; ack or resolve ends the chain; live state equal to a rebuild after
every step (``Clocked.tick`` checks it, ``fed`` too)."""

from __future__ import annotations

from tests.core.decide.support import ack, apply
from tests.core.test_fold import MINUTE, T0, kinds, normalized, routed
from tests.core.test_groups import SECOND, Clocked, notified
from tocsin.core import clock, commands, escalation, views
from tocsin.core import events as ev
from tocsin.core.decide.route import Route, RoutingTable
from tocsin.core.fold import rebuild
from tocsin.core.ingest import Normalized
from tocsin.core.matchers import Match
from tocsin.core.times import Duration, format_us

STEPS = [
    escalation.Step(after=Duration(120), receivers=["team-lead"]),
    escalation.Step(after=Duration(600), receivers=["head-of-ops"]),
]
PAGED = RoutingTable.compile([Route(receivers=["pager"], match=Match(), escalate=STEPS)])


def grouped_paging(receivers: list[str]) -> RoutingTable:
    return RoutingTable.compile(
        [
            Route(
                receivers=receivers,
                match=Match(),
                group_by=["labels.service"],
                group_wait=Duration(30),
                escalate=STEPS,
            )
        ]
    )


def fed(run: Clocked, event: Normalized, routing: RoutingTable = PAGED) -> list[ev.Event]:
    facts = run.feed(event, routing)
    assert run.state == rebuild(run.log)
    return facts


def fired(facts: list[ev.Event]) -> list[ev.EscalationFired]:
    return [f for f in facts if isinstance(f, ev.EscalationFired)]


def test_nobody_acks_so_each_step_is_told_once_at_its_time() -> None:
    """Catches a chain that never starts, fires early, fires a step twice, or tells
    the step's receivers with another reason than ``unacknowledged``."""
    run = Clocked()
    facts = fed(run, normalized(0))
    assert kinds(facts) == [
        "alert.received",
        "alert.opened",
        "alert.routed",
        "escalation.started",
    ]
    started = facts[-1]
    assert isinstance(started, ev.EscalationStarted)
    assert (started.started_at, started.route, started.alert_id) == (T0, 0, facts[0].alert_id)  # type: ignore[attr-defined]
    assert clock.next_due(run.state) == T0 + 2 * MINUTE
    assert run.tick(T0 + 2 * MINUTE - 1, routing=PAGED) == []
    first = run.tick(T0 + 2 * MINUTE + 5, routing=PAGED)
    [step] = fired(first)
    assert (step.step, step.receivers, step.due_at, step.fired_at) == (
        0,
        ["team-lead"],
        T0 + 2 * MINUTE,
        T0 + 2 * MINUTE + 5,
    )
    assert routed(first) == [("unacknowledged", "team-lead")]
    assert clock.next_due(run.state) == T0 + 10 * MINUTE  # after counts from the first page
    assert run.tick(T0 + 9 * MINUTE, routing=PAGED) == []
    second = run.tick(T0 + 10 * MINUTE, routing=PAGED)
    assert [(s.step, s.receivers) for s in fired(second)] == [(1, ["head-of-ops"])]
    assert routed(second) == [("unacknowledged", "head-of-ops")]
    assert clock.next_due(run.state) is None  # every step fired
    assert run.tick(T0 + 60 * MINUTE, routing=PAGED) == []
    # The escalated receivers hear of the resolve too.
    resolved = fed(run, normalized(61, status="resolved"))
    assert sorted(routed(resolved)) == [
        ("resolved", "head-of-ops"),
        ("resolved", "pager"),
        ("resolved", "team-lead"),
    ]
    assert run.state.escalations == {}


def test_an_ack_before_the_step_ends_the_chain() -> None:
    """Catches an ack that leaves the chain running (the step paged anyway)."""
    run = Clocked()
    alert_id = fed(run, normalized(0))[0].alert_id  # type: ignore[attr-defined]
    assert alert_id is not None
    ack(run, alert_id, T0 + MINUTE)
    assert run.state == rebuild(run.log)
    assert clock.next_due(run.state) is None
    assert run.tick(T0 + 30 * MINUTE, routing=PAGED) == []
    # News of an acknowledged alert does not start a chain again.
    assert "escalation.started" not in kinds(fed(run, normalized(12, "critical")))


def test_an_ack_between_steps_stops_the_later_ones() -> None:
    run = Clocked()
    alert_id = fed(run, normalized(0))[0].alert_id  # type: ignore[attr-defined]
    assert len(fired(run.tick(T0 + 2 * MINUTE, routing=PAGED))) == 1
    ack(run, alert_id, T0 + 3 * MINUTE)
    assert clock.next_due(run.state) is None
    assert run.tick(T0 + 11 * MINUTE, routing=PAGED) == []


def test_a_resolve_ends_the_chain_whoever_resolves() -> None:
    """Catches a resolved alert escalating (by its publisher or by an operator)."""
    run = Clocked()
    fed(run, normalized(0))
    fed(run, normalized(1, status="resolved"))
    assert clock.next_due(run.state) is None
    run2 = Clocked()
    alert_id = fed(run2, normalized(0))[0].alert_id  # type: ignore[attr-defined]
    facts = commands.resolve(
        run2.state, alert_id, by="ana", comment=None, at=T0 + MINUTE, new_id=run2.new_id
    )
    apply(run2, facts, T0 + MINUTE)
    assert run2.state == rebuild(run2.log)
    assert clock.next_due(run2.state) is None


def test_a_reminder_does_not_restart_the_chain() -> None:
    """Catches each notification starting a chain of its own (steps paged again)."""
    run = Clocked()
    fed(run, normalized(0))
    assert "escalation.started" not in kinds(fed(run, normalized(11)))  # a reminder
    assert clock.next_due(run.state) == T0 + 2 * MINUTE


def test_routes_without_escalate_start_nothing() -> None:
    run = Clocked()
    assert "escalation.started" not in kinds(run.feed(normalized(0)))
    assert run.state.escalations == {}


def test_the_alert_detail_shows_the_next_step_and_when() -> None:
    """Catches a chain state missing from ``GET /api/v1/alerts/{id}`` (and the page)."""
    run = Clocked()
    alert_id = fed(run, normalized(0))[0].alert_id  # type: ignore[attr-defined]
    alert = run.state.alerts[alert_id]
    [chain] = views.alert_detail(run.state, alert, [], T0).escalations
    assert (chain.next_step, chain.next_receivers, chain.fired, chain.steps) == (
        0,
        ["team-lead"],
        0,
        2,
    )
    assert chain.next_due_at == format_us(T0 + 2 * MINUTE)
    run.tick(T0 + 2 * MINUTE, routing=PAGED)
    [chain] = views.alert_detail(run.state, alert, [], T0).escalations
    assert (chain.next_step, chain.next_receivers, chain.fired) == (1, ["head-of-ops"], 1)
    assert views.stats(run.state, 1, T0 + 2 * MINUTE).escalations == 1


def test_a_grouped_route_escalates_until_every_alert_of_the_group_is_acked() -> None:
    """Catches a group chain that starts before its notification, ends at the first
    ack (one of two alerts acknowledged is not the group acknowledged), or resets the
    group's own timers when the escalation is told."""
    table = grouped_paging(["pager"])
    run = Clocked()
    a = fed(run, normalized(0, host="a", service="api"), table)[0].alert_id  # type: ignore[attr-defined]
    b = fed(run, normalized(0, host="b", service="api"), table)[0].alert_id  # type: ignore[attr-defined]
    assert run.state.escalations == {}  # nothing was told yet
    first = run.tick(T0 + 30 * SECOND, routing=table)
    assert kinds(first) == ["group.notified", "escalation.started"]
    started = first[1]
    assert isinstance(started, ev.EscalationStarted)
    assert started.started_at == T0 + 30 * SECOND
    group = run.state.groups[started.group_key]  # type: ignore[index]
    ack(run, a, T0 + MINUTE)
    assert clock.next_due(run.state) == T0 + 30 * SECOND + 2 * MINUTE
    step = run.tick(T0 + 30 * SECOND + 2 * MINUTE, routing=table)
    [fact] = fired(step)
    assert (fact.alert_ids, fact.group_key) == ([b], group.key)
    [told] = notified(step)
    assert (told.receiver, told.reason, told.group_key) == (
        "team-lead",
        "unacknowledged",
        group.key,
    )
    assert sorted(told.alert_ids) == sorted([a, b])
    assert group.notifications == 1  # the group's own notification count and timers
    ack(run, b, T0 + 3 * MINUTE)
    assert run.state == rebuild(run.log)
    assert run.state.escalations == {}
    assert run.tick(T0 + 30 * MINUTE, routing=table) == []


def test_a_grouped_route_with_two_receivers_escalates_once() -> None:
    """Catches one chain per receiver's group (the step's receivers paged twice)."""
    table = grouped_paging(["pager", "chat"])
    run = Clocked()
    fed(run, normalized(0, host="a", service="api"), table)
    first = run.tick(T0 + 30 * SECOND, routing=table)
    assert kinds(first).count("group.notified") == 2
    assert len(run.state.escalations) == 1
    [chain] = run.state.escalations.values()
    assert len(chain.group_keys) == 2
    step = run.tick(T0 + 30 * SECOND + 2 * MINUTE, routing=table)
    assert [n.receiver for n in notified(step)] == ["team-lead"]


def test_a_group_whose_alerts_all_resolve_ends_its_chain() -> None:
    table = grouped_paging(["pager"])
    run = Clocked()
    fed(run, normalized(0, host="a", service="api"), table)
    run.tick(T0 + 30 * SECOND, routing=table)
    fed(run, normalized(1, status="resolved", host="a", service="api"), table)
    assert run.state.escalations == {}
    assert fired(run.tick(T0 + 30 * MINUTE, routing=table)) == []


def test_steps_are_checked_naming_the_key() -> None:
    """Catches a chain that could never work: steps out of order, no or unknown
    receivers, a time that is not positive."""
    known = {"pager", "team-lead"}

    def check(*steps: tuple[float, list[str]]) -> tuple[str, str] | None:
        return escalation.check(
            [escalation.Step(after=Duration(a), receivers=r) for a, r in steps], known
        )

    assert check((60, ["team-lead"]), (120, ["pager"])) is None
    assert check((60, ["team-lead"]), (60, ["pager"])) == (
        "[1].after",
        "must be later than the step before (60s)",
    )
    assert check((0, ["team-lead"])) == ("[0].after", "must be positive")
    assert check((60, [])) == ("[0].receivers", "name at least one receiver")
    assert check((60, ["nobody"])) == ("[0].receivers", "unknown receiver 'nobody'")
