"""Retention without lying: old rows move to an archive, and the move is itself logged.

Two steps. ``prepare`` checks the chain of the rows up to a time, folds their state and
writes them into a gzip JSON-lines archive that carries the hash chain (the hash before
its first row, and each row's hash): rows already appended never change, so this may
run beside the log's writer. ``commit``, in one SQLite transaction, stores a *base*
snapshot of the state of those rows, deletes them (the only place rows ever leave the
table), and appends a ``log.compacted`` event naming the archive, the seq range and the
anchor the first remaining row chains to: it must be the log's only writer at that
moment. The live state is unchanged.

The running service does both (``Ledger.compact``: ``commit`` under its lock); with no
service running, ``compact`` takes the writer's lock and does both itself.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec

from tocsin.core import events as ev
from tocsin.core.fold import fold
from tocsin.core.state import State
from tocsin.core.times import now_us
from tocsin.store import tables
from tocsin.store.chain import GENESIS, ChainBreak, ChainRow, walk
from tocsin.store.eventlog import db_path
from tocsin.store.lock import WriterLock
from tocsin.store.snapshots import decode_state, encode_state, read_base

FORMAT = "tocsin-archive/1"


class Header(msgspec.Struct, kw_only=True):
    format: str
    first_seq: int
    last_seq: int
    prev_hash: str
    last_hash: str


class ArchivedRow(msgspec.Struct, kw_only=True, array_like=False):
    seq: int
    ts: int
    kind: str
    data: str  # the event's exact stored bytes (UTF-8 JSON), so hashes can be rechecked
    hash: str


class CompactionError(RuntimeError):
    pass


@dataclass(frozen=True)
class Compacted:
    first_seq: int
    last_seq: int
    rows: int
    archive: Path


@dataclass(frozen=True)
class Prepared:
    """Rows archived, not yet removed: what ``commit`` needs to finish the move."""

    state: State
    first_seq: int
    last_seq: int
    rows: int
    anchor: bytes
    archive: Path
    sha256: str


def compact(data_dir: Path, before: int, archive: Path) -> Compacted | None:
    """Move rows appended before ``before`` (µs) into ``archive``; ``None`` if none are.
    Offline: refused while a service holds the writer's lock (it compacts itself)."""
    lock = WriterLock(data_dir)
    if not lock.acquire():
        raise CompactionError(
            f"tocsin is running on {data_dir} (it holds {lock.path}) but did not answer "
            "on NATS (is --nats-url right?); compaction must be the log's only writer"
        )
    try:
        path = db_path(data_dir)
        prepared = prepare(path, before, archive)
        if prepared is None:
            return None
        commit(path, prepared, now_us())
        return Compacted(prepared.first_seq, prepared.last_seq, prepared.rows, archive)
    finally:
        lock.release()


def prepare(path: Path, before: int, archive: Path) -> Prepared | None:
    """Check, fold and archive the rows appended before ``before``; ``None`` if there
    are none (blocking: run it in a thread)."""
    if not path.exists():
        raise CompactionError(f"no event log at {path}")
    base = read_base(path)
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        found = conn.execute(tables.LAST_SEQ_BEFORE, (before,)).fetchone()
        last_seq = found[0] if found else None
        first_seq = base.seq + 1 if base else 1
        if last_seq is None or last_seq < first_seq:
            return None
        if archive.exists():
            raise CompactionError(f"{archive} exists; archives are never overwritten")
        prev_hash = base.anchor if base else GENESIS
        # Pass 1: the chain holds, and the state of the rows to archive.
        state = decode_state(base.state) if base else State()
        anchor = prev_hash
        try:
            for seq, ts, _, data, digest in walk(
                tables.chain_rows(conn, last_seq), prev_hash, first_seq
            ):
                fold(state, seq, ts, ev.decode(data))
                anchor = digest
        except ChainBreak as broken:  # verify tells a gap from an edit
            raise CompactionError(
                f"seq {broken.seq}: hash does not chain; run tocsin verify"
            ) from broken
        # Pass 2: stream the archive, then make it durable before anything is deleted.
        partial = archive.with_name(archive.name + ".partial")
        archive.parent.mkdir(parents=True, exist_ok=True)
        header = Header(
            format=FORMAT,
            first_seq=first_seq,
            last_seq=last_seq,
            prev_hash=prev_hash.hex(),
            last_hash=anchor.hex(),
        )
        count = 0
        with gzip.open(partial, "wb") as out:
            out.write(msgspec.json.encode(header) + b"\n")
            for seq, ts, kind, data, digest in tables.chain_rows(conn, last_seq):
                row = ArchivedRow(seq=seq, ts=ts, kind=kind, data=data.decode(), hash=digest.hex())
                out.write(msgspec.json.encode(row) + b"\n")
                count += 1
        with open(partial, "rb") as written:
            os.fsync(written.fileno())
            sha256 = hashlib.file_digest(written, "sha256").hexdigest()
        os.replace(partial, archive)
    finally:
        conn.close()
    return Prepared(state, first_seq, last_seq, count, anchor, archive, sha256)


def commit(path: Path, prepared: Prepared, ts: int) -> tuple[int, bytes, ev.LogCompacted]:
    """One transaction: base snapshot in, archived rows out, the fact of it appended at
    ``ts``; returns its seq, its hash (where the next row chains on) and the fact. The
    caller is the log's only writer meanwhile (blocking: run it in a thread)."""
    event = ev.LogCompacted(
        archive=str(prepared.archive),
        first_seq=prepared.first_seq,
        last_seq=prepared.last_seq,
        anchor=prepared.anchor.hex(),
        archive_sha256=prepared.sha256,
    )
    base = encode_state(prepared.state, named=True)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=5000")
        with tables.immediate_transaction(conn):
            last = conn.execute(tables.LAST_ROW).fetchone()
            new = tables.new_rows([tables.Fact(event)], ts, last[0], bytes(last[1]))
            conn.execute(tables.PUT_BASE_SNAPSHOT, (prepared.last_seq, ts, prepared.anchor, base))
            conn.execute(tables.DROP_SNAPSHOTS_BEFORE, (prepared.last_seq,))
            conn.execute(tables.DROP_NO_DELETE_TRIGGER)
            conn.execute(tables.DELETE_THROUGH, (prepared.last_seq,))
            conn.execute(tables.NO_DELETE_TRIGGER)
            for statement, params in new.inserts():
                conn.execute(statement, params)
    finally:
        conn.close()
    return new.last_seq, new.last_hash, event


def read_archive(archive: Path) -> tuple[Header, Iterator[ArchivedRow]]:
    """The header and the rows of an archive, oldest first."""
    with gzip.open(archive, "rb") as handle:
        header = msgspec.json.decode(handle.readline(), type=Header)
    if header.format != FORMAT:
        raise CompactionError(f"{archive}: not a tocsin archive ({header.format!r})")
    return header, _archived_rows(archive)


def _archived_rows(archive: Path) -> Iterator[ArchivedRow]:
    decoder = msgspec.json.Decoder(ArchivedRow)
    with gzip.open(archive, "rb") as handle:
        handle.readline()
        for line in handle:
            yield decoder.decode(line)


def check_archive(archive: Path) -> Header:
    """Recheck an archive's own chain; raises ``CompactionError`` naming the bad seq."""
    try:
        header, rows = read_archive(archive)
        previous = bytes.fromhex(header.prev_hash)
        last_seq = header.first_seq - 1
        for row in walk(_chain_rows(rows), previous, header.first_seq):
            last_seq, previous = row[0], row[4]
    except ChainBreak as broken:
        if broken.expected is not None:
            raise CompactionError(f"seq {broken.expected}: missing from the archive") from broken
        raise CompactionError(f"seq {broken.seq}: hash does not chain") from broken
    except (OSError, EOFError, msgspec.DecodeError, ValueError) as error:
        raise CompactionError(f"unreadable archive: {error}") from error
    if previous.hex() != header.last_hash or last_seq != header.last_seq:
        raise CompactionError("the archive ends before its header says it does")
    return header


def _chain_rows(rows: Iterator[ArchivedRow]) -> Iterator[ChainRow]:
    for row in rows:
        yield row.seq, row.ts, row.kind, row.data.encode(), _stored_hash(row.hash)


def _stored_hash(text: str) -> bytes:
    """The bytes an archived row's hex ``hash`` spells, or ``b""`` (which no hash
    equals) when it is not the lowercase hex ``bytes.hex`` writes: such a row does not
    chain, as before, rather than making the archive unreadable."""
    try:
        digest = bytes.fromhex(text)
    except ValueError:
        return b""
    return digest if digest.hex() == text else b""


def verify_archives(archives: list[Path], log_path: Path) -> list[str]:
    """Every archive's chain, and the links between them: ordered by seq, each one
    starts where the previous ended (same hash), and the newest ends at the anchor the
    log's base snapshot continues from. Returns one line per archive; raises
    ``CompactionError`` at the first break."""
    checked = sorted(((check_archive(a), a) for a in archives), key=lambda item: item[0].first_seq)
    lines = []
    for (header, archive), following in itertools.zip_longest(checked, checked[1:]):
        if following is not None:
            if (following[0].first_seq, following[0].prev_hash) != (
                header.last_seq + 1,
                header.last_hash,
            ):
                raise CompactionError(f"{following[1]} does not continue {archive}")
        else:
            base = read_base(log_path)
            if base is None or (base.seq, base.anchor.hex()) != (header.last_seq, header.last_hash):
                raise CompactionError(
                    f"{archive} ends at seq {header.last_seq}, but the log continues from "
                    f"{'nothing archived' if base is None else f'seq {base.seq}'}: "
                    "pass every archive since, oldest first"
                )
        lines.append(f"{archive}: seq {header.first_seq}..{header.last_seq}, chain intact, linked")
    return lines
