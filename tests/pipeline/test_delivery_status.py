"""A notification whose outcome is stored in TOCSIN_OUT but not yet in the log is not
sent again, even when JetStream hands its work item out again with a delivery count of 1
(DESIGN.md invariant 4: a second send only if the process dies between the send and the
outcome publish).

On a cluster this happens when a consumer's leader dies before its delivered state is
replicated, while the recorder lags (it was measured 10 s behind after a failover). Here,
on one real nats-server with ``tocsin serve`` running: the recorder's consumer is paused
(JetStream's own pause), so an outcome stays unrecorded; JetStream's leader-elected
advisory for the worker's consumer is published, as a new leader would; and the work item
is queued again as a new message, which arrives with a delivery count of 1.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest

from tests.support import HttpSink, Tocsin, event, publish, wait_until, webhook_config
from tocsin.core.policy.failover import BEHIND, DELIVERED, PENDING
from tocsin.core.subjects import (
    CONSUMER_LEADER_ELECTED_PREFIX,
    DELIVERY_STATUS,
    MSG_ID,
    RECORDER_CONSUMER,
    STREAM_OUT,
    STREAM_WORK,
    deliver_consumer,
    route_subject,
)

pytestmark = pytest.mark.timeout(90)

FAR_FUTURE = "2999-01-01T00:00:00Z"


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Any]:
    client = await nats.connect(nats_url)
    yield client
    await client.close()


async def pause_recorder(nc: Any, until: str | None) -> None:
    """Pause the recorder's consumer until ``until`` (``None``: resume it)."""
    body = msgspec.json.encode({"pause_until": until} if until else {})
    subject = f"$JS.API.CONSUMER.PAUSE.{STREAM_OUT}.{RECORDER_CONSUMER}"
    reply = msgspec.json.decode((await nc.request(subject, body, timeout=5)).data)
    assert "error" not in reply, reply
    assert bool(reply.get("paused")) is (until is not None), reply


async def test_an_outcome_not_yet_recorded_stops_a_second_send_in_turbulence(
    nats_url: str, nc: Any, sink: HttpSink, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tocsin")
    items: list[Any] = []

    async def keep(msg: Any) -> None:
        items.append(msg)

    await nc.subscribe(route_subject("hook"), cb=keep)  # a copy of each work item
    await nc.flush()
    tocsin = await Tocsin(data_dir, nats_url, webhook_config(sink.url), http=True).start()
    js = nc.jetstream()
    try:
        await publish(nats_url, "alerts.in.app", event(labels={"host": "a"}))
        await wait_until(lambda: tocsin.count("delivery.succeeded") == 1, 20, "first delivery")

        # The recorder stops taking outcomes; the next notification is sent and its
        # outcome stored in TOCSIN_OUT, but the log does not hear of it.
        await pause_recorder(nc, FAR_FUTURE)
        out_before = (await js.stream_info(STREAM_OUT)).state.last_seq
        await publish(nats_url, "alerts.in.app", event(labels={"host": "b"}))
        await wait_until(lambda: len(sink.requests) == 2, 20, "the second send")
        nid = sink.requests[1].headers["idempotency-key"]

        async def settled_in_out_only() -> bool:
            out = await js.stream_info(STREAM_OUT)
            work = await js.stream_info(STREAM_WORK)
            return out.state.last_seq > out_before and work.state.messages == 0

        await wait_until(settled_in_out_only, 20, "the outcome stored and the item acked")
        assert tocsin.live_state().deliveries[nid].status == PENDING

        # The router does not pretend the log knows: it says it is behind.
        reply = await nc.request(DELIVERY_STATUS, nid.encode(), timeout=5)
        assert reply.data.decode() == BEHIND

        # A new leader for the worker's consumer (what JetStream announces after a
        # failover), then the same work item handed out again with a delivery count of 1.
        consumer = deliver_consumer("hook")
        advisory = f"{CONSUMER_LEADER_ELECTED_PREFIX}{STREAM_WORK}.{consumer}"
        await nc.publish(
            advisory, b'{"type":"io.nats.jetstream.advisory.v1.consumer_leader_elected"}'
        )
        await nc.flush()
        await wait_until(
            lambda: any("checking every item" in r.getMessage() for r in caplog.records),
            10,
            "the worker to open its turbulence window",
        )
        (original,) = [m for m in items if nid.encode() in m.data]
        await js.publish(original.subject, original.data, headers={MSG_ID: "again"})

        def deferrals() -> int:
            return sum(r.getMessage().startswith(f"deferring {nid}") for r in caplog.records)

        await wait_until(lambda: deferrals() >= 2, 20, "the worker to defer the item")
        assert len(sink.requests) == 2

        # The recorder resumes: the log learns of the delivery, and the item is acked
        # without being sent.
        await pause_recorder(nc, None)
        await wait_until(
            lambda: tocsin.count("delivery.succeeded") == 2, 20, "the outcome recorded"
        )

        async def work_done() -> bool:
            work = await js.stream_info(STREAM_WORK)
            info = await js.consumer_info(STREAM_WORK, consumer)
            return work.state.messages == 0 and info.num_ack_pending == 0

        await wait_until(work_done, 20, "the redelivered item acked")
        assert any(
            r.getMessage().startswith(f"{nid} to hook is already delivered") for r in caplog.records
        )
        keys = [r.headers["idempotency-key"] for r in sink.requests]
        assert len(keys) == 2
        assert keys.count(nid) == 1
        reply = await nc.request(DELIVERY_STATUS, nid.encode(), timeout=5)
        assert reply.data.decode() == DELIVERED
        [succeeded] = [
            e for e in tocsin.events("delivery.succeeded") if e["notification_id"] == nid
        ]
        assert succeeded["attempts"] == 1
    finally:
        await tocsin.stop()
