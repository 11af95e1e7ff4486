"""The floor of W3's latency measured in the same run as W3 (issue #20: a target may be
reported unmet only with a measured floor of a part tocsin does not own, timed alone
next to tocsin's figure).

An alert that W3 times crosses, whatever tocsin does: JetStream into TOCSIN_IN (a
publish until a pull has it), a durable commit (its ``fsync``: the kernel's and the
disk's part), JetStream into TOCSIN_WORK, and the webhook POST over loopback until the
bench's receiver has it (which Alertmanager pays too). Each is timed alone with a fresh
``nats-server`` and nothing else of tocsin's (``bench/ceiling_latency.py``'s hops; the
POST from a minimal client, ``post_alone``), in the run's data dir's file system. What
they add up to is less than any alert can take:

- ``p50_ms``: the sum of the four parts' medians (the median of a sum of such
  independent, narrow parts is about the sum of their medians);
- ``p99_ms``: the largest of the parts' 99th percentiles (a sum of parts that are
  never negative exceeds one part's 99th percentile at least 1% of the time: a lower
  bound, and a loose one).

The POST is timed with no HTTP client at all (a request's bytes written on a kept-alive
connection): the part of it that is tocsin's choice, its client, stays in tocsin's
figure.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.support import NatsServer

from bench.ceiling_latency import ALERT, WORK_ITEM, Samples, fsync_alone, jetstream_hop, sample
from bench.receiver import Received, Receiver

SAMPLES = 300  # per hop: ~1.5 s each at the pauses between samples


def summary(parts: list[Samples]) -> dict[str, Any]:
    """The floor's figures from its parts' samples (``p50_ms``, ``p99_ms``, each part's)."""
    return {
        "parts": {
            part.name.strip(): {"p50_ms": part.at(0.5), "p99_ms": part.at(0.99)} for part in parts
        },
        "p50_ms": sum(part.at(0.5) for part in parts),
        "p99_ms": max(part.at(0.99) for part in parts),
    }


def post_request(key: str, size: int = len(WORK_ITEM)) -> bytes:
    """A webhook POST of about a W3 notification's size whose body is ``key`` padded
    with spaces (what ``_key_of`` reads back)."""
    body = key.encode().ljust(size)
    head = b"POST /hook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


def _key_of(body: bytes) -> Received:
    return Received([body.decode().strip()])


class _Client(asyncio.Protocol):
    """The least an HTTP client can do: write a request's bytes on a kept-alive
    connection and notice the receiver's (empty-bodied) answer."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.answered: asyncio.Future[None] | None = None
        self._buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if b"\r\n\r\n" in self._buffer and self.answered is not None:
            self._buffer = self._buffer.split(b"\r\n\r\n", 1)[1]
            if not self.answered.done():
                self.answered.set_result(None)


async def post_alone(n: int) -> Samples:
    """The webhook POST over loopback: a request written until the bench's receiver
    (``bench/receiver.py``, as W3 runs it, in this process) has its last byte, on one
    kept-alive connection; each sample waits for the answer before the next."""
    receiver = Receiver(_key_of)
    await receiver.start()
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_connection(_Client, "127.0.0.1", receiver.port)
    count = 0

    async def once() -> float:
        nonlocal count
        count += 1
        key = f"post-{count}"
        client.answered = loop.create_future()
        started = time.perf_counter()
        transport.write(post_request(key))
        await asyncio.wait_for(client.answered, 5.0)
        return receiver.first_seen[key] - started

    try:
        return await sample("webhook POST over loopback (write -> receipt)", n, once)
    finally:
        transport.close()
        await receiver.stop()


async def w3_floor(n: int = SAMPLES) -> dict[str, Any]:
    """The four parts, ``n`` samples each, on a fresh ``nats-server`` of this machine."""
    with tempfile.TemporaryDirectory(prefix="tocsin-floor-") as name:
        tmp = Path(name)
        server = NatsServer(tmp / "js")
        server.start()
        try:
            inbound = await jetstream_hop(server.url, n, "IN", "alerts.in.bench", ALERT)
            durable = await fsync_alone(tmp, n, "fsync of a 4 KiB append")
            work = await jetstream_hop(server.url, n, "WORK", "work.hook", WORK_ITEM)
        finally:
            server.stop()
    return summary([inbound, durable, work, await post_alone(n)])
