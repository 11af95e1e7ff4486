"""Routes -> receivers (pure). Every matching route applies, in config order, until
one that matched says ``continue = false`` (Alertmanager's tree, flattened).

A route selects with a ``match`` table and/or Alertmanager ``matchers`` (both must
match; the grammars are ``tocsin.core.matchers``'s).

``route`` is the decision stage that tells the receivers (one ``alert.routed`` each).
``severity_coverage`` and ``unreachable_severities`` tell, from the table alone, which
severities may reach nobody (for ``tocsin config check`` to warn).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, get_args

import msgspec
from msgspec import Struct

from tocsin.core import escalation
from tocsin.core import events as ev
from tocsin.core.contracts import SEVERITY_RANK, Severity
from tocsin.core.decide.candidate import PASS, Candidate
from tocsin.core.decide.dedup import dedup_key
from tocsin.core.decide.inhibit import NO_INHIBITIONS, Inhibitions, InhibitRule
from tocsin.core.groups import (
    DEFAULT_MAX_ALERTS,
    FINGERPRINT,
    Grouping,
    group_key,
    group_labels,
    seconds_to_us,
)
from tocsin.core.grouptarget import GroupTarget
from tocsin.core.matchers import Match, Matcher
from tocsin.core.times import Duration

if TYPE_CHECKING:
    from tocsin.core.decide.dedup import OpenAlert
    from tocsin.core.state import Alert, State


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    """A route ready to match: its selector, receivers, whether evaluation goes on
    after it matched, its grouping (``None``: not grouped, each alert notified at
    once) and its escalation steps (``core.escalation``)."""

    matcher: Matcher
    receivers: tuple[str, ...]
    goes_on: bool = True
    grouping: Grouping | None = None
    escalate: tuple[ev.EscalationStep, ...] = ()


@dataclass(frozen=True)
class RoutingTable:
    """Who is told: the routes, and the inhibit rules that hold news back (DESIGN.md
    section 12), which the decision stages and the clock both need."""

    routes: tuple[CompiledRoute, ...]
    grouped: bool = False  # some route notifies through groups
    inhibitions: Inhibitions = NO_INHIBITIONS
    escalates: bool = False  # some route has ``escalate`` steps

    @classmethod
    def compile(cls, routes: Sequence[Route], inhibit: Sequence[InhibitRule] = ()) -> RoutingTable:
        compiled = tuple(
            CompiledRoute(
                Matcher.compile(r.match, r.matchers),
                tuple(r.receivers),
                r.continue_,
                r.grouping if r.grouping.grouped else None,
                escalation.compiled(r.escalate),
            )
            for r in routes
        )
        return cls(
            compiled,
            any(c.grouping is not None for c in compiled),
            Inhibitions.compile(inhibit),
            any(c.escalate for c in compiled),
        )

    def matching(
        self, severity: str, type_: str, source: str, labels: Mapping[str, str]
    ) -> list[int]:
        """The indexes of the routes that apply, in config order: every matching one,
        up to and including the first matching one with ``continue = false``."""
        out: list[int] = []
        for index, compiled in enumerate(self.routes):
            if compiled.matcher.matches(severity, type_, source, labels):
                out.append(index)
                if not compiled.goes_on:
                    break
        return out

    def escalating(
        self, severity: str, type_: str, source: str, labels: Mapping[str, str]
    ) -> list[int]:
        """The indexes of the ungrouped routes that apply and escalate (a grouped
        route's chain starts with its group's notification, ``core.escalation``)."""
        routes = self.routes
        return [
            index
            for index in self.matching(severity, type_, source, labels)
            if routes[index].escalate and routes[index].grouping is None
        ]

    def receivers_for(
        self, severity: str, type_: str, source: str, labels: Mapping[str, str]
    ) -> list[str]:
        """Receivers of every route that applies, each once, in first-match order."""
        out: dict[str, None] = {}
        for index in self.matching(severity, type_, source, labels):
            out.update(dict.fromkeys(self.routes[index].receivers))
        return list(out)

    def targets_for(
        self, severity: str, type_: str, source: str, labels: Mapping[str, str], fingerprint: str
    ) -> tuple[list[str], list[GroupTarget]]:
        """Who is told of news of an alert: the receivers of the ungrouped routes that
        apply (each once, in first-match order), and a group per receiver of each
        grouped one."""
        receivers: dict[str, None] = {}
        groups: list[GroupTarget] = []
        for index in self.matching(severity, type_, source, labels):
            compiled = self.routes[index]
            grouping = compiled.grouping
            if grouping is None:
                receivers.update(dict.fromkeys(compiled.receivers))
                continue
            values = group_labels(
                grouping.group_by,
                type_=type_,
                source=source,
                severity=severity,
                fingerprint=fingerprint,
                labels=labels,
            )
            groups.extend(
                GroupTarget(group_key(index, receiver, values), receiver, index, values, grouping)
                for receiver in compiled.receivers
            )
        return list(receivers), groups


Coverage = Literal["always", "sometimes", "never"]

_SEVERITIES: tuple[Severity, ...] = tuple(
    sorted(get_args(Severity), key=SEVERITY_RANK.__getitem__, reverse=True)
)


def severity_coverage(table: RoutingTable) -> dict[Severity, Coverage]:
    """For each severity, most severe first, whether its events reach a receiver under
    ``table``: ``always`` (a route with receivers takes every event of it), ``sometimes``
    (only routes that also look at type, source or labels do: the others reach nobody)
    or ``never`` (no route takes any: every alert of it is unrouted)."""
    coverage: dict[Severity, Coverage] = {}
    routes = [compiled.matcher for compiled in table.routes if compiled.receivers]
    for severity in _SEVERITIES:
        if any(matcher.matches_every_of(severity) for matcher in routes):
            coverage[severity] = "always"
        elif any(matcher.matches_some_of(severity) for matcher in routes):
            coverage[severity] = "sometimes"
        else:
            coverage[severity] = "never"
    return coverage


def unreachable_severities(table: RoutingTable) -> list[Severity]:
    """The severities whose events can reach no receiver under ``table``, most severe
    first: every alert of them would be unrouted."""
    return [s for s, covered in severity_coverage(table).items() if covered == "never"]


class Route(Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """One ``[[route]]`` as written (DESIGN.md sections 8, 11-13)."""

    receivers: list[str]
    match: Match = Match()
    matchers: list[str] = []
    continue_: bool = msgspec.field(default=True, name="continue")
    group_by: list[str] = msgspec.field(default_factory=lambda: [FINGERPRINT])
    group_wait: Duration = Duration(0.0)
    group_interval: Duration = Duration(0.0)
    repeat_interval: Duration | None = None
    max_alerts: int = DEFAULT_MAX_ALERTS
    active_time_intervals: list[str] = []
    mute_time_intervals: list[str] = []
    escalate: list[escalation.Step] = []

    @property
    def grouping(self) -> Grouping:
        return Grouping(
            group_by=tuple(self.group_by),
            wait=seconds_to_us(self.group_wait),
            interval=seconds_to_us(self.group_interval),
            repeat=None if self.repeat_interval is None else seconds_to_us(self.repeat_interval),
            max_alerts=self.max_alerts,
            active_intervals=tuple(self.active_time_intervals),
            mute_intervals=tuple(self.mute_time_intervals),
        )


def route(state: State, candidate: Candidate) -> bool:
    """Tell the receivers: an escalation is recorded first (``alert.escalated``: its
    severity is now the one routed), then one ``alert.routed`` per receiver, each with
    its own notification id. Firing news that no route delivers (a new alert's, a
    reminder's, an escalation's) is counted as suppressed (``no_route``: DESIGN.md
    section 10's "suppressed = those not routed"), marked ``newly_unrouted`` when it
    finds an alert nobody was told of and not yet known to be unrouted."""
    facts = candidate.facts
    current = candidate.current
    reason = candidate.reason
    if reason == "escalated":
        assert current is not None  # only an open alert escalates
        facts.append(
            ev.AlertEscalated(
                alert_id=candidate.alert_id,
                fingerprint=candidate.event.fingerprint,
                dedup_key=candidate.dedup_key,
                bucket=candidate.bucket,
                from_severity=current.routed_severity,
                severity=candidate.event.severity,
                trace_id=candidate.trace_id,
            )
        )
    receivers = candidate.receivers
    if receivers:
        facts += [_routed(candidate, receiver) for receiver in receivers]
        if reason != "resolved" and candidate.routing.escalates:
            event = candidate.event
            facts += escalation.started_for_alert(
                state,
                candidate.routing,
                alert_id=candidate.alert_id,
                severity=event.severity,
                type_=event.type,
                source=event.source,
                labels=event.labels,
                at=candidate.received_at,
            )
    groups = candidate.groups(state)
    for target in groups:
        if target.grouping is not None and target.key not in state.groups:
            facts.append(_opened(target, candidate.trace_id, candidate.received_at))
        facts.append(_grouped(candidate, target))
    if not (receivers or groups) and reason != "resolved":
        newly = _told_nobody_yet(state, candidate.alert_id)
        facts.append(candidate.suppressed("no_route", newly_unrouted=newly))
    return PASS


def _opened(target: GroupTarget, trace_id: str | None, at: int) -> ev.GroupOpened:
    grouping = target.grouping
    assert grouping is not None
    return ev.GroupOpened(
        group_key=target.key,
        receiver=target.receiver,
        route=target.route,
        group_labels=target.labels,
        group_wait=grouping.wait,
        group_interval=grouping.interval,
        repeat_interval=grouping.repeat,
        max_alerts=grouping.max_alerts,
        active_time_intervals=grouping.active_intervals,
        mute_time_intervals=grouping.mute_intervals,
        trace_id=trace_id,
        opened_at=at,
    )


def _grouped(candidate: Candidate, target: GroupTarget) -> ev.AlertGrouped:
    event = candidate.event
    return ev.AlertGrouped(
        alert_id=candidate.alert_id,
        fingerprint=event.fingerprint,
        dedup_key=candidate.dedup_key,
        bucket=candidate.bucket,
        reason=candidate.reason,
        severity=event.severity,
        group_key=target.key,
        receiver=target.receiver,
        trace_id=candidate.trace_id,
    )


def told_of_resolve(
    state: State,
    current: OpenAlert,
    *,
    fingerprint: str,
    severity: Severity,
    new_id: Callable[[], str],
    trace_id: str | None = None,
) -> list[ev.Event]:
    """Who hears that an open alert resolved, when no inbound event says so (the clock):
    every receiver and group told of it, whatever the routes say now (DESIGN.md
    section 4), as the route stage does for a resolved event."""
    key = dedup_key(fingerprint, current.bucket)
    facts: list[ev.Event] = [
        ev.AlertRouted(
            alert_id=current.alert_id,
            fingerprint=fingerprint,
            dedup_key=key,
            bucket=current.bucket,
            reason="resolved",
            severity=severity,
            receiver=receiver,
            notification_id=new_id(),
            trace_id=trace_id,
        )
        for receiver in current.receivers
    ]
    facts.extend(
        ev.AlertGrouped(
            alert_id=current.alert_id,
            fingerprint=fingerprint,
            dedup_key=key,
            bucket=current.bucket,
            reason="resolved",
            severity=severity,
            group_key=joined,
            receiver=group.receiver,
            trace_id=trace_id,
        )
        for joined in current.groups
        if (group := state.groups.get(joined)) is not None
    )
    return facts


def told_after_silence(
    state: State,
    routing: RoutingTable,
    current: OpenAlert,
    alert: Alert,
    *,
    new_id: Callable[[], str],
    at: int,
    opened: set[str] | None = None,
) -> list[ev.Event]:
    """The news a silence or an inhibition held back, now that it ended (the clock;
    also a flapping alert's once it settled): the alert's routes as the config says
    now, reason ``firing`` (DESIGN.md sections 12, 13), and the escalation chains that
    starts (timed from ``at``). ``opened``: the groups opened by facts decided with
    these and not folded yet (one ``group.opened`` each, however many released alerts
    join it)."""
    key = dedup_key(alert.fingerprint, current.bucket)
    receivers, groups = routing.targets_for(
        alert.severity, alert.type, alert.source, alert.labels, alert.fingerprint
    )
    facts: list[ev.Event] = [
        ev.AlertRouted(
            alert_id=alert.id,
            fingerprint=alert.fingerprint,
            dedup_key=key,
            bucket=current.bucket,
            reason="firing",
            severity=alert.severity,
            receiver=receiver,
            notification_id=new_id(),
        )
        for receiver in receivers
    ]
    if receivers:
        facts += escalation.started_for_alert(
            state,
            routing,
            alert_id=alert.id,
            severity=alert.severity,
            type_=alert.type,
            source=alert.source,
            labels=alert.labels,
            at=at,
        )
    opened = set() if opened is None else opened
    for target in groups:
        if target.grouping is not None and not (target.key in state.groups or target.key in opened):
            facts.append(_opened(target, None, at))
            opened.add(target.key)
        facts.append(
            ev.AlertGrouped(
                alert_id=alert.id,
                fingerprint=alert.fingerprint,
                dedup_key=key,
                bucket=current.bucket,
                reason="firing",
                severity=alert.severity,
                group_key=target.key,
                receiver=target.receiver,
            )
        )
    return facts


def _told_nobody_yet(state: State, alert_id: str) -> bool:
    """Whether no receiver was told of the alert and it is not known to be unrouted:
    a new alert (not folded yet), or an open one that was only ever silenced."""
    alert = state.alerts.get(alert_id)
    return alert is None or not (alert.receivers or alert.groups or alert.unrouted)


def _routed(candidate: Candidate, receiver: str) -> ev.AlertRouted:
    event = candidate.event
    return ev.AlertRouted(
        alert_id=candidate.alert_id,
        fingerprint=event.fingerprint,
        dedup_key=candidate.dedup_key,
        bucket=candidate.bucket,
        reason=candidate.reason,
        severity=event.severity,
        receiver=receiver,
        notification_id=candidate.new_id(),
        trace_id=candidate.trace_id,
    )
