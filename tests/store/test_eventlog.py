"""How the log writes a batch: one INSERT (its own transaction) or, past 2,048 rows, a
few multi-row INSERTs in one transaction, kept apart
from other uses of the connection; the rows come out as if inserted one by one, and a
transaction once started ends with the writer's position moved, whoever waited."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from pathlib import Path

import pytest

from tocsin.core import events as ev
from tocsin.store import forensics, tables
from tocsin.store.eventlog import EventLog, Fact, LogWriteError
from tocsin.store.tables import PAGE_BYTES, SCHEMA, insert_sizes


def test_a_batch_is_inserted_in_a_few_statements_of_cached_shapes() -> None:
    for rows in (0, 1, 3, 255, 256, 257, 1000, 2001, 2048, 5001):
        sizes = insert_sizes(rows)
        assert sum(sizes) == rows
        assert sizes[:-1] == [2048] * (len(sizes) - 1)  # full ones, then the rest
        assert len(sizes) == -(-rows // 2048)


async def test_a_large_batch_is_chained_and_found_row_by_row(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    log = await EventLog.open(path)
    facts = [Fact(ev.AlertResolveIgnored(fingerprint=f"f{i}"), in_seq=i + 1) for i in range(601)]
    assert await log.append(facts, ts=1) == list(range(1, 602))
    assert await log.append(facts[:3], ts=2) == [602, 603, 604]
    assert (log.last_seq, log.max_in_seq) == (604, 601)
    found = await log.facts_of_inbound(range(1, 602))
    assert len(found) == 601
    assert [found[i][0].event for i in (1, 301, 601)] == [facts[i].event for i in (0, 300, 600)]
    assert [row.seq for row in found[1]] == [1, 602]  # the same in_seq twice: both rows
    await log.close()
    assert forensics.verify(path).ok


async def test_a_commit_whose_caller_was_cancelled_still_moves_the_position(
    tmp_path: Path,
) -> None:
    """A cancelled waiter cannot cut a transaction in half; the commit it started lands,
    and the next batch is chained after it, not written over its seqs."""
    path = tmp_path / "log.db"
    log = await EventLog.open(path)
    facts = [Fact(ev.AlertResolveIgnored(fingerprint=f"f{i}"), in_seq=i + 1) for i in range(300)]
    waiter = asyncio.create_task(log.append(facts, ts=1))
    await asyncio.sleep(0)  # the transaction is under way
    waiter.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiter
    more = [Fact(ev.AlertResolveIgnored(fingerprint="g"), in_seq=301)]
    assert await log.append(more, ts=2) == [301]
    assert (log.last_seq, log.max_in_seq) == (301, 301)
    await log.close()
    assert forensics.verify(path).ok


async def test_a_batch_that_does_not_fit_leaves_no_row_behind(tmp_path: Path) -> None:
    """A batch of one statement commits on its own (autocommit); when the disk is full
    halfway through it, none of its rows stay and the position does not move."""
    path = tmp_path / "log.db"
    log = await EventLog.open(path)
    assert await log.append([Fact(ev.AlertResolveIgnored(fingerprint="a"), in_seq=1)], ts=1) == [1]
    await log.set_page_limit(await log.set_page_limit(None))  # full at today's size
    big = [
        Fact(ev.AlertResolveIgnored(fingerprint=f"{i}" * 3000), in_seq=i + 2) for i in range(200)
    ]
    with pytest.raises(LogWriteError):
        await log.append(big, ts=2)
    assert (log.last_seq, log.max_in_seq) == (1, 1)
    assert await log.facts_of_inbound(range(2, 202)) == {}
    await log.set_page_limit(None)
    assert await log.append(big[:2], ts=3) == [2, 3]
    await log.close()
    assert forensics.verify(path).ok


def page_bytes(path: Path) -> int:
    """The page size of the log file at ``path``, as SQLite reads it."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        return int(conn.execute("PRAGMA page_size").fetchone()[0])


async def test_a_new_log_has_large_pages_and_an_old_log_keeps_its_own(tmp_path: Path) -> None:
    """A new log is made with ``PAGE_BYTES`` pages, which cost the writer less CPU per
    row than SQLite's 4 KiB (catches the page size set after WAL mode or not at all: a
    new file then has 4 KiB pages); a log made with 4 KiB pages by an older version is
    opened, appended to and verified as it is (catches a change of page size tried on
    a WAL file, which SQLite cannot make)."""
    new = tmp_path / "new.db"
    log = await EventLog.open(new)
    await log.append([Fact(ev.AlertResolveIgnored(fingerprint="a"), in_seq=1)], ts=1)
    await log.close()
    assert page_bytes(new) == PAGE_BYTES == 16384

    old = tmp_path / "old.db"
    with contextlib.closing(sqlite3.connect(old, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")  # as an older version made its logs
        conn.executescript(SCHEMA)
    log = await EventLog.open(old)
    await log.append([Fact(ev.AlertResolveIgnored(fingerprint="b"), in_seq=1)], ts=1)
    await log.close()
    assert page_bytes(old) == 4096
    assert forensics.verify(old).ok
    assert [row.seq for row in forensics.replay(old)] == [1]


def _rows(log_seq: int, log_hash: bytes, fingerprint: str, in_seq: int) -> tables.NewRows:
    fact = Fact(ev.AlertResolveIgnored(fingerprint=fingerprint), in_seq=in_seq)
    return tables.new_rows([fact], in_seq, log_seq, log_hash)


def _temporary_files() -> list[str]:
    """SQLite's temporary files this process holds open (``etilqs_*``, deleted as soon
    as they are opened, so found by their descriptors)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if "etilqs_" in target:
                found.append(target)
    return found


async def test_a_transaction_of_several_inserts_opens_no_temporary_file(tmp_path: Path) -> None:
    """A batch past 2,048 rows is several INSERTs in one transaction, and SQLite keeps a
    statement journal for each; past 64 KiB it goes to a temporary file (in /var/tmp or
    /tmp) unless the connection keeps temporary storage in memory. The writer does: a
    commit needs no writable temporary directory. Looked for at COMMIT, when such a
    file would still be open. Catches the writer's connection without
    ``temp_store=MEMORY``."""
    log = await EventLog.open(tmp_path / "log.db")
    open_at_commit: list[list[str]] = []

    def at_statement(sql: str) -> None:
        if sql == "COMMIT":
            open_at_commit.append(_temporary_files())

    log._writer.conn.set_trace_callback(at_statement)
    facts = [
        Fact(ev.AlertResolveIgnored(fingerprint=f"{i:032x}"), in_seq=i + 1) for i in range(5000)
    ]
    new = tables.new_rows(facts, 1, log.last_seq, log.last_hash)
    assert len(new.inserts()) == 3
    log.advance(await asyncio.wait_for(log.append_rows(new), timeout=30))
    assert open_at_commit == [[]]
    await log.close()


async def test_rows_held_share_the_next_rows_transaction(tmp_path: Path) -> None:
    """Rows queued with a ``wait`` are not written on their own before it passes: the
    rows queued next take them into their transaction, chained after them (the
    recorder's outcomes beside the router's events, issue #20)."""
    path = tmp_path / "log.db"
    log = await EventLog.open(path)
    held = _rows(log.last_seq, log.last_hash, "held", 1)
    waiting = log.append_rows(held, wait=600.0)
    done, _ = await asyncio.wait([waiting], timeout=0.2)
    assert not done  # held, well within its wait
    after = _rows(held.last_seq, held.last_hash, "next", 2)
    written = await asyncio.wait_for(asyncio.gather(waiting, log.append_rows(after)), timeout=10)
    assert [new.last_seq for new in written] == [1, 2]
    for new in written:
        log.advance(new)
    assert sorted(await log.facts_of_inbound([1, 2])) == [1, 2]
    await log.close()
    assert forensics.verify(path).ok


async def test_rows_held_are_written_alone_once_their_wait_is_over(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    log = await EventLog.open(path)
    held = _rows(log.last_seq, log.last_hash, "held", 1)
    log.advance(await asyncio.wait_for(log.append_rows(held, wait=0.05), timeout=10))
    other = sqlite3.connect(path)
    assert other.execute("SELECT count(*) FROM events").fetchone() == (1,)
    other.close()
    await log.close()
    assert forensics.verify(path).ok


async def test_rows_held_are_written_before_a_lookup_and_behind_rows_queued_meanwhile(
    tmp_path: Path,
) -> None:
    """Rows held while a commit is queued but not yet run are written after it (the
    commit takes the list of held rows as it runs, not as it was queued), and any other
    job, a lookup here, writes what is held first."""
    path = tmp_path / "log.db"
    log = await EventLog.open(path)
    seq, digest, queued = log.last_seq, log.last_hash, []
    for i in range(1, 201):
        new = _rows(seq, digest, f"f{i}", i)
        queued.append(log.append_rows(new, wait=600.0 if i % 2 else 0.0))
        seq, digest = new.last_seq, new.last_hash
    queued.append(log.append_rows(_rows(seq, digest, "held last", 201), wait=600.0))
    found = await asyncio.wait_for(log.facts_of_inbound(range(1, 202)), timeout=10)
    assert sorted(found) == list(range(1, 202))
    for new in await asyncio.wait_for(asyncio.gather(*queued), timeout=10):
        log.advance(new)
    await log.close()
    assert forensics.verify(path).ok


async def test_rows_held_fail_with_the_transaction_that_took_them(tmp_path: Path) -> None:
    """Held rows and the rows that took them into their transaction are written
    together or not at all; the next rows chain on the last row written."""
    path = tmp_path / "log.db"
    log = await EventLog.open(path)
    assert await log.append([Fact(ev.AlertResolveIgnored(fingerprint="a"), in_seq=1)], ts=1) == [1]
    await log.set_page_limit(await log.set_page_limit(None))  # full at today's size
    held = _rows(log.last_seq, log.last_hash, "held", 2)
    big = [
        Fact(ev.AlertResolveIgnored(fingerprint=f"{i}" * 3000), in_seq=i + 3) for i in range(200)
    ]
    waiting = log.append_rows(held, wait=600.0)
    failing = log.append_rows(tables.new_rows(big, 2, held.last_seq, held.last_hash))
    for future in (waiting, failing):
        with pytest.raises(LogWriteError):
            await asyncio.wait_for(future, timeout=10)
    await log.set_page_limit(None)
    assert await log.facts_of_inbound(range(2, 203)) == {}
    assert await log.append([Fact(ev.AlertResolveIgnored(fingerprint="b"), in_seq=2)], ts=3) == [2]
    await log.close()
    assert forensics.verify(path).ok
