"""W5's first flush, read from a kept run's log: when it fired, its ticks, its outcomes.

``python -m bench --workloads w5 --runs 1 --no-alertmanager --keep`` keeps the service's
data; this reads its log (``tocsin.db``) and prints, for the groups' first
notifications: how many alerts they listed, in how many ticks; *fired late*, the first
tick's ``fired_at - due_at``; *flush*, from the groups' due time to the last
``delivery.succeeded``'s ``at`` of those notifications; *first out*, to the first one;
and each tick's groups and alerts. All instants are the log's own (issue #20).

Run: .venv/bin/python bench/w5_log.py /tmp/tocsin-bench-*/tocsin-grouped-1/data/tocsin.db
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sqlite3
from pathlib import Path

_MS = 1_000


def first_flush(db: Path) -> list[str]:
    """The lines this script prints for one log."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute(
            "SELECT kind, data FROM events WHERE kind IN ('group.notified', 'delivery.succeeded')"
            " ORDER BY seq"
        ).fetchall()
    ticks: dict[int, list[int]] = {}  # fired_at: [groups, alerts listed]
    firsts: set[str] = set()  # the groups' first notifications' ids
    told: set[str] = set()
    due = None
    outcomes: list[int] = []
    for kind, data in rows:
        fact = json.loads(data)
        if kind == "group.notified" and fact["group_key"] not in told:
            told.add(fact["group_key"])
            firsts.add(fact["notification_id"])
            tick = ticks.setdefault(fact["fired_at"], [0, 0])
            tick[0] += 1
            tick[1] += len(fact["alert_ids"])
            due = fact["due_at"] if due is None else min(due, fact["due_at"])
        elif kind == "delivery.succeeded" and fact["notification_id"] in firsts:
            outcomes.append(fact["at"])
    if due is None or not outcomes:
        return [f"{db}: no group notified"]
    fired = sorted(ticks)
    lines = [
        f"{db}: listed {sum(t[1] for t in ticks.values())} in {len(ticks)} ticks;"
        f" fired late {(fired[0] - due) / _MS:.0f} ms; flush {(max(outcomes) - due) / _MS:.0f}"
        f" ms; first out +{(min(outcomes) - due) / _MS:.0f}"
    ]
    for at in fired:
        groups, alerts = ticks[at]
        lines.append(f"   tick +{(at - due) / _MS:6.1f} ms: {groups:2d} groups {alerts:5d} alerts")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logs", nargs="+", type=Path)
    for db in parser.parse_args().logs:
        print("\n".join(first_flush(db)))


if __name__ == "__main__":
    main()
