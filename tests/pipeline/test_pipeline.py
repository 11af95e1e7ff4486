"""The pipeline end to end on real parts: nats-server, an HTTP receiver, a SQLite log.

publish -> router (validate, dedup, route, commit) -> work item -> delivery worker ->
webhook -> outcome on alerts.delivered -> recorder -> log. Each test waits on
conditions (never on time) and ends by checking live state == fold(log).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import (
    HttpSink,
    Subscriber,
    Tocsin,
    always,
    event,
    publish,
    script,
    wait_until,
    webhook_config,
)
from tocsin import __version__
from tocsin.core.contracts import Notification
from tocsin.core.times import now_us
from tocsin.store import forensics
from tocsin.store.eventlog import db_path

NOTIFICATION_FIELDS = set(Notification.__struct_fields__)
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
WINDOW_US = 600 * 1_000_000


def stamp(us: int) -> str:
    from tocsin.core.times import format_us

    return format_us(us)


def bucket_start(hours_ago: int = 2) -> int:
    """A bucket-aligned instant in the past (plus one second)."""
    now = now_us() - hours_ago * 3600 * 1_000_000
    return now - now % WINDOW_US + 1_000_000


async def start(data_dir: Path, nats_url: str, sink: HttpSink, **retry: Any) -> Tocsin:
    return await Tocsin(data_dir, nats_url, webhook_config(sink.url, **retry)).start()


async def alerts(service: Tocsin, **params: Any) -> list[dict[str, Any]]:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{service.api}/api/v1/alerts", params=params)
    assert response.status_code == 200, response.text
    return list(response.json()["alerts"])


async def test_first_firing_event_reaches_the_webhook_with_the_documented_body(
    nats_url: str, sink: HttpSink, data_dir: Path
) -> None:
    audit = await Subscriber().start(nats_url, "alerts.delivered")
    service = await start(data_dir, nats_url, sink)
    try:
        await publish(
            nats_url,
            "alerts.in.billing",
            event(severity="SEV1", details={"disk": "/var"}),
            headers={"traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"},
        )
        await wait_until(lambda: sink.requests, what="the webhook call")
        request = sink.requests[0]
        body = request.json()
        assert set(body) == NOTIFICATION_FIELDS
        assert body["reason"] == "firing"
        assert body["severity"] == "critical"
        assert body["status"] == "firing"
        assert body["source"] == "billing"
        assert body["receiver"] == "hook"
        assert body["labels"] == {"host": "db1"}
        assert body["details"] == {"disk": "/var"}
        assert body["occurrences"] == 1
        assert body["suppressed_count"] == 0
        assert body["dedup_key"].startswith(body["fingerprint"] + ":")
        assert request.headers["idempotency-key"] == body["notification_id"]
        assert request.headers["user-agent"] == f"tocsin/{__version__}"
        assert request.headers["content-type"] == "application/json"
        assert request.headers["traceparent"].split("-")[1] == TRACE
        t, v1 = (part.split("=", 1)[1] for part in request.headers["x-tocsin-signature"].split(","))
        expected = hmac.new(b"s3cret", f"{t}.".encode() + request.body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(v1, expected)

        await wait_until(lambda: audit.messages, what="alerts.delivered")
        delivered = audit.json()[0]
        assert set(delivered) == NOTIFICATION_FIELDS | {
            "channel",
            "attempts",
            "delivered_at",
            "log_seq",
            "trace_id",
            "status_code",
        }
        assert {k: delivered[k] for k in NOTIFICATION_FIELDS} == body
        assert delivered["status_code"] == 200  # what the webhook answered
        assert delivered["channel"] == "webhook"
        assert delivered["attempts"] == 1
        assert delivered["trace_id"] == TRACE
        assert delivered["delivered_at"].endswith("Z")
        assert audit.messages[0].headers["Nats-Msg-Id"] == f"{body['notification_id']}:delivered"
        await wait_until(
            lambda: service.count("delivery.succeeded") == 1, what="the outcome logged"
        )
        routed = service.events("alert.routed")
        assert [r["notification_id"] for r in routed] == [body["notification_id"]]
        await service.assert_live_state_is_the_log()
    finally:
        await service.stop()
        await audit.close()
    # Who was told, found by fingerprint: delivery facts carry it (DESIGN section 10).
    told = [
        (record.kind, record.data.get("receiver"))
        for record in forensics.replay(db_path(data_dir), fingerprint=body["fingerprint"])
    ]
    assert ("alert.routed", "hook") in told
    assert ("delivery.succeeded", "hook") in told


async def test_duplicates_in_a_bucket_are_suppressed_and_counted(
    nats_url: str, sink: HttpSink, data_dir: Path
) -> None:
    service = await start(data_dir, nats_url, sink)
    t0 = bucket_start()  # all five in one bucket, whatever the clock says
    try:
        for i in range(5):
            await publish(nats_url, "alerts.in.db", event(timestamp=stamp(t0 + i)))
        await wait_until(lambda: service.count("alert.received") == 5, what="5 events logged")
        await wait_until(lambda: service.count("delivery.succeeded") == 1, what="1 delivery")
        assert len(sink.requests) == 1
        assert service.count("alert.suppressed") == 4
        [alert] = await alerts(service)
        assert alert["occurrences"] == 5
        assert alert["suppressed_count"] == 4
        assert alert["receivers"] == ["hook"]
        assert alert["last_delivery_status"] == "delivered"
        await service.assert_live_state_is_the_log()
        metrics = await service.metrics()
        received = frozenset({("source", "db"), ("severity", "warning")})
        assert metrics[("tocsin_events_received_total", received)] == 5
        assert metrics[("tocsin_events_suppressed_total", frozenset({("cause", "duplicate")}))] == 4
        routed = frozenset({("receiver", "hook"), ("reason", "firing")})
        assert metrics[("tocsin_notifications_routed_total", routed)] == 1
        delivered = frozenset(
            {("receiver", "hook"), ("channel", "webhook"), ("severity", "warning")}
        )
        assert metrics[("tocsin_notifications_delivered_total", delivered)] == 1
        sends = frozenset({("receiver", "hook"), ("channel", "webhook"), ("outcome", "ok")})
        assert metrics[("tocsin_send_duration_seconds_count", sends)] == 1
        assert metrics[("tocsin_log_last_seq", frozenset())] == service.ledger().event_log.last_seq
    finally:
        await service.stop()


async def test_new_bucket_reminds_and_higher_severity_escalates(
    nats_url: str, sink: HttpSink, data_dir: Path
) -> None:
    t0 = bucket_start()
    minute = 60 * 1_000_000
    service = await start(data_dir, nats_url, sink)
    try:
        for offset, severity in [
            (0, "warning"),
            (1, "warning"),
            (2, "critical"),
            (3, "error"),
            (10, "warning"),
            (11, "info"),
        ]:
            await publish(
                nats_url,
                "alerts.in.db",
                event(severity=severity, timestamp=stamp(t0 + offset * minute)),
            )
        await wait_until(lambda: service.count("alert.received") == 6, what="6 events logged")
        await wait_until(lambda: service.count("delivery.succeeded") == 3, what="3 deliveries")
        reasons = sorted(r.json()["reason"] for r in sink.requests)
        assert reasons == ["escalated", "firing", "reminder"]
        assert service.count("alert.escalated") == 1
        assert service.count("alert.suppressed") == 3
        [alert] = await alerts(service)
        assert alert["occurrences"] == 6
        assert alert["suppressed_count"] == 3
        await service.assert_live_state_is_the_log()
    finally:
        await service.stop()


async def test_a_router_restarted_with_another_window_reminds_by_the_new_one(
    nats_url: str, sink: HttpSink, data_dir: Path
) -> None:
    """Issue #16 item 11: the open alert's bucket was a 10-minute index; the router
    restarted with ``window = "1h"`` must still remind once the next hour starts (it
    never did: every hour index is far below a 10-minute one), and only then."""
    hour = 3600 * 1_000_000
    now = now_us() - 3 * hour
    t0 = now - now % hour + 10 * 60 * 1_000_000  # 00:10 of an hour three hours ago
    ten_minutes = webhook_config(sink.url) + '\n[dedup]\nwindow = "10m"\n'
    service = await Tocsin(data_dir, nats_url, ten_minutes).start()
    try:
        await publish(nats_url, "alerts.in.db", event(timestamp=stamp(t0)))
        await wait_until(lambda: len(sink.requests) == 1, what="the firing notification")
    finally:
        await service.stop()
    one_hour = ten_minutes.replace('window = "10m"', 'window = "1h"')
    service = await Tocsin(data_dir, nats_url, one_hour).start()
    try:
        for minutes in (25, 40, 49, 50):  # 00:35, 00:50, 00:59, then 01:00
            await publish(
                nats_url, "alerts.in.db", event(timestamp=stamp(t0 + minutes * 60_000_000))
            )
        await wait_until(lambda: service.count("alert.received") == 5, what="5 events logged")
        await wait_until(lambda: len(sink.requests) == 2, what="the reminder")
        assert [r.json()["reason"] for r in sink.requests] == ["firing", "reminder"]
        fingerprint = sink.requests[0].json()["fingerprint"]
        next_hour = (t0 + 50 * 60_000_000) // hour
        assert sink.requests[1].json()["dedup_key"] == f"{fingerprint}:{next_hour}"
        suppressed = service.events("alert.suppressed")
        assert [s.get("cause", "duplicate") for s in suppressed] == ["duplicate"] * 3
        await service.assert_live_state_is_the_log()
    finally:
        await service.stop()


async def test_resolved_notifies_told_receivers_and_the_next_firing_opens_a_new_alert(
    nats_url: str, sink: HttpSink, data_dir: Path
) -> None:
    service = await start(data_dir, nats_url, sink)
    try:
        await publish(nats_url, "alerts.in.db", event())
        await wait_until(lambda: len(sink.requests) == 1, what="firing notification")
        await publish(nats_url, "alerts.in.db", event(status="resolved"))
        await wait_until(lambda: len(sink.requests) == 2, what="resolved notification")
        await publish(nats_url, "alerts.in.db", event())
        await wait_until(lambda: len(sink.requests) == 3, what="second firing notification")
        await publish(nats_url, "alerts.in.db", event(type="never_fired", status="resolved"))
        await wait_until(
            lambda: service.count("alert.resolve_ignored") == 1, what="ignored resolve"
        )
        first, resolved, second = (r.json() for r in sink.requests)
        assert (first["reason"], resolved["reason"], second["reason"]) == (
            "firing",
            "resolved",
            "firing",
        )
        assert resolved["status"] == "resolved"
        assert resolved["alert_id"] == first["alert_id"]
        assert second["alert_id"] != first["alert_id"]
        assert second["dedup_key"] == first["dedup_key"]
        statuses = {a["id"]: a["status"] for a in await alerts(service)}
        assert statuses == {first["alert_id"]: "resolved", second["alert_id"]: "firing"}
        await wait_until(lambda: service.count("delivery.succeeded") == 3, what="outcomes logged")
        assert len(sink.requests) == 3
        await service.assert_live_state_is_the_log()
    finally:
        await service.stop()


async def test_explicit_fingerprint_is_the_identity(
    nats_url: str, sink: HttpSink, data_dir: Path
) -> None:
    service = await start(data_dir, nats_url, sink)
    try:
        await publish(nats_url, "alerts.in.db", event(fingerprint="db1 disk", labels={"a": "1"}))
        await publish(nats_url, "alerts.in.db", event(fingerprint="db1 disk", labels={"b": "2"}))
        await wait_until(lambda: service.count("alert.suppressed") == 1, what="second suppressed")
        [alert] = await alerts(service)
        assert alert["fingerprint"] == "db1 disk"
        assert alert["labels"] == {"b": "2"}
        await wait_until(lambda: service.count("delivery.succeeded") == 1, what="one delivery")
        assert sink.requests[0].json()["fingerprint"] == "db1 disk"
    finally:
        await service.stop()


BAD_INPUTS: list[tuple[bytes, str, str | None]] = [
    (b"not json", "utf-8", None),
    (b"[1, 2]", "utf-8", None),
    (b'{"severity": "critical", "summary": "x"}', "utf-8", "type"),
    (b'{"type": "t", "severity": "sev9", "summary": "x"}', "utf-8", "severity"),
    (
        b'{"type": "t", "severity": "info", "summary": "x", "timestamp": "2026-01-01T00:00:00"}',
        "utf-8",
        "timestamp",
    ),
    (b'{"type": "t", "severity": "info", "summary": "x", "labels": {"k": 1}}', "utf-8", "labels.k"),
    (b"\xff\xfe\x00{bad", "base64", None),
    (b'{"type": "t", "severity": "info", "summary": "\xff"}', "base64", None),
    (b'{"type": "big", "pad": "' + b"x" * 70_000 + b'"}', "utf-8", None),
]


async def test_bad_input_is_rejected_with_a_reason_and_the_service_goes_on(
    nats_url: str, sink: HttpSink, data_dir: Path
) -> None:
    rejected = await Subscriber().start(nats_url, "alerts.rejected")
    service = await start(data_dir, nats_url, sink)
    try:
        seqs = [await publish(nats_url, "alerts.in.junk", raw) for raw, _, _ in BAD_INPUTS]
        await publish(nats_url, "alerts.in.db", event())
        await wait_until(lambda: len(rejected.messages) == len(BAD_INPUTS), what="rejections")
        await wait_until(lambda: sink.requests, what="the valid event delivered")
        by_id = {m.headers["Nats-Msg-Id"]: msgspec_decode(m.data) for m in rejected.messages}
        for seq, (raw, encoding, field) in zip(seqs, BAD_INPUTS, strict=True):
            message = by_id[f"rejected:{seq}"]
            assert message["reason"]
            assert message["field"] == field
            assert message["subject"] == "alerts.in.junk"
            assert message["raw_encoding"] == encoding
            if encoding == "utf-8":
                assert message["raw"] == raw[:1024].decode()
            assert message["received_at"].endswith("Z")
        logged = service.events("alert.rejected")
        assert len(logged) == len(BAD_INPUTS)
        assert {m["log_seq"] for m in by_id.values()} == set(_seqs_of(service, "alert.rejected"))
        assert (
            "64" in by_id[f"rejected:{seqs[-1]}"]["reason"]
            or "65536" in by_id[f"rejected:{seqs[-1]}"]["reason"]
        )
    finally:
        await service.stop()
        await rejected.close()


def msgspec_decode(data: bytes) -> Any:
    import msgspec

    return msgspec.json.decode(data)


def _seqs_of(service: Tocsin, kind: str) -> list[int]:
    import sqlite3

    with sqlite3.connect(service.db) as conn:
        return [
            row[0]
            for row in conn.execute("SELECT seq FROM events WHERE kind = ? ORDER BY seq", (kind,))
        ]


async def test_failed_sends_are_retried_with_backoff_then_delivered(
    nats_url: str, sink: HttpSink, data_dir: Path
) -> None:
    sink.responder = script(500, 503, 200)
    audit = await Subscriber().start(nats_url, "alerts.delivered")
    service = await start(data_dir, nats_url, sink, max_attempts=5, backoff=["300ms", "600ms"])
    try:
        await publish(nats_url, "alerts.in.db", event())
        await wait_until(lambda: audit.messages, what="delivered after retries")
        assert len(sink.requests) == 3
        keys = {r.headers["idempotency-key"] for r in sink.requests}
        assert len(keys) == 1
        first, second, third = (r.at for r in sink.requests)
        assert second - first >= 0.3 * 0.9
        assert third - second >= 0.6 * 0.9
        assert audit.json()[0]["attempts"] == 3
        await wait_until(lambda: service.count("delivery.succeeded") == 1, what="success logged")
        failures = service.events("delivery.attempt_failed")
        assert [(f["attempt"], f["status_code"]) for f in failures] == [(1, 500), (2, 503)]
        assert [f["retry_in_seconds"] for f in failures] == [0.3, 0.6]
        await service.assert_live_state_is_the_log()
    finally:
        await service.stop()
        await audit.close()


async def test_retry_after_of_a_429_sets_the_next_delay(
    nats_url: str, sink: HttpSink, data_dir: Path
) -> None:
    sink.responder = script((429, {"Retry-After": "1"}), 200)
    service = await start(data_dir, nats_url, sink, backoff=["50ms"])
    try:
        await publish(nats_url, "alerts.in.db", event())
        await wait_until(lambda: len(sink.requests) == 2, what="the retry")
        assert sink.requests[1].at - sink.requests[0].at >= 0.9
        await wait_until(lambda: service.count("delivery.succeeded") == 1, what="success logged")
        assert service.events("delivery.attempt_failed")[0]["retry_in_seconds"] == 1.0
    finally:
        await service.stop()


@pytest.mark.parametrize(("status", "attempts"), [(400, 1), (500, 3)])
async def test_a_send_that_never_goes_through_is_dead_lettered(
    nats_url: str, sink: HttpSink, data_dir: Path, status: int, attempts: int
) -> None:
    sink.responder = always(status)
    failed = await Subscriber().start(nats_url, "alerts.delivery_failed")
    service = await start(data_dir, nats_url, sink, max_attempts=3, backoff=["50ms"])
    try:
        await publish(nats_url, "alerts.in.db", event())
        await wait_until(lambda: failed.messages, what="alerts.delivery_failed")
        message = failed.json()[0]
        assert message["attempts"] == attempts
        assert message["last_status_code"] == status
        assert str(status) in message["error"]
        assert message["failed_at"].endswith("Z")
        assert failed.messages[0].headers["Nats-Msg-Id"] == f"{message['notification_id']}:failed"
        await wait_until(
            lambda: service.count("delivery.dead_lettered") == 1, what="dead letter logged"
        )
        assert len(sink.requests) == attempts
        assert service.count("delivery.attempt_failed") == attempts - 1
        [alert] = await alerts(service)
        assert alert["last_delivery_status"] == "dead"
        await service.assert_live_state_is_the_log()
    finally:
        await service.stop()
        await failed.close()


async def test_connection_refused_is_retried_then_dead_lettered(
    nats_url: str, data_dir: Path
) -> None:
    from tests.support import free_port

    closed = HttpSink(port=free_port())  # never started: nothing listens there
    service = await start(data_dir, nats_url, closed, max_attempts=2, backoff=["50ms"])
    try:
        await publish(nats_url, "alerts.in.db", event())
        await wait_until(lambda: service.count("delivery.dead_lettered") == 1, what="dead letter")
        [dead] = service.events("delivery.dead_lettered")
        assert dead["attempts"] == 2
        assert "connection" in dead["error"]
        assert dead["status_code"] is None  # no HTTP answer
    finally:
        await service.stop()


async def test_state_is_rebuilt_at_restart_and_duplicates_stay_suppressed(
    nats_url: str, sink: HttpSink, data_dir: Path
) -> None:
    service = await start(data_dir, nats_url, sink)
    await publish(nats_url, "alerts.in.db", event())
    await wait_until(lambda: service.count("delivery.succeeded") == 1, what="first delivery")
    assert await service.stop() == 0

    again = await start(data_dir, nats_url, sink)
    try:
        assert again.live_state().alerts == service.rebuilt_state().alerts
        await publish(nats_url, "alerts.in.db", event())
        await wait_until(
            lambda: again.count("alert.suppressed") == 1, what="the duplicate suppressed"
        )
        assert len(sink.requests) == 1
        [alert] = await alerts(again)
        assert alert["occurrences"] == 2
        await again.assert_live_state_is_the_log()
    finally:
        await again.stop()


async def test_health_readiness_and_alert_paging(
    nats_url: str, sink: HttpSink, data_dir: Path
) -> None:
    service = await start(data_dir, nats_url, sink)
    try:
        for host in range(7):
            severity = "critical" if host % 2 else "info"
            await publish(
                nats_url, "alerts.in.db", event(severity=severity, labels={"host": f"h{host}"})
            )
        await wait_until(lambda: service.count("alert.opened") == 7, what="7 alerts")
        async with httpx.AsyncClient(base_url=service.api) as client:
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/readyz")).json() == {"ready": True}
            seen: list[str] = []
            cursor = None
            while True:
                params: dict[str, Any] = {"limit": 3}
                if cursor:
                    params["cursor"] = cursor
                page = (await client.get("/api/v1/alerts", params=params)).json()
                seen.extend(a["id"] for a in page["alerts"])
                cursor = page["next_cursor"]
                if cursor is None:
                    break
            assert len(seen) == len(set(seen)) == 7
            everything = (await client.get("/api/v1/alerts", params={"limit": 500})).json()[
                "alerts"
            ]
            assert [a["id"] for a in everything] == seen
            last_seen = [a["last_seen"] for a in everything]
            assert last_seen == sorted(last_seen, reverse=True)
            critical = (await client.get("/api/v1/alerts", params={"severity": "critical"})).json()
            assert len(critical["alerts"]) == 3
            found = (await client.get("/api/v1/alerts", params={"q": "H5"})).json()["alerts"]
            assert [a["labels"]["host"] for a in found] == ["h5"]
            bad = await client.get("/api/v1/alerts", params={"limit": 501})
            assert bad.status_code == 400
            assert bad.json()["field"] == "limit"
    finally:
        await service.stop()


ONLY_CRITICAL = """
[[route]]
match = {{ severity = "critical" }}
receivers = ["hook"]

[receivers.hook]
channel = "webhook"
url = "{url}"
timeout = "2s"
"""


async def test_an_alert_no_route_matches_is_said_once_in_the_log_metrics_api_and_dashboard(
    nats_url: str, sink: HttpSink, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue #23 item 5: with a config file, an info alert no route matched was opened
    with no log line, no metric, and a dash for receivers on the dashboard, the same as a
    silenced one. Now it is flagged unrouted, counted, and warned of: once, not at each
    of its events (two duplicates, then a reminder in the next bucket)."""
    caplog.set_level(logging.WARNING, logger="tocsin.router")
    service = await Tocsin(data_dir, nats_url, ONLY_CRITICAL.format(url=sink.url)).start()
    t0 = bucket_start()
    try:
        for at in (t0, t0 + 1, t0 + 2, t0 + WINDOW_US):
            await publish(nats_url, "alerts.in.db", event(severity="info", timestamp=stamp(at)))
        routed = event(type="db_down", severity="critical", labels={"host": "pg"})
        await publish(nats_url, "alerts.in.db", routed)  # last: its delivery ends the run
        await wait_until(lambda: service.count("delivery.succeeded") == 1, what="the critical")

        def warnings() -> list[str]:
            return [
                r.getMessage()
                for r in caplog.records
                if r.name == "tocsin.router" and "matches no route" in r.getMessage()
            ]

        suppressions = service.events("alert.suppressed")
        no_route = [e for e in suppressions if e.get("cause") == "no_route"]  # default: duplicate
        assert [e.get("newly_unrouted", False) for e in no_route] == [True, False]
        alert_id = no_route[0]["alert_id"]
        assert warnings() == [
            f"alert {alert_id} (disk_full, info, from db) matches no route: nobody is told"
            " of it; add a route for it, or a catch-all route (match = {})"
        ]
        [record] = [r for r in caplog.records if "matches no route" in r.getMessage()]
        assert record.levelname == "WARNING"
        where = [getattr(record, key) for key in ("alert_id", "type", "severity", "source")]
        assert where == [alert_id, "disk_full", "info", "db"]

        unrouted = ("tocsin_alerts_unrouted_total", frozenset({("severity", "info")}))

        async def counted() -> dict[tuple[str, frozenset[tuple[str, str]]], float] | None:
            samples = await service.metrics()
            return samples if samples.get(unrouted) == 1 else None

        metrics = await wait_until(counted, what="the unrouted alert counted")
        assert [k for k in metrics if k[0] == "tocsin_alerts_unrouted_total"] == [unrouted]
        suppressed = "tocsin_events_suppressed_total"
        assert metrics[(suppressed, frozenset({("cause", "no_route")}))] == 2
        assert metrics[(suppressed, frozenset({("cause", "duplicate")}))] == 2

        async with httpx.AsyncClient(base_url=service.api) as client:
            shown = (await client.get(f"/api/v1/alerts/{alert_id}")).json()
            assert (shown["status"], shown["receivers"], shown["unrouted"]) == ("firing", [], True)
            assert shown["suppressed_count"] == shown["occurrences"] == 4  # none routed
            other = (await client.get("/api/v1/alerts", params={"type": "db_down"})).json()
            assert other["alerts"][0]["unrouted"] is False
            stats = (await client.get("/api/v1/stats")).json()
            assert (stats["total"], stats["suppressed"], stats["unrouted"]) == (5, 4, 1)
            index = (await client.get("/")).text
            assert index.count('class="flag-unrouted"') == 1
            row = index.split(f'data-alert-id="{alert_id}"', 1)[1].split("</tr>", 1)[0]
            assert 'class="flag-unrouted"' in row
            page = (await client.get(f"/alerts/{alert_id}")).text
            assert "no route matches it" in page
        await service.assert_live_state_is_the_log()
        assert len(warnings()) == 1
    finally:
        await service.stop()
