"""Committed facts -> the messages they justify (pure). Used both right after a commit
and when a redelivered inbound message finds its facts already logged, so a crash
between commit and publish is healed by re-publishing the same bytes with the same
``Nats-Msg-Id`` (JetStream drops the copy)."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from tocsin.core import events as ev
from tocsin.core.contracts import Notification, Rejected, WorkItem
from tocsin.core.ids import traceparent_for
from tocsin.core.state import SETTLED, State
from tocsin.core.subjects import REJECTED, route_subject
from tocsin.core.times import format_us

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


def _work_item(
    state: State,
    routed: ev.AlertRouted,
    seq: int,
    generation: int = 0,
    trace_headers: dict[str, str] | None = None,
) -> list[Outbound]:
    notification = notification_for(state, routed)
    if notification is None:
        return []
    item = WorkItem(
        notification=notification, log_seq=seq, trace_id=routed.trace_id, generation=generation
    )
    headers = trace_headers
    if headers is None and routed.trace_id:
        headers = {"traceparent": traceparent_for(routed.trace_id)}
    msg_id = routed.notification_id
    if generation:
        msg_id += f":g{generation}"
    return [
        Outbound(
            subject=route_subject(routed.receiver),
            payload=_encoder.encode(item),
            msg_id=msg_id,
            headers=headers,
        )
    ]


def messages_for(
    state: State,
    seq: int,
    event: ev.Event,
    stream_seq: int | None,
    trace_headers: dict[str, str] | None = None,
) -> list[Outbound]:
    """What leaves tocsin because the fact at ``seq`` was committed; ``stream_seq`` is
    the TOCSIN_IN seq of the message that produced it (the rejection's message id);
    ``trace_headers`` name the router span a work item continues."""
    if isinstance(event, ev.AlertRouted):
        delivery = state.deliveries.get(event.notification_id)
        if delivery is not None and delivery.status in SETTLED:
            return []
        if delivery is not None and delivery.generation:
            return []  # re-queued since: the re-queue fact publishes its own item
        return _work_item(state, event, seq, trace_headers=trace_headers)
    if isinstance(event, ev.DeliveryRequeued):
        delivery = state.deliveries.get(event.notification_id)
        if delivery is None or delivery.generation != event.generation:
            return []
        if delivery.status in SETTLED:
            return []
        routed = ev.AlertRouted(
            alert_id=event.alert_id,
            fingerprint=event.fingerprint,
            dedup_key=event.dedup_key,
            bucket=0,
            reason=event.reason,
            severity=event.severity,
            receiver=event.receiver,
            notification_id=event.notification_id,
            trace_id=event.trace_id,
        )
        return _work_item(state, routed, event.routed_seq, event.generation)
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
            Outbound(
                subject=REJECTED,
                payload=_encoder.encode(message),
                msg_id=f"rejected:{stream_seq}",
            )
        ]
    return []


@dataclass(frozen=True, slots=True)
class Outbound:
    """A message to publish to a stream and see acknowledged (PubAck)."""

    subject: str
    payload: bytes
    msg_id: str
    headers: dict[str, str] | None = None
