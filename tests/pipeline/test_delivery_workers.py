"""The delivery worker's sender loops (issue #20: ``concurrency`` loops fed by a bounded
queue, no task per work item): a reload's replaced channel is closed only once no send
is using it, and every item is delivered, its outcome stored and the item acked. Real
NATS and real streams; the channels are small plugin channels (the ``Channel``
protocol) that let a test hold a send open."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import nats
import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span

from tests.support import HttpSink, Subscriber, make_group, make_notification, wait_until
from tocsin.bus.publisher import Publisher
from tocsin.bus.streams import deliver_consumer_config, ensure_consumer, ensure_streams
from tocsin.channels import ChannelEnv, webhook
from tocsin.channels.webhook import WebhookConfig
from tocsin.config import RetrySection
from tocsin.core.contracts import (
    Body,
    DeliveryDeadLettered,
    DeliverySucceeded,
    EncodedGroup,
    EncodedGroupDeadLettered,
    EncodedGroupDelivered,
    EncodedWorkItem,
    Notification,
    WorkItem,
)
from tocsin.core.outbound import Outbound
from tocsin.core.policy.retry import SendResult, permanent
from tocsin.core.subjects import (
    DELIVERED,
    STREAM_OUT,
    STREAM_WORK,
    deliver_consumer,
    route_subject,
)
from tocsin.observability.telemetry import Histogram, Metrics
from tocsin.observability.tracing import SpanSlot, traceparent_of
from tocsin.pipeline import delivery
from tocsin.pipeline.delivery import ReceiverWorker


class HeldChannel:
    """A channel whose sends wait for ``release``; it remembers what it sent and whether
    it was closed, and whether a send was still under way when it was."""

    kind = "held"

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.sending = 0
        self.sent: list[str] = []
        self.closed = False
        self.closed_while_sending = False

    async def send(self, notification: Body, *, traceparent: str | None = None) -> SendResult:
        self.sending += 1
        try:
            await self.release.wait()
        finally:
            self.sending -= 1
        self.sent.append(notification.notification_id)
        return SendResult(ok=True, status_code=200)

    async def close(self) -> None:
        self.closed_while_sending = self.sending > 0
        self.closed = True


def item(i: int, receiver: str = "hook", trace_id: str | None = None) -> Outbound:
    notification = Notification(
        notification_id=f"n{i}",
        reason="firing",
        alert_id=f"a{i}",
        fingerprint=f"fp{i}",
        dedup_key=f"d{i}",
        type="t",
        severity="critical",
        status="firing",
        summary="s",
        source="test",
        labels={},
        details={},
        first_seen="2026-01-01T00:00:00.000000Z",
        last_seen="2026-01-01T00:00:00.000000Z",
        occurrences=1,
        suppressed_count=0,
        receiver=receiver,
    )
    work = WorkItem(notification=notification, log_seq=i, trace_id=trace_id)
    return Outbound(route_subject(receiver), msgspec.json.encode(work), f"{receiver}-n{i}")


async def test_a_replaced_channel_is_closed_once_its_send_is_done(nats_url: str) -> None:
    """Catches a reload closing the old channel under a send still using it (its
    connection pool gone mid-request): the old channel closes only after that send
    ends, while sends started after the reload go through the new channel, and every
    item's outcome is stored and the item acked."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_streams(js)
    await ensure_consumer(js, STREAM_WORK, deliver_consumer_config("hook", 10.0))
    publisher = Publisher(nc)
    old, new = HeldChannel(), HeldChannel()
    new.release.set()
    worker = ReceiverWorker(nc, publisher, "hook", old, RetrySection(), concurrency=4)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        assert await publisher.publish([item(1)]) == [True]
        await wait_until(lambda: old.sending == 1, what="the first send under way")
        worker.reconfigure(new, None)
        assert await publisher.publish([item(2)]) == [True]
        await wait_until(lambda: new.sent == ["n2"], what="the second item, after the reload")
        assert not old.closed  # its send is still under way
        old.release.set()
        await wait_until(lambda: old.closed, what="the old channel closed")
        assert old.sent == ["n1"]
        assert not old.closed_while_sending

        async def settled() -> bool:
            info = await js.consumer_info(STREAM_WORK, deliver_consumer("hook"))
            return info.num_ack_pending == 0 and info.num_pending == 0

        await wait_until(settled, what="both items acked")
        assert (await js.stream_info(STREAM_OUT)).state.messages == 2  # their outcomes
    finally:
        stop.set()
        await running
        await publisher.close()
        await nc.close()


class EvenFailsChannel:
    """A channel of the ``kind`` given that accepts odd-numbered notifications and
    refuses even ones for good (each is settled at its first attempt)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    async def send(self, notification: Body, *, traceparent: str | None = None) -> SendResult:
        if int(notification.notification_id.removeprefix("n")) % 2:
            return SendResult(ok=True, status_code=200)
        return permanent("HTTP 400: no", 400)

    async def close(self) -> None:
        pass


async def test_send_durations_are_recorded_by_outcome_and_the_kind_of_the_channel_now(
    nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each send's duration goes to ``send_seconds`` under its outcome and the kind of
    the channel that sent it, the label set looked up once (``_send_seconds``, issue
    #20: ~1.5 us a send). Catches a lookup per send, and a remembered label set
    outliving a reload that changed the channel's kind (the new kind's sends counted
    under the old)."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_streams(js)
    await ensure_consumer(js, STREAM_WORK, deliver_consumer_config("timed", 10.0))
    publisher = Publisher(nc)
    metrics = Metrics()
    looked_up: list[tuple[str, ...]] = []
    child = Histogram._child

    def counted(histogram: Histogram, values: tuple[str, ...]) -> Any:
        looked_up.append(values)
        return child(histogram, values)

    monkeypatch.setattr(Histogram, "_child", counted)
    worker = ReceiverWorker(
        nc, publisher, "timed", EvenFailsChannel("first"), RetrySection(), 4, metrics=metrics
    )

    def counts() -> dict[tuple[str, ...], int]:
        return {tuple(cell.labels): int(sum(cell.counts)) for cell in metrics.send_seconds.cells()}

    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        assert all(await publisher.publish([item(i, "timed") for i in range(1, 9)]))
        await wait_until(lambda: sum(counts().values()) == 8, what="eight sends timed")
        worker.reconfigure(EvenFailsChannel("second"), None)
        assert all(await publisher.publish([item(i, "timed") for i in (9, 10)]))
        await wait_until(lambda: sum(counts().values()) == 10, what="two more, after the reload")
    finally:
        stop.set()
        await running
        await publisher.close()
        await nc.close()
    assert counts() == {
        ("timed", "first", "ok"): 4,
        ("timed", "first", "failed"): 4,
        ("timed", "second", "ok"): 1,
        ("timed", "second", "failed"): 1,
    }
    assert sorted(looked_up) == sorted(counts())


class CountingEncoder:
    """``msgspec.json.Encoder`` that counts the notifications it encodes."""

    def __init__(self) -> None:
        self._encoder = msgspec.json.Encoder()
        self.notifications = 0

    def encode(self, value: Any) -> bytes:
        self.notifications += isinstance(value, Notification)
        return self._encoder.encode(value)


async def test_an_alert_is_encoded_once_for_the_webhooks_body_and_its_outcome(
    nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker encodes an alert's notification once, and the webhook posts those
    bytes (``SendsEncodedAlerts``, issue #20: ~1 us a notification). Catches it
    encoded twice again, and catches the bytes changing: the body is what
    ``WebhookChannel.send`` posts (the notification's JSON), the outcome the
    ``DeliverySucceeded`` struct's, and a webhook in Alertmanager's format still
    renders its own payload."""
    counting = CountingEncoder()
    monkeypatch.setattr(delivery, "_encoder", counting)
    monkeypatch.setattr(webhook, "_encoder", counting)
    sink = HttpSink()
    await sink.start()
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_streams(js)
    outcomes = await Subscriber().start(nats_url, DELIVERED)
    publisher = Publisher(nc)
    env = ChannelEnv(version="9.9")
    workers = []
    for receiver, form in (("json-once", "tocsin"), ("json-am", "alertmanager")):
        await ensure_consumer(js, STREAM_WORK, deliver_consumer_config(receiver, 10.0))
        config = WebhookConfig(channel="webhook", url=sink.url, format=form)
        channel = webhook.WebhookChannel(receiver, config, env)
        workers.append(ReceiverWorker(nc, publisher, receiver, channel, RetrySection(), 2))
    stop = asyncio.Event()
    running = [asyncio.create_task(worker.run(stop)) for worker in workers]
    try:
        assert await publisher.publish([item(1, "json-once")]) == [True]
        await wait_until(lambda: len(outcomes.messages) == 1, what="the first outcome")
        assert counting.notifications == 1
        assert await publisher.publish([item(2, "json-am")]) == [True]
        await wait_until(lambda: len(outcomes.messages) == 2, what="the second outcome")
    finally:
        stop.set()
        await asyncio.gather(*running)
        await publisher.close()
        await outcomes.close()
        await nc.close()
        await sink.stop()
    tocsin_body, am_body = (request.body for request in sink.requests)
    notification = msgspec.json.decode(item(1, "json-once").payload, type=WorkItem).notification
    assert notification is not None
    assert tocsin_body == msgspec.json.encode(notification)
    assert msgspec.json.decode(am_body)["version"] == webhook.AM_VERSION
    outcome = msgspec.json.decode(outcomes.messages[0].data, type=DeliverySucceeded)
    assert outcomes.messages[0].data == msgspec.json.encode(outcome)
    assert outcome.notification_id == "n1"


class TraceRecordingChannel:
    """Remembers, for each send, the ``traceparent`` given and the ids of the span
    current during the send (what a log line written there names)."""

    kind = "traced"

    def __init__(self) -> None:
        self.seen: dict[str, tuple[str | None, str]] = {}

    async def send(self, notification: Body, *, traceparent: str | None = None) -> SendResult:
        current = traceparent_of(trace.get_current_span())
        self.seen[notification.notification_id] = (traceparent, current)
        return SendResult(ok=True, status_code=200)

    async def close(self) -> None:
        pass


async def _sent_by_an_untraced_worker(
    nats_url: str, receiver: str, items: list[WorkItem]
) -> dict[str, tuple[str | None, str]]:
    """``items`` sent by a worker of ``receiver`` (two senders, nothing recording
    spans) to a ``TraceRecordingChannel``: the ``traceparent`` each send was given and
    the current span's, by notification id."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_streams(js)
    await ensure_consumer(js, STREAM_WORK, deliver_consumer_config(receiver, 10.0))
    publisher = Publisher(nc)
    channel = TraceRecordingChannel()
    worker = ReceiverWorker(nc, publisher, receiver, channel, RetrySection(), concurrency=2)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        assert all(await publisher.publish(items))
        await wait_until(lambda: len(channel.seen) == len(items), what="every send")
    finally:
        stop.set()
        await running
        await publisher.close()
        await nc.close()
    return channel.seen


async def test_an_untraced_worker_sends_in_the_routers_trace_under_its_current_span(
    nats_url: str,
) -> None:
    """With nothing recording spans, a work item with the router's plain ``traceparent``
    takes the quick path (``unrecorded_child``, issue #20), one without takes the general
    one (its trace from the item's ``trace_id``). Catches either path sending the
    receiver a ``traceparent`` outside the router's trace, or one naming a span other
    than the current one (log lines written during the send would name another)."""
    receiver = "traced"
    router_trace, router_span = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    plain, by_id = item(1, receiver), item(2, receiver, trace_id=router_trace)
    plain = msgspec.structs.replace(
        plain, headers={"traceparent": f"00-{router_trace}-{router_span}-01"}
    )
    seen = await _sent_by_an_untraced_worker(nats_url, receiver, [plain, by_id])
    for nid in ("n1", "n2"):
        given, current = seen[nid]
        assert given == current
        version, trace_id, span_id, flags = current.split("-")
        assert (version, trace_id, flags) == ("00", router_trace, "01")
        assert span_id != router_span


async def test_an_untraced_senders_span_is_made_current_once_and_names_each_item(
    nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sender loop makes its ``SpanSlot`` current once, and the slot names the span
    of the item in hand (issue #20: a context attached per notification was ~1 us).
    Catches a context attached per item again, a send whose current span is not its
    own (a log line written there would name another item's), and a slot still naming
    an item after it (a log line between items would)."""
    receiver = "slotted"
    attached: list[Span] = []
    attach = otel_context.attach

    def counted(context: Context) -> object:
        attached.append(trace.get_current_span(context))
        return attach(context)

    monkeypatch.setattr(otel_context, "attach", counted)
    router_trace = "0af7651916cd43dd8448eb211c80319c"
    items = [
        msgspec.structs.replace(
            item(i, receiver), headers={"traceparent": f"00-{router_trace}-{i:016x}-01"}
        )
        for i in range(1, 7)
    ]
    seen = await _sent_by_an_untraced_worker(nats_url, receiver, items)
    assert len(attached) == 2  # one slot per sender loop, not a context per item
    assert all(isinstance(span, SpanSlot) for span in attached)
    assert all(not span.get_span_context().is_valid for span in attached)
    spans = set()
    for nid, (given, current) in seen.items():
        assert given == current, nid
        spans.add(current.split("-")[2])
    assert len(spans) == 6


def test_an_outcome_spliced_from_its_notification_is_the_outcome_built_whole() -> None:
    """An outcome message is spliced from the notification's JSON and the fields the
    outcome adds (``delivery._extended``, issue #20), not built field by field. Catches
    the splice giving other bytes than the outcome struct encodes (what the recorder
    and the audit subscribers read, DESIGN.md section 10): for an alert and a group,
    delivered and dead-lettered, with and without the optional fields."""
    alert = WorkItem(notification=make_notification(), log_seq=7)
    group = WorkItem(group=make_group(3), log_seq=8, trace_id="0af7651916cd43dd8448eb211c80319c")
    for work in (alert, group):
        body = msgspec.json.decode(msgspec.json.encode(work), type=EncodedWorkItem).body
        fields = msgspec.structs.asdict(body)
        common = {"channel": "webhook", "log_seq": work.log_seq, "trace_id": work.trace_id}
        grouped = isinstance(body, EncodedGroup)
        for status_code in (200, None):
            delivered = {
                **common,
                "attempts": 2,
                "delivered_at": "2026-11-23T12:00:01.000002Z",
                "status_code": status_code,
            }
            whole = (EncodedGroupDelivered if grouped else DeliverySucceeded)(**fields, **delivered)
            added = delivery._ADDED[type(whole)](**delivered)
            assert delivery._extended(body, added) == msgspec.json.encode(whole)
            dead = {
                **common,
                "attempts": 5,
                "failed_at": "2026-11-23T12:00:01.000002Z",
                "error": 'HTTP 500: "boom"',
                "last_status_code": status_code,
            }
            whole_dead = (EncodedGroupDeadLettered if grouped else DeliveryDeadLettered)(
                **fields, **dead
            )
            added = delivery._ADDED[type(whole_dead)](**dead)
            assert delivery._extended(body, added) == msgspec.json.encode(whole_dead)
