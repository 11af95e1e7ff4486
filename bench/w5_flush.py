"""W5's flush, a part at a time: CPU per listed alert from the tick to the POST's bytes.

After W5's groups fall due, tocsin flushes them: on the router's core the clock's tick
decides the ``group.notified`` facts, the fold takes them in, each fact is encoded into
its log row and hash-chained, SQLite commits the rows, and each fact's work item is
encoded; in the delivery child each work item is decoded, its webhook body encoded and
its outcome (``alerts.delivered``, which lists the alerts too) encoded; back on the
router's core the recorder decodes that outcome. This script times each of those parts
on the service's own functions, in one process with nothing else running in it, on a
projection holding W5's storm (``--alerts`` distinct alerts over ``--groups`` values of
``service``, one route grouped by it, ``max_alerts = 1000``), and prints microseconds
per listed alert, the median of ``--runs``. The publish (a socket write; JetStream
stores it in nats-server's process) and the HTTP POST are not in it.

Run: .venv/bin/python bench/w5_flush.py [--alerts 20000] [--groups 50] [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The repository, not bench/ (whose profile.py would shadow the standard library's).
sys.path[0] = str(ROOT)

from tocsin.channels import webhook
from tocsin.core import clock
from tocsin.core import events as ev
from tocsin.core.decide.route import Route, RoutingTable
from tocsin.core.decide.triage import triage
from tocsin.core.fold import fold
from tocsin.core.ingest import Normalized, default_fingerprint
from tocsin.core.matchers import Match
from tocsin.core.outbound import messages_for
from tocsin.core.policy.retry import SendResult, Step
from tocsin.core.state import State
from tocsin.core.subjects import DELIVERED
from tocsin.core.timeintervals import TimeIntervals
from tocsin.core.times import Duration
from tocsin.core.versions import stamped
from tocsin.pipeline import delivery, recorder
from tocsin.store import tables
from tocsin.store.chain import GENESIS
from tocsin.store.eventlog import EventLog

T0 = 1_800_000_000 * 1_000_000
SECOND = 1_000_000


def storm_state(alerts: int, groups: int) -> tuple[State, RoutingTable, int]:
    """The projection after W5's storm (every alert grouped, no group notified yet),
    its routing, and the instant every group is due."""
    routing = RoutingTable.compile(
        [
            Route(
                receivers=["hook"],
                match=Match(),
                group_by=["labels.service"],
                group_wait=Duration(1.0),
                group_interval=Duration(5.0),
                max_alerts=1000,
            )
        ]
    )
    state = State()
    ids = itertools.count(1)
    seq = 0
    for i in range(alerts):
        labels = {"fp": f"bench-w5-{i}", "service": f"s{i % groups}"}
        event = Normalized(
            type="bench",
            severity="warning",
            summary=f"bench alert bench-w5-{i}",
            source="bench",
            status="firing",
            labels=labels,
            fingerprint=default_fingerprint("bench", labels),
            details={},
            timestamp=T0 + i,
            timestamp_replaced=False,
            event_id=None,
        )
        for fact in triage(
            state,
            event,
            subject="alerts.in.bench",
            received_at=T0 + i,
            routing=routing,
            window_seconds=600.0,
            new_id=lambda: f"id{next(ids):026d}",
            trace_id=None,
        ):
            seq += 1
            fold(state, seq, T0 + i, fact)
    return state, routing, T0 + 2 * SECOND


def timed(part: str, times: dict[str, list[float]], run: Callable[[], Any]) -> Any:
    started = time.perf_counter()
    out = run()
    times.setdefault(part, []).append(time.perf_counter() - started)
    return out


async def one_run(alerts: int, groups: int, times: dict[str, list[float]], data: Path) -> int:
    """One flush of every group, each part timed into ``times``; the alerts listed."""
    state, routing, now = storm_state(alerts, groups)
    ids = itertools.count(1)
    facts: list[ev.Event] = timed(
        "tick (decide the facts)",
        times,
        lambda: stamped(
            clock.tick(
                state,
                now,
                new_id=lambda: f"n{next(ids):025d}",
                intervals=TimeIntervals({}),
                routing=routing,
                config_version="v",
            ),
            "v",
        ),
    )
    listed = sum(len(f.alert_ids) for f in facts if isinstance(f, ev.GroupNotified))
    first = state.last_seq + 1

    def folded() -> None:
        for seq, fact in enumerate(facts, first):
            fold(state, seq, now, fact)

    timed("fold", times, folded)
    rows = timed(
        "log rows (encode + hash chain)",
        times,
        lambda: tables.new_rows([tables.Fact(f) for f in facts], now, first - 1, GENESIS),
    )
    log = await EventLog.open(data / f"w5-{len(times.get('fold', []))}.db")
    try:
        started = time.perf_counter()
        written = log.append_rows(tables.new_rows([tables.Fact(f) for f in facts], now, 0, GENESIS))
        await written
        times.setdefault("SQLite commit (its thread)", []).append(time.perf_counter() - started)
    finally:
        await log.close()
    del rows
    outbound = timed(
        "work items (encode)",
        times,
        lambda: [
            m for seq, f in enumerate(facts, first) for m in messages_for(state, seq, f, None)
        ],
    )
    worker: Any = SimpleNamespace(receiver="hook", _channel=SimpleNamespace(kind="webhook"))
    items = timed(
        "delivery: decode the work item",
        times,
        lambda: [delivery._work_decoder.decode(m.payload) for m in outbound],
    )
    timed(
        "delivery: webhook body",
        times,
        lambda: [webhook._encoder.encode(item.body) for item in items],
    )
    sent = SendResult(ok=True, status_code=200)
    step = Step(action="delivered")
    outcomes = timed(
        "delivery: outcome message",
        times,
        lambda: [delivery.ReceiverWorker._outcome(worker, i, 1, sent, step) for i in items],
    )
    timed(
        "recorder: decode the outcome",
        times,
        lambda: [recorder.outcome_event(DELIVERED, o.payload) for o in outcomes],
    )
    return listed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=20_000)
    parser.add_argument("--groups", type=int, default=50)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    times: dict[str, list[float]] = {}
    listed = 0
    with tempfile.TemporaryDirectory() as data:
        for _ in range(args.runs):
            listed = asyncio.run(one_run(args.alerts, args.groups, times, Path(data)))
    print(f"{listed:,} alerts listed in {args.groups} group notifications; "
          f"µs per listed alert, median of {args.runs} runs")  # fmt: skip
    total = {"router": 0.0, "delivery": 0.0}
    for part, seconds in times.items():
        per_alert = statistics.median(seconds) / listed * 1e6
        side = "delivery" if part.startswith("delivery") else "router"
        total[side] += per_alert
        print(f"  {part:<34} {per_alert:6.2f}  ({side})")
    print(f"  {'router core, total':<34} {total['router']:6.2f}")
    print(f"  {'delivery child, total':<34} {total['delivery']:6.2f}")


if __name__ == "__main__":
    main()
