"""telemetry.Histogram: what /metrics shows of the histograms recorded once per
notification, in the shape the OpenTelemetry Prometheus exporter gives the others."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tocsin.observability.telemetry import OTHER_SOURCES, Metrics


def scrape(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for sample in family.samples
        if sample.name.startswith("tocsin_send_duration")
    }


def test_nothing_is_shown_before_the_first_record() -> None:
    assert scrape(Metrics()) == {}


def test_buckets_are_cumulative_their_bounds_inclusive_and_series_per_label_set() -> None:
    metrics = Metrics()
    ok = {"receiver": "hook", "channel": "webhook", "outcome": "ok"}
    for amount in (0.001, 0.003, 0.2, 45.0):
        metrics.send_seconds.record(amount, ok)
    metrics.send_seconds.record(0.02, {**ok, "outcome": "failed"})
    seen = scrape(metrics)
    labels = tuple(sorted(ok.items()))
    bucket = "tocsin_send_duration_seconds_bucket"
    assert [
        seen[bucket, tuple(sorted((*labels, ("le", le))))]
        for le in ("0.001", "0.005", "0.25", "30.0", "+Inf")
    ] == [1, 2, 3, 3, 4]
    assert seen["tocsin_send_duration_seconds_count", labels] == 4
    assert seen["tocsin_send_duration_seconds_sum", labels] == 45.204
    failed = tuple(sorted({**ok, "outcome": "failed"}.items()))
    assert seen["tocsin_send_duration_seconds_count", failed] == 1
    assert not any(name.endswith("_created") for name, _ in seen)


def test_sources_are_bounded_as_metric_labels() -> None:
    """A publisher chooses its source: past the first 100, the rest share one label."""
    metrics = Metrics()
    labels = [metrics.source_label(f"svc-{i}") for i in range(150)]
    assert labels[:100] == [f"svc-{i}" for i in range(100)]
    assert set(labels[100:]) == {OTHER_SOURCES}
    assert metrics.source_label("svc-7") == "svc-7"  # one already given keeps its label


def test_a_childs_figures_add_to_the_parents_once_each() -> None:
    """``Metrics.merge``: what a delivery child of ``tocsin serve`` measured shows in the
    parent's /metrics. Its figures are totals: sent again they add only what is new
    (catches counts doubled on every message), a second child adds its own, and one
    that ended stays counted (catches /metrics going backwards after a restart)."""
    parent, child, other = Metrics(), Metrics(), Metrics()
    ok = {"receiver": "hook", "channel": "webhook", "outcome": "ok"}
    labels = tuple(sorted(ok.items()))
    count, total = "tocsin_send_duration_seconds_count", "tocsin_send_duration_seconds_sum"
    for amount in (0.002, 0.3, 0.5):
        child.send_seconds.record(amount, ok)
    child.consumer_recreated("TOCSIN_WORK", "deliver-hook")
    parent.merge("0:100", child.figures())
    assert scrape(parent)[count, labels] == 3
    child.send_seconds.record(0.2, ok)
    parent.merge("0:100", child.figures())
    parent.merge("0:100", child.figures())  # nothing new
    other.send_seconds.record(4.0, ok)
    parent.merge("1:101", other.figures())
    parent.forget("0:100")
    seen = scrape(parent)
    assert seen[count, labels] == 5
    assert abs(seen[total, labels] - 5.002) < 1e-9
    le = tuple(sorted((*labels, ("le", "0.25"))))
    assert seen["tocsin_send_duration_seconds_bucket", le] == 2
    recreated = [
        sample.value
        for family in text_string_to_metric_families(parent.render().decode())
        for sample in family.samples
        if sample.name == "tocsin_consumer_recreated_total"
    ]
    assert recreated == [1]


def test_many_recorded_at_once_show_as_recorded_one_at_a_time() -> None:
    """Catches ``Histogram.record_many`` (a committed batch's latencies summed into
    bucket counts first, issue #20) putting a value in another bucket than
    ``observe`` does: values on each bound (inclusive), between, past the last, and
    zero; a second call adds to the first; the sums agree but for rounding."""
    one_by_one, at_once = Metrics(), Metrics()
    ok = {"receiver": "hook", "channel": "webhook", "outcome": "ok"}
    amounts = [0.0, 0.001, 0.0010001, 0.0025, 0.003, 0.25, 30.0, 45.0, 1e9]
    for amount in amounts + amounts[:3]:
        one_by_one.send_seconds.record(amount, ok)
    at_once.send_seconds.record_many(amounts, ("hook", "webhook", "ok"))
    at_once.send_seconds.record_many(amounts[:3], ("hook", "webhook", "ok"))
    alone, batched = scrape(one_by_one), scrape(at_once)
    assert batched.keys() == alone.keys()
    assert {k: v for k, v in batched.items() if not k[0].endswith("_sum")} == {
        k: v for k, v in alone.items() if not k[0].endswith("_sum")
    }
    labels = tuple(sorted(ok.items()))
    total = "tocsin_send_duration_seconds_sum"
    assert batched[total, labels] == pytest.approx(alone[total, labels], rel=1e-12)
    assert batched["tocsin_send_duration_seconds_count", labels] == 12
