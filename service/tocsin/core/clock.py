"""The clock (pure): what falls due at an instant, and the facts that causes
(DESIGN.md section 11).

Timers are due times kept in the projection (each group's ``due_at``, alerts' and
silences' ends, heartbeats' deadlines, folded from the log). The clock loop in the
router's process (``tocsin.pipeline.clock``) asks ``next_due`` when to wake, and at
that instant ``tick`` decides the facts, which go through the single writer like any
other; each carries the ``due_at`` it was for and the time it fired, so replay folds
them and never decides them again. A timer that fell due while tocsin was stopped is
simply due at start.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tocsin.core import events as ev
from tocsin.core import groups, heartbeats
from tocsin.core.decide.route import RoutingTable, told_after_silence, told_of_resolve
from tocsin.core.decide.silences import covering
from tocsin.core.state import Group, State
from tocsin.core.timeintervals import TimeIntervals

RECHECK_US = 24 * 3_600 * 1_000_000
"""When a mute does not end within the time intervals' horizon: look again a day on."""


def next_due(state: State) -> int | None:
    """The earliest instant at which ``tick`` has something to decide."""
    due = [g.due_at for g in state.groups.values() if g.due_at is not None]
    due.extend(timer.due for timer in state.auto_resolve.values())
    due.extend(s.ends for s in state.silences.values() if not s.expired)
    heartbeat = heartbeats.next_due(state)
    if heartbeat is not None:
        due.append(heartbeat)
    return min(due) if due else None


def tick(
    state: State,
    now: int,
    *,
    new_id: Callable[[], str],
    intervals: TimeIntervals,
    routing: RoutingTable,
    config_version: str | None = None,
) -> list[ev.Event]:
    """The facts of every timer due at ``now``: an alert that resolves by itself (and
    who hears of it), a group's notification, or its deferral while its route's time
    intervals mute it, or a heartbeat's missed deadline (``heartbeats.missed``). Resolves
    come first, so a group due at the same instant lists them as resolved; a missed
    heartbeat's alert comes before the groups, so a group due now lists it."""
    facts = _auto_resolved(state, now, new_id) + _silences_ended(state, now, routing, new_id)
    if facts:
        return facts  # folded first: the groups' notifications see them next tick
    facts = heartbeats.missed(state, now, routing=routing, new_id=new_id)
    if facts:
        return facts
    for group in state.groups.values():
        due = group.due_at
        if due is None or due > now:
            continue
        until = muted_until(group, intervals, now)
        if until is not None:
            facts.append(
                ev.GroupDeferred(
                    group_key=group.key,
                    receiver=group.receiver,
                    until=until,
                    due_at=due,
                    fired_at=now,
                )
            )
            continue
        told = groups.told(state, group)
        if told is None:
            continue
        facts.append(
            ev.GroupNotified(
                group_key=group.key,
                receiver=group.receiver,
                notification_id=new_id(),
                reason=told.reason,
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
        )
    return facts


def _auto_resolved(state: State, now: int, new_id: Callable[[], str]) -> list[ev.Event]:
    """Alerts whose ``ends_at`` passed, or that saw no event for ``resolve_timeout``:
    resolved by the clock (``alert.resolved`` with ``by``), their resolve routed."""
    facts: list[ev.Event] = []
    for fingerprint, timer in state.auto_resolve.items():
        if timer.due > now:
            continue
        current = state.open_by_fingerprint.get(fingerprint)
        alert = state.alerts.get(timer.alert_id)
        if current is None or current.alert_id != timer.alert_id or alert is None:
            continue
        facts.append(
            ev.AlertResolved(
                alert_id=timer.alert_id,
                fingerprint=fingerprint,
                resolved_at=timer.due,
                by=timer.by,
                due_at=timer.due,
                fired_at=now,
            )
        )
        facts += told_of_resolve(
            state, current, fingerprint=fingerprint, severity=alert.severity, new_id=new_id
        )
    return facts


def _silences_ended(
    state: State, now: int, routing: RoutingTable, new_id: Callable[[], str]
) -> list[ev.Event]:
    """Silences that ended (expired or deleted): the firing alerts each held back are
    routed now, unless another silence still covers them (``silence.expired``)."""
    facts: list[ev.Event] = []
    for silence in state.silences.values():
        if silence.expired or silence.ends > now:
            continue
        released: list[ev.Event] = []
        ids: list[str] = []
        for current in state.open_by_fingerprint.values():
            alert = state.alerts.get(current.alert_id)
            if current.silenced_by != silence.id or alert is None or current.acked:
                continue
            others = (s for s in state.silences.values() if s.id != silence.id)
            if covering(
                others,
                now,
                severity=alert.severity,
                type_=alert.type,
                source=alert.source,
                labels=alert.labels,
            ):
                continue
            ids.append(alert.id)
            released += told_after_silence(state, routing, current, alert, new_id=new_id)
        facts.append(
            ev.SilenceExpired(
                silence_id=silence.id,
                at=silence.ends,
                alert_ids=ids,
                due_at=silence.ends,
                fired_at=now,
            )
        )
        facts += released
    return facts


def muted_until(group: Group, intervals: TimeIntervals, now: int) -> int | None:
    """When the mute holding ``group``'s notification at ``now`` ends (``None``: not
    muted): inside one of its ``mute_time_intervals``, or outside every one of its
    ``active_time_intervals``. Names the config no longer has are left out."""
    mute = _known(group.mute_intervals, intervals)
    if mute and intervals.covers(mute, now):
        return intervals.next_change(mute, now) or now + RECHECK_US
    active = _known(group.active_intervals, intervals)
    if active and not intervals.covers(active, now):
        return intervals.next_change(active, now) or now + RECHECK_US
    return None


def _known(names: Sequence[str], intervals: TimeIntervals) -> list[str]:
    return [name for name in names if name in intervals.named]
