"""``GET /api/v1/alerts`` in O(limit) (issue #16 item 15): the projection's alerts newest
first by ``(last_seen, id)``, walked from a cursor, never sorted whole per page."""

from __future__ import annotations

import base64
import random

from tocsin.core import events as ev
from tocsin.core.alert_index import CHUNK, AlertIndex, key_of, moved_by
from tocsin.core.fold import fold
from tocsin.core.state import State
from tocsin.core.views import list_alerts

SECOND = 1_000_000
T0 = 1_800_000_000 * SECOND
SEVERITIES = ("critical", "error", "warning", "info")


def received(alert_id: str, at: int, severity: str = "warning") -> ev.AlertReceived:
    return ev.AlertReceived(
        alert_id=alert_id,
        fingerprint=f"fp-{alert_id}",
        dedup_key=f"fp-{alert_id}:0",
        type="disk_full",
        severity=severity,  # type: ignore[arg-type]
        summary=f"alert {alert_id}",
        source="db",
        status="firing",
        labels={"n": alert_id},
        details={},
        timestamp=at,
        received_at=at,
        subject="alerts.in.db",
    )


def big_projection(alerts: int) -> State:
    """``alerts`` alerts, each opened by one received event; their timestamps are
    shuffled (publishers' clocks differ) and many share a second (ties by id)."""
    state = State()
    rng = random.Random(16)
    order = list(range(alerts))
    rng.shuffle(order)
    for seq, n in enumerate(order, 1):
        event = received(f"a{n:06d}", T0 + (n // 3) * SECOND, SEVERITIES[n % 4])
        fold(state, seq, T0, event)
    return state


def walk(state: State, index: AlertIndex, limit: int, **filters: str) -> list[str]:
    ids: list[str] = []
    cursor = None
    while True:
        page = list_alerts(state, limit=limit, cursor=cursor, index=index, **filters)
        ids += [a.id for a in page.alerts]
        if page.next_cursor is None:
            return ids
        cursor = page.next_cursor


def test_a_page_of_a_big_projection_looks_at_a_page_of_alerts() -> None:
    """Catches a listing that sorts every alert on each request: with 100,000 alerts in
    memory the first page, and a page from a cursor deep in the list, look at ``limit +
    1`` alerts; with a filter, about ``limit`` / its share. The order and cursors keep
    DESIGN §7/§10's contract: newest ``last_seen`` first, ties by id, every alert once."""
    state = big_projection(100_000)
    index = AlertIndex.of(state)
    first = list_alerts(state, limit=50, index=index)
    assert index.examined == 51
    expected = sorted(state.alerts.values(), key=key_of, reverse=True)
    assert [a.id for a in first.alerts] == [a.id for a in expected[:50]]

    deep = expected[70_000]
    cursor_page = list_alerts(state, limit=50, index=index, cursor=_cursor(key_of(deep)))
    assert index.examined == 51
    assert [a.id for a in cursor_page.alerts] == [a.id for a in expected[70_001:70_051]]

    critical = list_alerts(state, limit=50, index=index, severity="critical")
    assert all(a.severity == "critical" for a in critical.alerts)
    assert index.examined <= 4 * 51

    small = big_projection(3_000)
    assert walk(small, AlertIndex.of(small), 500) == [
        a.id for a in sorted(small.alerts.values(), key=key_of, reverse=True)
    ]


def test_the_index_follows_the_fold_when_told_which_alerts_moved() -> None:
    """Catches an index that shows a stale order: an alert whose ``last_seen`` moves up
    is listed first once the fold names it (``touched``), a new alert appears, and an
    alert the fold let go of is no longer listed."""
    state = big_projection(2_000)
    index = AlertIndex.of(state)
    list_alerts(state, index=index)
    seq = state.last_seq
    for alert_id, at in (("a000007", T0 + 10_000 * SECOND), ("new", T0 + 9_000 * SECOND)):
        seq += 1
        fold(state, seq, T0, received(alert_id, at))
        index.touched(alert_id)
    del state.alerts["a001999"]  # what core.retention does to one resolved long ago
    ids = walk(state, index, 100)
    assert ids[:2] == ["a000007", "new"]
    assert "a001999" not in ids
    assert ids == [a.id for a in sorted(state.alerts.values(), key=key_of, reverse=True)]
    assert len(index) == len(state.alerts)


def test_a_resolve_that_moves_last_seen_is_named_as_a_move() -> None:
    """Catches a resolve (its ``resolved_at`` is the alert's last sign of life) moving
    ``last_seen`` without the index being told: the alert would be listed twice or at
    its old place."""
    state = big_projection(50)
    index = AlertIndex.of(state)
    list_alerts(state, index=index)
    resolve = ev.AlertResolved(
        alert_id="a000003", fingerprint="fp-a000003", resolved_at=T0 + 999 * SECOND
    )
    fold(state, state.last_seq + 1, T0, resolve)
    moved = moved_by(resolve)
    assert moved == "a000003"
    index.touched(moved)
    ids = walk(state, index, 10)
    assert ids[0] == "a000003"
    assert ids == [a.id for a in sorted(state.alerts.values(), key=key_of, reverse=True)]
    assert moved_by(ev.AlertAcked(alert_id="a000003", fingerprint="f", by="x", at=T0)) is None


def test_an_index_nobody_walks_does_not_grow_with_every_alert() -> None:
    """Catches ``dirty`` kept for ever when nothing reads ``/api/v1/alerts``: the fold
    names every alert it touches, and without a walk the set held every alert id ever
    seen, let go of or not (3,000 here, with 100 in the state). Bounded before each
    batch (``bound``), it stays within the state's size plus a chunk, and the next walk
    still lists the state in order."""
    state = State()
    index = AlertIndex.of(state)
    for n in range(3_000):
        index.bound(state)
        fold(state, n + 1, T0, received(f"a{n:06d}", T0 + n * SECOND))
        index.touched(f"a{n:06d}")
        if len(state.alerts) > 100:  # core.retention lets the oldest go
            del state.alerts[f"a{n - 100:06d}"]
        assert len(index.dirty) <= len(state.alerts) + CHUNK + 1
    assert walk(state, index, 30) == [
        a.id for a in sorted(state.alerts.values(), key=key_of, reverse=True)
    ]
    assert len(index) == len(state.alerts)


def test_an_index_not_walked_yet_keeps_no_alert_to_re_key() -> None:
    """Catches ``dirty`` filled while nothing has walked the index (nobody read
    ``/api/v1/alerts`` since the start): the first walk indexes the state anew whatever
    it holds, so a storm's every alert id was a set held for nothing (~2 MiB per 21,000
    alerts, issue #20's RSS target). Each batch's names are dropped at the next
    ``bound``; the first walk lists the state in order, and from then on the index
    follows the fold as before."""
    state = State()
    index = AlertIndex()
    for n in range(3_000):
        index.bound(state)
        fold(state, n + 1, T0, received(f"a{n:06d}", T0 + n * SECOND))
        index.touched(f"a{n:06d}")
        assert len(index.dirty) == 1  # this batch's alone
    in_order = [a.id for a in sorted(state.alerts.values(), key=key_of, reverse=True)]
    assert walk(state, index, 100) == in_order
    index.bound(state)
    fold(state, 3_001, T0, received("a000000", T0 + 5_000 * SECOND))  # moved to the top
    index.touched("a000000")
    index.bound(state)
    assert index.dirty == {"a000000"}  # walked: the names are kept until the next walk
    assert walk(state, index, 100) == ["a000000", *in_order[:-1]]


def _cursor(key: tuple[int, str]) -> str:
    """The cursor the API returns after the alert at ``key`` (DESIGN leaves it opaque)."""
    return base64.urlsafe_b64encode(f"{key[0]}:{key[1]}".encode()).decode()
