"""A flood of rejected messages (issue #9, hostile input).

``tocsin serve`` (default log level, so each rejection also writes its log line) gets
100,000 rejected messages in a row, each just over the 1 KiB that is kept of it. TOCSIN_IN
is one FIFO stream, so a valid event published behind the flood waits for it: what
tocsin controls is what a rejection costs (compared with a valid event), that a flood it
can keep up with does not slow valid events, that nothing lingers after it, and how
compactly the log records it. The figures are printed; the bounds asserted are generous.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import statistics
import time
from pathlib import Path
from typing import Any

import msgspec
import nats

from tests.support import HttpSink, Serve, log_count, wait_until, webhook_config
from tocsin.core.contracts import MAX_RAW_BYTES
from tocsin.core.subjects import REJECTED, STREAM_OUT
from tocsin.store.eventlog import db_path

FLOOD = 100_000
REFERENCE = 10_000  # valid events (duplicates) for the per-message cost
PROBE_EVERY = 0.1
PACED_SECONDS = 5.0
# Not JSON at all, just over the 1 KiB the log keeps: the largest rejection row.
GARBAGE = b"<html>" + b"x" * (MAX_RAW_BYTES + 70) + b"</html>"


class Prober:
    """Valid events, each to its own alert, timed from publish to the receiver."""

    def __init__(self, js: Any, sink: HttpSink) -> None:
        self.js = js
        self.sink = sink
        self.sent: dict[str, float] = {}
        self._seen = 0
        self._arrived: dict[str, float] = {}

    async def send(self, tag: str) -> None:
        body = {"type": "probe", "severity": "critical", "summary": tag, "labels": {"p": tag}}
        self.sent[tag] = time.time()
        await self.js.publish("alerts.in.probe", msgspec.json.encode(body), timeout=60)

    def arrived(self) -> dict[str, float]:
        for request in self.sink.requests[self._seen :]:
            self._arrived[request.json()["summary"]] = request.at
        self._seen = len(self.sink.requests)
        return self._arrived

    async def latencies(self, tags: list[str], timeout: float = 120) -> list[float]:
        await wait_until(lambda: set(tags) <= set(self.arrived()), timeout, "probes delivered")
        return [self._arrived[tag] - self.sent[tag] for tag in tags]

    async def every(self, prefix: str, stop: asyncio.Event) -> list[str]:
        tags = []
        while not stop.is_set() and len(tags) < 500:
            tag = f"{prefix} {len(tags)}"
            await self.send(tag)
            tags.append(tag)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), PROBE_EVERY)
        return tags


async def publish_many(js: Any, count: int, body: bytes, chunk: int = 1000) -> None:
    for start in range(0, count, chunk):
        n = min(chunk, count - start)
        await asyncio.gather(*(js.publish("alerts.in.flood", body, timeout=60) for _ in range(n)))


def log_span(db: Path, kind: str, after_seq: int) -> tuple[int, float]:
    """How many ``kind`` rows after ``after_seq``, and the seconds from first to last."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        count, first, last = conn.execute(
            "SELECT COUNT(*), MIN(ts), MAX(ts) FROM events WHERE kind = ? AND seq > ?",
            (kind, after_seq),
        ).fetchone()
    return int(count), (last - first) / 1e6


def last_seq(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0])


def log_bytes(db: Path) -> int:
    return sum(p.stat().st_size for p in (db, db.with_name(db.name + "-wal")) if p.exists())


def p50(values: list[float]) -> float:
    return statistics.median(values)


async def test_a_flood_of_rejections_costs_what_it_should_and_is_logged_compactly(
    nats_url: str, sink: HttpSink, tmp_path: Path
) -> None:
    config = tmp_path / "tocsin.toml"
    config.write_text(webhook_config(sink.url))
    data = tmp_path / "data"
    serve = Serve(data, nats_url, config, stderr=tmp_path / "serve.log", log_level="info")
    await serve.start()
    db = db_path(data)
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    prober = Prober(js, sink)
    try:
        # 1. Valid-event latency with nothing else going on.
        quiet = []
        for i in range(20):
            await prober.send(f"quiet {i}")
            quiet.append(f"quiet {i}")
            await asyncio.sleep(PROBE_EVERY)  # pacing the probes, not synchronisation
        before = await prober.latencies(quiet)

        # 2. 100,000 rejected messages in a row, then one valid event behind them.
        start_seq, size_before = last_seq(db), log_bytes(db)
        flood_started = time.time()
        await publish_many(js, FLOOD, GARBAGE)
        await prober.send("behind the flood")
        published = time.time() - flood_started
        [behind] = await prober.latencies(["behind the flood"], timeout=300)
        rejected, rejected_span = log_span(db, "alert.rejected", start_seq)
        assert rejected == FLOOD
        rejected_rate = FLOOD / rejected_span
        grown = log_bytes(db) - size_before
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            row_max, row_avg = conn.execute(
                "SELECT MAX(LENGTH(data)), AVG(LENGTH(data)) FROM events"
                " WHERE kind = 'alert.rejected'"
            ).fetchone()
        out = await js.stream_info(STREAM_OUT, subjects_filter=REJECTED)
        assert (out.state.subjects or {}).get(REJECTED) == FLOOD

        # 3. The same number of messages' cost when valid (duplicates of one alert).
        valid = msgspec.json.encode(
            {"type": "flood_valid", "severity": "info", "summary": "same", "labels": {"a": "b"}}
        )
        start_seq = last_seq(db)
        await publish_many(js, REFERENCE, valid)
        await wait_until(
            lambda: log_span(db, "alert.received", start_seq)[0] >= REFERENCE, 120, "reference"
        )
        valid_rate = REFERENCE / log_span(db, "alert.received", start_seq)[1]

        # 4. A flood tocsin keeps up with (a third of its measured rate), probed meanwhile.
        stop = asyncio.Event()
        probing = asyncio.create_task(prober.every("paced", stop))
        paced_rate = rejected_rate / 3
        chunk = 50
        deadline = time.monotonic() + PACED_SECONDS
        paced = 0
        while time.monotonic() < deadline:
            tick = time.monotonic()
            await publish_many(js, chunk, GARBAGE, chunk)
            paced += chunk
            await asyncio.sleep(max(0.0, chunk / paced_rate - (time.monotonic() - tick)))
        stop.set()
        during = await prober.latencies(await probing)

        # 5. Nothing lingers: quiet again, latency as before.
        await wait_until(lambda: log_count(db, "alert.rejected") == FLOOD + paced, 120, "drained")
        after_tags = []
        for i in range(20):
            await prober.send(f"after {i}")
            after_tags.append(f"after {i}")
            await asyncio.sleep(PROBE_EVERY)
        after = await prober.latencies(after_tags)

        print(
            f"\nflood of {FLOOD:,} rejections (published in {published:.1f}s): "
            f"{rejected_rate:,.0f}/s logged; valid duplicates {valid_rate:,.0f}/s; a valid "
            f"event behind the flood waited {behind:.1f}s. Latency p50/max: quiet "
            f"{p50(before) * 1000:.0f}/{max(before) * 1000:.0f} ms; during a "
            f"{paced_rate:,.0f}/s flood ({paced:,} msgs) {p50(during) * 1000:.0f}/"
            f"{max(during) * 1000:.0f} ms; after {p50(after) * 1000:.0f}/"
            f"{max(after) * 1000:.0f} ms. Log: {grown / FLOOD:,.0f} bytes per rejection on "
            f"disk (row data avg {row_avg:,.0f}, max {row_max:,}); alerts.rejected in "
            f"TOCSIN_OUT {out.state.bytes / max(1, out.state.messages):,.0f} bytes each"
        )
        # A rejection costs about what a valid event costs.
        assert rejected_rate >= valid_rate / 3
        # A flood tocsin keeps up with slows valid events by a small factor at most.
        assert p50(during) <= 5 * p50(before) + 0.1
        assert max(during) <= 2.0
        # Nothing lingers after the flood.
        assert p50(after) <= 3 * p50(before) + 0.1
        # Compact: the raw bytes are capped, so a rejection row is bounded.
        assert row_max <= 2 * MAX_RAW_BYTES
        assert grown / FLOOD <= 3 * MAX_RAW_BYTES
    finally:
        await nc.close()
        assert await serve.stop() == 0
