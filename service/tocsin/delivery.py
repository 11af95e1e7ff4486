"""Delivery workers: work item -> channel -> outcome published with a PubAck -> ack.

Stateless: the attempt number is JetStream's delivery count, the retry delay is a NAK
with delay, and the outcome goes to TOCSIN_OUT for the recorder to log. A work item is
acked only after its outcome is stored (delivered or dead-lettered); a retry publishes
the failed attempt first, then NAKs (DESIGN.md section 5, invariant 3).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from tocsin import broker
from tocsin.channels import Channel
from tocsin.config import RetrySection
from tocsin.contracts import AttemptFailed, Delivered, DeliveryFailed, WorkItem
from tocsin.retry import SendResult, Step, next_step, retryable
from tocsin.times import format_us, now_us
from tocsin.tracing import traceparent_for

log = logging.getLogger("tocsin.delivery")

_work_decoder = msgspec.json.Decoder(WorkItem)
_encoder = msgspec.json.Encoder()
OUTCOME_PUBLISH_PATIENCE = 20.0


class ReceiverWorker:
    """Sends one receiver's notifications, ``concurrency`` at a time."""

    def __init__(
        self,
        nc: NATS,
        js: JetStreamContext,
        receiver: str,
        channel: Channel,
        retry: RetrySection,
        concurrency: int,
    ) -> None:
        self._nc = nc
        self._js = js
        self.receiver = receiver
        self._channel = channel
        self._max_attempts = retry.max_attempts
        self._backoff = [float(d) for d in retry.backoff]
        self._concurrency = concurrency
        self._inflight: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        puller = broker.Puller(
            self._nc,
            broker.STREAM_WORK,
            broker.deliver_consumer(self.receiver),
            self._concurrency,
            prefetch=False,
        )
        await puller.start()
        log.info("delivering to receiver %s (%s)", self.receiver, self._channel.kind)
        try:
            while not stop.is_set():
                free = self._concurrency - len(self._inflight)
                if free <= 0:
                    await asyncio.wait(self._inflight, return_when=asyncio.FIRST_COMPLETED)
                    continue
                for msg in await puller.take(limit=free, wait=0.5):
                    task = asyncio.create_task(self.deliver(msg))
                    self._inflight.add(task)
                    task.add_done_callback(self._inflight.discard)
        finally:
            if self._inflight:
                await asyncio.wait(self._inflight, timeout=15)
            await puller.stop()
            await self._channel.close()

    async def deliver(self, msg: Msg) -> None:
        """One attempt at one work item, and what follows from it."""
        try:
            item = _work_decoder.decode(msg.data)
        except msgspec.DecodeError as error:
            log.error("unreadable work item on %s terminated: %s", msg.subject, error)
            await broker.ack_all(self._nc, [msg], broker.TERM)
            return
        attempt = broker.delivery_count(msg)
        traceparent = traceparent_for(item.trace_id) if item.trace_id else None
        try:
            result = await self._channel.send(item.notification, traceparent=traceparent)
        except Exception as error:
            log.exception("channel %s raised", self._channel.kind)
            result = retryable(f"channel error: {type(error).__name__}: {error}")
        step = next_step(result, attempt, self._max_attempts, self._backoff)
        outcome = self._outcome(item, attempt, result, step)
        if not await self._publish_outcome(msg, outcome):
            log.error(
                "outcome of %s not stored; the item will be redelivered",
                item.notification.notification_id,
            )
            return
        if step.action == "retry":
            await broker.nak(self._nc, msg, step.delay)
        else:
            await broker.ack_all(self._nc, [msg])

    def _outcome(
        self, item: WorkItem, attempt: int, result: SendResult, step: Step
    ) -> broker.Outbound:
        notification = item.notification
        nid = notification.notification_id
        body: dict[str, Any] = msgspec.structs.asdict(notification)
        now = format_us(now_us())
        common: dict[str, Any] = {
            "channel": self._channel.kind,
            "log_seq": item.log_seq,
            "trace_id": item.trace_id,
        }
        if step.action == "delivered":
            message: Any = Delivered(**body, **common, attempts=attempt, delivered_at=now)
            return broker.Outbound(broker.DELIVERED, _encoder.encode(message), f"{nid}:delivered")
        if step.action == "dead_letter":
            message = DeliveryFailed(
                **body,
                **common,
                attempts=attempt,
                failed_at=now,
                error=result.error or "unknown error",
                last_status_code=result.status_code,
            )
            log.warning(
                "dead-lettered %s to %s after %d attempt(s): %s",
                nid,
                self.receiver,
                attempt,
                result.error,
            )
            return broker.Outbound(
                broker.DELIVERY_FAILED, _encoder.encode(message), f"{nid}:failed"
            )
        message = AttemptFailed(
            notification_id=nid,
            receiver=self.receiver,
            alert_id=notification.alert_id,
            fingerprint=notification.fingerprint,
            attempt=attempt,
            error=result.error or "unknown error",
            status_code=result.status_code,
            retry_in_seconds=step.delay,
            failed_at=now,
            **common,
        )
        log.info(
            "attempt %d of %s to %s failed (%s); retrying in %.1fs",
            attempt,
            nid,
            self.receiver,
            result.error,
            step.delay,
        )
        return broker.Outbound(
            broker.attempts_subject(self.receiver),
            _encoder.encode(message),
            f"{nid}:attempt:{attempt}",
        )

    async def _publish_outcome(self, msg: Msg, outcome: broker.Outbound) -> bool:
        """Store the outcome, retrying while the broker is away (holding the item with
        progress acks), so a broker blip does not cause a second send."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + OUTCOME_PUBLISH_PATIENCE
        delay = 0.1
        while True:
            if (await broker.publish_acked(self._js, [outcome]))[0]:
                return True
            if loop.time() > deadline:
                return False
            await broker.ack_all(self._nc, [msg], broker.PROGRESS)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
