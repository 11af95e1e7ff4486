"""The log file's SQL lives in ``store/tables.py``: the modules that read and write the
log run its named statements and carry none of their own, so a change to a column or
an index is made in one place."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import re
import sqlite3
import struct
from pathlib import Path

import msgspec
import pytest

import tocsin.store
from tests.core.test_group_bodies import storm_facts
from tocsin import config as config_module
from tocsin.core import events as ev
from tocsin.core import ingest
from tocsin.core.decide.route import RoutingTable
from tocsin.core.decide.triage import triage
from tocsin.core.state import State
from tocsin.core.versions import stamped
from tocsin.store import forensics, tables
from tocsin.store.chain import GENESIS, chain_hash
from tocsin.store.compaction import compact
from tocsin.store.eventlog import EventLog, Fact, db_path
from tocsin.store.ledger import Batch, Input
from tocsin.store.reader import LogReader

STORE = Path(tocsin.store.__file__).parent
SQL_ON_THE_LOG = re.compile(
    r"\b(?:FROM|INTO|UPDATE|JOIN|ON|TABLE(?: IF NOT EXISTS)?)\s+"
    r"(?:events|snapshots|snapshot_parts)\b"
    r"|\bTRIGGER\b",
    re.IGNORECASE,
)
# ledger.fold_rows (the start-up fold) keeps its query until ledger.py, edited
# elsewhere at the same time, can take it from tables.
NOT_YET = {"ledger.py"}


def test_no_store_module_but_tables_writes_sql_on_the_log() -> None:
    offenders = {
        f"{path.name}:{number}: {line.strip()}"
        for path in STORE.glob("*.py")
        if path.name not in {"tables.py", *NOT_YET}
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if SQL_ON_THE_LOG.search(line) and not line.lstrip().startswith("#")
    }
    assert offenders == set()


# -- the one writer ----------------------------------------------------------------------

COLUMNS = "seq, ts, kind, data, in_seq, out_seq, fingerprint, alert_id, hash"


def facts(count: int, first: int = 0) -> list[Fact]:
    """A mix of rows with and without an alert id, an inbound and an outcome seq."""
    made: list[Fact] = []
    for i in range(first, first + count):
        if i % 3 == 0:
            made.append(Fact(ev.AlertResolveIgnored(fingerprint=f"fp{i}"), in_seq=i + 1))
        elif i % 3 == 1:
            event = ev.AlertAcked(alert_id=f"a{i}", fingerprint=f"fp{i}", by="ops", at=i)
            made.append(Fact(event, out_seq=i + 1))
        else:
            config = ev.ConfigLoaded(
                digest="0" * 64, receivers={}, routes=0, dedup_window_seconds=600.0
            )
            made.append(Fact(config))
    return made


def as_rows_were_written(
    batch: list[Fact], ts: int, after_seq: int, previous: bytes
) -> list[tuple[object, ...]]:
    """The rows the appender wrote before there was one writer, computed the way it did:
    each hash written out as DESIGN.md says it is, not through the writer's own code."""
    rows: list[tuple[object, ...]] = []
    for seq, fact in enumerate(batch, after_seq + 1):
        kind, data = ev.kind_of(fact.event), ev.encode(fact.event)
        head = struct.pack(">qq", seq, ts) + kind.encode() + b"\x00"
        previous = hashlib.sha256(previous + head + data).digest()
        rows.append(
            (
                seq,
                ts,
                kind,
                data,
                fact.in_seq,
                fact.out_seq,
                getattr(fact.event, "fingerprint", None),
                getattr(fact.event, "alert_id", None),
                previous,
            )
        )
    return rows


def stored(path: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(f"SELECT {COLUMNS} FROM events ORDER BY seq").fetchall()


def test_new_rows_are_the_rows_the_appender_wrote_and_say_where_the_log_ends() -> None:
    batch = facts(7)
    new = tables.new_rows(batch, 5, after_seq=10, after_hash=b"\x07" * 32, max_in_seq=3)
    assert new.rows == as_rows_were_written(batch, 5, 10, b"\x07" * 32)
    assert (new.last_seq, new.last_hash) == (17, new.rows[-1][8])
    assert (new.max_in_seq, new.max_out_seq) == (7, 5)
    assert (new.after_seq, new.after_hash) == (10, b"\x07" * 32)
    assert tables.new_rows([], 5, 10, GENESIS, 3, 4) == tables.NewRows(
        [], 10, GENESIS, 3, 4, 10, GENESIS
    )


def routers_rows_of_a_fixed_input() -> list[tables.EventRow]:
    """The rows the router's deciding and commit path (parse, triage, ``stamped``, the
    batch's fold, ``new_rows``) makes of 120 events in three batches: new alerts,
    duplicates, escalations, routed and unrouted ones, resolves, with fixed ids and
    times."""
    config = config_module.from_mapping(
        {
            "route": [{"match": {"severity": "critical"}, "receivers": ["hook"]}],
            "receivers": {"hook": {"channel": "webhook", "url": "http://127.0.0.1:9/"}},
            # the config version the facts are stamped with counts the concurrency:
            # the default of the tree the digests were taken with
            "delivery": {"concurrency": 32},
        },
        {},
    )
    routing = RoutingTable.compile(config.routes, config.inhibit)
    ids = itertools.count(1)
    state, after, previous = State(), 0, GENESIS
    rows: list[tables.EventRow] = []
    for b in range(3):
        batch = Batch(state, after + 1, 1_775_000_000_000_000 + b * 1_000_000)
        for i in range(40):
            n = b * 40 + i
            body: dict[str, object] = {
                "type": "disk_full",
                "severity": ["critical", "warning"][n % 2],
                "summary": f"event {n}",
                "labels": {"host": f"h{n % 7}"},
            }
            if n % 5 == 0:
                body["status"] = "resolved"
            parsed = ingest.parse(
                msgspec.json.encode(body), default_source="bench", received_at=batch.ts
            )
            assert isinstance(parsed, ingest.Normalized)
            facts = triage(
                state,
                parsed,
                subject="alerts.in.bench",
                received_at=batch.ts,
                routing=routing,
                window_seconds=config.dedup_window,
                new_id=lambda: f"id{next(ids):06d}",
                trace_id=f"{n:032x}",
            )
            batch.add_caused(stamped(facts, config.digest()), Input.INBOUND, n + 1)
        new = tables.new_rows(batch.facts, batch.ts, after, previous)
        rows += new.rows
        after, previous = new.last_seq, new.last_hash
    return rows


def test_the_routers_rows_of_a_fixed_input_are_byte_equal_to_the_tree_before() -> None:
    """Catches a speed-up of the router's path (issue #20: ``new_rows`` chaining a
    batch in one loop, ``stamped`` in place, ``Origin`` a tuple) that changes the log:
    any byte of any row's content, column, order or hash. The digests were taken with
    the tree before those changes (496edaf)."""
    rows = routers_rows_of_a_fixed_input()
    assert len(rows) == 301
    assert {row[2] for row in rows} == {
        "alert.escalated",
        "alert.opened",
        "alert.received",
        "alert.resolve_ignored",
        "alert.resolved",
        "alert.routed",
        "alert.suppressed",
    }
    assert rows[-1][8].hex() == (  # type: ignore[union-attr]
        "5e9d298357c2b646d4b84043647264a030973121e45eb2ed35c98056b0d0b548"
    )
    assert hashlib.sha256(repr(rows).encode()).hexdigest() == (
        "043bf8f6abb9d8a301ba1a8dea3ad5ded98cfa0b3ccff719301e9cedca7ff71f"
    )


@pytest.mark.parametrize(
    ("rows", "sizes"),
    [
        (1, [1]),
        (3, [3]),
        (16, [16]),
        (17, [32]),
        (100, [128]),
        (256, [256]),
        (257, [512]),
        (2001, [2048]),
        (2048, [2048]),
        (3001, [2048, 1024]),
        (4097, [2048, 2048, 1]),
    ],
)
def test_a_batch_is_one_statement_up_to_2048_rows_else_a_few_of_cached_shapes(
    rows: int, sizes: list[int]
) -> None:
    """Catches a W2 batch (1,000 duplicates: 2,001 rows) written in more than one
    statement: each takes the GIL back while the event loop decides the next batch,
    5 ms a statement (``tables.INSERT_ROWS``)."""
    new = tables.new_rows(facts(rows), 1, 0, GENESIS)
    inserts = new.inserts()
    assert [text for text, _ in inserts] == [tables.insert_sql(size) for size in sizes]
    assert [len(params) for _, params in inserts] == [9 * size for size in sizes]
    values = [value for _, params in inserts for value in params]
    written = [value for row in new.rows for value in row]
    assert unbound(values[: len(written)]) == written
    padding = values[len(written) :]
    assert padding[::9] == [None] * (len(padding) // 9)  # rows the INSERT drops: no seq
    assert tables.INSERT_COLUMNS == COLUMNS


def unbound(values: list[object]) -> list[object]:
    """The row values a flat list of bound parameters stands for (``NewRows.inserts``)."""
    out: list[object] = []
    for n, value in enumerate(values):
        column = n % 9
        if isinstance(value, bytearray):
            value = bytes(value)
        stand_in = tables.NO_SEQ if column in (4, 5) else tables.NO_TEXT
        if column in (4, 5, 6, 7) and type(value) is type(stand_in) and value == stand_in:
            value = None
        out.append(value)
    return out


def test_the_rows_are_bound_as_pythons_sqlite3_binds_fastest() -> None:
    """Catches a ``bytes`` or a None bound for a row's value: Python's sqlite3 asks its
    adapters about each (~0.53 and ~0.27 us, against ~0.02 an int, ~0.07 a str and ~0.08
    a bytearray), ~1.5 us a row, a third of the writer's CPU (``tables.NO_SEQ``)."""
    new = tables.new_rows(facts(100), 1, 0, GENESIS)
    (statement,) = new.inserts()
    values = statement[1]
    assert len(values) == 9 * 128  # 28 rows of padding
    others = [value for n, value in enumerate(values) if n % 9]
    assert {type(value) for value in others} == {int, str, bytearray}
    assert {type(value) for value in values[::9]} == {int, type(None)}  # seq; padding's none
    assert values[::9].count(None) == 28


async def test_a_value_like_a_stand_in_for_null_is_stored_as_it_is(tmp_path: Path) -> None:
    """Catches a stand-in for a missing value (``NO_SEQ``, ``NO_TEXT``) that a real
    value could equal: a fingerprint "0" or "", an inbound seq 0, are stored as they
    are, and only missing values as NULL; data and hash are BLOBs."""
    path = tmp_path / "log.db"
    log = await EventLog.open(path)
    odd = [
        Fact(ev.AlertResolveIgnored(fingerprint="0"), in_seq=0),
        Fact(ev.AlertResolveIgnored(fingerprint=""), out_seq=0),
        Fact(ev.AlertAcked(alert_id="0", fingerprint="", by="ops", at=1)),
    ]
    await log.append(odd, ts=1)
    await log.close()
    assert stored(path) == as_rows_were_written(odd, 1, 0, GENESIS)
    with sqlite3.connect(path) as conn:
        types = conn.execute(
            "SELECT typeof(data), typeof(in_seq), typeof(out_seq), typeof(fingerprint),"
            " typeof(alert_id), typeof(hash) FROM events ORDER BY seq"
        ).fetchall()
    assert types == [
        ("blob", "integer", "null", "text", "null", "blob"),
        ("blob", "null", "integer", "text", "null", "blob"),
        ("blob", "null", "null", "text", "text", "blob"),
    ]


def test_the_writer_prepares_23_insert_shapes_not_one_per_batch_size() -> None:
    """Catches an INSERT text per batch size: each stayed prepared on the writer's
    connection, and SQLite's program for n rows grows with n, so the 256 sizes held
    ~35 MiB, gained over hours as new sizes came (the soak's RSS slope). Every batch of
    1 to 4,200 rows is written with 23 texts."""
    texts = {
        tables.insert_sql(tables.statement_rows(carried))
        for rows in range(1, 4201)
        for carried in tables.insert_sizes(rows)
    }
    assert len(texts) == 23


@pytest.mark.parametrize("count", [5, 100, 2100])  # one statement (100: padded); a transaction
async def test_the_appender_writes_the_writers_rows(tmp_path: Path, count: int) -> None:
    path = tmp_path / "log.db"
    log = await EventLog.open(path)
    first, second = facts(count), facts(3, first=count)
    assert await log.append(first, ts=11) == list(range(1, count + 1))
    tail = tables.new_rows(second, 12, log.last_seq, log.last_hash)
    await log.append(second, ts=12)
    assert (log.last_seq, log.last_hash) == (tail.last_seq, tail.last_hash)
    await log.close()
    expected = as_rows_were_written(first, 11, 0, GENESIS)
    expected += as_rows_were_written(second, 12, count, expected[-1][8])  # type: ignore[arg-type]
    assert stored(path) == expected
    assert forensics.verify(path).ok


def test_the_writers_statements_write_the_same_rows_on_a_plain_connection(tmp_path: Path) -> None:
    """Compaction runs them on sqlite3 inside its own transaction."""
    path = tmp_path / "log.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(tables.SCHEMA + tables.NO_DELETE_TRIGGER)
    batch = facts(300)
    conn.execute("BEGIN IMMEDIATE")
    for statement, params in tables.new_rows(batch, 3, 0, GENESIS).inserts():
        conn.execute(statement, params)
    conn.execute("COMMIT")
    conn.close()
    assert stored(path) == as_rows_were_written(batch, 3, 0, GENESIS)


async def test_compaction_appends_its_fact_as_it_did_before(tmp_path: Path) -> None:
    """The ``log.compacted`` row: chained to the newest row, no stream seqs, no ids."""
    path = db_path(tmp_path)
    log = await EventLog.open(path)
    await log.append(facts(20), ts=1_000)
    await log.append(facts(5, first=20), ts=2_000)
    last_hash = log.last_hash
    await log.close()
    assert compact(tmp_path, 2_000, tmp_path / "a.jsonl.gz") is not None
    (seq, ts, kind, data, *columns, digest) = stored(path)[-1]
    assert (seq, kind, columns) == (26, "log.compacted", [None, None, None, None])
    assert isinstance(ts, int)
    assert isinstance(data, bytes)
    assert digest == chain_hash(last_hash, 26, ts, "log.compacted", data)
    assert forensics.verify(path).ok


async def test_fingerprints_are_not_indexed_and_replay_by_fingerprint_still_finds_them(
    tmp_path: Path,
) -> None:
    """The fingerprint index cost the router ~11 us per event of a storm: a log opened by
    this version has none (one an older version made is dropped), and ``replay
    --fingerprint`` still finds every row of it. Catches the index kept or put back."""
    path = db_path(tmp_path)
    with sqlite3.connect(path) as conn:  # a file as an older version left it
        conn.executescript(tables.SCHEMA.replace("DROP INDEX IF EXISTS events_fingerprint;", ""))
        conn.execute("CREATE INDEX events_fingerprint ON events(fingerprint)")
    log = await EventLog.open(path)
    await log.append(facts(9), ts=1)
    await log.close()
    with sqlite3.connect(path) as conn:
        indexed = [row[0] for row in conn.execute("PRAGMA index_list(events)")]
    assert "events_fingerprint" not in indexed
    assert [r.data["fingerprint"] for r in forensics.replay(path, fingerprint="fp4")] == ["fp4"]


# -- a notification's routed fact, by its id --------------------------------------------

NOTIFICATION_INDEX = f"""DROP INDEX IF EXISTS events_routed_notification;
DROP INDEX IF EXISTS events_notification;
CREATE INDEX IF NOT EXISTS events_notification_id
    ON events({tables.NOTIFICATION_ID})
    WHERE kind IN ('alert.routed', 'group.notified');
"""
OLD_NOTIFICATION_INDEX = """CREATE INDEX IF NOT EXISTS events_routed_notification
    ON events(json_extract(CAST(data AS TEXT), '$.notification_id'))
    WHERE kind = 'alert.routed';
"""
JSON_NOTIFICATION_INDEX = """CREATE INDEX IF NOT EXISTS events_notification
    ON events(json_extract(CAST(data AS TEXT), '$.notification_id'))
    WHERE kind IN ('alert.routed', 'group.notified');
"""


def routed_facts() -> list[Fact]:
    """An alert's routed fact (``r-alert``) and a group's (``storm_facts``: ``n1``,
    ``n2``), among rows of other kinds."""
    alert_routed = ev.AlertRouted(
        alert_id="a1",
        fingerprint="fp1",
        dedup_key="fp1:1",
        bucket=1,
        reason="firing",
        severity="critical",
        receiver="hook",
        notification_id="r-alert",
    )
    first, update = storm_facts()
    return [*facts(4), Fact(alert_routed), Fact(first), *facts(3, first=4), Fact(update)]


def query_plan(path: Path) -> str:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        plan = conn.execute("EXPLAIN QUERY PLAN " + tables.ROUTED_NOTIFICATION, ("n1",))
        return " | ".join(str(step[3]) for step in plan)


def indexes(path: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return {row[1] for row in conn.execute("PRAGMA index_list(events)")}


async def found_kinds(path: Path, *ids: str) -> list[str | None]:
    reader = await LogReader.open(path)
    try:
        return [row.kind if (row := await reader.routed(n)) else None for n in ids]
    finally:
        await reader.close()


async def test_an_alerts_and_a_groups_routed_fact_are_found_by_their_id_through_an_index(
    tmp_path: Path,
) -> None:
    """Catches a group's notification id finding nothing (the lookup asked only
    ``alert.routed`` rows, so ``GET /api/v1/notifications/{id}`` answered 404), and a
    lookup that scans the log: SQLite uses a partial index only for a query whose WHERE
    holds the index's, so the plan must name ``events_notification_id``."""
    path = db_path(tmp_path)
    log = await EventLog.open(path)
    await log.append(routed_facts(), ts=5)
    await log.close()
    assert "USING INDEX events_notification_id" in query_plan(path)
    assert "events_routed_notification" not in indexes(path)  # the new one serves both
    assert await found_kinds(path, "r-alert", "n1", "n2", "nope") == [
        "alert.routed",
        "group.notified",
        "group.notified",
        None,
    ]


@pytest.mark.parametrize(
    "old_index", [OLD_NOTIFICATION_INDEX, JSON_NOTIFICATION_INDEX], ids=["routed-only", "json"]
)
async def test_a_log_made_with_an_older_notification_index_gets_this_one_when_opened(
    tmp_path: Path, old_index: str
) -> None:
    """Catches a log written by an older version keeping its old index (``CREATE INDEX
    IF NOT EXISTS`` leaves an index of that name as it is): its groups' notifications
    would be looked up by a scan of the whole log (the index on ``alert.routed`` only),
    or every routed row's JSON parsed by SQLite at its commit (``events_notification``,
    on ``json_extract``: the writer's CPU in W5's flush) with this version's lookups
    scanning past it. Opened by this version, the file has the index over both kinds on
    ``NOTIFICATION_ID`` and neither old one, and finds an alert's and a group's id."""
    path = db_path(tmp_path)
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        old_schema = tables.SCHEMA.replace(NOTIFICATION_INDEX, old_index)
        assert old_schema != tables.SCHEMA
        conn.executescript(old_schema + tables.NO_DELETE_TRIGGER)
        conn.execute("BEGIN IMMEDIATE")
        for statement, params in tables.new_rows(routed_facts(), 5, 0, GENESIS).inserts():
            conn.execute(statement, params)
        conn.execute("COMMIT")
    assert "events_notification_id" not in indexes(path)
    assert query_plan(path).startswith("SCAN events")  # as an older version left it
    log = await EventLog.open(path)
    await log.close()
    assert not {"events_routed_notification", "events_notification"} & indexes(path)
    assert query_plan(path).startswith("SEARCH events USING INDEX events_notification_id")
    assert await found_kinds(path, "n2", "r-alert") == ["group.notified", "alert.routed"]
    assert forensics.verify(path).ok


async def test_the_notification_index_reads_each_routed_rows_id_as_json_extract_does(
    tmp_path: Path,
) -> None:
    """Catches ``NOTIFICATION_ID`` cutting out anything but a routed row's
    ``notification_id``: a field before it whose string holds the name (escaped in the
    JSON, so not the field), a label of that name in a group's ``group_labels`` (after
    the field), a ``trace_id`` ahead of it, ids of any length up to 255 bytes; and
    giving a row without the field an id (it must be NULL: never found)."""
    first, _ = storm_facts()
    tricky = '"notification_id":"x'
    rows = [
        ev.AlertRouted(
            alert_id=tricky,
            fingerprint="fp1",
            dedup_key=tricky,
            bucket=1,
            reason="firing",
            severity="critical",
            receiver=tricky,
            notification_id="r-" + "9" * 253,
            trace_id=tricky,
        ),
        msgspec.structs.replace(
            first,
            group_key=tricky,
            notification_id="g1",
            group_labels={"notification_id": "label", tricky: tricky},
        ),
        *(f.event for f in facts(2)),
    ]
    path = db_path(tmp_path)
    log = await EventLog.open(path)
    await log.append([Fact(e) for e in rows], ts=5)
    await log.close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        got = conn.execute(
            f"SELECT kind, {tables.NOTIFICATION_ID},"
            " json_extract(CAST(data AS TEXT), '$.notification_id') FROM events ORDER BY seq"
        ).fetchall()
    assert [(kind, cut) for kind, cut, _ in got] == [
        ("alert.routed", "r-" + "9" * 253),
        ("group.notified", "g1"),
        *((kind, None) for kind, _, _ in got[2:]),
    ]
    assert all(cut == parsed for _, cut, parsed in got)
    assert await found_kinds(path, "g1", "r-" + "9" * 253, "label", "x") == [
        "group.notified",
        "alert.routed",
        None,
        None,
    ]


IGNORED = ev.AlertResolveIgnored(fingerprint="fp")


async def test_opening_the_log_reads_its_stream_positions_from_the_indexes(
    tmp_path: Path,
) -> None:
    """Catches the open (and ``resync``) scanning the whole log for the highest stream
    seqs: ``MAX(in_seq), MAX(out_seq)`` in one SELECT is a table scan, 0.12 s of a
    1M-event log's start. Each must be a search of its partial index, and still give
    the highest seq of each stream, 0 for a stream with none."""
    path = db_path(tmp_path)
    log = await EventLog.open(path)
    assert (log.max_in_seq, log.max_out_seq) == (0, 0)
    await log.append([Fact(IGNORED, in_seq=7), Fact(IGNORED, in_seq=3), Fact(IGNORED)], ts=5)
    await log.close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        plan = [
            str(step[3]) for step in conn.execute("EXPLAIN QUERY PLAN " + tables.STREAM_SEQ_MAXIMA)
        ]
    assert not [step for step in plan if step.startswith("SCAN events")], plan
    assert any("INDEX events_in_seq" in step for step in plan), plan
    assert any("INDEX events_out_seq" in step for step in plan), plan
    log = await EventLog.open(path)
    assert (log.max_in_seq, log.max_out_seq) == (7, 0)
    await log.append([Fact(IGNORED, out_seq=4), Fact(IGNORED, out_seq=9)], ts=6)
    await log.resync()
    assert (log.max_in_seq, log.max_out_seq) == (7, 9)
    await log.close()
