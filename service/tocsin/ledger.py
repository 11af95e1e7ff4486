"""The single writer: the log and the projection folded from it, moved together.

Every change goes through ``Ledger.batch()``: facts are folded into the live state as
they are added (so the next decision of the same batch sees them), then committed in one
transaction. If the commit fails, the state is rebuilt from what the log really holds,
so live state never differs from ``fold(log)``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from tocsin import events as ev
from tocsin.log import EventLog, Fact, LogWriteError, read_rows
from tocsin.projections import State, fold, rebuild
from tocsin.times import now_us

log = logging.getLogger("tocsin.ledger")


def load_state(path: Path) -> State:
    """Fold the whole log at ``path`` (blocking; run it in a thread)."""
    if not path.exists():
        return State()
    return rebuild((row.seq, row.ts, row.event) for row in read_rows(path))


class Batch:
    """Facts being added under the ledger's lock; committed when the block exits."""

    def __init__(self, state: State, first_seq: int, ts: int) -> None:
        self.facts: list[Fact] = []
        self.ts = ts
        self._state = state
        self._next_seq = first_seq

    def add(self, event: ev.Event, *, in_seq: int | None = None, out_seq: int | None = None) -> int:
        """Add a fact and fold it; returns the seq it will have once committed."""
        seq = self._next_seq
        self._next_seq += 1
        self.facts.append(Fact(event, in_seq, out_seq))
        fold(self._state, seq, self.ts, event)
        return seq


class Ledger:
    def __init__(self, path: Path, event_log: EventLog, state: State) -> None:
        self.path = path
        self.log = event_log
        self.state = state
        self.problem: str | None = None
        self.rebuild_seconds = 0.0
        self.listeners: list[Callable[[list[ev.Event], State], None]] = []
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path, busy_timeout_ms: int = 5000) -> Ledger:
        event_log = await EventLog.open(path, busy_timeout_ms)
        started = time.perf_counter()
        state = await asyncio.to_thread(load_state, path)
        ledger = cls(path, event_log, state)
        ledger.rebuild_seconds = time.perf_counter() - started
        log.info(
            "projection rebuilt from %s: %d events, %d alerts (%d open) in %.3fs",
            path,
            state.last_seq,
            len(state.alerts),
            len(state.open_by_fingerprint),
            ledger.rebuild_seconds,
        )
        return ledger

    async def close(self) -> None:
        await self.log.close()

    @asynccontextmanager
    async def batch(self) -> AsyncIterator[Batch]:
        """Add facts inside the block; they are committed (on disk) when it exits.

        Raises ``LogWriteError`` when the commit fails; the state is then rebuilt from
        the log, and ``problem`` says why until a later commit succeeds.
        """
        async with self._lock:
            batch = Batch(self.state, self.log.last_seq + 1, now_us())
            try:
                yield batch
            except BaseException:
                await self._restore()
                raise
            try:
                await self.log.append(batch.facts, batch.ts)
            except LogWriteError as error:
                if self.problem != str(error):
                    log.error("%s; not acknowledging until the log accepts writes again", error)
                self.problem = str(error)
                await self._restore()
                raise
            if self.problem is not None:
                log.info("event log writable again; resuming")
                self.problem = None
            committed = [fact.event for fact in batch.facts]
            for listener in self.listeners:
                listener(committed, self.state)

    async def _restore(self) -> None:
        self.state = await asyncio.to_thread(load_state, self.path)
