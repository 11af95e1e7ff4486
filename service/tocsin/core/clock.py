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

from tocsin.core import escalation, groups, heartbeats
from tocsin.core import events as ev
from tocsin.core.decide.dedup import OpenAlert, dedup_key
from tocsin.core.decide.flapping import settled
from tocsin.core.decide.inhibit import Inhibitions, still_inhibited
from tocsin.core.decide.route import RoutingTable, told_after_silence, told_of_resolve
from tocsin.core.decide.silences import covering
from tocsin.core.state import Alert, Group, State
from tocsin.core.timeintervals import TimeIntervals

RECHECK_US = 24 * 3_600 * 1_000_000
"""When a mute does not end within the time intervals' horizon: look again a day on."""

FLUSH_ALERTS = 2_000
"""About how many alerts the group notifications of one tick list, for the clock loop
(``tick``'s ``max_listed``): the groups due beyond it are the next tick's, decided at
once after this one's facts are committed and their work items published. So the
receivers get the first groups while the rest are built, on the other core, instead
of every body waiting for the last (W5: 50 groups of ~200 alerts due together, issue
#20)."""


def next_due(state: State) -> int | None:
    """The earliest instant at which ``tick`` has something to decide."""
    due = [g.due_at for g in state.groups.values() if g.due_at is not None]
    due.extend(timer.due for timer in state.auto_resolve.values())
    due.extend(s.ends for s in state.silences.values() if not s.expired)
    due.extend(ended.at for ended in state.inhibit_ended.values())
    due.extend(c.due_at for c in state.escalations.values() if c.due_at is not None)
    due.extend(f.due_at for f in state.flaps.values() if f.due_at is not None)
    heartbeat = heartbeats.next_due(state)
    if heartbeat is not None:
        due.append(heartbeat)
    return min(due) if due else None


def wakes_sooner(due: int | None, planned: int) -> bool:
    """Whether a timer due at ``due`` (``next_due`` after a commit) needs the clock
    before ``planned``, the instant it already means to look: only then is a commit
    worth waking it for (at a steady rate every event is a commit of its own)."""
    return due is not None and due < planned


def goes_first(due: int | None, now: int) -> bool:
    """Whether the clock's timers are served before the router decides its next inbound
    batch: a timer due at ``due`` (the clock's last ``next_due``) has fallen due by
    ``now``. In a storm the router decides one batch after another; a group's flush
    waiting behind them (for the loop, the ledger's lock, the commits queued before
    it) was most of W5's delay (issue #20), so a due timer takes the next turn."""
    return due is not None and due <= now


LEAD_US = 100_000
"""How long before a timer falls due the router's inbound batches stop every
``processor.CHUNK`` messages (``near_due``), each a commit of its own, so that when it
falls due the commits queued ahead of its facts are a chunk's or two, not a storm's
batch of 1,000: its 3,000 rows took 60-85 ms to commit on a busy machine, and W5's
first tick of notifications waited for them (issue #20). About the time such a batch
takes to decide and commit; what it costs is smaller commits in that window (W5: ~10%
fewer alerts committed by the time the groups fall due)."""


def near_due(due: int | None, now: int, lead: int = LEAD_US) -> bool:
    """Whether a timer due at ``due`` falls due within ``lead`` of ``now`` (or has)."""
    return due is not None and due - lead <= now


def tick(
    state: State,
    now: int,
    *,
    new_id: Callable[[], str],
    intervals: TimeIntervals,
    routing: RoutingTable,
    config_version: str | None = None,
    max_listed: int | None = None,
) -> list[ev.Event]:
    """The facts of every timer due at ``now``: an alert that resolves by itself (and
    who hears of it), alerts a silence or an inhibitor held back (released), a flapping
    alert that settled, a heartbeat's missed deadline (``heartbeats.missed``), a group's
    notification, or its deferral while its route's time intervals mute it, an
    escalation step. Resolves and releases come first, so a group due at the same
    instant lists them, and an escalation due then is ended by them; a missed
    heartbeat's alert comes before the groups, so a group due now lists it. A group's
    alerts that an inhibit rule holds back now and that it never told of leave it first
    (``alert.inhibited``), as they would had an event of theirs come in. With
    ``max_listed``, the groups' notifications stop once they list that many alerts (at
    least one is decided): the groups left are still due, for the next tick."""
    opened: set[str] = set()  # groups opened by this tick's facts, not folded yet
    facts = _auto_resolved(state, now, new_id)
    facts += _silences_ended(state, now, routing, new_id, opened)
    facts += _inhibitions_ended(state, now, routing, new_id, opened)
    facts += settled(state, now, routing, new_id)
    if facts:
        return facts  # folded first: the groups' notifications see them next tick
    facts = heartbeats.missed(state, now, routing=routing, new_id=new_id)
    if facts:
        return facts
    due_groups = [g for g in state.groups.values() if g.due_at is not None and g.due_at <= now]
    facts = _inhibited_members(state, due_groups, routing.inhibitions, now)
    if facts:
        return facts  # folded first: they leave their groups before the notification
    listed = 0
    for group in due_groups:
        if max_listed is not None and listed >= max_listed:
            break  # still due: the next tick's
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
        listed += len(told.alert_ids)
        if told.status == "firing" and routing.escalates:
            started = escalation.started_for_group(state, routing, group, now)
            if started is not None:
                facts.append(started)
    return facts + escalation.fired(state, now, new_id, config_version)


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
    state: State,
    now: int,
    routing: RoutingTable,
    new_id: Callable[[], str],
    opened: set[str],
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
            held = _inhibited(state, current, alert, routing.inhibitions, now)
            if held is not None:
                released.append(held)  # an inhibitor holds it now: it waits for that
                continue
            ids.append(alert.id)
            released += told_after_silence(
                state, routing, current, alert, new_id=new_id, at=now, opened=opened
            )
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


def _inhibitions_ended(
    state: State,
    now: int,
    routing: RoutingTable,
    new_id: Callable[[], str],
    opened: set[str],
) -> list[ev.Event]:
    """Alerts that stopped inhibiting (``State.inhibit_ended``): each alert waiting on
    a slot they left and left with no inhibitor at all is released
    (``inhibit.released``); those still firing and not acknowledged are routed now,
    reason ``firing``, unless a silence holds them now (then it does)."""
    facts: list[ev.Event] = []
    seen: set[str] = set()
    for source_id, ended in state.inhibit_ended.items():
        ids: list[str] = []
        released: list[ev.Event] = []
        for rule, values in ended.slots.items():
            for alert_id in state.inhibit_waiting.get(rule, {}).get(values, {}):
                alert = state.alerts.get(alert_id)
                current = (
                    None if alert is None else state.open_by_fingerprint.get(alert.fingerprint)
                )
                if alert is None or current is None or current.alert_id != alert_id:
                    continue
                if alert_id in seen or still_inhibited(state, alert_id, current.waits_on):
                    continue
                seen.add(alert_id)
                ids.append(alert_id)
                if current.acked:
                    continue
                silence = covering(
                    state.silences.values(),
                    now,
                    severity=alert.severity,
                    type_=alert.type,
                    source=alert.source,
                    labels=alert.labels,
                )
                if silence is not None:
                    released.append(
                        ev.AlertSilenced(
                            alert_id=alert_id,
                            fingerprint=alert.fingerprint,
                            dedup_key=dedup_key(alert.fingerprint, current.bucket),
                            silence_id=silence.id,
                        )
                    )
                    continue
                released += told_after_silence(
                    state, routing, current, alert, new_id=new_id, at=now, opened=opened
                )
        facts.append(
            ev.InhibitReleased(
                alert_id=source_id,
                at=ended.at,
                alert_ids=ids,
                due_at=ended.at,
                fired_at=now,
            )
        )
        facts += released
    return facts


def _inhibited(
    state: State, current: OpenAlert, alert: Alert, rules: Inhibitions, now: int
) -> ev.AlertInhibited | None:
    """``alert.inhibited`` for an open alert an inhibit rule holds back now (the
    clock's check, with the alert's fields as of its last event), else ``None``."""
    if not rules.rules:
        return None
    found = rules.inhibition(
        state,
        alert.id,
        severity=alert.severity,
        type_=alert.type,
        source=alert.source,
        labels=alert.labels,
    )
    if found is None:
        return None
    return ev.AlertInhibited(
        alert_id=alert.id,
        fingerprint=alert.fingerprint,
        dedup_key=dedup_key(alert.fingerprint, current.bucket),
        rule=found.rule,
        inhibited_by=found.inhibited_by,
        waits_on=found.waits_on,
        fired_at=now,
    )


def _inhibited_members(
    state: State, due: Sequence[Group], rules: Inhibitions, now: int
) -> list[ev.Event]:
    """``alert.inhibited`` for each alert of a due group that nobody in it was told of
    yet (news ``firing``) and that an inhibit rule holds back now: it leaves its
    groups before their notifications are decided. Once per alert."""
    if not rules.rules:
        return []
    facts: list[ev.Event] = []
    seen: set[str] = set()
    for member in (m for group in due for m in group.members.values()):
        if member.news != "firing" or member.resolved or member.alert_id in seen:
            continue
        seen.add(member.alert_id)
        alert = state.alerts.get(member.alert_id)
        current = None if alert is None else state.open_by_fingerprint.get(alert.fingerprint)
        if alert is None or current is None or current.alert_id != alert.id:
            continue
        held = _inhibited(state, current, alert, rules, now)
        if held is not None:
            facts.append(held)
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
