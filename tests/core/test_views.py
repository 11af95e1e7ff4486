"""tocsin.views, pure: what the API and the dashboard show of an alert no route
delivers (issue #23 item 5)."""

from __future__ import annotations

from tests.core.test_fold import MINUTE, ONLY_CRITICAL, T0, Run, normalized
from tocsin.core import views


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
