"""Read-only queries on the log for the HTTP API and the commands, on a connection of
their own."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import aiosqlite

from tocsin.core import events as ev
from tocsin.core.events import StoredRow
from tocsin.store import tables


class LogReader:
    """Read-only queries for the HTTP API, on a connection of their own: in WAL mode a
    reader never blocks the writer, and a slow page never delays a commit."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    @classmethod
    async def open(cls, path: Path) -> LogReader:
        conn = await aiosqlite.connect(f"file:{path}?mode=ro", uri=True)
        return cls(conn)

    async def close(self) -> None:
        await self._conn.close()

    async def _rows(self, query: str, params: Sequence[object]) -> list[StoredRow]:
        async with self._conn.execute(query, params) as cursor:
            return [StoredRow(seq, ts, kind, bytes(data)) async for seq, ts, kind, data in cursor]

    async def page(self, after_seq: int, limit: int) -> list[StoredRow]:
        """Up to ``limit`` rows after ``after_seq``, ascending."""
        return await self._rows(tables.PAGE, (after_seq, limit))

    async def of_alert(self, alert_id: str) -> list[StoredRow]:
        """Every row about one alert, ascending (the ``alert_id`` column is indexed)."""
        return await self._rows(tables.OF_ALERT, (alert_id,))

    async def routed(self, notification_id: str) -> StoredRow | None:
        """The routed fact of a notification, or ``None`` when the log holds none."""
        rows = await self._rows(tables.ROUTED_NOTIFICATION, (notification_id,))
        return rows[0] if rows else None

    async def config_as_of(self, seq: int) -> ev.ConfigLoaded | None:
        """The config the service ran with when the fact at ``seq`` was logged."""
        rows = await self._rows(tables.CONFIG_AS_OF, (seq,))
        event = ev.decode(rows[0].data) if rows else None
        return event if isinstance(event, ev.ConfigLoaded) else None

    async def events_at(self, seqs: Iterable[int]) -> dict[int, ev.Event]:
        wanted = sorted(set(seqs))
        found: dict[int, ev.Event] = {}
        for start in range(0, len(wanted), tables.IN_LIST_MAX):
            chunk = wanted[start : start + tables.IN_LIST_MAX]
            for row in await self._rows(tables.rows_at(len(chunk)), chunk):
                found[row.seq] = ev.decode(row.data)
        return found
