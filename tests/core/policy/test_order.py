"""tocsin.core.policy.order: a notification is not sent once its receiver accepted a
later one of the same fingerprint, and the shared record only ever goes up."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from tests.core.test_fold import Run, normalized
from tocsin.core import events as ev
from tocsin.core.contracts import WorkItem
from tocsin.core.fold import fold, rebuild, recount_open
from tocsin.core.outbound import messages_for
from tocsin.core.policy.order import Latest, before_send, decode, encode, key, raised

RESOLVE = Latest(log_seq=12, notification_id="n-resolve")


def test_an_older_notification_is_superseded_once_a_later_one_was_accepted() -> None:
    """Catches a late firing retry sent after its resolve was delivered (it would re-open
    the incident), and an old alert's late resolve sent after the new alert's firing."""
    assert before_send(10, RESOLVE) == "superseded"
    assert before_send(11, RESOLVE) == "superseded"


def test_the_same_or_a_later_notification_is_sent() -> None:
    """Catches dropping a redelivery of the accepted notification itself (equal seq: the
    worker died before acking it) or anything routed after it, or with no record."""
    assert before_send(12, RESOLVE) == "send"
    assert before_send(13, RESOLVE) == "send"
    assert before_send(1, None) == "send"


def test_the_record_is_only_ever_raised() -> None:
    """Catches a slow worker's older success lowering the record written by a later one
    (the later one's late predecessors would then be sent again)."""
    older = Latest(log_seq=10, notification_id="n-firing")
    later = Latest(log_seq=14, notification_id="n-reminder")
    assert raised(None, older) == older
    assert raised(older, RESOLVE) == RESOLVE
    assert raised(RESOLVE, older) is None
    assert raised(RESOLVE, RESOLVE) is None
    assert raised(RESOLVE, later) == later


def test_keys_are_valid_key_value_keys_whatever_the_fingerprint() -> None:
    """Catches a fingerprint used verbatim as a key: it may hold spaces, ``*``, ``>`` and
    any printable character, which JetStream key-value keys may not."""
    valid = re.compile(r"^[-/_=.a-zA-Z0-9]+$")
    for fingerprint in ("fp1", "db 1 > * weird: {x}", "é" * 128):
        made = key("ops-hook_1", fingerprint)
        assert valid.match(made), made
        assert made.startswith("ops-hook_1.")
    assert key("r", "a") != key("r", "b")
    assert key("r", "a") != key("s", "a")
    assert key("r", "a") == key("r", "a")


def test_a_record_round_trips_and_garbage_is_no_record() -> None:
    """Catches a value written by one worker that another cannot read back."""
    assert decode(encode(RESOLVE)) == RESOLVE
    assert decode(b"not json") is None


# --- which work items raise the record (``must_raise``, decided by the router) ------


def _items_raise(run: Run, facts: list[ev.Event]) -> dict[str, bool]:
    """Each routed fact's work item, as the outbox builds it now: raises the record?"""
    raised = {}
    for fact in facts:
        if isinstance(fact, ev.AlertRouted):
            seq = next(s for s, _, f in run.log if f is fact)
            [message] = messages_for(run.state, seq, fact, None)
            item = msgspec.json.decode(message.payload, type=WorkItem)
            raised[fact.reason] = item.raise_order
    return raised


def _outcome(run: Run, routed: ev.AlertRouted, kind: type[ev.Event]) -> None:
    common: dict[str, Any] = {
        "notification_id": routed.notification_id,
        "receiver": routed.receiver,
        "alert_id": routed.alert_id,
        "fingerprint": routed.fingerprint,
        "channel": "webhook",
        "attempts": 1,
        "at": 1,
    }
    if kind is ev.DeliveryDeadLettered:
        common.update(error="HTTP 400", status_code=400)
    fact = kind(**common)
    run.log.append((len(run.log) + 1, 0, fact))
    fold(run.state, len(run.log), 0, fact)


def test_no_item_raises_the_record_when_nothing_older_of_its_key_can_be_sent() -> None:
    """Catches the three NATS messages of a raise paid by every notification: in a storm
    of distinct alerts (and after an older notification was delivered) no older one of
    the key can come late, so there is nothing for the record to stop."""
    run = Run()
    for host in ("a", "b", "c"):
        assert _items_raise(run, run.feed(normalized(0, host=host))) == {"firing": False}
    firing = next(f for _, _, f in run.log if isinstance(f, ev.AlertRouted))
    _outcome(run, firing, ev.DeliverySucceeded)
    assert _items_raise(run, run.feed(normalized(1, status="resolved", host="a"))) == {
        "resolved": False
    }


def test_an_item_raises_the_record_while_an_older_one_of_its_key_may_still_be_sent() -> None:
    """Catches a late retry of a firing let through after its resolve was accepted: the
    resolve routed while the firing is pending, retrying or dead (re-queueable) must
    raise the record, or the firing's retry is never superseded."""
    for outcome in (None, ev.DeliveryAttemptFailed, ev.DeliveryDeadLettered):
        run = Run()
        [firing] = [f for f in run.feed(normalized(0)) if isinstance(f, ev.AlertRouted)]
        if outcome is ev.DeliveryAttemptFailed:
            fact = ev.DeliveryAttemptFailed(
                notification_id=firing.notification_id,
                receiver=firing.receiver,
                alert_id=firing.alert_id,
                fingerprint=firing.fingerprint,
                channel="webhook",
                attempt=1,
                error="HTTP 500",
                status_code=500,
                retry_in_seconds=1.0,
                at=1,
            )
            run.log.append((len(run.log) + 1, 0, fact))
            fold(run.state, len(run.log), 0, fact)
        elif outcome is ev.DeliveryDeadLettered:
            _outcome(run, firing, outcome)
        resolve = run.feed(normalized(1, status="resolved"))
        assert _items_raise(run, resolve) == {"resolved": True}, outcome
        assert run.state == rebuild(run.log)


def test_the_open_count_made_anew_equals_the_folds() -> None:
    """Catches a projection from a named snapshot of an older version (no order keys,
    no counts) trusted as is: its counts would say nothing is open."""
    run = Run()
    run.feed(normalized(0))
    run.feed(normalized(1, status="resolved"))
    run.feed(normalized(2, host="b"))
    assert run.state.order_open
    counts = dict(run.state.order_open)
    for delivery in run.state.deliveries.values():
        delivery.order_key = ""
    run.state.order_open = {}
    recount_open(run.state)
    assert run.state.order_open == counts


def test_a_settled_delivery_keeps_no_order_key_until_it_may_be_sent_again() -> None:
    """Catches a delivered notification's order key kept (a snapshot's decode gives each
    one a string of its own: ~22 MiB of a 1M-event start), and a late dead letter after
    its success (two workers, one redelivery) counted open under an empty key: a resolve
    routed then would not raise the record."""
    run = Run()
    [firing] = [f for f in run.feed(normalized(0)) if isinstance(f, ev.AlertRouted)]
    delivery = run.state.deliveries[firing.notification_id]
    assert delivery.order_key == firing.fingerprint
    _outcome(run, firing, ev.DeliverySucceeded)
    assert (delivery.status, delivery.order_key, run.state.order_open) == ("delivered", "", {})
    _outcome(run, firing, ev.DeliveryDeadLettered)
    assert (delivery.status, delivery.order_key) == ("dead", firing.fingerprint)
    assert sum(run.state.order_open.values()) == 1
    assert _items_raise(run, run.feed(normalized(1, status="resolved"))) == {"resolved": True}
    assert run.state == rebuild(run.log)
    [resolve] = [d for d in run.state.deliveries.values() if d.reason == "resolved"]
    _outcome(run, resolve_routed := _routed(run, resolve.notification_id), ev.DeliverySucceeded)
    assert resolve.order_key == ""
    older = rebuild(run.log)  # as a named snapshot of an older version may hold it:
    older.deliveries[resolve.notification_id].order_key = resolve_routed.fingerprint  # kept
    older.deliveries[firing.notification_id].order_key = ""  # or not there at all
    recount_open(older)
    assert older == run.state


def _routed(run: Run, notification_id: str) -> ev.AlertRouted:
    return next(
        f
        for _, _, f in run.log
        if isinstance(f, ev.AlertRouted) and f.notification_id == notification_id
    )
