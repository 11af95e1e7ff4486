"""The read models behind the dashboard's figures, pure (no NATS, no browser): the
status-grouped order of its table and its paging, the alert counts its cards and chips
show, and rejected messages counted per hour of log time (issue #23, item 7).
``test_dashboard.py`` holds each figure against the API on a running service."""

from __future__ import annotations

import pytest

from tocsin.core import events as ev
from tocsin.core import views
from tocsin.core.contracts import Severity
from tocsin.core.fold import fold, rebuild
from tocsin.core.state import HOUR_US, Alert, Silence, State

NOW = 1_800_000_000 * 1_000_000
MINUTE = 60_000_000


def alert(
    alert_id: str, severity: Severity, minutes_ago: int, host: str, **fields: object
) -> Alert:
    seen = NOW - minutes_ago * MINUTE
    made = Alert(
        id=alert_id,
        fingerprint=f"fp-{alert_id}",
        type="disk_full",
        severity=severity,
        summary=f"disk full on {host}",
        source="node",
        status="firing",
        labels={"host": host},
        details={},
        first_seen=seen,
        last_seen=seen,
    )
    for name, value in fields.items():
        setattr(made, name, value)
    return made


def mixed_state() -> State:
    """Eight alerts, every status, the newest a resolved one; ``db7`` is silenced."""
    alerts = [
        alert("a1", "critical", 9, "db1"),
        alert("a2", "warning", 3, "db2"),
        alert("a3", "critical", 5, "db3", acked_by="ana", acked_at=NOW - MINUTE),
        alert("a4", "warning", 2, "db7"),  # silenced
        alert("a5", "critical", 1, "db4", status="resolved", resolved_at=NOW),
        alert("a6", "info", 7, "db5"),
        alert("a7", "warning", 8, "db7", status="resolved", resolved_at=NOW),
        alert("a8", "critical", 4, "db6"),
    ]
    silence = Silence(
        id="s1",
        matchers={"labels": {"host": "db7"}},
        starts_at=NOW - HOUR_US,
        ends_at=NOW + HOUR_US,
        created_by="ana",
        comment="",
        created_at=NOW - HOUR_US,
    )
    return State(alerts={a.id: a for a in alerts}, silences={"s1": silence})


def walk(state: State, order: views.AlertOrder, limit: int, **filters: str) -> list[str]:
    """Every alert id, page after page."""
    ids: list[str] = []
    cursor = None
    while True:
        page = views.list_alerts(state, limit=limit, cursor=cursor, now=NOW, order=order, **filters)
        ids.extend(a.id for a in page.alerts)
        if page.next_cursor is None:
            return ids
        cursor = page.next_cursor


@pytest.mark.parametrize("limit", [1, 2, 3, 50])
def test_the_table_lists_firing_then_acked_silenced_resolved_each_newest_first(
    limit: int,
) -> None:
    state = mixed_state()
    grouped = ["a2", "a8", "a6", "a1", "a3", "a4", "a5", "a7"]
    assert walk(state, "status", limit) == grouped
    # The API's order is unchanged: newest last_seen first, whatever the status.
    assert walk(state, "last_seen", limit) == ["a5", "a4", "a2", "a8", "a3", "a6", "a7", "a1"]
    assert walk(state, "status", limit, severity="critical") == ["a8", "a1", "a3", "a5"]
    assert walk(state, "status", limit, status="silenced") == ["a4"]
    shown = views.list_alerts(state, now=NOW, order="status").alerts
    assert [a.status for a in shown] == ["firing"] * 4 + ["acked", "silenced"] + ["resolved"] * 2


def test_a_cursor_of_one_order_is_refused_by_the_other() -> None:
    state = mixed_state()
    plain = views.list_alerts(state, limit=2, now=NOW).next_cursor
    grouped = views.list_alerts(state, limit=2, now=NOW, order="status").next_cursor
    assert plain is not None
    assert grouped is not None
    with pytest.raises(views.QueryError):
        views.list_alerts(state, cursor=grouped, now=NOW)
    with pytest.raises(views.QueryError):
        views.list_alerts(state, cursor=plain, now=NOW, order="status")


def test_alert_counts_are_what_the_list_shows_for_each_status_and_severity() -> None:
    state = mixed_state()
    counts = views.alert_counts(state, NOW)
    for status in views.ALERT_STATUSES:
        for severity in views.SEVERITIES:
            listed = views.list_alerts(
                state, status=status, severity=severity, limit=500, now=NOW
            ).alerts
            assert counts[status][severity] == len(listed), (status, severity)
    assert counts["firing"] == {"critical": 2, "error": 0, "warning": 1, "info": 1}
    assert counts["silenced"]["warning"] == 1  # silenced, not counted as firing
    narrowed = views.alert_counts(state, NOW, q="db7")
    assert narrowed["silenced"]["warning"] == 1
    assert narrowed["resolved"]["warning"] == 1
    assert sum(sum(row.values()) for row in narrowed.values()) == 2
    # Once the silence has ended, the alert fires again.
    later = NOW + 2 * HOUR_US
    assert views.alert_counts(state, later)["firing"]["warning"] == 2


def rejected(code: str) -> ev.AlertRejected:
    return ev.AlertRejected(
        code=code,
        reason=f"refused: {code}",
        field=None,
        subject="alerts.in.bad",
        received_at=0,
        raw="{",
        raw_encoding="utf-8",
    )


def test_stats_count_rejected_messages_by_reason_in_their_window() -> None:
    log = [
        (1, NOW - 30 * HOUR_US, rejected("invalid_json")),  # outside a 24 h window
        (2, NOW - 2 * HOUR_US, rejected("invalid_json")),
        (3, NOW - HOUR_US, rejected("invalid_field")),
        (4, NOW, rejected("invalid_json")),
    ]
    state = State()
    for seq, ts, event in log:
        fold(state, seq, ts, event)
    assert state == rebuild(log)
    day = views.stats(state, 24, NOW)
    assert day.rejected == 3
    assert day.rejected_by_reason == {"invalid_json": 2, "invalid_field": 1}  # most first
    assert list(day.rejected_by_reason) == ["invalid_json", "invalid_field"]
    week = views.stats(state, 48, NOW)
    assert week.rejected == 4
    assert views.stats(state, 1, NOW).rejected_by_reason == {"invalid_json": 1}
    assert state.counters.rejected == 4
