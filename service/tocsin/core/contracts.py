"""Wire types other programs rely on (DESIGN.md sections 4 and 5).

These structs are the single source of ``schemas/``: ``tocsin schemas`` renders them as
JSON Schema, and a test fails when the committed files drift from them.
"""

from __future__ import annotations

import inspect
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

Severity = Literal["critical", "error", "warning", "info"]
Status = Literal["firing", "resolved"]
Reason = Literal["firing", "reminder", "escalated", "resolved", "unacknowledged"]
GroupReason = Literal["firing", "update", "reminder", "resolved", "unacknowledged"]

SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "error": 2, "critical": 3}
SEVERITY_ALIASES: dict[str, str] = {
    "critical": "critical",
    "error": "error",
    "warning": "warning",
    "info": "info",
    "sev1": "critical",
    "sev2": "warning",
    "sev3": "info",
    "fatal": "critical",
    "warn": "warning",
}

TYPE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"  # case-sensitive: KubePodCrashLooping
LABEL_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$"
MAX_LABEL_VALUE_CHARS = 1024
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_SUMMARY_CHARS = 255
MAX_LABELS = 32
MAX_FINGERPRINT_CHARS = 128
MAX_DETAILS_KEYS = 20
MAX_DETAILS_STRING = 512
MAX_DETAILS_BYTES = 8 * 1024
MAX_DETAILS_DEPTH = 32  # containers nested deeper inside details are cut
MAX_RAW_BYTES = 1024

Timestamp = Annotated[
    str, Meta(description="RFC 3339 UTC with a Z, e.g. 2026-11-23T12:00:00.123456Z")
]


class InboundEvent(Struct, kw_only=True):
    """An alert event as a publisher sends it on ``alerts.in.<source>``.

    Severity is matched case-insensitively with aliases (sev1, sev2, sev3, fatal, warn);
    a summary over 255 characters is cut, not refused; details are sanitized.
    """

    type: Annotated[str, Meta(pattern=TYPE_PATTERN, examples=["order_rejected"])]
    severity: Annotated[
        str,
        Meta(
            description="critical, error, warning or info, any case; aliases sev1, sev2, "
            "sev3, fatal, warn",
            examples=["critical"],
        ),
    ]
    summary: Annotated[str, Meta(min_length=1, description="longer than 255 is cut to 252 + '...'")]
    source: Annotated[str, Meta(min_length=1, max_length=255)] | None = None
    status: Status = "firing"
    labels: (
        Annotated[
            dict[
                Annotated[str, Meta(pattern=LABEL_NAME_PATTERN)],
                Annotated[str, Meta(max_length=MAX_LABEL_VALUE_CHARS)],
            ],
            Meta(max_length=MAX_LABELS, description="the alert's identity, with its type"),
        ]
        | None
    ) = None
    fingerprint: Annotated[str, Meta(min_length=1, max_length=MAX_FINGERPRINT_CHARS)] | None = None
    details: dict[str, Any] | None = None
    timestamp: Annotated[str, Meta(description="RFC 3339 with an offset")] | None = None
    event_id: Annotated[str, Meta(min_length=1, max_length=256)] | None = None
    ends_at: (
        Annotated[
            str,
            Meta(description="RFC 3339 with an offset: the alert resolves by itself then"),
        ]
        | None
    ) = None


class Notification(Struct, kw_only=True):
    """What a receiver is told: the webhook body; other channels render the same fields."""

    notification_id: str
    reason: Reason
    alert_id: str
    fingerprint: str
    dedup_key: str
    type: str
    severity: Severity
    status: Status
    summary: str
    source: str
    labels: dict[str, str]
    details: dict[str, Any]
    first_seen: Timestamp
    last_seen: Timestamp
    occurrences: int
    suppressed_count: int
    receiver: str


class AlertInGroup(Struct, kw_only=True):
    """One alert of a group notification: section 5's alert fields, as of the group's
    routed fact, with its own ``reason`` (what is news about it in this notification)."""

    reason: Reason
    alert_id: str
    fingerprint: str
    dedup_key: str
    type: str
    severity: Severity
    status: Status
    summary: str
    source: str
    labels: dict[str, str]
    details: dict[str, Any]
    first_seen: Timestamp
    last_seen: Timestamp
    occurrences: int
    suppressed_count: int


class GroupNotification(Struct, kw_only=True):
    """What a receiver of a grouped route is told (DESIGN.md section 11): one
    notification for a group of alerts; ``alerts`` most severe first, then oldest, at
    most the route's ``max_alerts`` of them, the others counted in ``truncated_alerts``."""

    notification_id: str
    reason: GroupReason
    receiver: str
    group_key: str
    group_labels: dict[str, str]
    status: Status
    alerts: list[AlertInGroup]
    truncated_alerts: int = 0

    @property
    def severity(self) -> Severity:
        """The group's severity: its most severe listed alert's (they come first)."""
        return self.alerts[0].severity if self.alerts else "info"


Body = Notification | GroupNotification
"""Either body a channel sends."""


class ListedAlert(Struct):
    """What the delivery needs of a listed alert besides its bytes: its identity and
    severity (the first one's name a group's outcomes and its severity)."""

    alert_id: str
    fingerprint: str
    severity: Severity


_listed_decoder = msgspec.json.Decoder(list[ListedAlert])
_alerts_decoder = msgspec.json.Decoder(list[AlertInGroup])


class EncodedGroup(Struct, kw_only=True):
    """A group notification (``GroupNotification``'s fields, in its order) whose alert
    list is kept as the JSON its ``group.notified`` fact was encoded with, once, on the
    router (``events.GroupNotified.alerts_json``). Encoded, it is the same bytes as the
    ``GroupNotification``, so a webhook sends a group's body without decoding its alerts
    and encoding them again (0.2-0.8 ms a body of a few hundred, issue #20's W5); a
    channel that renders the alerts asks for ``decoded``."""

    notification_id: str
    reason: GroupReason
    receiver: str
    group_key: str
    group_labels: dict[str, str]
    status: Status
    alerts: msgspec.Raw
    truncated_alerts: int = 0

    def decoded(self) -> GroupNotification:
        """The group notification these bytes are, its alerts decoded."""
        return GroupNotification(
            notification_id=self.notification_id,
            reason=self.reason,
            receiver=self.receiver,
            group_key=self.group_key,
            group_labels=self.group_labels,
            status=self.status,
            alerts=_alerts_decoder.decode(self.alerts),
            truncated_alerts=self.truncated_alerts,
        )

    def first_listed(self) -> ListedAlert | None:
        """The first (most severe, oldest) listed alert's identity and severity, read
        from the bytes without building the alerts; ``None`` when none is listed."""
        listed = _listed_decoder.decode(self.alerts)
        return listed[0] if listed else None

    @property
    def severity(self) -> Severity:
        """The group's severity, as ``GroupNotification.severity``."""
        first = self.first_listed()
        return first.severity if first is not None else "info"


def encoded_group(group: GroupNotification) -> EncodedGroup:
    """``group`` with its alerts encoded (a re-queued group, whose fact holds the body)."""
    return EncodedGroup(
        notification_id=group.notification_id,
        reason=group.reason,
        receiver=group.receiver,
        group_key=group.group_key,
        group_labels=group.group_labels,
        status=group.status,
        alerts=msgspec.Raw(msgspec.json.encode(group.alerts)),
        truncated_alerts=group.truncated_alerts,
    )


def outcome_identity(body: Body | EncodedGroup) -> tuple[str, str, str | None]:
    """``(alert_id, fingerprint, group_key)`` the outcomes of a notification carry: a
    group's are its first listed alert's, with its group key."""
    if isinstance(body, GroupNotification | EncodedGroup):
        first = (
            body.first_listed()
            if isinstance(body, EncodedGroup)
            else (body.alerts[0] if body.alerts else None)
        )
        return (
            (first.alert_id, first.fingerprint, body.group_key)
            if first
            else ("", "", body.group_key)
        )
    return body.alert_id, body.fingerprint, None


class WorkItem(Struct, kw_only=True):
    """A notification queued on ``tocsin.route.<receiver>`` (internal): the body to send
    (``notification`` for an alert, ``group`` for a group) plus where its routed fact
    sits in the log."""

    notification: Notification | None = None
    log_seq: int
    trace_id: str | None = None
    generation: int = 0  # re-queues after a dead letter; part of the outcome message ids
    group: GroupNotification | None = None
    # whether its success raises the receiver's order record (``order.must_raise``);
    # an item of an older version, without the field, does
    raise_order: bool = True

    @property
    def body(self) -> Body:
        """What to send."""
        body = self.group or self.notification
        assert body is not None, "a work item carries a notification or a group"
        return body


class EncodedWorkItem(Struct, kw_only=True):
    """A ``WorkItem`` (its fields, in its order) whose group is an ``EncodedGroup``: the
    same JSON, in which the router splices a group's alerts as its fact encoded them,
    and from which a delivery worker reads every item, a group's alerts left encoded."""

    notification: Notification | None = None
    log_seq: int
    trace_id: str | None = None
    generation: int = 0
    group: EncodedGroup | None = None
    raise_order: bool = True

    @property
    def body(self) -> Notification | EncodedGroup:
        """What to send."""
        body = self.group or self.notification
        assert body is not None, "a work item carries a notification or a group"
        return body


class DeliverySucceeded(Notification, kw_only=True):
    """One message on ``alerts.delivered`` per successful notification."""

    channel: str
    attempts: int
    delivered_at: Timestamp
    log_seq: int
    trace_id: str | None = None
    status_code: int | None = None  # the receiver's HTTP answer; null when not HTTP


class DeliveryDeadLettered(Notification, kw_only=True):
    """One message on ``alerts.delivery_failed`` per dead-lettered notification."""

    channel: str
    attempts: int
    failed_at: Timestamp
    log_seq: int
    error: str
    last_status_code: int | None
    trace_id: str | None = None


class DeliveryAttemptFailed(Struct, kw_only=True):
    """One message on ``tocsin.attempts.<receiver>`` per failed attempt that will be retried."""

    notification_id: str
    receiver: str
    alert_id: str
    fingerprint: str
    channel: str
    attempt: int
    error: str
    status_code: int | None
    retry_in_seconds: float
    failed_at: Timestamp
    log_seq: int
    trace_id: str | None = None
    group_key: str | None = None  # a group notification's


class GroupDeliverySucceeded(GroupNotification, kw_only=True):
    """The ``alerts.delivered`` message of a group notification: its body plus the
    fields of ``DeliverySucceeded``."""

    channel: str
    attempts: int
    delivered_at: Timestamp
    log_seq: int
    trace_id: str | None = None
    status_code: int | None = None


class GroupDeliveryDeadLettered(GroupNotification, kw_only=True):
    """The ``alerts.delivery_failed`` message of a group notification."""

    channel: str
    attempts: int
    failed_at: Timestamp
    log_seq: int
    error: str
    last_status_code: int | None
    trace_id: str | None = None


class EncodedGroupDelivered(EncodedGroup, kw_only=True):
    """``GroupDeliverySucceeded`` (its fields, in its order, the same JSON) with the
    alerts as the work item carried them: a delivery worker's outcome message."""

    channel: str
    attempts: int
    delivered_at: Timestamp
    log_seq: int
    trace_id: str | None = None
    status_code: int | None = None


class EncodedGroupDeadLettered(EncodedGroup, kw_only=True):
    """``GroupDeliveryDeadLettered`` (its fields, in its order, the same JSON) with the
    alerts as the work item carried them."""

    channel: str
    attempts: int
    failed_at: Timestamp
    log_seq: int
    error: str
    last_status_code: int | None
    trace_id: str | None = None


class DeliverySuperseded(Struct, kw_only=True):
    """One message on ``tocsin.superseded.<receiver>`` (internal) per notification
    dropped because the receiver already accepted a later one of its fingerprint
    (``superseded_by``, routed at ``superseded_by_seq``)."""

    notification_id: str
    receiver: str
    alert_id: str
    fingerprint: str
    channel: str
    attempts: int
    superseded_by: str
    superseded_by_seq: int
    superseded_at: Timestamp
    log_seq: int
    trace_id: str | None = None
    group_key: str | None = None  # a group notification's (ordered by its group key)


class Rejected(Struct, kw_only=True):
    """One message on ``alerts.rejected`` per refused inbound event."""

    reason: str
    field: str | None
    subject: str
    received_at: Timestamp
    raw: str
    raw_encoding: Literal["utf-8", "base64"]
    log_seq: int


SCHEMA_TYPES: dict[str, type[Struct]] = {
    "alert-event": InboundEvent,
    "notification": Notification,
    "group-notification": GroupNotification,
    "alerts.delivered": DeliverySucceeded,
    "alerts.delivery_failed": DeliveryDeadLettered,
    "alerts.rejected": Rejected,
}


def _clean_descriptions(node: Any) -> Any:
    """Every ``description`` as ``inspect.cleandoc`` gives it: msgspec releases differ in
    whether they keep a docstring's indentation, and ``schemas/`` must not depend on that."""
    if isinstance(node, dict):
        return {
            key: inspect.cleandoc(value)
            if key == "description" and isinstance(value, str)
            else _clean_descriptions(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_clean_descriptions(item) for item in node]
    return node


def json_schemas() -> dict[str, bytes]:
    """Each wire type's JSON Schema, keyed by file name, formatted for review in diffs."""
    out: dict[str, bytes] = {}
    for name, kind in SCHEMA_TYPES.items():
        schema = _clean_descriptions(msgspec.json.schema(kind))
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["title"] = name
        out[f"{name}.schema.json"] = (
            msgspec.json.format(msgspec.json.encode(schema), indent=2) + b"\n"
        )
    return out
