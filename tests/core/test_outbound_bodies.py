"""What a committed fact sends (core/outbound.py), pure: bodies as of the routed fact.

DESIGN.md invariant 6: a notification's body is the alert as of its routed fact, so
the same log gives the same bodies however the router batched its events.
"""

from __future__ import annotations

import msgspec

from tests.core.test_fold import Run, normalized
from tocsin.core import events as ev
from tocsin.core.contracts import WorkItem
from tocsin.core.fold import fold
from tocsin.core.ingest import Normalized
from tocsin.core.outbound import messages_for, sends
from tocsin.core.state import State


def explicit(at_minute: int, summary: str) -> Normalized:
    """A firing event of the explicit fingerprint ``fp-1``."""
    event = normalized(at_minute)
    return msgspec.structs.replace(event, fingerprint="fp-1", summary=summary)


def bodies(state: State, log: list[tuple[int, int, ev.Event]]) -> dict[str, dict[str, object]]:
    """The work items' notifications the log's facts justify, by notification id."""
    sent = {}
    for seq, _, fact in log:
        for message in messages_for(state, seq, fact, None):
            item = msgspec.json.decode(message.payload, type=WorkItem)
            sent[item.notification.notification_id] = msgspec.to_builtins(item.notification)
    return sent


def test_a_body_is_the_alert_as_of_its_routed_fact_whatever_was_folded_after() -> None:
    """Catches a body built from the alert as the state knows it after the whole
    batch: the second event of the same dedup key is folded before the first one's
    work item is built (one router batch), and must not leak into it."""
    run = Run()
    run.feed(explicit(0, "first"))
    one_by_one = bodies(run.state, run.log)  # the work item built before event two

    run.feed(explicit(1, "second"))  # suppressed: same dedup key
    batched = bodies(run.state, run.log)  # built after both were folded, as one batch

    assert batched == one_by_one
    (body,) = batched.values()
    assert (body["summary"], body["occurrences"]) == ("first", 1)
    assert run.state.alerts[str(body["alert_id"])].summary == "second"  # the alert moved on


def test_a_delivered_notification_keeps_no_body_and_sends_nothing() -> None:
    """Catches a projection that keeps every body forever, or a settled notification
    whose work item would be built again (a re-publish after a crash must not send a
    delivered notification twice, whatever JetStream's duplicate window)."""
    run = Run()
    run.feed(explicit(0, "first"))
    (routed,) = [(s, f) for s, _, f in run.log if isinstance(f, ev.AlertRouted)]
    seq, fact = routed
    assert isinstance(fact, ev.AlertRouted)
    assert run.state.deliveries[fact.notification_id].as_routed is not None
    fold(
        run.state,
        seq + 1,
        0,
        ev.DeliverySucceeded(
            notification_id=fact.notification_id,
            receiver=fact.receiver,
            alert_id=fact.alert_id,
            fingerprint=fact.fingerprint,
            channel="webhook",
            attempts=1,
            at=0,
        ),
    )
    assert run.state.deliveries[fact.notification_id].as_routed is None
    assert messages_for(run.state, seq, fact, None) == []


def test_the_routers_filter_skips_only_facts_that_send_nothing() -> None:
    """The router asks ``sends`` before building a fact's messages (issue #20: a storm
    of duplicates' facts never send). Catches the filter dropping a kind that does send:
    a work item (firing, resolved), or a rejection, would never be published."""
    run = Run()
    run.feed(explicit(0, "first"))
    run.feed(explicit(1, "duplicate"))
    run.feed(msgspec.structs.replace(explicit(2, "over"), status="resolved"))
    rejected = ev.AlertRejected(
        code="invalid_json",
        reason="payload is not JSON",
        field=None,
        subject="alerts.in.db",
        received_at=0,
        raw="{",
        raw_encoding="utf-8",
    )
    log = [*run.log, (len(run.log) + 1, 0, rejected)]
    sent = {type(f) for seq, _, f in log if messages_for(run.state, seq, f, 7)}
    assert sent == {ev.AlertRouted, ev.AlertRejected}  # the control: both kinds sent
    assert all(sends(f) for seq, _, f in log if messages_for(run.state, seq, f, 7))
    skipped = {type(f) for _, _, f in log if not sends(f)}
    assert {ev.AlertReceived, ev.AlertSuppressed} <= skipped
