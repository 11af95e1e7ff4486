"""Compaction carried out by the service that writes the log (DESIGN.md section 6).

``tocsin compact`` asks the running service (``control``, on ``tocsin.control.compact``)
and ``[log] retention`` has it compact on its own: every hour it moves the events
appended more than ``retention`` ago into an archive in the data dir, named by that
time (``archives/tocsin-<before>.jsonl.gz``). Both go through ``Ledger.compact``, so
the router keeps running and the move is a fact in the log like any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

from tocsin.core.times import now_us
from tocsin.store.compaction import Compacted, CompactionError
from tocsin.store.ledger import Ledger

log = logging.getLogger("tocsin.compactor")

CHECK_EVERY = 3600.0  # seconds between looks for events older than the retention


def archive_name(before: int) -> str:
    """The archive of the events appended before ``before`` (µs): named by that time, in
    UTC, so that archives sort in the order they were made."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(before // 1_000_000))
    return f"tocsin-{stamp}.jsonl.gz"


class Compactor:
    """Compacts the ledger's log: on request, and every ``CHECK_EVERY`` with a
    ``retention`` (seconds; ``None``: never on its own)."""

    def __init__(
        self,
        ledger: Ledger,
        data_dir: Path,
        retention: float | None = None,
        clock: Callable[[], int] = now_us,
    ) -> None:
        self.ledger = ledger
        self.data_dir = data_dir
        self.retention = retention
        self.clock = clock

    async def compact(self, before: int, archive: Path) -> Compacted | None:
        """Move the events appended before ``before`` into ``archive``; ``None`` if there
        are none. ``CompactionError`` when refused."""
        done = await self.ledger.compact(before, archive)
        if done is not None:
            log.info(
                "compacted %d event(s), seq %d..%d, into %s",
                done.rows,
                done.first_seq,
                done.last_seq,
                done.archive,
            )
        return done

    async def keep_retention(self) -> Compacted | None:
        """One look: archive what is older than ``retention`` now, if anything."""
        if self.retention is None:
            return None
        before = self.clock() - int(self.retention * 1_000_000)
        archive = self.data_dir / "archives" / archive_name(before)
        return await self.compact(before, archive)

    async def run(self, stop: asyncio.Event) -> None:
        """Every hour until ``stop``: keep the retention (a failure is logged, and the
        next hour tries again)."""
        while not stop.is_set():
            try:
                await self.keep_retention()
            except (CompactionError, OSError) as error:
                log.error("retention: compaction failed: %s; trying again in an hour", error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), CHECK_EVERY)
