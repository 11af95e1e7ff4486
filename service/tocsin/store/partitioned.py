"""The logs of a partitioned data dir as one (DESIGN.md section 17): what ``tocsin serve
--partitions N`` answers its API and dashboard from.

Each partition's router, a child process, writes its own log, ``<data-dir>/p<k>``.
This process follows each file as a reader (WAL: it never blocks the writer): it
folds the rows each router commits into that partition's projection, and shows the
merge of them (``core.merged``), so the API sees one service. A log that does not
exist yet (its router is starting) is an empty projection until it appears.

Reads that go to the files (an alert's history, a notification, older alerts, the raw
log) ask each partition's file and merge the answers; an alert and a notification live
in one partition, so one file answers them.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import sqlite3
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass
from pathlib import Path

from tocsin.core import events as ev
from tocsin.core.alert_index import Key, key_of
from tocsin.core.events import StoredRow
from tocsin.core.fold import fold
from tocsin.core.merged import merge
from tocsin.core.state import Alert, State
from tocsin.store.eventlog import db_path, partition_dir
from tocsin.store.ledger import load_state_fast
from tocsin.store.reader import LogReader, Older

log = logging.getLogger("tocsin.partitions")

FOLLOW_BATCH = 1000
"""Rows folded between two yields to the event loop: an API request waits at most for
one batch's fold (~10 ms), however far behind the follower is."""

FOLLOW_EVERY = 0.1
"""Seconds between two looks at the files for rows committed since."""

UNTIL_PATIENCE = 5.0
"""Seconds a command's answer waits for its facts to be readable in the file (they are
committed when the router answers: only a stalled disk makes this wait)."""


class PartitionLog:
    """One partition's log as this process reads it: its projection as of ``state.last_seq``,
    folded from the file, and a reader on it (``None`` until the file exists)."""

    def __init__(self, partition: int, path: Path) -> None:
        self.partition = partition
        self.path = path
        self.state = State()
        self.reader: LogReader | None = None

    async def open(self, *, at_start: bool = False) -> bool:
        """Open the reader once the file exists; whether it is open. ``at_start`` (the
        log was there before this process started): load the projection (newest
        snapshot and the rows after it, in a thread), as a router's start does; its
        facts are history, not news. A log that appears later is new: its rows are
        folded by ``catch_up`` from the first, so the live feed and /metrics hear of
        every fact it commits."""
        if self.reader is not None:
            return True
        if not self.path.exists():
            return False
        if at_start:
            try:
                self.state, _ = await asyncio.to_thread(load_state_fast, self.path)
            except sqlite3.OperationalError:  # its router is making it: no tables yet
                return False
        reader = await LogReader.open(self.path)
        try:
            await reader.page(0, 1)  # the tables are there
        except sqlite3.OperationalError:
            await reader.close()
            return False
        self.reader = reader
        return True

    async def catch_up(self, until: int | None = None) -> list[ev.Event]:
        """Fold what was committed since (through ``until`` at least, when given, for
        at most ``UNTIL_PATIENCE`` seconds): the facts folded, for the live feed."""
        if not await self.open():
            return []
        assert self.reader is not None
        facts: list[ev.Event] = []
        deadline = asyncio.get_running_loop().time() + UNTIL_PATIENCE
        while True:
            rows = await self.reader.page(self.state.last_seq, FOLLOW_BATCH)
            for row in rows:
                event = ev.decode(row.data)
                fold(self.state, row.seq, row.ts, event)
                facts.append(event)
            if len(rows) < FOLLOW_BATCH and (until is None or self.state.last_seq >= until):
                return facts
            if not rows:  # ``until`` is not readable yet: a commit about to land
                if asyncio.get_running_loop().time() > deadline:
                    log.warning(
                        "partition %d: seq %s not readable after %.0f s; answering from seq %d",
                        self.partition,
                        until,
                        UNTIL_PATIENCE,
                        self.state.last_seq,
                    )
                    return facts
                await asyncio.sleep(FOLLOW_EVERY / 10)

    async def close(self) -> None:
        if self.reader is not None:
            await self.reader.close()
            self.reader = None


@dataclass(frozen=True)
class EventsPage:
    """A page of the logs merged by time: each row with its partition, and where each
    partition's next page starts (its last seq served)."""

    rows: list[tuple[int, StoredRow]]
    after: tuple[int, ...]
    more: bool


class PartitionedLog:
    """The partitions' logs of ``data_dir``, followed and read as one."""

    def __init__(self, data_dir: Path, count: int) -> None:
        self.logs = [PartitionLog(k, db_path(partition_dir(data_dir, k))) for k in range(count)]
        self._merged: tuple[tuple[int, ...], State] | None = None
        self.listeners: list[Callable[[list[ev.Event], State], None]] = []

    @property
    def count(self) -> int:
        return len(self.logs)

    async def open(self) -> None:
        """The logs there at start, loaded as a router's start loads its log."""
        for part in self.logs:
            await part.open(at_start=True)

    async def close(self) -> None:
        for part in self.logs:
            await part.close()

    @property
    def last_seq(self) -> int:
        """The merged projection's ``last_seq`` (the sum of the partitions'), unmerged."""
        return sum(part.state.last_seq for part in self.logs)

    def state(self) -> State:
        """The merged projection (made again only once a partition moved on)."""
        seqs = tuple(part.state.last_seq for part in self.logs)
        if self._merged is None or self._merged[0] != seqs:
            self._merged = (seqs, merge([part.state for part in self.logs]))
        return self._merged[1]

    def partition_of(self, alert_id: str) -> int | None:
        """The partition whose projection holds the alert (``None``: none does)."""
        for part in self.logs:
            if alert_id in part.state.alerts:
                return part.partition
        return None

    async def catch_up(self, partition: int | None = None, until: int | None = None) -> None:
        """Fold what each partition's router committed (one partition's through
        ``until``: a command's facts, before the API answers from them), and tell the
        listeners (the live feed, /metrics) each partition's new facts with its own
        projection."""
        parts = self.logs if partition is None else [self.logs[partition]]
        for part in parts:
            facts = await part.catch_up(until if partition is not None else None)
            if facts:
                for listener in self.listeners:
                    listener(facts, part.state)  # the partition's: no merge per commit

    async def follow(self, stop: asyncio.Event) -> None:
        """Catch up every ``FOLLOW_EVERY`` seconds until ``stop``."""
        while not stop.is_set():
            try:
                await self.catch_up()
            except Exception as error:  # a file being created or replaced: try again
                log.warning("following the partitions' logs: %s: %s", type(error).__name__, error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), FOLLOW_EVERY)

    # -- reads of the files, for the API: the ``LogReader`` methods it calls ----------

    def _readers(self) -> list[LogReader]:
        return [part.reader for part in self.logs if part.reader is not None]

    async def of_alert(self, alert_id: str) -> list[StoredRow]:
        """The alert's rows, from the one partition that holds them."""
        for reader in self._readers():
            rows = await reader.of_alert(alert_id)
            if rows:
                return rows
        return []

    async def notification(
        self, notification_id: str
    ) -> tuple[StoredRow, ev.ConfigLoaded | None, list[StoredRow]] | None:
        """``LogReader.notification`` of the partition that routed it."""
        for reader in self._readers():
            found = await reader.notification(notification_id)
            if found is not None:
                return found
        return None

    async def config_as_of(self, seq: int) -> ev.ConfigLoaded | None:
        """The config partition 0 runs with (every partition loads the same file)."""
        del seq  # the merged seq names no row
        readers = self._readers()
        return await readers[0].config_as_of(self.logs[0].state.last_seq) if readers else None

    async def config_versions(self) -> list[tuple[int, int, ev.ConfigLoaded]]:
        """Partition 0's: each partition logs every config it loads."""
        readers = self._readers()
        return await readers[0].config_versions() if readers else []

    async def older_alerts(
        self,
        *,
        skip: Container[str],
        before: Key | None,
        want: int,
        passes: Callable[[Alert], bool],
    ) -> Older:
        """The newest ``want`` of every partition's older alerts. A partition whose
        budget ran out was looked at only down to where it stopped, so the merged
        answer stops there too (the highest such place) and says so."""
        found: list[Alert] = []
        stops: list[Key] = []
        for reader in self._readers():
            older = await reader.older_alerts(skip=skip, before=before, want=want, passes=passes)
            found += older.alerts
            if older.reached is not None:
                stops.append(older.reached)
        found.sort(key=key_of, reverse=True)
        reached = max(stops) if stops else None
        if reached is not None:
            found = [alert for alert in found if key_of(alert) > reached]
        if len(found) > want:
            return Older(found[:want], None)
        return Older(found, reached)

    async def page(self, after: Sequence[int], limit: int) -> EventsPage:
        """Up to ``limit`` rows after each partition's ``after`` seq, merged by time
        (then partition), and each partition's position after the page."""
        positions = list(after)
        pages: list[list[tuple[int, int, int, StoredRow]]] = []
        for part in self.logs:
            rows = (
                await part.reader.page(positions[part.partition], limit)
                if part.reader is not None
                else []
            )
            pages.append([(row.ts, part.partition, row.seq, row) for row in rows])
        taken = [(k, row) for _, k, _, row in heapq.merge(*pages)][:limit]
        for k, row in taken:
            positions[k] = row.seq
        more = (
            any(positions[part.partition] < part.state.last_seq for part in self.logs)
            or len(taken) == limit
        )
        return EventsPage(taken, tuple(positions), more)
