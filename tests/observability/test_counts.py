"""Counts of committed facts: summed when the ledger reports a commit, handed to the
OpenTelemetry SDK only when ``/metrics`` is rendered (issue #20, W3: the ledger calls
``count_committed`` between a commit and the work items it justifies)."""

from __future__ import annotations

import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tocsin.core import events as ev
from tocsin.core.fold import fold
from tocsin.core.state import State
from tocsin.observability.telemetry import OTHER_SOURCES, UNKNOWN, Metrics


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


def test_a_batch_counts_as_its_events_one_commit_at_a_time() -> None:
    """Catches the per-batch tally (issue #20: received and routed counts summed under
    plain keys, their label sets made once a batch) counting differently from a commit
    per event: each count and label set, the source labels given in the order first
    seen (150 sources: the cap falls inside the batch), an event routed to two
    receivers counted once in ``events_routed``, an unrouted one not at all."""
    facts: list[list[ev.Event]] = []
    for i in range(300):
        event = msgspec.structs.replace(
            received(i), source=f"svc-{i % 150}", severity=("error", "warning")[i % 2]
        )
        told = [routed(i)] if i % 3 else []
        if i % 5 == 0:
            told.append(msgspec.structs.replace(routed(i), receiver="pager", reason="escalated"))
        facts.append([event, *told])
    one_batch, one_at_a_time, state = Metrics(), Metrics(), State()
    one_batch.count_committed([fact for event in facts for fact in event], state)
    for event in facts:
        one_at_a_time.count_committed(event, state)
    assert counts(one_batch) == counts(one_at_a_time)
    seen = counts(one_batch)
    # An event is counted once, under its last routed fact's reason.
    assert seen["tocsin_events_routed_total", labels(reason="new")] == 160
    assert seen["tocsin_events_routed_total", labels(reason="escalated")] == 60
    others = ("tocsin_events_received_total", labels(source=OTHER_SOURCES, severity="error"))
    assert seen[others] == 50


def histograms(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for sample in family.samples
        if sample.name.startswith("tocsin_delivery_latency")
    }


def test_a_batch_of_outcomes_counts_and_times_as_its_outcomes_one_commit_at_a_time() -> None:
    """Catches the per-batch tally of outcomes (issue #20: logged sends summed under
    plain keys, their label sets made and their latencies recorded once a batch,
    ``_settle``) counting or timing differently from a commit per outcome: delivered,
    dead-lettered, failed attempts and superseded, over two receivers and channels;
    the severity as routed (``warning`` here, the alert's being ``error``), the
    alert's for an outcome not routed in this process, ``unknown`` for neither; a
    failed attempt leaves the latency's start for the delivery after it; each
    latency in its bucket (bounds inclusive), the count and the sum of each series."""
    state = State()
    for i in range(40):
        fold(state, i + 1, 1_000_000, received(i))
    ts = 1_000_000
    routing: list[ev.Event] = [
        msgspec.structs.replace(routed(i), severity="warning") for i in range(30)
    ]
    outcomes: list[ev.Event] = []
    for i in range(40):
        receiver, channel = ("hook", "webhook") if i % 2 else ("pager", "pagerduty")
        where = {"notification_id": f"n{i}", "receiver": receiver, "alert_id": f"a{i}",
                 "fingerprint": f"f{i}", "channel": channel}  # fmt: skip
        if i % 4 == 0:
            outcomes.append(
                ev.DeliveryAttemptFailed(
                    **where,
                    attempt=1,
                    error="503",
                    status_code=503,
                    retry_in_seconds=1.0,
                    at=ts + 1,
                )
            )
        if i % 7 == 3:
            outcomes.append(
                ev.DeliveryDeadLettered(
                    **where, attempts=3, error="gone", status_code=410, at=ts + 2
                )
            )
        elif i % 9 == 5:
            outcomes.append(
                ev.DeliverySuperseded(
                    **where,
                    attempts=1,
                    log_seq=i,
                    superseded_by=f"n{i + 100}",
                    superseded_by_seq=i + 100,
                    at=ts + 2,
                )
            )
        else:  # latencies on and around the bounds: 1 ms, 2.5 ms, 0.25 s, 31 s...
            late = (1_000, 2_500, 2_501, 250_000, 31_000_000, i * 37_000)[i % 6]
            outcomes.append(ev.DeliverySucceeded(**where, attempts=1, at=ts + late))
    stranger = {"notification_id": "n99", "receiver": "hook", "alert_id": "a99",
                "fingerprint": "f99", "channel": "webhook"}  # fmt: skip
    outcomes.append(ev.DeliverySucceeded(**stranger, attempts=1, at=ts))
    one_batch, one_at_a_time = Metrics(), Metrics()
    for metrics in (one_batch, one_at_a_time):
        metrics.count_committed(routing, state)
    one_batch.count_committed(outcomes, state)
    for outcome in outcomes:
        one_at_a_time.count_committed([outcome], state)
    assert counts(one_batch) == counts(one_at_a_time)
    batched, alone = histograms(one_batch), histograms(one_at_a_time)
    assert batched.keys() == alone.keys()
    for key, value in batched.items():
        assert value == pytest.approx(alone[key], rel=1e-12), key
    seen = counts(one_batch)
    delivered = "tocsin_notifications_delivered_total"
    assert seen[delivered, labels(receiver="hook", channel="webhook", severity="warning")] == 11
    assert seen[delivered, labels(receiver="hook", channel="webhook", severity="error")] == 4
    assert seen[delivered, labels(receiver="hook", channel="webhook", severity=UNKNOWN)] == 1
    failed = "tocsin_delivery_attempts_total"
    assert seen[failed, labels(receiver="pager", channel="pagerduty", outcome="failed")] == 10
    timed = sum(v for (name, _), v in batched.items() if name.endswith("_count"))
    assert timed == 23  # the delivered ones routed here: 30 routed, 7 not delivered
