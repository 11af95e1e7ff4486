"""Escalation chains (pure): when a firing notification nobody acknowledges is told to
more people (DESIGN.md section 13).

A route's ``escalate = [{ after, receivers }, ...]`` starts a chain with the route's
first firing notification of an alert (an ungrouped route: ``alert.routed``) or of a
group (a grouped route: ``group.notified``; one chain for the route and its group
values, whichever receiver's group told first). The chain is a fact
(``escalation.started``, with the steps as of then) and a due time in the projection
(``state.escalations``). When a step falls due and the alert (every alert of the
group) is neither acknowledged nor resolved, the clock fires it: ``escalation.fired``,
then the step's receivers are told with reason ``unacknowledged``. Acknowledging or
resolving ends the chain: the fold lets go of it (``end_of_alert``, ``recheck``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING

from msgspec import Struct

from tocsin.core import events as ev
from tocsin.core import groups
from tocsin.core.decide.dedup import dedup_key
from tocsin.core.state import Chain, Group, State
from tocsin.core.times import Duration

if TYPE_CHECKING:
    from tocsin.core.decide.route import RoutingTable

PREFIX = "escalate:"
ANY_RECEIVER = "*"  # never a receiver's name (``config.RECEIVER_NAME``)


class Step(Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """One ``escalate`` entry as written: after how long, who is told."""

    after: Duration
    receivers: list[str]


def compiled(steps: Collection[Step]) -> tuple[ev.EscalationStep, ...]:
    """A route's steps as the log keeps them (microseconds)."""
    return tuple(
        ev.EscalationStep(after=round(step.after * 1_000_000), receivers=tuple(step.receivers))
        for step in steps
    )


def check(steps: list[Step], receivers: Collection[str]) -> tuple[str, str] | None:
    """What is wrong with a route's ``escalate`` (``None``: nothing), as ``(key under
    escalate, message)``: every step names known receivers, after a positive time
    later than the step before."""
    before: float | None = None
    for index, step in enumerate(steps):
        if step.after <= 0:
            return f"[{index}].after", "must be positive"
        if before is not None and step.after <= before:
            return f"[{index}].after", f"must be later than the step before ({before:g}s)"
        before = step.after
        if not step.receivers:
            return f"[{index}].receivers", "name at least one receiver"
        for name in step.receivers:
            if name not in receivers:
                return f"[{index}].receivers", f"unknown receiver {name!r}"
    return None


def alert_chain(alert_id: str, route: int) -> str:
    """The key of an ungrouped route's chain for one alert."""
    return f"{PREFIX}route[{route}]/alert/{alert_id}"


def group_chain(route: int, values: Mapping[str, str]) -> str:
    """The key of a grouped route's chain for one set of group values: the same for
    the groups of every receiver of the route, so its steps fire once."""
    return PREFIX + groups.group_key(route, ANY_RECEIVER, values)


# --- deciding: a chain starts -------------------------------------------------------


def started_for_alert(
    state: State,
    routing: RoutingTable,
    *,
    alert_id: str,
    severity: str,
    type_: str,
    source: str,
    labels: Mapping[str, str],
    at: int,
) -> list[ev.Event]:
    """The chains a firing notification of an alert starts: one per ungrouped route
    with ``escalate`` that applies and has none for it yet. None for an acknowledged
    alert (an ack ends chains; news of it does not start one again)."""
    if not routing.escalates:
        return []
    alert = state.alerts.get(alert_id)
    if alert is not None and alert.acked_by is not None:
        return []
    out: list[ev.Event] = []
    for index in routing.escalating(severity, type_, source, labels):
        key = alert_chain(alert_id, index)
        if key not in state.escalations:
            out.append(
                ev.EscalationStarted(
                    chain=key,
                    route=index,
                    steps=routing.routes[index].escalate,
                    started_at=at,
                    alert_id=alert_id,
                )
            )
    return out


def started_for_group(
    state: State, routing: RoutingTable, group: Group, at: int
) -> ev.EscalationStarted | None:
    """The chain a group's firing notification starts (or joins, for another
    receiver's group of the same route and values), when its route escalates and
    some alert of it is neither acknowledged nor resolved."""
    if not 0 <= group.route < len(routing.routes):
        return None
    steps = routing.routes[group.route].escalate
    if not steps or not _unacknowledged(group):
        return None
    key = group_chain(group.route, group.labels)
    chain = state.escalations.get(key)
    if chain is not None and group.key in chain.group_keys:
        return None
    return ev.EscalationStarted(
        chain=key,
        route=group.route,
        steps=steps if chain is None else chain.steps,
        started_at=at if chain is None else chain.started_at,
        group_key=group.key,
    )


def _unacknowledged(group: Group) -> list[str]:
    return [m.alert_id for m in group.members.values() if not m.resolved and not m.acked]


# --- the clock: a step falls due -----------------------------------------------------


def fired(
    state: State, now: int, new_id: Callable[[], str], config_version: str | None = None
) -> list[ev.Event]:
    """Every step due at ``now``: ``escalation.fired``, then its receivers told, reason
    ``unacknowledged`` (an ungrouped route: ``alert.routed`` of the alert; a grouped
    one: ``group.notified`` listing its group)."""
    facts: list[ev.Event] = []
    for chain in state.escalations.values():
        due = chain.due_at
        if due is None or due > now:
            continue
        step = chain.steps[chain.next_step]
        if chain.alert_id is not None:
            facts += _alert_step(state, chain, step, due, now, new_id)
        else:
            facts += _group_step(state, chain, step, due, now, new_id, config_version)
    return facts


def _alert_step(
    state: State,
    chain: Chain,
    step: ev.EscalationStep,
    due: int,
    now: int,
    new_id: Callable[[], str],
) -> list[ev.Event]:
    assert chain.alert_id is not None
    alert = state.alerts.get(chain.alert_id)
    current = None if alert is None else state.open_by_fingerprint.get(alert.fingerprint)
    if alert is None or current is None or current.alert_id != alert.id or current.acked:
        return []  # the fold ends such a chain; nothing to tell
    facts: list[ev.Event] = [
        ev.EscalationFired(
            chain=chain.key,
            step=chain.next_step,
            receivers=list(step.receivers),
            alert_ids=[alert.id],
            due_at=due,
            fired_at=now,
            alert_id=alert.id,
        )
    ]
    facts.extend(
        ev.AlertRouted(
            alert_id=alert.id,
            fingerprint=alert.fingerprint,
            dedup_key=dedup_key(alert.fingerprint, current.bucket),
            bucket=current.bucket,
            reason="unacknowledged",
            severity=alert.severity,
            receiver=receiver,
            notification_id=new_id(),
            trace_id=alert.trace_id,
        )
        for receiver in step.receivers
    )
    return facts


def _group_step(
    state: State,
    chain: Chain,
    step: ev.EscalationStep,
    due: int,
    now: int,
    new_id: Callable[[], str],
    config_version: str | None,
) -> list[ev.Event]:
    live = [g for key in chain.group_keys if (g := state.groups.get(key)) is not None]
    waiting = list(dict.fromkeys(a for g in live for a in _unacknowledged(g)))
    if not waiting:
        return []
    group = live[0]
    told = groups.told(state, group)
    if told is None:
        return []
    facts: list[ev.Event] = [
        ev.EscalationFired(
            chain=chain.key,
            step=chain.next_step,
            receivers=list(step.receivers),
            alert_ids=waiting,
            due_at=due,
            fired_at=now,
            group_key=group.key,
        )
    ]
    facts.extend(
        ev.GroupNotified(
            group_key=group.key,
            receiver=receiver,
            notification_id=new_id(),
            reason="unacknowledged",
            alert_ids=told.alert_ids,
            resolved_alert_ids=told.resolved_alert_ids,
            truncated=told.truncated,
            group_labels=group.labels,
            status=told.status,
            alerts=told.alerts,
            due_at=due,
            fired_at=now,
            config_version=config_version,
        )
        for receiver in step.receivers
    )
    return facts


# --- the fold's side -----------------------------------------------------------------


def start(state: State, e: ev.EscalationStarted) -> None:
    """A chain starts, or another receiver's group joins a group chain."""
    chain = state.escalations.get(e.chain)
    if chain is None:
        chain = state.escalations[e.chain] = Chain(
            key=e.chain,
            route=e.route,
            steps=e.steps,
            started_at=e.started_at,
            alert_id=e.alert_id,
            due_at=e.started_at + e.steps[0].after if e.steps else None,
        )
    owner = e.alert_id if e.alert_id is not None else e.group_key
    if owner is None:
        return
    if e.group_key is not None and e.group_key not in chain.group_keys:
        chain.group_keys.append(e.group_key)
    keys = state.chains_of.setdefault(owner, [])
    if e.chain not in keys:
        keys.append(e.chain)


def advance(state: State, e: ev.EscalationFired) -> None:
    """A step fired: the next one is due ``after`` it from the start, or none is."""
    chain = state.escalations.get(e.chain)
    if chain is None:
        return
    chain.next_step = e.step + 1
    steps = chain.steps
    chain.due_at = (
        chain.started_at + steps[chain.next_step].after if chain.next_step < len(steps) else None
    )


def end_of_alert(state: State, alert_id: str) -> None:
    """The alert was acknowledged or resolved: its own chains end."""
    for key in state.chains_of.pop(alert_id, ()):
        state.escalations.pop(key, None)


def recheck(state: State, group_key: str) -> None:
    """A group changed (an alert joined, was acknowledged, resolved; the group
    closed): its chains end once no alert of their groups is unacknowledged and
    firing."""
    keys = state.chains_of.get(group_key)
    if not keys:
        return
    for key in list(keys):
        chain = state.escalations.get(key)
        if chain is None or not any(
            _unacknowledged(group)
            for k in chain.group_keys
            if (group := state.groups.get(k)) is not None
        ):
            _end(state, key)


def _end(state: State, key: str) -> None:
    chain = state.escalations.pop(key, None)
    if chain is None:
        return
    for owner in chain.group_keys:
        keys = state.chains_of.get(owner)
        if keys is not None and key in keys:
            keys.remove(key)
            if not keys:
                del state.chains_of[owner]
