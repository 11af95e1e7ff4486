"""The single writer: the log and the projection folded from it, moved together.

Every change goes through ``Ledger.batch()``: facts are folded into the live state as
they are added (so the next decision of the same batch sees them), then committed in one
transaction. If the commit fails, the state is rebuilt from what the log really holds,
so live state never differs from ``fold(log)``.

Facts caused by an input message are added with its position on its input stream
(``Batch.add_caused``) and committed with them: the ledger answers "what is my last
position" (``last_position``) and "what did these positions cause"
(``facts_caused_by``), which is how a redelivered message is recognised (DESIGN.md
invariant 4) without its consumer knowing how the log stores positions.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from enum import Enum
from pathlib import Path

import msgspec

from tocsin.core import events as ev
from tocsin.core.alert_index import AlertIndex, moved_by
from tocsin.core.fold import fold, fold_stored
from tocsin.core.state import State
from tocsin.core.times import now_us
from tocsin.store import compaction
from tocsin.store.eventlog import EventLog, Fact, LogWriteError, Row
from tocsin.store.snapshots import (
    PART_BYTES,
    Snapshot,
    StaleSnapshot,
    compacted,
    decode_state,
    encode_state,
    read_base,
    read_snapshots,
    storing,
)
from tocsin.store.tables import NewRows, new_rows

log = logging.getLogger("tocsin.ledger")


def load_state(path: Path) -> State:
    """Fold the whole log at ``path`` from nothing (blocking; run it in a thread)."""
    if not path.exists():
        return State()
    with _gc_paused():
        state, after = base_state(path)
        fold_rows(state, path, after_seq=after)
    return state


def base_state(path: Path) -> tuple[State, int]:
    """Where a full fold starts: nothing, or, for a compacted log, the base snapshot
    (the state of the archived rows) and its seq."""
    base = read_base(path)
    if base is not None:
        return decode_state(base.state), base.seq
    if compacted(path):
        raise RuntimeError(
            f"{path} was compacted but its base snapshot is missing or does not match"
        )
    return State(), 0


def fold_rows(
    state: State, path: Path, after_seq: int = 0, until_ts: int | None = None
) -> int | None:
    """Fold the log's rows after ``after_seq`` (appended at or before ``until_ts``) into
    ``state``; returns the append time of the last row folded. The tight loop a start
    spends its time in: no per-row objects beyond the event itself."""
    query = "SELECT seq, ts, data FROM events WHERE seq > ?"
    params: list[int] = [after_seq]
    if until_ts is not None:
        query += " AND ts <= ?"
        params.append(until_ts)
    last_ts: int | None = None
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        cursor = conn.execute(query + " ORDER BY seq", params)
        while batch := cursor.fetchmany(10_000):
            fold_stored(state, batch)
            last_ts = batch[-1][1]
    finally:
        conn.close()
    return last_ts


@contextmanager
def _gc_paused(freeze: bool = False) -> Iterator[None]:
    """Building a large projection allocates hundreds of thousands of containers; the
    cyclic GC would rescan the growing heap again and again (measured: ~17% of a
    snapshot load). Nothing in a projection forms cycles, so pause it meanwhile.

    ``freeze``: move every tracked object to the permanent generation before the GC is
    on again (``gc.freeze``, which also zeroes the young generation's count). Frozen
    after the GC is back on, the first allocation would first collect the young
    generation, now the whole projection: ~40 ms of a 1M-event start spent finding no
    garbage in ~300,000 containers."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
        if freeze:
            gc.freeze()
    finally:
        if was_enabled:
            gc.enable()


def load_state_fast(path: Path, *, long_lived: bool = False) -> tuple[State, int | None]:
    """The newest valid snapshot plus the log after it; ``(state, snapshot seq or None)``.
    A snapshot that does not decode is skipped (the log is the truth; snapshots only
    save time). ``long_lived``: the projection is kept for the process's life (the
    ledger's), so it is frozen out of the cyclic GC's scans (``_gc_paused``)."""
    with _gc_paused(freeze=long_lived):
        return _load_state_fast(path)


def _load_state_fast(path: Path) -> tuple[State, int | None]:
    if not path.exists():
        return State(), None
    for snapshot in read_snapshots(path):
        try:
            state = decode_state(snapshot.state)
        except StaleSnapshot:
            log.info(
                "snapshot at seq %d is from another version; trying an older one", snapshot.seq
            )
            continue
        except msgspec.DecodeError as error:
            log.warning(
                "snapshot at seq %d unreadable (%s); trying an older one", snapshot.seq, error
            )
            continue
        fold_rows(state, path, after_seq=snapshot.seq)
        return state, snapshot.seq
    return load_state(path), None


STOP_SNAPSHOT_FRACTION = 0.1
"""``Ledger.close`` snapshots the projection when at least this fraction of
``snapshot_every`` rows follow the newest snapshot (5,000 rows by default: ~20 ms of a
start's fold; fewer are folded faster than a snapshot of a large projection is
written at the stop)."""


class Input(Enum):
    """An input stream whose message positions the log records with the facts they
    cause, in the same transaction."""

    INBOUND = "inbound"  # TOCSIN_IN as the router numbers it: StreamBound's offset + seq
    OUTCOMES = "outcomes"  # TOCSIN_OUT's stream seq: the recorder's input


_INBOUND = Input.INBOUND  # Batch.add_caused runs per inbound message: no enum lookup there


class Batch:
    """Facts being added under the ledger's lock; committed after the block exits."""

    def __init__(
        self,
        state: State,
        first_seq: int,
        ts: int,
        epoch: int = 0,
        touched: set[str] | None = None,
    ) -> None:
        self.facts: list[Fact] = []
        self.ts = ts
        self.first_seq = first_seq
        self.epoch = epoch
        self.commit: asyncio.Task[None] | None = None  # set when queued for commit
        # Its rows' commit, queued on the log's thread once decided (``append_rows``).
        self.written: asyncio.Future[NewRows] | None = None
        self.last_inbound = 0  # the highest position of each input its facts record
        self.last_outcome = 0
        self._state = state
        self._next_seq = first_seq
        # Alerts whose place in the newest-first order may move (``AlertIndex.dirty``).
        self._touched = touched if touched is not None else set()

    @property
    def next_seq(self) -> int:
        """The seq the fact after this batch's last will have."""
        return self._next_seq

    def add(self, event: ev.Event) -> int:
        """Add a fact no input message caused (a command's, a stream binding) and fold
        it; returns the seq it will have once committed."""
        seq = self._next_seq
        self._next_seq += 1
        self.facts.append(Fact(event))
        fold(self._state, seq, self.ts, event)
        if (moved := moved_by(event)) is not None:
            self._touched.add(moved)
        return seq

    def add_caused(self, events: Sequence[ev.Event], stream: Input, position: int) -> range:
        """Add the facts that message ``position`` of ``stream`` caused, each recorded
        with that position, and fold them; returns the seqs they will have."""
        first = seq = self._next_seq
        if stream is _INBOUND:
            in_seq, out_seq = position, None
            if position > self.last_inbound:
                self.last_inbound = position
        else:
            in_seq, out_seq = None, position
            if position > self.last_outcome:
                self.last_outcome = position
        facts, state, ts, touched = self.facts, self._state, self.ts, self._touched
        for event in events:
            facts.append(Fact(event, in_seq, out_seq))
            fold(state, seq, ts, event)
            if (moved := moved_by(event)) is not None:
                touched.add(moved)
            seq += 1
        self._next_seq = seq
        return range(first, seq)


class Ledger:
    """The log and its projection, moved together. Batches are *decided* one at a time
    under a lock (folded into the live state as their facts are added) and *committed*
    strictly in the order decided, so the next batch can be decided while the last one
    commits (pipelined). A batch decided on top of one whose commit fails is invalid
    too: every batch of that *epoch* fails without touching the log, and the state is
    rebuilt from what the log holds before anything new is decided."""

    def __init__(
        self,
        path: Path,
        event_log: EventLog,
        state: State,
        snapshot_every: int = 50_000,
        clock: Callable[[], int] = now_us,
    ) -> None:
        """``clock`` gives each batch its append time (the log's ``ts``, the router's
        receive time): the wall clock, or a test's, to let log time pass."""
        self.path = path
        self.clock = clock
        self.snapshot_every = snapshot_every
        self.snapshot_seq = 0
        self.event_log = event_log
        self.state = state
        self.problem: str | None = None
        self.rebuild_seconds = 0.0
        self.listeners: list[Callable[[list[ev.Event], State], None]] = []
        self.alert_index = AlertIndex()  # the state's alerts newest first, for the API
        self._lock = asyncio.Lock()
        self._compacting = asyncio.Lock()  # one compaction at a time
        self._next_seq = event_log.last_seq + 1  # of the next fact decided
        self._next_hash = event_log.last_hash  # the next row decided chains on this
        self._epoch = 0  # ends (and the next begins) when the state is rebuilt
        self._dead_epoch = -1  # an epoch one of whose commits failed
        self._tail: asyncio.Task[None] | None = None  # the last batch queued for commit
        self.inbound_backlog = 0
        """Inbound events still to be delivered to the router after its last batch (its
        processor sets it): a storm is on while it is above 0 (``_snapshot_now``)."""
        self._snapshot_due = False
        self._snapshot_taken = 0  # the seq of the snapshot being written (0: none)
        self._snapshot_written: asyncio.Future[None] | None = None  # the one being written
        self._quiet_snapshot: asyncio.Task[None] | None = None  # one due, after a commit
        self.snapshot_waits: Callable[[], bool] = lambda: False
        """Whether a snapshot due waits though the log is quiet: the service sets the
        clock's ``waits`` (a timer falls due within its lead, or it is firing), so a
        group's flush does not wait for a state to be encoded (~26 ms in W5, issue #20)."""
        self.snapshot_part_bytes = PART_BYTES  # a snapshot larger is stored in parts
        self._last_positions = self._logged_positions()  # decided: committed or queued

    @classmethod
    async def open(
        cls, path: Path, busy_timeout_ms: int = 5000, snapshot_every: int = 50_000
    ) -> Ledger:
        event_log = await EventLog.open(path, busy_timeout_ms)
        started = time.perf_counter()
        state, snapshot_seq = await asyncio.to_thread(
            functools.partial(load_state_fast, path, long_lived=True)
        )
        ledger = cls(path, event_log, state, snapshot_every)
        ledger.snapshot_seq = snapshot_seq or 0
        ledger.rebuild_seconds = time.perf_counter() - started
        log.info(
            "projection rebuilt from %s (%s): %d events, %d alerts (%d open) in %.3fs",
            path,
            f"snapshot at seq {snapshot_seq} + tail" if snapshot_seq else "full fold",
            state.last_seq,
            len(state.alerts),
            len(state.open_by_fingerprint),
            ledger.rebuild_seconds,
        )
        return ledger

    async def close(self) -> None:
        """Close the log once every batch is committed. A log that runs on after its
        newest snapshot for more than ``STOP_SNAPSHOT_FRACTION`` of ``snapshot_every``
        rows is snapshotted first, so that the next start decodes it and folds no tail
        (a tail of up to twice ``snapshot_every`` rows otherwise: ~0.2 s per 50,000
        rows of a 1M-event log's start, on top of the ~0.65 s of its snapshot)."""
        await self.settled()
        if self._quiet_snapshot is not None:
            await asyncio.wait([self._quiet_snapshot])
        await self._snapshot_stored()
        if self._tail_worth_a_snapshot():
            async with self._lock:
                self._snapshot()
            await self._snapshot_stored()
        await self.event_log.close()

    def _tail_worth_a_snapshot(self) -> bool:
        """Whether the rows after the newest snapshot are enough to take one at a stop:
        not when snapshots are off, nor after a failed commit (the state is rebuilt by
        the next start anyway)."""
        if self.snapshot_every <= 0 or self.problem is not None:
            return False
        rows = self._rows_since_snapshot(self.event_log.last_seq)
        return rows > 0 and rows >= self.snapshot_every * STOP_SNAPSHOT_FRACTION

    def size_bytes(self) -> int:
        """The log's bytes on disk: the database and its write-ahead log (a stat each,
        cheap enough for a scrape)."""
        total = 0
        for path in (self.path, self.path.with_name(self.path.name + "-wal")):
            with contextlib.suppress(OSError):
                total += path.stat().st_size
        return total

    def last_position(self, stream: Input) -> int:
        """The highest position of ``stream`` whose facts the ledger has taken
        (committed, or queued to commit); 0 before any. A message at or below it may
        have been decided already: ask ``facts_caused_by``."""
        return self._last_positions[stream]

    async def facts_caused_by(
        self, stream: Input, positions: Iterable[int]
    ) -> dict[int, list[Row]]:
        """The logged facts of those ``positions`` of ``stream`` that have any, by
        position, once every batch decided so far is committed (one still committing
        may hold some)."""
        await self.settled()
        if stream is Input.INBOUND:
            return await self.event_log.facts_of_inbound(positions)
        return await self.event_log.facts_of_outcomes(positions)

    def _logged_positions(self) -> dict[Input, int]:
        return {
            Input.INBOUND: self.event_log.max_in_seq,
            Input.OUTCOMES: self.event_log.max_out_seq,
        }

    @asynccontextmanager
    async def batch(self) -> AsyncIterator[Batch]:
        """Add facts inside the block; they are committed (on disk) when it exits.

        Raises ``LogWriteError`` when the commit fails; the state is then rebuilt from
        the log, and ``problem`` says why until a later commit succeeds.
        """
        async with self.deciding() as batch:
            yield batch
        await self.committed(batch)

    @asynccontextmanager
    async def deciding(self, wait: float = 0.0) -> AsyncIterator[Batch]:
        """Add facts inside the block, under the ledger's lock; when it exits, the batch
        is queued to commit after every batch decided before it and the lock is let go,
        so the next batch can be decided meanwhile. Nothing the facts justify may leave
        before ``committed(batch)`` returns. An exception in the block undoes its facts
        (the state is rebuilt once the batches before it are committed). With a
        ``wait``, the batch's rows may wait that long for the next batch's, to share its
        transaction and ``fsync`` (``EventLog.append_rows``)."""
        async with self._lock:
            if self._snapshot_overdue():
                self._snapshot()
            self.alert_index.bound(self.state)
            batch = Batch(
                self.state, self._next_seq, self.clock(), self._epoch, self.alert_index.dirty
            )
            try:
                yield batch
                # Chained and queued here, in the order batches are decided: the log's
                # thread writes them the moment the batch before is written, with no
                # turn of the event loop in between (issue #20, W2).
                rows = self._chained(batch) if batch.facts else None
            except BaseException:
                if batch.facts:  # a block that added nothing left the state untouched
                    await self._restore()
                raise
            if rows is not None:
                self._next_seq, self._next_hash = batch.next_seq, rows.last_hash
                batch.written = self.event_log.append_rows(rows, wait)
                self._tail = batch.commit = asyncio.create_task(self._commit(batch, self._tail))
                last = self._last_positions
                last[Input.INBOUND] = max(last[Input.INBOUND], batch.last_inbound)
                last[Input.OUTCOMES] = max(last[Input.OUTCOMES], batch.last_outcome)

    def _chained(self, batch: Batch) -> NewRows:
        """``batch``'s facts as rows chained on the last row decided before them."""
        return new_rows(batch.facts, batch.ts, batch.first_seq - 1, self._next_hash)

    async def committed(self, batch: Batch) -> None:
        """Wait until ``batch`` is on disk. ``LogWriteError`` when it is not: then no
        batch decided on top of it is either, and the state has been rebuilt from the
        log by the time this raises."""
        if batch.commit is None:
            return
        try:
            await asyncio.shield(batch.commit)
        except LogWriteError:
            async with self._lock:
                if batch.epoch == self._epoch:  # the first to get here rebuilds
                    await self._restore()
            raise

    def doomed(self, batch: Batch) -> bool:
        """Whether ``batch`` failed to commit, or will: a batch before it in its epoch
        failed."""
        task = batch.commit
        if task is None:
            return False
        if task.done():
            return task.cancelled() or task.exception() is not None
        return batch.epoch == self._dead_epoch

    async def settled(self) -> None:
        """Wait until every batch decided so far is committed (or has failed)."""
        if self._tail is not None and not self._tail.done():
            await asyncio.wait([self._tail])

    async def _commit(self, batch: Batch, previous: asyncio.Task[None] | None) -> None:
        """See ``batch`` committed once ``previous`` (the batch decided before it) is
        done: its rows were queued when it was decided, and the log's thread refuses
        them (``LogWriteError``) unless every batch before them was written."""
        if previous is not None and not previous.done():  # done: no turn of the loop
            await asyncio.wait([previous])  # its failure is told to its own waiter
        assert batch.written is not None  # a batch with facts is queued with its rows
        try:
            new = await asyncio.shield(batch.written)
        except LogWriteError as error:
            if batch.epoch == self._dead_epoch:
                raise LogWriteError(
                    f"not committed: an earlier batch failed ({self.problem})"
                ) from error
            self._dead_epoch = batch.epoch
            if self.problem != str(error):
                log.error("%s; not acknowledging until the log accepts writes again", error)
            self.problem = str(error)
            raise
        except BaseException:
            self._dead_epoch = batch.epoch
            raise
        self.event_log.advance(new)  # the listeners read it as this batch's last row
        if self.problem is not None:
            log.info("event log writable again; resuming")
            self.problem = None
        committed = [fact.event for fact in batch.facts]
        for listener in self.listeners:
            listener(committed, self.state)
        if (
            self.snapshot_every
            and self._rows_since_snapshot(self.event_log.last_seq) >= self.snapshot_every
        ):
            self._snapshot_due = True
        if self._snapshot_due and self._quiet_snapshot is None and self._tail is batch.commit:
            self._quiet_snapshot = asyncio.create_task(self._snapshot_if_quiet())

    async def compact(self, before: int, archive: Path) -> compaction.Compacted | None:
        """Move the rows appended before ``before`` into ``archive`` (``None`` if there
        are none), as the log's single writer: they are checked, folded and archived
        beside the router (appended rows never change), then removed and the fact of it
        appended under the lock, once every batch decided is committed, and folded into
        the live state like any fact. ``CompactionError`` when refused."""
        async with self._compacting:
            prepared = await asyncio.to_thread(compaction.prepare, self.path, before, archive)
            if prepared is None:
                return None
            async with self._lock:
                await self.settled()
                await self._snapshot_stored()  # not one of rows about to go
                if self.state.last_seq != self.event_log.last_seq:
                    raise compaction.CompactionError("the log refuses writes; not compacted")
                ts = self.clock()
                done = await asyncio.to_thread(compaction.commit, self.path, prepared, ts)
                seq, last_hash, event = done
                await self.event_log.moved(seq, last_hash)
                self._next_seq, self._next_hash = seq + 1, last_hash
                fold(self.state, seq, ts, event)
                for listener in self.listeners:
                    listener([event], self.state)
        return compaction.Compacted(prepared.first_seq, prepared.last_seq, prepared.rows, archive)

    async def snapshot(self) -> None:
        """Snapshot the projection now, and wait until it is stored (or not: a warning
        says why). ``bench/log_scale.py`` asks; the service takes one every
        ``snapshot_every`` events."""
        async with self._lock:
            await self._snapshot_stored()
            self._snapshot()
        await self._snapshot_stored()

    async def _snapshot_if_quiet(self) -> None:
        """Take the snapshot due if the moment is quiet (``_snapshot_now``): asked after
        the last commit queued, so it is taken while nothing waits to be decided, not
        in front of the next batch (the clock's first tick of a flush, issue #20)."""
        try:
            async with self._lock:
                if self._snapshot_now():
                    self._snapshot()
        finally:
            self._quiet_snapshot = None

    def _snapshot_now(self) -> bool:
        """(Holding the lock.) Whether to take the snapshot that fell due: at a quiet
        moment, when no commit is queued, no inbound event waits for the router and no
        timer is about to fall due (``snapshot_waits``), so a storm's CPU goes to its
        events (one snapshot of W1 cost ~6% of serve's samples there; one in W2 ~40 ms
        of the router's loop and ~0.1 s of the log's thread: issue #20); or when
        overdue (``_snapshot_overdue``)."""
        if not self._snapshot_due:
            return False
        if self._snapshot_overdue():
            return True
        idle = (self._tail is None or self._tail.done()) and not self.inbound_backlog
        return idle and not self.snapshot_waits()

    def _snapshot_overdue(self) -> bool:
        """(Holding the lock.) Whether the snapshot due is taken now, storm or not: twice
        ``snapshot_every`` rows are logged after the last one, so a start never folds
        more than that. Only then is one taken in front of a batch being decided."""
        return (
            self._snapshot_due
            and self._rows_since_snapshot(self._next_seq - 1) >= 2 * self.snapshot_every
        )

    def _rows_since_snapshot(self, seq: int) -> int:
        """Rows up to ``seq`` after the newest snapshot, stored or being written."""
        return seq - max(self.snapshot_seq, self._snapshot_taken)

    def _snapshot(self) -> None:
        """(Holding the lock.) Snapshot the projection as decided so far: encoded here,
        on the loop, so it cannot change meanwhile (W2's 21,000 alerts: ~19 ms alone,
        33-41 ms under ``tocsin serve``), then stored without the lock by the log's
        thread, in steps between the commits queued meanwhile (``snapshots.storing``),
        and only if the batches it includes are committed (its anchor is the hash of
        the last one's last row). The lock was held 90-170 ms a snapshot while it was
        written (issue #20, W2). One at a time; a failure costs only start-up time."""
        self._snapshot_due = False
        if self._snapshot_written is not None and not self._snapshot_written.done():
            return  # a commit after it is written asks again
        snapshot_at = self._next_seq - 1
        if self.state.last_seq != snapshot_at or self._dead_epoch == self._epoch:
            return  # a failed commit: the state is rebuilt first; a later commit retries
        started = time.perf_counter()
        snapshot = Snapshot(snapshot_at, now_us(), self._next_hash, encode_state(self.state))
        encoded = time.perf_counter()
        taken = (snapshot_at, len(snapshot.state), encoded - started, encoded)
        self._snapshot_taken = snapshot_at  # the next is due ``snapshot_every`` after it
        written = self.event_log.write_in_turns(
            functools.partial(storing, snapshot=snapshot, part_bytes=self.snapshot_part_bytes)
        )
        del snapshot  # the steps free it once written
        written.add_done_callback(functools.partial(self._snapshot_ended, *taken))
        self._snapshot_written = written

    def _snapshot_ended(
        self, seq: int, size: int, encoding: float, encoded: float, written: asyncio.Future[None]
    ) -> None:
        self._snapshot_taken = 0
        error = None if written.cancelled() else written.exception()
        if written.cancelled() or error is not None:
            log.warning("snapshot at seq %d not written: %s", seq, error or "cancelled")
            return
        self.snapshot_seq = seq
        log.info(
            "snapshot at seq %d (%d bytes): encoded in %.1f ms holding the lock, stored in"
            " %.1f ms without",
            seq,
            size,
            encoding * 1000,
            (time.perf_counter() - encoded) * 1000,
        )

    async def _snapshot_stored(self) -> None:
        """Wait until the snapshot being written, if any, is stored (or failed)."""
        if self._snapshot_written is not None and not self._snapshot_written.done():
            await asyncio.wait([self._snapshot_written])

    async def _restore(self) -> None:
        """(Holding the lock.) Let every queued commit end, rebuild the state from the
        log, and begin a new epoch."""
        await self.settled()
        await self.event_log.resync()  # a commit whose task was cancelled may be in
        self.state, _ = await asyncio.to_thread(load_state_fast, self.path)
        self._next_seq = self.event_log.last_seq + 1
        self._next_hash = self.event_log.last_hash
        self._last_positions = self._logged_positions()
        self._epoch += 1
