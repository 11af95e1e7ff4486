"""Metrics about tocsin itself, through the OpenTelemetry SDK, served at ``/metrics``
in Prometheus text format (names prefixed ``tocsin_``).

Each running service has its own ``Metrics`` (its own meter provider and Prometheus
registry): no global state, so several services can share a process (the tests do).
Counts of facts are taken from what was committed to the log, never before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from tocsin import __version__
from tocsin import events as ev
from tocsin.projections import State

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


class Metrics:
    """The instruments tocsin records; ``render()`` is the ``/metrics`` body."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        reader = PrometheusMetricReader(
            registry=self.registry, disable_target_info=True, scope_info_enabled=False
        )
        self._provider = MeterProvider(
            metric_readers=[reader],
            resource=Resource.create({"service.name": "tocsin", "service.version": __version__}),
        )
        meter = self._provider.get_meter("tocsin", __version__)
        self.http_refused = meter.create_counter(
            "tocsin_http_events_refused",
            description="events refused by POST /api/v1/events (answered, not logged), by reason",
        )
        self.received = meter.create_counter(
            "tocsin_events_received", description="inbound events accepted, by source"
        )
        self.rejected = meter.create_counter(
            "tocsin_events_rejected", description="inbound events refused, by reason"
        )
        self.suppressed = meter.create_counter(
            "tocsin_events_suppressed", description="firing events counted but not routed, by cause"
        )
        self.routed = meter.create_counter(
            "tocsin_notifications_routed",
            description="notifications routed, by receiver and reason",
        )
        self.delivered = meter.create_counter(
            "tocsin_notifications_delivered",
            description="notifications delivered, by receiver, channel and severity",
        )
        self.attempts_failed = meter.create_counter(
            "tocsin_delivery_attempts_failed",
            description="failed sends that will be retried, by receiver and channel",
        )
        self.dead_lettered = meter.create_counter(
            "tocsin_notifications_dead_lettered",
            description="notifications that never went through, by receiver and channel",
        )
        self.send_seconds = meter.create_histogram(
            "tocsin_send_duration",
            unit="s",
            description="one send to a receiver, by outcome",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self.throttle_seconds = meter.create_histogram(
            "tocsin_throttle_delay",
            unit="s",
            description="time a notification waited for its receiver's max_per_minute",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )

    def observe(self, name: str, description: str, read: Callable[[], float | None]) -> None:
        """A gauge read at scrape time (log size, last seq, rebuild time...)."""

        def callback(options: CallbackOptions) -> Iterable[Observation]:
            value = read()
            return [] if value is None else [Observation(value)]

        self._provider.get_meter("tocsin", __version__).create_observable_gauge(
            name, callbacks=[callback], description=description
        )

    def count_committed(self, events: Iterable[ev.Event], state: State) -> None:
        """Count facts the log has just committed (``state`` already includes them)."""
        for event in events:
            if isinstance(event, ev.DeliverySucceeded):
                alert = state.alerts.get(event.alert_id)
                severity = alert.severity if alert else "unknown"
                self.delivered.add(
                    1, {"receiver": event.receiver, "channel": event.channel, "severity": severity}
                )
            if isinstance(event, ev.AlertReceived):
                self.received.add(1, {"source": event.source})
            elif isinstance(event, ev.AlertRejected):
                self.rejected.add(1, {"reason": event.code})
            elif isinstance(event, ev.AlertSuppressed):
                self.suppressed.add(1, {"cause": event.cause})
            elif isinstance(event, ev.AlertRouted):
                self.routed.add(1, {"receiver": event.receiver, "reason": event.reason})
            elif isinstance(event, ev.DeliveryAttemptFailed):
                self.attempts_failed.add(1, {"receiver": event.receiver, "channel": event.channel})
            elif isinstance(event, ev.DeliveryDeadLettered):
                self.dead_lettered.add(1, {"receiver": event.receiver, "channel": event.channel})

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def shutdown(self) -> None:
        self._provider.shutdown()
