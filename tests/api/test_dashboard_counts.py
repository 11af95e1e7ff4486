"""The read models behind the dashboard's figures, pure (no NATS, no browser): rejected
messages counted per hour of log time (issue #23, item 7)."""

from __future__ import annotations

from tocsin.core import events as ev
from tocsin.core import views
from tocsin.core.fold import fold, rebuild
from tocsin.core.state import HOUR_US, State

NOW = 1_800_000_000 * 1_000_000


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
