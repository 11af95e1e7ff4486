"""A group's body from its fact to the webhook (issue #20's W5), on real parts: real
NATS streams, the service's ``ReceiverWorker`` and webhook channel, a real HTTP
receiver on 127.0.0.1. The router encodes a group's alerts once; the delivery worker
passes those bytes through to the webhook (and into the outcome message) instead of
decoding and encoding them again; a channel that renders the alerts gets them decoded.
What is posted is byte for byte the body the log's ``group.notified`` row holds
(DESIGN.md invariant 6)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import msgspec
import nats
from nats.aio.client import Client as NATS
from standardwebhooks.webhooks import Webhook

from tests.core.test_group_bodies import storm_facts
from tests.support import HttpSink, Subscriber, wait_until
from tocsin.bus.publisher import Publisher
from tocsin.bus.streams import deliver_consumer_config, ensure_consumer, ensure_streams
from tocsin.channels import Channel, ChannelEnv
from tocsin.channels.webhook import WebhookChannel, WebhookConfig
from tocsin.config import RetrySection
from tocsin.core import events as ev
from tocsin.core.contracts import Body, GroupDeliverySucceeded, GroupNotification
from tocsin.core.outbound import Outbound, group_notification_of, messages_for
from tocsin.core.policy.retry import SendResult
from tocsin.core.state import State
from tocsin.core.subjects import DELIVERED, STREAM_WORK, deliver_consumer
from tocsin.pipeline.delivery import ReceiverWorker
from tocsin.pipeline.recorder import outcome_event

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
RECEIVER = "team"  # the route's of ``storm_facts``


class Rendering:
    """A channel without ``send_encoded`` (as Slack or email): it keeps what it got."""

    kind = "rendering"

    def __init__(self) -> None:
        self.got: list[Body] = []

    async def send(self, notification: Body, *, traceparent: str | None = None) -> SendResult:
        self.got.append(notification)
        return SendResult(ok=True, status_code=200)

    async def close(self) -> None:
        pass


Deliver = Callable[[Channel, list[Outbound]], Awaitable[None]]


async def delivering(nats_url: str) -> AsyncIterator[tuple[NATS, Deliver]]:
    """A connection with tocsin's streams, and a way to run a worker for ``RECEIVER``
    over a channel until the given work items are all acked."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_streams(js)
    await ensure_consumer(js, STREAM_WORK, deliver_consumer_config(RECEIVER, 10.0))
    publisher = Publisher(nc)

    async def deliver(channel: Channel, items: list[Outbound]) -> None:
        worker = ReceiverWorker(nc, publisher, RECEIVER, channel, RetrySection(), concurrency=2)
        stop = asyncio.Event()
        running = asyncio.create_task(worker.run(stop))
        try:
            assert await publisher.publish(items) == [True] * len(items)

            async def acked() -> bool:
                info = await js.consumer_info(STREAM_WORK, deliver_consumer(RECEIVER))
                return info.num_ack_pending == 0 and info.num_pending == 0

            await wait_until(acked, 15, "every work item acked")
        finally:
            stop.set()
            await running

    try:
        yield nc, deliver
    finally:
        await publisher.close()
        await nc.close()


def hook(url: str) -> WebhookChannel:
    config = WebhookConfig(channel="webhook", url=url, secret=SECRET)
    return WebhookChannel(RECEIVER, config, ChannelEnv(version="test"))


def work_items(facts: list[ev.GroupNotified]) -> list[Outbound]:
    """The facts' work items, as the router builds them after their commit."""
    return [m for seq, fact in enumerate(facts, 10) for m in messages_for(State(), seq, fact, None)]


async def test_the_webhook_gets_the_bytes_of_the_group_body_its_log_row_holds(
    nats_url: str, sink: HttpSink
) -> None:
    """Catches a webhook body that is not the group body of its ``group.notified`` row
    (DESIGN.md invariant 6: what was sent is in the log): with unicode, a truncated
    count and a resolved alert, each POST is byte for byte the ``GroupNotification``
    decoded from the row and encoded, the body the old whole encoding gave; the
    signatures hold over those bytes; the ``alerts.delivered`` message lists the same
    alerts and the recorder names the group's first alert in its fact."""
    facts = storm_facts()
    rows = {fact.notification_id: ev.decode(ev.encode(fact)) for fact in facts}
    delivered = await Subscriber().start(nats_url, DELIVERED)
    try:
        async for _, deliver in delivering(nats_url):
            channel = hook(sink.url)
            await deliver(channel, work_items(facts))
        await wait_until(lambda: len(delivered.messages) == 2, 10, "both outcomes")
    finally:
        await delivered.close()
    assert len(sink.requests) == 2
    for request in sink.requests:
        row = rows[request.headers["idempotency-key"]]
        assert isinstance(row, ev.GroupNotified)
        assert request.body == msgspec.json.encode(group_notification_of(row))
        assert Webhook(SECRET).verify(request.body, request.headers)
    for message in delivered.messages:
        outcome = msgspec.json.decode(message.data, type=GroupDeliverySucceeded)
        row = rows[outcome.notification_id]
        assert isinstance(row, ev.GroupNotified)
        assert outcome.alerts == row.alerts
        assert outcome.truncated_alerts == row.truncated
        fact = outcome_event(DELIVERED, message.data)
        assert isinstance(fact, ev.DeliverySucceeded)
        assert (fact.alert_id, fact.group_key) == (row.alerts[0].alert_id, row.group_key)


async def test_a_groups_alerts_reach_the_webhook_as_the_work_item_carries_them(
    nats_url: str, sink: HttpSink
) -> None:
    """Catches the delivery decoding a group's alerts and encoding them again (0.2-0.8
    ms a body of a few hundred, on the delivery's core): a work item whose alert list
    is spaced unlike msgspec's output is posted with that list byte for byte, and its
    outcome message carries it the same way. Decoded and re-encoded, the spaces would
    be gone."""
    [fact, _] = storm_facts()
    [item] = work_items([fact])
    alerts = bytes(fact.alerts_json)
    spaced = alerts.replace(b'","', b'", "').replace(b"},{", b"} , {")
    assert spaced != alerts
    payload = item.payload.replace(alerts, b" " + spaced + b" ")
    delivered = await Subscriber().start(nats_url, DELIVERED)
    try:
        async for _, deliver in delivering(nats_url):
            await deliver(hook(sink.url), [Outbound(item.subject, payload, item.msg_id)])
        await wait_until(lambda: len(delivered.messages) == 1, 10, "the outcome")
    finally:
        await delivered.close()
    [request] = sink.requests
    assert b'"alerts":' + spaced + b',"truncated_alerts":' in request.body
    body = msgspec.json.decode(request.body, type=GroupNotification)
    assert body == group_notification_of(fact)
    assert spaced in delivered.messages[0].data


async def test_a_channel_that_renders_alerts_gets_the_group_decoded(nats_url: str) -> None:
    """Catches a channel without ``send_encoded`` (Slack, email, a plugin) handed the
    encoded group, which it cannot render: it gets the ``GroupNotification`` of the
    fact, every alert decoded."""
    facts = storm_facts()
    channel = Rendering()
    async for _, deliver in delivering(nats_url):
        await deliver(channel, work_items(facts))
    got = sorted(channel.got, key=lambda body: body.reason)
    assert got == sorted((group_notification_of(f) for f in facts), key=lambda b: b.reason)
    assert all(isinstance(body, GroupNotification) for body in got)
