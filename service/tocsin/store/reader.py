"""Read-only queries on the log for the HTTP API and the commands, on a connection of
their own; and the alerts the projection let go of (``core.retention``), folded back
from their rows."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import aiosqlite

from tocsin.core import events as ev
from tocsin.core.alert_index import Key, key_of
from tocsin.core.events import StoredRow
from tocsin.core.fold import fold_alert
from tocsin.core.state import Alert
from tocsin.core.views import group_delivery_alert_ids
from tocsin.store import tables

OLDER_BUDGET = 1000
"""Alerts of the file one page may fold back at most: a filter that few old alerts
pass answers with what it found so far and a cursor to go on from (never a scan of the
whole history on one request)."""


@dataclass(frozen=True)
class Older:
    """Alerts found in the file, newest first; ``reached``: the budget ran out there, so
    alerts below that position were not looked at (``None``: every one was)."""

    alerts: list[Alert]
    reached: Key | None


def older_alerts(
    path: Path,
    *,
    skip: Container[str],
    before: Key | None,
    want: int,
    passes: Callable[[Alert], bool],
    budget: int = OLDER_BUDGET,
) -> Older:
    """Up to ``want`` alerts of the log file that are not in ``skip`` (the projection's),
    pass ``passes`` and sort below ``before``, newest ``last_seen`` first, each folded
    back from its own rows (blocking: run it in a thread). The walk goes down the index
    of received events (``tables.NEWEST_SEEN``), so it looks at the alerts it shows and
    those that fail the filter, not at the whole history."""
    found: list[Alert] = []
    seen: set[str] = set()
    looked = 0
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        top = before[0] if before is not None else tables.MAX_SEQ
        cursor = conn.execute(tables.NEWEST_SEEN, (top,))
        while batch := cursor.fetchmany(500):
            for _, alert_id in batch:
                if alert_id in seen or alert_id in skip:
                    continue
                seen.add(alert_id)
                rows = conn.execute(tables.ALERT_ROWS, (alert_id,)).fetchall()
                alert = fold_alert(alert_id, rows)
                if alert is None or alert.status != "resolved":
                    continue  # its start was archived, or it is (being) folded in memory
                if before is not None and key_of(alert) >= before:
                    continue  # on an earlier page
                looked += 1
                if passes(alert):
                    found.append(alert)
                    if len(found) >= want:
                        return Older(found, None)
                if looked >= budget:
                    return Older(found, key_of(alert))
    finally:
        conn.close()
    return Older(found, None)


class LogReader:
    """Read-only queries for the HTTP API, on a connection of their own: in WAL mode a
    reader never blocks the writer, and a slow page never delays a commit."""

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path

    @classmethod
    async def open(cls, path: Path) -> LogReader:
        conn = await aiosqlite.connect(f"file:{path}?mode=ro", uri=True)
        return cls(conn, path)

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
        """The routed fact of a notification, an alert's (``alert.routed``) or a
        group's (``group.notified``), or ``None`` when the log holds none."""
        rows = await self._rows(tables.ROUTED_NOTIFICATION, (notification_id,))
        return rows[0] if rows else None

    async def notification(
        self, notification_id: str
    ) -> tuple[StoredRow, ev.ConfigLoaded | None, list[StoredRow]] | None:
        """What a notification's view is made of (``views.notification_view``): its
        routed fact, the config it was routed under and the rows of its alert (of a
        group's, of the alerts its delivery facts name:
        ``views.group_delivery_alert_ids``), ascending; ``None`` when the log routed no
        such one."""
        routed = await self.routed(notification_id)
        if routed is None:
            return None
        event = ev.decode(routed.data)
        if isinstance(event, ev.AlertRouted):
            rows = await self.of_alert(event.alert_id)
        elif isinstance(event, ev.GroupNotified):
            named = [await self.of_alert(alert_id) for alert_id in group_delivery_alert_ids(event)]
            rows = sorted(chain.from_iterable(named), key=lambda row: row.seq)
        else:
            return None
        return routed, await self.config_as_of(routed.seq), rows

    async def config_as_of(self, seq: int) -> ev.ConfigLoaded | None:
        """The config the service ran with when the fact at ``seq`` was logged."""
        rows = await self._rows(tables.CONFIG_AS_OF, (seq,))
        event = ev.decode(rows[0].data) if rows else None
        return event if isinstance(event, ev.ConfigLoaded) else None

    async def config_versions(self) -> list[tuple[int, int, ev.ConfigLoaded]]:
        """Every ``config.loaded`` in the file as ``(seq, ts, fact)``, oldest first."""
        rows = await self._rows(tables.CONFIG_VERSIONS, ())
        loaded = [(row.seq, row.ts, ev.decode(row.data)) for row in rows]
        return [(seq, ts, e) for seq, ts, e in loaded if isinstance(e, ev.ConfigLoaded)]

    async def older_alerts(
        self,
        *,
        skip: Container[str],
        before: Key | None,
        want: int,
        passes: Callable[[Alert], bool],
    ) -> Older:
        """``older_alerts`` of this log, off the event loop."""
        return await asyncio.to_thread(
            older_alerts, self.path, skip=skip, before=before, want=want, passes=passes
        )

    async def events_at(self, seqs: Iterable[int]) -> dict[int, ev.Event]:
        wanted = sorted(set(seqs))
        found: dict[int, ev.Event] = {}
        for start in range(0, len(wanted), tables.IN_LIST_MAX):
            chunk = wanted[start : start + tables.IN_LIST_MAX]
            for row in await self._rows(tables.rows_at(len(chunk)), chunk):
                found[row.seq] = ev.decode(row.data)
        return found
