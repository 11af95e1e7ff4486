"""All state is a fold over the log: ``fold(state, event)`` (DESIGN.md invariant 1).

``fold`` mutates the state it is given, for speed, but is pure in every other sense: no
I/O, no clock, no randomness; the same events in the same order give an equal state.
``rebuild`` folds from nothing; a test holds live state equal to it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Any, assert_never

from tocsin.core import escalation, groups, heartbeats
from tocsin.core import events as ev
from tocsin.core.contracts import SEVERITY_RANK
from tocsin.core.decide import flapping
from tocsin.core.decide.dedup import NO_SLOTS, OpenAlert, rebucket
from tocsin.core.kinds import by_kind, handled_by
from tocsin.core.policy.order import OPEN_FOR_ORDER, open_key
from tocsin.core.retention import LET_GO, next_sweep_after, sweep
from tocsin.core.state import (
    KEEP_RESOLVED_US,
    SETTLED,
    Alert,
    AlertAsRouted,
    AutoResolve,
    Delivery,
    DeliveryStatus,
    Group,
    InhibitEnd,
    LastAlert,
    ReceiverStats,
    Silence,
    State,
)
from tocsin.core.subjects import HEARTBEAT_PREFIX, STREAM_OUT

# One object for each of the values every alert, delivery and open fingerprint of a storm
# repeats (issue #20's RSS target): an alert's type and source, a delivery's receiver and
# channel (strings, ``sys.intern``), the tuples of receivers an alert was told through,
# and an empty ``details``. A value is the same whichever object holds it; ~9 MiB per
# 21,000 alerts of a rebuilt projection, ~5 MiB of a live one (``docs/performance.md``).
NO_DETAILS: dict[str, Any] = {}
"""Every alert without details shares this one: never changed in place (the fold
replaces an alert's ``details``, never updates them; see ``AlertAsRouted``)."""

SHARED_TUPLES = 256  # distinct receiver tuples kept; past it, a tuple is its own
_tuples: dict[tuple[str, ...], tuple[str, ...]] = {}
_one = sys.intern


_last_bucket = [0]  # the bucket of the last alert opened or told: one object for the next


def _bucket(bucket: int) -> int:
    """``bucket``, as the same int object as the last one folded when they are equal:
    a storm's alerts open in one or two dedup buckets, and each fact's number was an
    object of its own per open fingerprint (~0.6 MiB per 21,000 alerts, issue #20)."""
    last = _last_bucket[0]  # read once: a fold in another thread may change it
    if bucket == last:
        return last
    _last_bucket[0] = bucket
    return bucket


def _held(held: str, given: str) -> str:
    """``held``, the projection's object, when it equals ``given``: an alert's id and
    fingerprint are one object each in the alert, its open fingerprint and its
    deliveries, not one per fact that names them (every fact decoded from the log is
    new strings: ~6 MiB per 21,000 alerts of a rebuilt projection, issue #20)."""
    return held if held == given else given


def _plus(names: tuple[str, ...], name: str) -> tuple[str, ...]:
    """``names`` and then ``name``: the same tuple object for the same names, while
    there are at most ``SHARED_TUPLES`` of them (a config has a few receivers)."""
    joined = (*names, name)
    shared = _tuples.get(joined)
    if shared is not None:
        return shared
    if len(_tuples) < SHARED_TUPLES:
        _tuples[joined] = joined
    return joined


def fold(state: State, seq: int, ts: int, event: ev.Event) -> None:
    """Apply one logged event (its ``seq`` and append time ``ts``) to ``state``; the
    first of a new step of ``ts`` first lets go of what is over (``core.retention``)."""
    state.last_seq = seq
    state.last_ts = ts
    if ts >= state.next_sweep:
        sweep(state)
    handler = _HANDLERS[type(event)]
    if handler is not None:
        handler(event, state, seq)


def fold_stored(state: State, rows: Iterable[tuple[int, int, bytes]]) -> None:
    """``fold`` for rows as the log stores them, ``(seq, ts, event bytes)``: the loop a
    start spends its time in, with the decode and the dispatch of ``fold`` inlined
    (two calls fewer per row is ~8% of a rebuild)."""
    decode = ev.decoder.decode
    handlers = _HANDLERS
    for seq, ts, data in rows:
        event = decode(data)
        state.last_seq = seq
        state.last_ts = ts
        if ts >= state.next_sweep:
            sweep(state)
        handler = handlers[type(event)]
        if handler is not None:
            handler(event, state, seq)


def rebuild(rows: Iterable[tuple[int, int, ev.Event]]) -> State:
    """The state after folding ``(seq, ts, event)`` rows from an empty state."""
    state = State()
    for seq, ts, event in rows:
        fold(state, seq, ts, event)
    return state


def fold_alert(alert_id: str, rows: Iterable[tuple[int, int, bytes]]) -> Alert | None:
    """One alert as the full fold had it before letting it go, from its own rows as the
    log stores them (``(seq, ts, event bytes)``, every row whose ``alert_id`` it is):
    its fields depend on those rows alone. ``None`` when they do not hold its opening
    (none at all, or the start of its history was compacted into an archive): its
    ``alert.opened``, or the ``alert.moved`` that brought it into a repartitioned log."""
    state = State(keep_everything=True)
    opened = False
    for seq, ts, data in rows:
        event = ev.decoder.decode(data)
        opened = opened or isinstance(event, ev.AlertOpened | ev.AlertMoved)
        fold(state, seq, ts, event)
    return state.alerts.get(alert_id) if opened else None


def _set_status(state: State, delivery: Delivery, status: DeliveryStatus) -> None:
    queue = state.queue
    queue[delivery.status] = queue.get(delivery.status, 0) - 1
    queue[status] = queue.get(status, 0) + 1
    was_open = delivery.status in OPEN_FOR_ORDER
    if was_open != (status in OPEN_FOR_ORDER):
        if not was_open and not delivery.order_key:  # settled for good, then not after all
            delivery.order_key = _order_key(state, delivery)
        _count_open(state, delivery, -1 if was_open else 1)
    delivery.status = status
    if status in LET_GO:
        # never sent again: its order key counts for nothing, and a snapshot's decode
        # would give each settled delivery a string of its own (~22 MiB a 1M-event start)
        delivery.order_key = ""


def _order_key(state: State, delivery: Delivery) -> str:
    """What a delivery's notifications are ordered by, from its group or its alert."""
    alert = state.alerts.get(delivery.alert_id)
    return delivery.group_key or (alert.fingerprint if alert else "")


def recount_open(state: State) -> None:
    """``State.order_open`` made anew from the deliveries (each order key filled in
    where a projection of an older version left it empty, and emptied where the fold
    would have: once settled for good): for a projection that did not come from this
    version's fold."""
    state.order_open = {}
    for delivery in state.deliveries.values():
        if delivery.status in LET_GO:
            delivery.order_key = ""
        elif not delivery.order_key:
            delivery.order_key = _order_key(state, delivery)
        if delivery.status in OPEN_FOR_ORDER:
            _count_open(state, delivery, 1)


def _count_open(state: State, delivery: Delivery, change: int) -> None:
    """``State.order_open`` follows the notifications that may still be sent."""
    key = open_key(delivery.receiver, delivery.order_key)
    count = state.order_open.get(key, 0) + change
    if count > 0:
        state.order_open[key] = count
    else:
        state.order_open.pop(key, None)


def _receiver_stats(state: State, receiver: str) -> ReceiverStats:
    by_receiver = state.hour().by_receiver
    stats = by_receiver.get(receiver)
    if stats is None:
        stats = by_receiver[receiver] = ReceiverStats()
    return stats


def _received(e: ev.AlertReceived, state: State, seq: int) -> None:
    if e.event_id is not None:  # an idempotency key for 24 h (decide/idempotency.py)
        state.received_ids.remember(e.event_id, e.received_at, state.last_ts)
    state.counters.received += 1
    firing = e.status == "firing"
    if firing:
        hour = state.hour()
        by_severity, by_type = hour.by_severity, hour.by_type
        by_severity[e.severity] = by_severity.get(e.severity, 0) + 1
        by_type[e.type] = by_type.get(e.type, 0) + 1
        if e.alert_id is not None:
            state.last_by_severity[e.severity] = LastAlert(
                alert_id=e.alert_id, summary=e.summary, ts=state.last_ts
            )
    alert_id = e.alert_id
    if alert_id is None:
        return
    if firing and (e.ends_at is not None or _times_out(state, e)):
        _time_auto_resolve(state, e)
    elif firing and state.auto_resolve:  # a later event without ends_at drops it
        state.auto_resolve.pop(e.fingerprint, None)
    alert = state.alerts.get(alert_id)
    if alert is None:  # the rebuild's most common case: born with this event's fields
        state.alerts[alert_id] = Alert(
            id=alert_id,
            fingerprint=e.fingerprint,
            type=_one(e.type),
            severity=e.severity,
            summary=e.summary,
            source=_one(e.source),
            status="firing",
            labels=e.labels,
            details=e.details or NO_DETAILS,
            first_seen=e.timestamp,
            last_seen=e.timestamp,
            occurrences=1 if firing else 0,
            trace_id=e.trace_id,
        )
        return
    if firing:
        alert.occurrences += 1
        alert.severity = e.severity
        alert.summary = e.summary
        alert.labels = e.labels
        alert.details = e.details or NO_DETAILS
        alert.type = _one(e.type)
        alert.source = _one(e.source)
        alert.trace_id = e.trace_id
    if e.timestamp > alert.last_seen:
        alert.last_seen = e.timestamp


def _times_out(state: State, e: ev.AlertReceived) -> bool:
    """Whether ``[alerts] resolve_timeout`` resolves the alert of ``e`` by itself: not
    a missed heartbeat's (on its heartbeat's subject), which no later event keeps
    alive: only its next beat (or a hand) resolves it."""
    return state.resolve_timeout is not None and not e.subject.startswith(HEARTBEAT_PREFIX)


def _time_auto_resolve(state: State, e: ev.AlertReceived) -> None:
    """A firing event sets when its alert resolves by itself: at its ``ends_at``, else
    ``resolve_timeout`` after it (a later event moves both)."""
    assert e.alert_id is not None
    if e.ends_at is not None:
        due, by = e.ends_at, "ends_at"
    else:
        assert state.resolve_timeout is not None
        due, by = e.received_at + state.resolve_timeout, "timeout"
    state.auto_resolve[e.fingerprint] = AutoResolve(
        alert_id=e.alert_id, due=due, by=by, last_event=e.received_at
    )


def _opened(e: ev.AlertOpened, state: State, seq: int) -> None:
    fingerprint, alert_id = e.fingerprint, e.alert_id
    alert = state.alerts.get(alert_id)
    if alert is not None:
        fingerprint, alert_id = _held(alert.fingerprint, fingerprint), alert.id
    state.open_by_fingerprint[fingerprint] = OpenAlert(
        alert_id=alert_id,
        bucket=_bucket(e.bucket),
        routed_severity=e.severity,
        receivers=(),
        inhibits=NO_SLOTS,
        waits_on=NO_SLOTS,
    )
    if state.flaps or state.flap_changes is not None:
        flapping.record(state, fingerprint)  # a change, for [flapping]


def _suppressed(
    e: ev.AlertSuppressed | ev.AlertSilenced | ev.AlertInhibited, state: State, seq: int
) -> None:
    state.counters.suppressed += 1
    state.hour().suppressed += 1
    alert = state.alerts.get(e.alert_id)
    if alert is not None:
        alert.suppressed_count += 1


def _not_routed(e: ev.AlertSuppressed, state: State, seq: int) -> None:
    """``_suppressed``, written out (a duplicate is the commonest fact a rebuild folds),
    and an alert found unrouted: marked, and counted once (the route stage marks one
    fact per alert)."""
    state.counters.suppressed += 1
    hour = state.hour()
    hour.suppressed += 1
    alert = state.alerts.get(e.alert_id)
    if alert is not None:
        alert.suppressed_count += 1
    if e.newly_unrouted:
        hour.unrouted += 1
        if alert is not None:
            alert.unrouted = True
    elif e.cause == "flapping":
        hour.flapping += 1


def _silenced(e: ev.AlertSilenced, state: State, seq: int) -> None:
    _suppressed(e, state, seq)  # counted as suppressed, and its bucket stays unspent
    current = state.open_by_fingerprint.get(e.fingerprint)
    if current is not None and current.alert_id == e.alert_id:
        current.silenced = True
        current.silenced_by = e.silence_id
        _not_inhibited(state, current)  # the silence holds it; its end checks inhibition


def _inhibited(e: ev.AlertInhibited, state: State, seq: int) -> None:
    """Counted as suppressed, its bucket unspent (as for a silence); it waits on the
    slots ``waits_on`` names, and leaves every group that was never told of it (its
    next notification goes without it)."""
    if e.fired_at is None:  # an event held back; the clock's finding counts none
        _suppressed(e, state, seq)
        state.hour().inhibited += 1
    alert = state.alerts.get(e.alert_id)
    if alert is not None:
        alert.inhibited_by = e.inhibited_by
    current = state.open_by_fingerprint.get(e.fingerprint)
    if current is None or current.alert_id != e.alert_id:
        return
    current.silenced = True
    current.silenced_by = None
    _stop_waiting(state, current)
    current.inhibited_by = e.inhibited_by
    current.waits_on = e.waits_on
    for rule, values in e.waits_on.items():
        _slot_add(state.inhibit_waiting, rule, values, e.alert_id)
    left = []
    for key in current.groups:
        group = state.groups.get(key)
        member = group.members.get(e.alert_id) if group is not None else None
        if group is not None and member is not None and member.news == "firing":
            del group.members[e.alert_id]
            _retimed(state, group)
            left.append(key)
    if left:
        current.groups = tuple(key for key in current.groups if key not in left)


def _inhibit_source(e: ev.InhibitSource, state: State, seq: int) -> None:
    """The alert's place in the index of inhibitors: the slots it left, then the ones
    it joins (``core/decide/inhibit.py``)."""
    current = state.open_by_fingerprint.get(e.fingerprint)
    if current is None or current.alert_id != e.alert_id:
        return
    before = current.inhibits
    _leave(state, e.alert_id, {r: v for r, v in before.items() if e.rules.get(r) != v})
    for rule, values in e.rules.items():
        if before.get(rule) != values:
            _slot_add(state.inhibitors, rule, values, e.alert_id)
    current.inhibits = e.rules


def _inhibit_released(e: ev.InhibitReleased, state: State, seq: int) -> None:
    state.inhibit_ended.pop(e.alert_id, None)
    for alert_id in e.alert_ids:
        alert = state.alerts.get(alert_id)
        current = None if alert is None else state.open_by_fingerprint.get(alert.fingerprint)
        if current is not None and current.alert_id == alert_id:
            _not_inhibited(state, current)


def _slot_add(
    index: dict[str, dict[str, dict[str, None]]], rule: str, values: str, alert_id: str
) -> None:
    index.setdefault(rule, {}).setdefault(values, {})[alert_id] = None


def _slot_remove(
    index: dict[str, dict[str, dict[str, None]]], rule: str, values: str, alert_id: str
) -> None:
    slots = index.get(rule)
    members = None if slots is None else slots.get(values)
    if slots is None or members is None:
        return
    members.pop(alert_id, None)
    if not members:
        del slots[values]
        if not slots:
            del index[rule]


def _leave(state: State, alert_id: str, slots: dict[str, str]) -> None:
    """``alert_id`` inhibits through ``slots`` no more. A slot alerts wait on that is
    left with no inhibitor, or only one (which may be a waiting alert itself: it does
    not inhibit itself), is marked ended for the clock, which releases the alerts it
    finds with no inhibitor left. With two or more left, every alert waiting there
    still has one other than itself: nothing to release."""
    for rule, values in slots.items():
        _slot_remove(state.inhibitors, rule, values, alert_id)
        waiting = state.inhibit_waiting.get(rule, {}).get(values)
        if not waiting:
            continue
        left = state.inhibitors.get(rule, {}).get(values, {})
        if len(left) > 1 or (left and next(iter(left)) not in waiting):
            continue
        ended = state.inhibit_ended.get(alert_id)
        if ended is None:
            ended = state.inhibit_ended[alert_id] = InhibitEnd(at=state.last_ts)
        ended.slots[rule] = values


def _stop_waiting(state: State, current: OpenAlert) -> None:
    for rule, values in current.waits_on.items():
        _slot_remove(state.inhibit_waiting, rule, values, current.alert_id)
    current.waits_on = NO_SLOTS


def _not_inhibited(state: State, current: OpenAlert) -> None:
    """The alert's news is no longer held back by inhibition (it was routed, grouped,
    silenced, released or resolved)."""
    if current.inhibited_by is None:
        return
    current.inhibited_by = None
    _stop_waiting(state, current)
    alert = state.alerts.get(current.alert_id)
    if alert is not None:
        alert.inhibited_by = None


def _acked(e: ev.AlertAcked, state: State, seq: int) -> None:
    current = state.open_by_fingerprint.get(e.fingerprint)
    if current is not None and current.alert_id == e.alert_id:
        current.acked = True
    if state.chains_of:
        escalation.end_of_alert(state, e.alert_id)  # an ack ends the chain
    alert = state.alerts.get(e.alert_id)
    if alert is not None:
        alert.acked_by, alert.acked_at, alert.ack_comment = e.by, e.at, e.comment
        for key in alert.groups:
            group = state.groups.get(key)
            if group is not None:
                groups.acknowledge(group, e.alert_id)
                _retimed(state, group)


def _escalated(e: ev.AlertEscalated, state: State, seq: int) -> None:
    current = state.open_by_fingerprint.get(e.fingerprint)
    if current is not None and current.alert_id == e.alert_id:
        current.bucket = _bucket(e.bucket)
        current.routed_severity = e.severity


def _told(e: ev.AlertRouted | ev.AlertGrouped, state: State) -> OpenAlert | None:
    """The dedup bookkeeping of firing news that reached someone (a receiver, or a
    group): its bucket and routed severity move on, and nothing holds it back any more.
    The open alert it was news for, or ``None`` (a resolve, or no such open alert)."""
    current = state.open_by_fingerprint.get(e.fingerprint)
    if current is None or current.alert_id != e.alert_id or e.reason == "resolved":
        return None
    if e.bucket > current.bucket:
        current.bucket = _bucket(e.bucket)
        current.routed_severity = e.severity
    elif SEVERITY_RANK[e.severity] > SEVERITY_RANK[current.routed_severity]:
        current.routed_severity = e.severity
    current.silenced = False
    current.silenced_by = None
    if current.inhibited_by is not None:
        _not_inhibited(state, current)
    return current


def _routed(e: ev.AlertRouted, state: State, seq: int) -> None:
    state.counters.routed += 1
    current = _told(e, state)
    if current is not None and e.receiver not in current.receivers:
        current.receivers = _plus(current.receivers, e.receiver)
    alert = state.alerts.get(e.alert_id)
    as_routed = None
    if alert is not None:
        if e.receiver not in alert.receivers:
            alert.receivers = _plus(alert.receivers, e.receiver)
        alert.last_delivery_status = "pending"
        alert.unrouted = False
        as_routed = AlertAsRouted(
            type=alert.type,
            summary=alert.summary,
            source=alert.source,
            labels=alert.labels,
            details=alert.details,
            first_seen=alert.first_seen,
            last_seen=alert.last_seen,
            occurrences=alert.occurrences,
            suppressed_count=alert.suppressed_count,
        )
    delivery = state.deliveries[e.notification_id] = Delivery(
        notification_id=e.notification_id,
        alert_id=e.alert_id if alert is None else alert.id,
        receiver=_one(e.receiver),
        reason=e.reason,
        routed_seq=seq,
        as_routed=as_routed,
        order_key=e.fingerprint if alert is None else _held(alert.fingerprint, e.fingerprint),
    )
    state.queue["pending"] = state.queue.get("pending", 0) + 1
    _count_open(state, delivery, 1)


def _group_opened(e: ev.GroupOpened, state: State, seq: int) -> None:
    state.groups[e.group_key] = Group(
        key=e.group_key,
        receiver=_one(e.receiver),
        route=e.route,
        labels=e.group_labels,
        wait=e.group_wait,
        interval=e.group_interval,
        repeat=e.repeat_interval,
        max_alerts=e.max_alerts,
        active_intervals=e.active_time_intervals,
        mute_intervals=e.mute_time_intervals,
        members={},
        opened_at=state.last_ts if e.opened_at is None else e.opened_at,
    )


def _retimed(state: State, group: Group) -> None:
    """A group changed: its next due time again, or gone when it closed; its
    escalation chain ends once every alert of it is acknowledged or resolved."""
    if groups.closed(group):
        del state.groups[group.key]
    else:
        group.due_at = groups.due_at(group)
    if state.chains_of:
        escalation.recheck(state, group.key)


def _grouped(e: ev.AlertGrouped, state: State, seq: int) -> None:
    """An alert's news for a group: ``_routed``'s dedup bookkeeping, then the group."""
    current = _told(e, state)
    if current is not None and e.group_key not in current.groups:
        current.groups += (e.group_key,)
    alert = state.alerts.get(e.alert_id)
    if alert is not None:
        if e.group_key not in alert.groups:
            alert.groups += (e.group_key,)
        alert.unrouted = False
    group = state.groups.get(e.group_key)
    if group is not None:
        groups.join(group, e.alert_id, e.reason, e.dedup_key)
        _retimed(state, group)


def _group_notified(e: ev.GroupNotified, state: State, seq: int) -> None:
    """A group's notification: its routed fact (one delivery, one work item)."""
    state.counters.routed += 1
    group = state.groups.get(e.group_key)
    if group is not None and e.reason != "unacknowledged":  # an escalation's: not the group's
        groups.notified(group, e.resolved_alert_ids, e.fired_at)
        _retimed(state, group)
    for alert_id in e.alert_ids:
        alert = state.alerts.get(alert_id)
        if alert is not None:
            if e.receiver not in alert.receivers:
                alert.receivers = _plus(alert.receivers, e.receiver)
            alert.last_delivery_status = "pending"
    delivery = state.deliveries[e.notification_id] = Delivery(
        notification_id=e.notification_id,
        alert_id=e.alert_ids[0] if e.alert_ids else "",
        receiver=_one(e.receiver),
        reason=e.reason,
        routed_seq=seq,
        group_key=e.group_key,
        order_key=e.group_key,
    )
    state.queue["pending"] = state.queue.get("pending", 0) + 1
    _count_open(state, delivery, 1)


def _group_deferred(e: ev.GroupDeferred, state: State, seq: int) -> None:
    state.hour().muted += 1
    group = state.groups.get(e.group_key)
    if group is not None:
        group.deferred_until = e.until
        _retimed(state, group)


def _resolved(e: ev.AlertResolved, state: State, seq: int) -> None:
    timer = state.auto_resolve.get(e.fingerprint)
    if timer is not None and timer.alert_id == e.alert_id:
        del state.auto_resolve[e.fingerprint]
    current = state.open_by_fingerprint.get(e.fingerprint)
    if current is not None and current.alert_id == e.alert_id:
        del state.open_by_fingerprint[e.fingerprint]
        if current.inhibits:  # an inhibitor no more: its targets may be released
            _leave(state, e.alert_id, current.inhibits)
        _not_inhibited(state, current)
        if state.flaps or state.flap_changes is not None:
            flapping.record(state, e.fingerprint)  # a change, for [flapping]
    if state.chains_of:
        escalation.end_of_alert(state, e.alert_id)  # a resolve ends the chain
    alert = state.alerts.get(e.alert_id)
    if alert is not None:
        alert.status = "resolved"
        alert.resolved_at = e.resolved_at
        if e.resolved_at > alert.last_seen:  # its resolve is its last sign of life
            alert.last_seen = e.resolved_at
        alert.resolved_by = e.by
        alert.resolved_ts = state.last_ts


def _rejected(e: ev.AlertRejected, state: State, seq: int) -> None:
    state.counters.rejected += 1
    rejected = state.hour().rejected
    rejected[e.code] = rejected.get(e.code, 0) + 1


def _attempt_failed(e: ev.DeliveryAttemptFailed, state: State, seq: int) -> None:
    delivery = state.deliveries.get(e.notification_id)
    if delivery is None:
        return
    if delivery.status not in SETTLED:  # a late copy of a failure never un-settles it
        _set_status(state, delivery, "retrying")
    state.counters.attempt_failures += 1
    _receiver_stats(state, e.receiver).failed_attempts += 1
    delivery.attempts = max(delivery.attempts, e.attempt)
    delivery.error, delivery.status_code = e.error, e.status_code
    _sent(e, state, delivery)


def _succeeded(e: ev.DeliverySucceeded, state: State, seq: int) -> None:
    delivery = state.deliveries.get(e.notification_id)
    if delivery is None:
        return
    _set_status(state, delivery, "delivered")
    delivery.as_routed = None  # delivered: never sent again, so its body is not kept
    delivery.settled_ts = state.last_ts
    state.counters.delivered += 1
    _receiver_stats(state, e.receiver).delivered += 1
    delivery.attempts = max(delivery.attempts, e.attempts)
    _sent(e, state, delivery)


def _dead_lettered(e: ev.DeliveryDeadLettered, state: State, seq: int) -> None:
    delivery = state.deliveries.get(e.notification_id)
    if delivery is None:
        return
    _set_status(state, delivery, "dead")
    state.counters.dead_lettered += 1
    _receiver_stats(state, e.receiver).dead += 1
    delivery.attempts = max(delivery.attempts, e.attempts)
    delivery.error, delivery.status_code = e.error, e.status_code
    _sent(e, state, delivery)


def _superseded(e: ev.DeliverySuperseded, state: State, seq: int) -> None:
    """Settled without a send: neither delivered nor dead, counted on its own."""
    delivery = state.deliveries.get(e.notification_id)
    if delivery is None:
        return
    _set_status(state, delivery, "superseded")
    delivery.as_routed = None  # never sent, nor re-queued (only dead letters are)
    delivery.settled_ts = state.last_ts
    state.counters.superseded += 1
    _receiver_stats(state, e.receiver).superseded += 1
    delivery.attempts = max(delivery.attempts, e.attempts)
    delivery.error = f"superseded by {e.superseded_by}"
    _sent(e, state, delivery)


def _sent(
    e: ev.DeliveryAttemptFailed
    | ev.DeliverySucceeded
    | ev.DeliveryDeadLettered
    | ev.DeliverySuperseded,
    state: State,
    delivery: Delivery,
) -> None:
    """What every logged outcome tells, whatever it is."""
    delivery.channel = _one(e.channel)
    delivery.updated_at = e.at
    alert = state.alerts.get(e.alert_id)
    if alert is not None:
        alert.last_delivery_status = delivery.status


def _requeued(e: ev.DeliveryRequeued, state: State, seq: int) -> None:
    delivery = state.deliveries.get(e.notification_id)
    if delivery is None:
        return
    _set_status(state, delivery, "pending")
    delivery.settled_ts = None
    delivery.generation = e.generation
    delivery.requeued_seq = seq
    delivery.attempts = 0
    delivery.error = delivery.status_code = None
    alert = state.alerts.get(e.alert_id)
    if alert is not None:
        alert.last_delivery_status = "pending"


def _silence_created(e: ev.SilenceCreated, state: State, seq: int) -> None:
    state.silences[e.silence_id] = Silence(
        id=e.silence_id,
        matchers=e.matchers,
        starts_at=e.starts_at,
        ends_at=e.ends_at,
        created_by=e.created_by,
        comment=e.comment,
        created_at=e.created_at,
    )


def _silence_deleted(e: ev.SilenceDeleted, state: State, seq: int) -> None:
    silence = state.silences.get(e.silence_id)
    if silence is not None and silence.deleted_at is None:
        silence.deleted_at, silence.deleted_by = e.at, e.by


def _silence_expired(e: ev.SilenceExpired, state: State, seq: int) -> None:
    silence = state.silences.get(e.silence_id)
    if silence is not None:
        silence.expired = True


def _bound(e: ev.StreamBound, state: State, seq: int) -> None:
    if e.stream == STREAM_OUT:
        state.outbound_stream = e.created
        state.outbound_offset = e.offset
        return
    state.inbound_stream = e.created
    state.inbound_offset = e.offset


def _config_loaded(e: ev.ConfigLoaded, state: State, seq: int) -> None:
    """The service decides from now on with this configuration (logged before any fact
    decided under it). When its dedup window differs from the last one, each open
    alert's bucket is moved to the new window (``rebucket``), so its reminders follow
    the window now in force. Its retention window holds from here on
    (``core.retention``): a shorter one is swept by the step it sets from the next step
    on, not from the step the old window had planned (up to an hour away); and its
    heartbeats are the ones kept (``heartbeats``)."""
    keep = e.keep_resolved_seconds
    state.keep_resolved = KEEP_RESOLVED_US if keep is None else int(keep * 1_000_000)
    if not state.keep_everything:
        state.next_sweep = min(
            state.next_sweep, next_sweep_after(state.last_ts, state.keep_resolved)
        )
    old, new = state.dedup_window, e.dedup_window_seconds
    state.dedup_window = new
    if old is not None and old != new:
        for current in state.open_by_fingerprint.values():
            current.bucket = rebucket(current.bucket, old, new)
    state.flap_changes = e.flapping_changes
    window = e.flapping_window_seconds
    state.flap_window = None if window is None else round(window * 1e6)
    if state.flap_changes is None:  # off: only what flaps still settles
        for fingerprint in [f for f, flap in state.flaps.items() if flap.since is None]:
            del state.flaps[fingerprint]
    heartbeats.configured(state, e.heartbeats, state.last_ts)
    timeout = None if e.resolve_timeout_seconds is None else round(e.resolve_timeout_seconds * 1e6)
    if timeout != state.resolve_timeout:
        state.resolve_timeout = timeout
        for fingerprint, timer in list(state.auto_resolve.items()):
            if timer.by != "timeout":
                continue
            if timeout is None:
                del state.auto_resolve[fingerprint]
            else:
                timer.due = timer.last_event + timeout


def _escalation_started(e: ev.EscalationStarted, state: State, seq: int) -> None:
    escalation.start(state, e)


def _escalation_fired(e: ev.EscalationFired, state: State, seq: int) -> None:
    state.hour().escalations += 1
    escalation.advance(state, e)


def _alert_flapping(e: ev.AlertFlapping, state: State, seq: int) -> None:
    flapping.began(state, e)


def _alert_settled(e: ev.AlertSettled, state: State, seq: int) -> None:
    flapping.ended(state, e)


def _outbox_published(e: ev.OutboxPublished, state: State, seq: int) -> None:
    state.published_through = max(state.published_through, e.up_to_seq)


def _heartbeat_received(e: ev.HeartbeatReceived, state: State, seq: int) -> None:
    heartbeats.received(state, e)


def _heartbeat_missed(e: ev.HeartbeatMissed, state: State, seq: int) -> None:
    heartbeats.was_missed(state, e)


def _partition_seeded(e: ev.PartitionSeeded, state: State, seq: int) -> None:
    """A repartitioned log's first fact: the buckets of the alerts moved after it are
    counted in this window (a later ``config.loaded`` with another moves them on)."""
    state.dedup_window = e.dedup_window_seconds


def _alert_moved(e: ev.AlertMoved, state: State, seq: int) -> None:
    """An open alert as its old log had it, and the dedup, ack, timer and inhibitor
    state that made its duplicates suppressed and its resolve a resolve there."""
    state.alerts[e.alert_id] = Alert(
        id=e.alert_id,
        fingerprint=e.fingerprint,
        type=e.type,
        severity=e.severity,
        summary=e.summary,
        source=e.source,
        status="firing",
        labels=e.labels,
        details=e.details,
        first_seen=e.first_seen,
        last_seen=e.last_seen,
        occurrences=e.occurrences,
        suppressed_count=e.suppressed_count,
        receivers=e.receivers,
        trace_id=e.trace_id,
        acked_by=e.acked_by,
        acked_at=e.acked_at,
        ack_comment=e.ack_comment,
        unrouted=e.unrouted,
    )
    state.open_by_fingerprint[e.fingerprint] = OpenAlert(
        alert_id=e.alert_id,
        bucket=_bucket(e.bucket),
        routed_severity=e.routed_severity,
        receivers=e.notified,
        acked=e.acked_by is not None,
        silenced=e.silenced,
        silenced_by=e.silenced_by,
        inhibits=e.inhibits,
    )
    for rule, values in e.inhibits.items():
        _slot_add(state.inhibitors, rule, values, e.alert_id)
    if e.resolve_due is not None and e.resolve_by is not None:
        state.auto_resolve[e.fingerprint] = AutoResolve(
            alert_id=e.alert_id,
            due=e.resolve_due,
            by=e.resolve_by,
            last_event=e.last_event if e.last_event is not None else e.last_seen,
        )


Handler = Callable[[Any, State, int], None]


def _handler(kind: type[ev.Event]) -> Handler | None:
    """What the fold does with an event of ``kind``; ``None``: the state does not
    depend on it."""
    if issubclass(kind, ev.AlertReceived):
        return handled_by(kind, _received)
    if issubclass(kind, ev.AlertOpened):
        return handled_by(kind, _opened)
    if issubclass(kind, ev.AlertSuppressed):
        return handled_by(kind, _not_routed)
    if issubclass(kind, ev.AlertSilenced):
        return handled_by(kind, _silenced)
    if issubclass(kind, ev.AlertEscalated):
        return handled_by(kind, _escalated)
    if issubclass(kind, ev.AlertRouted):
        return handled_by(kind, _routed)
    if issubclass(kind, ev.AlertResolved):
        return handled_by(kind, _resolved)
    if issubclass(kind, ev.AlertAcked):
        return handled_by(kind, _acked)
    if issubclass(kind, ev.AlertRejected):
        return handled_by(kind, _rejected)
    if issubclass(kind, ev.DeliveryAttemptFailed):
        return handled_by(kind, _attempt_failed)
    if issubclass(kind, ev.DeliverySucceeded):
        return handled_by(kind, _succeeded)
    if issubclass(kind, ev.DeliveryDeadLettered):
        return handled_by(kind, _dead_lettered)
    if issubclass(kind, ev.DeliveryRequeued):
        return handled_by(kind, _requeued)
    if issubclass(kind, ev.DeliverySuperseded):
        return handled_by(kind, _superseded)
    if issubclass(kind, ev.SilenceCreated):
        return handled_by(kind, _silence_created)
    if issubclass(kind, ev.SilenceDeleted):
        return handled_by(kind, _silence_deleted)
    if issubclass(kind, ev.StreamBound):
        return handled_by(kind, _bound)
    if issubclass(kind, ev.GroupOpened):
        return handled_by(kind, _group_opened)
    if issubclass(kind, ev.AlertGrouped):
        return handled_by(kind, _grouped)
    if issubclass(kind, ev.GroupNotified):
        return handled_by(kind, _group_notified)
    if issubclass(kind, ev.GroupDeferred):
        return handled_by(kind, _group_deferred)
    if issubclass(kind, ev.ConfigLoaded):
        return handled_by(kind, _config_loaded)
    if issubclass(kind, ev.SilenceExpired):
        return handled_by(kind, _silence_expired)
    if issubclass(kind, ev.OutboxPublished):
        return handled_by(kind, _outbox_published)
    if issubclass(kind, ev.AlertInhibited):
        return handled_by(kind, _inhibited)
    if issubclass(kind, ev.InhibitSource):
        return handled_by(kind, _inhibit_source)
    if issubclass(kind, ev.InhibitReleased):
        return handled_by(kind, _inhibit_released)
    if issubclass(kind, ev.EscalationStarted):
        return handled_by(kind, _escalation_started)
    if issubclass(kind, ev.EscalationFired):
        return handled_by(kind, _escalation_fired)
    if issubclass(kind, ev.AlertFlapping):
        return handled_by(kind, _alert_flapping)
    if issubclass(kind, ev.AlertSettled):
        return handled_by(kind, _alert_settled)
    if issubclass(kind, ev.HeartbeatReceived):
        return handled_by(kind, _heartbeat_received)
    if issubclass(kind, ev.HeartbeatMissed):
        return handled_by(kind, _heartbeat_missed)
    if issubclass(kind, ev.PartitionSeeded):
        return handled_by(kind, _partition_seeded)
    if issubclass(kind, ev.AlertMoved):
        return handled_by(kind, _alert_moved)
    if issubclass(kind, ev.AlertResolveIgnored | ev.LogCompacted):
        return None
    assert_never(kind)


_HANDLERS = by_kind(_handler)
