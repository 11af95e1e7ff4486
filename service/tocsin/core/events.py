"""The log's vocabulary: every fact tocsin knows is one of these immutable events.

Each kind's tag is its ``kind`` in the log, ``replay --json`` and ``/api/v1/events``
(DESIGN.md section 10). Events record *outcomes* (what was decided), never inputs to be
re-decided, so a rebuild does not depend on the version of the decision code.
Instants are microseconds since the epoch (see ``times``).

Evolving the vocabulary: logs are kept for years, so a field added to an event must
have a default (older rows lack it), a field is never renamed or retyped, and a kind is
never reused; a new fact is a new kind.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
from msgspec import Struct

from tocsin.core.contracts import (
    AlertInGroup,
    GroupNotification,
    GroupReason,
    Reason,
    Severity,
    Status,
)

SuppressCause = Literal["duplicate", "acked", "no_route", "duplicate_event", "flapping"]


class _Event(Struct, frozen=True, kw_only=True, tag_field="kind", omit_defaults=True, gc=False):
    """Base of all events; ``trace_id`` ties a fact to its trace. ``gc=False``: events
    cannot form reference cycles, so the cyclic GC need not scan millions of them."""

    trace_id: str | None = None


class AlertReceived(_Event, frozen=True, tag="alert.received"):
    """An inbound event passed validation; ``alert_id`` is the alert it counts for
    (``None`` for a resolve that matched no open alert, and for an event whose
    ``event_id`` was received in the 24 h before); ``ignored_fields`` names the
    top-level fields it carried that the contract does not know (``ingest``)."""

    alert_id: str | None
    fingerprint: str
    dedup_key: str
    type: str
    severity: Severity
    summary: str
    source: str
    status: Status
    labels: dict[str, str]
    details: dict[str, Any]
    timestamp: int
    received_at: int
    subject: str
    event_id: str | None = None
    timestamp_replaced: bool = False
    ignored_fields: tuple[str, ...] = ()
    ends_at: int | None = None  # the alert resolves by itself then, unless moved


class AlertOpened(_Event, frozen=True, tag="alert.opened"):
    """A firing event opened a new alert for its fingerprint."""

    alert_id: str
    fingerprint: str
    dedup_key: str
    bucket: int
    severity: Severity


class AlertSuppressed(_Event, frozen=True, tag="alert.suppressed"):
    """A firing event was counted but not routed (``cause``: duplicate, acked, no_route,
    ``flapping``: its fingerprint flaps, so its news is held; or ``duplicate_event``:
    its ``event_id`` was received in the 24 h before, so it is counted in the stats
    only, for no alert: ``alert_id`` is empty).
    ``newly_unrouted`` (no_route only): no receiver had been told of the alert and it
    was not known to be unrouted yet; it is from now on, until a route takes it. Set on
    one fact per alert at most, so the log, the metric and the router's warning say so
    once, not at every event of the alert."""

    alert_id: str
    fingerprint: str
    dedup_key: str
    cause: SuppressCause = "duplicate"
    newly_unrouted: bool = False


class AlertEscalated(_Event, frozen=True, tag="alert.escalated"):
    """A later event of the same dedup key carried a higher severity than any routed."""

    alert_id: str
    fingerprint: str
    dedup_key: str
    bucket: int
    from_severity: Severity
    severity: Severity


class AlertRouted(_Event, frozen=True, tag="alert.routed"):
    """One notification for one receiver: the fact a work item is derived from."""

    alert_id: str
    fingerprint: str
    dedup_key: str
    bucket: int
    reason: Reason
    severity: Severity
    receiver: str
    notification_id: str
    config_version: str | None = None  # the ``config.loaded`` digest that routed it


class AlertResolved(_Event, frozen=True, tag="alert.resolved"):
    """A resolved event closed the open alert of its fingerprint; ``by`` is set when an
    operator resolved it through the API rather than its publisher, or the clock did
    (``ends_at`` passed, or ``timeout``: ``[alerts] resolve_timeout`` since its last
    event), with the ``due_at`` and ``fired_at`` of that timer."""

    alert_id: str
    fingerprint: str
    resolved_at: int
    by: str | None = None
    comment: str | None = None
    due_at: int | None = None
    fired_at: int | None = None


class AlertAcked(_Event, frozen=True, tag="alert.acked"):
    """An operator acknowledged the open alert: no more reminders until it resolves."""

    alert_id: str
    fingerprint: str
    by: str
    at: int
    comment: str = ""


class AlertSilenced(_Event, frozen=True, tag="alert.silenced"):
    """A firing event that would have been routed matched an active silence; it is
    counted but nobody is told, and its dedup key stays unspent."""

    alert_id: str
    fingerprint: str
    dedup_key: str
    silence_id: str


class AlertResolveIgnored(_Event, frozen=True, tag="alert.resolve_ignored"):
    """A resolved event found no open alert, or (``cause``: ``duplicate_event``) its
    ``event_id`` was received in the 24 h before, so it closes nothing again; recorded,
    not routed."""

    fingerprint: str
    alert_id: str | None = None
    cause: SuppressCause | None = None


class AlertRejected(_Event, frozen=True, tag="alert.rejected"):
    """An inbound message was refused; its capped raw bytes are kept for forensics."""

    code: str
    reason: str
    field: str | None
    subject: str
    received_at: int
    raw: str
    raw_encoding: Literal["utf-8", "base64"]
    # Its TOCSIN_IN seq when a partitioner forwarded it (DESIGN.md section 17): the
    # rejection's message id is ``rejected:<TOCSIN_IN seq>`` in every partition alike.
    inbound_seq: int | None = None


class DeliveryAttemptFailed(_Event, frozen=True, tag="delivery.attempt_failed"):
    """A send failed and will be retried after ``retry_in_seconds``."""

    notification_id: str
    receiver: str
    alert_id: str
    fingerprint: str
    channel: str
    attempt: int
    error: str
    status_code: int | None
    retry_in_seconds: float
    at: int
    group_key: str | None = None  # a group notification's: its alert_id is its first alert's


class DeliverySucceeded(_Event, frozen=True, tag="delivery.succeeded"):
    """The receiver accepted the notification."""

    notification_id: str
    receiver: str
    alert_id: str
    fingerprint: str
    channel: str
    attempts: int
    at: int
    status_code: int | None = None  # the receiver's HTTP answer; None when not HTTP
    group_key: str | None = None  # a group notification's: its alert_id is its first alert's


class DeliveryDeadLettered(_Event, frozen=True, tag="delivery.dead_lettered"):
    """The notification never went through: permanent failure or attempts exhausted."""

    notification_id: str
    receiver: str
    alert_id: str
    fingerprint: str
    channel: str
    attempts: int
    error: str
    status_code: int | None
    at: int
    group_key: str | None = None  # a group notification's: its alert_id is its first alert's


class DeliverySuperseded(_Event, frozen=True, tag="delivery.superseded"):
    """The notification was not sent (again): the receiver had already accepted
    ``superseded_by``, a later notification of the same fingerprint (routed at
    ``superseded_by_seq``, after this one's ``log_seq``), which a late firing or a late
    resolve would contradict (``core/policy/order.py``). Settles it; not a failure.
    ``attempts``: the sends made before (failed ones)."""

    notification_id: str
    receiver: str
    alert_id: str
    fingerprint: str
    channel: str
    attempts: int
    log_seq: int
    superseded_by: str
    superseded_by_seq: int
    at: int
    group_key: str | None = None  # a group notification's: ordered by its group key


class DeliveryRequeued(_Event, frozen=True, tag="delivery.requeued"):
    """A dead-lettered notification was put back on its receiver's queue (by
    ``retry-failed`` or the API); ``generation`` counts the re-queues, so the new work
    item and its outcomes get message ids JetStream has not seen. A group's carries
    its body (``group``, as its ``group.notified`` fact has it), since the projection
    keeps no group bodies; ``reason`` is then the group's, ``update`` read as
    ``firing``."""

    notification_id: str
    receiver: str
    alert_id: str
    fingerprint: str
    dedup_key: str
    reason: Reason
    severity: Severity
    routed_seq: int
    generation: int
    by: str | None = None
    group: GroupNotification | None = None


class SilenceCreated(_Event, frozen=True, tag="silence.created"):
    """Alerts matching ``matchers`` (the route ``match`` grammar) are silenced between
    ``starts_at`` and ``ends_at``."""

    silence_id: str
    matchers: dict[str, Any]
    starts_at: int
    ends_at: int
    created_by: str
    created_at: int
    comment: str = ""


class SilenceDeleted(_Event, frozen=True, tag="silence.deleted"):
    """A silence was lifted before its end."""

    silence_id: str
    at: int
    by: str | None = None


class SilenceExpired(_Event, frozen=True, tag="silence.expired"):
    """A silence ended (its ``ends_at`` passed, or it was deleted) at ``at``: the clock
    routed the alerts it held back that still fire (``alert_ids``), each as news
    (DESIGN.md section 12)."""

    silence_id: str
    at: int
    alert_ids: list[str]
    due_at: int
    fired_at: int


class HeartbeatRule(Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """One ``[heartbeats.<name>]`` as the log keeps it (in ``config.loaded``): no beat
    for ``every + grace`` opens a ``heartbeat.missed`` alert with this severity, summary
    and labels (DESIGN.md section 13). Durations in seconds, as the config gives them."""

    every_seconds: float
    grace_seconds: float = 0.0
    severity: Severity = "critical"
    summary: str = ""
    labels: dict[str, str] = {}


class ConfigLoaded(_Event, frozen=True, tag="config.loaded"):
    """The service started with this configuration (secrets never included).
    ``keep_resolved_seconds`` (``[alerts] keep_resolved``; ``None`` in logs written
    before it existed: the default) is how long the projection keeps what is over
    (``core.retention``): a fact, so that every fold of the log keeps the same.
    ``heartbeats``: the dead man's switches configured, by name; a name's first
    ``config.loaded`` is when its first deadline starts counting."""

    digest: str
    receivers: dict[str, str]
    routes: int
    dedup_window_seconds: float
    resolve_timeout_seconds: float | None = None  # [alerts] resolve_timeout
    keep_resolved_seconds: float | None = None
    flapping_changes: int | None = None  # [flapping] changes; None: off
    flapping_window_seconds: float | None = None  # [flapping] window
    heartbeats: dict[str, HeartbeatRule] = {}
    # DESIGN.md section 15: ``digest`` is the config's version; ``config`` the document
    # with secrets masked; ``trigger`` what loaded it (start, SIGHUP, http, nats).
    config: dict[str, Any] = {}
    trigger: str | None = None


class StreamBound(_Event, frozen=True, tag="stream.bound"):
    """The log consumes this incarnation of an input ``stream`` (``TOCSIN_IN``, the
    router's; ``TOCSIN_OUT``, the recorder's), identified by its creation time; its
    seqs are logged as ``offset + seq``, so a re-created stream, whose seqs restart at
    1, never looks like a redelivery of old messages."""

    stream: str
    created: str
    offset: int


class GroupOpened(_Event, frozen=True, tag="group.opened"):
    """A grouped route's first news for a new group of alerts (DESIGN.md section 11):
    the group's identity and the timings it keeps (from the route, as of now: a later
    config does not re-time a group the log already holds)."""

    group_key: str
    receiver: str
    route: int
    group_labels: dict[str, str]
    group_wait: int  # microseconds
    group_interval: int
    repeat_interval: int | None = None
    max_alerts: int = 100
    active_time_intervals: tuple[str, ...] = ()
    mute_time_intervals: tuple[str, ...] = ()
    opened_at: int | None = None
    """When its first alert was received (its ``received_at``): its wait counts from
    there. ``None`` in logs written before: the time of the fact's row."""


class AlertGrouped(_Event, frozen=True, tag="alert.grouped"):
    """News of an alert for a group (``reason``: firing, reminder, escalated, resolved):
    what ``alert.routed`` is for an ungrouped route. The group's clock decides when it
    is told (``group.notified``)."""

    alert_id: str
    fingerprint: str
    dedup_key: str
    bucket: int
    reason: Reason
    severity: Severity
    group_key: str
    receiver: str


class GroupNotified(_Event, frozen=True, tag="group.notified", dict=True, gc=True):
    """A group's notification, the routed fact of a grouped route: fired by the clock
    at ``fired_at`` for a timer due at ``due_at``. ``alerts`` is the body's alert list
    exactly as sent (DESIGN.md invariant 6), so what a receiver was told is in the log
    itself. ``dict=True`` (so ``gc=True``) only to keep ``alerts_json``."""

    group_key: str
    receiver: str
    notification_id: str
    reason: GroupReason
    alert_ids: list[str]
    resolved_alert_ids: list[str]
    truncated: int
    group_labels: dict[str, str]
    status: Status
    alerts: list[AlertInGroup]
    due_at: int
    fired_at: int
    config_version: str | None = None

    @functools.cached_property
    def alerts_json(self) -> msgspec.Raw:
        """``alerts`` encoded, once: its log row (``encode``) and its work item
        (``outbound``) splice these bytes, and the delivery passes them on to a webhook
        as they are, instead of each encoding a few hundred alerts again (issue #20's
        W5). Derived from a frozen field, so it never goes stale."""
        return msgspec.Raw(msgspec.json.encode(self.alerts))


class GroupDeferred(_Event, frozen=True, tag="group.deferred"):
    """A group notification fell due while its route's time intervals muted it: it is
    deferred ``until`` the mute ends (checked again then), never dropped."""

    group_key: str
    receiver: str
    until: int
    due_at: int
    fired_at: int


class HeartbeatReceived(_Event, frozen=True, tag="heartbeat.received"):
    """A beat of the configured heartbeat ``name`` (DESIGN.md section 13), received
    ``at`` on ``subject``; its next deadline is ``every + grace`` after it. When the
    heartbeat's ``heartbeat.missed`` alert was open, ``alert_id`` and ``fingerprint``
    name it: the beat resolves it (the facts after this one)."""

    name: str
    at: int
    subject: str
    alert_id: str | None = None
    fingerprint: str | None = None


class HeartbeatMissed(_Event, frozen=True, tag="heartbeat.missed"):
    """No beat of ``name`` for ``every + grace``: the clock, at ``fired_at``, opened the
    alert ``alert_id`` (type ``heartbeat.missed``) for the deadline ``due_at``; its
    opened and routed facts follow. ``last_beat`` is ``None`` when none ever came."""

    name: str
    alert_id: str
    fingerprint: str
    due_at: int
    fired_at: int
    last_beat: int | None = None


class OutboxPublished(_Event, frozen=True, tag="outbox.published"):
    """The outbox's watermark (DESIGN.md invariant 5): every work item of a fact at or
    below ``up_to_seq`` (``alert.routed``, ``delivery.requeued``) was stored by
    JetStream (PubAck) or needs sending no more. Logged in the next batch's
    transaction, or alone once the router is idle; a start re-publishes the work items
    of the facts above it that have no outcome."""

    up_to_seq: int


class LogCompacted(_Event, frozen=True, tag="log.compacted"):
    """Rows ``first_seq..last_seq`` moved to ``archive``; ``anchor`` is the hex hash of
    row ``last_seq``, which the first remaining row chains to."""

    archive: str
    first_seq: int
    last_seq: int
    anchor: str
    archive_sha256: str


class InhibitSource(_Event, frozen=True, tag="inhibit.source"):
    """Which inhibit rules (DESIGN.md section 12) the open alert is a source of changed:
    ``rules`` maps each rule whose ``source`` it matches now to its values for the
    rule's ``equal`` keys (``{}``: it inhibits nothing any more). Logged by the router
    from the config in force, so the fold keeps the index of inhibitors without
    matching rules (``core/decide/inhibit.py``)."""

    alert_id: str
    fingerprint: str
    rules: dict[str, str]


class AlertInhibited(_Event, frozen=True, tag="alert.inhibited"):
    """A firing event that would have been routed is held back by inhibit rule
    ``rule``: the open alert ``inhibited_by`` matches its source with equal values. It
    is counted but nobody is told, and its dedup key stays unspent. ``waits_on``: every
    rule whose target the alert matches, with its equal values; it stays held back
    while one of those has an inhibitor other than itself. ``fired_at``: set when the
    clock found it inhibited (a silence over it ended, or its group fell due), with no
    event to count."""

    alert_id: str
    fingerprint: str
    dedup_key: str
    rule: str
    inhibited_by: str
    waits_on: dict[str, str] = {}
    fired_at: int | None = None


class InhibitReleased(_Event, frozen=True, tag="inhibit.released"):
    """``alert_id`` stopped inhibiting at ``at`` (it resolved, or no longer matches a
    rule's source): the clock released the alerts it was the last inhibitor of
    (``alert_ids``); those not acknowledged were routed as news (reason ``firing``)
    right after this fact, unless a silence holds them now."""

    alert_id: str
    at: int
    alert_ids: list[str]
    due_at: int
    fired_at: int


class EscalationStep(Struct, frozen=True, kw_only=True, gc=False):
    """One step of a route's ``escalate`` chain: ``after`` (microseconds from the
    chain's first notification), the ``receivers`` told then."""

    after: int
    receivers: tuple[str, ...]


class EscalationStarted(_Event, frozen=True, tag="escalation.started"):
    """A firing notification of a route with ``escalate`` went out, unacknowledged: its
    chain's clock runs from ``started_at`` (DESIGN.md section 13). ``chain`` keys it: an
    alert and its route (``alert_id``) for an ungrouped route, the route and its group
    values for a grouped one (``group_key``: the group whose notification started it,
    or joins it). ``steps`` are the route's as of now: a later config does not re-time
    a chain the log already holds."""

    chain: str
    route: int
    steps: tuple[EscalationStep, ...]
    started_at: int
    alert_id: str | None = None
    group_key: str | None = None


class EscalationFired(_Event, frozen=True, tag="escalation.fired"):
    """Step ``step`` of a chain fell due (``due_at``, fired at ``fired_at``) with its
    notification neither acknowledged nor resolved: its ``receivers`` are told, reason
    ``unacknowledged`` (the ``alert.routed`` or ``group.notified`` facts after it), of
    ``alert_ids``, the alerts nobody acknowledged."""

    chain: str
    step: int
    receivers: list[str]
    alert_ids: list[str]
    due_at: int
    fired_at: int
    alert_id: str | None = None  # an ungrouped route's chain: its alert
    group_key: str | None = None  # a grouped route's: the group its notification lists


class AlertFlapping(_Event, frozen=True, tag="alert.flapping"):
    """The alert's fingerprint opened and resolved ``changes`` times within ``window``
    (microseconds; ``[flapping]``) as of ``at``: from now its news is held (suppressed,
    cause ``flapping``) until it has been stable for ``window`` (``alert.settled``)."""

    alert_id: str
    fingerprint: str
    changes: int
    window: int
    at: int


class AlertSettled(_Event, frozen=True, tag="alert.settled"):
    """A flapping fingerprint was stable for its window (timer ``due_at``, fired at
    ``fired_at``): its state (``status``; ``alert_id``, its open alert when firing) is
    notified once, by the facts after it."""

    fingerprint: str
    status: Status
    due_at: int
    fired_at: int
    alert_id: str | None = None


class SeededFrom(Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """One log a repartitioned log was seeded from: its partition (``None``: the
    unpartitioned log), its chain head when it was read (``last_seq`` and the hex hash
    of that row, so the archived file can be checked against it), and where it was
    archived."""

    last_seq: int
    head: str
    archive: str
    partition: int | None = None


class PartitionSeeded(_Event, frozen=True, tag="partition.seeded"):
    """``tocsin repartition`` (DESIGN.md section 17) started this log: partition
    ``partition`` of ``count`` (``None``: the unpartitioned log), made from the
    ``from_count`` logs ``sources`` while no service ran, partitioned by ``key`` (``[]``:
    the fingerprint). The ``alert.moved`` and ``silence.created`` facts after it carry
    what moved; ``dedup_window_seconds`` is the window their buckets are counted in.
    ``forced``: what ``--force`` let through, as the command said it. ``after_seq``: the
    highest seq of the old logs, which this log's seqs start after, so that a
    notification routed here comes after every one routed there in the order receivers
    are told per fingerprint (``core/policy/order.py`` compares routed seqs)."""

    count: int
    from_count: int
    sources: list[SeededFrom]
    dedup_window_seconds: float
    partition: int | None = None
    key: list[str] = []
    alerts: int = 0
    silences: int = 0
    forced: list[str] = []
    after_seq: int = 0


class AlertMoved(_Event, frozen=True, tag="alert.moved"):
    """An open alert and its dedup state moved into this log from partition
    ``from_partition`` (``None``: the unpartitioned log) by ``tocsin repartition``, the
    partition its fingerprint belongs to now. Its fields are the alert's as its old log
    had them, so that a duplicate is still suppressed here (``bucket`` and
    ``routed_severity``, in the window of ``partition.seeded``), a resolve still resolves
    it and tells ``notified`` (the receivers told of it), an ack still holds, and its
    timer (``resolve_due``/``resolve_by``, from ``last_event``) still runs.
    ``inhibits``: the inhibit rules it is a source of (rule -> equal values)."""

    alert_id: str
    fingerprint: str
    type: str
    severity: Severity
    summary: str
    source: str
    labels: dict[str, str]
    details: dict[str, Any]
    first_seen: int
    last_seen: int
    occurrences: int
    bucket: int
    routed_severity: Severity
    from_partition: int | None = None
    suppressed_count: int = 0
    receivers: tuple[str, ...] = ()
    unrouted: bool = False
    acked_by: str | None = None
    acked_at: int | None = None
    ack_comment: str | None = None
    notified: tuple[str, ...] = ()
    silenced: bool = False
    silenced_by: str | None = None
    inhibits: dict[str, str] = {}
    resolve_due: int | None = None
    resolve_by: str | None = None
    last_event: int | None = None


Event = (
    AlertReceived
    | AlertOpened
    | AlertSuppressed
    | AlertEscalated
    | AlertRouted
    | AlertResolved
    | AlertResolveIgnored
    | AlertRejected
    | AlertAcked
    | AlertSilenced
    | DeliveryAttemptFailed
    | DeliverySucceeded
    | DeliveryDeadLettered
    | DeliveryRequeued
    | DeliverySuperseded
    | SilenceCreated
    | SilenceDeleted
    | ConfigLoaded
    | StreamBound
    | OutboxPublished
    | LogCompacted
    | GroupOpened
    | AlertGrouped
    | GroupNotified
    | GroupDeferred
    | SilenceExpired
    | InhibitSource
    | AlertInhibited
    | InhibitReleased
    | EscalationStarted
    | EscalationFired
    | AlertFlapping
    | AlertSettled
    | HeartbeatReceived
    | HeartbeatMissed
    | PartitionSeeded
    | AlertMoved
)

# The log's encoder and decoder; ``encode`` and ``decode`` wrap them, loops over many
# rows call them directly.
encoder = msgspec.json.Encoder()
decoder: msgspec.json.Decoder[Event] = msgspec.json.Decoder(Event)


FieldSpec = tuple[str, Any] | tuple[str, Any, Any]
"""A field as ``msgspec.defstruct`` takes it."""


def field_spec(field: msgspec.structs.FieldInfo, type_: Any) -> FieldSpec:
    """``field`` as ``msgspec.defstruct`` takes it, typed ``type_`` and with its default
    or default factory: a twin of a struct (another type for a field, another encoding)
    keeps its defaults."""
    if field.default is not msgspec.NODEFAULT:
        return (field.name, type_, field.default)
    if field.default_factory is not msgspec.NODEFAULT:
        return (field.name, type_, msgspec.field(default_factory=field.default_factory))
    return (field.name, type_)


def _with_encoded_alerts(kind: type[GroupNotified]) -> type[Struct]:
    """``kind`` with its ``alerts`` taken as JSON already encoded (``msgspec.Raw``): the
    same tag, fields, order, defaults and config, so it encodes to the same bytes."""
    config = kind.__struct_config__
    fields = [
        field_spec(field, msgspec.Raw if field.name == "alerts" else field.type)
        for field in msgspec.structs.fields(kind)
    ]
    twin = msgspec.defstruct(
        f"{kind.__name__}Encoded",
        fields,
        kw_only=True,
        frozen=True,
        omit_defaults=config.omit_defaults,
        tag_field=config.tag_field,
        tag=config.tag,
    )
    assert twin.__struct_fields__ == kind.__struct_fields__, "a twin keeps the field order"
    return twin


_GroupNotifiedEncoded = _with_encoded_alerts(GroupNotified)


def encoded_group_notified(event: GroupNotified) -> bytes:
    """``event``'s canonical bytes with its alerts spliced in as ``alerts_json`` holds
    them: the same bytes as encoding it whole, without encoding its alerts again. Every
    writer of a log row must encode a ``group.notified`` fact through here (``encode``
    does), or its alerts are encoded twice (issue #20's W5)."""
    fields = msgspec.structs.asdict(event)
    fields["alerts"] = event.alerts_json
    return msgspec.json.encode(_GroupNotifiedEncoded(**fields))


def encode(event: Event) -> bytes:
    """The canonical bytes of an event, as stored in the log (tag included)."""
    if type(event) is GroupNotified:
        return encoded_group_notified(event)
    return encoder.encode(event)


def decode(data: bytes) -> Event:
    """An event from its stored bytes."""
    return decoder.decode(data)


def kind_of(event: Event) -> str:
    """The event's ``kind`` tag."""
    tag = type(event).__struct_config__.tag
    assert isinstance(tag, str)
    return tag


@dataclass(frozen=True, slots=True)
class StoredRow:
    """A log row as stored: the event still in its canonical JSON bytes."""

    seq: int
    ts: int
    kind: str
    data: bytes
