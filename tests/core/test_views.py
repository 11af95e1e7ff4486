"""tocsin.views, pure: what the API and the dashboard show of an alert no route
delivers (issue #23 item 5), and which alerts an open dashboard is told of as news
(issue #21, UI notifications)."""

from __future__ import annotations

from tests.core.test_fold import MINUTE, ONLY_CRITICAL, T0, Run, normalized
from tocsin.core import events as ev
from tocsin.core import views
from tocsin.core.state import HOUR_US, Silence


def test_an_alert_no_route_delivers_is_shown_unrouted_and_a_silenced_one_is_not() -> None:
    """Both have no receivers; only the unrouted one says that no route matches it.
    Its status stays one of DESIGN's (``ALERT_STATUSES``)."""
    run = Run()
    run.feed(normalized(0, "info"), routing=ONLY_CRITICAL)
    run.feed(normalized(1, "info"), routing=ONLY_CRITICAL)  # a duplicate
    [alert] = run.state.alerts.values()
    view = views.alert_view(alert)
    assert (view.status, view.receivers, view.unrouted) == ("firing", [], True)
    assert views.alert_view(alert, silenced=True).status == "silenced"
    stats = views.stats(run.state, 24, T0 + 2 * MINUTE)
    assert (stats.total, stats.suppressed, stats.unrouted) == (2, 2, 1)
    run.feed(normalized(2, "critical"), routing=ONLY_CRITICAL)  # a route takes it now
    view = views.alert_view(alert)
    assert (view.receivers, view.unrouted) == (["pager"], False)
    assert views.stats(run.state, 24, T0 + 3 * MINUTE).unrouted == 1  # it was found once


def test_an_alert_a_route_delivers_is_not_unrouted() -> None:
    run = Run()
    run.feed(normalized(0, "info"))
    [alert] = run.state.alerts.values()
    assert views.alert_view(alert).unrouted is False
    assert views.stats(run.state, 24, T0).unrouted == 0


def test_news_is_an_alert_opened_or_escalated_into_a_watched_severity_once() -> None:
    """What the dashboard notifies of (``views.notable``): an alert opened with a
    watched severity; one escalated into it from a severity not watched (it was no news
    at its opening); never a duplicate, a reminder or a resolve. Catches a notifier
    that reacts to every fact of a critical alert (a duplicate would notify again), one
    that misses a warning escalated to critical, and one that ignores the setting."""
    run = Run()
    critical, both = ("critical",), ("critical", "warning")
    opened_warning = run.feed(normalized(0, "warning", host="a"))
    [warning_id] = run.state.alerts
    assert views.notable(opened_warning, critical) == []
    assert views.notable(opened_warning, both) == [warning_id]
    escalated = run.feed(normalized(1, "critical", host="a"))
    assert "alert.escalated" in [ev.kind_of(fact) for fact in escalated]
    assert views.notable(escalated, critical) == [warning_id]
    assert views.notable(escalated, both) == []  # news already when it opened
    opened_critical = run.feed(normalized(2, "critical", host="b"))
    critical_id = next(alert_id for alert_id in run.state.alerts if alert_id != warning_id)
    assert views.notable(opened_critical, critical) == [critical_id]
    assert views.notable(opened_critical, ()) == []  # notify = []: nothing is news
    assert views.notable(run.feed(normalized(3, "critical", host="b")), critical) == []
    assert views.notable(run.feed(normalized(20, "critical", host="b")), critical) == []
    resolved = run.feed(normalized(21, "critical", status="resolved", host="b"))
    assert views.notable(resolved, critical) == []
    assert views.notable(opened_critical + escalated + opened_critical, critical) == [
        critical_id,
        warning_id,
    ]


def test_news_tells_only_of_alerts_still_firing() -> None:
    """``views.new_alerts``: an alert resolved, acknowledged or silenced before the page
    heard of it is no news, nor one the projection no longer holds; each is told once,
    with the summary the page lists. Catches a page told of an alert already resolved."""
    run = Run()
    for minute, host in enumerate(("firing", "resolved", "acked", "silenced")):
        run.feed(normalized(minute, "critical", host=host))
    run.feed(normalized(5, "critical", status="resolved", host="resolved"))
    ids = {alert.labels["host"]: alert.id for alert in run.state.alerts.values()}
    run.state.alerts[ids["acked"]].acked_at = T0 + 6 * MINUTE
    now = T0 + 7 * MINUTE
    run.state.silences["s1"] = Silence(
        id="s1",
        matchers={"labels": {"host": "silenced"}},
        starts_at=now - HOUR_US,
        ends_at=now + HOUR_US,
        created_by="ana",
        comment="",
        created_at=now - HOUR_US,
    )
    asked = [ids["resolved"], ids["firing"], "gone", ids["acked"], ids["silenced"], ids["firing"]]
    assert views.new_alerts(run.state, asked, now) == [
        views.NewAlert(id=ids["firing"], severity="critical", summary="disk full")
    ]


def test_the_merged_raw_log_is_paged_by_a_seq_per_partition() -> None:
    """``/api/v1/events`` of serve --partitions N: the cursor names where each
    partition's next page starts, a page marks each row with its partition, and
    ``after_seq`` alone (which names no row of several logs) is refused. Catches a
    cursor that drops a partition, or that a client can not give back."""
    import pytest

    from tocsin.core.events import StoredRow

    assert views.events_cursor(None, 3, 0) == (0, 0, 0)
    assert views.events_cursor("4.0.17", 3, 0) == (4, 0, 17)
    for bad in ("4.0", "a.b.c", "1.2.3.4", ""):
        with pytest.raises(views.QueryError) as refused:
            views.events_cursor(bad, 3, 0)
        assert refused.value.field == "cursor"
    with pytest.raises(views.QueryError) as refused:
        views.events_cursor(None, 3, 5)
    assert refused.value.field == "after_seq"
    data = b'{"kind":"silence.deleted","silence_id":"s","by":null,"at":0}'
    rows = [(1, StoredRow(7, T0, "silence.deleted", data)), (0, StoredRow(3, T0, "x", data))]
    page = views.merged_event_page(rows, (3, 7))
    assert [(e.partition, e.seq) for e in page.events] == [(1, 7), (0, 3)]
    assert page.events[0].data["silence_id"] == "s"
    assert page.next_cursor == "3.7"
    assert page.next_after_seq is None
    assert views.merged_event_page(rows, None).next_cursor is None
