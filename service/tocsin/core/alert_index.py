"""The projection's alerts newest first (pure): a page of ``GET /api/v1/alerts`` costs
O(log n + the alerts it looks at), not a sort of every alert on the event loop.

Alerts are kept sorted by ``(last_seen, id)`` (DESIGN.md section 10's order, ties by
id) in a list of sorted chunks, so a change costs O(log n + chunk) and a walk from any
cursor starts with two bisections. The index is not part of the projection (a read
model beside it, never snapshotted or compared): whoever folds facts names the alerts
whose key may have changed (``touched``: ``moved_by``, the ids of ``alert.received`` and
``alert.resolved`` facts, the only ones that move ``last_seen`` or make an alert), and
the next walk re-keys those. Alerts
the fold let go of (``core.retention``) are dropped when a walk meets them; a state
replaced by a rebuild, or an index nobody walked for longer than it has alerts
(``bound``), is indexed anew.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterator

from tocsin.core import events as ev
from tocsin.core.state import Alert, State

Key = tuple[int, str]
"""An alert's place: ``(last_seen, id)``; newest first is descending."""

CHUNK = 512  # keys a chunk holds before it is split in two


def moved_by(event: ev.Event) -> str | None:
    """The alert whose key ``event`` may move (it made the alert or moved its
    ``last_seen``), or ``None``."""
    kind = type(event)
    if kind is ev.AlertReceived or kind is ev.AlertResolved:
        return event.alert_id  # type: ignore[union-attr]
    return None


def key_of(alert: Alert) -> Key:
    return alert.last_seen, alert.id


class AlertIndex:
    """Alerts of one projection by ``(last_seen, id)``; ``examined`` counts the alerts
    the last walk looked at (the measure of a page's work)."""

    def __init__(self) -> None:
        self._state: State | None = None
        self._keys: dict[str, Key] = {}
        self._chunks: list[list[Key]] = []
        self._maxes: list[Key] = []
        self.dirty: set[str] = set()  # alerts whose key may have changed since the last walk
        self.examined = 0

    @classmethod
    def of(cls, state: State) -> AlertIndex:
        index = cls()
        index._rebuild(state)
        return index

    def touched(self, alert_id: str) -> None:
        """A fact about ``alert_id`` that may move it or make it was folded."""
        self.dirty.add(alert_id)

    def bound(self, state: State) -> None:
        """Forget everything once more alerts wait to be re-keyed than ``state`` holds
        (and a chunk more): nothing has walked the index for a long while (nobody reads
        ``/api/v1/alerts``), and ``dirty`` would otherwise grow with every alert the
        fold ever touched, let go of or not. The next walk indexes ``state`` anew, as
        catching up that many would cost as much. Whoever folds calls this before each
        batch; ``dirty`` stays the same set (batches add to it). An index not walked
        yet (or forgotten) keeps no names at all: its next walk indexes ``state`` anew
        whatever they are, and the set of every alert a storm touched was ~2 MiB per
        21,000 alerts held for nothing (issue #20's RSS target)."""
        if self._state is None:
            self.dirty.clear()
            return
        if len(self.dirty) > len(state.alerts) + CHUNK:
            self._state = None
            self._keys, self._chunks, self._maxes = {}, [], []
            self.dirty.clear()

    def newest_first(self, state: State, before: Key | None = None) -> Iterator[Alert]:
        """``state``'s alerts whose key is below ``before`` (all without one), newest
        first. Consume it before ``state`` changes again (at once, on the event loop)."""
        self._catch_up(state)
        self.examined = 0
        alerts = state.alerts
        stale: list[Key] = []
        try:
            for key in self._descending(before):
                alert = alerts.get(key[1])
                if alert is None or key_of(alert) != key:
                    stale.append(key)  # let go of by the fold (or re-keyed: dirty)
                    continue
                self.examined += 1
                yield alert
        finally:
            for key in stale:
                if self._keys.get(key[1]) == key and key[1] not in alerts:
                    del self._keys[key[1]]
                    self._remove(key)

    def __len__(self) -> int:
        return len(self._keys)

    def _catch_up(self, state: State) -> None:
        if state is not self._state or len(self._keys) > 2 * len(state.alerts) + CHUNK:
            self._rebuild(state)  # a new state (rebuilt after a failed commit), or mostly gone
            return
        alerts, keys = state.alerts, self._keys
        for alert_id in self.dirty:
            old = keys.pop(alert_id, None)
            if old is not None:
                self._remove(old)
            alert = alerts.get(alert_id)
            if alert is not None:
                keys[alert_id] = new = key_of(alert)
                self._insert(new)
        self.dirty.clear()

    def _rebuild(self, state: State) -> None:
        self._state = state
        self.dirty.clear()
        self._keys = {alert_id: key_of(alert) for alert_id, alert in state.alerts.items()}
        ordered = sorted(self._keys.values())
        self._chunks = [ordered[i : i + CHUNK] for i in range(0, len(ordered), CHUNK)]
        self._maxes = [chunk[-1] for chunk in self._chunks]

    def _insert(self, key: Key) -> None:
        chunks, maxes = self._chunks, self._maxes
        if not chunks:
            chunks.append([key])
            maxes.append(key)
            return
        at = min(bisect_left(maxes, key), len(chunks) - 1)
        chunk = chunks[at]
        insort(chunk, key)
        maxes[at] = chunk[-1]
        if len(chunk) > 2 * CHUNK:
            chunks[at : at + 1] = [chunk[:CHUNK], chunk[CHUNK:]]
            maxes[at : at + 1] = [chunk[CHUNK - 1], chunk[-1]]

    def _remove(self, key: Key) -> None:
        chunks, maxes = self._chunks, self._maxes
        at = bisect_left(maxes, key)
        if at == len(chunks):
            return
        chunk = chunks[at]
        where = bisect_left(chunk, key)
        if where == len(chunk) or chunk[where] != key:
            return
        del chunk[where]
        if chunk:
            maxes[at] = chunk[-1]
        else:
            del chunks[at], maxes[at]

    def _descending(self, before: Key | None) -> Iterator[Key]:
        chunks = self._chunks
        if not chunks:
            return
        if before is None:
            at, end = len(chunks) - 1, len(chunks[-1])
        else:
            at = bisect_left(self._maxes, before)
            if at == len(chunks):
                at, end = at - 1, len(chunks[-1])
            else:
                end = bisect_left(chunks[at], before)
        while at >= 0:
            chunk = chunks[at]
            for where in range(min(end, len(chunk)) - 1, -1, -1):
                yield chunk[where]
            at -= 1
            end = len(chunks[at]) if at >= 0 else 0
