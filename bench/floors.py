"""The floor of W3's latency measured in the same run as W3 (issue #20: a target may be
reported unmet only with a measured floor of a part tocsin does not own, timed alone
next to tocsin's figure).

An alert that W3 times crosses, whatever tocsin does: JetStream into TOCSIN_IN (a
publish until a pull has it), a durable commit (its ``fsync``: the kernel's and the
disk's part), JetStream into TOCSIN_WORK, and the webhook POST over loopback until the
bench's receiver has it (which Alertmanager pays too). They are timed with a fresh
``nats-server`` and nothing else of tocsin's (``bench/ceiling_latency.py``'s hops; the
POST from a minimal client, ``post_alone``), in the run's data dir's file system:

- each part alone, for where the floor's time goes (``parts``);
- **the four in a row** (``chain_alone``): one alert's publish, the pull that has it,
  the ``fsync``, the work item's publish, the pull that has that, the POST, until the
  receiver has its last byte, with no work between them but handing each on. Its
  median and 99th percentile are the floor's ``p50_ms`` and ``p99_ms``: what no alert
  can beat on this machine at this time, whatever tocsin's own code did.

The chain is timed, not added up from the parts: the median of a sum of skewed parts
exceeds the sum of their medians, and its 99th percentile lies between the largest
part's and the sum of theirs (``parts_p50_sum_ms`` and ``parts_p99_max_ms`` keep the
bounds the parts give, for comparison with runs before the chain was timed).

The POST is timed with no HTTP client at all (a request's bytes written on a kept-alive
connection): the part of it that is tocsin's choice, its client, stays in tocsin's
figure. The hops use the same pull (``Puller``, a request always outstanding) and acks
as tocsin, the least a JetStream consumer can do.

**The durable path** (``durable``): the same chain with the commit the contract asks
for in place of the bare ``fsync``: SQLite's commit of a new alert's three facts
(DESIGN.md section 2: WAL, ``synchronous=FULL``), one INSERT in autocommit into a table
with no index, on SQLite's defaults otherwise, run as ``aiosqlite`` (the fixed choice
of SQLite binding) runs every statement: on its connection's thread, the event loop
told when it is done, since no blocking call may run on the loop. Each part of it is
one tocsin does not own (the broker, SQLite, the binding's thread, the kernel, the
loopback), and none of tocsin's code is in it: no index, no hash chain, no decision.
Its median and 99th percentile are the figures W3's targets are read against
(``bench/report.py``); the bare chain stays beside them, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiosqlite
import nats
from tests.support import NatsServer

from bench.ceiling_latency import (
    ALERT,
    WORK_ITEM,
    Samples,
    fsync_alone,
    jetstream_hop,
    pulling,
    sample,
    taken,
)
from bench.procs import broker_env
from bench.receiver import Received, Receiver
from tocsin.bus.puller import ack_all

SAMPLES = 300  # per hop and of the chain: ~1.5 s each at the pauses between samples
IN, WORK = "alerts.in.bench", "work.hook"  # the two streams' subjects
CHAIN = "the four in a row (publish -> receipt)"
COMMIT = "SQLite's commit of three facts on aiosqlite's thread, alone"
DURABLE = "the durable path in a row (publish -> receipt)"

# A log as small as the contract allows: no index, no hash chain, SQLite's defaults but
# for what DESIGN.md section 2 names (WAL, synchronous=FULL).
LOG_TABLE = (
    "CREATE TABLE log (seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, kind TEXT NOT NULL,"
    " data BLOB NOT NULL)"
)
THREE_FACTS = "INSERT INTO log (ts, kind, data) VALUES (?, ?, ?), (?, ?, ?), (?, ?, ?)"
# A new alert's facts (received, opened, routed), of about W3's sizes: the same values
# each time (the rows differ by their seq), so no Python of the floor's is timed with them.
THREE_FACTS_VALUES = (
    *(1, "alert.received", ALERT),
    *(1, "alert.opened", ALERT),
    *(1, "alert.routed", WORK_ITEM),
)


def summary(
    parts: list[Samples],
    chain: Samples,
    durable: tuple[Samples, Samples] | None = None,
    rows: int = 0,
) -> dict[str, Any]:
    """The floor's figures: the chain's median and 99th percentile (``p50_ms``,
    ``p99_ms``), each part's, and the bounds the parts alone give; with ``durable``
    (SQLite's commit alone, then the durable path in a row), theirs under ``durable``,
    and the ``rows`` its log held at the end."""
    out: dict[str, Any] = {
        "parts": {
            part.name.strip(): {"p50_ms": part.at(0.5), "p99_ms": part.at(0.99)} for part in parts
        },
        "parts_p50_sum_ms": sum(part.at(0.5) for part in parts),
        "parts_p99_max_ms": max(part.at(0.99) for part in parts),
        "p50_ms": chain.at(0.5),
        "p99_ms": chain.at(0.99),
    }
    if durable is not None:
        commit, path = durable
        out["durable"] = {
            "commit_p50_ms": commit.at(0.5),
            "commit_p99_ms": commit.at(0.99),
            "p50_ms": path.at(0.5),
            "p99_ms": path.at(0.99),
            "rows": rows,
        }
    return out


class _Log:
    """The durable path's log: a file in the run's data dir's file system, written
    through ``aiosqlite`` as the contract's commit at its least (``LOG_TABLE``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn: aiosqlite.Connection | None = None

    async def __aenter__(self) -> _Log:
        self.conn = await aiosqlite.connect(self.path, isolation_level=None)
        await self.conn.execute("PRAGMA journal_mode=WAL")
        await self.conn.execute("PRAGMA synchronous=FULL")
        await self.conn.execute(LOG_TABLE)
        return self

    async def __aexit__(self, *_: object) -> None:
        if self.conn is not None:
            await self.conn.close()

    async def commit(self) -> None:
        """A new alert's three facts committed on disk: one statement in autocommit, one
        job on the binding's thread."""
        assert self.conn is not None
        await self.conn.execute(THREE_FACTS, THREE_FACTS_VALUES)

    async def rows(self) -> int:
        assert self.conn is not None
        async with self.conn.execute("SELECT count(*) FROM log") as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row is not None else 0


async def commit_alone(log: _Log, n: int) -> Samples:
    """SQLite's commit of a new alert's facts through ``aiosqlite``, nothing else."""

    async def once() -> float:
        started = time.perf_counter()
        await log.commit()
        return time.perf_counter() - started

    return await sample(COMMIT, n, once)


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


class _Hook:
    """The bench's receiver (``bench/receiver.py``, as W3 runs it, in this process) and
    one kept-alive connection to it, written to by no HTTP client (``_Client``)."""

    def __init__(self) -> None:
        self.receiver = Receiver(_key_of)
        self._transport: asyncio.Transport | None = None
        self._client: _Client | None = None

    async def __aenter__(self) -> _Hook:
        await self.receiver.start()
        loop = asyncio.get_running_loop()
        self._transport, self._client = await loop.create_connection(
            _Client, "127.0.0.1", self.receiver.port
        )
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._transport is not None:
            self._transport.close()
        await self.receiver.stop()

    async def post(self, key: str) -> float:
        """Write a request whose body is ``key``, wait for its answer; when the receiver
        had its last byte (``time.perf_counter``)."""
        assert self._transport is not None
        assert self._client is not None
        self._client.answered = asyncio.get_running_loop().create_future()
        self._transport.write(post_request(key))
        await asyncio.wait_for(self._client.answered, 5.0)
        return self.receiver.first_seen[key]


async def post_alone(n: int) -> Samples:
    """The webhook POST over loopback: a request written until the bench's receiver has
    its last byte, on one kept-alive connection; each sample waits for the answer
    before the next."""
    count = 0
    async with _Hook() as hook:

        async def once() -> float:
            nonlocal count
            count += 1
            started = time.perf_counter()
            return await hook.post(f"post-{count}") - started

        return await sample("webhook POST over loopback (write -> receipt)", n, once)


@contextlib.contextmanager
def _appends(path: Path) -> Iterator[Callable[[], Awaitable[None]]]:
    """The bare chain's commit: an ``fsync`` of a 4 KiB append to ``path``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)

    async def fsync() -> None:
        os.write(fd, b"x" * 4096)
        os.fsync(fd)

    try:
        yield fsync
    finally:
        os.close(fd)


async def chain_alone(
    url: str, n: int, commit: Callable[[], Awaitable[None]], name: str = CHAIN
) -> Samples:
    """The four parts in a row, as one alert crosses them: a publish into a stream until
    a pull has it, ``commit`` (the bare chain's ``fsync``, or the durable path's SQLite
    commit), the work item's publish into a second stream until another connection's
    pull has it, and the POST until the receiver has its last byte. Each sample is one
    alert, from its publish to that byte; the acks are written after the alert has
    moved on, as tocsin writes them."""
    publisher, router, worker = [await nats.connect(url) for _ in range(3)]
    pullers = [await pulling(router, "IN", IN), await pulling(worker, "WORK", WORK)]
    inbound, work = pullers
    count = 0
    try:
        async with _Hook() as hook:

            async def once() -> float:
                nonlocal count
                count += 1
                started = time.perf_counter()
                await publisher.publish(IN, ALERT)
                alerts = await taken(inbound)
                await commit()
                await router.publish(WORK, WORK_ITEM)
                items = await taken(work)
                received = await hook.post(f"chain-{count}")
                await ack_all(router, alerts)
                await ack_all(worker, items)
                return received - started

            return await sample(name, n, once)
    finally:
        for puller in pullers:
            await puller.stop()
        for connection in (publisher, router, worker):
            await connection.close()


async def w3_floor(n: int = SAMPLES) -> dict[str, Any]:
    """The four parts, ``n`` samples each, then the four in a row ``n`` times, then
    SQLite's commit alone and the durable path in a row ``n`` times each, on a fresh
    ``nats-server`` of this machine, run as the bench runs tocsin's
    (``procs.broker_env``)."""
    with tempfile.TemporaryDirectory(prefix="tocsin-floor-") as name:
        tmp = Path(name)
        server = NatsServer(tmp / "js", broker_env())
        server.start()
        try:
            inbound = await jetstream_hop(server.url, n, "IN", IN, ALERT)
            durable = await fsync_alone(tmp, n, "fsync of a 4 KiB append")
            work = await jetstream_hop(server.url, n, "WORK", WORK, WORK_ITEM)
            post = await post_alone(n)
            with _appends(tmp / "chain-fsync") as fsync:
                chain = await chain_alone(server.url, n, fsync)
            async with _Log(tmp / "durable.db") as log:
                commit = await commit_alone(log, n)
                path = await chain_alone(server.url, n, log.commit, DURABLE)
                rows = await log.rows()
        finally:
            server.stop()
    return summary([inbound, durable, work, post], chain, (commit, path), rows)
