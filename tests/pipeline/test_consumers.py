"""Issue #16: nothing lost to a missing consumer.

TOCSIN_IN keeps a message only while a consumer is interested in it: with no ``router``
consumer, nats-server PubAcks an alert and discards it. So whoever creates the stream
creates the consumer with it.

Real nats-server, real HTTP receiver, the service running in this process.
"""

from __future__ import annotations

from pathlib import Path

from tests.support import HttpSink, Tocsin, event, publish, wait_until, webhook_config


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
