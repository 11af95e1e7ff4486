"""tocsin.core.outbound: work items for receivers no longer configured become dead
letters at once, under the message id a worker would have used (pure, no NATS)."""

from __future__ import annotations

import msgspec

from tocsin.core.contracts import DeliveryDeadLettered, Notification, WorkItem
from tocsin.core.outbound import NO_CHANNEL, Outbound, dead_letter, for_configured
from tocsin.core.subjects import DELIVERY_FAILED, REJECTED, route_subject
from tocsin.core.times import format_us

AT = 1_790_000_000 * 1_000_000


def resolve(receiver: str, nid: str) -> Notification:
    return Notification(
        notification_id=nid,
        reason="resolved",
        alert_id="a1",
        fingerprint="fp1",
        dedup_key="fp1:1",
        type="disk_full",
        severity="critical",
        status="resolved",
        summary="disk full on db1",
        source="db",
        labels={"host": "db1"},
        details={},
        first_seen="2026-11-23T12:00:00.000000Z",
        last_seen="2026-11-23T12:01:00.000000Z",
        occurrences=1,
        suppressed_count=0,
        receiver=receiver,
    )


def work(receiver: str, nid: str, generation: int = 0) -> Outbound:
    item = WorkItem(
        notification=resolve(receiver, nid),
        log_seq=42,
        trace_id="t" * 32,
        generation=generation,
    )
    return Outbound(route_subject(receiver), msgspec.json.encode(item), nid)


def test_a_work_item_for_a_receiver_not_configured_is_dead_lettered_with_the_reason() -> None:
    """Catches a resolve (or a re-queue) for a receiver removed from the config being
    queued on ``tocsin.route.<receiver>``, where no worker would ever take it: it is
    replaced by its dead letter, naming the reason, with no attempt made."""
    rejection = Outbound(REJECTED, b"{}", "rejected:7")
    kept = work("x", "n-x")
    messages, unsent = for_configured([kept, work("y", "n-y"), rejection], {"x"}, AT)
    assert messages[0] is kept
    assert messages[2] is rejection
    gone = messages[1]
    assert (gone.subject, gone.msg_id) == (DELIVERY_FAILED, "n-y:failed")
    letter = msgspec.json.decode(gone.payload, type=DeliveryDeadLettered)
    assert letter.error == "receiver y is not in the configuration"
    assert (letter.receiver, letter.notification_id, letter.reason) == ("y", "n-y", "resolved")
    assert (letter.attempts, letter.channel, letter.last_status_code) == (0, NO_CHANNEL, None)
    assert (letter.log_seq, letter.failed_at, letter.trace_id) == (42, format_us(AT), "t" * 32)
    assert [item.notification.notification_id for item in unsent] == ["n-y"]


def test_every_configured_receiver_keeps_its_work_items() -> None:
    """Catches dead-lettering work that some worker will take."""
    items = [work("x", "n1"), work("y", "n2")]
    assert for_configured(items, {"x", "y"}, AT) == (items, [])


def test_a_requeued_items_dead_letter_has_the_requeue_message_id() -> None:
    """Catches a re-queued item's dead letter reusing ``<id>:failed``, which JetStream
    would drop as a duplicate of the first dead letter within its window."""
    item = msgspec.json.decode(work("y", "n-y", generation=2).payload, type=WorkItem)
    assert dead_letter(item, "gone", AT).msg_id == "n-y:failed:2"
