"""The ledger's pipeline: batches are decided one after another while earlier ones
commit, commit strictly in the order decided, and a failed commit takes every batch
decided on top of it down with it (a failure epoch), leaving state == fold(log)."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import T0, add_firing, wait_until
from tocsin.core.fold import fold_stored
from tocsin.core.state import State
from tocsin.store import forensics
from tocsin.store import ledger as ledger_module
from tocsin.store.eventlog import LogWriteError, db_path
from tocsin.store.ledger import Batch, Ledger, load_state
from tocsin.store.snapshots import decode_state, read_snapshots

_ids = itertools.count()


def decide(ledger: Ledger, batch: Batch, first: int, count: int) -> None:
    """Add the facts of ``count`` firing events over 5 fingerprints to ``batch``."""
    for i in range(first, first + count):
        add_firing(
            batch,
            ledger.state,
            i,
            hosts=5,
            timestamp=T0 + i * 60_000_000,
            new_id=lambda: f"id{next(_ids)}",
            severity="warning" if i % 3 else "critical",
        )


def received(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT json_extract(CAST(data AS TEXT), '$.summary') FROM events"
            " WHERE kind = 'alert.received' ORDER BY seq"
        )
        return [row[0] for row in rows]


async def test_batches_decided_while_others_commit_commit_in_the_order_decided(
    tmp_path: Path,
) -> None:
    path = db_path(tmp_path)
    ledger = await Ledger.open(path)
    batches = []
    for n in range(4):
        async with ledger.deciding() as batch:
            decide(ledger, batch, n * 10, 10)
        batches.append(batch)
    assert ledger.event_log.last_seq < batches[-1].next_seq - 1  # decided ahead of the log
    for batch in reversed(batches):
        await ledger.committed(batch)
    assert ledger.event_log.last_seq == batches[-1].next_seq - 1
    assert received(path) == [f"event {i}" for i in range(40)]
    assert ledger.state == load_state(path)
    assert forensics.verify(path).ok  # one hash chain, in seq order
    await ledger.close()


def rows_in(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])


def holding_the_loop_until(path: Path, rows: int, timeout: float = 30.0) -> int:
    """Wait, blocking the event loop's thread (no turn of the loop meanwhile), until
    the log at ``path`` holds ``rows`` rows or ``timeout`` passes; how many it holds."""
    deadline = time.monotonic() + timeout
    while (held := rows_in(path)) < rows and time.monotonic() < deadline:
        time.sleep(0.01)
    return held


async def test_a_decided_batch_is_written_without_a_turn_of_the_event_loop(
    tmp_path: Path,
) -> None:
    """Catches a commit that needs the event loop between its parts: rows encoded by
    a task of the loop's, or a transaction of several statements sent one job at a
    time (aiosqlite's). The router decides the next batch for 15-30 ms without
    yielding, and W2's commits waited that long for each part (issue #20). Here the
    loop is held by this test until the rows are in the file: 1,100 events over 5
    fingerprints are 2,200 rows, two INSERTs in one transaction."""
    path = db_path(tmp_path)
    ledger = await Ledger.open(path)
    before = rows_in(path)
    async with ledger.deciding() as batch:
        decide(ledger, batch, 0, 1100)
    expected = before + len(batch.facts)
    assert len(batch.facts) > 2048
    assert holding_the_loop_until(path, expected) == expected
    await ledger.committed(batch)
    assert ledger.event_log.last_seq == batch.next_seq - 1
    assert ledger.state == load_state(path)
    await ledger.close()


async def test_each_commits_listeners_see_the_log_end_at_its_own_batch(tmp_path: Path) -> None:
    """Batches are written by the log's thread as soon as they are queued, so a later
    one may be on disk before an earlier one's listeners run. Catches the position
    moved when a write finishes rather than in commit order: the outbox reads the
    log's last seq as the batch's own last row, and owed the wrong facts' work items
    (W1 lost 1,075 notifications that way while this was written)."""
    path = db_path(tmp_path)
    ledger = await Ledger.open(path)
    seen: list[tuple[int, int]] = []
    ledger.listeners.append(lambda facts, _: seen.append((len(facts), ledger.event_log.last_seq)))
    batches = []
    expected = rows_in(path)
    for n in range(3):
        async with ledger.deciding() as batch:
            decide(ledger, batch, n * 10, 10)
        batches.append(batch)
        expected += len(batch.facts)
    assert holding_the_loop_until(path, expected) == expected  # all three written
    await ledger.committed(batches[-1])
    assert seen == [(len(b.facts), b.next_seq - 1) for b in batches]
    await ledger.close()


async def test_a_failed_commit_fails_every_batch_decided_on_top_of_it(tmp_path: Path) -> None:
    path = db_path(tmp_path)
    ledger = await Ledger.open(path, busy_timeout_ms=100)
    async with ledger.batch() as batch:
        decide(ledger, batch, 0, 5)
    before = ledger.event_log.last_seq
    blocker = sqlite3.connect(path)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        async with ledger.deciding() as failing:
            decide(ledger, failing, 5, 5)
        async with ledger.deciding() as on_top:  # decided on the failing batch's facts
            decide(ledger, on_top, 10, 5)
        with pytest.raises(LogWriteError, match="locked"):
            await ledger.committed(failing)
        with pytest.raises(LogWriteError, match="an earlier batch failed"):
            await ledger.committed(on_top)
        assert ledger.problem is not None
        assert ledger.event_log.last_seq == before
        assert ledger.state.last_seq == before
        assert ledger.state == load_state(path)
    finally:
        blocker.rollback()
        blocker.close()

    async with ledger.batch() as batch:  # a new epoch: decided on the rebuilt state
        assert batch.first_seq == before + 1
        decide(ledger, batch, 5, 10)
    assert ledger.problem is None
    assert received(path) == [f"event {i}" for i in range(15)]
    assert ledger.state == load_state(path)
    assert forensics.verify(path).ok
    await ledger.close()


async def test_an_error_while_deciding_undoes_that_batch_and_lets_earlier_ones_commit(
    tmp_path: Path,
) -> None:
    path = db_path(tmp_path)
    ledger = await Ledger.open(path)
    async with ledger.deciding() as earlier:
        decide(ledger, earlier, 0, 5)
    broken: list[Batch] = []

    async def decide_and_fail() -> None:
        async with ledger.deciding() as batch:
            broken.append(batch)
            decide(ledger, batch, 5, 5)
            raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await decide_and_fail()
    await ledger.committed(earlier)
    assert broken[0].commit is None
    assert ledger.state == load_state(path)
    async with ledger.batch() as batch:
        assert batch.first_seq == earlier.next_seq
        decide(ledger, batch, 5, 5)
    assert received(path) == [f"event {i}" for i in range(10)]
    assert ledger.state == load_state(path)
    await ledger.close()


async def test_a_snapshot_is_of_committed_state_only(tmp_path: Path) -> None:
    path = db_path(tmp_path)
    ledger = await Ledger.open(path, snapshot_every=20)
    previous: Batch | None = None
    for n in range(6):  # as the router does: decide the next batch, then finish the last
        async with ledger.deciding() as batch:
            decide(ledger, batch, n * 10, 10)
        if previous is not None:
            await ledger.committed(previous)
        previous = batch
    await ledger.settled()
    live = ledger.state
    await ledger.close()
    reopened = await Ledger.open(path, snapshot_every=20)
    assert reopened.snapshot_seq > 0
    assert reopened.state == live == load_state(path)
    assert forensics.verify(path).ok  # every snapshot equals the fold up to its seq
    await reopened.close()


def snapshot_seqs(path: Path) -> list[int]:
    with sqlite3.connect(path) as conn:
        return [row[0] for row in conn.execute("SELECT seq FROM snapshots ORDER BY seq")]


def folded_through(path: Path, seq: int) -> State:
    """The fold of the log's rows up to ``seq``: the state a snapshot at ``seq`` must be."""
    state = State()
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT seq, ts, data FROM events WHERE seq <= ? ORDER BY seq", (seq,))
        fold_stored(state, rows.fetchall())
    return state


async def test_a_snapshot_is_written_without_the_lock_and_is_the_log_at_its_seq(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Catches the ledger's lock held while a snapshot is written: a W2 snapshot held it
    ~130-160 ms (encode, write, prune, fsync), no batch decided meanwhile (issue #20).
    Here the snapshot's write is held between its parts (on the log's thread, which
    runs whatever else is queued in between) while a batch is decided and committed;
    and the snapshot stored once let go is still exactly the log's state at its seq,
    not the state the later batch made. And the commits during its write do not find
    another due the moment it is stored (a second W1 snapshot 7,000 rows after the
    first, while this was written)."""
    path = db_path(tmp_path)
    ledger = await Ledger.open(path, snapshot_every=20)
    ledger.snapshot_part_bytes = 256  # a few KiB of projection: many parts
    held, let_go = threading.Event(), threading.Event()
    real = ledger_module.storing

    def held_after_a_part(conn: sqlite3.Connection, **options: Any) -> Iterator[None]:
        steps = real(conn, **options)
        yield next(steps)  # the first part is written
        held.set()
        while not let_go.is_set():
            yield  # queued again behind whatever the log's thread was given meanwhile
        yield from steps

    monkeypatch.setattr(ledger_module, "storing", held_after_a_part)
    monkeypatch.setattr(ledger_module, "STOP_SNAPSHOT_FRACTION", 10)  # none at the stop
    try:
        async with asyncio.timeout(10):
            n = 0
            while ledger.event_log.last_seq < 20:  # the batch that passes 20 rows takes one
                async with ledger.batch() as batch:
                    decide(ledger, batch, n, 1)
                n += 1
            snapshot_at = ledger.event_log.last_seq  # taken once that batch was committed
            assert await asyncio.to_thread(held.wait, 10)
            async with ledger.deciding() as later:  # the lock is free: decided and
                decide(ledger, later, n, 5)
            await ledger.committed(later)  # committed, as the router does
        assert ledger.event_log.last_seq == later.next_seq - 1 > snapshot_at
        assert rows_in(path) == ledger.event_log.last_seq
        assert snapshot_seqs(path) == []  # still being written
    finally:
        let_go.set()
    await wait_until(lambda: ledger.snapshot_seq == snapshot_at, what="the snapshot stored")
    async with ledger.deciding() as after:  # no new snapshot due: too few rows after it
        decide(ledger, after, n + 5, 1)
    await ledger.committed(after)
    assert ledger.event_log.last_seq - snapshot_at < 20
    await ledger.close()
    assert snapshot_seqs(path) == [snapshot_at]  # and no second one, taken as it ended
    with sqlite3.connect(path) as conn:  # it was stored in parts
        assert conn.execute("SELECT count(*) FROM snapshot_parts").fetchone()[0] > 4
    stored = next(read_snapshots(path))
    assert decode_state(stored.state) == folded_through(path, snapshot_at)
    assert forensics.verify(path).ok


REFUSE_ROWS = """CREATE TRIGGER refuse_rows BEFORE INSERT ON events
BEGIN SELECT RAISE(ABORT, 'refused'); END"""


async def test_a_snapshot_on_top_of_a_failed_commit_is_not_stored(tmp_path: Path) -> None:
    """Catches a snapshot stored for facts the log never took. It is encoded when
    taken, maybe before the batches it includes are committed (the router's next batch
    is decided while the last commits); if one of them fails, the snapshot's anchor
    row is not in the log, and the log's thread, which runs the snapshot's first step
    after that batch's write, stores nothing."""
    path = db_path(tmp_path)
    ledger = await Ledger.open(path, snapshot_every=0)
    async with ledger.batch() as batch:
        decide(ledger, batch, 0, 5)
    before = ledger.event_log.last_seq
    with sqlite3.connect(path) as conn:  # the log refuses rows; snapshots it still takes
        conn.execute(REFUSE_ROWS)
    async with ledger.deciding() as failing:
        decide(ledger, failing, 5, 5)
    await ledger.snapshot()  # taken on top of the failing batch's facts
    assert snapshot_seqs(path) == []
    with pytest.raises(LogWriteError, match="refused"):
        await ledger.committed(failing)
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TRIGGER refuse_rows")
    assert ledger.state == load_state(path)
    assert ledger.state.last_seq == before
    await ledger.snapshot()  # of the rebuilt state: stored
    assert snapshot_seqs(path) == [before]
    assert forensics.verify(path).ok
    await ledger.close()


async def test_each_batch_bounds_the_alert_index_nobody_walks(tmp_path: Path) -> None:
    """Catches the ledger never bounding ``AlertIndex.dirty``: with nobody reading
    ``/api/v1/alerts`` it kept the id of every alert ever touched. Here 600 ids of
    alerts let go of wait in it; the next batch starts by forgetting them, and holds
    only the alerts it touched."""
    ledger = await Ledger.open(db_path(tmp_path), snapshot_every=0)
    ledger.alert_index.dirty.update(f"gone{n}" for n in range(600))
    async with ledger.deciding() as batch:
        decide(ledger, batch, 0, 3)
    await ledger.settled()
    assert ledger.alert_index.dirty == set(ledger.state.alerts)
    await ledger.close()


async def committed_and_looked(ledger: Ledger, batch: Batch) -> None:
    """Wait until ``batch`` is committed and the ledger has looked whether to take the
    snapshot due (after the last commit queued), so an assertion that none was taken
    cannot pass only because the look had not run yet."""
    await ledger.committed(batch)
    looking = ledger._quiet_snapshot
    if looking is not None:
        await looking


async def test_a_snapshot_due_waits_while_inbound_events_wait_for_the_router(
    tmp_path: Path,
) -> None:
    """Catches a snapshot taken while the router still has a backlog of inbound events
    (issue #20: one in W2 held the router's loop ~40 ms), though every commit is done,
    and one put off without bound by a backlog that never ends."""
    ledger = await Ledger.open(db_path(tmp_path), snapshot_every=20)
    async with asyncio.timeout(10):
        ledger.inbound_backlog = 500
        n = 0
        while not ledger._snapshot_due:
            async with ledger.deciding() as batch:
                decide(ledger, batch, n, 1)
            await committed_and_looked(ledger, batch)
            n += 1
        async with ledger.deciding() as batch:  # nothing queued, but a storm is on
            decide(ledger, batch, n, 1)
        await committed_and_looked(ledger, batch)
        n += 1
        assert ledger._snapshot_due
        assert ledger._snapshot_taken == ledger.snapshot_seq == 0
        ledger.inbound_backlog = 0
        async with ledger.deciding() as batch:  # the storm is over: once it is committed
            decide(ledger, batch, n, 1)
        await committed_and_looked(ledger, batch)
        n += 1
        assert not ledger._snapshot_due
        await wait_until(lambda: ledger.snapshot_seq > 0, what="the snapshot stored")
        taken = ledger.snapshot_seq
        ledger.inbound_backlog = 500  # a backlog that never ends
        while ledger.state.last_seq < taken + 2 * 20 - 1:
            async with ledger.deciding() as batch:
                decide(ledger, batch, n, 1)
            await committed_and_looked(ledger, batch)
            n += 1
            assert ledger.snapshot_seq == taken
            assert ledger._snapshot_taken == 0
        async with ledger.deciding() as batch:  # twice the interval on: now, storm or not
            decide(ledger, batch, n, 1)
        await committed_and_looked(ledger, batch)
        await wait_until(lambda: ledger.snapshot_seq > taken, what="the overdue snapshot")
    await ledger.close()


async def test_a_snapshot_due_is_taken_once_the_log_is_quiet_not_in_front_of_a_timer(
    tmp_path: Path,
) -> None:
    """Catches a snapshot due at the end of a storm left for the next batch decided,
    which in W5 was the clock's first tick of a group flush, ~26 ms late behind the
    state's encoding (issue #20): it is taken after the commit that leaves the log
    quiet, with no batch after it, unless a timer falls due soon
    (``snapshot_waits``); then neither that commit nor the timer's batch takes it,
    and the first quiet commit after does."""
    ledger = await Ledger.open(db_path(tmp_path), snapshot_every=20)
    timer_near = True
    ledger.snapshot_waits = lambda: timer_near
    async with asyncio.timeout(10):
        async with ledger.deciding() as storm:  # past 20 rows, and quiet
            decide(ledger, storm, 0, 8)
        await committed_and_looked(ledger, storm)
        assert ledger._snapshot_due
        async with ledger.deciding() as tick:  # the timer's batch: not in front of it
            decide(ledger, tick, 8, 1)
            assert ledger._snapshot_taken == 0
        await committed_and_looked(ledger, tick)
        assert ledger._snapshot_due
        assert ledger._snapshot_taken == ledger.snapshot_seq == 0
        timer_near = False
        async with ledger.deciding() as after:
            decide(ledger, after, 9, 1)
        await committed_and_looked(ledger, after)  # no batch decided after it
        assert not ledger._snapshot_due
        await wait_until(lambda: ledger.snapshot_seq > 0, what="the snapshot stored")
        assert ledger.snapshot_seq == ledger.state.last_seq
    await ledger.close()


async def test_a_snapshot_due_in_a_storm_waits_for_a_quiet_moment_or_twice_its_interval(
    tmp_path: Path,
) -> None:
    """Catches a snapshot taken in the middle of a storm (issue #20: encoding and
    storing one took ~6% of serve's CPU samples in W1) and one put off without bound
    (a start would fold an ever longer tail). The log's thread is held by jobs queued
    ahead of the commits, so a commit is still queued when the next batch is decided."""
    path = db_path(tmp_path)
    ledger = await Ledger.open(path, snapshot_every=20)
    first, then = threading.Event(), threading.Event()
    try:
        async with asyncio.timeout(10):
            ledger.event_log._writer.submit(first.wait, 10)
            async with ledger.deciding() as crossing:  # past 20 rows: a snapshot due
                decide(ledger, crossing, 0, 8)
            ledger.event_log._writer.submit(then.wait, 10)
            async with ledger.deciding() as queued:  # its commit queued behind ``then``
                decide(ledger, queued, 8, 1)
            first.set()
            await ledger.committed(crossing)
            assert ledger._snapshot_due
            async with ledger.deciding() as storm:  # a commit queued: not now
                decide(ledger, storm, 9, 1)
            assert ledger._snapshot_taken == 0
            n = 10
            while ledger.state.last_seq < 2 * 20:  # the storm goes on, a commit queued
                async with ledger.deciding() as storm:
                    decide(ledger, storm, n, 1)
                n += 1
                assert ledger._snapshot_taken == 0
            async with ledger.deciding() as overdue:  # 40 rows on: now, storm or not
                decide(ledger, overdue, n, 1)
            assert ledger._snapshot_taken > 0
    finally:
        first.set()
        then.set()
    await ledger.settled()
    await wait_until(lambda: ledger.snapshot_seq > 0, what="the overdue snapshot stored")
    await ledger.close()
