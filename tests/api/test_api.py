"""The HTTP API of DESIGN.md section 7 over real HTTP, against a running service with a
real NATS, a real webhook receiver and a real SQLite log. Operator actions are checked
where they matter: as facts in the log, in the projection rebuilt from it, and in what
the receiver was (or was not) told."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.pipeline.test_pipeline import WINDOW_US, bucket_start
from tests.support import HttpSink, Tocsin, event, publish, script, wait_until, webhook_config
from tocsin.core.times import format_us, now_us

TOKEN = "t0ps3cret-api-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def svc(data_dir: Path, nats_url: str, sink: HttpSink) -> AsyncIterator[Tocsin]:
    service = await Tocsin(
        data_dir, nats_url, webhook_config(sink.url, max_attempts=2), api_token=TOKEN
    ).start()
    yield service
    await service.stop()
    await service.assert_live_state_is_the_log()


@pytest.fixture
async def http(svc: Tocsin) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=svc.api, timeout=10) as client:
        yield client


async def alert_of(http: httpx.AsyncClient, **filters: str) -> dict[str, Any]:
    async def one() -> dict[str, Any] | None:
        alerts = (await http.get("/api/v1/alerts", params=filters)).json()["alerts"]
        return alerts[0] if alerts else None

    await wait_until(one, 10, f"an alert matching {filters}")
    found = await one()
    assert found is not None
    return found


async def test_reads_filters_paging_history_deliveries_stats_and_the_raw_log(
    svc: Tocsin, http: httpx.AsyncClient, sink: HttpSink, nats_url: str
) -> None:
    t0 = bucket_start()
    await publish(nats_url, "alerts.in.billing", event(timestamp=format_us(t0)))
    for i in range(3):  # duplicates of the same dedup key
        await publish(nats_url, "alerts.in.billing", event(timestamp=format_us(t0 + i + 1)))
    await publish(
        nats_url,
        "alerts.in.api",
        event(type="latency_high", severity="critical", summary="p99 2s", labels={"svc": "api"}),
    )
    await publish(nats_url, "alerts.in.api", b"not json")
    await wait_until(lambda: len(sink.requests) == 2, 10, "two notifications")
    await wait_until(lambda: svc.count("delivery.succeeded") == 2, 10, "both outcomes logged")

    page = (await http.get("/api/v1/alerts")).json()
    assert [a["type"] for a in page["alerts"]] == ["latency_high", "disk_full"]  # newest first
    assert page["next_cursor"] is None
    disk = page["alerts"][1]
    assert disk["occurrences"] == 4
    assert disk["suppressed_count"] == 3
    assert disk["status"] == "firing"
    assert disk["receivers"] == ["hook"]
    assert disk["last_delivery_status"] == "delivered"
    assert disk["source"] == "billing"

    for params, types in [
        ({"severity": "critical"}, ["latency_high"]),
        ({"type": "disk_full"}, ["disk_full"]),
        ({"source": "billing"}, ["disk_full"]),
        ({"q": "P99"}, ["latency_high"]),
        ({"q": "db1"}, ["disk_full"]),  # label values are searched
        ({"status": "resolved"}, []),
    ]:
        got = (await http.get("/api/v1/alerts", params=params)).json()["alerts"]
        assert [a["type"] for a in got] == types, params
    first = (await http.get("/api/v1/alerts", params={"limit": 1})).json()
    assert [a["type"] for a in first["alerts"]] == ["latency_high"]
    rest = (await http.get("/api/v1/alerts", params={"cursor": first["next_cursor"]})).json()
    assert [a["type"] for a in rest["alerts"]] == ["disk_full"]
    assert rest["next_cursor"] is None
    bad = await http.get("/api/v1/alerts", params={"limit": 501})
    assert bad.status_code == 400
    assert bad.json()["field"] == "limit"
    bad = await http.get("/api/v1/alerts", params={"status": "sleeping"})
    assert bad.status_code == 400
    assert bad.json()["field"] == "status"

    detail = (await http.get(f"/api/v1/alerts/{disk['id']}")).json()
    kinds = [h["kind"] for h in detail["history"]]
    assert kinds[:3] == ["alert.received", "alert.opened", "alert.routed"], kinds
    # The duplicates' received+suppressed pairs fold into runs (the delivery outcome
    # may land between them, splitting a run).
    assert set(kinds[3:]) == {"alert.suppressed", "delivery.succeeded"}, kinds
    runs = [h["data"] for h in detail["history"] if h["kind"] == "alert.suppressed"]
    assert sum(r["count"] for r in runs) == 3
    assert {r.get("cause", "duplicate") for r in runs} == {"duplicate"}  # the default is omitted
    assert detail["occurrences"] == 4
    assert detail["id"] == disk["id"]
    missing = await http.get("/api/v1/alerts/nope")
    assert missing.status_code == 404
    assert missing.json()["field"] == "id"

    steps = (await http.get(f"/api/v1/alerts/{disk['id']}/deliveries")).json()["deliveries"]
    assert [(s["status"], s["attempt"], s["channel"]) for s in steps] == [
        ("queued", 0, "webhook"),
        ("delivered", 1, "webhook"),
    ]
    assert [s["status_code"] for s in steps] == [None, 200]  # what the webhook answered
    assert steps[0]["notification_id"] == sink.requests[0].headers["idempotency-key"] or (
        steps[0]["notification_id"] == sink.requests[1].headers["idempotency-key"]
    )

    stats = (await http.get("/api/v1/stats")).json()
    assert stats["window_hours"] == 24
    assert stats["total"] == 5
    assert stats["suppressed"] == 3
    assert stats["by_severity"] == {"critical": 1, "error": 0, "warning": 4, "info": 0}
    assert stats["by_type"] == {"disk_full": 4, "latency_high": 1}
    assert stats["dedup_ratio"] == pytest.approx(3 / 5)
    assert stats["delivery_success_rate"] == 1.0
    assert stats["by_receiver"] == {
        "hook": {"delivered": 2, "failed_attempts": 0, "dead": 0, "superseded": 0}
    }
    assert stats["queue"] == {"pending": 0, "retrying": 0, "dead": 0, "superseded": 0}
    assert stats["last_by_severity"]["critical"]["summary"] == "p99 2s"
    assert stats["last_by_severity"]["info"] is None
    assert len(stats["per_hour"]) == 24
    assert (await http.get("/api/v1/stats", params={"hours": 0})).status_code == 400

    everything: list[dict[str, Any]] = []
    after = 0
    while True:
        page = (await http.get("/api/v1/events", params={"after_seq": after, "limit": 7})).json()
        everything.extend(page["events"])
        if page["next_after_seq"] is None:
            break
        after = page["next_after_seq"]
    assert [e["seq"] for e in everything] == list(range(1, svc.live_state().last_seq + 1))
    rejected = [e for e in everything if e["kind"] == "alert.rejected"]
    assert len(rejected) == 1
    assert rejected[0]["data"]["raw"] == "not json"
    assert all(e["ts"].endswith("Z") for e in everything)
    assert (await http.get("/api/v1/events", params={"limit": 1001})).status_code == 400


async def test_http_ingest_accepts_and_refuses_as_the_contract_says(
    svc: Tocsin, http: httpx.AsyncClient, sink: HttpSink
) -> None:
    accepted = await http.post("/api/v1/events", json=event(source="shop"), headers=AUTH)
    assert accepted.status_code == 202, accepted.text
    event_id = accepted.json()["event_id"]
    alert = await alert_of(http, source="shop")
    # The projection folds a batch while its commit is under way: wait for the file too.
    await wait_until(lambda: svc.count("alert.received") == 1, 10, "the event committed")
    received = svc.events("alert.received")
    assert received[-1]["event_id"] == event_id
    assert received[-1]["subject"] == "alerts.in.shop"
    await wait_until(lambda: len(sink.requests) == 1, 10, "the notification")
    assert sink.requests[0].json()["alert_id"] == alert["id"]

    given = await http.post("/api/v1/events", json=event(event_id="evt-42"), headers=AUTH)
    assert given.json() == {"event_id": "evt-42"}

    cases: list[tuple[dict[str, Any], int, str | None]] = [
        ({"content": b"type=x", "headers": {"content-type": "text/plain"}}, 415, None),
        ({"content": b"{" + b" " * 70_000 + b"}"}, 413, None),
        ({"content": b"{" + b" " * 5_000_000 + b"}"}, 413, None),  # past the server's limit
        ({"content": chunked(b"{" + b" " * 200_000 + b"}")}, 413, None),  # no Content-Length
        ({"content": b"{not json"}, 400, None),
        ({"content": b"[1, 2]"}, 400, None),
        ({"json": event(type="Bad Type")}, 422, "type"),
        ({"json": event(severity="loud")}, 422, "severity"),
        ({"json": event(timestamp="2026-01-01T00:00:00")}, 422, "timestamp"),
    ]
    for request, status, field in cases:
        headers = {"content-type": "application/json", **AUTH, **request.pop("headers", {})}
        answer = await http.post("/api/v1/events", headers=headers, **request)
        assert answer.status_code == status, (request, answer.text)
        body = answer.json()
        assert body["error"], body
        assert body.get("field") == field, body
        if status == 413:
            assert "the limit is 65536" in body["error"], body
    assert svc.count("alert.rejected") == 0  # refused over HTTP: answered, not logged
    metrics = await svc.metrics()
    refused = sum(
        v for (name, _), v in metrics.items() if name == "tocsin_http_events_refused_total"
    )
    assert refused == len(cases)
    unauthorised = await http.post("/api/v1/events", json=event())
    assert unauthorised.status_code == 401
    assert "Bearer" in unauthorised.headers["www-authenticate"]


async def test_an_http_event_repeating_an_event_id_is_answered_and_not_counted(
    svc: Tocsin, http: httpx.AsyncClient, nats_url: str
) -> None:
    """Issue #16 item 14: the HTTP copy of an event first published on NATS (under
    another ``Nats-Msg-Id``, so JetStream keeps it) is answered 202 and suppressed with
    cause ``duplicate_event``: one occurrence, counted in the stats' ``suppressed`` and
    the metric. Without the key it was a second occurrence (a ``duplicate``)."""
    body = event(source="shop", event_id="evt-twice")
    await publish(nats_url, "alerts.in.shop", body, headers={"Nats-Msg-Id": "nats-copy"})
    await wait_until(lambda: svc.count("alert.received") == 1, 10, "the NATS copy committed")
    again = await http.post("/api/v1/events", json=body, headers=AUTH)
    assert again.status_code == 202, again.text
    assert again.json() == {"event_id": "evt-twice"}
    await wait_until(lambda: svc.count("alert.suppressed") == 1, 10, "the HTTP copy committed")
    [suppressed] = svc.events("alert.suppressed")
    assert suppressed["cause"] == "duplicate_event"
    alert = await alert_of(http, source="shop")
    assert (alert["occurrences"], alert["suppressed_count"]) == (1, 0)
    stats = (await http.get("/api/v1/stats")).json()
    assert (stats["total"], stats["suppressed"]) == (2, 1)
    metrics = await svc.metrics()
    cause = frozenset({("cause", "duplicate_event")})
    assert metrics[("tocsin_events_suppressed_total", cause)] == 1


async def test_fields_the_contract_does_not_know_are_accepted_and_named(
    svc: Tocsin, http: httpx.AsyncClient, nats_url: str
) -> None:
    """Issue #23 item 6: a typo (``lables``) is accepted, as a newer field must be, and
    said: in the HTTP answer, and for a NATS publisher (who gets no answer) in the
    ``alert.received`` fact. ``ends_at`` is in the contract: never named."""
    typo = event(source="shop", lables={"host": "db1"}, ends_at="2099-01-01T00:00:00Z")
    del typo["labels"]
    answer = await http.post("/api/v1/events", json=typo, headers=AUTH)
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"event_id": answer.json()["event_id"], "ignored_fields": ["lables"]}
    await publish(nats_url, "alerts.in.web", event(type="t2", severity_level="high"))
    await wait_until(lambda: svc.count("alert.received") == 2, 10, "both events committed")
    ignored = {e["subject"]: e.get("ignored_fields") for e in svc.events("alert.received")}
    assert ignored == {"alerts.in.shop": ["lables"], "alerts.in.web": ["severity_level"]}
    alert = await alert_of(http, source="shop")
    assert alert["labels"] == {}  # the typo's labels were not taken for labels


async def chunked(body: bytes, size: int = 16_384) -> AsyncIterator[bytes]:
    """A body sent in chunks, with no Content-Length to refuse it by."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


async def test_ack_stops_reminders_until_resolve(
    svc: Tocsin, http: httpx.AsyncClient, sink: HttpSink, nats_url: str
) -> None:
    t0 = bucket_start()
    await publish(nats_url, "alerts.in.db", event(timestamp=format_us(t0)))
    await wait_until(lambda: len(sink.requests) == 1, 10, "the first notification")
    alert = await alert_of(http)

    refused = await http.post(f"/api/v1/alerts/{alert['id']}/ack", json={"by": "ana"})
    assert refused.status_code == 401
    acked = await http.post(
        f"/api/v1/alerts/{alert['id']}/ack", json={"by": "ana", "comment": "on it"}, headers=AUTH
    )
    assert acked.status_code == 200, acked.text
    assert acked.json()["status"] == "acked"
    assert acked.json()["acked_by"] == "ana"
    assert (await alert_of(http, status="acked"))["id"] == alert["id"]

    # A new bucket would remind; acknowledged, it is counted and suppressed instead.
    await publish(nats_url, "alerts.in.db", event(timestamp=format_us(t0 + WINDOW_US)))
    await wait_until(lambda: svc.count("alert.suppressed") == 1, 10, "the reminder suppressed")
    assert svc.events("alert.suppressed")[0]["cause"] == "acked"
    # An escalation still notifies.
    await publish(
        nats_url, "alerts.in.db", event(severity="critical", timestamp=format_us(t0 + WINDOW_US))
    )
    await wait_until(lambda: len(sink.requests) == 2, 10, "the escalation")
    assert sink.requests[1].json()["reason"] == "escalated"

    resolved = await http.post(
        f"/api/v1/alerts/{alert['id']}/resolve",
        json={"by": "ana", "comment": "fixed"},
        headers=AUTH,
    )
    assert resolved.status_code == 200
    assert resolved.json()["status"] == "resolved"
    await wait_until(lambda: len(sink.requests) == 3, 10, "the resolved notification")
    assert sink.requests[2].json()["reason"] == "resolved"
    assert sink.requests[2].json()["status"] == "resolved"
    again = await http.post(f"/api/v1/alerts/{alert['id']}/ack", json={"by": "x"}, headers=AUTH)
    assert again.status_code == 409
    assert again.json()["field"] == "id"
    unknown = await http.post("/api/v1/alerts/nope/resolve", json={"by": "x"}, headers=AUTH)
    assert unknown.status_code == 404
    nameless = await http.post(f"/api/v1/alerts/{alert['id']}/ack", json={}, headers=AUTH)
    assert nameless.status_code == 422
    assert nameless.json()["field"] == "by"

    kinds = [h["kind"] for h in (await http.get(f"/api/v1/alerts/{alert['id']}")).json()["history"]]
    assert "alert.acked" in kinds
    assert kinds.count("alert.resolved") == 1
    resolved_event = svc.events("alert.resolved")[0]
    assert resolved_event["by"] == "ana"
    assert resolved_event["comment"] == "fixed"


async def test_a_silence_holds_notifications_while_active_and_its_bucket_stays_unspent(
    svc: Tocsin, http: httpx.AsyncClient, sink: HttpSink, nats_url: str
) -> None:
    body = {
        "matchers": {"labels": {"host": "db*"}, "severity": ["warning", "error"]},
        "ends_at": "2h",
        "created_by": "ana",
        "comment": "maintenance",
    }
    created = await http.post("/api/v1/silences", json=body, headers=AUTH)
    assert created.status_code == 201, created.text
    silence_id = created.json()["id"]
    listed = (await http.get("/api/v1/silences")).json()["silences"]
    assert [(s["id"], s["state"], s["created_by"]) for s in listed] == [
        (silence_id, "active", "ana")
    ]

    await publish(nats_url, "alerts.in.db", event())
    await wait_until(lambda: svc.count("alert.silenced") == 1, 10, "the event silenced")
    alert = await alert_of(http, status="silenced")
    assert alert["suppressed_count"] == 1
    assert alert["receivers"] == []
    await publish(nats_url, "alerts.in.db", event(labels={"host": "web1"}))  # not matched
    await wait_until(lambda: len(sink.requests) == 1, 10, "the unsilenced alert")
    assert sink.requests[0].json()["labels"] == {"host": "web1"}
    stats = (await http.get("/api/v1/stats")).json()
    assert stats["suppressed"] == 1

    deleted = await http.delete(
        f"/api/v1/silences/{silence_id}", params={"by": "ana"}, headers=AUTH
    )
    assert deleted.status_code == 200
    assert (await http.get("/api/v1/silences")).json()["silences"][0]["state"] == "deleted"
    # Same bucket, silence gone: the held notification goes out now, as a first firing.
    await publish(nats_url, "alerts.in.db", event())
    await wait_until(lambda: len(sink.requests) == 2, 10, "the notification after the silence")
    told = sink.requests[1].json()
    assert told["alert_id"] == alert["id"]
    assert told["reason"] == "firing"
    assert (await alert_of(http, type="disk_full", q="db1"))["status"] == "firing"

    for bad, field in [
        ({**body, "matchers": {}}, "matchers"),
        ({**body, "matchers": {"colour": "red"}}, "matchers"),
        ({**body, "ends_at": "2020-01-01T00:00:00Z"}, "ends_at"),
        ({**body, "ends_at": "soon"}, "ends_at"),
        ({**body, "created_by": ""}, "created_by"),
    ]:
        answer = await http.post("/api/v1/silences", json=bad, headers=AUTH)
        assert answer.status_code == 422, answer.text
        assert answer.json()["field"] == field, answer.text
    gone = await http.delete(f"/api/v1/silences/{silence_id}", headers=AUTH)
    assert gone.status_code == 404
    kinds = {e["kind"] for e in (await http.get("/api/v1/events")).json()["events"]}
    assert {"silence.created", "silence.deleted", "alert.silenced"} <= kinds


async def test_a_silence_in_alertmanager_matcher_syntax_holds_what_it_selects(
    svc: Tocsin, http: httpx.AsyncClient, sink: HttpSink, nats_url: str
) -> None:
    """A silence whose ``matchers`` is a list of Alertmanager matchers (DESIGN.md
    section 12): the anchored regex on a label and ``alertname`` select exactly the
    alert they name; one whose matchers all match the empty string is refused."""
    body = {
        "matchers": ['host=~"db[0-9]+"', 'alertname="disk_full"'],
        "ends_at": "2h",
        "created_by": "ana",
    }
    created = await http.post("/api/v1/silences", json=body, headers=AUTH)
    assert created.status_code == 201, created.text
    await publish(nats_url, "alerts.in.db", event(labels={"host": "db1"}))
    await wait_until(lambda: svc.count("alert.silenced") == 1, 10, "db1 silenced")
    await publish(nats_url, "alerts.in.db", event(labels={"host": "db1-replica"}))
    await wait_until(lambda: len(sink.requests) == 1, 10, "the anchored regex lets db1-replica by")
    assert sink.requests[0].json()["labels"] == {"host": "db1-replica"}
    assert svc.count("alert.silenced") == 1
    listed = (await http.get("/api/v1/silences")).json()["silences"]
    assert listed[0]["matchers"] == {"matchers": body["matchers"]}
    for bad in (['host=~".*"'], ['host=~"("'], []):
        answer = await http.post("/api/v1/silences", json={**body, "matchers": bad}, headers=AUTH)
        assert answer.status_code == 422, answer.text
        assert answer.json()["field"] == "matchers", answer.text


async def test_dead_letters_are_requeued_and_delivered(
    svc: Tocsin, http: httpx.AsyncClient, sink: HttpSink, nats_url: str
) -> None:
    sink.responder = script(400, 200)  # 400 is permanent: dead-lettered at once
    await publish(nats_url, "alerts.in.db", event())
    await wait_until(lambda: svc.count("delivery.dead_lettered") == 1, 10, "the dead letter")
    alert = await alert_of(http)
    assert alert["last_delivery_status"] == "dead"
    assert (await http.get("/api/v1/stats")).json()["queue"]["dead"] == 1

    unknown = await http.post("/api/v1/deliveries/retry", json={"receiver": "other"}, headers=AUTH)
    assert unknown.status_code == 404
    assert unknown.json()["field"] == "receiver"
    later = format_us(now_us() + 3_600_000_000)  # dead since an hour from now: none
    nothing = await http.post(
        "/api/v1/deliveries/retry", json={"receiver": "hook", "since": later}, headers=AUTH
    )
    assert nothing.json()["requeued"] == 0
    assert nothing.json()["error"] is None
    retried = await http.post("/api/v1/deliveries/retry", json={}, headers=AUTH)
    assert retried.status_code == 200
    assert retried.json()["requeued"] == 1
    await wait_until(lambda: svc.count("delivery.succeeded") == 1, 10, "the re-queued delivery")
    assert len(sink.requests) == 2
    keys = {r.headers["idempotency-key"] for r in sink.requests}
    assert keys == set(retried.json()["notification_ids"])  # same notification, same key
    steps = (await http.get(f"/api/v1/alerts/{alert['id']}/deliveries")).json()["deliveries"]
    assert [s["status"] for s in steps] == ["queued", "dead", "requeued", "delivered"]
    assert steps[1]["status_code"] == 400
    stats = (await http.get("/api/v1/stats")).json()
    assert stats["queue"]["dead"] == 0
    assert stats["by_receiver"]["hook"] == {
        "delivered": 1,
        "failed_attempts": 0,
        "dead": 1,
        "superseded": 0,
    }
    assert stats["delivery_success_rate"] == 0.5
    bad_since = await http.post("/api/v1/deliveries/retry", json={"since": "then"}, headers=AUTH)
    assert bad_since.status_code == 422
    assert bad_since.json()["field"] == "since"


async def test_openapi_describes_every_path_of_the_contract(http: httpx.AsyncClient) -> None:
    document = (await http.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.")
    paths = document["paths"]
    for path, methods in {
        "/healthz": {"get"},
        "/readyz": {"get"},
        "/api/v1/alerts": {"get"},
        "/api/v1/alerts/{alert_id}": {"get"},
        "/api/v1/alerts/{alert_id}/deliveries": {"get"},
        "/api/v1/alerts/{alert_id}/ack": {"post"},
        "/api/v1/alerts/{alert_id}/resolve": {"post"},
        "/api/v1/silences": {"get", "post"},
        "/api/v1/silences/{silence_id}": {"delete"},
        "/api/v1/deliveries/retry": {"post"},
        "/api/v1/stats": {"get"},
        "/api/v1/events": {"get", "post"},
    }.items():
        assert methods <= set(paths[path]), path
    ingest = paths["/api/v1/events"]["post"]["requestBody"]["content"]["application/json"]
    assert ingest["schema"] == {"$ref": "#/components/schemas/InboundEvent"}
    assert "severity" in document["components"]["schemas"]["InboundEvent"]["required"]


async def test_openapi_describes_a_notification_answer_as_an_alerts_or_a_groups(
    http: httpx.AsyncClient,
) -> None:
    """Catches the notification endpoint's OpenAPI naming only the alert body while it
    answers a group's too (DESIGN.md section 11), or a document Litestar cannot make
    (msgspec takes no union of two untagged Structs in one field): the answer is one of
    two views, each with its own ``body``."""
    document = (await http.get("/openapi.json")).json()
    answer = document["paths"]["/api/v1/notifications/{notification_id}"]["get"]["responses"]
    schema = answer["200"]["content"]["application/json"]["schema"]
    assert schema == {
        "oneOf": [
            {"$ref": "#/components/schemas/NotificationView"},
            {"$ref": "#/components/schemas/GroupNotificationView"},
        ]
    }
    schemas = document["components"]["schemas"]
    bodies = {
        name: schemas[name]["properties"]["body"]
        for name in ("NotificationView", "GroupNotificationView")
    }
    assert bodies == {
        "NotificationView": {"$ref": "#/components/schemas/Notification"},
        "GroupNotificationView": {"$ref": "#/components/schemas/GroupNotification"},
    }
    assert list(schemas["GroupNotificationView"]["properties"]) == list(
        schemas["NotificationView"]["properties"]
    )


async def test_every_response_carries_the_security_headers(http: httpx.AsyncClient) -> None:
    """JSON, errors, probes, metrics and the dashboard alike: not sniffed, not framed, no
    referrer, not stored; each header once (the dashboard's own values are kept)."""
    answers = {
        "alerts": await http.get("/api/v1/alerts"),
        "unauthorised": await http.post("/api/v1/events", json=event()),
        "missing": await http.get("/api/v1/alerts/nope"),
        "invalid": await http.get("/api/v1/alerts", params={"limit": "many"}),
        "readyz": await http.get("/readyz"),
        "healthz": await http.get("/healthz"),
        "metrics": await http.get("/metrics"),
        "openapi": await http.get("/openapi.json"),
        "dashboard": await http.get("/"),
    }
    assert answers["unauthorised"].status_code == 401
    assert answers["missing"].status_code == 404
    assert answers["invalid"].status_code == 400
    for name, answer in answers.items():
        for header, value in (
            ("x-content-type-options", "nosniff"),
            ("x-frame-options", "DENY"),
            ("referrer-policy", "no-referrer"),
            ("cache-control", "no-store"),
        ):
            assert answer.headers.get_list(header) == [value], (name, header, answer.headers)
    assert "nonce-" in answers["dashboard"].headers["content-security-policy"]
