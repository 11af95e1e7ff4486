"""All state is a fold over the log: ``fold(state, event)`` (DESIGN.md invariant 1).

``fold`` mutates the state it is given, for speed, but is pure in every other sense: no
I/O, no clock, no randomness; the same events in the same order give an equal state.
``rebuild`` folds from nothing; a test holds live state equal to it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, assert_never

from tocsin.core import events as ev
from tocsin.core.contracts import SEVERITY_RANK
from tocsin.core.decide.dedup import OpenAlert, rebucket
from tocsin.core.kinds import by_kind, handled_by
from tocsin.core.retention import next_sweep_after, sweep
from tocsin.core.state import (
    KEEP_RESOLVED_US,
    SETTLED,
    Alert,
    AlertAsRouted,
    Delivery,
    DeliveryStatus,
    LastAlert,
    ReceiverStats,
    Silence,
    State,
)
from tocsin.core.subjects import STREAM_OUT


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
    (none at all, or the start of its history was compacted into an archive)."""
    state = State(keep_everything=True)
    opened = False
    for seq, ts, data in rows:
        event = ev.decoder.decode(data)
        opened = opened or isinstance(event, ev.AlertOpened)
        fold(state, seq, ts, event)
    return state.alerts.get(alert_id) if opened else None


def _set_status(state: State, delivery: Delivery, status: DeliveryStatus) -> None:
    queue = state.queue
    queue[delivery.status] = queue.get(delivery.status, 0) - 1
    queue[status] = queue.get(status, 0) + 1
    delivery.status = status


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
    alert = state.alerts.get(alert_id)
    if alert is None:  # the rebuild's most common case: born with this event's fields
        state.alerts[alert_id] = Alert(
            id=alert_id,
            fingerprint=e.fingerprint,
            type=e.type,
            severity=e.severity,
            summary=e.summary,
            source=e.source,
            status="firing",
            labels=e.labels,
            details=e.details,
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
        alert.details = e.details
        alert.type = e.type
        alert.source = e.source
        alert.trace_id = e.trace_id
    if e.timestamp > alert.last_seen:
        alert.last_seen = e.timestamp


def _opened(e: ev.AlertOpened, state: State, seq: int) -> None:
    state.open_by_fingerprint[e.fingerprint] = OpenAlert(
        alert_id=e.alert_id, bucket=e.bucket, routed_severity=e.severity, receivers=[]
    )


def _suppressed(e: ev.AlertSuppressed | ev.AlertSilenced, state: State, seq: int) -> None:
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


def _silenced(e: ev.AlertSilenced, state: State, seq: int) -> None:
    _suppressed(e, state, seq)  # counted as suppressed, and its bucket stays unspent
    current = state.open_by_fingerprint.get(e.fingerprint)
    if current is not None and current.alert_id == e.alert_id:
        current.silenced = True


def _acked(e: ev.AlertAcked, state: State, seq: int) -> None:
    current = state.open_by_fingerprint.get(e.fingerprint)
    if current is not None and current.alert_id == e.alert_id:
        current.acked = True
    alert = state.alerts.get(e.alert_id)
    if alert is not None:
        alert.acked_by, alert.acked_at, alert.ack_comment = e.by, e.at, e.comment


def _escalated(e: ev.AlertEscalated, state: State, seq: int) -> None:
    current = state.open_by_fingerprint.get(e.fingerprint)
    if current is not None and current.alert_id == e.alert_id:
        current.bucket = e.bucket
        current.routed_severity = e.severity


def _routed(e: ev.AlertRouted, state: State, seq: int) -> None:
    state.counters.routed += 1
    current = state.open_by_fingerprint.get(e.fingerprint)
    if current is not None and current.alert_id == e.alert_id and e.reason != "resolved":
        if e.bucket > current.bucket:
            current.bucket = e.bucket
            current.routed_severity = e.severity
        elif SEVERITY_RANK[e.severity] > SEVERITY_RANK[current.routed_severity]:
            current.routed_severity = e.severity
        if e.receiver not in current.receivers:
            current.receivers.append(e.receiver)
        current.silenced = False
    alert = state.alerts.get(e.alert_id)
    as_routed = None
    if alert is not None:
        if e.receiver not in alert.receivers:
            alert.receivers.append(e.receiver)
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
    state.deliveries[e.notification_id] = Delivery(
        notification_id=e.notification_id,
        alert_id=e.alert_id,
        receiver=e.receiver,
        reason=e.reason,
        routed_seq=seq,
        as_routed=as_routed,
    )
    state.queue["pending"] = state.queue.get("pending", 0) + 1


def _resolved(e: ev.AlertResolved, state: State, seq: int) -> None:
    current = state.open_by_fingerprint.get(e.fingerprint)
    if current is not None and current.alert_id == e.alert_id:
        del state.open_by_fingerprint[e.fingerprint]
    alert = state.alerts.get(e.alert_id)
    if alert is not None:
        alert.status = "resolved"
        alert.resolved_at = e.resolved_at
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
    delivery.channel = e.channel
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
    on, not from the step the old window had planned (up to an hour away)."""
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


def _outbox_published(e: ev.OutboxPublished, state: State, seq: int) -> None:
    state.published_through = max(state.published_through, e.up_to_seq)


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
    if issubclass(kind, ev.ConfigLoaded):
        return handled_by(kind, _config_loaded)
    if issubclass(kind, ev.OutboxPublished):
        return handled_by(kind, _outbox_published)
    if issubclass(kind, ev.AlertResolveIgnored | ev.LogCompacted):
        return None
    assert_never(kind)


_HANDLERS = by_kind(_handler)
