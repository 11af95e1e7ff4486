"""W3's CPU per event, process by process and thread by thread (issue #20).

At W3's steady 200 distinct alerts/s each alert arrives alone in its batch, so what
tocsin spends per batch and per wake-up (not per event) decides its CPU, and on a
2-core machine that CPU is queueing that shows in W3's p50 and p99. This runs W3's load
against ``tocsin serve`` (every process it starts) exactly as ``python -m bench``
does, and reads from ``/proc``, over the counted part of the load (after the warm-up,
until the last notification arrived and its outcome is recorded):

- each process's CPU (user + system) per event: ``tocsin serve`` (router, recorder,
  clock, API), each delivery child, and ``nats-server``;
- each thread's share (the event loop, aiosqlite's SQLite writer, others);
- each process's context switches per event, voluntary ones being its wake-ups;

with W3's latency p50 / p99 at the receiver. ``--profile DIR`` also samples each tocsin
process with py-spy over the same window (``--nonblocking``, idle excluded) and writes
a summary per process (``bench/profile.py``'s).

Run: .venv/bin/python bench/w3_cpu.py [--runs 2] [--seconds 20] [--profile DIR]
The tocsin it runs is the one ``import tocsin`` finds: ``PYTHONPATH=<tree>/service``
chooses a tree, and ``serve``'s children inherit it, so two trees can be alternated.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.procs import CLOCK_TICKS, Child, descendants
from bench.profile import Profiler
from bench.receiver import Receiver
from bench.targets import TocsinTarget
from bench.workloads import Budget, percentile, wait_for


@dataclass
class Sample:
    """One process's counters at one moment, from ``/proc``."""

    name: str
    cpu: float  # seconds, user + system, the whole process
    system: float = 0.0  # seconds in the kernel, the whole process
    threads: dict[int, float] = field(default_factory=dict)  # tid -> seconds
    voluntary: int = 0  # context switches: waits that ended (its wake-ups)
    involuntary: int = 0  # preemptions


def _cpu(stat_path: Path) -> float:
    return sum(_user_system(stat_path))


def _user_system(stat_path: Path) -> tuple[float, float]:
    fields = stat_path.read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def _name(pid: int) -> str:
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    words = [a.decode() for a in argv if a]
    for role in ("serve", "deliver", "router", "api", "clock"):
        if role in words:
            return f"tocsin {role}"
    return Path(words[0]).name if words else str(pid)


def sample(pid: int) -> Sample:
    """The counters of ``pid`` (0 everywhere when it is gone)."""
    root = Path(f"/proc/{pid}")
    try:
        threads = {int(t.name): _cpu(t / "stat") for t in (root / "task").iterdir()}
        status = dict(
            line.split(":", 1) for line in (root / "status").read_text().splitlines() if ":" in line
        )
        user, system = _user_system(root / "stat")
        return Sample(
            _name(pid),
            user + system,
            system,
            threads,
            int(status["voluntary_ctxt_switches"]),
            int(status["nonvoluntary_ctxt_switches"]),
        )
    except OSError:
        return Sample(str(pid), 0.0)


def usage(before: dict[int, Sample], after: dict[int, Sample], events: int) -> dict[str, object]:
    """Per process: CPU µs per event, its threads' (largest first), wake-ups per event."""
    rows: dict[str, object] = {}
    for pid, end in after.items():
        start = before.get(pid, Sample(end.name, 0.0))
        threads = sorted(
            ((end.threads[t] - start.threads.get(t, 0.0)) * 1e6 / events for t in end.threads),
            reverse=True,
        )
        rows[f"{end.name} ({pid})"] = {
            "cpu_us_per_event": (end.cpu - start.cpu) * 1e6 / events,
            "system_us_per_event": (end.system - start.system) * 1e6 / events,
            "threads_us_per_event": [round(t, 1) for t in threads if t > 0.5],
            "voluntary_per_event": (end.voluntary - start.voluntary) / events,
            "involuntary_per_event": (end.involuntary - start.involuntary) / events,
        }
    return rows


async def one_run(
    rate: float,
    seconds: float,
    warmup: float,
    profile: Path | None,
    strace: Path | None,
    idle_seconds: float,
) -> dict:
    """W3 on fresh processes; its latency and every process's CPU over the counted part."""
    work = Path(tempfile.mkdtemp(prefix="tocsin-w3cpu-"))
    target = TocsinTarget(work)
    receiver = Receiver(target.keys_of)
    await receiver.start()
    try:
        await target.start(receiver.url)
        tag = f"r{int(time.time())}"
        receiver.reset(f"{tag}-")
        target.begin()
        warm, count = round(rate * warmup), round(rate * seconds)
        keys = [f"{tag}-warm-{i}" for i in range(warm)] + [f"{tag}-w3-{i}" for i in range(count)]
        pids = [target.pid(), *descendants(target.pid())]
        assert target._nats is not None
        pids.append(target._nats.pid)  # the broker's share, apart
        idle: dict[str, object] = {}
        if idle_seconds > 0:  # what the processes cost with nothing to do
            await asyncio.sleep(2.0)  # past the start's own work
            quiet = {pid: sample(pid) for pid in pids}
            await asyncio.sleep(idle_seconds)
            idle = usage(quiet, {pid: sample(pid) for pid in pids}, round(rate * idle_seconds))
        profilers: list[Profiler] = []
        tracers: list[Child] = []
        before: dict[int, Sample] = {}
        sent_at: dict[str, float] = {}
        interval = 1.0 / rate
        started = time.perf_counter()
        for i, key in enumerate(keys):
            if i == warm:
                before = {pid: sample(pid) for pid in pids}
                if strace is not None:
                    for pid in pids[:-1]:
                        out = strace / f"{before[pid].name.replace(' ', '-')}.strace"
                        argv = ["strace", "-c", "-f", "-p", str(pid), "-o", str(out)]
                        tracers.append(Child("strace", argv, out.with_suffix(".log")).start())
                if profile is not None:
                    for pid in pids[:-1]:
                        profiler = Profiler(profile, f"w3-{before[pid].name.replace(' ', '-')}")
                        profiler.start(pid)
                        profilers.append(profiler)
            delay = started + i * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent_at[key] = time.perf_counter()
            await target.send(key)
        budget = Budget(120)
        await target.settle(budget.left())
        await wait_for(
            "W3 (CPU)",
            lambda: receiver.unique >= len(keys),
            target,
            budget.left(),
            lambda: f"{receiver.unique:,} of {len(keys):,} notified",
        )
        await target.quiesce(len(keys), budget.left())
        after = {pid: sample(pid) for pid in pids}
        for tracer in tracers:
            tracer.stop(timeout=30, sig=signal.SIGINT)
        summaries = {}
        for profiler in profilers:
            summaries[str(profiler.summary)] = profiler.stop()
        latencies = sorted(
            (receiver.first_seen[k] - sent_at[k]) * 1000
            for k in keys[warm:]
            if k in receiver.first_seen
        )
        processes = usage(before, after, count)
        return {
            "events": count,
            "notified": len(latencies),
            "p50_ms": percentile(latencies, 0.5),
            "p99_ms": percentile(latencies, 0.99),
            "tocsin_cpu_us_per_event": sum(
                row["cpu_us_per_event"]  # type: ignore[index]
                for name, row in processes.items()
                if name.startswith("tocsin")
            ),
            "processes": processes,
            "idle": idle,
            "profiles": list(summaries),
        }
    finally:
        await target.stop()
        await receiver.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--profile", type=Path, help="py-spy each tocsin process into DIR")
    parser.add_argument("--strace", type=Path, help="strace -c each tocsin process into DIR")
    parser.add_argument(
        "--idle", type=float, default=0.0, help="first measure this long with no load"
    )
    parser.add_argument("--json", type=Path, help="write every run's figures here")
    args = parser.parse_args()
    if args.strace is not None:
        args.strace.mkdir(parents=True, exist_ok=True)
    runs = []
    for run in range(1, args.runs + 1):
        result = asyncio.run(
            one_run(args.rate, args.seconds, args.warmup, args.profile, args.strace, args.idle)
        )
        runs.append(result)
        print(
            f"run {run}: p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, "
            f"notified {result['notified']}/{result['events']}, tocsin CPU "
            f"{result['tocsin_cpu_us_per_event']:.0f} µs/event",
            flush=True,
        )
        for name, row in result["processes"].items():
            print(
                f"  {name:28} {row['cpu_us_per_event']:7.0f} µs/event "
                f"(system {row['system_us_per_event']:.0f})  threads "
                f"{row['threads_us_per_event']}  wake-ups/event {row['voluntary_per_event']:.1f}"
                f"  preempted/event {row['involuntary_per_event']:.2f}"
            )
        for name, row in result["idle"].items():
            print(
                f"  idle, as if {args.rate:.0f} events/s: {name:28} "
                f"{row['cpu_us_per_event']:7.0f} µs/event  wake-ups/event "
                f"{row['voluntary_per_event']:.2f}"
            )
    if len(runs) > 1:
        cpu = statistics.median(r["tocsin_cpu_us_per_event"] for r in runs)
        p50 = statistics.median(r["p50_ms"] for r in runs)
        p99 = statistics.median(r["p99_ms"] for r in runs)
        print(
            f"median of {len(runs)}: tocsin CPU {cpu:.0f} µs/event, "
            f"p50 {p50:.2f} ms, p99 {p99:.2f} ms"
        )
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
