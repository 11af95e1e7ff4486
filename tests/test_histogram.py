"""telemetry.Histogram: what /metrics shows of a histogram tocsin keeps itself, in the
shape the OpenTelemetry Prometheus exporter gives the others."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tocsin.telemetry import Histogram


def scrape(histogram: Histogram) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(histogram)
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_nothing_is_shown_before_the_first_record() -> None:
    assert scrape(Histogram("tocsin_x", "x", [0.1, 1.0])) == {}


def test_buckets_are_cumulative_and_their_bounds_inclusive() -> None:
    histogram = Histogram("tocsin_x", "x", [0.1, 1.0])
    for amount in (0.05, 0.1, 0.5, 3.0):
        histogram.record(amount, {"receiver": "hook", "outcome": "ok"})
    histogram.record(0.2, {"outcome": "failed", "receiver": "hook"})
    seen = scrape(histogram)
    ok = (("outcome", "ok"), ("receiver", "hook"))
    buckets = [
        seen["tocsin_x_seconds_bucket", tuple(sorted((*ok, ("le", le))))]
        for le in ("0.1", "1.0", "+Inf")
    ]
    assert buckets == [2, 3, 4]
    assert seen["tocsin_x_seconds_count", ok] == 4
    assert seen["tocsin_x_seconds_sum", ok] == 3.65
    failed = (("outcome", "failed"), ("receiver", "hook"))
    assert seen["tocsin_x_seconds_count", failed] == 1
    assert seen["tocsin_x_seconds_bucket", (("le", "0.1"), *failed)] == 0
