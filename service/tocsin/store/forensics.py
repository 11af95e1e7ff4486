"""Questions to the log, read straight from the SQLite file (read-only, safe while the
service runs): ``replay`` (history, oldest first), ``state`` (the projection as of a
time; of a partitioned data dir, the partitions' merged) and ``verify`` (hash chain
intact, every indexed column what its event says, projection rebuildable)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec

from tocsin.core import events as ev
from tocsin.core.anchor import Head, disagreement
from tocsin.core.fold import fold
from tocsin.core.merged import merge
from tocsin.core.state import State
from tocsin.core.times import format_us
from tocsin.core.views import (
    AlertView,
    EventRecord,
    GroupView,
    alert_view,
    group_list,
    record,
)
from tocsin.store import tables
from tocsin.store.chain import GENESIS, ChainBreak, walk_carrying
from tocsin.store.ledger import base_state, fold_rows
from tocsin.store.snapshots import StaleSnapshot, compacted, decode_state, read_base, read_snapshots


class StateReport(msgspec.Struct, kw_only=True):
    as_of_seq: int
    as_of: str | None
    alerts: list[AlertView]
    groups: list[GroupView] = []  # open notification groups (additive)


class LogMissing(FileNotFoundError):
    pass


def connect(path: Path) -> sqlite3.Connection:
    if not path.exists():
        raise LogMissing(f"no event log at {path} (is --data-dir right?)")
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def replay(
    path: Path,
    *,
    since: int | None = None,
    until: int | None = None,
    fingerprint: str | None = None,
    alert_id: str | None = None,
    type_: str | None = None,
    archives: Sequence[Path] = (),
) -> Iterator[EventRecord]:
    """Matching rows, oldest first, archives (oldest first) before the log. ``type_``
    selects every event of the fingerprints that ever received an event of that type."""
    query, params = tables.replay(
        since=since, until=until, fingerprint=fingerprint, alert_id=alert_id, type_=type_
    )
    for archive in archives:
        yield from _replay_archive(archive, since, until, fingerprint, alert_id, type_)
    conn = connect(path)
    try:
        cursor = conn.execute(query, params)
        while batch := cursor.fetchmany(2000):
            for seq, ts, kind, data in batch:
                yield record(seq, ts, kind, data)
    finally:
        conn.close()


def _replay_archive(
    archive: Path,
    since: int | None,
    until: int | None,
    fingerprint: str | None,
    alert_id: str | None,
    type_: str | None,
) -> Iterator[EventRecord]:
    from tocsin.store.compaction import read_archive

    _, rows = read_archive(archive)
    typed: set[str] = set()
    for row in rows:
        entry = record(row.seq, row.ts, row.kind, row.data.encode())
        data = entry.data
        if row.kind == "alert.received" and type_ is not None and data.get("type") == type_:
            typed.add(data["fingerprint"])
        if (since is not None and row.ts < since) or (until is not None and row.ts > until):
            continue
        if fingerprint is not None and data.get("fingerprint") != fingerprint:
            continue
        if alert_id is not None and data.get("alert_id") != alert_id:
            continue
        if type_ is not None and data.get("fingerprint") not in typed:
            continue
        yield entry


_LINE_KEYS = {
    "alert.received": ("severity", "type", "summary"),
    "alert.routed": ("receiver", "reason", "notification_id"),
    "alert.suppressed": ("cause", "dedup_key"),
    "alert.escalated": ("from_severity", "severity"),
    "alert.rejected": ("subject", "reason"),
    "delivery.attempt_failed": ("receiver", "attempt", "error"),
    "delivery.succeeded": ("receiver", "attempts", "notification_id"),
    "delivery.dead_lettered": ("receiver", "attempts", "error"),
}


def line(entry: EventRecord) -> str:
    """One human line: seq, time, kind, the alert, and the fields that matter for it."""
    data = entry.data
    who = data.get("alert_id") or data.get("fingerprint") or ""
    keys = _LINE_KEYS.get(entry.kind, ())
    detail = " ".join(f"{k}={data[k]}" for k in keys if data.get(k) not in (None, ""))
    return f"{entry.seq:>8}  {entry.ts}  {entry.kind:<24} {who:<22} {detail}".rstrip()


def state_at(path: Path, at: int | None = None) -> tuple[State, int | None]:
    """The projection folded from every row appended at or before ``at``, and the append
    time of the last of them. A report of the file: it keeps every alert the rows hold,
    including those the running service has let go of (``core.retention``)."""
    connect(path).close()  # LogMissing when there is no log
    base = read_base(path)
    if base is not None and at is not None and at < base.ts:
        raise LogMissing(
            f"events up to seq {base.seq} were compacted into an archive; "
            "the state before that moment is not in the log any more"
        )
    state, after = base_state(path)
    state.keep_everything = True
    return state, fold_rows(state, path, after_seq=after, until_ts=at)


def merged_state_at(
    partitions: Sequence[tuple[int, Path]], at: int | None = None
) -> tuple[State, int | None]:
    """``state_at`` of each partition's log (``(k, path)``), merged into the one view
    (``core.merged``: its ``last_seq`` is the sum of theirs), and the append time of the
    last row any of them folded."""
    states, times = [], []
    for _, path in partitions:
        state, last_ts = state_at(path, at)
        states.append(state)
        if last_ts is not None:
            times.append(last_ts)
    return merge(states, [k for k, _ in partitions]), max(times, default=None)


def state_report(state: State, last_ts: int | None) -> StateReport:
    alerts = sorted(state.alerts.values(), key=lambda a: (a.last_seen, a.id), reverse=True)
    return StateReport(
        as_of_seq=state.last_seq,
        as_of=None if last_ts is None else format_us(last_ts),
        alerts=[alert_view(a) for a in alerts],
        groups=group_list(state).groups,
    )


@dataclass
class Verdict:
    ok: bool
    events: int
    first_seq: int | None
    last_seq: int | None
    problem: str | None = None
    bad_seq: int | None = None
    alerts: int = 0
    open_alerts: int = 0
    seconds: float = 0.0
    snapshots: int = 0


def verify(path: Path) -> Verdict:
    """Walk the whole log: every seq present, every hash chained, every event readable,
    its ``kind``, ``fingerprint`` and ``alert_id`` columns the event's (the hash covers
    the event, not the columns the lookups use), and the projection rebuilt from
    nothing. The ``in_seq`` / ``out_seq`` columns are stream positions the event does
    not carry: nothing here can check them."""
    started = time.perf_counter()
    conn = connect(path)
    state = State()
    previous = GENESIS
    expected: int | None = None
    base = read_base(path)
    if base is not None:  # a compacted log: the chain goes on from the base's anchor
        state = decode_state(base.state)
        previous, expected = base.anchor, base.seq + 1
    elif compacted(path):
        conn.close()
        return _bad(0, None, 0, "the log was compacted but its base snapshot is missing or altered")
    count = 0
    first: int | None = None
    try:
        for row, stored in walk_carrying(tables.verified_rows(conn), previous, expected):
            seq, ts, kind, data, _ = row
            first = seq if first is None else first
            try:
                event = ev.decode(data)
            except msgspec.DecodeError as error:
                return _bad(count, first, seq, f"unreadable event: {error}")
            wrong = _wrong_column((kind, *stored), tables.derived_columns(event))
            if wrong is not None:
                return _bad(count, first, seq, wrong)
            fold(state, seq, ts, event)
            count += 1
    except ChainBreak as broken:
        if broken.expected is not None:
            problem = f"rows {broken.expected}..{broken.seq - 1} are missing"
        else:
            problem = "hash does not chain: the row was changed or a row before it was removed"
        return _bad(count, broken.seq if first is None else first, broken.seq, problem)
    finally:
        conn.close()
    snapshots = 0
    for snapshot in read_snapshots(path):
        try:
            restored = decode_state(snapshot.state)
        except StaleSnapshot:
            continue  # a cache another version wrote; starts skip it too, nothing is wrong
        except msgspec.DecodeError as error:
            return _bad(count, first, snapshot.seq, f"snapshot unreadable: {error}")
        fold_rows(restored, path, after_seq=snapshot.seq)
        if restored != state:
            return _bad(
                count, first, snapshot.seq, "snapshot + the log after it differs from the full fold"
            )
        snapshots += 1
    return Verdict(
        ok=True,
        snapshots=snapshots,
        events=count,
        first_seq=first,
        last_seq=state.last_seq or None,
        alerts=len(state.alerts),
        open_alerts=len(state.open_by_fingerprint),
        seconds=time.perf_counter() - started,
    )


def check_anchor(path: Path, head: Head) -> str | None:
    """What is wrong with the log against an anchored ``head`` (``core.anchor``), or
    None when the log holds that row with that hash. Run after ``verify``: the chain
    up to that row is then the anchored history. A head that compaction's base
    snapshot now stands for is compared with the base's anchor."""
    conn = connect(path)
    try:
        row = conn.execute(tables.HASH_AT, (head.seq,)).fetchone()
        last = conn.execute(tables.LAST_ROW).fetchone()
    finally:
        conn.close()
    found = bytes(row[0]) if row is not None else None
    if found is None:
        base = read_base(path)
        if base is not None and base.seq == head.seq:
            found = base.anchor
    return disagreement(head, found, int(last[0]) if last is not None else 0)


def _wrong_column(stored: tables.DerivedColumns, derived: tables.DerivedColumns) -> str | None:
    """What is wrong with a row whose columns are ``stored`` and whose event says
    ``derived``: the first column that differs, named, or None."""
    for name, have, want in zip(tables.DERIVED_COLUMNS, stored, derived, strict=True):
        if have != want:
            return f"{name} column {have!r} != the event's {want!r}"
    return None


def _bad(count: int, first: int | None, seq: int, problem: str) -> Verdict:
    return Verdict(
        ok=False, events=count, first_seq=first, last_seq=None, problem=problem, bad_seq=seq
    )


def simulation_total(path: Path, since: int | None = None, until: int | None = None) -> int:
    """How many rows ``simulation_rows`` will read (the progress bar's total)."""
    conn = connect(path)
    try:
        row = conn.execute(tables.SIMULATION_COUNT, _span(since, until)).fetchone()
    finally:
        conn.close()
    return int(row[0])


def _span(since: int | None, until: int | None) -> tuple[int, int]:
    return since or 0, until if until is not None else 2**62


def simulation_rows(
    path: Path,
    told: list[ev.Event],
    since: int | None = None,
    until: int | None = None,
    on_rows: Callable[[int], None] | None = None,
) -> Iterator[tuple[int, ev.Event]]:
    """``tocsin simulate``'s reading of the file (read-only, while the service runs):
    the inputs appended in ``[since, until]`` as ``(ts, event)`` (received events,
    operator silences), streamed so the replay runs as the rows are read; the
    notifications the log holds for the same span are appended to ``told`` on the way.
    ``on_rows`` is told the rows read so far after each batch (a progress bar). The file
    is opened now, so a missing log raises ``LogMissing`` here, not mid-iteration."""
    conn = connect(path)
    cursor = conn.execute(tables.SIMULATION_ROWS, _span(since, until))
    return _stream(conn, cursor, told, on_rows)


def _stream(
    conn: sqlite3.Connection,
    cursor: sqlite3.Cursor,
    told: list[ev.Event],
    on_rows: Callable[[int], None] | None,
) -> Iterator[tuple[int, ev.Event]]:
    read = 0
    decode = ev.decode
    try:
        while batch := cursor.fetchmany(5000):
            for ts, data in batch:
                event = decode(bytes(data))
                if isinstance(event, ev.AlertRouted | ev.GroupNotified):
                    told.append(event)
                else:
                    yield ts, event
            read += len(batch)
            if on_rows is not None:
                on_rows(read)
    finally:
        conn.close()
