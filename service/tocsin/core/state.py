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

from tocsin.core.contracts import Severity, Status
from tocsin.core.decide.dedup import OpenAlert
from tocsin.core.decide.idempotency import ReceivedIds

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
    receivers: list[str] = []
    resolved_at: int | None = None
    last_delivery_status: DeliveryStatus | None = None
    trace_id: str | None = None
    resolved_by: str | None = None
    acked_by: str | None = None
    acked_at: int | None = None
    ack_comment: str | None = None
    unrouted: bool = False  # no route matched its news, and no receiver was ever told
    resolved_ts: int | None = None  # log time (``ts``) of its ``alert.resolved``


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

    notification_id: str
    alert_id: str
    receiver: str
    reason: str
    routed_seq: int
    status: DeliveryStatus = "pending"
    channel: str | None = None
    attempts: int = 0
    error: str | None = None
    status_code: int | None = None
    updated_at: int = 0
    generation: int = 0  # times re-queued after a dead letter
    as_routed: AlertAsRouted | None = None
    requeued_seq: int = 0
    # log time (``ts``) of the outcome that settled it for good, ``delivery.succeeded``
    # or ``delivery.superseded``: it is let go ``keep_resolved`` later (``core.retention``)
    settled_ts: int | None = None


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

    def active_at(self, at: int) -> bool:
        end = self.ends_at if self.deleted_at is None else min(self.ends_at, self.deleted_at)
        return self.starts_at <= at < end


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
    dedup_window: float | None = None  # of the last config.loaded: open buckets are in it
    received_ids: ReceivedIds = msgspec.field(default_factory=ReceivedIds)  # last 24 h
    published_through: int = 0  # outbox watermark: every work item of a fact <= it stored
    keep_resolved: int = KEEP_RESOLVED_US  # the last ``config.loaded``'s (``core.retention``)
    next_sweep: int = 0  # log time from which the next event sweeps (``core.retention``)
    keep_everything: bool = False  # a report of the whole file: nothing is swept

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
