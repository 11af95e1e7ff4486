"""triage + fold, pure: the facts an event stream produces and the state they fold to.

No I/O: events go through ``triage`` against the state, their facts are folded in, and
the state must equal a rebuild from the same facts.
"""

from __future__ import annotations

import itertools
from typing import Any

from tocsin.core import events as ev
from tocsin.core import views
from tocsin.core.decide.dedup import NO_SLOTS
from tocsin.core.decide.route import Route, RoutingTable
from tocsin.core.decide.triage import triage
from tocsin.core.fold import fold, fold_stored, rebuild
from tocsin.core.ingest import Normalized, default_fingerprint
from tocsin.core.matchers import Match
from tocsin.core.state import SETTLED, State

WINDOW = 600.0
MINUTE = 60 * 1_000_000
T0 = 1_800_000_000 * 1_000_000 - (1_800_000_000 * 1_000_000) % (600 * 1_000_000)
ROUTES = RoutingTable.compile(
    [
        Route(receivers=["pager"], match=Match(severity="critical")),
        Route(receivers=["hook"], match=Match()),
    ]
)


def normalized(
    at_minute: int, severity: str = "warning", status: str = "firing", **labels: str
) -> Normalized:
    labels = labels or {"host": "db1"}
    return Normalized(
        type="disk_full",
        severity=severity,
        summary="disk full",
        source="db",  # type: ignore[arg-type]
        status=status,
        labels=labels,
        fingerprint=default_fingerprint("disk_full", labels),  # type: ignore[arg-type]
        details={},
        timestamp=T0 + at_minute * MINUTE,
        timestamp_replaced=False,
        event_id=None,
    )


class Run:
    def __init__(self) -> None:
        self.state = State()
        self.log: list[tuple[int, int, ev.Event]] = []
        ids = itertools.count(1)
        self.new_id = lambda: f"id{next(ids)}"

    def feed(
        self, event: Normalized, routing: RoutingTable = ROUTES, window: float = WINDOW
    ) -> list[ev.Event]:
        facts = triage(
            self.state,
            event,
            subject="alerts.in.db",
            received_at=event.timestamp,
            routing=routing,
            window_seconds=window,
            new_id=self.new_id,
            trace_id="t",
        )
        for fact in facts:
            seq = len(self.log) + 1
            self.log.append((seq, event.timestamp, fact))
            fold(self.state, seq, event.timestamp, fact)
        return facts


def kinds(facts: list[ev.Event]) -> list[str]:
    return [ev.kind_of(f) for f in facts]


def routed(facts: list[ev.Event]) -> list[tuple[str, str]]:
    return [(f.reason, f.receiver) for f in facts if isinstance(f, ev.AlertRouted)]


def test_an_alert_lifecycle_produces_the_documented_facts() -> None:
    run = Run()
    opened = run.feed(normalized(0))
    assert kinds(opened) == ["alert.received", "alert.opened", "alert.routed"]
    assert routed(opened) == [("firing", "hook")]
    assert kinds(run.feed(normalized(1))) == ["alert.received", "alert.suppressed"]
    escalated = run.feed(normalized(2, "critical"))
    assert kinds(escalated)[:2] == ["alert.received", "alert.escalated"]
    assert routed(escalated) == [("escalated", "pager"), ("escalated", "hook")]
    assert kinds(run.feed(normalized(3, "error"))) == ["alert.received", "alert.suppressed"]
    assert routed(run.feed(normalized(10))) == [("reminder", "hook")]
    resolved = run.feed(normalized(11, status="resolved"))
    assert kinds(resolved)[:2] == ["alert.received", "alert.resolved"]
    assert sorted(routed(resolved)) == [("resolved", "hook"), ("resolved", "pager")]
    reopened = run.feed(normalized(12))
    assert kinds(reopened) == ["alert.received", "alert.opened", "alert.routed"]
    assert kinds(run.feed(normalized(13, status="resolved", host="db9"))) == [
        "alert.received",
        "alert.resolve_ignored",
    ]

    first, second = sorted(run.state.alerts.values(), key=lambda a: a.first_seen)
    assert first.id != second.id
    assert (first.status, first.occurrences, first.suppressed_count) == ("resolved", 5, 2)
    assert first.severity == "warning"  # the latest firing event's
    assert sorted(first.receivers) == ["hook", "pager"]
    assert (second.status, second.occurrences) == ("firing", 1)
    assert run.state.open_by_fingerprint[second.fingerprint].alert_id == second.id
    assert run.state == rebuild(run.log)


def test_outcomes_fold_into_delivery_status_without_regressing() -> None:
    run = Run()
    [note] = [f for f in run.feed(normalized(0)) if isinstance(f, ev.AlertRouted)]
    common: dict[str, Any] = {
        "notification_id": note.notification_id,
        "receiver": "hook",
        "alert_id": note.alert_id,
        "fingerprint": note.fingerprint,
        "channel": "webhook",
    }
    outcomes: list[ev.Event] = [
        ev.DeliveryAttemptFailed(
            **common, attempt=1, error="HTTP 500", status_code=500, retry_in_seconds=1.0, at=1
        ),
        ev.DeliverySucceeded(**common, attempts=2, at=2),
        ev.DeliveryAttemptFailed(
            **common, attempt=1, error="late copy", status_code=500, retry_in_seconds=1.0, at=3
        ),
    ]
    for outcome in outcomes:
        run.log.append((len(run.log) + 1, 0, outcome))
        fold(run.state, len(run.log), 0, outcome)
    delivery = run.state.deliveries[note.notification_id]
    assert (delivery.status, delivery.attempts) == ("delivered", 2)
    assert run.state.alerts[note.alert_id].last_delivery_status == "delivered"
    assert (run.state.counters.delivered, run.state.counters.attempt_failures) == (1, 2)
    assert run.state == rebuild(run.log)


def test_a_superseded_notification_is_settled_apart_from_deliveries_and_failures() -> None:
    """Catches a superseded notification left pending (a redelivery would send it), or
    counted as dead (it would lower ``delivery_success_rate`` and read as a failure):
    it is settled, and counted in the queue and by receiver as its own number."""
    run = Run()
    [firing] = [f for f in run.feed(normalized(0)) if isinstance(f, ev.AlertRouted)]
    [resolve] = [
        f for f in run.feed(normalized(1, status="resolved")) if isinstance(f, ev.AlertRouted)
    ]
    common: dict[str, Any] = {"receiver": "hook", "channel": "webhook"}
    outcomes: list[ev.Event] = [
        ev.DeliveryAttemptFailed(
            notification_id=firing.notification_id,
            alert_id=firing.alert_id,
            fingerprint=firing.fingerprint,
            attempt=1,
            error="HTTP 500",
            status_code=500,
            retry_in_seconds=60.0,
            at=1,
            **common,
        ),
        ev.DeliverySucceeded(
            notification_id=resolve.notification_id,
            alert_id=resolve.alert_id,
            fingerprint=resolve.fingerprint,
            attempts=1,
            at=2,
            **common,
        ),
        ev.DeliverySuperseded(
            notification_id=firing.notification_id,
            alert_id=firing.alert_id,
            fingerprint=firing.fingerprint,
            attempts=1,
            log_seq=3,
            superseded_by=resolve.notification_id,
            superseded_by_seq=7,
            at=3,
            **common,
        ),
    ]
    for outcome in outcomes:
        run.log.append((len(run.log) + 1, T0, outcome))
        fold(run.state, len(run.log), T0, outcome)
    delivery = run.state.deliveries[firing.notification_id]
    assert delivery.status == "superseded"
    assert delivery.status in SETTLED
    assert delivery.error == f"superseded by {resolve.notification_id}"
    assert run.state.queue.get("pending", 0) == run.state.queue.get("retrying", 0) == 0
    assert run.state.queue["superseded"] == 1
    assert run.state.counters.superseded == 1
    assert run.state.counters.dead_lettered == 0
    numbers = views.stats(run.state, 1, T0)
    assert numbers.queue.superseded == 1
    assert numbers.queue.dead == 0
    assert numbers.by_receiver["hook"].superseded == 1
    assert numbers.by_receiver["hook"].dead == 0
    assert numbers.delivery_success_rate == 1.0
    assert run.state == rebuild(run.log)


def test_a_reminder_with_no_route_is_counted_as_suppressed() -> None:
    run = Run()
    only_critical = RoutingTable.compile(
        [Route(receivers=["pager"], match=Match(severity="critical"))]
    )
    facts = triage(
        run.state,
        normalized(0),
        subject="s",
        received_at=0,
        routing=only_critical,
        window_seconds=WINDOW,
        new_id=run.new_id,
        trace_id=None,
    )
    for seq, fact in enumerate(facts, 1):
        fold(run.state, seq, 0, fact)
    assert kinds(facts) == ["alert.received", "alert.opened", "alert.suppressed"]
    later = triage(
        run.state,
        normalized(10),
        subject="s",
        received_at=0,
        routing=only_critical,
        window_seconds=WINDOW,
        new_id=run.new_id,
        trace_id=None,
    )
    assert kinds(later) == ["alert.received", "alert.suppressed"]
    assert later[1].cause == "no_route"  # type: ignore[union-attr]


ONLY_CRITICAL = RoutingTable.compile([Route(receivers=["pager"], match=Match(severity="critical"))])


def test_an_unrouted_alert_is_marked_and_counted_once_until_a_route_takes_it() -> None:
    """Issue #23 item 5: an alert no route delivers is not silently like any other.
    Every event of it is counted as not routed (stats: suppressed = those not routed),
    the alert is marked unrouted, and the hour counts one unrouted alert, not one per
    event; a route that takes it later clears the mark."""
    run = Run()
    for minute in (0, 1, 10, 11):  # open, duplicate, reminder, reminder
        run.feed(normalized(minute, "info"), routing=ONLY_CRITICAL)
    [alert] = run.state.alerts.values()
    assert (alert.unrouted, alert.receivers) == (True, ())
    assert (alert.occurrences, alert.suppressed_count) == (4, 4)
    assert sum(hour.suppressed for hour in run.state.hours.values()) == 4
    assert sum(hour.unrouted for hour in run.state.hours.values()) == 1
    run.feed(normalized(20, "critical"), routing=ONLY_CRITICAL)
    assert (alert.unrouted, alert.receivers) == (False, ("pager",))
    run.feed(normalized(30, "info"), routing=ONLY_CRITICAL)  # someone was told: not unrouted
    assert not alert.unrouted
    assert sum(hour.unrouted for hour in run.state.hours.values()) == 1
    assert run.state == rebuild(run.log)


def test_each_stream_binding_folds_into_its_own_stream() -> None:
    """``stream.bound`` of TOCSIN_IN sets the router's offset, of TOCSIN_OUT the
    recorder's; neither touches the other's."""
    state = State()
    fold(state, 1, 10, ev.StreamBound(stream="TOCSIN_IN", created="in-1", offset=0))
    fold(state, 2, 10, ev.StreamBound(stream="TOCSIN_OUT", created="out-1", offset=0))
    fold(state, 3, 10, ev.StreamBound(stream="TOCSIN_OUT", created="out-2", offset=7))
    assert (state.inbound_stream, state.inbound_offset) == ("in-1", 0)
    assert (state.outbound_stream, state.outbound_offset) == ("out-2", 7)
    fold(state, 4, 10, ev.StreamBound(stream="TOCSIN_IN", created="in-2", offset=5))
    assert (state.inbound_stream, state.inbound_offset) == ("in-2", 5)
    assert (state.outbound_stream, state.outbound_offset) == ("out-2", 7)


def test_a_storm_of_alerts_shares_the_values_they_repeat() -> None:
    """Catches a projection that keeps one object per alert of a value every alert of a
    storm repeats (issue #20's RSS target: ~9 MiB per 21,000 alerts of a projection
    rebuilt from the log, where every decoded string is a new object): the type, the
    source, the tuple of receivers, an empty ``details``, an open fingerprint's empty
    inhibition slots, a delivery's receiver and channel. The values stay the same: the
    rebuild equals the live fold."""
    run = Run()
    for n in range(3):
        run.feed(normalized(0, host=f"db{n}"))
    for seq, (_, at, fact) in enumerate(list(run.log), len(run.log) + 1):
        if isinstance(fact, ev.AlertRouted):
            outcome = ev.DeliverySucceeded(
                notification_id=fact.notification_id,
                receiver=fact.receiver,
                alert_id=fact.alert_id,
                fingerprint=fact.fingerprint,
                channel="webhook",
                attempts=1,
                at=at,
            )
            run.log.append((seq, at, outcome))
            fold(run.state, seq, at, outcome)
    rows = [(seq, ts, ev.encode(fact)) for seq, ts, fact in run.log]  # as stored
    rebuilt = State()
    fold_stored(rebuilt, rows)
    assert rebuilt == run.state
    for state in (run.state, rebuilt):
        alerts = list(state.alerts.values())
        opened = list(state.open_by_fingerprint.values())
        deliveries = list(state.deliveries.values())
        assert len(alerts) == len(opened) == len(deliveries) == 3
        for field in ("type", "source", "receivers", "details"):
            assert len({id(getattr(alert, field)) for alert in alerts}) == 1, field
        assert alerts[0].receivers == ("hook",)
        assert alerts[0].details == {}
        assert all(o.inhibits is NO_SLOTS and o.waits_on is NO_SLOTS for o in opened)
        assert all(o.receivers is alerts[0].receivers for o in opened)
        for field in ("receiver", "channel"):
            assert len({id(getattr(d, field)) for d in deliveries}) == 1, field


def test_an_alerts_id_and_fingerprint_are_one_object_wherever_the_projection_holds_them() -> None:
    """Catches a projection rebuilt from the log that keeps the copies of an alert's id
    and fingerprint its facts were decoded with (``alert.opened``, ``alert.routed``:
    each a new string) as the open fingerprint's key and alert id and the delivery's
    alert id and order key (issue #20's RSS target: ~6 MiB per 21,000 alerts), and an
    int per open fingerprint for the bucket they share (~0.6 MiB). The values are
    unchanged: the rebuild equals the live fold."""
    run = Run()
    for n in range(3):
        run.feed(normalized(0, host=f"db{n}"))
    rows = [(seq, ts, ev.encode(fact)) for seq, ts, fact in run.log]  # as stored
    rebuilt = State()
    fold_stored(rebuilt, rows)
    assert rebuilt == run.state
    assert len(rebuilt.alerts) == len(rebuilt.deliveries) == 3
    by_fingerprint = {alert.fingerprint: alert for alert in rebuilt.alerts.values()}
    for fingerprint, opened in rebuilt.open_by_fingerprint.items():
        alert = by_fingerprint[fingerprint]
        assert fingerprint is alert.fingerprint
        assert opened.alert_id is alert.id
    for delivery in rebuilt.deliveries.values():
        alert = rebuilt.alerts[delivery.alert_id]
        assert delivery.alert_id is alert.id
        assert delivery.order_key is alert.fingerprint
    # The dedup bucket they opened in (one here): one int object, not one per fact.
    assert len({id(opened.bucket) for opened in rebuilt.open_by_fingerprint.values()}) == 1


def test_a_group_opened_counts_its_wait_from_its_first_alerts_arrival() -> None:
    """Catches a fold that times a group from its row's append time when the fact says
    when its first alert arrived (issue #20, W5), and one that breaks logs written
    before ``opened_at`` existed (their groups count from the row's time)."""
    second = 1_000_000

    def opened(**arrival: int) -> ev.GroupOpened:
        return ev.GroupOpened(
            group_key="g",
            receiver="hook",
            route=0,
            group_labels={"labels.service": "db"},
            group_wait=30 * second,
            group_interval=0,
            **arrival,
        )

    appended = 1_800_000_000 * second
    arrived, older = State(), State()
    fold(arrived, 1, appended, opened(opened_at=appended - 250_000))
    fold(older, 1, appended, opened())
    assert arrived.groups["g"].opened_at == appended - 250_000
    assert older.groups["g"].opened_at == appended
