"""Pipeline throughput on this machine, as users run tocsin (separate processes).

Preloads TOCSIN_IN with N events (the publisher is not what is measured), then:

  A. router alone:   `tocsin router` drains the stream; events/s from the log's own
                     append times (first to last ``alert.received`` commit).
  B. delivery alone: `tocsin deliver` sends the N work items to a local webhook sink;
                     notifications/s from the sink's receive times.
  C. end to end:     a fresh data dir, `tocsin serve` (router + recorder + workers in
                     one process): events/s committed and time until the last
                     notification was delivered and recorded.

Run: .venv/bin/python bench/router_throughput.py [--events 20000] [--fingerprints N]
Writes bench/results/router_throughput.json (``make bench-parts``; the suite of
``make bench`` writes latest.json).
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

from tests.support import HttpSink, NatsServer

from tocsin.bus.streams import ensure_streams

TOCSIN = str(Path(sys.executable).parent / "tocsin")


async def preload(url: str, events: int, fingerprints: int) -> float:
    """Publish ``events`` with PubAcks; returns the seconds it took."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    await ensure_streams(js)
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


def query(db: Path, sql: str) -> tuple[int, ...]:
    if not db.exists():
        return (0,)
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return tuple(conn.execute(sql).fetchone())
    except sqlite3.OperationalError:  # the file exists before its schema does
        return (0,)


def count(db: Path, kind: str) -> int:
    return int(query(db, f"SELECT COUNT(*) FROM events WHERE kind = '{kind}'")[0])


def received_all(db: Path, n: int) -> bool:
    """Whether all ``n`` preloaded events are logged: polled cheaply (the indexed
    highest inbound seq) so that the bench takes little CPU from the router while it
    works, then checked by count."""
    return int(query(db, "SELECT COALESCE(MAX(in_seq), 0) FROM events")[0]) >= n and (
        count(db, "alert.received") == n
    )


def span_seconds(db: Path, kind: str) -> float:
    first, last = query(db, f"SELECT MIN(ts), MAX(ts) FROM events WHERE kind = '{kind}'")
    return max((last - first) / 1e6, 1e-6)


class Proc:
    """A tocsin command in its own process."""

    def __init__(self, *args: str) -> None:
        self.args = args
        self.process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Proc:
        self.process = await asyncio.create_subprocess_exec(
            TOCSIN, "--log-level", "warning", *self.args, stdout=subprocess.DEVNULL
        )
        return self

    def cpu_seconds(self) -> float:
        assert self.process is not None
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)

    def rss_mib(self) -> float:
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
        return 0.0

    async def __aexit__(self, *exc: object) -> None:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(self.process.wait(), 30)


async def until(predicate: object, timeout: float, what: str, proc: Proc) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert proc.process is not None
        if proc.process.returncode is not None:
            raise SystemExit(f"{what}: tocsin exited with {proc.process.returncode}")
        if time.monotonic() > deadline:
            raise SystemExit(f"{what}: not done within {timeout}s")
        await asyncio.sleep(0.05)


def start_profile(proc: Proc, out: str) -> subprocess.Popen[bytes]:
    """py-spy on the router process (needs ptrace rights), with its native threads."""
    assert proc.process is not None
    spy = str(Path(sys.executable).parent / "py-spy")
    return subprocess.Popen(
        [
            spy,
            "record",
            "--pid",
            str(proc.process.pid),
            "--rate",
            "250",
            "--threads",
            "--format",
            "raw",
            "--output",
            out,
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--fingerprints", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=180)
    parser.add_argument(
        "--router-only", action="store_true", help="run A only (the router's own rate)"
    )
    parser.add_argument(
        "--serve-only", action="store_true", help="run C only (`tocsin serve` end to end)"
    )
    parser.add_argument(
        "--profile", metavar="FILE", help="py-spy record the router during A (speedscope json)"
    )
    args = parser.parse_args()
    n = args.events
    fingerprints = args.fingerprints or n
    notifications = min(fingerprints, n)
    command = " ".join(["python bench/router_throughput.py", *sys.argv[1:]])
    result: dict[str, object] = {
        "command": command,
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "events": n,
        "fingerprints": fingerprints,
    }
    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(Path(tmp) / "js")
        server.start()
        sink = HttpSink()
        await sink.start()
        config = Path(tmp) / "bench.toml"
        config.write_text(
            f'[[route]]\nmatch = {{}}\nreceivers = ["hook"]\n'
            f'[receivers.hook]\nchannel = "webhook"\nurl = "{sink.url}"\n'
        )
        try:
            if not args.serve_only:
                # A + B: the parts apart.
                data = Path(tmp) / "apart"
                seconds = await preload(server.url, n, fingerprints)
                result["publish_per_second"] = round(n / seconds)
                common = (
                    "--data-dir",
                    str(data),
                    "--nats-url",
                    server.url,
                    "--config",
                    str(config),
                )
                db = data / "tocsin.db"
                async with Proc("router", *common) as router:
                    await until(lambda: count(db, "alert.received") > 0, args.timeout, "A", router)
                    cpu_at_first, first = router.cpu_seconds(), count(db, "alert.received")
                    spy = start_profile(router, args.profile) if args.profile else None
                    await until(lambda: received_all(db, n), args.timeout, "A", router)
                    result["A_router_events_per_second"] = round(
                        n / span_seconds(db, "alert.received")
                    )
                    result["A_router_commits"] = query(
                        db, "SELECT COUNT(DISTINCT ts) FROM events WHERE kind = 'alert.received'"
                    )[0]
                    result["A_router_cpu_us_per_event"] = round(
                        (router.cpu_seconds() - cpu_at_first) * 1e6 / max(n - first, 1), 1
                    )
                    if spy is not None:
                        spy.send_signal(signal.SIGINT)
                        await asyncio.to_thread(spy.wait)
                    if args.router_only:
                        print(json.dumps(result, indent=2))
                        print(
                            f"\nA router alone: {result['A_router_events_per_second']:,} events/s"
                            f" committed + routed, {result['A_router_cpu_us_per_event']} us CPU"
                            f" per event after the first commit\ncommand: {command}"
                        )
                        return
                    async with Proc("deliver", *common) as deliver:
                        await until(
                            lambda: len(sink.requests) >= notifications, args.timeout, "B", deliver
                        )
                        span = sink.requests[-1].at - sink.requests[0].at
                        result["B_delivery_per_second"] = round(
                            len(sink.requests) / max(span, 1e-6)
                        )
                        result["B_deliver_cpu_ms_per_notification"] = round(
                            deliver.cpu_seconds() * 1000 / len(sink.requests), 3
                        )
                    await until(
                        lambda: count(db, "delivery.succeeded") == notifications,
                        args.timeout,
                        "B outcomes",
                        router,
                    )
            # C: one process, as `make run` runs it.
            sink.requests.clear()
            data = Path(tmp) / "together"
            await preload(server.url, n, fingerprints)
            db = data / "tocsin.db"
            common = ("--data-dir", str(data), "--nats-url", server.url, "--config", str(config))
            async with Proc("serve", "--http", "", *common) as serve:
                await until(
                    lambda: count(db, "delivery.succeeded") == notifications,
                    args.timeout,
                    "C",
                    serve,
                )
                result["C_serve_events_per_second"] = round(n / span_seconds(db, "alert.received"))
                first = query(db, "SELECT MIN(ts) FROM events WHERE kind = 'alert.received'")[0]
                last = query(db, "SELECT MAX(ts) FROM events WHERE kind = 'delivery.succeeded'")[0]
                result["C_last_notification_after_first_commit_s"] = round((last - first) / 1e6, 2)
                result["C_notifications"] = len(sink.requests)
                result["C_serve_cpu_seconds"] = serve.cpu_seconds()
                result["C_serve_rss_mib"] = serve.rss_mib()
                if args.serve_only:
                    print(json.dumps(result, indent=2))
                    print(
                        f"\nC serve end to end: {result['C_serve_events_per_second']:,} events/s;"
                        f" last of {result['C_notifications']} notifications"
                        f" {result['C_last_notification_after_first_commit_s']}s after the first"
                        f" commit; {result['C_serve_cpu_seconds']} s CPU\ncommand: {command}"
                    )
                    return
        finally:
            await sink.stop()
            server.stop()
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "router_throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(
        f"\nA router alone: {result['A_router_events_per_second']:,} events/s committed + routed"
        f"\nB delivery alone: {result['B_delivery_per_second']:,} notifications/s to one webhook"
        f"\nC serve end to end: {result['C_serve_events_per_second']:,} events/s; last of "
        f"{result['C_notifications']} notifications "
        f"{result['C_last_notification_after_first_commit_s']}s after the first commit"
        f"\ncommand: {command}"
    )


if __name__ == "__main__":
    asyncio.run(main())
