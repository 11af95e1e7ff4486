"""Read models over the projection (pure): what the API, the dashboard and the commands
show. Handlers fetch (the projection, a few log rows); these functions shape."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any, Literal, assert_never

import msgspec
from msgspec import Struct

from tocsin.core import events as ev
from tocsin.core import heartbeats
from tocsin.core.alert_index import AlertIndex, Key, key_of
from tocsin.core.contracts import SEVERITY_RANK, GroupNotification, Notification, outcome_identity
from tocsin.core.decide.silences import covering
from tocsin.core.events import StoredRow
from tocsin.core.fold import fold
from tocsin.core.kinds import by_tag, handled_by, tag_of
from tocsin.core.outbound import group_notification_of, notification_body
from tocsin.core.state import (
    HOUR_US,
    KEEP_HOURS,
    Alert,
    Chain,
    DeliveryStatus,
    Group,
    Heartbeat,
    Silence,
    State,
    hour_of,
)
from tocsin.core.times import format_us

MAX_LIMIT = 500
DEFAULT_LIMIT = 50
MAX_EVENTS_LIMIT = 1000
DEFAULT_EVENTS_LIMIT = 100
SEVERITIES = sorted(SEVERITY_RANK, key=SEVERITY_RANK.__getitem__, reverse=True)
ALERT_STATUSES = ("firing", "acked", "silenced", "inhibited", "resolved")


class AlertView(Struct, kw_only=True):
    """An alert as the API shows it. ``unrouted`` (additive; ``status`` keeps DESIGN's
    values, ``ALERT_STATUSES``): no route matched its news and no receiver was ever
    told of it, which ``receivers: []`` alone does not tell from a silenced alert.
    ``inhibited_by``: the open alert an inhibit rule holds its news back for (its
    ``status`` is then ``inhibited``, unless acknowledged or silenced)."""

    id: str
    fingerprint: str
    type: str
    severity: str
    status: str
    summary: str
    source: str
    labels: dict[str, str]
    details: dict[str, Any]
    first_seen: str
    last_seen: str
    occurrences: int
    suppressed_count: int
    receivers: list[str]
    last_delivery_status: str | None
    resolved_at: str | None = None
    trace_id: str | None = None
    acked_by: str | None = None
    acked_at: str | None = None
    ack_comment: str | None = None
    resolved_by: str | None = None
    unrouted: bool = False
    inhibited_by: str | None = None


class EscalationView(Struct, kw_only=True):
    """A running escalation chain an alert is in (DESIGN.md section 13): started by its
    route's first notification at ``started_at``; ``next_step`` (0 = the first, as in
    ``escalation.fired``) tells ``next_receivers`` at ``next_due_at`` unless the alert
    (every alert of ``group_keys``) is acknowledged or resolved first; both ``None``
    once every step fired."""

    chain: str
    route: int
    started_at: str
    steps: int
    fired: int
    next_step: int | None
    next_receivers: list[str]
    next_due_at: str | None
    group_keys: list[str] = []


class FlappingView(Struct, kw_only=True):
    """The alert's fingerprint flaps (DESIGN.md section 13): its news is held since
    ``since``, until it is stable for the window (``settles_at``, moved by each
    change)."""

    since: str
    settles_at: str | None


class AlertDetail(AlertView, kw_only=True):
    """An alert and its history from the log, the open groups it is in, and
    (additive) its running escalation chains and whether its fingerprint flaps."""

    history: list[EventRecord]
    groups: list[GroupView] = []
    escalations: list[EscalationView] = []
    flapping: FlappingView | None = None


class DeliveryRecord(Struct, kw_only=True):
    """One step of one notification: queued, each failed attempt, the outcome."""

    notification_id: str
    receiver: str
    channel: str | None
    attempt: int
    status: str
    status_code: int | None
    error: str | None
    ts: str
    reason: str | None = None
    seq: int


class NotificationView(Struct, kw_only=True):
    """``GET /api/v1/notifications/{id}``: one notification exactly as sent (DESIGN.md
    invariant 6): the body its receiver got, rebuilt from the log up to its routed
    fact; ``status`` and ``attempts`` of its current round (reset by a re-queue),
    ``generation`` the re-queues, ``routed_seq`` the seq of its routed fact."""

    notification_id: str
    receiver: str
    channel: str | None
    body: Notification
    attempts: int
    status: DeliveryStatus
    routed_seq: int
    generation: int


class GroupNotificationView(Struct, kw_only=True):
    """``GET /api/v1/notifications/{id}`` for a group's notification (DESIGN.md
    section 11): ``NotificationView``'s fields, in its order, with the group body its
    receiver got. A type of its own, not ``body: Notification | GroupNotification``:
    msgspec (and so the OpenAPI document Litestar makes with it) takes no union of two
    untagged Structs, and a tag would add a field to the body, which must be the body
    as sent. The endpoint answers one or the other (``oneOf`` in ``/openapi.json``)."""

    notification_id: str
    receiver: str
    channel: str | None
    body: GroupNotification
    attempts: int
    status: DeliveryStatus
    routed_seq: int
    generation: int


class DeliveryList(Struct, kw_only=True):
    deliveries: list[DeliveryRecord]


class EventPage(Struct, kw_only=True):
    events: list[EventRecord]
    next_after_seq: int | None


class ReceiverCounts(Struct, kw_only=True):
    """Additive: ``superseded`` (not sent: a later notification of the same fingerprint
    had been accepted; neither a delivery nor a failure)."""

    delivered: int = 0
    failed_attempts: int = 0
    dead: int = 0
    superseded: int = 0


class QueueCounts(Struct, kw_only=True):
    """Additive: ``superseded``, settled without a send (not in the success rate)."""

    pending: int
    retrying: int
    dead: int
    superseded: int = 0


class LastSeen(Struct, kw_only=True):
    alert_id: str
    summary: str
    ts: str


class Stats(Struct, kw_only=True):
    """DESIGN.md sections 7 and 10; ``delivery_success_rate`` is null while nothing in
    the window was delivered or dead-lettered (no rate to speak of). Additive:
    ``per_hour`` (firing events per hour by severity, the dashboard's chart),
    ``rejected`` (inbound messages refused in the window), ``rejected_by_reason``
    (those by reason code, most first), ``unrouted`` (alerts found in the window to
    match no route: nobody was told of them), ``inhibited`` (firing events held back
    by an inhibit rule, counted in ``suppressed`` too), ``muted`` (group notifications
    time intervals deferred: ``group.deferred``), ``flapping`` (firing events held
    because their fingerprint flaps; also in ``suppressed``) ``escalations``
    (escalation steps fired) and ``heartbeats_missed`` (heartbeat deadlines missed in
    the window, DESIGN.md section 13)."""

    window_hours: int
    total: int
    by_severity: dict[str, int]
    by_type: dict[str, int]
    suppressed: int
    dedup_ratio: float
    delivery_success_rate: float | None
    by_receiver: dict[str, ReceiverCounts]
    queue: QueueCounts
    last_by_severity: dict[str, LastSeen | None]
    per_hour: list[dict[str, Any]]
    rejected: int
    rejected_by_reason: dict[str, int]
    unrouted: int
    inhibited: int = 0
    muted: int = 0
    flapping: int = 0
    escalations: int = 0
    heartbeats_missed: int = 0


class SilenceView(Struct, kw_only=True):
    id: str
    matchers: dict[str, Any]
    starts_at: str
    ends_at: str
    created_by: str
    comment: str
    created_at: str
    state: str  # pending, active, expired, deleted
    deleted_at: str | None = None
    deleted_by: str | None = None


class SilenceList(Struct, kw_only=True):
    silences: list[SilenceView]


class GroupAlertView(Struct, kw_only=True):
    """An alert of an open group: enough to list it, with what is news about it."""

    alert_id: str
    severity: str
    summary: str
    status: str  # firing, resolved (listed as resolved in the group's next notification)
    news: str | None  # its reason in the next notification; None: nothing new
    acked: bool


class GroupView(Struct, kw_only=True):
    """An open notification group (``GET /api/v1/groups``, DESIGN.md section 7)."""

    group_key: str
    receiver: str
    route: int
    group_labels: dict[str, str]
    alert_ids: list[str]
    alerts: list[GroupAlertView]
    firing: int
    notifications: int
    opened_at: str
    last_notified_at: str | None
    next_due_at: str | None  # when the clock next decides for it; None: nothing pending
    deferred_until: str | None


class GroupList(Struct, kw_only=True):
    groups: list[GroupView]


HeartbeatStatus = Literal["ok", "waiting", "missed"]


class HeartbeatView(Struct, kw_only=True):
    """A heartbeat (DESIGN.md section 13): its rule, its beats, and its next deadline
    (null while its ``heartbeat.missed`` alert, ``alert_id``, is open). ``status``:
    ``ok`` (it beat), ``waiting`` (no beat yet since it was configured), ``missed``
    (its alert is open until the next beat)."""

    name: str
    status: HeartbeatStatus
    every_seconds: float
    grace_seconds: float
    severity: str
    summary: str
    labels: dict[str, str]
    configured_at: str
    last_beat: str | None
    beats: int
    missed: int
    next_deadline: str | None
    alert_id: str | None


class HeartbeatList(Struct, kw_only=True):
    heartbeats: list[HeartbeatView]


class AlertPage(Struct, kw_only=True):
    alerts: list[AlertView]
    next_cursor: str | None


TIME_FIELDS = frozenset(
    {
        "timestamp",
        "received_at",
        "resolved_at",
        "at",
        "starts_at",
        "ends_at",
        "created_at",
        "due_at",  # a clock fact's timer (DESIGN.md section 11)
        "fired_at",
        "until",  # group.deferred
        "last_beat",
    }
)


class EventRecord(msgspec.Struct, kw_only=True):
    """One log row as ``replay --json`` and ``/api/v1/events`` print it."""

    seq: int
    ts: str
    kind: str
    data: dict[str, Any]


class QueryError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def view_status(alert: Alert, silenced: bool) -> str:
    """``resolved``, else ``acked``, else ``silenced`` (an active silence matches it),
    else ``inhibited`` (an inhibit rule held back its last news), else ``firing``."""
    if alert.status == "resolved":
        return "resolved"
    if alert.acked_at is not None:
        return "acked"
    if silenced:
        return "silenced"
    return "inhibited" if alert.inhibited_by is not None else "firing"


def is_silenced(state: State, alert: Alert, now: int) -> bool:
    if alert.status == "resolved" or not state.silences:
        return False
    return (
        covering(
            state.silences.values(),
            now,
            severity=alert.severity,
            type_=alert.type,
            source=alert.source,
            labels=alert.labels,
        )
        is not None
    )


def _optional_time(us: int | None) -> str | None:
    return None if us is None else format_us(us)


def record(seq: int, ts: int, kind: str, data: bytes) -> EventRecord:
    """A row for output: the event's fields without its tag, instants as RFC 3339."""
    fields: dict[str, Any] = msgspec.json.decode(data)
    fields.pop("kind", None)
    for key in TIME_FIELDS & fields.keys():
        if isinstance(fields[key], int):
            fields[key] = format_us(fields[key])
    return EventRecord(seq=seq, ts=format_us(ts), kind=kind, data=fields)


def alert_view(alert: Alert, silenced: bool = False) -> AlertView:
    return AlertView(
        id=alert.id,
        fingerprint=alert.fingerprint,
        type=alert.type,
        severity=alert.severity,
        status=view_status(alert, silenced),
        summary=alert.summary,
        source=alert.source,
        labels=alert.labels,
        details=alert.details,
        first_seen=format_us(alert.first_seen),
        last_seen=format_us(alert.last_seen),
        occurrences=alert.occurrences,
        suppressed_count=alert.suppressed_count,
        receivers=list(alert.receivers),
        last_delivery_status=alert.last_delivery_status,
        resolved_at=_optional_time(alert.resolved_at),
        trace_id=alert.trace_id,
        acked_by=alert.acked_by,
        acked_at=_optional_time(alert.acked_at),
        ack_comment=alert.ack_comment,
        resolved_by=alert.resolved_by,
        unrouted=alert.unrouted,
        inhibited_by=alert.inhibited_by,
    )


def _encode_cursor(key: Key, group: int | None = None) -> str:
    position = f"{key[0]}:{key[1]}"
    if group is not None:  # the status-grouped order (the dashboard's): its group too
        position = f"g{group}:{position}"
    return base64.urlsafe_b64encode(position.encode()).decode()


def _decode_cursor(cursor: str, grouped: bool) -> tuple[int, int, str]:
    """``(group, last_seen, id)``; the group is 0 in the plain order."""
    try:
        text = base64.urlsafe_b64decode(cursor.encode()).decode()
        group = 0
        if grouped:
            head, _, text = text.partition(":")
            if not head.startswith("g"):
                raise ValueError(head)
            group = int(head[1:])
        last_seen, _, alert_id = text.partition(":")
        return group, int(last_seen), alert_id
    except (ValueError, binascii.Error, UnicodeDecodeError) as error:
        raise QueryError("cursor", "cursor is not one this API returned") from error


AlertOrder = Literal["last_seen", "status"]


def shown_status(state: State, alert: Alert, now: int) -> str:
    """The status an alert shows as of ``now`` (``view_status``); a silence is looked for
    only when it could matter (an open alert nobody acknowledged)."""
    if alert.status == "resolved" or alert.acked_at is not None:
        return view_status(alert, False)
    return view_status(alert, is_silenced(state, alert, now))


class AlertQuery(Struct, kw_only=True, frozen=True):
    """A checked request for a page of alerts: the filters, the page size, and the
    position after which it starts (``before``: the decoded cursor)."""

    severity: str | None = None
    type_: str | None = None
    status: str | None = None
    source: str | None = None
    q: str | None = None
    limit: int = DEFAULT_LIMIT
    before: Key | None = None

    def reaches_the_file(self) -> bool:
        """Whether alerts the projection let go of can match: they are all resolved."""
        return self.status in (None, "resolved")


def alert_query(
    *,
    severity: str | None = None,
    type_: str | None = None,
    status: str | None = None,
    source: str | None = None,
    q: str | None = None,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> AlertQuery:
    """The query, or ``QueryError`` naming the parameter at fault."""
    if not 1 <= limit <= MAX_LIMIT:
        raise QueryError("limit", f"limit must be 1 to {MAX_LIMIT}")
    if status and status not in ALERT_STATUSES:
        raise QueryError("status", f"status must be one of {', '.join(ALERT_STATUSES)}")
    before = None
    if cursor:
        _, last_seen, alert_id = _decode_cursor(cursor, grouped=False)
        before = (last_seen, alert_id)
    return AlertQuery(
        severity=severity or None,
        type_=type_ or None,
        status=status or None,
        source=source or None,
        q=q or None,
        limit=limit,
        before=before,
    )


def accepts(state: State, query: AlertQuery, now: int) -> Callable[[Alert], bool]:
    """Whether an alert (of the projection, or folded back from the file) passes the
    query's filters; ``status`` is the one shown as of ``now``."""
    needle = query.q.lower() if query.q else None

    def passes(alert: Alert) -> bool:
        if query.severity and alert.severity != query.severity:
            return False
        if query.type_ and alert.type != query.type_:
            return False
        if query.source and alert.source != query.source:
            return False
        if needle:
            haystack = " ".join([alert.summary, *alert.labels.keys(), *alert.labels.values()])
            if needle not in haystack.lower():
                return False
        return not query.status or shown_status(state, alert, now) == query.status

    return passes


def newest_alerts(
    state: State, query: AlertQuery, index: AlertIndex | None, now: int
) -> list[Alert]:
    """Up to ``limit + 1`` of the projection's alerts that pass the query, newest first
    after its cursor: a walk of ``index`` (made if not given) that stops there, so a
    page looks at ``limit + 1`` alerts, or more only as filters skip some."""
    index = index if index is not None else AlertIndex.of(state)
    passes = accepts(state, query, now)
    found: list[Alert] = []
    for alert in index.newest_first(state, query.before):
        if passes(alert):
            found.append(alert)
            if len(found) > query.limit:
                break
    return found


def alert_page(
    state: State,
    query: AlertQuery,
    alerts: list[Alert],
    now: int,
    reached: Key | None = None,
) -> AlertPage:
    """A page from ``alerts`` that pass ``query`` (the projection's and the file's, each
    newest first with one more than a page): merged newest first, the cursor after the
    last one shown. ``reached``: the file was looked at only down to that position (it
    included), so nothing below it is shown yet and the next page starts there."""
    unique = {alert.id: alert for alert in alerts}  # let go of while the file was read
    ordered = sorted(unique.values(), key=key_of, reverse=True)
    if reached is not None:
        ordered = [a for a in ordered if key_of(a) >= reached]
    page = ordered[: query.limit]
    next_cursor = None
    if len(ordered) > query.limit:
        next_cursor = _encode_cursor(key_of(page[-1]))
    elif reached is not None:
        next_cursor = _encode_cursor(reached)
    views = [alert_view(a, is_silenced(state, a, now)) for a in page]
    return AlertPage(alerts=views, next_cursor=next_cursor)


def _matching(
    state: State,
    *,
    severity: str | None = None,
    type_: str | None = None,
    source: str | None = None,
    q: str | None = None,
) -> list[Alert]:
    """The alerts that match these filters (all but status), in no particular order."""
    passes = accepts(state, AlertQuery(severity=severity, type_=type_, source=source, q=q), 0)
    return [alert for alert in state.alerts.values() if passes(alert)]


def list_alerts(
    state: State,
    *,
    severity: str | None = None,
    type_: str | None = None,
    status: str | None = None,
    source: str | None = None,
    q: str | None = None,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
    now: int = 0,
    order: AlertOrder = "last_seen",
    index: AlertIndex | None = None,
) -> AlertPage:
    """The projection's alerts newest first by ``last_seen``, filtered, one page at a
    time; ``status`` is the one shown (firing, acked, silenced as of ``now``, resolved).
    ``order="status"`` (the dashboard's table) groups them by that status first, in
    ``ALERT_STATUSES`` order (firing first, resolved last), each group newest first; its
    cursors are its own. The API keeps the plain order (DESIGN.md section 10), walking
    ``index`` (``newest_alerts``) and adding what the file holds (``alert_page``)."""
    filters = {"severity": severity, "type_": type_, "status": status, "source": source}
    if order == "last_seen":
        query = alert_query(**filters, q=q, limit=limit, cursor=cursor)
        return alert_page(state, query, newest_alerts(state, query, index, now), now)
    alert_query(**filters, q=q, limit=limit)  # the same checks
    after = _decode_cursor(cursor, grouped=True) if cursor else None
    alerts = _matching(state, severity=severity, type_=type_, source=source, q=q)
    if status:
        alerts = [a for a in alerts if shown_status(state, a, now) == status]
    rank = {name: index for index, name in enumerate(ALERT_STATUSES)}
    # (group, alert): newest first, ties by id descending; then (stable) by group.
    ordered = [(rank[shown_status(state, a, now)], a) for a in alerts]
    ordered.sort(key=lambda item: key_of(item[1]), reverse=True)
    ordered.sort(key=lambda item: item[0])
    if after is not None:
        group, last_seen, alert_id = after
        ordered = [
            (g, a)
            for g, a in ordered
            if g > group or (g == group and key_of(a) < (last_seen, alert_id))
        ]
    page = ordered[:limit]
    next_cursor = None
    if len(ordered) > limit:
        group, last = page[-1]
        next_cursor = _encode_cursor(key_of(last), group)
    views = [alert_view(a, is_silenced(state, a, now)) for _, a in page]
    return AlertPage(alerts=views, next_cursor=next_cursor)


def alert_counts(
    state: State,
    now: int,
    *,
    type_: str | None = None,
    source: str | None = None,
    q: str | None = None,
) -> dict[str, dict[str, int]]:
    """``{status: {severity: n}}``: how many alerts ``list_alerts`` would list with these
    filters and that status and severity (every status and severity present, zeros
    included), the status as of ``now``."""
    counts = {status: dict.fromkeys(SEVERITIES, 0) for status in ALERT_STATUSES}
    for alert in _matching(state, type_=type_, source=source, q=q):
        row = counts[shown_status(state, alert, now)]
        row[alert.severity] = row.get(alert.severity, 0) + 1
    return counts


def history(rows: list[StoredRow]) -> list[EventRecord]:
    """An alert's log rows for people: each duplicate (a received event and the
    suppression that followed it) is folded into one entry per run of duplicates, with
    ``count``, ``last_seq`` and ``last_ts``, so an alert that fired 100,000 times reads
    as a page, not a scroll."""
    out: list[EventRecord] = []
    received: StoredRow | None = None
    for row in rows:
        part = _IN_HISTORY.get(row.kind, "entry")
        if part == "received":
            if received is not None:
                out.append(record(received.seq, received.ts, received.kind, received.data))
            received = row
            continue
        if part == "suppressed" and received is not None:
            received = None
            previous = out[-1] if out else None
            if previous is not None and previous.kind == row.kind:
                previous.data["count"] = previous.data.get("count", 1) + 1
                previous.data["last_seq"] = row.seq
                previous.data["last_ts"] = format_us(row.ts)
                continue
            entry = record(row.seq, row.ts, row.kind, row.data)
            entry.data.update(count=1, last_seq=row.seq, last_ts=format_us(row.ts))
            out.append(entry)
            continue
        if received is not None:
            out.append(record(received.seq, received.ts, received.kind, received.data))
            received = None
        out.append(record(row.seq, row.ts, row.kind, row.data))
    if received is not None:
        out.append(record(received.seq, received.ts, received.kind, received.data))
    return out


HistoryPart = Literal["received", "suppressed", "entry"]


def _in_history(kind: type[ev.Event]) -> HistoryPart:
    """What a row of ``kind`` is in an alert's history: ``received`` waits for the next
    row, a ``suppressed`` row right after it folds the two into a run of duplicates, an
    ``entry`` is shown as it is."""
    if issubclass(kind, ev.AlertReceived):
        return "received"
    if issubclass(kind, ev.AlertSuppressed):
        return "suppressed"
    if issubclass(
        kind,
        ev.AlertOpened
        | ev.AlertEscalated
        | ev.AlertRouted
        | ev.AlertResolved
        | ev.AlertResolveIgnored
        | ev.AlertRejected
        | ev.AlertAcked
        | ev.AlertSilenced
        | ev.DeliveryAttemptFailed
        | ev.DeliverySucceeded
        | ev.DeliveryDeadLettered
        | ev.DeliveryRequeued
        | ev.DeliverySuperseded
        | ev.SilenceCreated
        | ev.SilenceDeleted
        | ev.ConfigLoaded
        | ev.StreamBound
        | ev.LogCompacted
        | ev.OutboxPublished
        | ev.GroupOpened
        | ev.AlertGrouped
        | ev.GroupNotified
        | ev.GroupDeferred
        | ev.SilenceExpired
        | ev.InhibitSource
        | ev.AlertInhibited
        | ev.InhibitReleased
        | ev.EscalationStarted
        | ev.EscalationFired
        | ev.AlertFlapping
        | ev.AlertSettled
        | ev.HeartbeatReceived
        | ev.HeartbeatMissed
        | ev.PartitionSeeded
        | ev.AlertMoved,
    ):
        return "entry"
    assert_never(kind)


_IN_HISTORY = by_tag(_in_history)


def alert_detail(state: State, alert: Alert, rows: list[StoredRow], now: int) -> AlertDetail:
    view = alert_view(alert, is_silenced(state, alert, now))
    return AlertDetail(
        **msgspec.structs.asdict(view),
        history=history(rows),
        groups=groups_of_alert(state, alert),
        escalations=escalations_of_alert(state, alert),
        flapping=flapping_of_alert(state, alert),
    )


def escalations_of_alert(state: State, alert: Alert) -> list[EscalationView]:
    """The running chains of the alert: its own (ungrouped routes) and its groups'."""
    keys: dict[str, None] = {}
    for owner in (alert.id, *alert.groups):
        keys.update(dict.fromkeys(state.chains_of.get(owner, ())))
    return [
        escalation_view(chain) for key in keys if (chain := state.escalations.get(key)) is not None
    ]


def escalation_view(chain: Chain) -> EscalationView:
    pending = chain.next_step < len(chain.steps)
    return EscalationView(
        chain=chain.key,
        route=chain.route,
        started_at=format_us(chain.started_at),
        steps=len(chain.steps),
        fired=chain.next_step,
        next_step=chain.next_step if pending else None,
        next_receivers=list(chain.steps[chain.next_step].receivers) if pending else [],
        next_due_at=_optional_time(chain.due_at),
        group_keys=list(chain.group_keys),
    )


def flapping_of_alert(state: State, alert: Alert) -> FlappingView | None:
    """Whether the alert's fingerprint flaps now (an open alert, or its latest)."""
    flap = state.flaps.get(alert.fingerprint)
    if flap is None or flap.since is None:
        return None
    current = state.open_by_fingerprint.get(alert.fingerprint)
    if current is not None and current.alert_id != alert.id:
        return None  # an older alert of the fingerprint
    return FlappingView(since=format_us(flap.since), settles_at=_optional_time(flap.due_at))


def deliveries(rows: list[StoredRow]) -> DeliveryList:
    """Every step of every notification of an alert, in log order."""
    out: list[DeliveryRecord] = []
    channels: dict[str, str] = {}
    for row in rows:
        step = _STEPS.get(row.kind)
        if step is not None:
            out.append(step(ev.decode(row.data), row, channels))
    for entry in out:
        if entry.channel is None:
            entry.channel = channels.get(entry.notification_id)
    return DeliveryList(deliveries=out)


def notification_view(
    routed_row: StoredRow, alert_rows: list[StoredRow], channels: dict[str, str]
) -> NotificationView | GroupNotificationView | None:
    """The notification of the routed fact at ``routed_row``, an ``alert.routed`` or a
    ``group.notified`` (``group_notification_view``), from the rows of its alert (of a
    group's, ``group_delivery_alert_ids``) in the log (ascending; ``channels``:
    receiver -> channel of the config it was routed under, for one not sent yet). The
    rows are folded with the projection's own fold: its delivery's body is the alert
    as of the routed fact, exactly what ``outbound`` built the work item from, and the
    rows after it tell its fate. ``None`` when the rows before the routed fact are gone
    (compacted away)."""
    routed = ev.decode(routed_row.data)
    if isinstance(routed, ev.GroupNotified):
        return group_notification_view(routed_row, routed, alert_rows, channels)
    assert isinstance(routed, ev.AlertRouted)
    state = State(keep_everything=True)  # a sweep would let a delivered one go
    body: Notification | None = None
    for row in alert_rows:
        fold(state, row.seq, row.ts, ev.decode(row.data))
        if row.seq == routed_row.seq:
            delivery = state.deliveries.get(routed.notification_id)
            if delivery is None or delivery.as_routed is None:
                return None
            body = notification_body(routed, delivery.as_routed)
    delivery = state.deliveries.get(routed.notification_id)
    if body is None or delivery is None:
        return None
    return NotificationView(
        notification_id=routed.notification_id,
        receiver=routed.receiver,
        channel=delivery.channel or channels.get(routed.receiver),
        body=body,
        attempts=delivery.attempts,
        status=delivery.status,
        routed_seq=routed_row.seq,
        generation=delivery.generation,
    )


_DELIVERY_FACTS = (
    ev.DeliveryAttemptFailed,
    ev.DeliverySucceeded,
    ev.DeliveryDeadLettered,
    ev.DeliverySuperseded,
    ev.DeliveryRequeued,
)
_DELIVERY_TAGS = frozenset(tag_of(kind) for kind in _DELIVERY_FACTS)
"""The facts that tell a notification's fate after its routed fact, by ``kind``: a
row of another kind is not decoded at all."""


def group_delivery_alert_ids(routed: ev.GroupNotified) -> list[str]:
    """The alert ids a group notification's delivery facts are logged under (the log's
    indexed ``alert_id`` column; a group's routed fact has none): its outcomes name its
    first listed alert (``contracts.outcome_identity``, as the delivery worker and the
    recorder do), a re-queue the first of its ``alert_ids`` (the fold's delivery, which
    ``commands`` re-queues). An empty id (no alert listed) names no alert's rows."""
    first_listed, _, _ = outcome_identity(group_notification_of(routed))
    named = dict.fromkeys([first_listed, *routed.alert_ids[:1]])  # once each, in order
    return [alert_id for alert_id in named if alert_id]


def group_notification_view(
    routed_row: StoredRow,
    routed: ev.GroupNotified,
    rows: Iterable[StoredRow],
    channels: dict[str, str],
) -> GroupNotificationView:
    """A group's notification: its body is all in its routed fact (the body ``outbound``
    sends, ``group_notification_of``), and its fate is the delivery the projection's
    fold makes of that fact and of the delivery facts of its id among ``rows`` (those
    of ``group_delivery_alert_ids``, ascending; the rows of other notifications of
    those alerts are passed over)."""
    state = State(keep_everything=True)  # a sweep would let a delivered one go
    fold(state, routed_row.seq, routed_row.ts, routed)
    for row in rows:
        if row.seq <= routed_row.seq or row.kind not in _DELIVERY_TAGS:
            continue
        event = ev.decode(row.data)
        if isinstance(event, _DELIVERY_FACTS) and event.notification_id == routed.notification_id:
            fold(state, row.seq, row.ts, event)
    delivery = state.deliveries[routed.notification_id]
    return GroupNotificationView(
        notification_id=routed.notification_id,
        receiver=routed.receiver,
        channel=delivery.channel or channels.get(routed.receiver),
        body=group_notification_of(routed),
        attempts=delivery.attempts,
        status=delivery.status,
        routed_seq=routed_row.seq,
        generation=delivery.generation,
    )


def _queued(event: ev.AlertRouted, row: StoredRow, channels: dict[str, str]) -> DeliveryRecord:
    return DeliveryRecord(
        notification_id=event.notification_id,
        receiver=event.receiver,
        channel=None,
        attempt=0,
        status="queued",
        status_code=None,
        error=None,
        ts=format_us(row.ts),
        reason=event.reason,
        seq=row.seq,
    )


def _requeued(
    event: ev.DeliveryRequeued, row: StoredRow, channels: dict[str, str]
) -> DeliveryRecord:
    return DeliveryRecord(
        notification_id=event.notification_id,
        receiver=event.receiver,
        channel=None,
        attempt=0,
        status="requeued",
        status_code=None,
        error=None,
        ts=format_us(row.ts),
        reason=event.reason,
        seq=row.seq,
    )


def _sent(
    event: ev.DeliveryAttemptFailed | ev.DeliveryDeadLettered | ev.DeliverySucceeded,
    row: StoredRow,
    channels: dict[str, str],
    *,
    status: str,
    attempt: int,
    error: str | None,
) -> DeliveryRecord:
    """The step of one send's outcome. It also notes the notification's channel in
    ``channels``: the queued step, logged before any send, takes its channel from there."""
    channels[event.notification_id] = event.channel
    return DeliveryRecord(
        notification_id=event.notification_id,
        receiver=event.receiver,
        channel=event.channel,
        attempt=attempt,
        status=status,
        status_code=event.status_code,
        error=error,
        ts=format_us(event.at),
        seq=row.seq,
    )


def _failed(
    event: ev.DeliveryAttemptFailed, row: StoredRow, channels: dict[str, str]
) -> DeliveryRecord:
    return _sent(event, row, channels, status="failed", attempt=event.attempt, error=event.error)


def _dead(
    event: ev.DeliveryDeadLettered, row: StoredRow, channels: dict[str, str]
) -> DeliveryRecord:
    return _sent(event, row, channels, status="dead", attempt=event.attempts, error=event.error)


def _delivered(
    event: ev.DeliverySucceeded, row: StoredRow, channels: dict[str, str]
) -> DeliveryRecord:
    return _sent(event, row, channels, status="delivered", attempt=event.attempts, error=None)


def _superseded(
    event: ev.DeliverySuperseded, row: StoredRow, channels: dict[str, str]
) -> DeliveryRecord:
    """Settled unsent: the receiver had accepted a later notification of the
    fingerprint (the error names it)."""
    channels[event.notification_id] = event.channel
    return DeliveryRecord(
        notification_id=event.notification_id,
        receiver=event.receiver,
        channel=event.channel,
        attempt=event.attempts,
        status="superseded",
        status_code=None,
        error=f"superseded by {event.superseded_by} (routed at seq {event.superseded_by_seq})",
        ts=format_us(event.at),
        seq=row.seq,
    )


# One step of a notification from its row (``channels``: notification id -> the
# channel its sends went through, for the steps logged before the first send).
Step = Callable[[Any, StoredRow, dict[str, str]], DeliveryRecord]


def _step(kind: type[ev.Event]) -> Step | None:
    """The delivery step a row of ``kind`` is; ``None``: not a step of a notification."""
    if issubclass(kind, ev.AlertRouted):
        return handled_by(kind, _queued)
    if issubclass(kind, ev.DeliveryRequeued):
        return handled_by(kind, _requeued)
    if issubclass(kind, ev.DeliveryAttemptFailed):
        return handled_by(kind, _failed)
    if issubclass(kind, ev.DeliveryDeadLettered):
        return handled_by(kind, _dead)
    if issubclass(kind, ev.DeliverySucceeded):
        return handled_by(kind, _delivered)
    if issubclass(kind, ev.DeliverySuperseded):
        return handled_by(kind, _superseded)
    if issubclass(
        kind,
        ev.AlertReceived
        | ev.AlertOpened
        | ev.AlertSuppressed
        | ev.AlertEscalated
        | ev.AlertResolved
        | ev.AlertResolveIgnored
        | ev.AlertRejected
        | ev.AlertAcked
        | ev.AlertSilenced
        | ev.SilenceCreated
        | ev.SilenceDeleted
        | ev.ConfigLoaded
        | ev.StreamBound
        | ev.LogCompacted
        | ev.OutboxPublished
        | ev.GroupOpened
        | ev.AlertGrouped
        | ev.GroupNotified
        | ev.GroupDeferred
        | ev.SilenceExpired
        | ev.InhibitSource
        | ev.AlertInhibited
        | ev.InhibitReleased
        | ev.EscalationStarted
        | ev.EscalationFired
        | ev.AlertFlapping
        | ev.AlertSettled
        | ev.HeartbeatReceived
        | ev.HeartbeatMissed
        | ev.PartitionSeeded
        | ev.AlertMoved,
    ):
        return None
    assert_never(kind)


_STEPS = by_tag(_step)


def event_page(rows: list[StoredRow], limit: int, last_seq: int) -> EventPage:
    """A page of the raw log; ``next_after_seq`` is null only when nothing follows."""
    events = [record(r.seq, r.ts, r.kind, r.data) for r in rows]
    last = rows[-1].seq if rows else None
    more = last is not None and last < last_seq
    return EventPage(events=events, next_after_seq=last if more else None)


class MergedEventRecord(EventRecord, kw_only=True):
    """A row of a partitioned service's logs merged: which partition's log it is in."""

    partition: int


class MergedEventPage(Struct, kw_only=True):
    """``/api/v1/events`` of ``serve --partitions N`` without ``partition``: the logs'
    rows merged by time; ``next_cursor`` (null only when nothing follows) is where
    each partition's next page starts. ``next_after_seq`` is null: no one seq
    orders rows of several logs."""

    events: list[MergedEventRecord]
    next_after_seq: None = None
    next_cursor: str | None


def events_cursor(cursor: str | None, count: int, after_seq: int) -> tuple[int, ...]:
    """Where each of ``count`` partitions' next page starts: ``cursor`` (a seq per
    partition, joined by ``.``), or the first page (``after_seq`` names no row of the
    merged logs: only 0 is taken without ``partition``)."""
    if cursor is None:
        if after_seq:
            raise QueryError(
                "after_seq",
                "the logs of several partitions are paged by cursor (next_cursor), "
                "or one partition's by after_seq with partition=K",
            )
        return (0,) * count
    parts = cursor.split(".")
    if len(parts) != count or not all(part.isdigit() for part in parts):
        raise QueryError("cursor", f"cursor must be {count} seqs joined by '.' (next_cursor)")
    return tuple(int(part) for part in parts)


def merged_event_page(
    rows: Sequence[tuple[int, StoredRow]], after: Sequence[int] | None
) -> MergedEventPage:
    """A page of the merged logs; ``after``: each partition's last seq served, or
    ``None`` when nothing follows."""
    events = [
        MergedEventRecord(
            partition=k, **msgspec.structs.asdict(record(r.seq, r.ts, r.kind, r.data))
        )
        for k, r in rows
    ]
    cursor = ".".join(str(seq) for seq in after) if after is not None else None
    return MergedEventPage(events=events, next_cursor=cursor)


def check_events_limit(limit: int, after_seq: int) -> None:
    if not 1 <= limit <= MAX_EVENTS_LIMIT:
        raise QueryError("limit", f"limit must be 1 to {MAX_EVENTS_LIMIT}")
    if after_seq < 0:
        raise QueryError("after_seq", "after_seq must be 0 or more")


def stats(state: State, hours: int, now: int) -> Stats:
    """DESIGN.md section 10's stats over the current hour of log time and the
    ``hours - 1`` before it (hourly buckets)."""
    if not 1 <= hours <= KEEP_HOURS:
        raise QueryError("hours", f"hours must be 1 to {KEEP_HOURS}")
    last_hour = hour_of(now)
    by_severity: dict[str, int] = dict.fromkeys(SEVERITIES, 0)
    by_type: dict[str, int] = {}
    by_receiver: dict[str, ReceiverCounts] = {}
    suppressed = unrouted = inhibited = muted = flapping = escalations = heartbeats_missed = 0
    rejected: dict[str, int] = {}
    per_hour: list[dict[str, Any]] = []
    for hour in range(last_hour - hours + 1, last_hour + 1):
        bucket = state.hours.get(hour)
        counts = dict.fromkeys(SEVERITIES, 0)
        if bucket is not None:
            for severity, n in bucket.by_severity.items():
                by_severity[severity] = by_severity.get(severity, 0) + n
                counts[severity] = n
            for kind, n in bucket.by_type.items():
                by_type[kind] = by_type.get(kind, 0) + n
            suppressed += bucket.suppressed
            unrouted += bucket.unrouted
            inhibited += bucket.inhibited
            muted += bucket.muted
            flapping += bucket.flapping
            escalations += bucket.escalations
            heartbeats_missed += bucket.heartbeats_missed
            for code, n in bucket.rejected.items():
                rejected[code] = rejected.get(code, 0) + n
            for receiver, r in bucket.by_receiver.items():
                sums = by_receiver.setdefault(receiver, ReceiverCounts())
                sums.delivered += r.delivered
                sums.failed_attempts += r.failed_attempts
                sums.dead += r.dead
                sums.superseded += r.superseded
        per_hour.append({"hour": format_us(hour * HOUR_US), **counts})
    total = sum(by_severity.values())
    delivered = sum(r.delivered for r in by_receiver.values())
    dead = sum(r.dead for r in by_receiver.values())
    last: dict[str, LastSeen | None] = {}
    for severity in SEVERITIES:
        seen = state.last_by_severity.get(severity)
        last[severity] = (
            None
            if seen is None
            else LastSeen(alert_id=seen.alert_id, summary=seen.summary, ts=format_us(seen.ts))
        )
    return Stats(
        window_hours=hours,
        total=total,
        by_severity=by_severity,
        by_type=dict(sorted(by_type.items(), key=lambda kv: -kv[1])),
        suppressed=suppressed,
        dedup_ratio=suppressed / total if total else 0.0,
        delivery_success_rate=delivered / (delivered + dead) if delivered + dead else None,
        by_receiver=dict(sorted(by_receiver.items())),
        queue=QueueCounts(
            pending=state.queue.get("pending", 0),
            retrying=state.queue.get("retrying", 0),
            dead=state.queue.get("dead", 0),
            superseded=state.queue.get("superseded", 0),
        ),
        last_by_severity=last,
        per_hour=per_hour,
        rejected=sum(rejected.values()),
        rejected_by_reason=dict(sorted(rejected.items(), key=lambda kv: (-kv[1], kv[0]))),
        unrouted=unrouted,
        inhibited=inhibited,
        muted=muted,
        flapping=flapping,
        escalations=escalations,
        heartbeats_missed=heartbeats_missed,
    )


def silence_view(silence: Silence, now: int) -> SilenceView:
    if silence.deleted_at is not None:
        phase = "deleted"
    elif now < silence.starts_at:
        phase = "pending"
    elif now < silence.ends_at:
        phase = "active"
    else:
        phase = "expired"
    return SilenceView(
        id=silence.id,
        matchers=silence.matchers,
        starts_at=format_us(silence.starts_at),
        ends_at=format_us(silence.ends_at),
        created_by=silence.created_by,
        comment=silence.comment,
        created_at=format_us(silence.created_at),
        state=phase,
        deleted_at=_optional_time(silence.deleted_at),
        deleted_by=silence.deleted_by,
    )


def group_view(state: State, group: Group) -> GroupView:
    alerts = []
    for member in group.members.values():
        alert = state.alerts.get(member.alert_id)
        alerts.append(
            GroupAlertView(
                alert_id=member.alert_id,
                severity=alert.severity if alert is not None else "",
                summary=alert.summary if alert is not None else "",
                status="resolved" if member.resolved else "firing",
                news=member.news,
                acked=member.acked,
            )
        )
    return GroupView(
        group_key=group.key,
        receiver=group.receiver,
        route=group.route,
        group_labels=group.labels,
        alert_ids=list(group.members),
        alerts=alerts,
        firing=sum(1 for m in group.members.values() if not m.resolved),
        notifications=group.notifications,
        opened_at=format_us(group.opened_at),
        last_notified_at=_optional_time(group.notified_at),
        next_due_at=_optional_time(group.due_at),
        deferred_until=_optional_time(group.deferred_until),
    )


def group_list(state: State, *, receiver: str | None = None) -> GroupList:
    """The open groups, the next due first (those with nothing pending last)."""
    chosen = [g for g in state.groups.values() if receiver is None or g.receiver == receiver]
    chosen.sort(key=lambda g: (g.due_at is None, g.due_at or 0, g.key))
    return GroupList(groups=[group_view(state, g) for g in chosen])


def heartbeat_view(state: State, heartbeat: Heartbeat) -> HeartbeatView:
    current = heartbeats.open_alert(heartbeat, state)
    deadline = heartbeats.due_at(heartbeat, state)
    status: HeartbeatStatus = "missed" if current is not None else "ok"
    if current is None and heartbeat.last_beat is None:
        status = "waiting"
    return HeartbeatView(
        name=heartbeat.name,
        status=status,
        every_seconds=heartbeat.every / 1e6,
        grace_seconds=heartbeat.grace / 1e6,
        severity=heartbeat.severity,
        summary=heartbeat.summary,
        labels=heartbeats.labels_of(heartbeat),
        configured_at=format_us(heartbeat.configured_at),
        last_beat=None if heartbeat.last_beat is None else format_us(heartbeat.last_beat),
        beats=heartbeat.beats,
        missed=heartbeat.missed,
        next_deadline=None if deadline is None else format_us(deadline),
        alert_id=None if current is None else current.alert_id,
    )


def heartbeat_list(state: State) -> HeartbeatList:
    """Every configured heartbeat: those missed first, then the next deadline first."""
    shown = [heartbeat_view(state, hb) for hb in state.heartbeats.values()]
    shown.sort(key=lambda v: (v.status != "missed", v.next_deadline or "", v.name))
    return HeartbeatList(heartbeats=shown)


def groups_of_alert(state: State, alert: Alert) -> list[GroupView]:
    """The open groups an alert is in (for its page)."""
    return [
        group_view(state, group)
        for key in alert.groups
        if (group := state.groups.get(key)) is not None and alert.id in group.members
    ]


def silence_list(state: State, now: int) -> SilenceList:
    """Every silence, active and pending first, then newest first."""
    order = {"active": 0, "pending": 1, "expired": 2, "deleted": 3}
    views = [silence_view(s, now) for s in state.silences.values()]
    views.sort(key=lambda v: v.created_at, reverse=True)
    views.sort(key=lambda v: order[v.state])
    return SilenceList(silences=views)


# -- what an open dashboard notifies of ----------------------------------------------


DEFAULT_NOTIFY = ("critical",)  # the severities whose new alerts notify, unless configured


class NewAlert(Struct, kw_only=True):
    """An alert the dashboard raises a notification for: enough to list it and link it."""

    id: str
    severity: str
    summary: str


def notable(facts: Iterable[ev.Event], severities: Collection[str]) -> list[str]:
    """The ids of the alerts ``facts`` make new to an operator who watches
    ``severities``: an alert opened with one of them, or escalated into one from a
    severity not watched (one that was watched was news when it opened). Each once, in
    the order of the facts. A commit's listener, called with every batch: one loop
    checking each fact's exact kind (event kinds are final), no call a fact."""
    found: dict[str, None] = {}
    for fact in facts:
        if type(fact) is ev.AlertOpened:
            if fact.severity in severities:
                found[fact.alert_id] = None
        elif (
            type(fact) is ev.AlertEscalated
            and fact.severity in severities
            and fact.from_severity not in severities
        ):
            found[fact.alert_id] = None
    return list(found)


def new_alerts(state: State, alert_ids: Iterable[str], now: int) -> list[NewAlert]:
    """Those of ``alert_ids`` still firing as of ``now``: one resolved, acknowledged or
    silenced before the page heard of it is no news (and one the projection let go of
    was resolved long ago)."""
    shown: list[NewAlert] = []
    for alert_id in dict.fromkeys(alert_ids):
        alert = state.alerts.get(alert_id)
        if alert is None:
            continue
        if shown_status(state, alert, now) == "firing":
            shown.append(NewAlert(id=alert.id, severity=alert.severity, summary=alert.summary))
    return shown
