"""Issue #16: nothing lost to a missing consumer, nothing hidden by a re-created stream.

TOCSIN_IN keeps a message only while a consumer is interested in it: with no ``router``
consumer, nats-server PubAcks an alert and discards it. So whoever creates the stream
creates the consumer with it, and the router (like the recorder) creates its consumer
again when it vanishes, saying so on /readyz and in ``tocsin_consumer_recreated_total``.
A stream re-created restarts its seqs at 1: the log is bound to the new incarnation
before any of its messages is decided, so none is taken for a redelivery of an old one
(a stream re-created by another process under a running step: test_invariants and
test_recorder).

Real nats-server, real HTTP receiver, the service running in this process.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import NotFoundError

from tests.support import HttpSink, Tocsin, event, publish, wait_until, webhook_config
from tocsin.core.subjects import (
    RECORDER_CONSUMER,
    ROUTER_CONSUMER,
    STREAM_IN,
    STREAM_OUT,
)

RECREATED = "tocsin_consumer_recreated_total"
SQUATTER = "squatter"  # a consumer taking the router's place


@pytest.fixture
async def js(nats_url: str) -> AsyncIterator[JetStreamContext]:
    """An operator's connection to the broker."""
    nc = await nats.connect(nats_url)
    yield nc.jetstream()
    await nc.close()


async def consumer_exists(js: JetStreamContext, stream: str, consumer: str) -> bool:
    try:
        await js.consumer_info(stream, consumer)
    except NotFoundError:
        return False
    return True


async def readyz(tocsin: Tocsin) -> tuple[int, Any]:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{tocsin.api}/readyz")
    return response.status_code, response.json()


async def recreated(tocsin: Tocsin, stream: str, consumer: str) -> float:
    """``tocsin_consumer_recreated_total`` for one consumer (0 before the first)."""
    labels = frozenset({("stream", stream), ("consumer", consumer)})
    return (await tocsin.metrics()).get((RECREATED, labels), 0.0)


def bound(tocsin: Tocsin, stream: str) -> list[dict[str, Any]]:
    """The ``stream.bound`` facts of ``stream``, in log order."""
    return [e for e in tocsin.events("stream.bound") if e["stream"] == stream]


async def deliver_one(tocsin: Tocsin, sink: HttpSink, url: str, host: str) -> None:
    """Publish one alert (its own fingerprint) and wait until it is sent and its
    outcome logged."""
    sent, logged = len(sink.requests), tocsin.count("delivery.succeeded")
    await publish(url, "alerts.in.svc", event(labels={"host": host}))
    await wait_until(lambda: len(sink.requests) == sent + 1, 15, f"the alert of {host} sent")
    await wait_until(
        lambda: tocsin.count("delivery.succeeded") == logged + 1,
        15,
        f"the delivery to {host} logged",
    )


async def test_an_alert_published_before_the_router_first_starts_is_delivered(
    nats_url: str, sink: HttpSink, tmp_path: Path
) -> None:
    """The split deployment: `tocsin deliver` starts first and creates the streams. It
    creates the router's consumer with TOCSIN_IN, so an alert published before any
    router ran is kept (not PubAcked and discarded), then routed and delivered."""
    toml = webhook_config(sink.url)
    deliver = await Tocsin(tmp_path / "deliver", nats_url, toml, router=False).start()
    router: Tocsin | None = None
    try:
        await publish(nats_url, "alerts.in.svc", event(summary="before any router"))
        router = await Tocsin(tmp_path / "router", nats_url, toml, delivery=False).start()
        await wait_until(lambda: len(sink.requests) == 1, 15, "the early alert delivered")
        assert sink.requests[0].json()["summary"] == "before any router"
        await wait_until(lambda: router.count("delivery.succeeded") == 1, 15, "its outcome logged")
        await router.assert_live_state_is_the_log()
    finally:
        if router is not None:
            assert await router.stop() == 0
        assert await deliver.stop() == 0


async def test_a_deleted_router_consumer_is_created_again_and_counted(
    nats_url: str, js: JetStreamContext, sink: HttpSink, tmp_path: Path
) -> None:
    """An operator deletes the router's consumer while tocsin runs: the router notices
    (its pull ends with "Consumer Deleted"), creates it again, counts it, and the next
    alert is delivered. Published only once the consumer is back: before, the stream
    has no consumer and discards it (what the re-creation is for)."""
    tocsin = await Tocsin(tmp_path / "data", nats_url, webhook_config(sink.url)).start()
    try:
        await deliver_one(tocsin, sink, nats_url, "db1")
        assert await recreated(tocsin, STREAM_IN, ROUTER_CONSUMER) == 0

        await js.delete_consumer(STREAM_IN, ROUTER_CONSUMER)

        await wait_until(
            lambda: consumer_exists(js, STREAM_IN, ROUTER_CONSUMER), 15, "the consumer back"
        )
        await wait_until(
            lambda: _equals(recreated(tocsin, STREAM_IN, ROUTER_CONSUMER), 1), 10, "counted"
        )
        assert await readyz(tocsin) == (200, {"ready": True})
        await deliver_one(tocsin, sink, nats_url, "db2")
        assert len(bound(tocsin, STREAM_IN)) == 1  # the same stream: no new binding
        await tocsin.assert_live_state_is_the_log()
    finally:
        assert await tocsin.stop() == 0


async def test_readyz_says_why_while_the_router_consumer_cannot_be_created_again(
    nats_url: str, js: JetStreamContext, sink: HttpSink, tmp_path: Path
) -> None:
    """The router's consumer deleted while JetStream refuses to create it again (the
    stream allows one consumer, and another holds the place): /readyz answers 503
    naming the missing consumer and why, and the router keeps trying. Once the place is
    free it creates the consumer, /readyz answers 200, and the next alert is logged and
    delivered."""
    tocsin = await Tocsin(tmp_path / "data", nats_url, webhook_config(sink.url)).start()
    try:
        await deliver_one(tocsin, sink, nats_url, "db1")
        squatter = js_api.ConsumerConfig(durable_name=SQUATTER, ack_policy=js_api.AckPolicy.NONE)
        await js.add_consumer(STREAM_IN, squatter)
        inbound = (await js.stream_info(STREAM_IN)).config
        await js.update_stream(dataclasses.replace(inbound, max_consumers=1))

        await js.delete_consumer(STREAM_IN, ROUTER_CONSUMER)

        async def refused() -> Any:
            """/readyz once the router has tried and been refused (before, it says
            that it is creating the consumer again)."""
            status, body = await readyz(tocsin)
            if status == 200:
                return None
            assert status == 503
            assert body["ready"] is False
            missing = f"consumer {ROUTER_CONSUMER} of {STREAM_IN} is missing"
            assert body["reason"].startswith(missing)
            return body if "could not be created" in body["reason"] else None

        body = await wait_until(refused, 15, "/readyz to say the consumer is missing")
        assert "maximum consumers" in body["reason"]
        assert await recreated(tocsin, STREAM_IN, ROUTER_CONSUMER) == 0

        await js.delete_consumer(STREAM_IN, SQUATTER)
        await wait_until(lambda: _status(readyz(tocsin), 200), 15, "ready again")
        assert await consumer_exists(js, STREAM_IN, ROUTER_CONSUMER)
        assert await recreated(tocsin, STREAM_IN, ROUTER_CONSUMER) == 1
        await deliver_one(tocsin, sink, nats_url, "db2")
        assert len(bound(tocsin, STREAM_IN)) == 1
        await tocsin.assert_live_state_is_the_log()
    finally:
        assert await tocsin.stop() == 0


@pytest.mark.parametrize(
    ("stream", "consumer"), [(STREAM_IN, ROUTER_CONSUMER), (STREAM_OUT, RECORDER_CONSUMER)]
)
async def test_a_deleted_stream_is_created_again_and_bound_anew(
    stream: str,
    consumer: str,
    nats_url: str,
    js: JetStreamContext,
    sink: HttpSink,
    tmp_path: Path,
) -> None:
    """TOCSIN_IN or TOCSIN_OUT deleted while tocsin runs (its consumer with it): the
    router, or the recorder, creates both again and binds the log to the new stream,
    so its next message, at seq 1 again, is logged and not taken for the logged seq
    1."""
    tocsin = await Tocsin(tmp_path / "data", nats_url, webhook_config(sink.url)).start()
    try:
        await deliver_one(tocsin, sink, nats_url, "db1")
        await js.delete_stream(stream)
        await wait_until(lambda: consumer_exists(js, stream, consumer), 15, "the consumer back")
        await wait_until(lambda: _status(readyz(tocsin), 200), 10, "ready")
        assert await recreated(tocsin, stream, consumer) == 1

        await deliver_one(tocsin, sink, nats_url, "db2")
        assert [b["offset"] for b in bound(tocsin, stream)] == [0, 1]
        assert tocsin.count("alert.received") == 2
        await tocsin.assert_live_state_is_the_log()
    finally:
        assert await tocsin.stop() == 0


async def _equals(value: Any, expected: float) -> bool:
    return bool(await value == expected)


async def _status(answer: Any, expected: int) -> bool:
    try:
        status, _ = await answer
    except httpx.HTTPError:
        return False
    return bool(status == expected)
