"""``GET /api/v1/notifications/{id}`` for a group's notification, the pure part
(DESIGN.md invariant 6 and section 11): the view of a ``group.notified`` fact and the
delivery facts of its id, folded with the projection's own fold."""

from __future__ import annotations

import msgspec

from tests.core.test_group_bodies import storm_facts
from tocsin.core import commands
from tocsin.core import events as ev
from tocsin.core.contracts import outcome_identity
from tocsin.core.events import StoredRow
from tocsin.core.fold import fold
from tocsin.core.outbound import encoded_group_of, group_notification_of
from tocsin.core.state import State
from tocsin.core.views import (
    GroupNotificationView,
    group_delivery_alert_ids,
    notification_view,
)

ROUTED_SEQ = 10
CHANNELS = {"team": "webhook"}  # the config's receivers, for one not sent yet


def row(seq: int, event: ev.Event) -> StoredRow:
    return StoredRow(seq, 1_000 + seq, ev.kind_of(event), ev.encode(event))


def failed(fact: ev.GroupNotified, attempt: int) -> ev.DeliveryAttemptFailed:
    """A failed attempt as the recorder logs it: under the group's first listed alert."""
    alert_id, fingerprint, group_key = outcome_identity(encoded_group_of(fact))
    return ev.DeliveryAttemptFailed(
        notification_id=fact.notification_id,
        receiver=fact.receiver,
        alert_id=alert_id,
        fingerprint=fingerprint,
        channel="webhook",
        attempt=attempt,
        error="HTTP 503",
        status_code=503,
        retry_in_seconds=0.1,
        at=2_000 + attempt,
        group_key=group_key,
    )


def delivered(fact: ev.GroupNotified, attempts: int) -> ev.DeliverySucceeded:
    alert_id, fingerprint, group_key = outcome_identity(encoded_group_of(fact))
    return ev.DeliverySucceeded(
        notification_id=fact.notification_id,
        receiver=fact.receiver,
        alert_id=alert_id,
        fingerprint=fingerprint,
        channel="webhook",
        attempts=attempts,
        at=3_000,
        status_code=200,
        group_key=group_key,
    )


def dead(fact: ev.GroupNotified) -> ev.DeliveryDeadLettered:
    alert_id, fingerprint, group_key = outcome_identity(encoded_group_of(fact))
    return ev.DeliveryDeadLettered(
        notification_id=fact.notification_id,
        receiver=fact.receiver,
        alert_id=alert_id,
        fingerprint=fingerprint,
        channel="webhook",
        attempts=1,
        error="HTTP 400",
        status_code=400,
        at=2_500,
        group_key=group_key,
    )


def view_of(fact: ev.GroupNotified, after: list[StoredRow]) -> GroupNotificationView:
    view = notification_view(row(ROUTED_SEQ, fact), after, CHANNELS)
    assert isinstance(view, GroupNotificationView)
    return view


def test_a_group_notification_is_shown_with_the_body_its_receiver_got() -> None:
    """Catches the endpoint's view refusing a ``group.notified`` fact (it took only an
    ``alert.routed``, so a group's id answered 404), or showing a body other than the
    one sent: the body, encoded, is byte for byte the work item's group (the webhook
    posts those bytes), with unicode, a truncated count and a resolved alert, decoded
    from the log's row; with no outcome yet it is pending on the channel of the
    config it was routed under."""
    first, update = storm_facts()
    for fact in (first, update):
        from_log = ev.decode(ev.encode(fact))
        assert isinstance(from_log, ev.GroupNotified)
        view = view_of(from_log, [])
        assert msgspec.json.encode(view.body) == msgspec.json.encode(encoded_group_of(fact))
        assert view.body == group_notification_of(fact)
        assert (view.notification_id, view.receiver, view.channel) == (
            fact.notification_id,
            "team",
            "webhook",
        )
        assert (view.status, view.attempts, view.routed_seq, view.generation) == (
            "pending",
            0,
            ROUTED_SEQ,
            0,
        )
    assert first.truncated == 1
    assert any(a.status == "resolved" for a in update.alerts)
    assert any(not a.summary.isascii() for a in first.alerts)


def test_a_group_notifications_attempts_and_status_are_its_own_outcomes() -> None:
    """Catches the view counting the outcomes of another notification logged under the
    same alert (a group's first listed alert is also in its update), or missing its
    own: one failed attempt, then delivered on the second, while the update failed
    and is retried."""
    first, update = storm_facts()
    rows = [
        row(ROUTED_SEQ + 1, failed(first, 1)),
        row(ROUTED_SEQ + 2, update),
        row(ROUTED_SEQ + 3, failed(update, 1)),
        row(ROUTED_SEQ + 4, failed(update, 2)),
        row(ROUTED_SEQ + 5, delivered(first, 2)),
    ]
    view = view_of(first, rows)
    assert (view.status, view.attempts, view.channel, view.generation) == (
        "delivered",
        2,
        "webhook",
        0,
    )
    retrying = view_of(first, rows[:1])
    assert (retrying.status, retrying.attempts) == ("retrying", 1)


def test_a_requeued_group_notification_shows_its_new_round() -> None:
    """Catches a re-queue of a group's dead letter missing from the view (it is logged
    under the delivery's alert, which ``group_delivery_alert_ids`` must name): the
    re-queue the command makes resets the round and counts the generation."""
    first, _ = storm_facts()
    state = State(keep_everything=True)
    fold(state, ROUTED_SEQ, 1_000, first)
    fold(state, ROUTED_SEQ + 1, 2_500, dead(first))
    [requeued] = commands.requeue(state, {ROUTED_SEQ: first}, receiver=None, since=None, by="ops")
    assert isinstance(requeued, ev.DeliveryRequeued)
    assert requeued.alert_id in group_delivery_alert_ids(first)
    rows = [row(ROUTED_SEQ + 1, dead(first)), row(ROUTED_SEQ + 2, requeued)]
    assert (view_of(first, rows[:1]).status, view_of(first, rows[:1]).attempts) == ("dead", 1)
    view = view_of(first, rows)
    assert (view.status, view.attempts, view.generation) == ("pending", 0, 1)


def test_a_groups_delivery_facts_are_looked_up_under_the_alerts_they_name() -> None:
    """Catches the reader asking the rows of an alert the group's outcomes are not
    logged under (they name its first listed alert, ``outcome_identity``), or asking
    one alert twice, or ``""`` (a group listing no alert: every row without an alert)."""
    first, _ = storm_facts()
    assert group_delivery_alert_ids(first) == [first.alerts[0].alert_id]
    assert failed(first, 1).alert_id == first.alerts[0].alert_id
    reordered = msgspec.structs.replace(first, alert_ids=["other", *first.alert_ids])
    assert group_delivery_alert_ids(reordered) == [first.alerts[0].alert_id, "other"]
    empty = msgspec.structs.replace(first, alerts=[], alert_ids=[], truncated=0)
    assert group_delivery_alert_ids(empty) == []
