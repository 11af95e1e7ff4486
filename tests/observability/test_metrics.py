"""``/metrics`` after a small run counts exactly what happened (issue #7), on real
parts: routed, suppressed, rejected, retried and dead-lettered notifications, read back
with prometheus_client's own parser.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support import HttpSink, Tocsin, always, publish, script, wait_until
from tocsin.core.subjects import STREAM_IN, STREAM_OUT, STREAM_WORK

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def labels(**pairs: str) -> frozenset[tuple[str, str]]:
    return frozenset(pairs.items())


def config(ok: HttpSink, flaky: HttpSink, refusing: HttpSink) -> str:
    return f"""
[retry]
max_attempts = 3
backoff = ["50ms"]

[[route]]
match = {{ type = "disk_full" }}
receivers = ["ok"]

[[route]]
match = {{ type = "cert_expiry" }}
receivers = ["flaky"]

[[route]]
match = {{ type = "quota" }}
receivers = ["refusing"]

[receivers.ok]
channel = "webhook"
url = "{ok.url}"

[receivers.flaky]
channel = "webhook"
url = "{flaky.url}"

[receivers.refusing]
channel = "webhook"
url = "{refusing.url}"
"""


def alert(type_: str, severity: str, host: str) -> dict[str, Any]:
    return {
        "type": type_,
        "severity": severity,
        "summary": f"{type_} on {host}",
        "labels": {"host": host},
    }


@pytest.fixture
async def sinks() -> Any:
    started = [HttpSink(), HttpSink(), HttpSink()]
    for sink in started:
        await sink.start()
    yield started
    for sink in started:
        await sink.stop()


async def test_metrics_count_what_the_log_committed(
    nats_url: str, data_dir: Path, sinks: list[HttpSink]
) -> None:
    ok, flaky, refusing = sinks
    flaky.responder = script(500, 200)  # one failed attempt, then delivered
    refusing.responder = always(400)  # permanent: dead-lettered at once
    service = await Tocsin(
        data_dir, nats_url, config(ok, flaky, refusing), consumer_poll_seconds=0.1
    ).start()
    try:
        for _ in range(3):  # one routed, two duplicates suppressed
            await publish(nats_url, "alerts.in.db", alert("disk_full", "critical", "db1"))
        await publish(nats_url, "alerts.in.db", alert("disk_full", "warning", "db2"))
        await publish(nats_url, "alerts.in.web", alert("cert_expiry", "error", "www"))
        await publish(nats_url, "alerts.in.web", alert("quota", "info", "www"))
        await publish(nats_url, "alerts.in.web", b'{"type": "no_severity"}')
        await wait_until(
            lambda: (
                service.count("delivery.succeeded") == 3
                and service.count("delivery.dead_lettered") == 1
                and service.count("alert.rejected") == 1
            ),
            what="three deliveries, one dead letter and one rejection logged",
        )

        ledger = service.ledger()

        def log_now() -> tuple[int, int]:
            return ledger.event_log.last_seq, ledger.size_bytes()

        async def settled() -> tuple[Samples, tuple[int, int]] | None:
            """/metrics once the consumers were polled after the last ack, read while
            the log did not move (the outbox's watermark commits on its own a second
            after the last commit: a scrape may not straddle it)."""
            before = log_now()
            samples = await service.metrics()
            if log_now() != before:
                return None
            polled = [
                samples.get(("tocsin_consumer_ack_pending_messages", labels(**where)))
                for where in (
                    {"stream": "TOCSIN_IN", "consumer": "router"},
                    {"stream": "TOCSIN_OUT", "consumer": "recorder"},
                    {"stream": "TOCSIN_WORK", "consumer": "deliver-ok"},
                )
            ]
            return (samples, before) if polled == [0, 0, 0] else None

        metrics, (last_seq, size) = await wait_until(
            settled, what="consumers polled with nothing pending"
        )
    finally:
        await service.stop()

    def total(name: str, **where: str) -> float:
        return metrics.get((name, labels(**where)), 0.0)

    def family(name: str) -> dict[frozenset[tuple[str, str]], float]:
        return {lbls: value for (sample, lbls), value in metrics.items() if sample == name}

    assert family("tocsin_events_received_total") == {
        labels(source="db", severity="critical"): 3,
        labels(source="db", severity="warning"): 1,
        labels(source="web", severity="error"): 1,
        labels(source="web", severity="info"): 1,
    }
    assert family("tocsin_events_rejected_total") == {labels(reason="invalid_field"): 1}
    assert family("tocsin_events_suppressed_total") == {labels(cause="duplicate"): 2}
    assert family("tocsin_events_routed_total") == {labels(reason="firing"): 4}
    assert family("tocsin_notifications_routed_total") == {
        labels(receiver="ok", reason="firing"): 2,
        labels(receiver="flaky", reason="firing"): 1,
        labels(receiver="refusing", reason="firing"): 1,
    }
    assert family("tocsin_notifications_delivered_total") == {
        labels(receiver="ok", channel="webhook", severity="critical"): 1,
        labels(receiver="ok", channel="webhook", severity="warning"): 1,
        labels(receiver="flaky", channel="webhook", severity="error"): 1,
    }
    assert family("tocsin_notifications_failed_total") == {
        labels(receiver="flaky", channel="webhook", severity="error"): 1
    }
    assert family("tocsin_notifications_dead_lettered_total") == {
        labels(receiver="refusing", channel="webhook", severity="info"): 1
    }
    assert family("tocsin_delivery_attempts_total") == {
        labels(receiver="ok", channel="webhook", outcome="delivered"): 2,
        labels(receiver="flaky", channel="webhook", outcome="failed"): 1,
        labels(receiver="flaky", channel="webhook", outcome="delivered"): 1,
        labels(receiver="refusing", channel="webhook", outcome="dead_lettered"): 1,
    }
    # End-to-end latency: one observation per delivered notification.
    latency = family("tocsin_delivery_latency_seconds_count")
    assert latency == {
        labels(receiver="ok", severity="critical"): 1,
        labels(receiver="ok", severity="warning"): 1,
        labels(receiver="flaky", severity="error"): 1,
    }
    assert total("tocsin_delivery_latency_seconds_sum", receiver="ok", severity="critical") > 0
    # Send latency: every send, as the worker measured it.
    sends = family("tocsin_send_duration_seconds_count")
    assert sends == {
        labels(receiver="ok", channel="webhook", outcome="ok"): 2,
        labels(receiver="flaky", channel="webhook", outcome="failed"): 1,
        labels(receiver="flaky", channel="webhook", outcome="ok"): 1,
        labels(receiver="refusing", channel="webhook", outcome="failed"): 1,
    }
    assert [len(s.requests) for s in (ok, flaky, refusing)] == [2, 2, 1]
    # Gauges.
    assert total("tocsin_log_last_seq") == last_seq
    assert total("tocsin_log_size_bytes") == size > 0
    assert total("tocsin_ready") == 1
    assert total("tocsin_alerts_open") == 4
    assert total("tocsin_projection_rebuild_seconds") >= 0
    assert ("tocsin_projection_rebuild_seconds", frozenset()) in metrics
    for stream, consumer in (
        (STREAM_IN, "router"),
        (STREAM_OUT, "recorder"),
        (STREAM_WORK, "deliver-ok"),
        (STREAM_WORK, "deliver-flaky"),
        (STREAM_WORK, "deliver-refusing"),
    ):
        where = {"stream": stream, "consumer": consumer}
        assert total("tocsin_consumer_pending_messages", **where) == 0, where
        assert ("tocsin_consumer_redelivered_messages", labels(**where)) in metrics


async def test_pending_counts_follow_a_backlog(
    nats_url: str, sink: HttpSink, data_dir: Path
) -> None:
    """A slow receiver with one send at a time: the rest of its work waits in
    TOCSIN_WORK, and the polled gauges say so."""
    sink.delay = 2.0  # long enough for the polls to see the backlog on a busy machine
    toml = f"""
[delivery]
concurrency = 1

[[route]]
match = {{}}
receivers = ["slow"]

[receivers.slow]
channel = "webhook"
url = "{sink.url}"
"""
    service = await Tocsin(data_dir, nats_url, toml, consumer_poll_seconds=0.1).start()
    try:
        for host in ("a", "b", "c"):
            await publish(nats_url, "alerts.in.db", alert("disk_full", "error", host))
        where = labels(stream="TOCSIN_WORK", consumer="deliver-slow")

        async def backlog() -> bool:
            samples = await service.metrics()
            return (
                samples.get(("tocsin_consumer_pending_messages", where)) == 2
                and samples.get(("tocsin_consumer_ack_pending_messages", where)) == 1
            )

        await wait_until(backlog, what="two items waiting behind one in flight")
        await wait_until(lambda: len(sink.requests) == 3, 20, what="the backlog drained")

        async def drained() -> bool:
            samples = await service.metrics()
            return (
                samples.get(("tocsin_consumer_pending_messages", where)) == 0
                and samples.get(("tocsin_consumer_ack_pending_messages", where)) == 0
            )

        await wait_until(drained, 20, what="the gauges back to zero")
    finally:
        await service.stop()
