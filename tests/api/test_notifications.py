"""What was sent can be shown (DESIGN.md invariant 6), with a real router, a real
webhook receiver and ``GET /api/v1/notifications/{id}`` over real HTTP."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import httpx
import nats

from tests.support import HttpSink, Tocsin, event, publish, script, wait_until, webhook_config
from tocsin.bus.streams import ensure_streams
from tocsin.core.contracts import GroupNotification

VIEW_FIELDS = [
    "notification_id",
    "receiver",
    "channel",
    "body",
    "attempts",
    "status",
    "routed_seq",
    "generation",
]
"""The answer's fields, in order, for an alert's notification and a group's alike."""


async def test_a_batch_sends_each_notification_as_of_its_routed_fact_and_the_api_shows_it(
    data_dir: Path, nats_url: str, sink: HttpSink
) -> None:
    """Two events of one explicit fingerprint reach the router in one batch: the one
    notification carries the first event (its summary, ``occurrences`` 1), not the
    alert as it stood after the batch (the second summary, 2), which is what a body
    built after the whole batch sent. The endpoint answers, from the log, exactly the
    body the receiver got (its bytes, in the answer's fields as they were); an unknown
    id is 404."""
    nc = await nats.connect(nats_url)
    await ensure_streams(nc.jetstream())  # TOCSIN_IN with the router's consumer
    await nc.close()
    for summary in ("first", "second"):  # queued before the router runs: one pull, one batch
        await publish(nats_url, "alerts.in.db", event(fingerprint="fp-1", summary=summary))

    svc = await Tocsin(data_dir, nats_url, webhook_config(sink.url)).start()
    try:
        await wait_until(lambda: svc.count("delivery.succeeded") == 1, 10, "the delivery logged")
        received = svc.events("alert.received")
        assert [e["summary"] for e in received] == ["first", "second"]
        (routed,) = svc.events("alert.routed")
        assert len(sink.requests) == 1
        sent = sink.requests[0].json()
        assert (sent["summary"], sent["occurrences"]) == ("first", 1)
        assert sent["notification_id"] == routed["notification_id"]

        async with httpx.AsyncClient(base_url=svc.api, timeout=10) as http:
            answer = await http.get(f"/api/v1/notifications/{routed['notification_id']}")
            unknown = await http.get("/api/v1/notifications/nope")
        shown = answer.json()
        assert shown["body"] == sent
        assert sink.requests[0].body in answer.content  # the very bytes the receiver got
        assert list(shown) == VIEW_FIELDS  # a group's view beside it changed nothing here
        assert (shown["receiver"], shown["channel"], shown["attempts"], shown["status"]) == (
            "hook",
            "webhook",
            1,
            "delivered",
        )
        assert unknown.status_code == 404
        assert "nope" in unknown.json()["error"]
    finally:
        await svc.stop()
    await svc.assert_live_state_is_the_log()
    # one batch: both events were appended with the same batch time
    assert len({row["received_at"] for row in received}) == 1


def grouped_webhook(url: str) -> str:
    """One route grouped by ``labels.service`` that lists 2 alerts a notification, to a
    webhook that is retried at once."""
    return f"""
[retry]
max_attempts = 3
backoff = ["100ms"]

[[route]]
match = {{}}
receivers = ["hook"]
group_by = ["labels.service"]
group_wait = "300ms"
group_interval = "300ms"
max_alerts = 2

[receivers.hook]
channel = "webhook"
url = "{url}"
timeout = "5s"
"""


def with_the_old_notification_index(db: Path) -> None:
    """The file as a version before this one left it: its routed facts indexed for
    ``alert.routed`` only, under the old index's name."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("DROP INDEX events_notification_id")
        conn.execute(
            "CREATE INDEX events_routed_notification"
            " ON events(json_extract(CAST(data AS TEXT), '$.notification_id'))"
            " WHERE kind = 'alert.routed'"
        )
        conn.commit()


async def test_a_group_notification_is_shown_as_its_webhook_got_it(
    data_dir: Path, nats_url: str, sink: HttpSink
) -> None:
    """Catches ``GET /api/v1/notifications/{id}`` answering 404 for a grouped route's
    notification (the lookup knew only ``alert.routed`` facts), or a body other than
    the group body the webhook got (DESIGN.md invariant 6, section 11): three alerts of
    one service, summaries in several scripts, two listed and one counted as
    truncated, the first send failing (503) and the retry delivered; then the most
    severe alert resolved, sent as an update listing it resolved. Each id answers the
    webhook's JSON, byte for byte inside the answer, with its receiver, channel,
    attempts and status. Then the log is given back the old index of a version before
    this one (``alert.routed`` only), the service restarted: it makes the new index
    when it opens the file and still answers, and an unknown id is still 404."""
    sink.responder = script(503, 200)
    labels = {"service": "api ü"}
    alerts = [
        event(severity="critical", summary="磁盘 已满 ☃", labels={**labels, "host": "a"}),
        event(summary="диск заполнен", labels={**labels, "host": "b"}),
        event(summary='quote " and \\ slash', labels={**labels, "host": "c"}),
    ]
    nc = await nats.connect(nats_url)
    await ensure_streams(nc.jetstream())
    await nc.close()
    for body in alerts:  # queued before the router runs: all three in the first group_wait
        await publish(nats_url, "alerts.in.db", body)
    svc = await Tocsin(data_dir, nats_url, grouped_webhook(sink.url)).start()
    try:
        await wait_until(lambda: svc.count("delivery.succeeded") == 1, 15, "the first delivery")
        await publish(nats_url, "alerts.in.db", {**alerts[0], "status": "resolved"})
        await wait_until(lambda: svc.count("delivery.succeeded") == 2, 15, "the update")
        first, update = svc.events("group.notified")
        assert (first["truncated"], len(first["alerts"]), update["reason"]) == (1, 2, "update")
        assert update["alerts"][0]["status"] == "resolved"
        sent = {request.headers["idempotency-key"]: request for request in sink.requests}
        assert [r.headers["idempotency-key"] for r in sink.requests] == [
            first["notification_id"],
            first["notification_id"],
            update["notification_id"],
        ]
        async with httpx.AsyncClient(base_url=svc.api, timeout=10) as http:
            answers = [
                await http.get(f"/api/v1/notifications/{fact['notification_id']}")
                for fact in (first, update)
            ]
        for answer, attempts in zip(answers, (2, 1), strict=True):
            assert answer.status_code == 200, answer.text
            shown = answer.json()
            got = sent[shown["notification_id"]]
            assert shown["body"] == got.json()
            assert got.body in answer.content  # the very bytes, not just the same JSON
            assert list(shown) == VIEW_FIELDS
            assert set(shown["body"]) == set(GroupNotification.__struct_fields__)
            assert (shown["receiver"], shown["channel"], shown["attempts"]) == (
                "hook",
                "webhook",
                attempts,
            )
            assert (shown["status"], shown["generation"]) == ("delivered", 0)
        with contextlib.closing(sqlite3.connect(svc.db)) as conn:
            seqs = conn.execute("SELECT seq FROM events WHERE kind = 'group.notified' ORDER BY seq")
            assert [a.json()["routed_seq"] for a in answers] == [seq for (seq,) in seqs]
    finally:
        await svc.stop()
    await svc.assert_live_state_is_the_log()

    with_the_old_notification_index(svc.db)
    again = await Tocsin(data_dir, nats_url, grouped_webhook(sink.url)).start()
    try:
        with contextlib.closing(sqlite3.connect(again.db)) as conn:
            indexes = {row[1] for row in conn.execute("PRAGMA index_list(events)")}
        assert "events_notification_id" in indexes
        assert "events_routed_notification" not in indexes
        async with httpx.AsyncClient(base_url=again.api, timeout=10) as http:
            after = await http.get(f"/api/v1/notifications/{update['notification_id']}")
            unknown = await http.get("/api/v1/notifications/nope")
        assert after.status_code == 200, after.text
        assert after.content == answers[1].content
        assert unknown.status_code == 404
    finally:
        await again.stop()
