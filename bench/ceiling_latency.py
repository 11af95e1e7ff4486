"""The floor of W3's latency on this machine: the hops one alert must make, each alone.

From publish to the webhook's receipt an alert crosses, one after the other:

  a. JetStream, into TOCSIN_IN: a client's publish until the router's pull (tocsin's
     ``Puller``, a request always outstanding) hands it over;
  b. the durable commit of its facts (3 rows: received, created, routed) through
     ``EventLog.append``: aiosqlite's thread, WAL, ``synchronous=FULL``;
  c. JetStream again, into TOCSIN_WORK: the work item's publish until a delivery
     worker's pull has it (the same hop as a; its PubAck is not on the path);
  d. the webhook POST through tocsin's ``JsonPoster`` until the answer (a receiver in
     its own process).

Each is timed with nothing else in flight: one operation, then a pause, ``--n`` times.
Their sum is the least any alert can take, with no queueing and none of tocsin's own
work (parsing, triage, spans, metrics). For scale: ``fsync`` alone and a raw
``sqlite3`` commit of the same rows in this thread, without aiosqlite.

Run: .venv/bin/python bench/ceiling_latency.py [--n 500]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec
import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import NatsServer

from tocsin.bus.puller import Puller, ack_all
from tocsin.channels.http import JsonPoster
from tocsin.core import events as ev
from tocsin.store.eventlog import SCHEMA, EventLog, Fact

PAUSE = 0.004  # between samples: the loop and the threads are idle when one starts
ALERT = msgspec.json.encode(
    {"type": "w3", "severity": "error", "summary": "w3-12345", "labels": {"i": "12345"}}
)
WORK_ITEM = b"x" * 900  # a work item's size


class Samples:
    """Latencies of one part, in ms."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ms: list[float] = []

    def at(self, fraction: float) -> float:
        ordered = sorted(self.ms)
        return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]

    def line(self) -> str:
        return (
            f"  {self.name:<52} p50 {self.at(0.5):6.3f}  p90 {self.at(0.9):6.3f}"
            f"  min {min(self.ms):6.3f} ms"
        )


async def sample(name: str, n: int, once: Callable[[], Awaitable[float]]) -> Samples:
    """``once`` returns its own latency in seconds (it knows where its hop ends)."""
    samples = Samples(name)
    for _ in range(n):
        samples.ms.append(await once() * 1e3)
        await asyncio.sleep(PAUSE)
    print(samples.line(), flush=True)
    return samples


async def pulling(connection: NATS, stream: str, subject: str) -> Puller:
    """A stream of ``subject`` and a started prefetching pull on ``connection``, its
    request already outstanding (tocsin's ``Puller``, as the router and delivery pull)."""
    js = connection.jetstream()
    await js.add_stream(name=stream, subjects=[subject])
    await js.add_consumer(
        stream, durable_name="c", ack_policy="explicit", max_ack_pending=1000, filter_subject=""
    )
    puller = Puller(connection, stream, "c", 32, prefetch=True)
    await puller.start()
    await puller.take(wait=0.05)  # the pull request is now outstanding
    return puller


async def taken(puller: Puller) -> list[Msg]:
    """The next messages ``puller`` hands over (one, here), however long they take."""
    msgs: list[Msg] = []
    while not msgs:
        msgs = await puller.take(wait=1.0)
    return msgs


async def jetstream_hop(url: str, n: int, stream: str, subject: str, body: bytes) -> Samples:
    """A publish on one connection until a prefetching pull on another has it."""
    sender, receiver = await nats.connect(url), await nats.connect(url)
    puller = await pulling(receiver, stream, subject)

    async def once() -> float:
        started = time.perf_counter()
        await sender.publish(subject, body)
        msgs = await taken(puller)
        elapsed = time.perf_counter() - started
        await ack_all(receiver, msgs)
        return elapsed

    try:
        return await sample(f"JetStream hop into {stream} (publish -> pull)", n, once)
    finally:
        await puller.stop()
        await sender.close()
        await receiver.close()


def facts(i: int) -> list[Fact]:
    return [
        Fact(ev.AlertResolveIgnored(fingerprint=f"{i:032x}"), in_seq=3 * i + k) for k in (1, 2, 3)
    ]


async def commit(tmp: Path, n: int) -> list[Samples]:
    log = await EventLog.open(tmp / "log.db")
    count = 0

    async def through_the_log() -> float:
        nonlocal count
        count += 1
        started = time.perf_counter()
        await log.append(facts(count), ts=count)
        return time.perf_counter() - started

    figures = [await sample("commit of 3 facts, EventLog.append (aiosqlite)", n, through_the_log)]
    await log.close()

    raw = sqlite3.connect(tmp / "raw.db", isolation_level=None)
    raw.execute("PRAGMA journal_mode=WAL")
    raw.execute("PRAGMA synchronous=FULL")
    raw.executescript(SCHEMA)
    insert = "INSERT INTO events VALUES " + ",".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?)"] * 3)

    async def in_this_thread() -> float:
        nonlocal count
        count += 1
        values = [
            v
            for k in range(3)
            for v in (3 * count + k, count, "k", b"d" * 300, None, None, "f", "a", b"h" * 32)
        ]
        started = time.perf_counter()
        raw.execute(insert, values)
        return time.perf_counter() - started

    figures.append(await sample("  the same rows, raw sqlite3 in this thread", n, in_this_thread))
    raw.close()
    figures.append(await fsync_alone(tmp, n))
    return figures


async def fsync_alone(tmp: Path, n: int, name: str = "  fsync of a 4 KiB append, alone") -> Samples:
    """The kernel's and the disk's part of a durable commit: ``fsync`` of a 4 KiB
    append to a file in ``tmp`` (the data dir's file system), nothing else."""
    fd = os.open(tmp / "fsync", os.O_WRONLY | os.O_CREAT | os.O_APPEND)

    async def fsync() -> float:
        os.write(fd, b"x" * 4096)
        started = time.perf_counter()
        os.fsync(fd)
        return time.perf_counter() - started

    try:
        return await sample(name, n, fsync)
    finally:
        os.close(fd)


async def post(port: int, n: int) -> Samples:
    poster = JsonPoster("0.1.0", timeout=5.0)
    url = f"http://127.0.0.1:{port}/hook"

    async def once() -> float:
        started = time.perf_counter()
        result = await poster.post(url, ALERT * 8)
        assert result.ok, result
        return time.perf_counter() - started

    try:
        return await sample("webhook POST, JsonPoster, until the answer", n, once)
    finally:
        await poster.close()


async def main(n: int) -> None:
    command = shlex.join([".venv/bin/python", "bench/ceiling_latency.py", *sys.argv[1:]])
    print(f"W3 latency floor, n={n:,} each, one at a time: {command}")
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        port_file = tmp / "port"
        receiver = await asyncio.create_subprocess_exec(
            sys.executable,
            str(ROOT / "bench" / "ceiling_delivery.py"),
            "--serve-receiver",
            str(port_file),
        )
        server = NatsServer(tmp / "js")
        server.start()
        try:
            inbound = await jetstream_hop(server.url, n, "IN", "alerts.in.bench", ALERT)
            committed = await commit(tmp, n)
            work = await jetstream_hop(server.url, n, "WORK", "work.hook", WORK_ITEM)
            deadline = time.monotonic() + 10
            while not port_file.exists() or not port_file.read_text():
                if time.monotonic() > deadline or receiver.returncode is not None:
                    raise RuntimeError("the receiver did not start")
                await asyncio.sleep(0.02)
            sent = await post(int(port_file.read_text()), n)
        finally:
            server.stop()
            receiver.terminate()
            await asyncio.wait_for(receiver.wait(), 10)
    parts = (inbound, committed[0], work, sent)
    for q, label in ((0.5, "p50"), (0.9, "p90")):
        total = sum(part.at(q) for part in parts)
        print(f"  floor: a + b + c + d at each part's {label}: {total:6.3f} ms")
    print(f"command: {command}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=500, help="samples per part")
    asyncio.run(main(parser.parse_args().n))
