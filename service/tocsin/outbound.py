"""Committed facts -> the messages they justify (pure). Used both right after a commit
and when a redelivered inbound message finds its facts already logged, so a crash
between commit and publish is healed by re-publishing the same bytes with the same
``Nats-Msg-Id`` (JetStream drops the copy)."""

from __future__ import annotations

import msgspec

from tocsin import broker
from tocsin import events as ev
from tocsin.contracts import Notification, Rejected, WorkItem
from tocsin.projections import State
from tocsin.times import format_us
from tocsin.tracing import traceparent_for

_encoder = msgspec.json.Encoder()


def notification_for(state: State, routed: ev.AlertRouted) -> Notification | None:
    """The body a receiver gets for a routed fact, from the alert as the state knows it."""
    alert = state.alerts.get(routed.alert_id)
    if alert is None:
        return None
    return Notification(
        notification_id=routed.notification_id,
        reason=routed.reason,
        alert_id=alert.id,
        fingerprint=alert.fingerprint,
        dedup_key=routed.dedup_key,
        type=alert.type,
        severity=routed.severity,
        status="resolved" if routed.reason == "resolved" else "firing",
        summary=alert.summary,
        source=alert.source,
        labels=alert.labels,
        details=alert.details,
        first_seen=format_us(alert.first_seen),
        last_seen=format_us(alert.last_seen),
        occurrences=alert.occurrences,
        suppressed_count=alert.suppressed_count,
        receiver=routed.receiver,
    )


def messages_for(
    state: State,
    seq: int,
    event: ev.Event,
    stream_seq: int | None,
    trace_headers: dict[str, str] | None = None,
) -> list[broker.Outbound]:
    """What leaves tocsin because the fact at ``seq`` was committed; ``stream_seq`` is
    the TOCSIN_IN seq of the message that produced it (the rejection's message id);
    ``trace_headers`` name the router span a work item continues."""
    if isinstance(event, ev.AlertRouted):
        delivery = state.deliveries.get(event.notification_id)
        if delivery is not None and delivery.status in ("delivered", "dead"):
            return []
        notification = notification_for(state, event)
        if notification is None:
            return []
        item = WorkItem(notification=notification, log_seq=seq, trace_id=event.trace_id)
        headers = trace_headers
        if headers is None and event.trace_id:
            headers = {"traceparent": traceparent_for(event.trace_id)}
        return [
            broker.Outbound(
                subject=broker.route_subject(event.receiver),
                payload=_encoder.encode(item),
                msg_id=event.notification_id,
                headers=headers,
            )
        ]
    if isinstance(event, ev.AlertRejected) and stream_seq is not None:
        message = Rejected(
            reason=event.reason,
            field=event.field,
            subject=event.subject,
            received_at=format_us(event.received_at),
            raw=event.raw,
            raw_encoding=event.raw_encoding,
            log_seq=seq,
        )
        return [
            broker.Outbound(
                subject=broker.REJECTED,
                payload=_encoder.encode(message),
                msg_id=f"rejected:{stream_seq}",
            )
        ]
    return []
