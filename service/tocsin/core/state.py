"""The projection: what tocsin knows, as folded from the log (DESIGN.md invariant 1).

The structs are untracked by the cyclic GC (``gc=False``): they hold no cycles, and a
large projection would otherwise be rescanned again and again while it is built. They
are ``array_like`` for compact snapshots (``tocsin.store.snapshots``): nothing encodes
them for people (the API and the CLI answer with their own view types,
``tocsin.core.views``). ``tocsin.core.fold`` is how events change them.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from msgspec import Struct

from tocsin.core.contracts import GroupReason, Reason, Severity, Status
from tocsin.core.decide.dedup import OpenAlert
from tocsin.core.decide.idempotency import ReceivedIds
from tocsin.core.events import EscalationStep

DeliveryStatus = Literal["pending", "retrying", "delivered", "dead", "superseded"]

SETTLED: frozenset[DeliveryStatus] = frozenset({"delivered", "dead", "superseded"})

"""A notification in one of these is done: nothing is sent for it again (until re-queued)."""


class Alert(Struct, kw_only=True, gc=False, array_like=True):
    """One fingerprint from its first firing event until resolved."""

    id: str
    fingerprint: str
    type: str
    severity: Severity
    summary: str
    source: str
    status: Status
    labels: dict[str, str]
    details: dict[str, Any]
    first_seen: int
    last_seen: int
    occurrences: int = 0
    suppressed_count: int = 0
    receivers: tuple[str, ...] = ()
    resolved_at: int | None = None
    last_delivery_status: DeliveryStatus | None = None
    trace_id: str | None = None
    resolved_by: str | None = None
    acked_by: str | None = None
    acked_at: int | None = None
    ack_comment: str | None = None
    unrouted: bool = False  # no route matched its news, and no receiver was ever told
    groups: tuple[str, ...] = ()  # the notification groups it joined (grouped routes)
    # (tuples, not lists: an empty tuple is shared and never tracked by the cyclic GC,
    # which would otherwise rescan one more container per alert at every collection)
    resolved_ts: int | None = None  # log time (``ts``) of its ``alert.resolved``
    inhibited_by: str | None = None  # the open alert holding back its news (inhibit rules)


class AlertAsRouted(Struct, kw_only=True, gc=False, array_like=True, frozen=True):
    """The alert's fields a notification carries, as they stood when it was routed
    (DESIGN.md invariant 6): its body is a function of the log up to its routed fact,
    never of events folded after it, however the router batched them. ``labels`` and
    ``details`` are shared with the alert and its events, which is safe: the fold
    replaces those dicts, never changes one in place."""

    type: str
    summary: str
    source: str
    labels: dict[str, str]
    details: dict[str, Any]
    first_seen: int
    last_seen: int
    occurrences: int
    suppressed_count: int


class Delivery(Struct, kw_only=True, gc=False, array_like=True):
    """One notification's fate. ``as_routed`` is kept while the notification may still
    be sent (pending, retrying, or dead and so re-queueable), and dropped once it is
    delivered or superseded; ``requeued_seq`` is the seq of its last re-queue fact (0: never), the
    fact its current work item comes from."""

    # First the fields the retention sweep reads of a delivery kept encoded
    # (``core.deliveries``): an array-like struct decodes the leading values alone.
    status: DeliveryStatus = "pending"
    # log time (``ts``) of the outcome that settled it for good, ``delivery.succeeded``
    # or ``delivery.superseded``: it is let go ``keep_resolved`` later (``core.retention``)
    settled_ts: int | None = None
    alert_id: str
    notification_id: str
    receiver: str
    # a Literal, not str: a snapshot's decode then returns the literal's own object, one
    # for every delivery, not a string of its own each (~16 MiB of a 1M-event start)
    reason: Reason | GroupReason
    routed_seq: int
    channel: str | None = None
    attempts: int = 0
    error: str | None = None
    status_code: int | None = None
    updated_at: int = 0
    generation: int = 0  # times re-queued after a dead letter
    group_key: str | None = None  # a group notification's
    as_routed: AlertAsRouted | None = None
    requeued_seq: int = 0
    # what its receiver's notifications are ordered by (``core/policy/order.py``): the
    # alert's fingerprint, or the group's key; empty once delivered or superseded
    order_key: str = ""


class Silence(Struct, kw_only=True, gc=False, array_like=True):
    """Alerts matching ``matchers`` are silenced from ``starts_at`` until ``ends_at``
    (or until deleted)."""

    id: str
    matchers: dict[str, Any]
    starts_at: int
    ends_at: int
    created_by: str
    comment: str
    created_at: int
    deleted_at: int | None = None
    deleted_by: str | None = None
    expired: bool = False  # its end was seen by the clock (silence.expired)

    @property
    def ends(self) -> int:
        """When it stops silencing: its end, or its deletion if sooner."""
        return self.ends_at if self.deleted_at is None else min(self.ends_at, self.deleted_at)

    def active_at(self, at: int) -> bool:
        end = self.ends_at if self.deleted_at is None else min(self.ends_at, self.deleted_at)
        return self.starts_at <= at < end


class AutoResolve(Struct, kw_only=True, gc=False, array_like=True):
    """When the clock resolves a fingerprint's open alert by itself: at its ``ends_at``
    (``by = "ends_at"``), or ``[alerts] resolve_timeout`` after its last event
    (``by = "timeout"``, counted from ``last_event``)."""

    alert_id: str
    due: int
    by: str
    last_event: int


class Member(Struct, kw_only=True, gc=False, array_like=True):
    """An alert in a group: what is news about it since the group's last notification
    (``news``: its reason, ``None`` when nothing is new), and whether it still fires."""

    alert_id: str
    news: Reason | None = None
    resolved: bool = False
    acked: bool = False
    dedup_key: str = ""  # of its latest news


class Group(Struct, kw_only=True, gc=False, array_like=True):
    """A notification group (DESIGN.md section 11): alerts of one grouped route and
    receiver that share their ``group_by`` values, and the group's timers. ``due_at`` is
    when the clock next has something to decide for it (``groups.due_at``), ``None``
    when nothing is pending."""

    key: str
    receiver: str
    route: int
    labels: dict[str, str]
    wait: int
    interval: int
    repeat: int | None
    max_alerts: int
    active_intervals: tuple[str, ...] = ()
    mute_intervals: tuple[str, ...] = ()
    members: dict[str, Member] = {}
    opened_at: int = 0
    notified_at: int | None = None  # the last notification's firing time
    notifications: int = 0
    deferred_until: int | None = None
    due_at: int | None = None


class InhibitEnd(Struct, kw_only=True, gc=False, array_like=True):
    """An alert stopped inhibiting at ``at`` (log time): the slots it left (rule ->
    equal values) that alerts were held back on, for the clock to release those left
    with no inhibitor (``inhibit.released``)."""

    at: int
    slots: dict[str, str] = {}


class Chain(Struct, kw_only=True, gc=False, array_like=True):
    """An escalation chain (DESIGN.md section 13; ``core.escalation``): the steps of a
    route's ``escalate``, timed from the first notification (``started_at``), for one
    alert (``alert_id``, ungrouped routes) or for the groups of one route and group
    values (``group_keys``). ``next_step`` is the step the clock fires next, at
    ``due_at`` (``None``: every step fired). Acknowledging or resolving what it is
    about ends it: the fold lets go of it."""

    key: str
    route: int
    steps: tuple[EscalationStep, ...]
    started_at: int
    alert_id: str | None = None
    group_keys: list[str] = []
    next_step: int = 0
    due_at: int | None = None


class Flap(Struct, kw_only=True, gc=False, array_like=True):
    """A fingerprint's recent changes (its openings and resolves, log time; the last
    ``[flapping] changes`` of them) and, once it flaps (``alert.flapping``), since when
    and when it counts as settled (``due_at``: its last change plus ``window``)."""

    changes: list[int] = []
    since: int | None = None
    window: int = 0
    due_at: int | None = None


class Heartbeat(Struct, kw_only=True, gc=False, array_like=True):
    """A dead man's switch (DESIGN.md section 13): its rule as the last ``config.loaded``
    gave it (durations in microseconds), ``since`` (when it was first configured, its
    last beat, or the clock's last word on it: its next deadline is ``every + grace``
    after that) and the ``heartbeat.missed`` alert it opened (``missed_alert``), which
    keeps the clock quiet while it is open (``core.heartbeats.due_at``)."""

    name: str
    every: int
    grace: int
    severity: Severity
    summary: str
    labels: dict[str, str]
    since: int
    configured_at: int
    last_beat: int | None = None
    beats: int = 0
    missed: int = 0  # deadlines missed
    missed_alert: str | None = None
    missed_fingerprint: str | None = None


class ReceiverStats(Struct, kw_only=True, gc=False, array_like=True):
    delivered: int = 0
    failed_attempts: int = 0
    dead: int = 0
    superseded: int = 0  # not sent: a later notification of the fingerprint was accepted


class HourStats(Struct, kw_only=True, gc=False, array_like=True):
    """What happened in one hour of log time (``ts``): the stats API and the dashboard
    chart sum these over their window."""

    by_severity: dict[str, int] = {}
    by_type: dict[str, int] = {}
    suppressed: int = 0
    by_receiver: dict[str, ReceiverStats] = {}
    rejected: dict[str, int] = {}  # refused inbound messages by reason code
    unrouted: int = 0  # alerts found to match no route (``newly_unrouted`` facts)
    inhibited: int = 0  # firing events held back by an inhibit rule (``alert.inhibited``)
    muted: int = 0  # group notifications deferred by time intervals (``group.deferred``)
    flapping: int = 0  # news held because its fingerprint flaps (suppressed, ``flapping``)
    escalations: int = 0  # escalation steps fired (``escalation.fired``)
    heartbeats_missed: int = 0  # ``heartbeat.missed`` facts


class LastAlert(Struct, kw_only=True, gc=False, array_like=True):
    alert_id: str
    summary: str
    ts: int


HOUR_US = 3_600_000_000

KEEP_HOURS = 168  # hourly stats are kept for a week of log time

KEEP_RESOLVED_US = 24 * HOUR_US
"""``[alerts] keep_resolved`` by default: how long what is over stays in the projection
(``core.retention``)."""


def hour_of(ts: int) -> int:
    return ts // HOUR_US


class Counters(Struct, kw_only=True, gc=False, array_like=True):
    received: int = 0
    suppressed: int = 0
    routed: int = 0
    rejected: int = 0
    delivered: int = 0
    attempt_failures: int = 0
    dead_lettered: int = 0
    superseded: int = 0


class State(Struct, kw_only=True, gc=False, array_like=True):
    """Everything tocsin knows, as of ``last_seq``."""

    last_seq: int = 0
    last_ts: int = 0
    alerts: dict[str, Alert] = {}
    open_by_fingerprint: dict[str, OpenAlert] = {}
    deliveries: dict[str, Delivery] = {}
    inbound_stream: str | None = None  # creation time of the TOCSIN_IN being consumed
    inbound_offset: int = 0  # logged in_seq = inbound_offset + stream seq
    counters: Counters = msgspec.field(default_factory=Counters)
    silences: dict[str, Silence] = {}
    hours: dict[int, HourStats] = {}
    last_by_severity: dict[str, LastAlert] = {}
    queue: dict[str, int] = {}  # deliveries by status (``DeliveryStatus``)
    outbound_stream: str | None = None  # creation time of the TOCSIN_OUT being recorded
    outbound_offset: int = 0  # logged out_seq = outbound_offset + stream seq
    groups: dict[str, Group] = {}  # open notification groups by group key
    auto_resolve: dict[str, AutoResolve] = {}  # by fingerprint: open alerts with an end
    resolve_timeout: int | None = None  # [alerts] resolve_timeout of the last config.loaded
    dedup_window: float | None = None  # of the last config.loaded: open buckets are in it
    received_ids: ReceivedIds = msgspec.field(default_factory=ReceivedIds)  # last 24 h
    published_through: int = 0  # outbox watermark: every work item of a fact <= it stored
    keep_resolved: int = KEEP_RESOLVED_US  # the last ``config.loaded``'s (``core.retention``)
    next_sweep: int = 0  # log time from which the next event sweeps (``core.retention``)
    keep_everything: bool = False  # a report of the whole file: nothing is swept
    # Inhibition (``core/decide/inhibit.py``), each by rule, then by equal values:
    # the open alerts matching the rule's source (``inhibit.source``), oldest first, and
    # the inhibited alerts waiting on that slot (``alert.inhibited``); and, by the alert
    # that stopped inhibiting, the slots it left that the clock has yet to release.
    inhibitors: dict[str, dict[str, dict[str, None]]] = {}
    inhibit_waiting: dict[str, dict[str, dict[str, None]]] = {}
    inhibit_ended: dict[str, InhibitEnd] = {}
    escalations: dict[str, Chain] = {}  # running escalation chains by chain key
    chains_of: dict[str, list[str]] = {}  # alert id or group key -> its chains' keys
    flaps: dict[str, Flap] = {}  # by fingerprint, while [flapping] is on or it flaps
    flap_changes: int | None = None  # [flapping] changes of the last config.loaded
    flap_window: int | None = None  # [flapping] window (microseconds)
    heartbeats: dict[str, Heartbeat] = {}  # the configured dead man's switches, by name
    # Per receiver and order key (``order.open_key``), the notifications that may still
    # be sent (pending, retrying, or dead and so re-queueable): a work item raises the
    # order record only when another is open (``order.must_raise``).
    order_open: dict[str, int] = {}

    def hour(self) -> HourStats:
        """The stats of the hour of the event being folded; hours older than a week
        are dropped when a new one starts (a pure function of the log's ``ts``)."""
        hour = hour_of(self.last_ts)
        stats = self.hours.get(hour)
        if stats is None:
            stats = self.hours[hour] = HourStats()
            for old in [h for h in self.hours if h <= hour - KEEP_HOURS]:
                del self.hours[old]
        return stats
