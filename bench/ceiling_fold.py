"""The ceiling of W4's fold on this machine: reading, decoding and folding, apart.

A rebuild reads every row of the log (SQLite), decodes its event (msgspec, into the
tagged union of ``events.py``) and folds it into the projection. On a log generated
like W4's (``bench/log_scale.py``'s generator), each layer is timed on its own, CPU
time, with the garbage collector paused as a rebuild pauses it:

  a. iterate ``SELECT seq, ts, data`` over the whole log, nothing else;
  b. a + decode every event;
  c. a + b + fold: ``projections.fold_stored``, what a start runs.

a + b is what any fold of this log costs before the projection sees an event; c - (a +
b) is the projection's own work.

Run: .venv/bin/python bench/ceiling_fold.py [--events 300000]
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.log_scale import generate
from tocsin.core import events as ev
from tocsin.core.fold import fold_stored
from tocsin.core.state import State
from tocsin.store.eventlog import db_path
from tocsin.store.ledger import _gc_paused

QUERY = "SELECT seq, ts, data FROM events ORDER BY seq"


def cpu_seconds(path: Path, work: Callable[[sqlite3.Cursor], None]) -> float:
    """The best of three runs, each on a fresh connection (the file is in the page cache
    after the first)."""
    best = float("inf")
    for _ in range(3):
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        with _gc_paused():
            started = time.process_time()
            work(conn.execute(QUERY))
            best = min(best, time.process_time() - started)
        conn.close()
    return best


def read_only(rows: sqlite3.Cursor) -> None:
    for _ in rows:
        pass


def read_and_decode(rows: sqlite3.Cursor) -> None:
    decode = ev.decoder.decode
    for _seq, _ts, data in rows:
        decode(data)


def read_decode_fold(rows: sqlite3.Cursor) -> None:
    fold_stored(State(), rows)


async def main(target: int) -> None:
    command = shlex.join([".venv/bin/python", "bench/ceiling_fold.py", *sys.argv[1:]])
    print(f"fold ceiling: {command}")
    with tempfile.TemporaryDirectory() as name:
        data = Path(name) / "data"
        print(f"generating about {target:,} events...", flush=True)
        events = await generate(data, target)
        path = db_path(data)
        layers = (
            ("a. read the rows (sqlite3)", read_only),
            ("b. a + decode each event (msgspec)", read_and_decode),
            ("c. a + b + fold (projections.fold_stored)", read_decode_fold),
        )
        spent = {}
        for label, work in layers:
            spent[label] = seconds = cpu_seconds(path, work)
            print(
                f"  {label:<44} {events / seconds:>9,.0f} events/s "
                f"{seconds * 1e6 / events:6.2f} us each",
                flush=True,
            )
        read, decoded, folded = spent.values()
        per_event = [seconds * 1e6 / events for seconds in (read, decoded - read, folded - decoded)]
        print("  per event: read {:.2f} us, decode {:.2f} us, fold {:.2f} us".format(*per_event))
    print(f"{events:,} events; command: {command}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=300_000, help="log size to generate")
    asyncio.run(main(parser.parse_args().events))
