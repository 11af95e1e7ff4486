"""The ceiling of delivery on this machine: what its parts cost in Python, alone.

tocsin's delivery path is: pull a work item, POST it to the webhook, publish its outcome
and wait for the PubAck, ack the item. Each part is measured here with nothing else in
the process, so the figures bound what ``tocsin serve`` can reach:

  a. webhook POSTs to ``bench/receiver.py`` (in its own process), 32 at a time over a
     keep-alive pool of 32: httpx over aiohttp's transport (as tocsin), httpx over its
     own httpcore pool, aiohttp alone, and a raw asyncio HTTP/1.1 client (no library);
  b. JetStream pull + ack of small messages through ``Puller`` and ``ack_all``,
     in batches of 500 (the recorder's way) and 32 (a delivery worker's);
  c. ``Publisher.publish`` of outcome-sized messages with msg ids: one message
     per call from 32 concurrent senders (one outcome per notification), and batches;
  d. the parts assembled as tocsin's worker assembles them (a task per work item, 32
     at a time: pull, POST, outcome batched with PubAck, ack) without the rest of its
     per-notification work (decoding, span, metrics, outcome building).

CPU is this process's (``time.process_time``); the receiver and nats-server run in
their own processes. Every loop is bounded by ``--n``.

Run: .venv/bin/python bench/ceiling_delivery.py [--n 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import httpx
import msgspec
import nats
from httpx_aiohttp import AiohttpTransport
from nats.aio.msg import Msg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import NatsServer

from bench.receiver import Received, Receiver
from tocsin.bus.publisher import Publisher
from tocsin.bus.puller import Puller, ack_all, stream_seq
from tocsin.channels.http import JsonPoster
from tocsin.core.outbound import Outbound
from tocsin.pipeline.delivery import OutcomeBatches

POOL = 32
BODY = msgspec.json.encode(
    {
        "notification_id": "01JD0000000000000000000000",
        "reason": "firing",
        "alert_id": "01JD0000000000000000000001",
        "fingerprint": "3f2a9c0e7b1d4a56",
        "dedup_key": "3f2a9c0e7b1d4a56:2951234",
        "type": "bench_alert",
        "severity": "critical",
        "status": "firing",
        "summary": "bench event 12345",
        "source": "bench",
        "labels": {"n": "12345"},
        "details": {},
        "first_seen": "2026-01-01T00:00:00.000000Z",
        "last_seen": "2026-01-01T00:00:00.000000Z",
        "occurrences": 1,
        "suppressed_count": 0,
        "receiver": "hook",
    }
)
HEADERS = {
    "Content-Type": "application/json",
    "User-Agent": "tocsin/0.1.0",
    "Idempotency-Key": "01JD0000000000000000000000",
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
}


class Figure:
    """One measured part: ``count`` operations, their wall and CPU time."""

    def __init__(self, name: str, count: int, wall: float, cpu: float) -> None:
        self.name, self.count, self.wall, self.cpu = name, count, wall, cpu

    def line(self) -> str:
        return (
            f"  {self.name:<58} {self.count / self.wall:>9,.0f}/s "
            f"{self.cpu * 1e6 / self.count:>7.1f} us CPU each"
        )


async def measure(name: str, count: int, run: Callable[[], Awaitable[None]]) -> Figure:
    cpu, wall = time.process_time(), time.perf_counter()
    await run()
    figure = Figure(name, count, time.perf_counter() - wall, time.process_time() - cpu)
    print(figure.line(), flush=True)
    return figure


async def in_parallel(n: int, post: Callable[[], Awaitable[None]]) -> None:
    """``n`` POSTs, ``POOL`` at a time (one coroutine per connection, no task per POST)."""
    left = n

    async def sender() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await post()

    await asyncio.gather(*(sender() for _ in range(POOL)))


class RawHttp(asyncio.Protocol):
    """The floor: one keep-alive HTTP/1.1 connection, request bytes built by hand,
    the response's end found by ``Content-Length: 0`` (what the receiver answers)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiting: asyncio.Future[bytes] | None = None
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end >= 0 and self.waiting is not None:
            head, self.buffer = self.buffer[: end + 4], self.buffer[end + 4 :]
            self.waiting.set_result(head)

    async def post(self, request: bytes) -> bytes:
        assert self.transport is not None
        self.waiting = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self.waiting


async def webhook(n: int, url: str, port: int) -> list[Figure]:
    figures = []
    poster = JsonPoster("0.1.0", 10.0)
    extra = {"Idempotency-Key": HEADERS["Idempotency-Key"]}

    async def via_poster() -> None:
        if not (await poster.post(url, BODY, HEADERS["traceparent"], extra)).ok:
            raise RuntimeError("receiver refused a request")

    await in_parallel(POOL, via_poster)
    figures.append(
        await measure(
            "a. tocsin's JsonPoster (channels/http1.py over httptools)",
            n,
            lambda: in_parallel(n, via_poster),
        )
    )
    await poster.close()
    limits = httpx.Limits(max_connections=POOL, max_keepalive_connections=POOL)
    async with httpx.AsyncClient(transport=AiohttpTransport(limits=limits)) as client:

        async def via_aiohttp_transport() -> None:
            (await client.post(url, content=BODY, headers=HEADERS)).raise_for_status()

        await in_parallel(POOL, via_aiohttp_transport)  # connections up before timing
        figures.append(
            await measure(
                "a. httpx AsyncClient.post over httpx-aiohttp (tocsin before)",
                n,
                lambda: in_parallel(n, via_aiohttp_transport),
            )
        )
    async with httpx.AsyncClient(limits=limits) as client:

        async def via_httpcore() -> None:
            (await client.post(url, content=BODY, headers=HEADERS)).raise_for_status()

        await in_parallel(POOL, via_httpcore)
        figures.append(
            await measure(
                "a. httpx + its own httpcore pool, client.post",
                n,
                lambda: in_parallel(n, via_httpcore),
            )
        )
    connector = aiohttp.TCPConnector(limit=POOL)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def via_aiohttp() -> None:
            async with session.post(url, data=BODY, headers=HEADERS) as response:
                response.raise_for_status()
                await response.read()

        await in_parallel(POOL, via_aiohttp)
        figures.append(
            await measure("a. aiohttp alone, session.post", n, lambda: in_parallel(n, via_aiohttp))
        )
    loop = asyncio.get_running_loop()
    head = "".join(f"{k}: {v}\r\n" for k, v in HEADERS.items())
    request = (
        f"POST /hook HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{head}"
        f"Content-Length: {len(BODY)}\r\n\r\n"
    ).encode() + BODY
    connections = [
        (await loop.create_connection(RawHttp, "127.0.0.1", port))[1] for _ in range(POOL)
    ]
    left = n

    async def raw_sender(connection: RawHttp) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            if not (await connection.post(request)).startswith(b"HTTP/1.1 200"):
                raise RuntimeError("receiver refused a request")

    figures.append(
        await measure(
            "a. raw asyncio HTTP/1.1 (no library: the floor)",
            n,
            lambda: asyncio.gather(*(raw_sender(c) for c in connections)),  # type: ignore[arg-type, return-value]
        )
    )
    for connection in connections:
        assert connection.transport is not None
        connection.transport.close()
    return figures


async def pull_and_ack(nc: nats.NATS, n: int) -> list[Figure]:
    js = nc.jetstream()
    figures = []
    for batch, prefetch in ((500, True), (POOL, False)):
        stream = f"CEIL_PULL_{batch}"
        await js.add_stream(name=stream, subjects=[f"ceiling.pull.{batch}"])
        subject = f"ceiling.pull.{batch}"
        for start in range(0, n, 1000):
            end = min(n, start + 1000)
            await asyncio.gather(*(js.publish(subject, b'{"i":%d}' % i) for i in range(start, end)))
        await js.add_consumer(
            stream,
            durable_name="c",
            ack_policy=nats.js.api.AckPolicy.EXPLICIT,
            max_ack_pending=20_000,
        )
        puller = Puller(nc, stream, "c", batch, prefetch=prefetch)
        await puller.start()

        async def drain(puller: Puller = puller) -> None:
            got = 0
            while got < n:
                msgs = await puller.take(wait=5.0)
                if not msgs:
                    raise RuntimeError(f"pull stalled at {got} of {n}")
                got += len(msgs)
                await ack_all(nc, msgs)
            await nc.flush()

        mode = "prefetch" if prefetch else "no prefetch"
        figures.append(await measure(f"b. Puller.take + ack_all, batch {batch} ({mode})", n, drain))
        await puller.stop()
    return figures


async def publish(nc: nats.NATS, n: int) -> list[Figure]:
    js = nc.jetstream()
    await js.add_stream(name="CEIL_PUB", subjects=["ceiling.pub.>"], duplicate_window=120.0)
    publisher = Publisher(nc)
    payload = BODY + b" " * 200  # an outcome: the notification plus a few fields
    figures = []

    def outbound(run: str, i: int) -> Outbound:
        return Outbound(f"ceiling.pub.{run}", payload, f"{run}:{i}:delivered")

    async def one_each() -> None:
        left = n

        async def sender() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                if not (await publisher.publish([outbound("one", left)]))[0]:
                    raise RuntimeError("publish not stored")

        await asyncio.gather(*(sender() for _ in range(POOL)))

    figures.append(
        await measure("c. Publisher.publish, 1 per call, 32 concurrent callers", n, one_each)
    )
    for size in (POOL, 500):

        async def batches(size: int = size) -> None:
            for start in range(0, n, size):
                items = [outbound(f"b{size}", i) for i in range(start, min(n, start + size))]
                if not all(await publisher.publish(items)):
                    raise RuntimeError("publish not stored")

        figures.append(await measure(f"c. Publisher.publish, batches of {size}", n, batches))
    await publisher.close()
    return figures


async def pipeline(nc: nats.NATS, n: int, url: str) -> Figure:
    js = nc.jetstream()
    await js.add_stream(name="CEIL_WORK", subjects=["ceiling.work"])
    await js.add_stream(name="CEIL_OUT", subjects=["ceiling.out"], duplicate_window=120.0)
    publisher = Publisher(nc)
    for start in range(0, n, 1000):
        items = [
            Outbound("ceiling.work", BODY, f"work:{i}") for i in range(start, min(n, start + 1000))
        ]
        if not all(await publisher.publish(items)):
            raise RuntimeError("preload not stored")
    await js.add_consumer(
        "CEIL_WORK",
        durable_name="w",
        ack_policy=nats.js.api.AckPolicy.EXPLICIT,
        max_ack_pending=20_000,
    )
    puller = Puller(nc, "CEIL_WORK", "w", POOL, prefetch=False)
    await puller.start()
    poster = JsonPoster("0.1.0", 10.0)
    outcomes = OutcomeBatches(nc, publisher)
    done = 0

    async def deliver(msg: Msg) -> None:
        nonlocal done
        seq = stream_seq(msg)
        if not (await poster.post(url, msg.data, None, {"Idempotency-Key": str(seq)})).ok:
            raise RuntimeError("receiver refused a request")
        if not await outcomes.store(Outbound("ceiling.out", msg.data, f"{seq}:delivered")):
            raise RuntimeError("outcome not stored")
        await ack_all(nc, [msg])
        done += 1

    async def run() -> None:
        inflight: set[asyncio.Task[None]] = set()
        deadline = time.monotonic() + 300
        while done < n and time.monotonic() < deadline:
            free = POOL - len(inflight)
            if free <= 0:
                await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
                continue
            for msg in await puller.take(limit=free, wait=0.5):
                task = asyncio.create_task(deliver(msg))
                inflight.add(task)
                task.add_done_callback(inflight.discard)
        if done < n:
            raise RuntimeError(f"pipeline stalled at {done} of {n}")

    figure = await measure("d. pull + POST + outcome (batched, PubAck) + ack, 32 at a time", n, run)
    await puller.stop()
    await poster.close()
    await publisher.close()
    return figure


async def serve_receiver(port_file: Path) -> None:
    """The receiver in its own process (``--serve-receiver``), until killed."""
    receiver = Receiver(lambda body: Received(["x"]))
    await receiver.start()
    await asyncio.to_thread(port_file.write_text, str(receiver.port))
    await asyncio.Event().wait()


async def main(args: argparse.Namespace) -> None:
    n = args.n
    command = shlex.join([".venv/bin/python", "bench/ceiling_delivery.py", *sys.argv[1:]])
    print(f"delivery ceiling, n={n:,}, pool {POOL}: {command}")
    with tempfile.TemporaryDirectory() as tmp:
        port_file = Path(tmp) / "port"
        receiver = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--serve-receiver", str(port_file)
        )
        server = NatsServer(Path(tmp) / "js")
        server.start()
        try:
            deadline = time.monotonic() + 10
            while not port_file.exists() or not port_file.read_text():
                if time.monotonic() > deadline or receiver.returncode is not None:
                    raise RuntimeError("the receiver did not start")
                await asyncio.sleep(0.02)
            port = int(port_file.read_text())
            await webhook(n, f"http://127.0.0.1:{port}/hook", port)
            nc = await nats.connect(server.url)
            try:
                await pull_and_ack(nc, n)
                await publish(nc, n)
                await pipeline(nc, n, f"http://127.0.0.1:{port}/hook")
            finally:
                await nc.close()
        finally:
            server.stop()
            receiver.terminate()
            await asyncio.wait_for(receiver.wait(), 10)
    print(f"command: {command}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20_000, help="operations per part")
    parser.add_argument("--serve-receiver", type=Path, help=argparse.SUPPRESS)
    parsed = parser.parse_args()
    if parsed.serve_receiver is not None:
        asyncio.run(serve_receiver(parsed.serve_receiver))
    else:
        asyncio.run(main(parsed))
