"""tocsin.routing: the route ``match`` grammar of DESIGN.md section 8 (strings or lists,
``*`` prefixes, labels, every key must match, severity aliases), receiver fan-out, and
the route stage that turns it into facts."""

from __future__ import annotations

from typing import Any

import pytest

from tests.core.decide.support import after_dedup, silence
from tests.core.test_fold import ONLY_CRITICAL, T0, Run, kinds, normalized
from tocsin.core import events as ev
from tocsin.core.decide.candidate import PASS
from tocsin.core.decide.route import (
    Route,
    RoutingTable,
    severity_coverage,
    unreachable_severities,
)
from tocsin.core.decide.route import route as route_stage
from tocsin.core.matchers import Match
from tocsin.core.state import State


def route(receivers: list[str], **match: Any) -> Route:
    return Route(receivers=receivers, match=Match(**match))


def hits(
    match: Match,
    *,
    severity: str = "warning",
    type_: str = "disk_full",
    source: str = "storage",
    labels: dict[str, str] | None = None,
) -> bool:
    """Whether one route with ``match`` sends the event to its receiver."""
    table = RoutingTable.compile([Route(receivers=["r"], match=match)])
    return table.receivers_for(severity, type_, source, labels or {}) == ["r"]


# --- values -----------------------------------------------------------------------------


def test_string_value_matches_exactly() -> None:
    match = Match(type="disk_full")
    assert hits(match, type_="disk_full")
    assert not hits(match, type_="disk_full_soon")
    assert not hits(match, type_="disk")


def test_list_value_matches_any_of() -> None:
    match = Match(type=["disk_full", "cpu_hot"])
    assert hits(match, type_="disk_full")
    assert hits(match, type_="cpu_hot")
    assert not hits(match, type_="mem_low")


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ("order_*", "order_rejected", True),
        ("order_*", "order_", True),
        ("order_*", "orders", False),
        ("order_*", "x_order_rejected", False),
        ("order*", "orders", True),
        ("*", "anything.at:all", True),
    ],
)
def test_trailing_star_matches_by_prefix(pattern: str, value: str, expected: bool) -> None:
    assert hits(Match(type=pattern), type_=value) is expected


def test_prefix_and_exact_values_mix_in_a_list() -> None:
    match = Match(source=["billing", "payments-*"])
    assert hits(match, source="billing")
    assert hits(match, source="payments-eu")
    assert not hits(match, source="billing-eu")


# --- labels -----------------------------------------------------------------------------


def test_label_match_compares_the_label_value() -> None:
    match = Match(labels={"env": "prod"})
    assert hits(match, labels={"env": "prod", "host": "db-1"})
    assert not hits(match, labels={"env": "staging"})


def test_missing_label_does_not_match() -> None:
    assert not hits(Match(labels={"env": "prod"}), labels={"host": "db-1"})
    assert not hits(Match(labels={"env": "*"}), labels={})


def test_label_values_take_lists_and_prefixes() -> None:
    match = Match(labels={"env": ["prod", "stage-*"]})
    assert hits(match, labels={"env": "prod"})
    assert hits(match, labels={"env": "stage-2"})
    assert not hits(match, labels={"env": "dev"})


def test_every_label_given_must_match() -> None:
    match = Match(labels={"env": "prod", "team": "storage"})
    assert hits(match, labels={"env": "prod", "team": "storage"})
    assert not hits(match, labels={"env": "prod"})
    assert not hits(match, labels={"env": "prod", "team": "web"})


# --- combining keys ---------------------------------------------------------------------


def test_every_key_given_must_match() -> None:
    match = Match(severity="critical", type="disk_*", source="storage", labels={"env": "prod"})
    event = {"severity": "critical", "type_": "disk_full", "source": "storage"}
    assert hits(match, **event, labels={"env": "prod"})
    assert not hits(match, **{**event, "severity": "error"}, labels={"env": "prod"})
    assert not hits(match, **{**event, "type_": "cpu_hot"}, labels={"env": "prod"})
    assert not hits(match, **{**event, "source": "web"}, labels={"env": "prod"})
    assert not hits(match, **event, labels={"env": "dev"})


@pytest.mark.parametrize("severity", ["critical", "error", "warning", "info"])
def test_empty_match_matches_everything(severity: str) -> None:
    assert hits(Match(), severity=severity, type_="x", source="y", labels={"a": "b"})
    assert hits(Match(), severity=severity, type_="other", source="z", labels={})


def test_route_without_match_matches_everything() -> None:
    table = RoutingTable.compile([Route(receivers=["log"])])
    assert table.receivers_for("info", "t", "s", {}) == ["log"]


# --- fan-out ----------------------------------------------------------------------------


def test_every_matching_route_applies_in_config_order() -> None:
    table = RoutingTable.compile(
        [
            route(["pager"], severity="critical"),
            route(["risk-email"], type="daily_loss_limit"),
            route(["ops-webhook"], labels={"team": "ops"}),
            route(["log"]),
        ]
    )
    assert table.receivers_for("critical", "disk_full", "storage", {"team": "ops"}) == [
        "pager",
        "ops-webhook",
        "log",
    ]
    assert table.receivers_for("info", "daily_loss_limit", "risk", {}) == ["risk-email", "log"]


def test_receivers_are_deduplicated_in_first_match_order() -> None:
    table = RoutingTable.compile(
        [route(["b", "a"]), route(["a", "c"]), route(["d", "b"], severity="info")]
    )
    assert table.receivers_for("info", "t", "s", {}) == ["b", "a", "c", "d"]
    assert table.receivers_for("error", "t", "s", {}) == ["b", "a", "c"]


def test_no_matching_route_gives_no_receivers() -> None:
    table = RoutingTable.compile([route(["pager"], severity="critical")])
    assert table.receivers_for("info", "t", "s", {}) == []


# --- severity normalization -------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "matches", "misses"),
    [
        ("sev1", "critical", "warning"),
        ("fatal", "critical", "error"),
        ("FATAL", "critical", "info"),
        ("sev2", "warning", "critical"),
        ("warn", "warning", "info"),
        ("sev3", "info", "warning"),
        ("Critical", "critical", "error"),
        ("ERROR", "error", "critical"),
    ],
)
def test_severity_in_match_is_normalized(written: str, matches: str, misses: str) -> None:
    assert hits(Match(severity=written), severity=matches)
    assert not hits(Match(severity=written), severity=misses)


def test_severity_list_with_aliases() -> None:
    match = Match(severity=["sev1", "error"])
    assert hits(match, severity="critical")
    assert hits(match, severity="error")
    assert not hits(match, severity="warning")


# --- the route stage: one routed fact per receiver --------------------------------------


def routed_to(facts: list[ev.Event]) -> list[tuple[str, str, str]]:
    return [
        (f.reason, f.receiver, f.notification_id) for f in facts if isinstance(f, ev.AlertRouted)
    ]


def test_a_new_alert_is_routed_to_every_matching_receiver_with_its_own_id() -> None:
    judged = after_dedup(Run(), normalized(0, "critical"))  # alert id n1
    assert route_stage(State(), judged) is PASS
    assert kinds(judged.facts) == ["alert.received", "alert.opened"] + ["alert.routed"] * 2
    assert routed_to(judged.facts) == [("firing", "pager", "n2"), ("firing", "hook", "n3")]
    assert {f.dedup_key for f in judged.facts[2:]} == {judged.dedup_key}  # type: ignore[union-attr]


def test_an_escalation_is_recorded_before_it_is_routed() -> None:
    run = Run()
    run.feed(normalized(0, "warning"))
    judged = after_dedup(run, normalized(1, "critical"))
    assert route_stage(run.state, judged) is PASS
    escalated = judged.facts[1]
    assert isinstance(escalated, ev.AlertEscalated)
    assert (escalated.from_severity, escalated.severity) == ("warning", "critical")
    assert [r[:2] for r in routed_to(judged.facts)] == [
        ("escalated", "pager"),
        ("escalated", "hook"),
    ]


def test_an_escalation_no_route_delivers_is_recorded_and_counted_as_not_routed() -> None:
    run = Run()
    run.feed(normalized(0, "warning"))  # told hook
    judged = after_dedup(run, normalized(1, "critical"), routing=RoutingTable.compile([]))
    route_stage(run.state, judged)
    assert kinds(judged.facts) == ["alert.received", "alert.escalated", "alert.suppressed"]
    suppressed = judged.facts[2]
    assert isinstance(suppressed, ev.AlertSuppressed)
    assert (suppressed.cause, suppressed.newly_unrouted) == ("no_route", False)


def test_a_resolve_goes_to_every_receiver_told_whatever_the_routes_say_now() -> None:
    run = Run()
    run.feed(normalized(0, "critical"))  # told pager and hook
    judged = after_dedup(run, normalized(1, status="resolved"), routing=RoutingTable.compile([]))
    route_stage(run.state, judged)
    assert [r[:2] for r in routed_to(judged.facts)] == [
        ("resolved", "pager"),
        ("resolved", "hook"),
    ]


def test_a_reminder_no_route_delivers_is_counted_as_suppressed() -> None:
    run = Run()
    run.feed(normalized(0))
    judged = after_dedup(run, normalized(10), routing=RoutingTable.compile([]))
    route_stage(run.state, judged)
    assert kinds(judged.facts) == ["alert.received", "alert.suppressed"]
    assert judged.facts[1].cause == "no_route"  # type: ignore[union-attr]


def test_a_new_alert_no_route_delivers_is_opened_and_found_unrouted() -> None:
    """Issue #23 item 5: its first event was neither routed nor counted as suppressed,
    so nothing told it from a silenced one."""
    judged = after_dedup(Run(), normalized(0), routing=RoutingTable.compile([]))
    route_stage(State(), judged)
    assert kinds(judged.facts) == ["alert.received", "alert.opened", "alert.suppressed"]
    suppressed = judged.facts[2]
    assert isinstance(suppressed, ev.AlertSuppressed)
    assert (suppressed.cause, suppressed.newly_unrouted) == ("no_route", True)


def no_route_marks(facts: list[ev.Event]) -> list[bool]:
    """``newly_unrouted`` of each no_route fact among ``facts``."""
    return [
        f.newly_unrouted
        for f in facts
        if isinstance(f, ev.AlertSuppressed) and f.cause == "no_route"
    ]


def test_an_alert_is_found_unrouted_once_not_at_each_of_its_events() -> None:
    run = Run()
    facts: list[ev.Event] = []
    for minute in (0, 1, 10, 11, 25):  # open, duplicate, then reminders no route takes
        facts += run.feed(normalized(minute, "info"), routing=ONLY_CRITICAL)
    assert no_route_marks(facts) == [True, False, False, False]
    later = run.feed(normalized(26, "critical"), routing=ONLY_CRITICAL)
    assert [r[:2] for r in routed_to(later)] == [("reminder", "pager")]
    # Told someone: news no route takes now is not routed, but the alert is not unrouted.
    assert no_route_marks(run.feed(normalized(40, "info"), routing=ONLY_CRITICAL)) == [False]


def test_an_alert_only_ever_silenced_is_found_unrouted_when_no_route_takes_its_news() -> None:
    """Nobody was told of it (silenced), and its news now matches no route."""
    run = Run()
    silence(run, T0, labels={"host": "db1"})
    assert kinds(run.feed(normalized(0, "critical"), routing=ONLY_CRITICAL))[-1] == "alert.silenced"
    judged = after_dedup(run, normalized(1, "warning"), routing=ONLY_CRITICAL)
    route_stage(run.state, judged)
    assert no_route_marks(judged.facts) == [True]


# --- which severities can reach nobody (for `tocsin config check`) ----------------------


def table(*routes: Route) -> RoutingTable:
    return RoutingTable.compile(list(routes))


def test_a_severity_no_route_admits_reaches_nobody() -> None:
    """Issue #23 item 5: the newcomer's config, critical to the pager, warning and error
    to a webhook: every info alert is unrouted."""
    routes = table(
        route(["pager"], severity="critical"), route(["hook"], severity=["warning", "sev2", "err*"])
    )
    assert unreachable_severities(routes) == ["info"]
    assert severity_coverage(routes) == {
        "critical": "always",
        "error": "always",
        "warning": "always",
        "info": "never",
    }


def test_a_catch_all_route_leaves_no_severity_unreached() -> None:
    for catch_all in (route(["hook"]), route(["hook"], type="*", labels={})):
        routes = table(route(["pager"], severity="critical"), catch_all)
        assert unreachable_severities(routes) == []
        assert set(severity_coverage(routes).values()) == {"always"}


def test_a_route_that_also_looks_at_type_source_or_labels_reaches_some_events() -> None:
    """Info events of other types, sources or without the label still reach nobody."""
    for narrow in (
        route(["ops"], type="db_*"),
        route(["ops"], source="billing", severity="info"),
        route(["ops"], labels={"env": "*"}),  # the label must be there
    ):
        routes = table(route(["pager"], severity="critical"), narrow)
        assert severity_coverage(routes)["info"] == "sometimes", narrow
        assert "info" not in unreachable_severities(routes)


def test_a_route_no_event_can_match_reaches_nobody() -> None:
    routes = table(route(["ops"], type=[]), route(["ops"], labels={"env": []}))
    assert unreachable_severities(routes) == ["critical", "error", "warning", "info"]
    assert unreachable_severities(table()) == ["critical", "error", "warning", "info"]


def test_the_answer_agrees_with_the_routing_of_real_events() -> None:
    """``never`` means no event of the severity is routed; ``always`` that every one is."""
    routes = table(route(["pager"], severity="critical"), route(["ops"], type="db_*"))
    events = [
        (type_, source, labels)
        for type_ in ("db_down", "disk_full")
        for source in ("db", "web")
        for labels in ({}, {"env": "prod"})
    ]
    for severity, covered in severity_coverage(routes).items():
        reached = [bool(routes.receivers_for(severity, *e)) for e in events]
        expected = {"always": all(reached), "sometimes": any(reached) and not all(reached)}
        assert expected.get(covered, not any(reached)), (severity, covered, reached)
