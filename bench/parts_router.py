"""The router's CPU per event, alone, for W1 and W2 (issue #20: target <= 50 us).

For each workload: a fresh ``nats-server`` and data dir; TOCSIN_IN is preloaded first
(the publisher is not what is measured), then ``tocsin router`` starts in its own
process and drains it. Its CPU is that process's user + system time (the counters
``getrusage`` reads, from ``/proc/<pid>/stat`` while it runs), not wall time, since the
machine is shared: from the first committed batch until every event is committed,
divided by the events committed in between, so the interpreter's start (imports,
connecting, the schema) is not charged to the events. The whole process's CPU, start
and stop included, is printed too (``os.wait4``'s rusage of the exited child).

  W1: 20,000 distinct alerts (3 facts each: received, opened, routed)
  W2: 20,000 events over 1,000 fingerprints (19,000 duplicates: received, suppressed)

Each workload runs ``--runs`` times (default 3); the median is the figure, the range is
printed beside it.

Run: .venv/bin/python bench/parts_router.py [--events 20000] [--runs 3] [--profile DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import NatsServer

from bench.router_throughput import TOCSIN, count, preload, query

TARGET_US = 50.0
POLL = 0.05  # seconds between the bench's cheap looks at the log


@dataclass(frozen=True)
class Run:
    steady_us: float  # CPU per event from the first commit to the last
    whole_us: float  # the whole process's CPU (start, drain, stop) per event
    events_per_second: float  # committed, from the log's own append times
    threads_us: dict[str, float]  # steady_us by thread name


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process (what ``getrusage`` reports for it)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def by_thread(runs: Iterable[Mapping[str, float]]) -> str:
    """Each thread's median µs over the runs (a thread missing from a run counts 0), in
    name order: the line ``parts_router`` and ``parts_recorder`` print under a figure."""
    runs = list(runs)
    names = sorted({name for run in runs for name in run})
    return ", ".join(
        f"{name} {statistics.median(run.get(name, 0.0) for run in runs):.1f}" for name in names
    )


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of each of a live process's threads: ``loop`` (the main thread, the
    event loop's), then ``thread1``, ``thread2``... in the order they were started (the
    first is the log's writer thread, ``tocsin-log_0``: SQLite's inserts and commits)."""
    out: dict[str, float] = {}
    tids = sorted(int(task.name) for task in Path(f"/proc/{pid}/task").iterdir())
    for n, tid in enumerate(tids):
        task = Path(f"/proc/{pid}/task/{tid}")
        name = "loop" if tid == pid else f"thread{n}"
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        ticks = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        out[name] = out.get(name, 0.0) + ticks
    return out


def logged_in_seq(db: Path) -> int:
    """The highest inbound seq committed (indexed: cheap to poll while the router runs)."""
    return int(query(db, "SELECT COALESCE(MAX(in_seq), 0) FROM events")[0])


async def wait_for(predicate: object, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if process.poll() is not None:
            raise SystemExit(f"tocsin router exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise SystemExit(f"the router did not commit every event within {timeout}s")
        await asyncio.sleep(POLL)


async def one_run(events: int, fingerprints: int, timeout: float, profile: str | None) -> Run:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        server = NatsServer(tmp / "js")
        server.start()
        config = tmp / "bench.toml"
        config.write_text(
            '[[route]]\nmatch = {}\nreceivers = ["hook"]\n'
            '[receivers.hook]\nchannel = "webhook"\nurl = "http://127.0.0.1:9/"\n'
        )
        data = tmp / "data"
        db = data / "tocsin.db"
        try:
            await preload(server.url, events, fingerprints)
            argv = [TOCSIN, "--log-level", "warning", "router", "--data-dir", str(data),
                    "--nats-url", server.url, "--config", str(config)]  # fmt: skip
            process = await asyncio.to_thread(subprocess.Popen, argv, stdout=subprocess.DEVNULL)
            try:
                await wait_for(lambda: logged_in_seq(db) > 0, process, timeout)
                cpu_first, first = cpu_seconds(process.pid), logged_in_seq(db)
                threads_first = thread_cpu(process.pid)
                spy = py_spy(process.pid, profile) if profile is not None else None
                await wait_for(lambda: logged_in_seq(db) >= events, process, timeout)
                cpu_last = cpu_seconds(process.pid)
                threads_last = thread_cpu(process.pid)
                if spy is not None:
                    spy.send_signal(signal.SIGINT)
                    await asyncio.to_thread(spy.wait)
                received = count(db, "alert.received")
                if received != events:
                    raise SystemExit(f"{received} alert.received facts for {events} events")
                span = query(db, "SELECT MIN(ts), MAX(ts) FROM events WHERE kind='alert.received'")
            finally:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
                _, _, usage = await asyncio.to_thread(os.wait4, process.pid, 0)
        finally:
            server.stop()
    whole = usage.ru_utime + usage.ru_stime
    return Run(
        steady_us=(cpu_last - cpu_first) * 1e6 / max(events - first, 1),
        whole_us=whole * 1e6 / events,
        events_per_second=events / max((span[1] - span[0]) / 1e6, 1e-6),
        threads_us={
            name: (cpu - threads_first.get(name, 0.0)) * 1e6 / max(events - first, 1)
            for name, cpu in threads_last.items()
        },
    )


def py_spy(pid: int, out: str) -> subprocess.Popen[bytes]:
    """py-spy on the router (collapsed stacks, its native threads too)."""
    spy = str(Path(sys.executable).parent / "py-spy")
    argv = [spy, "record", "--pid", str(pid), "--rate", "250", "--threads", "--format",
            "raw", "--output", out, "--nonblocking"]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=180)
    parser.add_argument("--workloads", default="w1,w2", help="w1, w2 or both")
    parser.add_argument("--profile", metavar="DIR", help="py-spy each workload's last run")
    args = parser.parse_args()
    n = args.events
    command = " ".join(["python bench/parts_router.py", *sys.argv[1:]])
    shapes = {"w1": n, "w2": min(1000, n)}
    chosen = [w.strip() for w in args.workloads.split(",") if w.strip()]
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
    medians: dict[str, float] = {}
    for name in chosen:
        runs: list[Run] = []
        for i in range(args.runs):
            out = None
            if args.profile and i == args.runs - 1:
                out = str(Path(args.profile) / f"router-{name}.txt")
            runs.append(await one_run(n, shapes[name], args.timeout, out))
        medians[name] = statistics.median(r.steady_us for r in runs)
        print(
            f"{name.upper()} ({n:,} events over {shapes[name]:,} fingerprints, {args.runs} runs):"
            f" router CPU {spread([r.steady_us for r in runs])} us/event after its first commit;"
            f" whole process {spread([r.whole_us for r in runs])} us/event;"
            f" {spread([r.events_per_second for r in runs])} events/s committed"
        )
        print(f"    by thread (median us/event): {by_thread(r.threads_us for r in runs)}")
    figures = ", ".join(f"{w.upper()} {medians[w]:.1f} µs" for w in chosen)
    print(f"router CPU per event: {figures} (target <= {TARGET_US:.0f})")
    print(f"command: {command}")


if __name__ == "__main__":
    asyncio.run(main())
