"""Router throughput: events/s committed to the log and routed, on this machine.

Preloads TOCSIN_IN with N events (the publisher is not what is measured), then starts
`tocsin serve` as its own process against a real nats-server, with one webhook receiver
played by a local HTTP sink, and reads the figures from the log's own append times:

    events/s   = N / (last alert.received ts - first alert.received ts)
    delivered  = time from the first commit to the last delivery.succeeded

Run: .venv/bin/python bench/router_throughput.py [--events 20000] [--fingerprints 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec
import nats

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import HttpSink, NatsServer  # noqa: E402 - after the path tweak

from tocsin import broker  # noqa: E402

TOCSIN = str(Path(sys.executable).parent / "tocsin")


async def preload(url: str, events: int, fingerprints: int) -> float:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await broker.ensure_streams(js)
    await broker.ensure_consumer(js, broker.STREAM_IN, broker.router_consumer_config())
    started = time.perf_counter()
    window = 2000
    for start in range(0, events, window):
        futures = []
        for i in range(start, min(events, start + window)):
            body = {
                "type": "bench_alert",
                "severity": "critical",
                "summary": f"bench event {i}",
                "labels": {"n": str(i % fingerprints)},
            }
            futures.append(js.publish("alerts.in.bench", msgspec.json.encode(body)))
        await asyncio.gather(*futures)
    elapsed = time.perf_counter() - started
    await nc.close()
    return elapsed


def counts(db: Path) -> tuple[int, int]:
    if not db.exists():
        return 0, 0
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = dict(
            conn.execute(
                "SELECT kind, COUNT(*) FROM events WHERE kind IN ('alert.received', 'delivery.succeeded')"
                " GROUP BY kind"
            ).fetchall()
        )
    return rows.get("alert.received", 0), rows.get("delivery.succeeded", 0)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument(
        "--fingerprints",
        type=int,
        default=None,
        help="distinct fingerprints (default: all distinct)",
    )
    parser.add_argument("--timeout", type=float, default=180)
    args = parser.parse_args()
    fingerprints = args.fingerprints or args.events
    expected_notifications = min(fingerprints, args.events)
    command = "python bench/router_throughput.py " + " ".join(sys.argv[1:])

    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(Path(tmp) / "js")
        server.start()
        sink = HttpSink()
        await sink.start()
        data = Path(tmp) / "data"
        data.mkdir()
        (data / "bench.toml").write_text(
            f'[[route]]\nmatch = {{}}\nreceivers = ["hook"]\n'
            f'[receivers.hook]\nchannel = "webhook"\nurl = "{sink.url}"\n'
        )
        process = None
        try:
            publish_seconds = await preload(server.url, args.events, fingerprints)
            print(
                f"preloaded {args.events} events in {publish_seconds:.2f}s "
                f"({args.events / publish_seconds:,.0f}/s publish with PubAck)"
            )
            process = subprocess.Popen(
                [
                    TOCSIN,
                    "--log-level",
                    "warning",
                    "serve",
                    "--data-dir",
                    str(data),
                    "--nats-url",
                    server.url,
                    "--http",
                    "",
                    "--config",
                    str(data / "bench.toml"),
                ],
                stdout=subprocess.DEVNULL,
            )
            db = data / "tocsin.db"
            deadline = time.monotonic() + args.timeout
            while counts(db) != (args.events, expected_notifications):
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit(f"incomplete: {counts(db)} (exit {process.poll()})")
                await asyncio.sleep(0.1)
            cpu = _cpu_seconds(process.pid)
            with sqlite3.connect(db) as conn:
                first, last = conn.execute(
                    "SELECT MIN(ts), MAX(ts) FROM events WHERE kind = 'alert.received'"
                ).fetchone()
                last_delivery = conn.execute(
                    "SELECT MAX(ts) FROM events WHERE kind = 'delivery.succeeded'"
                ).fetchone()[0]
        finally:
            if process is not None:
                process.send_signal(signal.SIGTERM)
                process.wait(30)
            await sink.stop()
            server.stop()

    seconds = max((last - first) / 1e6, 1e-6)
    result = {
        "command": command,
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "events": args.events,
        "fingerprints": fingerprints,
        "router_events_per_second": round(args.events / seconds),
        "router_seconds": round(seconds, 3),
        "notifications": len(sink.requests),
        "last_notification_after_first_commit_seconds": round((last_delivery - first) / 1e6, 3),
        "tocsin_cpu_seconds": cpu,
    }
    print(json.dumps(result, indent=2))
    print(
        f"\n{result['router_events_per_second']:,} events/s through the router "
        f"({args.events} events, {fingerprints} fingerprints); "
        f"{result['notifications']} notifications, the last "
        f"{result['last_notification_after_first_commit_seconds']}s after the first commit\n"
        f"command: {command}"
    )


def _cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)
    except (OSError, IndexError, ValueError):
        return None


if __name__ == "__main__":
    asyncio.run(main())
