"""Metrics about tocsin itself, through the OpenTelemetry SDK, served at ``/metrics``
in Prometheus text format (names prefixed ``tocsin_``; README "Metrics" lists them).

Each running service has its own ``Metrics`` (its own meter provider and Prometheus
registry): no global state, so several services can share a process (the tests do).
Histograms recorded once per notification (send duration, throttle wait, end-to-end
latency) are ``prometheus_client`` histograms in the same registry: the SDK's ``record``
costs ~30 us in a delivery (attribute cleaning and hashing, a measurement object), a
``prometheus_client`` child ~2 us, and /metrics shows the same series.
Counts of facts are taken from what was committed to the log, never before: the ledger
calls ``count_committed`` after each commit, which sums them in a dict; a scrape hands
the sums to the SDK's counters (``render``). Gauges are read at scrape time from values
kept in memory; consumer pending counts are refreshed by ``watch_consumers`` in the
background, so a scrape never waits on NATS.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import functools
import logging
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, assert_never

import msgspec
import prometheus_client
from nats.js import JetStreamContext
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.metrics import Counter as Counter_
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from tocsin import __version__
from tocsin.core import events as ev
from tocsin.core.kinds import by_kind, handled_by
from tocsin.core.state import State

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider

log = logging.getLogger("tocsin.telemetry")

CONTENT_TYPE = CONTENT_TYPE_LATEST
SECONDS_BUCKETS = [
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
]
UNKNOWN = "unknown"

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class ConsumerCounts:
    """What JetStream said of one consumer at the last poll."""

    pending: int  # in the stream, not yet delivered to tocsin
    ack_pending: int  # delivered, not yet acknowledged
    redelivered: int  # delivered more than once, not yet acknowledged


# /metrics shows no ``_created`` series (the SDK's exporter writes none): the same for
# the histograms below. A process-wide setting of prometheus_client, which only this
# module uses.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]


class Histogram:
    """A histogram recorded once per notification, kept by ``prometheus_client`` in the
    same registry the SDK's exporter writes to. The SDK's ``Histogram.record`` costs
    ~10-30 us in a delivery (attribute cleaning and hashing, a measurement object);
    ``prometheus_client``'s labelled child, looked up by label values, ~2 us. The
    series are those the exporter gave: ``<name>_seconds_bucket`` / ``_count`` /
    ``_sum``, shown from a label set's first record."""

    def __init__(
        self,
        name: str,
        description: str,
        labels: Sequence[str],
        bounds: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        self._labels = tuple(labels)
        self._metric = prometheus_client.Histogram(
            f"{name}_seconds", description, self._labels, buckets=bounds, registry=registry
        )
        # The upper bounds of its buckets as ``prometheus_client`` keeps them: floats,
        # ``+Inf`` last (``record_many`` finds a value's bucket among them).
        self._bounds = [float(bound) for bound in bounds]
        if self._bounds[-1] != math.inf:
            self._bounds.append(math.inf)
        self._children: dict[tuple[str, ...], Any] = {}

    def record(self, amount: float, attributes: Mapping[str, str]) -> None:
        self._child(tuple(attributes[label] for label in self._labels)).observe(amount)

    def record_many(self, amounts: Sequence[float], values: tuple[str, ...]) -> None:
        """``record`` each of ``amounts`` under the label ``values`` (in ``labels``'
        order), summed into bucket counts first: a committed batch's latencies cost a
        bisect each and one update per bucket, not an ``observe`` each (~1.5 us, two
        locked increments: the recorder's in W1, issue #20). A value's bucket is the
        first whose bound it does not exceed, as ``observe`` finds it; the sum may
        differ from one added a value at a time in its last bits."""
        counts = [0] * len(self._bounds)
        bounds = self._bounds
        for amount in amounts:
            counts[bisect.bisect_left(bounds, amount)] += 1
        self._add(self._child(values), counts, sum(amounts))

    def _child(self, values: tuple[str, ...]) -> Any:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child

    def observer(self, attributes: Mapping[str, str]) -> Callable[[float], None]:
        """``record`` for one label set, looked up once: a caller that records the same
        few label sets over and over keeps it (a delivery worker, one per outcome:
        ~1.3 us a record instead of ~2.9, issue #20)."""
        observe: Callable[[float], None] = self._child(
            tuple(attributes[label] for label in self._labels)
        ).observe
        return observe

    def cells(self) -> list[Cell]:
        """What was recorded so far, per label set: the count in each bucket (not
        cumulative) and the sum, for another process to add to its own (``add``).
        ``prometheus_client`` has no public way to read or add bucket counts; its
        ``_buckets`` and ``_sum`` are read and added to here only (the test of
        ``Metrics.merge`` fails should they change)."""
        return [
            Cell(list(values), [bucket.get() for bucket in child._buckets], child._sum.get())
            for values, child in self._children.items()
        ]

    def add(self, cell: Cell, counts: Sequence[float], total: float) -> None:
        """Add ``counts`` (per bucket) and ``total`` to the label set of ``cell``."""
        self._add(self._child(tuple(cell.labels)), counts, total)

    @staticmethod
    def _add(child: Any, counts: Sequence[float], total: float) -> None:
        for bucket, count in zip(child._buckets, counts, strict=True):
            if count:
                bucket.inc(count)
        if total:
            child._sum.inc(total)


class Cell(msgspec.Struct, array_like=True, frozen=True):
    """One label set of a histogram as a process saw it: its label values, the count in
    each bucket (not cumulative) and the sum of the values recorded."""

    labels: list[str]
    counts: list[float]
    total: float


class WorkerFigures(msgspec.Struct, frozen=True):
    """What a delivery worker measures where it runs and the log does not hold (the
    log's outcomes give every count and the end-to-end latency wherever the worker
    ran): send durations, throttle waits, consumers created again. A ``tocsin serve``
    delivery child sends these to its parent (``Metrics.figures`` there, ``merge``
    here), so /metrics shows them as when the workers ran in one process."""

    send_seconds: list[Cell] = []
    throttle_seconds: list[Cell] = []
    consumers_recreated: list[tuple[str, str, int]] = []


# Counters of facts (counted from committed log events, ``count_committed``) and of what
# a process sees (``http_refused``, ``consumers_recreated``): attribute -> name, help.
COUNTERS: dict[str, tuple[str, str]] = {
    "http_refused": (
        "tocsin_http_events_refused",
        "events refused by POST /api/v1/events (answered, not logged), by reason",
    ),
    "received": (
        "tocsin_events_received",
        "inbound events accepted, by source and severity",
    ),
    "rejected": (
        "tocsin_events_rejected",
        "inbound events refused, by reason",
    ),
    "suppressed": (
        "tocsin_events_suppressed",
        "firing events counted but not routed, by cause",
    ),
    "unrouted": (
        "tocsin_alerts_unrouted",
        "alerts that match no route, so nobody is told of them, by severity (once per alert)",
    ),
    "escalations": (
        "tocsin_escalations_fired",
        "escalation steps fired (their receivers told of an unacknowledged "
        "notification), by step (0 = the first)",
    ),
    "muted": (
        "tocsin_notifications_muted",
        "group notifications that fell due inside a mute (or outside every active time "
        "interval) and were deferred (group.deferred), by receiver",
    ),
    "flapping": (
        "tocsin_alerts_flapping",
        "fingerprints found flapping (their news held until stable), once per episode",
    ),
    "events_routed": (
        "tocsin_events_routed",
        "inbound events that produced at least one notification, by reason",
    ),
    "routed": (
        "tocsin_notifications_routed",
        "notifications routed, by receiver and reason",
    ),
    "delivered": (
        "tocsin_notifications_delivered",
        "notifications delivered, by receiver, channel and severity",
    ),
    "failed": (
        "tocsin_notifications_failed",
        "failed attempts that will be retried, by receiver, channel and severity",
    ),
    "dead_lettered": (
        "tocsin_notifications_dead_lettered",
        "notifications that never went through, by receiver, channel and severity",
    ),
    "superseded": (
        "tocsin_notifications_superseded",
        "notifications not sent because their receiver had accepted a later one of the "
        "same fingerprint, by receiver, channel and severity",
    ),
    "attempts": (
        "tocsin_delivery_attempts",
        "sends whose outcome is logged, by receiver, channel and outcome",
    ),
    "heartbeats_received": (
        "tocsin_heartbeats_received",
        "beats of configured heartbeats, by heartbeat",
    ),
    "heartbeats_missed": (
        "tocsin_heartbeats_missed",
        "heartbeat deadlines missed (each opened a heartbeat.missed alert), by heartbeat",
    ),
    "consumers_recreated": (
        "tocsin_consumer_recreated",
        "durable consumers found gone and created again, by stream and consumer",
    ),
}

MAX_SOURCE_LABELS = 100
OTHER_SOURCES = "_other"  # not a valid subject token, so no publisher's source


class Metrics:
    """The instruments tocsin records; ``render()`` is the ``/metrics`` body."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.latency_seconds = self._histogram(
            "tocsin_delivery_latency",
            "from the receipt of the event to its notification's delivery, "
            "by receiver and severity",
            ("receiver", "severity"),
        )
        # Measured where they happen (the delivery worker).
        self.send_seconds = self._histogram(
            "tocsin_send_duration",
            "one send to a receiver, by outcome",
            ("receiver", "channel", "outcome"),
        )
        self.throttle_seconds = self._histogram(
            "tocsin_throttle_delay",
            "time a notification waited for its receiver's max_per_minute",
            ("receiver",),
        )
        self._provider: MeterProvider | None = None  # made with ``_meter``
        # Gauges asked for before the SDK was made (``observe``): registered when it is.
        self._gauges: list[tuple[str, str, Callable[[CallbackOptions], Iterable[Observation]]]] = []
        self._recreated: Counter[tuple[str, str]] = Counter()  # consumers_recreated's
        # ``tocsin serve``'s children: how often one was started again after it died.
        self._restarts: dict[str, Counter_] = {}
        # What each child process last sent (``merge``), by the child's own name.
        self._merged: dict[str, WorkerFigures] = {}
        self._consumers: dict[tuple[str, str], ConsumerCounts] = {}
        self._observe_consumers()
        # notification id -> (receipt time in us, severity) of routed notifications not
        # yet delivered or dead-lettered: the start of their end-to-end latency.
        self._routed_at: dict[str, tuple[int, str]] = {}
        self._sources: set[str] = set()  # the source label values given out so far
        # Committed facts counted, not yet added to the SDK's counters (``render`` does).
        self._uncounted: Counter[tuple[str, Labels]] = Counter()

    @functools.cached_property
    def _meter(self) -> Meter:
        """The SDK's meter, made (and the OpenTelemetry SDK and its Prometheus exporter
        imported) by the first count or the first ``/metrics``: a delivery child of
        ``tocsin serve``, which records its histograms alone and sends them to its
        parent, never holds the SDK's ~45 modules (~1.8 MiB, issue #20's RSS target)."""
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
        from opentelemetry.sdk.resources import Resource

        reader = PrometheusMetricReader(
            registry=self.registry, disable_target_info=True, scope_info_enabled=False
        )
        self._provider = MeterProvider(
            metric_readers=[reader],
            resource=Resource.create({"service.name": "tocsin", "service.version": __version__}),
            # The Prometheus text format carries no exemplars, and sampling one (every
            # send runs in a sampled trace) made each histogram record ~17 us, not ~11.
            exemplar_filter=AlwaysOffExemplarFilter(),
        )
        meter = self._provider.get_meter("tocsin", __version__)
        for name, description, callback in self._gauges:
            meter.create_observable_gauge(name, callbacks=[callback], description=description)
        self._gauges.clear()
        return meter

    def _counter(self, attribute: str) -> Counter_:
        """The counter ``COUNTERS`` names for ``attribute``, made by its first use."""
        name, description = COUNTERS[attribute]
        return self._meter.create_counter(name, description=description)

    # Each counter is made (the SDK with the first) when first counted: ``COUNTERS``.

    @functools.cached_property
    def http_refused(self) -> Counter_:
        return self._counter("http_refused")

    @functools.cached_property
    def received(self) -> Counter_:
        return self._counter("received")

    @functools.cached_property
    def rejected(self) -> Counter_:
        return self._counter("rejected")

    @functools.cached_property
    def suppressed(self) -> Counter_:
        return self._counter("suppressed")

    @functools.cached_property
    def unrouted(self) -> Counter_:
        return self._counter("unrouted")

    @functools.cached_property
    def escalations(self) -> Counter_:
        return self._counter("escalations")

    @functools.cached_property
    def muted(self) -> Counter_:
        return self._counter("muted")

    @functools.cached_property
    def flapping(self) -> Counter_:
        return self._counter("flapping")

    @functools.cached_property
    def events_routed(self) -> Counter_:
        return self._counter("events_routed")

    @functools.cached_property
    def routed(self) -> Counter_:
        return self._counter("routed")

    @functools.cached_property
    def delivered(self) -> Counter_:
        return self._counter("delivered")

    @functools.cached_property
    def failed(self) -> Counter_:
        return self._counter("failed")

    @functools.cached_property
    def dead_lettered(self) -> Counter_:
        return self._counter("dead_lettered")

    @functools.cached_property
    def superseded(self) -> Counter_:
        return self._counter("superseded")

    @functools.cached_property
    def attempts(self) -> Counter_:
        return self._counter("attempts")

    @functools.cached_property
    def heartbeats_received(self) -> Counter_:
        return self._counter("heartbeats_received")

    @functools.cached_property
    def heartbeats_missed(self) -> Counter_:
        return self._counter("heartbeats_missed")

    @functools.cached_property
    def consumers_recreated(self) -> Counter_:
        return self._counter("consumers_recreated")

    def process_restarts(self, role: str) -> Counter_:
        """``tocsin_<role>_process_restarts``: ``tocsin serve``'s ``role`` children
        (delivery, router) started again after they died, by slot."""
        if role not in self._restarts:
            self._restarts[role] = self._meter.create_counter(
                f"tocsin_{role}_process_restarts",
                description=f"{role} child processes of tocsin serve started again after "
                "they died, by slot",
            )
        return self._restarts[role]

    def source_label(self, source: str) -> str:
        """``source`` as a metric label, for the first ``MAX_SOURCE_LABELS`` sources
        seen; any later one is counted as ``OTHER_SOURCES``. The source is the
        publisher's to choose (the subject's last token, or a field): unbounded, it
        would make a time series per value and grow /metrics and its scraper forever."""
        if source in self._sources:
            return source
        if len(self._sources) < MAX_SOURCE_LABELS:
            self._sources.add(source)
            return source
        return OTHER_SOURCES

    def _histogram(self, name: str, description: str, labels: Sequence[str]) -> Histogram:
        return Histogram(name, description, labels, SECONDS_BUCKETS, self.registry)

    def observe(self, name: str, description: str, read: Callable[[], float | None]) -> None:
        """A gauge read at scrape time (log size, last seq, rebuild time...)."""

        def callback(options: CallbackOptions) -> Iterable[Observation]:
            value = read()
            return [] if value is None else [Observation(value)]

        self._gauge(name, description, callback)

    def _gauge(
        self,
        name: str,
        description: str,
        callback: Callable[[CallbackOptions], Iterable[Observation]],
    ) -> None:
        """Register a gauge now if the SDK is up, else when it is (``_meter``)."""
        if "_meter" in self.__dict__:
            self._meter.create_observable_gauge(name, callbacks=[callback], description=description)
        else:
            self._gauges.append((name, description, callback))

    def _observe_consumers(self) -> None:
        def reading(field: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
            def callback(options: CallbackOptions) -> Iterable[Observation]:
                return [
                    Observation(getattr(counts, field), {"stream": stream, "consumer": consumer})
                    for (stream, consumer), counts in list(self._consumers.items())
                ]

            return callback

        for field, description in (
            ("pending", "messages in the stream not yet delivered to the consumer"),
            ("ack_pending", "messages delivered to the consumer and not yet acknowledged"),
            ("redelivered", "messages delivered more than once and not yet acknowledged"),
        ):
            self._gauge(
                f"tocsin_consumer_{field}_messages",
                f"{description}, by stream and consumer (polled)",
                reading(field),
            )

    def set_consumer(self, stream: str, consumer: str, counts: ConsumerCounts | None) -> None:
        """The last poll's answer for a consumer; ``None`` drops it (no stale numbers)."""
        if counts is None:
            self._consumers.pop((stream, consumer), None)
        else:
            self._consumers[(stream, consumer)] = counts

    def consumer_recreated(self, stream: str, consumer: str) -> None:
        """A processor found its consumer gone and created it again."""
        self.consumers_recreated.add(1, {"stream": stream, "consumer": consumer})
        self._recreated[stream, consumer] += 1

    def figures(self) -> WorkerFigures:
        """What this process measured that the log does not hold (``WorkerFigures``),
        as totals since it started."""
        return WorkerFigures(
            send_seconds=self.send_seconds.cells(),
            throttle_seconds=self.throttle_seconds.cells(),
            consumers_recreated=[(s, c, n) for (s, c), n in self._recreated.items()],
        )

    def merge(self, child: str, figures: WorkerFigures) -> None:
        """Add to this process's figures what the child process named ``child`` measured
        since it last sent them: ``figures`` are its totals, so a lost or late message
        loses nothing but its own moment, and a child started again under a new name
        counts from zero. ``forget`` it once it has ended."""
        before = self._merged.get(child, WorkerFigures())
        self._merged[child] = figures
        for histogram, now, then in (
            (self.send_seconds, figures.send_seconds, before.send_seconds),
            (self.throttle_seconds, figures.throttle_seconds, before.throttle_seconds),
        ):
            earlier = {tuple(cell.labels): cell for cell in then}
            for cell in now:
                old = earlier.get(tuple(cell.labels))
                if old is None:
                    histogram.add(cell, cell.counts, cell.total)
                else:
                    counts = [n - o for n, o in zip(cell.counts, old.counts, strict=True)]
                    histogram.add(cell, counts, cell.total - old.total)
        recreated = {(s, c): n for s, c, n in before.consumers_recreated}
        for stream, consumer, count in figures.consumers_recreated:
            added = count - recreated.get((stream, consumer), 0)
            if added > 0:
                self.consumers_recreated.add(added, {"stream": stream, "consumer": consumer})

    def forget(self, child: str) -> None:
        """The child process ``child`` has ended: what it sent stays counted."""
        self._merged.pop(child, None)

    def count_committed(self, events: Sequence[ev.Event], state: State) -> None:
        """Count facts the log has just committed (``state`` already includes them, and
        its ``last_ts`` is their append time). A batch of a thousand facts makes a
        handful of SDK calls: counts are summed per label set first (an SDK ``add``
        costs ~8 us, too much to pay per fact on the router's hot path)."""
        tally = _Tally(state, self._uncounted)
        for event in events:
            count = _COUNTS[type(event)]
            if count is not None:
                count(event, self, tally)
        tally.end(self)

    def _add_uncounted(self) -> None:
        """Hand the counts summed since the last scrape to the SDK's counters. Done at
        scrape time, not per commit: the ledger runs ``count_committed`` between a
        commit and the work items it justifies, and three SDK ``add`` calls cost a lone
        event ~25-80 us there (W3, ``bench/w3_phases.py --stages``); here they are
        one per label set per scrape."""
        uncounted = self._uncounted
        for (name, labels), n in uncounted.items():
            getattr(self, name).add(n, dict(labels))
        uncounted.clear()

    def render(self) -> bytes:
        self._add_uncounted()
        self._meter  # noqa: B018 - the SDK's reader writes its series into the registry
        return generate_latest(self.registry)

    def shutdown(self) -> None:
        if self._provider is not None:
            self._provider.shutdown()


class _Tally:
    """The counts of one committed batch, summed per label set before the SDK sees them.
    The commonest facts (an event received, a notification routed, an event routed, an
    event suppressed) are summed first under plain keys, and their label sets made once
    a batch (``end``): making them per fact was ~1 us of a W1 event's, and ~0.5 of a W2
    duplicate's (issue #20)."""

    __slots__ = (
        "counts",
        "latencies",
        "received",
        "routed",
        "routed_events",
        "routed_reason",
        "settled",
        "severity",
        "state",
        "suppressed",
        "ts",
    )

    def __init__(self, state: State, counts: Counter[tuple[str, Labels]]) -> None:
        self.counts = counts  # the metrics' counts not yet handed to the SDK
        self.routed_reason: str | None = None  # of the inbound event being walked
        self.severity = UNKNOWN  # of the inbound event being walked
        self.state = state
        self.ts = state.last_ts  # the batch's append time
        self.received: dict[tuple[str, str], int] = {}  # (source, severity): events
        self.routed: dict[tuple[str, str], int] = {}  # (receiver, reason): notifications
        self.routed_events: dict[str, int] = {}  # reason: inbound events routed
        self.suppressed: dict[str, int] = {}  # cause: events suppressed
        # (outcome, receiver, channel, severity): logged sends (``_settle``)
        self.settled: dict[tuple[str, str, str, str], int] = {}
        # (receiver, severity): the end-to-end latencies, in seconds, of deliveries
        self.latencies: dict[tuple[str, str], list[float]] = {}

    def end_inbound(self) -> None:
        """The facts of one inbound event are all counted: it was routed or not."""
        reason = self.routed_reason
        if reason is not None:
            self.routed_events[reason] = self.routed_events.get(reason, 0) + 1
            self.routed_reason = None

    def end(self, metrics: Metrics) -> None:
        """The batch is counted: its sums under their label sets (sources labelled in
        the order first seen, as one at a time would)."""
        self.end_inbound()
        counts = self.counts
        for (source, severity), n in self.received.items():
            label = metrics.source_label(source)
            counts["received", (("source", label), ("severity", severity))] += n
        for (receiver, reason), n in self.routed.items():
            counts["routed", (("receiver", receiver), ("reason", reason))] += n
        for reason, n in self.routed_events.items():
            counts["events_routed", (("reason", reason),)] += n
        for cause, n in self.suppressed.items():
            counts["suppressed", (("cause", cause),)] += n
        for (outcome, receiver, channel, severity), n in self.settled.items():
            where = (("receiver", receiver), ("channel", channel))
            counts[outcome, (*where, ("severity", severity))] += n
            counts["attempts", (*where, ("outcome", outcome))] += n
        for values, latencies in self.latencies.items():
            metrics.latency_seconds.record_many(latencies, values)


# What a committed fact counts: one function per kind that counts (``_count``).
Count = Callable[[Any, Metrics, _Tally], None]


def _received(event: ev.AlertReceived, metrics: Metrics, tally: _Tally) -> None:
    if tally.routed_reason is not None:
        tally.end_inbound()  # the facts of the previous inbound event end here
    received, key = tally.received, (event.source, event.severity)
    received[key] = received.get(key, 0) + 1
    tally.severity = event.severity


def _routed(event: ev.AlertRouted, metrics: Metrics, tally: _Tally) -> None:
    routed, key = tally.routed, (event.receiver, event.reason)
    routed[key] = routed.get(key, 0) + 1
    metrics._routed_at[event.notification_id] = (tally.ts, event.severity)
    tally.routed_reason = event.reason


def _group_notified(event: ev.GroupNotified, metrics: Metrics, tally: _Tally) -> None:
    """A group's notification counts as one routed notification, with its reason."""
    tally.counts["routed", (("receiver", event.receiver), ("reason", event.reason))] += 1
    severity = event.alerts[0].severity if event.alerts else "info"
    metrics._routed_at[event.notification_id] = (tally.state.last_ts, severity)


def _muted(event: ev.GroupDeferred, metrics: Metrics, tally: _Tally) -> None:
    tally.counts["muted", (("receiver", event.receiver),)] += 1


def _suppressed(event: ev.AlertSuppressed, metrics: Metrics, tally: _Tally) -> None:
    suppressed, cause = tally.suppressed, event.cause
    suppressed[cause] = suppressed.get(cause, 0) + 1
    if event.newly_unrouted:  # set once per alert, on a fact of the event received
        tally.counts["unrouted", (("severity", tally.severity),)] += 1


def _silenced(event: ev.AlertSilenced, metrics: Metrics, tally: _Tally) -> None:
    tally.counts["suppressed", (("cause", "silenced"),)] += 1


def _inhibited(event: ev.AlertInhibited, metrics: Metrics, tally: _Tally) -> None:
    if event.fired_at is None:  # an event held back, not the clock's finding
        tally.counts["suppressed", (("cause", "inhibited"),)] += 1


def _rejected(event: ev.AlertRejected, metrics: Metrics, tally: _Tally) -> None:
    tally.counts["rejected", (("reason", event.code),)] += 1


def _settle(
    event: ev.DeliverySucceeded | ev.DeliveryAttemptFailed | ev.DeliveryDeadLettered,
    metrics: Metrics,
    tally: _Tally,
    outcome: str,
    delivered_at: int | None,
) -> None:
    """Count one logged send; a final one (delivered, dead-lettered) also ends the
    notification's end-to-end latency. Severity is the notification's own, as routed;
    after a restart, the alert's. Summed under plain keys, their label sets made and
    the latencies recorded once a batch (``_Tally.end``): per outcome they were ~3 of
    the recorder's us in W1 (issue #20)."""
    nid = event.notification_id
    routed = (
        metrics._routed_at.get(nid) if outcome == "failed" else metrics._routed_at.pop(nid, None)
    )
    if routed is not None:
        severity = routed[1]
    else:
        alert = tally.state.alerts.get(event.alert_id)
        severity = alert.severity if alert is not None else UNKNOWN
    settled, key = tally.settled, (outcome, event.receiver, event.channel, severity)
    settled[key] = settled.get(key, 0) + 1
    if delivered_at is not None and routed is not None:
        latency = max(0.0, (delivered_at - routed[0]) / 1e6)
        latencies = tally.latencies.get(where := (event.receiver, severity))
        if latencies is None:
            tally.latencies[where] = [latency]
        else:
            latencies.append(latency)


def _delivered(event: ev.DeliverySucceeded, metrics: Metrics, tally: _Tally) -> None:
    _settle(event, metrics, tally, "delivered", event.at)


def _failed(event: ev.DeliveryAttemptFailed, metrics: Metrics, tally: _Tally) -> None:
    _settle(event, metrics, tally, "failed", None)


def _dead_lettered(event: ev.DeliveryDeadLettered, metrics: Metrics, tally: _Tally) -> None:
    _settle(event, metrics, tally, "dead_lettered", None)


def _superseded(event: ev.DeliverySuperseded, metrics: Metrics, tally: _Tally) -> None:
    """Settled without a send: counted on its own (no attempt, no latency)."""
    routed = metrics._routed_at.pop(event.notification_id, None)
    if routed is not None:
        severity = routed[1]
    else:
        alert = tally.state.alerts.get(event.alert_id)
        severity = alert.severity if alert is not None else UNKNOWN
    labels = (("receiver", event.receiver), ("channel", event.channel), ("severity", severity))
    tally.counts["superseded", labels] += 1


def _escalation_fired(event: ev.EscalationFired, metrics: Metrics, tally: _Tally) -> None:
    tally.counts["escalations", (("step", str(event.step)),)] += 1


def _flapping(event: ev.AlertFlapping, metrics: Metrics, tally: _Tally) -> None:
    tally.counts["flapping", ()] += 1


def _beat(event: ev.HeartbeatReceived, metrics: Metrics, tally: _Tally) -> None:
    tally.end_inbound()  # a beat is an inbound message of its own
    tally.counts["heartbeats_received", (("heartbeat", event.name),)] += 1


def _missed(event: ev.HeartbeatMissed, metrics: Metrics, tally: _Tally) -> None:
    tally.counts["heartbeats_missed", (("heartbeat", event.name),)] += 1


def _count(kind: type[ev.Event]) -> Count | None:
    """What a committed fact of ``kind`` counts; ``None``: no metric counts it."""
    if issubclass(kind, ev.AlertReceived):
        return handled_by(kind, _received)
    if issubclass(kind, ev.AlertRouted):
        return handled_by(kind, _routed)
    if issubclass(kind, ev.AlertSuppressed):
        return handled_by(kind, _suppressed)
    if issubclass(kind, ev.AlertSilenced):
        return handled_by(kind, _silenced)
    if issubclass(kind, ev.AlertInhibited):
        return handled_by(kind, _inhibited)
    if issubclass(kind, ev.AlertRejected):
        return handled_by(kind, _rejected)
    if issubclass(kind, ev.DeliverySucceeded):
        return handled_by(kind, _delivered)
    if issubclass(kind, ev.DeliveryAttemptFailed):
        return handled_by(kind, _failed)
    if issubclass(kind, ev.DeliveryDeadLettered):
        return handled_by(kind, _dead_lettered)
    if issubclass(kind, ev.GroupNotified):
        return handled_by(kind, _group_notified)
    if issubclass(kind, ev.DeliverySuperseded):
        return handled_by(kind, _superseded)
    if issubclass(kind, ev.EscalationFired):
        return handled_by(kind, _escalation_fired)
    if issubclass(kind, ev.AlertFlapping):
        return handled_by(kind, _flapping)
    if issubclass(kind, ev.HeartbeatReceived):
        return handled_by(kind, _beat)
    if issubclass(kind, ev.HeartbeatMissed):
        return handled_by(kind, _missed)
    if issubclass(kind, ev.GroupDeferred):
        return handled_by(kind, _muted)
    if issubclass(
        kind,
        ev.GroupOpened
        | ev.AlertGrouped
        | ev.SilenceExpired
        | ev.InhibitSource
        | ev.InhibitReleased
        | ev.AlertOpened
        | ev.AlertEscalated
        | ev.AlertResolved
        | ev.AlertResolveIgnored
        | ev.AlertAcked
        | ev.DeliveryRequeued
        | ev.SilenceCreated
        | ev.SilenceDeleted
        | ev.ConfigLoaded
        | ev.StreamBound
        | ev.OutboxPublished
        | ev.LogCompacted
        | ev.EscalationStarted
        | ev.AlertSettled
        | ev.PartitionSeeded  # written offline, by `tocsin repartition`
        | ev.AlertMoved,
    ):
        return None
    assert_never(kind)


_COUNTS = by_kind(_count)


async def watch_consumers(
    js: JetStreamContext,
    consumers: Sequence[tuple[str, str]],
    metrics: Metrics,
    stop: asyncio.Event,
    every: float = 5.0,
) -> None:
    """Ask JetStream for each consumer's pending counts every ``every`` seconds, off the
    hot path and off the scrape. A consumer that does not answer is dropped from the
    gauges until it does (``tocsin_ready`` says why)."""
    while not stop.is_set():
        for stream, consumer in consumers:
            try:
                info = await js.consumer_info(stream, consumer, timeout=min(every, 5.0))
            except Exception as error:
                log.debug("consumer_info %s/%s failed: %s", stream, consumer, error)
                metrics.set_consumer(stream, consumer, None)
                continue
            metrics.set_consumer(
                stream,
                consumer,
                ConsumerCounts(
                    pending=int(info.num_pending or 0),
                    ack_pending=int(info.num_ack_pending or 0),
                    redelivered=int(info.num_redelivered or 0),
                ),
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
