"""The router's ceiling on this machine: the irreducible per-event costs, each alone.

  a. NATS: pull + ack of N small messages from a JetStream stream with tocsin's raw
     batch puller (``Puller``, batches of 1000) and plain-publish acks
  b. msgspec: decode + validate an inbound event into a typed Struct, and encode the
     ``alert.received`` fact it becomes (the bare library, no tocsin rules)
  c. SQLite: the log's own multi-row INSERTs of the rows an event produces into its real schema,
     WAL, ``synchronous=FULL``, one transaction per 1000 events, with and without the
     indexes (W1 shape: 3 rows per event, distinct fingerprints; W2 shape: 2 rows per
     event over 1000 fingerprints)

and, for comparison, tocsin's own per-event Python (parse + triage + fold + encode +
hash) without I/O. The sum a + b + c is what one event costs at the least; one core
running it all back to back gives the rate printed as the ceiling (the router's two
threads can overlap SQLite's share, so the bound with a perfect overlap is printed too).

Run: .venv/bin/python bench/ceiling_router.py [--events 20000]   (about 30 s)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import msgspec
import nats

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import NatsServer

from tocsin.bus.puller import Puller, ack_all
from tocsin.bus.streams import ensure_streams
from tocsin.core import events as ev
from tocsin.core import ingest
from tocsin.core.contracts import TYPE_PATTERN
from tocsin.core.decide.route import RoutingTable
from tocsin.core.decide.triage import triage
from tocsin.core.state import State
from tocsin.core.subjects import ROUTER_CONSUMER, STREAM_IN
from tocsin.store.chain import chain_hash
from tocsin.store.eventlog import SCHEMA, _insert_sizes, _insert_sql
from tocsin.store.ledger import Batch, Input

BATCH = 1000


def body(i: int, fingerprints: int) -> bytes:
    return msgspec.json.encode(
        {
            "type": "bench_alert",
            "severity": "critical",
            "summary": f"bench event {i}",
            "labels": {"n": str(i % fingerprints)},
        }
    )


def cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# a. NATS ------------------------------------------------------------------------------


async def nats_pull_ack(events: int, tmp: Path) -> dict[str, float]:
    server = NatsServer(tmp / "js")
    server.start()
    assert server.process is not None
    try:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await ensure_streams(js)
        for start in range(0, events, 2000):
            await asyncio.gather(
                *(
                    js.publish("alerts.in.bench", body(i, events))
                    for i in range(start, min(events, start + 2000))
                )
            )
        puller = Puller(nc, STREAM_IN, ROUTER_CONSUMER, BATCH, prefetch=True)
        await puller.start()
        server_cpu, cpu, wall = cpu_of(server.process.pid), time.process_time(), time.perf_counter()
        done = 0
        while done < events:
            msgs = await puller.take(wait=5.0)
            if not msgs:
                raise SystemExit("a: the stream ran dry before every message was pulled")
            done += len(msgs)
            await ack_all(nc, msgs)
        await nc.flush()
        wall = time.perf_counter() - wall
        cpu = time.process_time() - cpu
        server_cpu = cpu_of(server.process.pid) - server_cpu
        await puller.stop()
        await nc.close()
    finally:
        server.stop()
    return {
        "per_second": events / wall,
        "client_cpu_us": cpu * 1e6 / events,
        "server_cpu_us": server_cpu * 1e6 / events,
    }


# b. msgspec ---------------------------------------------------------------------------


class Inbound(msgspec.Struct, kw_only=True):
    """The inbound contract as msgspec checks it by itself (types, pattern, lengths)."""

    type: Annotated[str, msgspec.Meta(pattern=TYPE_PATTERN)]
    severity: str
    summary: Annotated[str, msgspec.Meta(min_length=1)]
    source: str | None = None
    status: str = "firing"
    labels: Annotated[dict[str, str], msgspec.Meta(max_length=32)] = {}
    fingerprint: str | None = None
    details: dict[str, Any] = {}
    timestamp: str | None = None
    event_id: str | None = None


def per_call_us(fn: Callable[[int], object], n: int) -> float:
    started = time.process_time()
    for i in range(n):
        fn(i)
    return (time.process_time() - started) * 1e6 / n


def msgspec_costs(events: int) -> dict[str, float]:
    payloads = [body(i, events) for i in range(events)]
    decoder = msgspec.json.Decoder(Inbound)
    received = ev.AlertReceived(
        alert_id="0123456789abcdef0123",
        fingerprint="0123456789abcdef0123456789abcdef",
        dedup_key="0123456789abcdef0123456789abcdef:2958362",
        type="bench_alert",
        severity="critical",
        summary="bench event 1",
        source="bench",
        status="firing",
        labels={"n": "1"},
        details={},
        timestamp=1_775_000_000_000_000,
        received_at=1_775_000_000_000_000,
        subject="alerts.in.bench",
        trace_id="0123456789abcdef0123456789abcdef",
    )
    return {
        "decode_us": per_call_us(lambda i: decoder.decode(payloads[i]), events),
        "encode_us": per_call_us(lambda i: ev.encode(received), events),
    }


def tocsin_python(events: int, fingerprints: int) -> float:
    """tocsin's per-event work without I/O: parse, triage, fold, encode, hash."""
    routing = RoutingTable.compile([])
    state = State()
    payloads = [body(i, fingerprints) for i in range(events)]
    ids = iter(range(10 * events))
    inbound = Input.INBOUND
    started = time.process_time()
    previous = b"\x00" * 32
    seq = 0
    for start in range(0, events, BATCH):
        batch = Batch(state, seq + 1, 1_775_000_000_000_000 + start)
        for i in range(start, min(events, start + BATCH)):
            parsed = ingest.parse(payloads[i], default_source="bench", received_at=batch.ts)
            assert isinstance(parsed, ingest.Normalized)
            facts = triage(
                state,
                parsed,
                subject="alerts.in.bench",
                received_at=batch.ts,
                routing=routing,
                window_seconds=600,
                new_id=lambda: f"{next(ids):020x}",
                trace_id=None,
            )
            first = batch.add_caused(facts, inbound, i + 1).start
            for seq, fact in enumerate(facts, first):
                data = ev.encode(fact)
                previous = chain_hash(previous, seq, batch.ts, ev.kind_of(fact), data)
    return (time.process_time() - started) * 1e6 / events


# c. SQLite ----------------------------------------------------------------------------


def rows_for(events: int, fingerprints: int) -> list[tuple[Any, ...]]:
    """Rows shaped like the router's: W1 (distinct) 3 per event, W2 (dups) 2 per event."""
    rows: list[tuple[Any, ...]] = []
    seq = 0
    for i in range(events):
        fp = f"{hash(('fp', i % fingerprints)) & (1 << 128) - 1:032x}"
        alert = f"{hash(('alert', i % fingerprints)) & (1 << 80) - 1:020x}"
        first = i < fingerprints
        kinds = ["alert.received", "alert.opened", "alert.routed"] if first else [
            "alert.received", "alert.suppressed"]  # fmt: skip
        for kind in kinds:
            seq += 1
            # Valid JSON of the real rows' sizes: the log's partial indexes read it.
            data = (b'{"kind":"%s","fingerprint":"%s","alert_id":"%s","pad":"' % (
                kind.encode(), fp.encode(), alert.encode())).ljust(
                380 if kind == "alert.received" else 200, b"x") + b'"}'  # fmt: skip
            ts = 1_775_000_000_000_000 + (i // BATCH)
            rows.append((seq, ts, kind, data, i + 1, None, fp, alert, os.urandom(32)))
    return rows


def sqlite_insert(
    tmp: Path, rows: list[tuple[Any, ...]], events: int, schema: str, repeat: int = 3
) -> dict[str, float]:
    """The best of ``repeat`` runs, each into a fresh file (the machine is shared)."""
    best = {"wall_us": float("inf"), "cpu_us": float("inf")}
    for _ in range(repeat):
        path = tmp / f"ceiling-{time.monotonic_ns()}.db"
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(schema)
        chunk = round(BATCH * len(rows) / events)
        wall, cpu = time.perf_counter(), time.process_time()
        for start in range(0, len(rows), chunk):
            batch = rows[start : start + chunk]
            conn.execute("BEGIN IMMEDIATE")
            at = 0
            for size in _insert_sizes(len(batch)):  # the log's own multi-row INSERTs
                part = batch[at : at + size]
                conn.execute(_insert_sql(size), [value for row in part for value in row])
                at += size
            conn.execute("COMMIT")
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        conn.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        best["wall_us"] = min(best["wall_us"], wall * 1e6 / events)
        best["cpu_us"] = min(best["cpu_us"], cpu * 1e6 / events)
    return best


def schema_without(indexes: list[str]) -> str:
    keep = [
        line
        for line in SCHEMA.splitlines()
        if not any(f"INDEX IF NOT EXISTS {name} " in line for name in indexes)
    ]
    return "\n".join(keep)


INDEXES = ["events_in_seq", "events_out_seq", "events_ts", "events_alert_id"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    args = parser.parse_args()
    n = args.events
    command = " ".join(["python bench/ceiling_router.py", *sys.argv[1:]])
    print(f"router ceiling, {n:,} events, {os.cpu_count()} cores; command: {command}\n")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        a = asyncio.run(nats_pull_ack(n, tmp))
        print(
            f"a. NATS pull + ack: {a['per_second']:,.0f} msgs/s; client CPU"
            f" {a['client_cpu_us']:.1f} us/msg, nats-server CPU {a['server_cpu_us']:.1f} us/msg"
        )
        b = msgspec_costs(n)
        print(
            f"b. msgspec: decode+validate {b['decode_us']:.2f} us, encode the fact"
            f" {b['encode_us']:.2f} us per event"
        )
        print("c. SQLite multi-row INSERTs, WAL, synchronous=FULL, 1000 events per commit:")
        sqlite: dict[str, dict[str, float]] = {}
        for shape, fingerprints in (("W1", n), ("W2", 1000)):
            rows = rows_for(n, fingerprints)
            per_event = len(rows) / n
            every = sqlite_insert(tmp, rows, n, SCHEMA)
            bare = sqlite_insert(tmp, rows, n, schema_without(INDEXES))
            sqlite[shape] = every
            print(
                f"   {shape} ({per_event:.0f} rows/event): the log's indexes"
                f" {every['wall_us']:.1f} us/event wall ({every['cpu_us']:.1f} CPU),"
                f" no index {bare['wall_us']:.1f} us ({bare['cpu_us']:.1f} CPU)"
            )
            for name in INDEXES:
                without = sqlite_insert(tmp, rows, n, schema_without([name]))
                print(
                    f"      without {name}: {without['wall_us']:.1f} us/event wall"
                    f" ({without['cpu_us']:.1f} CPU)"
                )
        for shape, fingerprints in (("W1", n), ("W2", 1000)):
            ours = tocsin_python(n, fingerprints)
            floor = a["client_cpu_us"] + b["decode_us"] + b["encode_us"] * (3 if shape == "W1"
                else 2) + sqlite[shape]["cpu_us"]  # fmt: skip
            overlap = max(a["client_cpu_us"] + b["decode_us"], sqlite[shape]["cpu_us"])
            print(
                f"\n{shape}: irreducible a+b+c = {floor:.1f} us CPU/event -> at most"
                f" {1e6 / floor:,.0f} events/s on one core ({1e6 / overlap:,.0f}/s if SQLite"
                f" overlapped perfectly), before nats-server's own"
                f" {a['server_cpu_us']:.1f} us/msg on the shared cores."
                f"\n    tocsin's per-event Python alone (parse+triage+fold+encode+hash,"
                f" no I/O): {ours:.1f} us"
            )
    print(f"\ncommand: {command}")


if __name__ == "__main__":
    main()
