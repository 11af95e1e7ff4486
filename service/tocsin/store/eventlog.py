"""The event log: an append-only SQLite table, the only source of truth.

- UPDATE and DELETE are refused by triggers; rows only ever arrive by ``append`` (and
  compaction's ``log.compacted`` row), through the one writer, ``tables.new_rows``.
- Each row's ``hash`` chains it to the previous row: SHA-256 over the previous hash,
  the seq, the append time, the kind and the canonical event bytes.
- ``append`` writes a whole batch in one transaction (group commit) with WAL and
  ``synchronous=FULL``: when it returns, the facts are on disk. The ledger chains its
  batches' rows as it decides them and queues them whole (``append_rows``): each is
  written the moment the one before it is, or refused if that one was not.
- ``in_seq`` / ``out_seq`` record the JetStream stream sequence that produced a fact, in
  the same transaction, which is how a redelivered message is recognised.

The table's schema, the writer and every statement run on it are in ``tables``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from tocsin.core import events as ev
from tocsin.store import tables
from tocsin.store.chain import GENESIS
from tocsin.store.tables import NO_DELETE_TRIGGER, SCHEMA, NewRows
from tocsin.store.tables import Fact as Fact  # appended facts are built by this name

T = TypeVar("T")


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


class _Writer:
    """The log's connection, used only on a thread of its own: every job (a whole
    transaction, a lookup, a pragma) is one function run there, in the order queued,
    one at a time, so no job sees another's transaction half done.

    aiosqlite ran each statement as a job of its own, and each one's result waited for
    a turn of the event loop before the next was sent: a commit of 2,000 rows (ten
    INSERTs between BEGIN and COMMIT) took twelve turns, and a batch queued behind it
    one more, while the router decided the next batch for 15-30 ms without yielding
    (issue #20, W2). Here a batch's rows are queued the moment they are decided and
    written the moment the batch before is.

    ``seq`` and ``hash`` are the last row written, as the thread knows it: the next
    rows must chain on them, which is how rows queued behind a failed commit are
    refused without the event loop's help."""

    def __init__(self, path: Path, busy_timeout_ms: int) -> None:
        self._path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tocsin-log")
        self._conn: sqlite3.Connection | None = None
        self.seq, self.hash = 0, GENESIS
        # Rows that may wait for the next commit (``hold``), with the futures told when
        # they are written: touched on the writer's thread only.
        self._held: list[tuple[NewRows, concurrent.futures.Future[NewRows]]] = []

    @property
    def conn(self) -> sqlite3.Connection:
        """The connection (on the writer's thread only)."""
        if self._conn is None:
            raise sqlite3.ProgrammingError("the event log is closed")
        return self._conn

    def submit(self, job: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Queue ``job(*args)`` on the writer's thread now; its result, once run. Rows
        held (``hold``) are written before any job runs but ``write``, which writes
        them in its own transaction."""
        if job != self.write:
            return asyncio.get_running_loop().run_in_executor(
                self._thread, self._after_held, job, *args
            )
        return asyncio.get_running_loop().run_in_executor(self._thread, job, *args)

    def hold(self, new: NewRows, wait: float) -> asyncio.Future[NewRows]:
        """Queue ``new`` to be committed in the transaction of the next rows queued
        after it (``write``), or on their own once ``wait`` seconds have passed with no
        such rows: a commit and its ``fsync`` shared, not one queued behind the other
        (the recorder's outcomes beside the router's lone events, issue #20, W3). Every
        other job writes them first. The future is done once they are on disk, or has
        the ``LogWriteError`` of the transaction that failed them."""
        written: concurrent.futures.Future[NewRows] = concurrent.futures.Future()
        self._thread.submit(self._hold, new, written)
        loop = asyncio.get_running_loop()
        loop.call_later(wait, self._write_held_later)
        return asyncio.wrap_future(written, loop=loop)

    def _hold(self, new: NewRows, written: concurrent.futures.Future[NewRows]) -> None:
        """(A job.) ``self._held`` read here, on the thread: a commit swaps the list."""
        self._held.append((new, written))

    def _write_held_later(self) -> None:
        with contextlib.suppress(RuntimeError):  # the thread is shut down: nothing held
            self._thread.submit(self._write_held)

    def _after_held(self, job: Callable[..., T], *args: Any) -> T:
        """(A job.) ``job(*args)`` once the rows held are written (or refused)."""
        if self._held:
            self._write_held()
        return job(*args)

    def _write_held(self) -> None:
        """(A job.) Commit the rows held, if any, in one transaction; their futures say
        how it went."""
        if self._held:
            with contextlib.suppress(LogWriteError):  # told to the held rows' futures
                self._write_with_held(None)

    async def run(self, job: Callable[..., T], *args: Any) -> T:
        """Run ``job(*args)`` on the writer's thread, once every job queued before it
        has run."""
        return await self.submit(job, *args)

    def in_turns(
        self, steps: Callable[[sqlite3.Connection], Iterator[None]]
    ) -> asyncio.Future[None]:
        """Queue a long write in steps: ``steps(conn)`` is started as a job, and each of
        its steps (a ``next``) is a job queued behind whatever was queued meanwhile, so
        a batch's rows wait behind one step, not the whole. Done when it ends; its
        error, if a step raises."""
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        to_start = [steps]  # emptied at the start: the steps hold what they need, and
        started: Iterator[None] | None = None  # free it as they go

        def turn() -> None:
            nonlocal started
            try:
                if self._held:
                    self._write_held()
                if started is None:
                    started = to_start.pop()(self.conn)
                next(started)
                self._thread.submit(turn)  # RuntimeError once the thread is shut down
            except StopIteration:
                done.set_result(None)
            except BaseException as error:
                done.set_exception(error)

        self._thread.submit(turn)
        return asyncio.wrap_future(done)

    def connect(self) -> tuple[int, bytes, int, int, int]:
        """(A job.) Open the file; its ``position``."""
        # The writer's INSERTs are 23 texts (``tables.statement_rows``): keep them
        # prepared, and not every shape of the rarer lookups (an IN list per count).
        conn = sqlite3.connect(
            self._path, isolation_level=None, cached_statements=64, check_same_thread=False
        )
        try:
            conn.execute(tables.NEW_FILE)  # before WAL mode, which writes the first page
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            # A transaction of several INSERTs (a batch past 2,048 rows, or rows held
            # for the next commit) keeps a statement journal for each, and SQLite
            # spills one past 64 KiB (four 16 KiB pages) to a new temporary file in
            # /var/tmp or /tmp: a commit would then need a writable temporary
            # directory, and W3 opened ~300 such files in 20 s. In memory, it holds at
            # most the pages one INSERT changes (up to ~1 MiB in a storm), emptied as
            # each INSERT ends.
            conn.execute("PRAGMA temp_store=MEMORY")
            conn.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_ms)}")
            conn.executescript(SCHEMA + NO_DELETE_TRIGGER)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return self.position()

    def position(self) -> tuple[int, bytes, int, int, int]:
        """(A job.) ``(seq, hash, ts)`` of the file's last row and the highest stream
        seqs it records; the next rows chain on that row."""
        conn = self.conn
        last = conn.execute(tables.LAST_ROW).fetchone()
        max_in, max_out = conn.execute(tables.STREAM_SEQ_MAXIMA).fetchone()
        seq, digest, ts = (last[0], bytes(last[1]), last[2]) if last else (0, GENESIS, 0)
        self.seq, self.hash = seq, digest
        return seq, digest, ts, int(max_in), int(max_out)

    def write(self, new: NewRows) -> NewRows:
        """(A job.) Commit ``new``'s rows in one transaction, if they chain on the last
        row written; ``LogWriteError`` if not, or if SQLite refuses them (nothing of
        them is then written)."""
        self._write_with_held(new)
        return new

    def _write_with_held(self, new: NewRows | None) -> None:
        """Commit the rows held and then ``new`` (if any) in one transaction, each
        chained on the one before; ``LogWriteError`` (told to every held future too)
        if they do not follow the last row written or SQLite refuses them: nothing of
        them is then written."""
        held, self._held = self._held, []
        batches = [rows for rows, _ in held]
        if new is not None:
            batches.append(new)
        try:
            seq, digest = self.seq, self.hash
            statements: list[tuple[str, list[object]]] = []
            for rows in batches:
                if rows.after_seq != seq or rows.after_hash != digest:
                    raise LogWriteError(
                        f"rows chained on seq {rows.after_seq}, not on the log's last,"
                        f" {seq}: a batch before them was not committed; not committed"
                    )
                if rows.rows:
                    statements += rows.inserts()
                    seq, digest = rows.last_seq, rows.last_hash
            if statements:
                try:
                    _insert(self.conn, statements)
                except sqlite3.Error as error:
                    raise LogWriteError(f"event log write failed: {error}") from error
            self.seq, self.hash = seq, digest
        except BaseException as error:
            for _, written in held:
                written.set_exception(error)
            raise
        for rows, written in held:
            written.set_result(rows)

    def write_facts(self, facts: Sequence[Fact], ts: int) -> NewRows:
        """(A job.) ``facts`` as rows chained on the last row written, committed."""
        return self.write(tables.new_rows(facts, ts, self.seq, self.hash))

    def moved(self, seq: int, digest: bytes) -> None:
        """(A job.) Another connection appended the log's last row."""
        self.seq, self.hash = seq, digest

    def close(self) -> None:
        """(A job.)"""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def stop(self) -> None:
        self._thread.shutdown(wait=False)


def _insert(conn: sqlite3.Connection, statements: Sequence[tuple[str, list[object]]]) -> None:
    """A batch's INSERTs as one transaction: a single statement is its own
    (autocommit); more run between BEGIN and COMMIT, rolled back on failure."""
    if len(statements) == 1:
        conn.execute(*statements[0])
        return
    with tables.immediate_transaction(conn):
        for statement, params in statements:
            conn.execute(statement, params)


class EventLog:
    """The single writer of one log, on a thread of its own (``_Writer``): every use
    of the connection is a job there, run in the order queued.

    ``last_seq``, ``last_hash``, ``last_ts`` and the stream seq maxima are the log's
    as the event loop knows it: they move when a commit's result reaches the loop, in
    the order the commits were queued. Not safe for concurrent ``append`` calls: the
    ledger orders them (see ``ledger.Ledger``)."""

    def __init__(
        self,
        writer: _Writer,
        last_seq: int,
        last_hash: bytes,
        max_in_seq: int,
        max_out_seq: int,
        last_ts: int = 0,
    ) -> None:
        self._writer = writer
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
        writer = _Writer(path, busy_timeout_ms)
        try:
            seq, digest, ts, max_in, max_out = await writer.run(writer.connect)
        except BaseException:
            writer.stop()
            raise
        return cls(writer, seq, digest, max_in, max_out, ts)

    async def close(self) -> None:
        try:
            await self._writer.run(self._writer.close)
        finally:
            self._writer.stop()

    async def moved(self, last_seq: int, last_hash: bytes) -> None:
        """Another connection appended the log's last row (compaction's ``log.compacted``,
        written while the ledger held every other write back): go on from it."""
        await self._writer.run(self._writer.moved, last_seq, last_hash)
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
        return await self._writer.run(_page_limit, self._writer, limit)

    async def set_query_only(self, on: bool) -> None:
        """Make the writer's connection refuse writes as a read-only file does
        (SQLITE_READONLY); how the tests make the file system read-only."""
        await self._writer.run(_pragma, self._writer, f"PRAGMA query_only = {int(on)}")

    async def append(self, facts: Sequence[Fact], ts: int) -> list[int]:
        """Commit ``facts`` in one transaction; returns their seqs. On failure nothing is
        committed, the writer's position is unchanged, and ``LogWriteError`` is raised.
        Once queued, the transaction runs to its end even if the caller is cancelled
        (the position moves with it)."""
        if not facts:
            return []
        return await asyncio.shield(asyncio.ensure_future(self._append(facts, ts)))

    async def _append(self, facts: Sequence[Fact], ts: int) -> list[int]:
        new = await self._writer.run(self._writer.write_facts, facts, ts)
        self.advance(new)
        return [row[0] for row in new.rows]

    def write_in_turns(
        self, steps: Callable[[sqlite3.Connection], Iterator[None]]
    ) -> asyncio.Future[None]:
        """Queue a long write (a snapshot: ``snapshots.storing``) on the log's thread in
        steps, each a transaction of its own run between the commits queued meanwhile
        (``_Writer.in_turns``)."""
        return self._writer.in_turns(steps)

    def append_rows(self, new: NewRows, wait: float = 0.0) -> asyncio.Future[NewRows]:
        """Queue rows already chained (``tables.new_rows``) to be committed in one
        transaction right after every job queued before them, without waiting for the
        event loop; the future is done once they are on disk, and its caller then
        moves the position (``advance``), in the order the rows were queued. They must
        follow the last row written (``new.after_seq`` and ``after_hash``), else
        nothing is written and the future's ``LogWriteError`` says so: rows queued
        behind a commit that failed. Once queued, they are written or refused whether
        or not anyone awaits the future. With a ``wait``, they may wait that long for
        the next rows queued, to be committed in their transaction (``_Writer.hold``)."""
        if wait > 0:
            return self._writer.hold(new, wait)
        return self._writer.submit(self._writer.write, new)

    def advance(self, new: NewRows) -> None:
        """``new``'s rows are committed: the position moves past them. The ledger
        calls it for each batch in turn, right before its listeners, which read the
        position as that batch's last row."""
        if not new.rows:
            return
        self.last_seq, self._last_hash, self.last_ts = new.last_seq, new.last_hash, new.rows[-1][1]
        self.max_in_seq = max(self.max_in_seq, new.max_in_seq)
        self.max_out_seq = max(self.max_out_seq, new.max_out_seq)

    async def resync(self) -> None:
        """Take the position from the file, once nothing is queued: after a commit
        whose caller gave up before it could ``advance``."""
        seq, digest, ts, max_in, max_out = await self._writer.run(self._writer.position)
        self.last_seq, self._last_hash, self.last_ts = seq, digest, ts
        self.max_in_seq, self.max_out_seq = max_in, max_out

    async def facts_of_inbound(self, in_seqs: Iterable[int]) -> dict[int, list[Row]]:
        """Logged facts of the given inbound stream seqs (those already committed)."""
        return await self._by_column("in_seq", in_seqs)

    async def facts_of_outcomes(self, out_seqs: Iterable[int]) -> dict[int, list[Row]]:
        return await self._by_column("out_seq", out_seqs)

    async def _by_column(
        self, column: Literal["in_seq", "out_seq"], values: Iterable[int]
    ) -> dict[int, list[Row]]:
        wanted = sorted(set(values))
        rows = await self._writer.run(_rows_of, self._writer, column, wanted)
        found: dict[int, list[Row]] = {}
        for key, seq, ts, kind, data in rows:
            found.setdefault(key, []).append(Row(seq, ts, kind, ev.decode(data)))
        return found


# Jobs of the writer's thread (``_Writer.run``).


def _pragma(writer: _Writer, statement: str) -> None:
    writer.conn.execute(statement)


def _page_limit(writer: _Writer, pages: int) -> int:
    conn = writer.conn
    conn.execute(f"PRAGMA max_page_count={int(pages)}")
    row = conn.execute("PRAGMA page_count").fetchone()
    return int(row[0]) if row else 0


def _rows_of(
    writer: _Writer, column: Literal["in_seq", "out_seq"], wanted: list[int]
) -> list[tuple[int, int, int, str, bytes]]:
    """``(stream seq, seq, ts, kind, data)`` of the rows of ``wanted`` stream seqs."""
    out: list[tuple[int, int, int, str, bytes]] = []
    for start in range(0, len(wanted), tables.IN_LIST_MAX):
        chunk = wanted[start : start + tables.IN_LIST_MAX]
        out += writer.conn.execute(tables.rows_of_stream_seqs(column, len(chunk)), chunk)
    return out


# The bench scripts drive the log's own statements by these names.
_insert_sizes, _insert_sql = tables.insert_sizes, tables.insert_sql
