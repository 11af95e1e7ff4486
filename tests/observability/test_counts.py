"""Counts of committed facts: summed when the ledger reports a commit, handed to the
OpenTelemetry SDK only when ``/metrics`` is rendered (issue #20, W3: the ledger calls
``count_committed`` between a commit and the work items it justifies)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tocsin.core import events as ev
from tocsin.core.state import State
from tocsin.observability.telemetry import Metrics


def received(i: int) -> ev.AlertReceived:
    return ev.AlertReceived(
        alert_id=f"a{i}", fingerprint=f"f{i}", dedup_key=f"d{i}", type="disk_full",
        severity="error", summary="disk full", source="bench", status="firing", labels={},
        details={}, timestamp=1, received_at=1, subject="alerts.in.bench",
    )  # fmt: skip


def routed(i: int) -> ev.AlertRouted:
    return ev.AlertRouted(
        alert_id=f"a{i}", fingerprint=f"f{i}", dedup_key=f"d{i}", bucket=0, reason="new",
        severity="error", receiver="hook", notification_id=f"n{i}",
    )  # fmt: skip


def labels(**pairs: str) -> frozenset[tuple[str, str]]:
    return frozenset(pairs.items())


def counts(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for sample in family.samples
        if sample.name.endswith("_total")
    }


def test_a_commit_is_counted_without_the_sdk_and_a_scrape_shows_every_count() -> None:
    """Catches the SDK's ``add`` (~8-25 us each, three for a lone routed event) back on
    the commit's path: after ``count_committed`` the SDK is not even made, and each
    scrape shows exactly the facts committed before it, none counted twice."""
    metrics, state = Metrics(), State()
    metrics.count_committed([received(1), routed(1)], state)
    metrics.count_committed([received(2), routed(2)], state)
    assert "_meter" not in metrics.__dict__  # no SDK call was made for the commits
    routed_new = ("tocsin_notifications_routed_total", labels(receiver="hook", reason="new"))
    received_bench = ("tocsin_events_received_total", labels(source="bench", severity="error"))
    first = counts(metrics)
    assert (first[routed_new], first[received_bench]) == (2, 2)
    metrics.count_committed([received(3), routed(3)], state)
    assert counts(metrics)[routed_new] == 3
    assert counts(metrics)[routed_new] == 3  # a scrape adds nothing of its own
