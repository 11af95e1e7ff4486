"""Crash safety, proven by killing the process (DESIGN.md invariants 2-5).

`tocsin serve` runs as its own process against the session nats-server while events
stream in; it is SIGKILLed at a fail-point (or from outside at a seeded random moment),
restarted on the same data dir, and then the log must be exact: every event counted
once, every dedup key notified, nothing stranded, live state == fold(log).
"""

from __future__ import annotations

import asyncio
import random
import signal
from collections import Counter
from pathlib import Path

import msgspec
import nats
import pytest

from tests.support import HttpSink, Serve, log_count, log_events, wait_until, webhook_config
from tocsin.core.subjects import DELIVERED, ROUTER_CONSUMER, STREAM_IN, STREAM_OUT, STREAM_WORK
from tocsin.core.times import format_us, now_us
from tocsin.store import forensics
from tocsin.store.eventlog import db_path

EVENTS = 600
FINGERPRINTS = 60
WINDOW_US = 600 * 1_000_000


def bucket_time() -> int:
    now = now_us()
    return now - now % WINDOW_US - WINDOW_US + 1_000_000  # early in the previous bucket


async def stream(nats_url: str, base: int) -> None:
    """Publish every event with a PubAck, one at a time, so the router sees many small
    batches (many commits to be killed in)."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    for i in range(EVENTS):
        body = {
            "type": "crash_test",
            "severity": "warning",
            "summary": f"event {i}",
            "labels": {"n": str(i % FINGERPRINTS)},
            "timestamp": format_us(base + i * 1000),
        }
        await js.publish("alerts.in.crash", msgspec.json.encode(body), timeout=5)
    await nc.close()


@pytest.mark.parametrize(
    ("fault", "kill_after"),
    [
        ("router.before_commit:3", None),
        ("router.after_commit:3", None),
        ("router.after_publish:3", None),
        ("delivery.after_send:5", None),
        ("delivery.after_outcome:5", None),
        (None, 11),
        (None, 23),
    ],
)
async def test_killed_and_restarted_the_log_is_exact(
    nats_url: str, sink: HttpSink, tmp_path: Path, fault: str | None, kill_after: int | None
) -> None:
    data = tmp_path / "data"
    config = tmp_path / "tocsin.toml"
    # Short ack_wait: what a crash leaves unacked comes back in seconds, not half a minute.
    # A delivery fail-point kills the process that sends: serve itself only when it
    # delivers in its own process (with children, the child dies and is started
    # again: tests/pipeline/test_supervisor.py).
    in_process = "\n[delivery]\nprocesses = 0\n" if fault and fault.startswith("delivery.") else ""
    config.write_text(
        webhook_config(sink.url).replace('timeout = "2s"', 'timeout = "1s"')
        + '\n[nats]\nack_wait = "2s"\n'
        + in_process
    )
    first = await Serve(data, nats_url, config, fault).start()
    publisher = asyncio.create_task(stream(nats_url, bucket_time()))
    if kill_after is not None:  # from outside, at a seeded random moment
        await asyncio.sleep(random.Random(kill_after).uniform(0.05, 0.6))
        first.kill()
    assert await first.wait() == -signal.SIGKILL
    await publisher

    second = await Serve(data, nats_url, config, None).start()
    db = db_path(data)
    try:
        await wait_until(
            lambda: log_count(db, "alert.received") == EVENTS, 60, "every event logged"
        )
        await wait_until(
            lambda: log_count(db, "delivery.succeeded") >= FINGERPRINTS,
            60,
            "every notification delivered",
        )
        # exactly once in the log
        assert log_count(db, "alert.received") == EVENTS
        assert log_count(db, "alert.opened") == FINGERPRINTS
        state, _ = forensics.state_at(db)
        alerts = list(state.alerts.values())
        assert sum(a.occurrences for a in alerts) == EVENTS
        assert sum(1 + a.suppressed_count for a in alerts) == EVENTS
        # every dedup key notified, and each notification recorded delivered once
        routed = {e["dedup_key"] for e in log_events(db, "alert.routed")}
        notified = {r.json()["dedup_key"] for r in sink.requests}
        assert notified == routed
        assert len(routed) == FINGERPRINTS
        # nothing stranded: redeliveries of what the crash left unacked are settled
        nc = await nats.connect(nats_url)
        js = nc.jetstream()

        async def drained() -> bool:
            work = (await js.stream_info(STREAM_WORK)).state.messages
            router = await js.consumer_info(STREAM_IN, ROUTER_CONSUMER)
            return (work, router.num_pending, router.num_ack_pending) == (0, 0, 0)

        await wait_until(drained, 30, "no work item or inbound message left")
        assert log_count(db, "delivery.succeeded") == FINGERPRINTS
        sends = Counter(r.headers["idempotency-key"] for r in sink.requests)
        assert max(sends.values()) <= 2  # a second send only for what died mid-send
        if fault == "delivery.after_outcome:5":
            # The kill came right after the 5th outcome was stored: the first five
            # alerts.delivered messages were stored before the crash, so their items,
            # redelivered after it, must not have been sent again.
            stored_before = await js.pull_subscribe(DELIVERED, stream=STREAM_OUT, durable=None)
            first_five = [
                msgspec.json.decode(m.data) for m in await stored_before.fetch(5, timeout=5)
            ]
            assert [sends[m["notification_id"]] for m in first_five] == [1] * 5
        await nc.close()
        # live state == fold(log)
        live = {
            a["id"]: (a["occurrences"], a["suppressed_count"], a["status"])
            for a in await second.alerts()
        }
        assert live == {a.id: (a.occurrences, a.suppressed_count, a.status) for a in alerts}
        assert forensics.verify(db).ok
    finally:
        assert await second.stop() == 0
