"""What the projection lets go of (``core.retention``), pure: issue #16 item 9.

Events go through ``triage`` at an injected log time, their facts are folded in, and
the state must equal a rebuild from the same rows: the sweep is a function of the log's
``ts`` alone.
"""

from __future__ import annotations

import itertools
from typing import Any

from tocsin.core import events as ev
from tocsin.core.decide.route import Route, RoutingTable
from tocsin.core.decide.triage import triage
from tocsin.core.fold import fold, fold_alert, rebuild
from tocsin.core.ingest import Normalized, default_fingerprint
from tocsin.core.matchers import Match
from tocsin.core.state import HOUR_US, KEEP_RESOLVED_US, State
from tocsin.core.views import notification_view

T0 = 1_800_000_000 * 1_000_000  # the log time of the first event
MINUTE = 60 * 1_000_000
ROUTES = RoutingTable.compile([Route(receivers=["hook"], match=Match())])


def normalized(host: str, at: int, status: str = "firing") -> Normalized:
    labels = {"host": host}
    return Normalized(
        type="disk_full",
        severity="warning",
        summary=f"disk full on {host}",
        source="db",
        status=status,  # type: ignore[arg-type]
        labels=labels,
        fingerprint=default_fingerprint("disk_full", labels),
        details={},
        timestamp=at,
        timestamp_replaced=False,
        event_id=None,
    )


class Log:
    """A log being written at injected times, its state folded as it goes."""

    def __init__(self) -> None:
        self.state = State()
        self.rows: list[tuple[int, int, ev.Event]] = []
        ids = itertools.count(1)
        self.new_id = lambda: f"id{next(ids)}"

    def append(self, ts: int, *facts: ev.Event) -> list[ev.Event]:
        for fact in facts:
            self.rows.append((len(self.rows) + 1, ts, fact))
            fold(self.state, len(self.rows), ts, fact)
        return list(facts)

    def feed(self, host: str, ts: int, status: str = "firing") -> list[ev.Event]:
        facts = triage(
            self.state,
            normalized(host, ts, status),
            subject="alerts.in.db",
            received_at=ts,
            routing=ROUTES,
            window_seconds=600,
            new_id=self.new_id,
            trace_id=None,
        )
        return self.append(ts, *facts)

    def settle(self, routed: ev.AlertRouted, ts: int, outcome: str) -> None:
        common: dict[str, Any] = {
            "notification_id": routed.notification_id,
            "receiver": routed.receiver,
            "alert_id": routed.alert_id,
            "fingerprint": routed.fingerprint,
            "channel": "webhook",
            "at": ts,
        }
        if outcome == "delivered":
            self.append(ts, ev.DeliverySucceeded(**common, attempts=1, status_code=200))
        else:
            self.append(
                ts, ev.DeliveryDeadLettered(**common, attempts=1, error="410", status_code=410)
            )

    def supersede(self, routed: ev.AlertRouted, by: ev.AlertRouted, ts: int) -> None:
        """``routed``'s notification settled without a send: ``by``'s was accepted."""
        self.append(
            ts,
            ev.DeliverySuperseded(
                notification_id=routed.notification_id,
                receiver=routed.receiver,
                alert_id=routed.alert_id,
                fingerprint=routed.fingerprint,
                channel="webhook",
                attempts=0,
                log_seq=2,
                superseded_by=by.notification_id,
                superseded_by_seq=5,
                at=ts,
            ),
        )

    def everything(self) -> State:
        """The same rows folded by a state that never lets go (``tocsin state``)."""
        state = State(keep_everything=True)
        for seq, ts, fact in self.rows:
            fold(state, seq, ts, fact)
        return state


def routed_in(facts: list[ev.Event]) -> ev.AlertRouted:
    [routed] = [f for f in facts if isinstance(f, ev.AlertRouted)]
    return routed


def test_resolved_alerts_older_than_the_window_are_let_go_and_open_ones_stay() -> None:
    """Catches a projection that keeps every alert and delivery forever (memory grows
    with history, and compaction carries it all into the base snapshot): an alert
    resolved more than ``keep_resolved`` ago and its delivered notifications are gone
    after the next hour begins, while the open alert, the alert whose notification is
    dead-lettered (it can be re-queued) and a recently resolved one stay; live state is
    the fold of the log, and counters are those of a fold that keeps everything."""
    log = Log()
    opened = log.feed("open", T0)
    log.settle(routed_in(opened), T0 + MINUTE, "delivered")
    old = log.feed("old", T0)
    log.settle(routed_in(old), T0 + MINUTE, "delivered")
    resolved = log.feed("old", T0 + 2 * MINUTE, "resolved")
    log.settle(routed_in(resolved), T0 + 3 * MINUTE, "delivered")
    dead = log.feed("dead", T0)
    log.settle(routed_in(dead), T0 + MINUTE, "dead")
    log.feed("dead", T0 + 2 * MINUTE, "resolved")
    old_id, dead_id, open_id = routed_in(old).alert_id, routed_in(dead).alert_id, opened[0]
    assert isinstance(open_id, ev.AlertReceived)

    # Within the window, and at the first hour past it: nothing is let go yet.
    later = T0 + KEEP_RESOLVED_US
    recent = log.feed("recent", later)
    log.feed("recent", later + MINUTE, "resolved")
    assert old_id in log.state.alerts

    log.feed("open", later + 2 * HOUR_US)  # a new hour, past the window: the sweep
    alerts = log.state.alerts
    assert old_id not in alerts
    assert {open_id.alert_id, dead_id, routed_in(recent).alert_id} <= alerts.keys()
    # Delivered a day ago: gone; dead, and not sent yet: kept.
    deliveries = log.state.deliveries
    for gone in (routed_in(opened), routed_in(old), routed_in(resolved)):
        assert gone.notification_id not in deliveries
    assert deliveries[routed_in(dead).notification_id].status == "dead"
    assert {d.status for d in deliveries.values()} == {"dead", "pending"}
    assert log.state == rebuild(log.rows)

    everything = log.everything()
    assert old_id in everything.alerts
    assert (log.state.counters, log.state.hours, log.state.queue["dead"]) == (
        everything.counters,
        everything.hours,
        everything.queue["dead"],
    )
    # What was let go is still in its rows, which the API folds back when asked.
    rows_of_old = [
        (seq, ts, ev.encode(fact))
        for seq, ts, fact in log.rows
        if getattr(fact, "alert_id", None) == old_id
    ]
    assert fold_alert(old_id, rows_of_old) == everything.alerts[old_id]


def test_the_window_is_the_logged_config_and_ended_silences_go_too() -> None:
    """Catches a window taken from anywhere but the log (a rebuild under another config
    would differ from the live state): ``config.loaded`` sets it, and an ended silence
    goes once it ended more than that long ago, an active one stays."""
    log = Log()
    config = ev.ConfigLoaded(
        digest="d", receivers={}, routes=1, dedup_window_seconds=600, keep_resolved_seconds=3600
    )
    log.append(T0, config)
    assert log.state.keep_resolved == HOUR_US
    silence: dict[str, Any] = {"matchers": {}, "created_by": "me", "created_at": T0}
    log.append(
        T0,
        ev.SilenceCreated(silence_id="ended", starts_at=T0, ends_at=T0 + MINUTE, **silence),
        ev.SilenceCreated(silence_id="active", starts_at=T0, ends_at=T0 + 9 * HOUR_US, **silence),
    )
    log.feed("h", T0)
    log.feed("h", T0 + MINUTE, "resolved")
    log.feed("other", T0 + 3 * HOUR_US)
    assert set(log.state.silences) == {"active"}
    assert [a.labels["host"] for a in log.state.alerts.values()] == ["other"]
    assert log.state == rebuild(log.rows)


def one_minute_window() -> ev.ConfigLoaded:
    return ev.ConfigLoaded(
        digest="d", receivers={}, routes=1, dedup_window_seconds=600, keep_resolved_seconds=60
    )


def test_a_one_minute_window_is_swept_every_minute_of_log_time() -> None:
    """Catches a sweep that runs once per hour of log time whatever the window (a ten
    minute soak with ``keep_resolved = "1m"`` never let anything go): logged after an
    event under the default window (whose sweep was an hour away), a one-minute window
    lets go of a resolved alert and its delivered notifications between one and two
    minutes after they are over, not before; live state is the fold of the log."""
    log = Log()
    opened = log.feed("other", T0)  # swept at T0 under the default: the next is an hour on
    log.append(T0, one_minute_window())
    old = log.feed("old", T0)
    log.settle(routed_in(old), T0 + 10_000, "delivered")
    resolved = log.feed("old", T0 + 20_000, "resolved")
    log.settle(routed_in(resolved), T0 + 30_000, "delivered")
    old_id = routed_in(old).alert_id

    log.feed("other", T0 + MINUTE)  # a new minute, but the resolve is not a minute old
    assert old_id in log.state.alerts
    assert routed_in(old).notification_id in log.state.deliveries

    log.feed("other", T0 + 2 * MINUTE + 30_000)  # the next minute: over for a minute
    assert old_id not in log.state.alerts
    for gone in (routed_in(old), routed_in(resolved)):
        assert gone.notification_id not in log.state.deliveries
    assert routed_in(opened).alert_id in log.state.alerts  # still firing
    assert log.state.deliveries[routed_in(opened).notification_id].status == "pending"
    assert log.state.queue["delivered"] == 0
    assert log.state == rebuild(log.rows)


def test_a_superseded_notification_is_let_go_like_a_delivered_one() -> None:
    """Catches superseded notifications kept for ever (with their body): settled, never
    sent nor re-queued, they go ``keep_resolved`` after their outcome, and the queue's
    count of them follows."""
    log = Log()
    log.append(T0, one_minute_window())
    first = routed_in(log.feed("h", T0))
    later = routed_in(log.feed("h", T0 + 11 * MINUTE))  # a reminder, a new bucket
    log.settle(later, T0 + 11 * MINUTE, "delivered")
    log.supersede(first, later, T0 + 11 * MINUTE)
    superseded = log.state.deliveries[first.notification_id]
    assert (superseded.status, superseded.as_routed) == ("superseded", None)
    assert log.state.queue["superseded"] == 1
    log.feed("h", T0 + 13 * MINUTE)
    assert first.notification_id not in log.state.deliveries
    assert log.state.queue["superseded"] == 0
    assert log.state == rebuild(log.rows)


def test_a_notification_is_shown_from_the_log_however_long_its_alert_fires_on() -> None:
    """Catches ``GET /api/v1/notifications/{id}`` answering 404 for a delivered
    notification whose alert kept firing: the view folds the alert's rows with the
    projection's fold, and a fold that sweeps let the delivery go a day after it was
    delivered, before the view read it. The view keeps everything, as
    ``fold_alert`` does."""
    log = Log()
    first = routed_in(log.feed("h", T0))
    log.settle(first, T0 + MINUTE, "delivered")
    log.feed("h", T0 + KEEP_RESOLVED_US + 2 * HOUR_US)  # a reminder a day on: a sweep
    rows = [
        ev.StoredRow(seq, ts, ev.kind_of(fact), ev.encode(fact))
        for seq, ts, fact in log.rows
        if getattr(fact, "alert_id", None) == first.alert_id
    ]
    routed_row = next(row for row in rows if row.kind == "alert.routed")
    view = notification_view(routed_row, rows, {"hook": "webhook"})
    assert view is not None
    assert (view.notification_id, view.status, view.attempts) == (
        first.notification_id,
        "delivered",
        1,
    )
