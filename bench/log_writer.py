"""The log writer's cost per row, and what it is made of (issue #20).

Replays the rows of a real log (one kept by ``python -m bench --keep``: W1 + W2's
``tocsin-storms-1/data/tocsin.db``, W5's ``tocsin-grouped-1/data/tocsin.db``) into fresh
files the way the log's thread writes them: the same connection set-up
(``eventlog._Writer.connect``), the same batches (a commit's rows share their append
time), the same statements (``tables.NewRows.inserts``) run by the same ``_insert``.
Each variant changes one thing (an index dropped, the fsync, the WAL's checkpoint, the
page size, the page cache) and is timed in the replaying thread's CPU (``thread_time``:
what the log's thread costs the router) and wall, per row and per event of each segment:
W1 (the first ``--w1-events`` alerts received: received, opened, routed, the delivery
outcome), W2 (the rest: a duplicate's received + suppressed), or the whole of a W5 log.

The variants run in turn ``--runs`` times (default 3) on the same machine, so the load
of others falls on all of them alike; the median and range are printed.

Run: PYTHONPATH=service .venv/bin/python bench/log_writer.py --log STORMS.db
     [--log GROUPED.db] [--runs 3] [--variants writer,no-fsync,...]
(another tree's ``service`` on PYTHONPATH times that tree's writer: an A/B).
"""

from __future__ import annotations

import argparse
import itertools
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tocsin.store import eventlog, tables
from tocsin.store.chain import GENESIS

INDEXES = (
    "events_in_seq",
    "events_out_seq",
    "events_ts",
    "events_alert_id",
    "events_notification_id",
    "events_alert_seen",
)

Setup = Callable[[sqlite3.Connection], None]


def _pragmas(*statements: str) -> Setup:
    def run(conn: sqlite3.Connection) -> None:
        for statement in statements:
            conn.execute(statement)

    return run


def _drop(*indexes: str) -> Setup:
    return _pragmas(*(f"DROP INDEX {index}" for index in indexes))


@dataclass(frozen=True)
class Variant:
    before: Setup | None = None  # on the empty file, before WAL and the schema
    after: Setup | None = None  # once the writer's connection is set up


VARIANTS: dict[str, Variant] = {
    "writer": Variant(),
    **{f"-{index}": Variant(after=_drop(index)) for index in INDEXES},
    "no-index": Variant(after=_drop(*INDEXES)),
    "no-fsync": Variant(after=_pragmas("PRAGMA synchronous=NORMAL")),
    "no-checkpoint": Variant(after=_pragmas("PRAGMA wal_autocheckpoint=0")),
    "page-4k": Variant(before=_pragmas("PRAGMA page_size=4096")),
    "page-8k": Variant(before=_pragmas("PRAGMA page_size=8192")),
    "page-16k": Variant(before=_pragmas("PRAGMA page_size=16384")),
    "page-32k": Variant(before=_pragmas("PRAGMA page_size=32768")),
    "page-64k": Variant(before=_pragmas("PRAGMA page_size=65536")),
    "page-16k-checkpoint-4m": Variant(
        before=_pragmas("PRAGMA page_size=16384"), after=_pragmas("PRAGMA wal_autocheckpoint=256")
    ),
    "temp-file": Variant(after=_pragmas("PRAGMA temp_store=DEFAULT")),
    "cache-16m": Variant(after=_pragmas("PRAGMA cache_size=-16384")),
    "cache-64m": Variant(after=_pragmas("PRAGMA cache_size=-65536")),
    "mmap-256m": Variant(after=_pragmas("PRAGMA mmap_size=268435456")),
    "checkpoint-16k-pages": Variant(after=_pragmas("PRAGMA wal_autocheckpoint=16000")),
    "page-16k-no-checkpoint": Variant(
        before=_pragmas("PRAGMA page_size=16384"), after=_pragmas("PRAGMA wal_autocheckpoint=0")
    ),
}


@dataclass
class Batch:
    rows: list[tables.EventRow]
    segment: str
    events: int  # alert.received rows: the workload's events


def batches_of(path: Path, w1_events: int) -> list[Batch]:
    """The log's commits, in order: consecutive rows of one append time."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    cursor = conn.execute(f"SELECT {tables.INSERT_COLUMNS} FROM events ORDER BY seq")
    grouped = conn.execute("SELECT count(*) FROM events WHERE kind = 'group.notified'")
    w5 = grouped.fetchone()[0] > 0
    out: list[Batch] = []
    received = 0
    for _, rows in itertools.groupby(cursor, key=lambda row: row[1]):
        listed = [tuple(row) for row in rows]
        events = sum(1 for row in listed if row[2] == "alert.received")
        segment = "w5" if w5 else ("w1" if received + events <= w1_events else "w2")
        received += events
        out.append(Batch(listed, segment, events))
    conn.close()
    return out


def replay(batches: list[Batch], variant: Variant, tmp: Path) -> dict[str, tuple[float, float]]:
    """(CPU s, wall s) by segment, the batches of one log written into a fresh file as
    the log's thread writes them."""
    path = tmp / f"replay-{time.monotonic_ns()}.db"
    if variant.before is not None:
        conn = sqlite3.connect(path, isolation_level=None)
        variant.before(conn)
        conn.execute("VACUUM")  # the page size is the file's from its first page
        conn.close()
    writer = eventlog._Writer(path, 5000)
    writer.connect()
    conn = writer.conn
    if variant.after is not None:
        variant.after(conn)
    spent: dict[str, tuple[float, float]] = {}
    seq, digest = 0, GENESIS
    for batch in batches:
        last = batch.rows[-1]
        new = tables.NewRows(batch.rows, last[0], last[8], 0, 0, seq, digest)
        cpu, wall = time.thread_time(), time.perf_counter()
        statements = new.inserts()  # on the log's thread too (``_Writer.write``)
        eventlog._insert(conn, statements)
        cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
        was = spent.get(batch.segment, (0.0, 0.0))
        spent[batch.segment] = (was[0] + cpu, was[1] + wall)
        seq, digest = new.last_seq, new.last_hash
    cpu, wall = time.thread_time(), time.perf_counter()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # what a run leaves to checkpoint
    cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    spent[batches[-1].segment + "-end"] = (cpu, wall)
    writer.close()
    writer.stop()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return spent


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):6.1f} ({min(values):.1f}-{max(values):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--log", type=Path, action="append", required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--w1-events", type=int, default=20_000)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--tmp", type=Path, default=None, help="where the files go")
    args = parser.parse_args()
    names = args.variants.split(",")
    logs = [batches_of(path, args.w1_events) for path in args.log]
    batches = [batch for log in logs for batch in log]
    totals: dict[str, tuple[int, int]] = {}
    for batch in batches:
        rows, events = totals.get(batch.segment, (0, 0))
        totals[batch.segment] = (rows + len(batch.rows), events + batch.events)
    for log in logs:  # the checkpoint at the end, per event of the whole log
        totals[log[-1].segment + "-end"] = (0, sum(batch.events for batch in log))
    for segment, (rows, events) in totals.items():
        if segment.endswith("-end"):
            continue
        commits = sum(1 for batch in batches if batch.segment == segment)
        print(f"{segment}: {events} events, {rows} rows in {commits} commits")
    found: dict[str, dict[str, list[tuple[float, float]]]] = {n: {} for n in names}
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp_name:
        for _ in range(args.runs):
            for name in names:
                for log in logs:
                    for segment, spent in replay(log, VARIANTS[name], Path(tmp_name)).items():
                        found[name].setdefault(segment, []).append(spent)
    print(
        "µs an event (an alert received), median (range): CPU of the writing thread | wall;"
        " -end: a TRUNCATE checkpoint after the last commit, per event of the whole log"
    )
    for name in names:
        cells = []
        for segment, (_, events) in totals.items():
            runs = found[name][segment]
            cpu = [spent[0] * 1e6 / events for spent in runs]
            wall = [spent[1] * 1e6 / events for spent in runs]
            cells.append(f"{segment} {spread(cpu)} | {spread(wall)}")
        print(f"{name:22} " + "  ".join(cells))


if __name__ == "__main__":
    main()
