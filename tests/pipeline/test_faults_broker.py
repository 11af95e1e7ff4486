"""The broker goes away mid-stream (issue #9, faults): tocsin reconnects by itself and
the log is exact.

A dedicated nats-server (its own store, its own port) is SIGKILLed and restarted on
the same store while events stream in, then stopped for 10 s and started again. The
publisher retries every event until JetStream acknowledges it, always under the same
``Nats-Msg-Id``, so the set of acknowledged events is exact: all of them, once.
``tocsin serve`` runs as a process against that server and is never restarted.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
import nats
import pytest

from tests.support import (
    HttpSink,
    NatsServer,
    Serve,
    log_count,
    log_events,
    wait_until,
    webhook_config,
)
from tocsin.core.subjects import MSG_ID, ROUTER_CONSUMER, STREAM_IN, STREAM_WORK
from tocsin.core.times import format_us, now_us
from tocsin.store import forensics
from tocsin.store.eventlog import db_path

EVENTS = 5000
FINGERPRINTS = 100
KILL_AT = EVENTS // 3  # acknowledged events before the SIGKILL
STOP_AT = 2 * EVENTS // 3  # ... before the 10 s stop
DOWN_SECONDS = 10.0
WINDOW_US = 600 * 1_000_000


@pytest.fixture
def broker_process(tmp_path: Path) -> Any:
    server = NatsServer(tmp_path / "jetstream")
    server.start()
    yield server
    server.kill()


class Publisher:
    """Publishes events 0..n-1 in order, each retried (same Nats-Msg-Id) until
    JetStream acknowledges it; ``acked`` is exact."""

    def __init__(self, url: str, base_us: int) -> None:
        self.url = url
        self.base_us = base_us
        self.acked: list[int] = []
        self.retries = 0
        self.duplicates = 0  # PubAcks saying "already stored" (a lost ack, retried)

    def body(self, i: int) -> bytes:
        return msgspec.json.encode(
            {
                "type": "broker_fault",
                "severity": "warning",
                "summary": f"event {i}",
                "labels": {"n": str(i % FINGERPRINTS)},
                "timestamp": format_us(self.base_us + i * 1000),
            }
        )

    async def run(self, n: int, deadline_seconds: float = 150.0) -> None:
        nc = await nats.connect(
            self.url,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.2,
            allow_reconnect=True,
        )
        js = nc.jetstream()
        deadline = time.monotonic() + deadline_seconds
        try:
            for i in range(n):
                while True:
                    assert time.monotonic() < deadline, f"event {i} never acknowledged"
                    try:
                        ack = await js.publish(
                            "alerts.in.faults",
                            self.body(i),
                            headers={MSG_ID: f"broker-fault-{i}"},
                            timeout=2,
                        )
                    except Exception:  # timeout, no responders, reconnecting: retry
                        self.retries += 1
                        await asyncio.sleep(0.1)
                        continue
                    self.duplicates += bool(ack.duplicate)
                    self.acked.append(i)
                    break
        finally:
            await nc.close()


async def readyz(serve: Serve) -> httpx.Response:
    async with httpx.AsyncClient(timeout=5) as client:
        return await client.get(f"{serve.api}/readyz")


async def test_broker_killed_and_stopped_mid_stream_every_acked_event_is_counted_once(
    broker_process: NatsServer, sink: HttpSink, tmp_path: Path
) -> None:
    server = broker_process
    config = tmp_path / "tocsin.toml"
    config.write_text(webhook_config(sink.url) + '\n[nats]\nack_wait = "3s"\n')
    data = tmp_path / "data"
    serve = await Serve(data, server.url, config, stderr=tmp_path / "serve.log").start()
    db = db_path(data)
    now = now_us()
    publisher = Publisher(server.url, now - now % WINDOW_US - WINDOW_US + 1_000_000)
    publishing = asyncio.create_task(publisher.run(EVENTS))
    try:
        # 1. SIGKILL mid-stream, restarted at once on the same store.
        await wait_until(lambda: len(publisher.acked) >= KILL_AT, 60, f"{KILL_AT} acked")
        server.kill()
        server.start()

        # 2. Stopped for 10 s: tocsin says it is not ready, and why.
        await wait_until(lambda: len(publisher.acked) >= STOP_AT, 60, f"{STOP_AT} acked")
        server.stop()
        stopped_at = time.monotonic()

        async def not_ready() -> bool:
            return (await readyz(serve)).status_code == 503

        await wait_until(not_ready, DOWN_SECONDS, "/readyz 503 while the broker is away")
        reason = (await readyz(serve)).json()["reason"]
        assert "NATS" in reason, reason
        acked_while_down = len(publisher.acked)
        await asyncio.sleep(max(0.0, DOWN_SECONDS - (time.monotonic() - stopped_at)))
        assert len(publisher.acked) == acked_while_down  # nobody acked anything meanwhile
        assert (await readyz(serve)).status_code == 503
        server.start()

        async def ready() -> bool:
            return (await readyz(serve)).status_code == 200

        await wait_until(ready, 30, "/readyz 200 once the broker is back")
        await asyncio.wait_for(publishing, 150)

        # 3. Every acknowledged event processed exactly once.
        assert publisher.acked == list(range(EVENTS))
        await wait_until(
            lambda: log_count(db, "alert.received") >= EVENTS, 90, "every acked event logged"
        )
        await wait_until(
            lambda: log_count(db, "delivery.succeeded") >= FINGERPRINTS,
            60,
            "every dedup key delivered",
        )
        nc = await nats.connect(server.url)
        js = nc.jetstream()

        async def drained() -> bool:
            router = await js.consumer_info(STREAM_IN, ROUTER_CONSUMER)
            work = (await js.stream_info(STREAM_WORK)).state.messages
            return (router.num_pending, router.num_ack_pending, work) == (0, 0, 0)

        await wait_until(drained, 60, "nothing left in TOCSIN_IN or TOCSIN_WORK")
        await nc.close()
        assert log_count(db, "alert.received") == EVENTS
        state, _ = forensics.state_at(db)
        assert sum(a.occurrences for a in state.alerts.values()) == EVENTS
        assert len(state.alerts) == FINGERPRINTS
        summaries = sorted(int(e["summary"].split()[1]) for e in log_events(db, "alert.received"))
        assert summaries == list(range(EVENTS))
        routed = {e["dedup_key"] for e in log_events(db, "alert.routed")}
        assert len(routed) == FINGERPRINTS
        assert {r.json()["dedup_key"] for r in sink.requests} == routed
        assert log_count(db, "delivery.succeeded") == FINGERPRINTS
        assert log_count(db, "alert.rejected") == 0
        assert forensics.verify(db).ok
        print(
            f"\n{EVENTS} events acked ({publisher.retries} publish retries, "
            f"{publisher.duplicates} duplicate PubAcks); readyz while away: {reason!r}"
        )
    finally:
        if not publishing.done():
            publishing.cancel()
        assert serve.process is not None
        assert serve.process.returncode is None, "tocsin serve died with the broker"
        assert await serve.stop() == 0
