"""W1 over time: how many alerts the router had routed, the webhook had received and the
log had recorded as delivered, at each instant after the storm's first publish.

W1's figure is the time until the last notification arrived, and three parts of tocsin
could set it: the router (``alert.routed`` rows, by the time their batch was decided),
the delivery workers (each notification's first receipt at the bench's webhook) and the
recorder (``delivery.succeeded`` rows). This shows which one ends the storm, and how far
behind the one before it each runs (issue #20). On 2026-12-06 (20,000 alerts, a 2-core
machine) the router had routed every alert 1.90 s after the first publish, when the
webhook had 13,336 of them; the last arrived at 2.62 s: delivery, not routing, ends W1.

It runs ``tocsin serve`` as ``python -m bench`` does (``bench.targets.TocsinTarget``, a
fresh ``nats-server`` and data dir), sends ``--events`` distinct alerts as W1 does, waits
for every notification and its recorded outcome, then reads the service's log. All
instants are this host's wall clock, in seconds after the first publish.

Run: .venv/bin/python bench/w1_timeline.py [--events 20000] [--step 0.25]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import math
import sqlite3
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.receiver import Receiver
from bench.targets import TocsinTarget
from bench.workloads import wait_for, wall_offset

_US = 1_000_000


@dataclass(frozen=True)
class Timeline:
    """When each alert was routed, notified and recorded (sorted seconds after the
    first publish)."""

    routed: list[float]
    notified: list[float]
    recorded: list[float]


def counts_at(times: Sequence[float], instants: Sequence[float]) -> list[int]:
    """How many of the sorted ``times`` fall at or before each instant."""
    return [bisect.bisect_right(times, at) for at in instants]


def lines(timeline: Timeline, step: float) -> list[str]:
    """The table this script prints: the three counts every ``step`` seconds until all
    three are complete, then when each part had its last."""
    parts = {
        "routed": timeline.routed,
        "notified": timeline.notified,
        "recorded": timeline.recorded,
    }
    end = max((times[-1] for times in parts.values() if times), default=0.0)
    steps = max(1, math.ceil(round(end / step, 9)))  # the first step at or after the end
    instants = [step * n for n in range(1, steps + 1)]
    columns = {name: counts_at(times, instants) for name, times in parts.items()}
    out = ["     s     routed   notified   recorded"]
    for row, at in enumerate(instants):
        counts = "".join(f"{columns[name][row]:>11,}" for name in parts)
        out.append(f"{at:6.2f}{counts}")
    for name, times in parts.items():
        if times:
            out.append(f"last {name}: {times[-1]:.3f} s ({len(times):,})")
    if timeline.routed and timeline.notified:
        behind = bisect.bisect_right(timeline.notified, timeline.routed[-1])
        out.append(
            f"when the last alert was routed, {behind:,} of {len(timeline.notified):,}"
            f" had been notified"
        )
    return out


def _log_times(db: Path, kind: str, first: float) -> list[float]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT ts FROM events WHERE kind = ? ORDER BY seq", (kind,))
        return sorted(ts / _US - first for (ts,) in rows)


async def run(events: int, timeout: float, workdir: Path) -> Timeline:
    """One W1 storm of ``events`` distinct alerts against a fresh ``tocsin serve``."""
    target = TocsinTarget(workdir)
    receiver = Receiver(target.keys_of)
    await receiver.start()
    try:
        await target.start(receiver.url)
        try:
            receiver.reset("w1-")
            keys = [f"w1-{i}" for i in range(events)]
            wall = wall_offset()
            storm = await target.storm(keys, timeout)
            if storm.error:
                raise RuntimeError(storm.error)

            def notified_so_far() -> str:
                return f"{receiver.unique:,}/{events:,} notified"

            if not await wait_for(
                "W1", lambda: receiver.unique >= events, target, timeout, notified_so_far
            ):
                raise RuntimeError(notified_so_far())
            if await target.quiesce(events, timeout) is None:
                raise RuntimeError("not every outcome recorded")
            first = storm.first_sent + wall
            notified = sorted(at + wall - first for at in receiver.first_seen.values())
        finally:
            await target.stop()
    finally:
        await receiver.stop()
    db = target.watch.db
    return Timeline(
        routed=_log_times(db, "alert.routed", first),
        notified=notified,
        recorded=_log_times(db, "delivery.succeeded", first),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--step", type=float, default=0.25, help="seconds between rows")
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tocsin-w1-timeline-") as workdir:
        timeline = asyncio.run(run(args.events, args.timeout, Path(workdir)))
    print("\n".join(lines(timeline, args.step)))
    print(f"command: .venv/bin/python bench/w1_timeline.py --events {args.events}")


if __name__ == "__main__":
    main()
