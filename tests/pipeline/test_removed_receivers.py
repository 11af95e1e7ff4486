"""Work for a receiver removed from the config does not pile up in TOCSIN_WORK (issue
#16 item 15): a resolve routed to it (it was told of the alert) is dead-lettered at
once with the reason, and at start its queued items are dead-lettered and its
delivery consumer deleted. Real NATS, real HTTP receivers, a real log, a restart.
"""

from __future__ import annotations

from pathlib import Path

import nats

from tests.support import HttpSink, Request, Subscriber, Tocsin, event, publish, wait_until
from tocsin.core.subjects import STREAM_WORK, deliver_consumer

REASON = "receiver y is not in the configuration"


def config(x: HttpSink, y: HttpSink | None) -> str:
    """Every alert to receivers x and y (y left out when ``None``); retries an hour
    apart, so a failed send is still queued at the restart."""
    receivers = '["x", "y"]' if y is not None else '["x"]'
    text = f"""
[retry]
max_attempts = 5
backoff = ["1h"]

[[route]]
match = {{}}
receivers = {receivers}

[receivers.x]
channel = "webhook"
url = "{x.url}"
"""
    if y is not None:
        text += f"""
[receivers.y]
channel = "webhook"
url = "{y.url}"
"""
    return text


def fails_db2(request: Request, index: int) -> tuple[int, dict[str, str], bytes]:
    """y's answer: 500 for the alert on db2, 200 for the rest."""
    return (500 if request.json()["labels"]["host"] == "db2" else 200), {}, b""


async def test_work_for_a_removed_receiver_is_dead_lettered_and_its_consumer_deleted(
    nats_url: str, data_dir: Path
) -> None:
    """Catches a removed receiver's work waiting in TOCSIN_WORK for ever: the resolve of
    an alert it was told of (routed to it whatever the config says now, DESIGN.md
    section 4) and a retry it had queued before the restart. Both are dead-lettered
    with the reason, published on ``alerts.delivery_failed`` and logged; nothing stays
    in TOCSIN_WORK and no consumer of y remains; x still gets its resolve."""
    x, y = HttpSink(), HttpSink(responder=fails_db2)
    await x.start()
    await y.start()
    failed = await Subscriber().start(nats_url, "alerts.delivery_failed")
    before = await Tocsin(data_dir, nats_url, config(x, y)).start()
    try:
        await publish(nats_url, "alerts.in.db", event())
        await wait_until(lambda: before.count("delivery.succeeded") == 2, what="db1 to x and y")
        await publish(nats_url, "alerts.in.db", event(labels={"host": "db2"}))
        await wait_until(
            lambda: (
                before.count("delivery.succeeded") == 3
                and before.count("delivery.attempt_failed") == 1
            ),
            what="db2 delivered to x, failed at y (retry in an hour)",
        )
    finally:
        assert await before.stop() == 0

    after = await Tocsin(data_dir, nats_url, config(x, None)).start()
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await wait_until(
            lambda: after.count("delivery.dead_lettered") == 1, what="y's queued retry logged"
        )
        consumers = {c.name for c in await js.consumers_info(STREAM_WORK)}
        assert consumers == {deliver_consumer("x")}

        await publish(nats_url, "alerts.in.db", event(status="resolved"))
        await wait_until(
            lambda: after.count("delivery.dead_lettered") == 2, what="y's resolve logged"
        )
        await wait_until(lambda: after.count("delivery.succeeded") == 4, what="x's resolve")
        assert [r.json()["status"] for r in x.requests][-1] == "resolved"
        assert all(r.json()["status"] == "firing" for r in y.requests)

        routed = after.events("alert.routed")
        resolve_to_y = next(
            r["notification_id"]
            for r in routed
            if r["receiver"] == "y" and r["reason"] == "resolved"
        )
        retry_to_y = next(
            r["notification_id"]
            for r in routed
            if r["receiver"] == "y"
            and r["reason"] == "firing"
            and r["fingerprint"] != routed[0]["fingerprint"]
        )
        dead = after.events("delivery.dead_lettered")
        assert {d["notification_id"] for d in dead} == {resolve_to_y, retry_to_y}
        assert {(d["receiver"], d["error"]) for d in dead} == {("y", REASON)}
        await wait_until(lambda: len(failed.messages) == 2, what="alerts.delivery_failed")
        assert {m["error"] for m in failed.json()} == {REASON}
        assert {m["notification_id"] for m in failed.json()} == {resolve_to_y, retry_to_y}

        assert (await js.stream_info(STREAM_WORK)).state.messages == 0
        assert after.live_state().queue.get("pending", 0) == 0
        assert after.live_state().queue.get("retrying", 0) == 0
        await after.assert_live_state_is_the_log()
    finally:
        await nc.close()
        await after.stop()
        await failed.close()
        await x.stop()
        await y.stop()
