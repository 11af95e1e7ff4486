"""tocsin.core.outbound: work items for receivers no longer configured become dead
letters at once, under the message id a worker would have used (pure, no NATS)."""

from __future__ import annotations

import hashlib
import itertools

import msgspec

from tocsin import config as config_module
from tocsin.core import events as ev
from tocsin.core import ingest
from tocsin.core.contracts import DeliveryDeadLettered, Notification, WorkItem
from tocsin.core.decide.route import RoutingTable
from tocsin.core.decide.triage import triage
from tocsin.core.fold import fold
from tocsin.core.outbound import (
    NO_CHANNEL,
    Outbound,
    dead_letter,
    for_configured,
    fresh_messages,
    messages_for,
)
from tocsin.core.state import State
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


def a_batch_decided() -> tuple[State, list[tuple[range, int, list[ev.Event]]]]:
    """(state, decided) as the router has them once a batch is committed: each inbound
    message's (seqs, position, facts) for 90 events over 7 hosts with fixed ids, trace
    ids and times (new alerts, duplicates, escalations, resolves, routed to two
    receivers, to one or to none, three rejections), then the first notification
    delivered, so its routed fact sends nothing any more."""
    config = config_module.from_mapping(
        {
            "route": [
                {"match": {"severity": "critical"}, "receivers": ["hook", "pager"]},
                {"match": {"severity": "warning"}, "receivers": ["hook"]},
            ],
            "receivers": {
                "hook": {"channel": "webhook", "url": "http://127.0.0.1:9/"},
                "pager": {"channel": "webhook", "url": "http://127.0.0.1:9/p"},
            },
        },
        {},
    )
    routing = RoutingTable.compile(config.routes, config.inhibit)
    ids = itertools.count(1)
    state, seq = State(), 0
    decided: list[tuple[range, int, list[ev.Event]]] = []
    for n in range(90):
        at = AT + n * 1_000
        facts: list[ev.Event]
        if n % 31 == 7:
            facts = [
                ev.AlertRejected(
                    code="invalid_json", reason="not JSON", field=None, subject="alerts.in.x",
                    received_at=at, raw="{", raw_encoding="utf-8", trace_id=f"{n:032x}",
                )
            ]  # fmt: skip
        else:
            body: dict[str, object] = {
                "type": "disk_full",
                "severity": ["critical", "warning", "info"][n % 3],
                "summary": f"event {n}",
                "labels": {"host": f"h{n % 7}"},
            }
            if n % 11 == 10:
                body["status"] = "resolved"
            parsed = ingest.parse(msgspec.json.encode(body), default_source="x", received_at=at)
            assert isinstance(parsed, ingest.Normalized)
            facts = triage(
                state,
                parsed,
                subject="alerts.in.x",
                received_at=at,
                routing=routing,
                window_seconds=config.dedup_window,
                new_id=lambda: f"id{next(ids):06d}",
                trace_id=f"{n:032x}",
            )
        first = seq + 1
        for fact in facts:
            seq += 1
            fold(state, seq, at, fact)
        decided.append((range(first, seq + 1), 1_000 + n, facts))
    routed = next(f for _, _, facts in decided for f in facts if isinstance(f, ev.AlertRouted))
    delivered = ev.DeliverySucceeded(
        notification_id=routed.notification_id, receiver=routed.receiver,
        alert_id=routed.alert_id, fingerprint=routed.fingerprint, channel="webhook",
        attempts=1, at=AT,
    )  # fmt: skip
    fold(state, seq + 1, AT + 100_000, delivered)
    return state, decided


def traced(position: int) -> dict[str, str]:
    return {"traceparent": f"00-{position:032x}-{position:016x}-01"}


def test_a_batchs_messages_are_those_of_each_fact_and_the_bytes_of_the_tree_before() -> None:
    """Catches the router's batch-wide path to its work items (issue #20:
    ``fresh_messages`` in one loop, ``_routed`` looking its delivery up once, a new
    alert's first and last seen formatted once, ``Outbound`` a struct) sending
    anything else than ``messages_for`` each fact did: a message more or fewer, another
    order, another byte of a payload, subject, message id or header (a trace asked for
    anything but a routed fact), another fact seq. The digest was taken with the tree
    before those changes (6e02c5c), fact by fact through ``messages_for``."""
    state, decided = a_batch_decided()
    asked: list[int] = []

    def trace_headers(position: int) -> dict[str, str]:
        asked.append(position)
        return traced(position)

    batch = fresh_messages(state, decided, 1_000, trace_headers)
    one_by_one = [
        m
        for seqs, position, facts in decided
        for seq, fact in zip(seqs, facts, strict=True)
        for m in messages_for(
            state,
            seq,
            fact,
            position - 1_000,
            traced(position) if isinstance(fact, ev.AlertRouted) else None,
        )
    ]
    assert batch == one_by_one
    fields = [(m.subject, m.payload, m.msg_id, m.headers, m.fact_seq) for m in batch]
    routed = [p for _, p, facts in decided for f in facts if isinstance(f, ev.AlertRouted)]
    assert asked == routed
    assert len(batch) == len(routed) - 1 + 3  # one delivered, three rejections
    assert {m.subject for m in batch} == {route_subject("hook"), route_subject("pager"), REJECTED}
    assert hashlib.sha256(repr(fields).encode()).hexdigest() == (
        "9ddadcdcbadb81d7901e39d76f9fef07b90b912be1a54a858a3a0017063ad478"
    )
