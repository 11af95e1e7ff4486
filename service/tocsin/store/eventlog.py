"""The event log: an append-only SQLite table, the only source of truth.

- UPDATE and DELETE are refused by triggers; rows only ever arrive by ``append`` (and
  compaction's ``log.compacted`` row), through the one writer, ``tables.new_rows``.
- Each row's ``hash`` chains it to the previous row: SHA-256 over the previous hash,
  the seq, the append time, the kind and the canonical event bytes.
- ``append`` writes a whole batch in one transaction (group commit) with WAL and
  ``synchronous=FULL``: when it returns, the facts are on disk.
- ``in_seq`` / ``out_seq`` record the JetStream stream sequence that produced a fact, in
  the same transaction, which is how a redelivered message is recognised.

The table's schema, the writer and every statement run on it are in ``tables``.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import aiosqlite

from tocsin.core import events as ev
from tocsin.store import tables
from tocsin.store.chain import GENESIS
from tocsin.store.tables import NO_DELETE_TRIGGER, SCHEMA
from tocsin.store.tables import Fact as Fact  # appended facts are built by this name


class LogWriteError(RuntimeError):
    """The log could not commit a batch; nothing of the batch is in it."""


@dataclass(frozen=True, slots=True)
class Row:
    seq: int
    ts: int
    kind: str
    event: ev.Event


def db_path(data_dir: Path) -> Path:
    return data_dir / "tocsin.db"


def partition_dir(data_dir: Path, partition: int) -> Path:
    """Where the log of ``partition`` lives (DESIGN.md section 17): ``<data-dir>/p<k>``."""
    return data_dir / f"p{partition}"


def partition_logs(data_dir: Path) -> list[tuple[int, Path]]:
    """The partitions' logs a data dir holds, by partition, when it holds no log of its
    own (``[]`` otherwise): what ``replay`` and ``verify`` read across partitions."""
    if db_path(data_dir).exists() or not data_dir.is_dir():
        return []
    found = []
    for child in data_dir.iterdir():
        named = re.fullmatch(r"p(\d+)", child.name)
        if named is not None and db_path(child).exists():
            found.append((int(named.group(1)), db_path(child)))
    return sorted(found)


class EventLog:
    """The single writer of one log, through aiosqlite's thread.

    A transaction (BEGIN, the inserts, COMMIT) is several jobs on that thread; the
    ``_transaction`` lock keeps every other use of the connection (a lookup of
    redelivered seqs, a pragma) out from between them, where it would see rows that
    may still be rolled back. Not safe for concurrent ``append`` calls: the ledger
    orders them (see ``ledger.Ledger``)."""

    def __init__(
        self,
        conn: aiosqlite.Connection,
        last_seq: int,
        last_hash: bytes,
        max_in_seq: int,
        max_out_seq: int,
        last_ts: int = 0,
    ) -> None:
        self._conn = conn
        self._transaction = asyncio.Lock()
        self.last_seq = last_seq
        self._last_hash = last_hash
        self.last_ts = last_ts  # the append time of the last committed row (0: none)
        self.max_in_seq = max_in_seq
        self.max_out_seq = max_out_seq

    @classmethod
    async def open(cls, path: Path, busy_timeout_ms: int = 5000) -> EventLog:
        """Open (creating if needed) the log; a write waits up to ``busy_timeout_ms`` for
        a lock held by another process before it fails."""
        path.parent.mkdir(parents=True, exist_ok=True)
        # The writer's INSERTs are 20 texts (``tables.statement_rows``): keep them prepared,
        # and not every shape of the rarer lookups (an IN list per count) for ever.
        conn = await aiosqlite.connect(path, isolation_level=None, cached_statements=64)
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=FULL")
        await conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        await conn.executescript(SCHEMA + NO_DELETE_TRIGGER)
        async with conn.execute(tables.LAST_ROW) as cursor:
            last = await cursor.fetchone()
        async with conn.execute(tables.STREAM_SEQ_MAXIMA) as cursor:
            maxima = await cursor.fetchone()
        assert maxima is not None
        last_seq, last_hash, last_ts = (
            (last[0], bytes(last[1]), last[2]) if last else (0, GENESIS, 0)
        )
        return cls(conn, last_seq, last_hash, int(maxima[0]), int(maxima[1]), last_ts)

    async def close(self) -> None:
        async with self._transaction:
            await self._conn.close()

    async def moved(self, last_seq: int, last_hash: bytes) -> None:
        """Another connection appended the log's last row (compaction's ``log.compacted``,
        written while the ledger held every other write back): go on from it."""
        async with self._transaction:
            self.last_seq, self._last_hash = last_seq, last_hash

    @property
    def last_hash(self) -> bytes:
        """The hash of the last committed row (a snapshot's anchor)."""
        return self._last_hash

    async def set_page_limit(self, pages: int | None) -> int:
        """Cap the file at ``pages`` pages (``PRAGMA max_page_count``; None lifts the
        cap); returns the current page count. A storage quota, and how the tests make
        the disk "full"."""
        limit = pages if pages is not None else 4294967294
        async with self._transaction:
            await self._conn.execute(f"PRAGMA max_page_count={int(limit)}")
            async with self._conn.execute("PRAGMA page_count") as cursor:
                row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def set_query_only(self, on: bool) -> None:
        """Make the writer's connection refuse writes as a read-only file does
        (SQLITE_READONLY); how the tests make the file system read-only."""
        async with self._transaction:
            await self._conn.execute(f"PRAGMA query_only = {int(on)}")

    async def append(self, facts: Sequence[Fact], ts: int) -> list[int]:
        """Commit ``facts`` in one transaction; returns their seqs. On failure nothing is
        committed, the writer's position is unchanged, and ``LogWriteError`` is raised.
        Once started, the transaction runs to its end even if the caller is cancelled
        (the position moves with it)."""
        if not facts:
            return []
        return await asyncio.shield(asyncio.ensure_future(self._write(facts, ts)))

    async def _write(self, facts: Sequence[Fact], ts: int) -> list[int]:
        """Rows chained from the writer's position (``tables.new_rows``), then their
        INSERTs, then the position moves: all under ``_transaction``, so a write queued
        behind one whose caller gave up starts from where that one ended."""
        async with self._transaction:
            new = tables.new_rows(
                facts, ts, self.last_seq, self._last_hash, self.max_in_seq, self.max_out_seq
            )
            inserts = new.inserts()
            try:
                if len(inserts) == 1:
                    # One statement is its own transaction (autocommit): one job on the
                    # writer's thread instead of four (BEGIN, INSERT, INSERT, COMMIT).
                    await self._conn.execute(*inserts[0])
                else:
                    await self._in_transaction(inserts)
            except sqlite3.Error as error:
                raise LogWriteError(f"event log write failed: {error}") from error
            self.last_seq, self._last_hash, self.last_ts = new.last_seq, new.last_hash, ts
            self.max_in_seq, self.max_out_seq = new.max_in_seq, new.max_out_seq
        return [row[0] for row in new.rows]

    async def _in_transaction(self, statements: Sequence[tuple[str, list[object]]]) -> None:
        """More rows than one statement carries: their statements between BEGIN and
        COMMIT."""
        conn = self._conn
        await conn.execute("BEGIN IMMEDIATE")
        try:
            for statement, params in statements:
                await conn.execute(statement, params)
            await conn.execute("COMMIT")
        except BaseException:
            # SQLite already rolled back on some errors (SQLITE_FULL among them).
            if conn.in_transaction:
                await conn.execute("ROLLBACK")
            raise

    async def facts_of_inbound(self, in_seqs: Iterable[int]) -> dict[int, list[Row]]:
        """Logged facts of the given inbound stream seqs (those already committed)."""
        return await self._by_column("in_seq", in_seqs)

    async def facts_of_outcomes(self, out_seqs: Iterable[int]) -> dict[int, list[Row]]:
        return await self._by_column("out_seq", out_seqs)

    async def _by_column(
        self, column: Literal["in_seq", "out_seq"], values: Iterable[int]
    ) -> dict[int, list[Row]]:
        wanted = sorted(set(values))
        found: dict[int, list[Row]] = {}
        async with self._transaction:
            for start in range(0, len(wanted), tables.IN_LIST_MAX):
                chunk = wanted[start : start + tables.IN_LIST_MAX]
                async with self._conn.execute(
                    tables.rows_of_stream_seqs(column, len(chunk)), chunk
                ) as cursor:
                    async for key, seq, ts, kind, data in cursor:
                        found.setdefault(key, []).append(Row(seq, ts, kind, ev.decode(data)))
        return found


# The bench scripts drive the log's own statements by these names.
_insert_sizes, _insert_sql = tables.insert_sizes, tables.insert_sql
