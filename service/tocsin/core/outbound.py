"""Committed facts -> the messages they justify (pure). Used both right after a commit
and when a redelivered inbound message finds its facts already logged, so a crash
between commit and publish is healed by re-publishing the same bytes with the same
``Nats-Msg-Id`` (JetStream drops the copy)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any, assert_never

import msgspec

from tocsin.core import events as ev
from tocsin.core.contracts import (
    DeliveryDeadLettered,
    EncodedGroup,
    EncodedWorkItem,
    GroupDeliveryDeadLettered,
    GroupNotification,
    Notification,
    Rejected,
    WorkItem,
)
from tocsin.core.ids import traceparent_for
from tocsin.core.kinds import by_kind, handled_by
from tocsin.core.policy.order import must_raise, open_key
from tocsin.core.state import SETTLED, AlertAsRouted, Delivery, State
from tocsin.core.subjects import DELIVERY_FAILED, REJECTED, ROUTE_PREFIX, route_subject
from tocsin.core.times import format_us

_encoder = msgspec.json.Encoder()
_work_decoder = msgspec.json.Decoder(WorkItem)

NO_CHANNEL = "none"
"""The ``channel`` of a notification dead-lettered without a send: its receiver is not
configured, so no channel was ever chosen for it."""

WORK_ITEM_KINDS: frozenset[type[ev.Event]] = frozenset(
    {ev.AlertRouted, ev.DeliveryRequeued, ev.GroupNotified}
)
"""The facts that justify a work item: the outbox owes each one its item until JetStream
stores it (or it needs sending no more)."""


def notification_body(routed: ev.AlertRouted, alert: AlertAsRouted) -> Notification:
    """The body a receiver gets for a routed fact: the alert as of that fact
    (DESIGN.md invariant 6). The live path and ``GET /api/v1/notifications/{id}``
    (``views.notification_view``, from the file) both build it here."""
    return Notification(
        notification_id=routed.notification_id,
        reason=routed.reason,
        alert_id=routed.alert_id,
        fingerprint=routed.fingerprint,
        dedup_key=routed.dedup_key,
        type=alert.type,
        severity=routed.severity,
        status="resolved" if routed.reason == "resolved" else "firing",
        summary=alert.summary,
        source=alert.source,
        labels=alert.labels,
        details=alert.details,
        first_seen=(first_seen := format_us(alert.first_seen)),
        # a new alert's first event is its last too: formatted once
        last_seen=first_seen if alert.last_seen == alert.first_seen else format_us(alert.last_seen),
        occurrences=alert.occurrences,
        suppressed_count=alert.suppressed_count,
        receiver=routed.receiver,
    )


def _must_raise(state: State, notification_id: str, generation: int) -> bool:
    """Whether this notification's success must raise its receiver's order record
    (``order.must_raise``); when the state no longer knows it, yes."""
    delivery = state.deliveries.get(notification_id)
    if delivery is None:
        return True
    count = state.order_open.get(open_key(delivery.receiver, delivery.order_key), 0)
    return must_raise(count, generation)


def _work_item(
    state: State,
    delivery: Delivery | None,
    routed: ev.AlertRouted,
    seq: int,
    fact_seq: int,
    generation: int = 0,
    trace_headers: dict[str, str] | None = None,
) -> list[Outbound]:
    """The work item of ``routed`` (logged at ``seq``), justified by the fact at
    ``fact_seq``: the routed fact itself, or the re-queue of ``generation``;
    ``delivery`` is its delivery in ``state`` (looked up once by the caller). Its body
    is the alert as it was when routed (kept with the delivery by the fold), never as
    the state knows it now, which may hold later events of the same batch; none when
    the state keeps no such body (the delivery is unknown, or delivered)."""
    if delivery is None or delivery.as_routed is None:
        return []
    count = state.order_open.get(open_key(delivery.receiver, delivery.order_key), 0)
    item = WorkItem(
        notification=notification_body(routed, delivery.as_routed),
        log_seq=seq,
        trace_id=routed.trace_id,
        generation=generation,
        raise_order=must_raise(count, generation),
    )
    return _queued(item, routed.receiver, routed.notification_id, fact_seq, trace_headers)


def _queued(
    item: WorkItem | EncodedWorkItem,
    receiver: str,
    notification_id: str,
    fact_seq: int,
    trace_headers: dict[str, str] | None,
) -> list[Outbound]:
    """A work item on its receiver's queue: the message id is the notification's, with
    the re-queue's generation (``:g<n>``) so JetStream has not seen it; the trace is
    the router span's, else the one the item names."""
    headers = trace_headers
    if headers is None and item.trace_id:
        headers = {"traceparent": traceparent_for(item.trace_id)}
    msg_id = f"{notification_id}:g{item.generation}" if item.generation else notification_id
    return [
        Outbound(
            subject=route_subject(receiver),
            payload=_encoder.encode(item),
            msg_id=msg_id,
            headers=headers,
            fact_seq=fact_seq,
        )
    ]


def sends(event: ev.Event) -> bool:
    """Whether a fact of this kind may make anything leave tocsin (``messages_for``):
    most of a storm of duplicates' facts never do, and the router asks this first."""
    return _MESSAGES[type(event)] is not None


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
    make = _MESSAGES[type(event)]
    if make is None:
        return []
    return make(event, state, seq, stream_seq, trace_headers)


def fresh_messages(
    state: State,
    decided: Iterable[tuple[range, int, Sequence[ev.Event]]],
    offset: int,
    trace_headers: Callable[[int], dict[str, str]],
) -> list[Outbound]:
    """``messages_for`` every fact of a batch just committed, in order: ``decided`` is
    each inbound message's (seqs, position, facts), its stream seq ``position -
    offset``; ``trace_headers(position)``, asked only for a routed fact, names the
    router span its work item continues. One loop for the batch, with no call for a
    fact that sends nothing (most of them), rather than ``messages_for`` a fact: the
    router's path for a storm of new alerts (issue #20)."""
    out: list[Outbound] = []
    messages, routed = _MESSAGES, ev.AlertRouted
    for seqs, position, facts in decided:
        seq = seqs.start
        for event in facts:
            make = messages[type(event)]
            if make is not None:
                headers = trace_headers(position) if type(event) is routed else None
                out += make(event, state, seq, position - offset, headers)
            seq += 1
    return out


def _routed(
    event: ev.AlertRouted,
    state: State,
    seq: int,
    stream_seq: int | None,
    trace_headers: dict[str, str] | None,
) -> list[Outbound]:
    """The work item of a notification, unless it is settled or re-queued since (the
    re-queue fact publishes its own item), or the state keeps no body for it: what
    ``_work_item`` makes, its delivery looked up once (one routed fact a new alert)."""
    delivery = state.deliveries.get(event.notification_id)
    if delivery is not None and (delivery.status in SETTLED or delivery.generation):
        return []
    return _work_item(state, delivery, event, seq, seq, trace_headers=trace_headers)


def group_notification_of(event: ev.GroupNotified) -> GroupNotification:
    """The body of a group's notification: all of it is in its routed fact."""
    return GroupNotification(
        notification_id=event.notification_id,
        reason=event.reason,
        receiver=event.receiver,
        group_key=event.group_key,
        group_labels=event.group_labels,
        status=event.status,
        alerts=event.alerts,
        truncated_alerts=event.truncated,
    )


def encoded_group_of(event: ev.GroupNotified) -> EncodedGroup:
    """``group_notification_of(event)`` with the alerts as the fact's encoding holds
    them (``alerts_json``): encoded, the same bytes, without encoding them again."""
    return EncodedGroup(
        notification_id=event.notification_id,
        reason=event.reason,
        receiver=event.receiver,
        group_key=event.group_key,
        group_labels=event.group_labels,
        status=event.status,
        alerts=event.alerts_json,
        truncated_alerts=event.truncated,
    )


def _group_notified(
    event: ev.GroupNotified,
    state: State,
    seq: int,
    stream_seq: int | None,
    trace_headers: dict[str, str] | None,
) -> list[Outbound]:
    """A group's work item, unless its notification is settled or re-queued since: the
    alerts spliced in as its log row has them (``encoded_group_of``)."""
    delivery = state.deliveries.get(event.notification_id)
    if delivery is not None and (delivery.status in SETTLED or delivery.generation):
        return []
    item = EncodedWorkItem(
        group=encoded_group_of(event),
        log_seq=seq,
        trace_id=event.trace_id,
        raise_order=_must_raise(state, event.notification_id, 0),
    )
    return _queued(item, event.receiver, event.notification_id, seq, trace_headers)


def _requeued(
    event: ev.DeliveryRequeued,
    state: State,
    seq: int,
    stream_seq: int | None,
    trace_headers: dict[str, str] | None,
) -> list[Outbound]:
    """The work item again, as routed at ``routed_seq``, with the re-queue's generation
    (unless a later re-queue or an outcome overtook it)."""
    delivery = state.deliveries.get(event.notification_id)
    if delivery is None or delivery.generation != event.generation:
        return []
    if delivery.status in SETTLED:
        return []
    if event.group is not None:
        item = WorkItem(
            group=event.group,
            log_seq=event.routed_seq,
            trace_id=event.trace_id,
            generation=event.generation,
        )
        return _queued(item, event.receiver, event.notification_id, seq, trace_headers)
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
    delivery = state.deliveries.get(event.notification_id)
    return _work_item(state, delivery, routed, event.routed_seq, seq, event.generation)


def _rejected(
    event: ev.AlertRejected,
    state: State,
    seq: int,
    stream_seq: int | None,
    trace_headers: dict[str, str] | None,
) -> list[Outbound]:
    """The audit message of a refused inbound message (none for a rejection that came
    from no stream message), identified by its TOCSIN_IN seq: the seq of the stream the
    router read, or the one a partitioner forwarded (the TOCSIN_PART seqs of two
    partitions would collide in TOCSIN_OUT's duplicate window)."""
    if stream_seq is None:
        return []
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
            msg_id=f"rejected:{stream_seq if event.inbound_seq is None else event.inbound_seq}",
        )
    ]


def unconfigured(receiver: str) -> str:
    """The dead-letter reason of a notification for a receiver the config lacks."""
    return f"receiver {receiver} is not in the configuration"


def dead_letter(item: WorkItem, error: str, at: int, channel: str = NO_CHANNEL) -> Outbound:
    """The ``alerts.delivery_failed`` message of a work item dead-lettered without a
    send (``attempts`` 0), under the message id its delivery worker would have used."""
    notification = item.body
    dead = (
        GroupDeliveryDeadLettered
        if isinstance(notification, GroupNotification)
        else DeliveryDeadLettered
    )
    message = dead(
        **msgspec.structs.asdict(notification),
        channel=channel,
        attempts=0,
        failed_at=format_us(at),
        log_seq=item.log_seq,
        error=error,
        last_status_code=None,
        trace_id=item.trace_id,
    )
    again = f":{item.generation}" if item.generation else ""
    return Outbound(
        DELIVERY_FAILED, _encoder.encode(message), f"{notification.notification_id}:failed{again}"
    )


def for_configured(
    messages: Sequence[Outbound], configured: Collection[str], at: int
) -> tuple[list[Outbound], list[WorkItem]]:
    """``messages`` with every work item for a receiver not in ``configured`` replaced
    by its dead letter (``unconfigured``), and those items. Such an item would wait in
    TOCSIN_WORK forever, since no worker takes its subject: the resolve of an alert
    goes to every receiver that was told of it, whatever the config says now (DESIGN.md
    section 4), and a re-queue goes back to the receiver of the dead letter."""
    out: list[Outbound] = []
    dropped: list[WorkItem] = []
    for message in messages:
        receiver = message.subject.removeprefix(ROUTE_PREFIX)
        if receiver == message.subject or receiver in configured:
            out.append(message)
            continue
        item = _work_decoder.decode(message.payload)
        dropped.append(item)
        letter = dead_letter(item, unconfigured(receiver), at)
        # Stored, the dead letter settles what the work item owed (the outbox's).
        out.append(msgspec.structs.replace(letter, fact_seq=message.fact_seq))
    return out, dropped


class Outbound(msgspec.Struct, frozen=True, gc=False):
    """A message to publish to a stream and see acknowledged (PubAck); ``fact_seq`` is
    the seq of the fact whose work item it is (the outbox counts it as stored once its
    PubAck came), ``None`` for other messages. An empty ``msg_id`` sends no
    ``Nats-Msg-Id``: for a compare-and-set write, which a repeat cannot store twice.

    A frozen ``msgspec.Struct``, not a frozen dataclass: one is made per work item and
    per outcome, and a frozen dataclass's ``__init__`` (an ``object.__setattr__`` a
    field) cost ~0.8-2 us where this costs ~0.15 (issue #20). ``gc=False``: it holds
    strings, bytes and a dict of strings, never a cycle."""

    subject: str
    payload: bytes
    msg_id: str
    headers: dict[str, str] | None = None
    fact_seq: int | None = None


Messages = Callable[[Any, State, int, int | None, dict[str, str] | None], list[Outbound]]


def _messages(kind: type[ev.Event]) -> Messages | None:
    """What a committed fact of ``kind`` sends; ``None``: nothing leaves tocsin."""
    if issubclass(kind, ev.AlertRouted):
        return handled_by(kind, _routed)
    if issubclass(kind, ev.DeliveryRequeued):
        return handled_by(kind, _requeued)
    if issubclass(kind, ev.AlertRejected):
        return handled_by(kind, _rejected)
    if issubclass(kind, ev.GroupNotified):
        return handled_by(kind, _group_notified)
    if issubclass(
        kind,
        ev.AlertReceived
        | ev.AlertOpened
        | ev.AlertSuppressed
        | ev.AlertEscalated
        | ev.AlertResolved
        | ev.AlertResolveIgnored
        | ev.AlertAcked
        | ev.AlertSilenced
        | ev.DeliveryAttemptFailed
        | ev.DeliverySucceeded
        | ev.DeliveryDeadLettered
        | ev.DeliverySuperseded
        | ev.SilenceCreated
        | ev.SilenceDeleted
        | ev.ConfigLoaded
        | ev.StreamBound
        | ev.LogCompacted
        | ev.OutboxPublished
        | ev.GroupOpened
        | ev.AlertGrouped
        | ev.GroupDeferred
        | ev.SilenceExpired
        | ev.InhibitSource
        | ev.AlertInhibited
        | ev.InhibitReleased
        | ev.EscalationStarted
        | ev.EscalationFired
        | ev.AlertFlapping
        | ev.AlertSettled
        | ev.HeartbeatReceived  # a beat's resolve and a miss's alert: the facts after it
        | ev.HeartbeatMissed
        | ev.PartitionSeeded  # written offline, by `tocsin repartition`
        | ev.AlertMoved,
    ):
        return None
    assert_never(kind)


_MESSAGES = by_kind(_messages)
