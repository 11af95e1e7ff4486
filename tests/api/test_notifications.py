"""What was sent can be shown (DESIGN.md invariant 6), with a real router, a real
webhook receiver and ``GET /api/v1/notifications/{id}`` over real HTTP."""

from __future__ import annotations

from pathlib import Path

import httpx
import nats

from tests.support import HttpSink, Tocsin, event, publish, wait_until, webhook_config
from tocsin.bus.streams import ensure_streams


async def test_a_batch_sends_each_notification_as_of_its_routed_fact_and_the_api_shows_it(
    data_dir: Path, nats_url: str, sink: HttpSink
) -> None:
    """Two events of one explicit fingerprint reach the router in one batch: the one
    notification carries the first event (its summary, ``occurrences`` 1), not the
    alert as it stood after the batch (the second summary, 2), which is what a body
    built after the whole batch sent. The endpoint answers, from the log, exactly the
    body the receiver got; an unknown id is 404."""
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
            shown = (await http.get(f"/api/v1/notifications/{routed['notification_id']}")).json()
            unknown = await http.get("/api/v1/notifications/nope")
        assert shown["body"] == sent
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
