"""The log file's SQL: the schema of its two tables (``events``, the log, and
``snapshots``, caches of the projection) and every statement the store runs on them,
each named once here. The appender, the API's reader, snapshots, compaction and
forensics run these; none of them writes SQL of its own, so a change to a column or an
index is made and reviewed in one place.

Rows reach ``events`` one way: ``new_rows`` makes facts into rows chained on from the
log's last one, and ``NewRows.inserts`` gives the statements that write them. The
appender runs those on its connection, compaction (for its ``log.compacted`` row) on
its own, inside its transaction.

Statements are constants, or small functions where their text depends on a count
(``IN`` lists) or on which filters are given. Parameters are always bound, never
formatted in: the only text a function adds is placeholders and fixed clauses.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain
from typing import Any, Literal, NamedTuple

from tocsin.core import events as ev
from tocsin.store.chain import ChainRow, hashes_of, kind_part

# ``fingerprint`` has no index (one made by an older version is dropped at open): in a
# storm of new alerts each row landed on its own page of it, 11 us of the router's CPU
# per event of W1 and 8 of W2 (issue #20, ``bench/ceiling_router.py``), for one reader,
# ``replay --fingerprint``, an investigator's command, which scans instead.
#
# ``events_notification_id`` finds a notification's routed fact by its id, an alert's
# and a group's (``GET /api/v1/notifications/{id}``), on ``NOTIFICATION_ID``: the id's
# bytes cut out of the row's JSON, where they follow the first ``"notification_id":"``.
# It replaced ``events_notification``, the same on ``json_extract``, which parsed each
# routed row's whole JSON: ~0.2 ms a ``group.notified`` row of W5's flush (400 listed
# alerts, 192 KiB), ~0.9 us of the log thread's CPU a listed alert, on the flush's path
# (issue #20); the cut costs about nothing. An older log's index of either name
# (``events_routed_notification`` before that, alert.routed only) is dropped at open
# and this one made: ``CREATE INDEX IF NOT EXISTS`` would leave an old one as it was.
_ID_KEY = b'"notification_id":"'
_ID_START = f"NULLIF(instr(data, x'{_ID_KEY.hex()}'), 0) + {len(_ID_KEY)}"
NOTIFICATION_ID = (
    f"CAST(substr(data, {_ID_START},"
    f" NULLIF(instr(substr(data, {_ID_START}, 256), x'22'), 0) - 1) AS TEXT)"
)
"""A routed row's notification id, as SQL: the bytes between the first
``"notification_id":"`` (the hex literal) in its JSON and the next ``"``, as text. The
id is the first field of its name in ``alert.routed`` and ``group.notified`` and only
strings and numbers come before it (``group_labels``, a map, after it), and an id is
made by ``ids.new_id`` (no character JSON escapes), so it is the field's value as
``json_extract`` reads it. NULL when a row has no such field, or a longer id than 255
bytes. Blob functions, byte for byte: no copy of the row as text, no JSON parse."""

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS events (
    seq         INTEGER PRIMARY KEY,
    ts          INTEGER NOT NULL,
    kind        TEXT    NOT NULL,
    data        BLOB    NOT NULL,
    in_seq      INTEGER,
    out_seq     INTEGER,
    fingerprint TEXT,
    alert_id    TEXT,
    hash        BLOB    NOT NULL
);
CREATE INDEX IF NOT EXISTS events_in_seq ON events(in_seq) WHERE in_seq IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_out_seq ON events(out_seq) WHERE out_seq IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_ts ON events(ts);
DROP INDEX IF EXISTS events_fingerprint;
CREATE INDEX IF NOT EXISTS events_alert_id ON events(alert_id);
DROP INDEX IF EXISTS events_routed_notification;
DROP INDEX IF EXISTS events_notification;
CREATE INDEX IF NOT EXISTS events_notification_id
    ON events({NOTIFICATION_ID})
    WHERE kind IN ('alert.routed', 'group.notified');
CREATE INDEX IF NOT EXISTS events_alert_seen
    ON events(json_extract(CAST(data AS TEXT), '$.timestamp'), alert_id)
    WHERE kind = 'alert.received' AND alert_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS snapshots (
    seq     INTEGER PRIMARY KEY,
    ts      INTEGER NOT NULL,
    anchor  BLOB    NOT NULL,
    state   BLOB    NOT NULL,
    base    INTEGER NOT NULL DEFAULT 0   -- 1: the state of rows compacted away
);
CREATE TABLE IF NOT EXISTS snapshot_parts (
    seq     INTEGER NOT NULL,            -- of the snapshot whose state they are
    part    INTEGER NOT NULL,            -- 0, 1, ...: the state's bytes in this order
    bytes   BLOB    NOT NULL,
    PRIMARY KEY (seq, part)
);
CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'the event log is append-only: UPDATE refused'); END;
"""


PAGE_BYTES = 16384
"""The page size of a new log file (SQLite's default is 4,096).

The writer's CPU per row is mostly its pages: each dirty page is a frame of the WAL
(two writes), copied into the file again at a checkpoint, and an append's rows and
index entries pack into fewer, fuller pages when a page is larger. The log's rows
replayed as the writer writes them (``bench/log_writer.py``, 2026-12-05), µs of the
writing thread's CPU an event, 4 / 8 / 16 / 32 / 64 KiB pages: W1 23.5 / 22.2 / 21.1 /
21.1 / 22.1, W2 12.8 / 11.3 / 10.2 / 9.6 / 10.4, W5 19.4 / 17.1 / 16.8 / 16.9 / 17.3.
Past 16 KiB a lookup reads more bytes for a row and a scattered index entry dirties
more. The WAL's automatic checkpoint stays at SQLite's 1,000 pages, so the WAL file
grows to ~16 MiB between checkpoints instead of ~4 (a checkpoint every 256 pages, at
4 MiB, cost ~0.5 µs an event more).

A file's page size is fixed once it holds a page (and in WAL mode for good): an older
log keeps its 4 KiB pages; ``tocsin repartition``'s new logs get this one."""

NEW_FILE = f"PRAGMA page_size={PAGE_BYTES}"
"""Run first on a connection to a log file, before anything writes to it (WAL mode
included): on a new file it sets the page size, on one that has pages it does nothing."""

# Compaction lifts this trigger for its one DELETE, in the same transaction.
NO_DELETE_TRIGGER = """
CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'the event log is append-only: DELETE refused'); END;
"""
DROP_NO_DELETE_TRIGGER = "DROP TRIGGER events_no_delete"

IN_LIST_MAX = 500
"""Values bound in one ``IN (...)`` list: a long lookup is asked in chunks of this."""

MAX_SEQ = 2**63 - 1  # SQLite's largest integer


def _marks(count: int) -> str:
    return ",".join("?" * count)


# -- events: the writer's position ---------------------------------------------------

LAST_ROW = "SELECT seq, hash, ts FROM events ORDER BY seq DESC LIMIT 1"
"""``(seq, hash, ts)`` of the newest row, or no row: where the next row chains on, and
the head of the chain an anchor records."""

STREAM_SEQ_MAXIMA = (
    "SELECT COALESCE((SELECT MAX(in_seq) FROM events WHERE in_seq IS NOT NULL), 0),"
    " COALESCE((SELECT MAX(out_seq) FROM events WHERE out_seq IS NOT NULL), 0)"
)
"""The highest inbound and outcome stream seqs logged (0 when none), read at every open
and ``resync``. One subquery each: SQLite answers a lone ``MAX`` from the end of its
partial index (``events_in_seq``, ``events_out_seq``: hence the ``IS NOT NULL``), but two
aggregates in one SELECT scan the whole table (0.12 s of a 1M-event log's open)."""


# -- events: the one writer -----------------------------------------------------------

EventRow = tuple[int, int, str, bytes, int | None, int | None, str | None, str | None, bytes]
"""A row of ``events`` in ``INSERT_COLUMNS`` order."""

INSERT_COLUMNS = "seq, ts, kind, data, in_seq, out_seq, fingerprint, alert_id, hash"

INSERT_ROWS = 2048  # 18,432 parameters a statement; SQLite allows 32,766
"""The most rows one INSERT carries: a batch up to this is one statement.

Each statement the writer's thread runs takes the GIL back after SQLite steps it, and
while the event loop decides the next batch (15-30 ms of Python without a pause) each
take waits out the interpreter's switch interval, 5 ms: a W2 batch of 2,001 rows was
ten statements (256 rows each at most), ~50 ms of commit beside ~10 of SQLite's own
work (issue #20). The three shapes above 256 rows hold ~5.5 MiB once a storm has used
them (``statement_rows``)."""

EXACT_ROWS = 16
"""A batch of up to this many rows is an INSERT of exactly its size; a larger one is
padded up to the next power of two (``statement_rows``)."""

_WIDTH = len(INSERT_COLUMNS.split(", "))

# How a row's values are bound (``NewRows.inserts``). Python's sqlite3 binds an int, a
# str, a float or a bytearray straight away, but asks its adapters about anything else:
# ~0.53 us a ``bytes`` and ~0.27 a None, against ~0.02 an int, ~0.07 a str and ~0.08 a
# bytearray (a statement of 2,048 rows of one type, 2026-12-05). A row has two bytes
# (data, hash) and one to four Nones, a padding row nine Nones. So the bytes go as
# bytearrays (stored the same: a BLOB of the same bytes), a missing stream seq as
# ``NO_SEQ`` (a text: never an int column's value) and a missing fingerprint or alert
# id as ``NO_TEXT`` (an int: never a text column's value), which the INSERT turns back
# into NULL (``NULLIF``: SQLite never finds a text equal to an int), and a padding row
# is a NULL seq and eight ints. Converting costs ~0.3 us a row; the writer's CPU, W1's
# rows replayed (``bench/log_writer.py``), went from 23.1 to 20.8 us an event.
NO_SEQ = ""
NO_TEXT = 0
_BLOBS = (3, 8)  # data, hash: their offsets in a row
_SEQS = (4, 5)  # in_seq, out_seq
_TEXTS = (6, 7)  # fingerprint, alert_id
_NULL_WHEN = {n: f"'{NO_SEQ}'" for n in _SEQS} | {n: str(NO_TEXT) for n in _TEXTS}
_SEQ_BOUND: dict[object, object] = {None: NO_SEQ}  # .get(value, value): in C, a call a value
_TEXT_BOUND: dict[object, object] = {None: NO_TEXT}
_PAD: list[object] = [None] + [0] * (_WIDTH - 1)  # a row the INSERT drops: no seq


class Fact(NamedTuple):
    """An event to append, with the stream position that produced it (if any). A tuple:
    the router makes two or three a message, and a frozen dataclass cost twice as much
    to make (~0.5 us against ~0.2)."""

    event: ev.Event
    in_seq: int | None = None
    out_seq: int | None = None


DerivedColumns = tuple[str, str | None, str | None]
"""``(kind, fingerprint, alert_id)``: the columns of a row that repeat what its event
says, for the indexes ``replay`` and the API look rows up by."""

DERIVED_COLUMNS = ("kind", "fingerprint", "alert_id")


def derived_columns(event: ev.Event) -> DerivedColumns:
    """The ``kind``, ``fingerprint`` and ``alert_id`` columns of ``event``'s row: the
    writer fills them from here (``new_rows``, through the same ``_columns_of``) and
    ``verify`` checks every row against here, so a column edited behind the log's back
    (the hash covers ``data``, not the columns) is found the way the writer would have
    written it."""
    kind, _, fingerprint, alert_id = _columns_of(type(event))
    return (
        kind,
        event.fingerprint if fingerprint else None,  # type: ignore[union-attr]
        event.alert_id if alert_id else None,  # type: ignore[union-attr]
    )


_Columns = tuple[str, bytes, bool, bool]
"""A kind's tag, the tag as the hash covers it (``chain.kind_part``), and whether its
facts have a ``fingerprint`` and an ``alert_id``."""

_COLUMNS: dict[type[ev.Event], _Columns] = {}


def _columns_of(kind: type[ev.Event]) -> _Columns:
    """What a row of ``kind`` takes from its type, asked once a kind, not for every row
    (a ``getattr`` that misses raises inside): a dict the writer reads directly."""
    known = _COLUMNS.get(kind)
    if known is None:
        fields = kind.__struct_fields__
        tag = kind.__struct_config__.tag
        assert isinstance(tag, str)
        known = _COLUMNS[kind] = (
            tag,
            kind_part(tag),
            "fingerprint" in fields,
            "alert_id" in fields,
        )
    return known


@dataclass(frozen=True, slots=True)
class NewRows:
    """Facts made into the log's next rows, where the log stands once they are in (its
    last seq and hash, the highest stream seqs it records), and the row they were
    chained on (``after_seq``, ``after_hash``): they may be written only right after
    it."""

    rows: list[EventRow]
    last_seq: int
    last_hash: bytes
    max_in_seq: int
    max_out_seq: int
    after_seq: int
    after_hash: bytes

    def inserts(self) -> list[tuple[str, list[object]]]:
        """The statements (text, parameters) that write ``rows``, in order: one for up to
        ``INSERT_ROWS`` rows (it can be its own transaction: autocommit), else one per
        ``INSERT_ROWS`` (``insert_sizes``), to run between BEGIN and COMMIT; each is
        padded to ``statement_rows`` with rows of no seq that it drops. The values are
        bound as Python's sqlite3 binds fastest (``NO_SEQ``, ``NO_TEXT``); the rows
        stored are ``rows``, value for value."""
        rows = self.rows
        statements: list[tuple[str, list[object]]] = []
        start = 0
        for carried in insert_sizes(len(rows)):
            size = statement_rows(carried)
            params: list[object] = list(chain.from_iterable(rows[start : start + carried]))
            for column in _BLOBS:  # each a column at a time, in C
                params[column::_WIDTH] = map(bytearray, params[column::_WIDTH])  # type: ignore[arg-type]
            for column in _SEQS:
                values = params[column::_WIDTH]
                params[column::_WIDTH] = map(_SEQ_BOUND.get, values, values)
            for column in _TEXTS:
                values = params[column::_WIDTH]
                params[column::_WIDTH] = map(_TEXT_BOUND.get, values, values)
            params += _PAD * (size - carried)  # the rows the INSERT drops
            statements.append((insert_sql(size), params))
            start += carried
        return statements


def new_rows(
    facts: Iterable[Fact],
    ts: int,
    after_seq: int,
    after_hash: bytes,
    max_in_seq: int = 0,
    max_out_seq: int = 0,
) -> NewRows:
    """``facts`` as rows appended at ``ts`` after the row ``after_seq`` whose hash is
    ``after_hash``: seqs from the next one, each hash chained to the row before it,
    and the ``fingerprint`` / ``alert_id`` columns from the event. ``max_in_seq`` and
    ``max_out_seq`` are the highest stream seqs logged so far.

    The router's commit path, done batch-wide: the facts are encoded in one pass, the
    hashes chained in another (``chain.hashes_of``), each row's columns read from its
    kind's entry, so a row costs no call of tocsin's own (issue #20)."""
    facts = facts if isinstance(facts, list) else list(facts)
    encode, columns, known = ev.encoder.encode, _COLUMNS.get, _columns_of
    kinds = [columns(type(fact[0])) or known(type(fact[0])) for fact in facts]
    group, encode_group = ev.GroupNotified, ev.encoded_group_notified  # alerts encoded once
    datas = [encode_group(fact[0]) if type(fact[0]) is group else encode(fact[0]) for fact in facts]
    parts = zip([kind[1] for kind in kinds], datas, strict=True)
    hashes = hashes_of(after_hash, after_seq + 1, ts, parts)
    rows: list[EventRow] = []
    seq, max_in, max_out = after_seq, max_in_seq, max_out_seq
    for (event, in_seq, out_seq), (kind, _, fingerprint, alert_id), data, digest in zip(
        facts, kinds, datas, hashes, strict=True
    ):
        seq += 1
        rows.append(
            (
                seq,
                ts,
                kind,
                data,
                in_seq,
                out_seq,
                event.fingerprint if fingerprint else None,
                event.alert_id if alert_id else None,
                digest,
            )
        )
        if in_seq is not None and in_seq > max_in:
            max_in = in_seq
        if out_seq is not None and out_seq > max_out:
            max_out = out_seq
    last_hash = hashes[-1] if hashes else after_hash
    return NewRows(rows, seq, last_hash, max_in, max_out, after_seq, after_hash)


def insert_sizes(rows: int) -> list[int]:
    """How many rows each INSERT of a batch carries: full statements of
    ``INSERT_ROWS``, then the rest (padded to one of a few shapes, prepared once and
    cached: ``statement_rows``).

    One multi-row INSERT instead of ``executemany``: SQLite releases the GIL for each
    statement it steps, and ``executemany`` steps once per row, so the writer's thread
    took the GIL back per row; with the event loop busy deciding the next batch, each
    take waits out the interpreter's switch interval (5 ms). Measured with a busy
    second thread, 2,000 rows a commit: 473 -> 101 us per event."""
    sizes = [INSERT_ROWS] * (rows // INSERT_ROWS)
    if rows % INSERT_ROWS:
        sizes.append(rows % INSERT_ROWS)
    return sizes


def statement_rows(rows: int) -> int:
    """How many rows the one INSERT of a batch of ``rows`` (at most ``INSERT_ROWS``)
    carries: the batch's own size up to ``EXACT_ROWS``, else the next power of two, the
    rest rows of no seq that the INSERT drops. So the writer keeps 23 statements prepared
    (1 to 16 rows, 32, 64, ... 2048), not one per batch size: SQLite's program for an
    INSERT of n rows grows with n, and the 256 sizes up to 256 held ~35 MiB once all
    were seen, which a service reached over hours of varied batches (RSS rising all
    along); the 20 shapes up to 256 hold ~0.6 MiB, 512 to 2048 ~5.5 more. A padded row
    costs its parameters, ~0.4 us (a NULL and eight ints; nine NULLs were ~2.5)."""
    return rows if rows <= EXACT_ROWS else 1 << (rows - 1).bit_length()


@functools.lru_cache(maxsize=INSERT_ROWS + 1)
def insert_sql(rows: int) -> str:
    """The INSERT of up to ``rows`` rows: those whose ``seq`` (the first value) is not
    NULL; the others pad the statement to one of a few prepared shapes
    (``statement_rows``)."""
    values = ",".join(["(" + ", ".join(["?"] * _WIDTH) + ")"] * rows)
    columns = ", ".join(  # SQLite's names of VALUES' columns; NULL as it was bound
        f"NULLIF(column{n + 1}, {_NULL_WHEN[n]})" if n in _NULL_WHEN else f"column{n + 1}"
        for n in range(_WIDTH)
    )
    return (
        f"INSERT INTO events ({INSERT_COLUMNS}) SELECT {columns} FROM (VALUES {values})"
        " WHERE column1 IS NOT NULL"
    )


def rows_of_stream_seqs(column: Literal["in_seq", "out_seq"], count: int) -> str:
    """``(stream seq, seq, ts, kind, data)`` of the rows produced by ``count`` given
    stream seqs of ``column``, ascending by seq (both columns are indexed)."""
    return (
        f"SELECT {column}, seq, ts, kind, data FROM events WHERE {column} IN ({_marks(count)})"
        " ORDER BY seq"
    )


# -- events: pages for the API ----------------------------------------------------------

PAGE = "SELECT seq, ts, kind, data FROM events WHERE seq > ? ORDER BY seq LIMIT ?"
"""Up to ``limit`` rows after ``after_seq``: parameters ``(after_seq, limit)``."""

OF_ALERT = "SELECT seq, ts, kind, data FROM events WHERE alert_id = ? ORDER BY seq"
"""Every row of one alert, ascending (``alert_id`` is indexed)."""


ROUTED_NOTIFICATION = (
    "SELECT seq, ts, kind, data FROM events WHERE kind IN ('alert.routed', 'group.notified')"
    f" AND {NOTIFICATION_ID} = ?"
)
"""The routed fact of one notification id, an alert's (``alert.routed``) or a group's
(``group.notified``): the partial index ``events_notification_id`` answers it without a
scan, as long as this ``kind IN`` list is the index's, word for word (SQLite uses a
partial index only for a query whose WHERE holds the index's), and the id is the
index's expression, ``NOTIFICATION_ID``."""

CONFIG_AS_OF = (
    "SELECT seq, ts, kind, data FROM events WHERE kind = 'config.loaded' AND seq <= ?"
    " ORDER BY seq DESC LIMIT 1"
)
"""The config the service ran with at a seq: the last ``config.loaded`` at or before it
(one is logged at every start, so the walk back from the seq is short)."""

CONFIG_VERSIONS = "SELECT seq, ts, kind, data FROM events WHERE kind = 'config.loaded' ORDER BY seq"
"""Every ``config.loaded`` the log holds, oldest first (``GET /api/v1/config/versions``)."""

_SIMULATED = (
    " FROM events WHERE kind IN"
    " ('alert.received', 'silence.created', 'silence.deleted', 'alert.routed', 'group.notified')"
    " AND ts >= ? AND ts <= ?"
)
SIMULATION_ROWS = "SELECT ts, data" + _SIMULATED + " ORDER BY seq"
"""What ``tocsin simulate`` reads: the inputs it feeds the decision core again, and the
notifications the log holds, appended in ``[since, until]``."""

SIMULATION_COUNT = "SELECT count(*)" + _SIMULATED
"""How many rows ``SIMULATION_ROWS`` reads (``tocsin simulate``'s progress bar)."""

ALERT_ROWS = "SELECT seq, ts, data FROM events WHERE alert_id = ? ORDER BY seq"
"""``(seq, ts, data)`` of one alert's rows, as ``fold.fold_alert`` takes them."""

NEWEST_SEEN = (
    "SELECT json_extract(CAST(data AS TEXT), '$.timestamp') AS seen, alert_id FROM events"
    " WHERE kind = 'alert.received' AND alert_id IS NOT NULL"
    " AND json_extract(CAST(data AS TEXT), '$.timestamp') <= ?"
    " ORDER BY seen DESC, alert_id DESC"
)
"""``(timestamp, alert_id)`` of the received rows of alerts, newest event first, from a
timestamp down (index ``events_alert_seen``): an alert's first row in this order is the
one that set its ``last_seen``, so alerts come up newest ``last_seen`` first."""


def rows_at(count: int) -> str:
    """``(seq, ts, kind, data)`` of the rows at ``count`` given seqs."""
    return f"SELECT seq, ts, kind, data FROM events WHERE seq IN ({_marks(count)})"


# -- events: history and the chain, read straight from the file ------------------------


def replay(
    *,
    since: int | None = None,
    until: int | None = None,
    fingerprint: str | None = None,
    alert_id: str | None = None,
    type_: str | None = None,
) -> tuple[str, list[Any]]:
    """The query (and its parameters) for ``(seq, ts, kind, data)`` of the rows matching
    every filter given, oldest first: appended in ``[since, until]``, of a fingerprint,
    of an alert, or of any fingerprint that ever received an event of type ``type_``."""
    clauses: list[str] = []
    params: list[Any] = []
    if since is not None:
        clauses.append("ts >= ?")
        params.append(since)
    if until is not None:
        clauses.append("ts <= ?")
        params.append(until)
    if fingerprint is not None:
        clauses.append("fingerprint = ?")
        params.append(fingerprint)
    if alert_id is not None:
        clauses.append("alert_id = ?")
        params.append(alert_id)
    if type_ is not None:
        clauses.append(
            "fingerprint IN (SELECT fingerprint FROM events WHERE kind = 'alert.received'"
            " AND json_extract(CAST(data AS TEXT), '$.type') = ?)"
        )
        params.append(type_)
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    return f"SELECT seq, ts, kind, data FROM events{where} ORDER BY seq", params


CHAIN_ROWS = "SELECT seq, ts, kind, data, hash FROM events WHERE seq <= ? ORDER BY seq"
"""Rows as the hash chain covers them, ``(seq, ts, kind, data, hash)``, up to a seq."""


def chain_rows(conn: sqlite3.Connection, through_seq: int = MAX_SEQ) -> Iterator[ChainRow]:
    """The rows up to ``through_seq`` (all of them by default), oldest first, as
    ``chain.walk`` takes them; fetched a few thousand at a time."""
    cursor = conn.execute(CHAIN_ROWS, (through_seq,))
    while batch := cursor.fetchmany(5000):
        for seq, ts, kind, data, digest in batch:
            yield seq, ts, kind, bytes(data), bytes(digest)


VERIFIED_ROWS = "SELECT seq, ts, kind, data, hash, fingerprint, alert_id FROM events ORDER BY seq"
"""Every row as ``verify`` checks it: the chain's columns and the derived ones."""


def verified_rows(
    conn: sqlite3.Connection,
) -> Iterator[tuple[ChainRow, tuple[str | None, str | None]]]:
    """Every row, oldest first, as ``chain.walk_carrying`` takes them: the chain's
    columns with the row's ``(fingerprint, alert_id)`` columns."""
    cursor = conn.execute(VERIFIED_ROWS)
    while batch := cursor.fetchmany(5000):
        for seq, ts, kind, data, digest, fingerprint, alert_id in batch:
            yield (seq, ts, kind, bytes(data), bytes(digest)), (fingerprint, alert_id)


HASH_AT = "SELECT hash FROM events WHERE seq = ?"
"""The hash of the row at a seq (no row when there is none)."""

# -- events: compaction ------------------------------------------------------------------

LAST_SEQ_BEFORE = "SELECT MAX(seq) FROM events WHERE ts < ?"
"""The newest row appended before a time (NULL when none)."""

DELETE_THROUGH = "DELETE FROM events WHERE seq <= ?"
"""Compaction's one DELETE, with ``events_no_delete`` lifted around it."""

ANY_COMPACTED = "SELECT 1 FROM events WHERE kind = 'log.compacted' LIMIT 1"
"""A row when rows were ever compacted out of the log."""

LAST_COMPACTED = "SELECT data FROM events WHERE kind = 'log.compacted' ORDER BY seq DESC LIMIT 1"
"""The newest ``log.compacted`` event, which names the base snapshot's seq and anchor."""


# -- snapshots -------------------------------------------------------------------------------

PUT_SNAPSHOT = "INSERT OR REPLACE INTO snapshots (seq, ts, anchor, state) VALUES (?, ?, ?, ?)"
"""A periodic snapshot: ``(seq, ts, anchor, state)``."""

PRUNE_SNAPSHOTS = (
    "DELETE FROM snapshots WHERE base = 0 AND seq NOT IN"
    " (SELECT seq FROM snapshots WHERE base = 0 ORDER BY seq DESC LIMIT ?)"
)
"""Drop all but the newest ``keep`` periodic snapshots (the base is kept)."""

SNAPSHOTS_OF_THE_LOG = (
    "SELECT s.seq, s.ts, s.anchor FROM snapshots s JOIN events e"
    " ON e.seq = s.seq AND e.hash = s.anchor WHERE s.base = 0 ORDER BY s.seq DESC"
)
"""``(seq, ts, anchor)`` of the periodic snapshots whose anchor is the hash of their row
in this log, newest first (without their state: it is read one at a time)."""

SNAPSHOT_STATE = "SELECT state FROM snapshots WHERE seq = ? AND base = 0"

PUT_SNAPSHOT_PART = "INSERT OR REPLACE INTO snapshot_parts (seq, part, bytes) VALUES (?, ?, ?)"
"""One part of a large snapshot's state, ``(seq, part, bytes)``, in a transaction of its
own; its ``snapshots`` row is written after the last."""

SNAPSHOT_PARTS = "SELECT bytes FROM snapshot_parts WHERE seq = ? ORDER BY part"
"""The parts of a snapshot's state, in order."""

DROP_SNAPSHOT_AT = "DELETE FROM snapshots WHERE seq = ? AND base = 0"
"""The periodic snapshot at a seq, before another is stored at that seq: its parts are
then loose (``DROP_A_LOOSE_PART``)."""

DROP_A_LOOSE_PART = (
    "DELETE FROM snapshot_parts WHERE rowid ="
    " (SELECT rowid FROM snapshot_parts WHERE seq NOT IN (SELECT seq FROM snapshots) LIMIT 1)"
)
"""One part of no snapshot (pruned, dropped by compaction, or never finished): a
transaction of its own each, so no commit waits behind the whole of them."""

PUT_BASE_SNAPSHOT = (
    "INSERT OR REPLACE INTO snapshots (seq, ts, anchor, state, base) VALUES (?, ?, ?, ?, 1)"
)
"""A compacted log's base snapshot: ``(seq, ts, anchor, state)``."""

DROP_SNAPSHOTS_BEFORE = "DELETE FROM snapshots WHERE seq < ?"
"""Snapshots older than a new base: they cover rows that are gone."""

BASE_SNAPSHOT = "SELECT seq, ts, anchor, state FROM snapshots WHERE base = 1 AND seq = ?"


@contextmanager
def immediate_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` before the block and ``COMMIT`` after it on ``conn`` (a
    connection in autocommit mode, ``isolation_level=None``), rolled back if the block
    or the commit raises; SQLite has already rolled back after some errors (SQLITE_FULL
    among them), and then there is nothing left to roll back."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
