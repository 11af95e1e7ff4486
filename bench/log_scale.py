"""A log of a million events: how fast tocsin folds it, starts on it, and answers.

Generates the log with the real pipeline code (triage -> facts -> EventLog.append, in
group commits), then measures: the fold rate (decode + fold, events/s), start time
without and with a snapshot, and `tocsin replay`, `state`, `verify` and `simulate` (under
a config that sends the critical alerts to another receiver) on it.

Run: .venv/bin/python bench/log_scale.py [--events 1000000] [--keep DIR] [--replay-only]
Writes bench/results/log_scale.json (or --out FILE). ``--replay-only`` stops after the
fold and start figures (W4 of ``make bench``, which has a time budget).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import mmap
import os
import platform
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOCSIN = str(Path(sys.executable).parent / "tocsin")

from tocsin.core import events as ev
from tocsin.core.decide.route import (
    Route,
    RoutingTable,
)
from tocsin.core.decide.triage import triage
from tocsin.core.ingest import Normalized, default_fingerprint
from tocsin.core.matchers import Match
from tocsin.core.times import format_us
from tocsin.store.eventlog import db_path
from tocsin.store.ledger import Input, Ledger, load_state, load_state_fast

T0 = 1_790_000_000 * 1_000_000

SIMULATE_CONFIG = """
[[route]]
match = { severity = "critical" }
receivers = ["pager", "hook"]
continue = false

[[route]]
match = {}
receivers = ["hook"]

[receivers.hook]
channel = "webhook"
url = "http://127.0.0.1:9/hook"

[receivers.pager]
channel = "webhook"
url = "http://127.0.0.1:9/pager"
"""
"""``tocsin simulate``'s new config: the generated log's critical alerts went to hook
and mail; here to pager and hook (every critical alert changed, the rest the same)."""


async def generate(data: Path, target: int) -> int:
    """Append about ``target`` facts: alerts over 150,000 fingerprints, each firing in
    several buckets with duplicates, some resolved and reopened; and, as a running
    service's log has them, the outcome of every notification (``delivery.succeeded``,
    recorded in the batch after the one that routed it, as the recorder does)."""
    ledger = await Ledger.open(db_path(data), snapshot_every=0)
    routing = RoutingTable.compile(
        [
            Route(receivers=["hook", "mail"], match=Match(severity="critical")),
            Route(receivers=["hook"], match=Match()),
        ]
    )
    ids = itertools.count()
    i = 0
    outcome = 0
    routed: list[ev.AlertRouted] = []
    started = time.perf_counter()
    while ledger.event_log.last_seq < target:
        async with ledger.batch() as batch:
            for sent in routed:
                outcome += 1
                done = ev.DeliverySucceeded(
                    notification_id=sent.notification_id,
                    receiver=sent.receiver,
                    alert_id=sent.alert_id,
                    fingerprint=sent.fingerprint,
                    channel="webhook",
                    attempts=1,
                    at=T0 + i * 20_000,
                    status_code=200,
                )
                batch.add_caused([done], Input.OUTCOMES, outcome)
            routed = []
            for _ in range(2000):
                labels = {"host": f"h{i % 50_000}", "dc": f"dc{i % 3}"}
                status = "resolved" if i % 29 == 0 else "firing"
                event = Normalized(
                    type="disk_full",
                    severity="critical" if i % 11 == 0 else "warning",
                    summary=f"disk nearly full on host {i % 50_000}",
                    source="bench",
                    status=status,
                    labels=labels,  # type: ignore[arg-type]
                    fingerprint=default_fingerprint("disk_full", labels),
                    details={"used": i % 100},
                    timestamp=T0 + i * 20_000,
                    timestamp_replaced=False,
                    event_id=None,
                )
                facts = triage(
                    ledger.state,
                    event,
                    subject="alerts.in.bench",
                    received_at=event.timestamp,
                    routing=routing,
                    window_seconds=600,
                    new_id=lambda: f"{next(ids):x}",
                    trace_id=None,
                )
                batch.add_caused(facts, Input.INBOUND, i + 1)
                routed += [f for f in facts if isinstance(f, ev.AlertRouted)]
                i += 1
        if i % 100_000 < 2000:
            print(
                f"  {ledger.event_log.last_seq:,} events ({i:,} inbound) after "
                f"{time.perf_counter() - started:.0f}s",
                file=sys.stderr,
            )
    count = ledger.event_log.last_seq
    await ledger.close()
    return count


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, help="keep the generated data dir here")
    parser.add_argument(
        "--replay-only",
        action="store_true",
        help="only the fold rate and start times (no replay/state/verify/compact timings)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "log_scale.json")
    args = parser.parse_args()
    command = " ".join(["python bench/log_scale.py", *sys.argv[1:]])
    tmp = Path(tempfile.mkdtemp())
    data = tmp / "data"
    result: dict[str, object] = {
        "command": command,
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
    }
    try:
        print(f"generating about {args.events:,} events...", file=sys.stderr)
        started = time.perf_counter()
        events = await generate(data, args.events)
        result["events"] = events
        result["generate_seconds"] = round(time.perf_counter() - started, 1)
        path = db_path(data)

        started = time.perf_counter()
        state = load_state(path)
        full = time.perf_counter() - started
        result["fold_events_per_second"] = round(events / full)
        result["start_without_snapshot_seconds"] = round(full, 2)
        result["alerts"] = len(state.alerts)

        ledger = await Ledger.open(path, snapshot_every=1)  # full fold, then snapshot now
        async with ledger.batch():
            pass
        await ledger.snapshot()
        await ledger.close()
        before = resource.getrusage(resource.RUSAGE_SELF)
        started, cpu = time.perf_counter(), time.process_time()
        restored, snapshot_seq = load_state_fast(path)
        result["start_with_snapshot_seconds"] = round(time.perf_counter() - started, 2)
        # the process's CPU over the same span: steadier than the wall on a shared machine
        result["start_with_snapshot_cpu_seconds"] = round(time.process_time() - cpu, 2)
        # and its system part, with the first touches of a page it took: the kernel
        # zeroing the projection's new pages, whose cost per page varies several-fold
        # on this VM from one minute to the next (docs/performance.md, W4 round two)
        after = resource.getrusage(resource.RUSAGE_SELF)
        result["start_with_snapshot_system_seconds"] = round(after.ru_stime - before.ru_stime, 2)
        faults = after.ru_minflt - before.ru_minflt
        result["start_with_snapshot_page_faults"] = faults
        # the kernel's part alone: as many fresh pages first touched by nothing but a write
        result["start_pages_touched_alone_seconds"] = round(first_touch(faults), 2)
        assert snapshot_seq == events
        assert restored == state
        # and as `tocsin serve` starts: a process of its own, which holds nothing else
        seconds, faults = start_in_a_process_of_its_own(path)
        result["start_in_a_process_of_its_own_seconds"] = round(seconds, 2)
        result["start_in_a_process_of_its_own_page_faults"] = faults
        if args.replay_only:
            finish(result, args.out, command, events)
            return

        base = ["--data-dir", str(data)]
        result["cli_replay_json_seconds"] = round(timed([TOCSIN, "replay", *base, "--json"]), 1)
        result["cli_replay_one_alert_seconds"] = round(
            timed(
                [
                    TOCSIN,
                    "replay",
                    *base,
                    "--fingerprint",
                    next(iter(state.alerts.values())).fingerprint,
                ]
            ),
            2,
        )
        result["cli_state_at_seconds"] = round(
            timed([TOCSIN, "state", *base, "--at", "2026-09-20T00:00:00Z", "--json"]), 1
        )
        result["cli_verify_seconds"] = round(timed([TOCSIN, "verify", *base]), 1)
        new = tmp / "new.toml"
        new.write_text(SIMULATE_CONFIG)
        simulated = timed([TOCSIN, "simulate", *base, "--config", str(new), "--json"])
        result["cli_simulate_seconds"] = round(simulated, 1)
        result["cli_simulate_events_per_second"] = round(events / simulated)
        result["log_bytes"] = path.stat().st_size
        # compact the older half, then check that the archive, the log and the state agree
        with sqlite3.connect(path) as conn:
            middle = conn.execute("SELECT ts FROM events WHERE seq = ?", (events // 2,)).fetchone()[
                0
            ]
        archive = tmp / "archive.jsonl.gz"
        result["cli_compact_half_seconds"] = round(
            timed(
                [TOCSIN, "compact", *base, "--before", format_us(middle), "--archive", str(archive)]
            ),
            1,
        )
        result["archive_bytes"] = archive.stat().st_size
        result["cli_verify_with_archive_seconds"] = round(
            timed([TOCSIN, "verify", *base, "--archive", str(archive)]), 1
        )
        after = load_state(path)
        after.last_seq, after.last_ts = state.last_seq, state.last_ts
        assert after == state, "compaction changed the state"
    finally:
        if args.keep:
            shutil.copytree(data, args.keep, dirs_exist_ok=True)
        shutil.rmtree(tmp)
    finish(result, args.out, command, events)


_START_ALONE = """
import json, resource, sys, time
from pathlib import Path
from tocsin.store.ledger import load_state_fast
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
started = time.perf_counter()
state, seq = load_state_fast(Path(sys.argv[1]))
seconds = time.perf_counter() - started
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
assert seq is not None, "no snapshot used"
print(json.dumps({"seconds": seconds, "faults": faults}))
"""


def start_in_a_process_of_its_own(path: Path) -> tuple[float, int]:
    """``(seconds, page faults)`` of ``load_state_fast(path)`` timed in a new Python
    process, from the call to the returned projection, as a start of ``tocsin serve``
    loads its log: beside W4's figure, which is timed in the bench's process while it
    holds the projection it folded (more memory the machine must find fresh pages
    for). Raises ``RuntimeError`` if that process fails or uses no snapshot."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "service")}
    done = subprocess.run(
        [sys.executable, "-c", _START_ALONE, str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the start in a process of its own failed: {done.stderr[-2000:]}")
    measured = json.loads(done.stdout.splitlines()[-1])
    return float(measured["seconds"]), int(measured["faults"])


def first_touch(pages: int) -> float:
    """Seconds to first touch ``pages`` fresh pages of anonymous memory, one byte
    written to each: the kernel's part of a start (a page found, zeroed and mapped at
    its first write), timed alone next to the start that touched as many. Its cost per
    page varies several-fold on a virtual machine from one minute to the next (the
    host backing the guest's page again), so the start's own part is the difference."""
    size = max(pages, 1) * mmap.PAGESIZE
    region = mmap.mmap(-1, size)
    if hasattr(mmap, "MADV_NOHUGEPAGE"):  # a page a fault, as the projection's objects take
        region.madvise(mmap.MADV_NOHUGEPAGE)
    try:
        started = time.perf_counter()
        for at in range(0, size, mmap.PAGESIZE):
            region[at] = 1
        return time.perf_counter() - started
    finally:
        region.close()


def finish(result: dict[str, object], out: Path, command: str, events: int) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(
        f"\nfold: {result['fold_events_per_second']:,} events/s; start on {events:,} events: "
        f"{result['start_without_snapshot_seconds']}s without a snapshot, "
        f"{result['start_with_snapshot_seconds']}s with one\ncommand: {command}"
    )


if __name__ == "__main__":
    asyncio.run(main())
