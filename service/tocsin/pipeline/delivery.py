"""Delivery workers: work item -> channel -> outcome published with a PubAck -> ack.

Stateless: the attempt number is JetStream's delivery count (less the deferrals this
worker made), the retry delay is a NAK with delay, and the outcome goes to TOCSIN_OUT for
the recorder to log. A work item is acked only after its outcome is stored (delivered or
dead-lettered); a retry publishes the failed attempt first, then NAKs (DESIGN.md section
5, invariant 3). A redelivered item, and any item in a turbulence window (see
``turbulence.py``), is checked with the router first, so that one whose outcome is
stored is not sent again (invariant 4). An item routed before a notification of the
same fingerprint that its receiver already accepted is not sent at all: it is dropped
as superseded (``core/policy/order.py``; the record is ``bus/delivered.py``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, Status, StatusCode

from tocsin.bus.delivered import DeliveredSeq
from tocsin.bus.publisher import Publisher
from tocsin.bus.puller import Puller, ack_all, delivery_count, nak, stored_at, stream_seq
from tocsin.channels import Channel, SendsEncodedAlerts, SendsEncodedGroups
from tocsin.channels.http1 import running_loop
from tocsin.config import RetrySection
from tocsin.core.contracts import (
    Body,
    DeliveryAttemptFailed,
    DeliveryDeadLettered,
    DeliverySucceeded,
    DeliverySuperseded,
    EncodedGroup,
    EncodedGroupDeadLettered,
    EncodedGroupDelivered,
    EncodedWorkItem,
    Notification,
    outcome_identity,
)
from tocsin.core.events import field_spec
from tocsin.core.outbound import Outbound
from tocsin.core.partition import carry_partition, marked_by
from tocsin.core.policy import failover as tb
from tocsin.core.policy import order
from tocsin.core.policy.backoff import Backoff
from tocsin.core.policy.retry import SendResult, Step, next_step, retryable
from tocsin.core.policy.throttle import PriorityLine, TokenBucket
from tocsin.core.subjects import (
    DELIVERED,
    DELIVERY_FAILED,
    PROGRESS,
    STREAM_WORK,
    TERM,
    attempts_subject,
    deliver_consumer,
    delivery_status_subject,
    leader_elected_subjects,
    superseded_subject,
)
from tocsin.core.times import format_us, now_us
from tocsin.observability.redact import Secrets
from tocsin.observability.telemetry import Metrics
from tocsin.observability.tracing import (
    CurrentSpan,
    SpanSlot,
    Tracing,
    activated,
    in_trace,
    parent_from,
    record_error,
    traceparent_of,
    unrecorded_child,
)
from tocsin.pipeline import faults

log = logging.getLogger("tocsin.delivery")

# A group's alerts stay encoded (``EncodedGroup``): a webhook posts them as they are.
_work_decoder = msgspec.json.Decoder(EncodedWorkItem)
_encoder = msgspec.json.Encoder()
OUTCOME_PUBLISH_PATIENCE = 20.0
ORDER_PATIENCE = 1.0  # seconds the order record may take before a send goes ahead
STATUS_PATIENCE = 2.0  # seconds to wait for the router's word on a redelivered item
DEFERRALS_KEPT = 10_000  # items whose deferrals a worker remembers (the oldest go first)
_OUTCOME = {True: "ok", False: "failed"}  # a send's, as ``send_seconds`` labels it


class Gate:
    """Admits sends at the receiver's ``max_per_minute``, highest severity first.

    Waiting sends keep their work item (they count against the worker's concurrency,
    so the rest stays in JetStream) and tell JetStream they are in progress.
    """

    def __init__(self, per_minute: int, progress_every: float) -> None:
        self.per_minute = per_minute
        self._progress_every = progress_every
        self._bucket = TokenBucket(per_minute)
        self._line: PriorityLine[asyncio.Future[None]] = PriorityLine()
        self._pump: asyncio.Task[None] | None = None

    async def admit(self, severity: str, on_wait: Callable[[], Awaitable[None]]) -> float:
        """Wait for a token; returns the seconds waited. ``on_wait`` runs every
        ``progress_every`` seconds while waiting (a third of the consumer's ack_wait)."""
        loop = asyncio.get_running_loop()
        if not len(self._line) and self._bucket.take(loop.time()):
            return 0.0
        started = loop.time()
        turn: asyncio.Future[None] = loop.create_future()
        self._line.push(severity, turn)
        if self._pump is None or self._pump.done():
            self._pump = asyncio.create_task(self._release())
        while True:
            try:
                await asyncio.wait_for(asyncio.shield(turn), self._progress_every)
                return loop.time() - started
            except TimeoutError:
                await on_wait()

    async def _release(self) -> None:
        loop = asyncio.get_running_loop()
        while len(self._line):
            delay = self._bucket.wait(loop.time())
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            self._bucket.take(loop.time())
            turn = self._line.pop()
            if not turn.done():
                turn.set_result(None)


_Handed = tuple[Outbound, asyncio.Future[bool], Msg | None]  # outcome, stored?, item to ack


class OutcomeBatches:
    """Outcomes stored in batches: those handed in during one turn of the event loop
    (sends finishing together) go to JetStream in one ``Publisher.publish``, whose
    PubAcks come back on one inbox. No outcome waits for another: a batch leaves on the
    loop's next turn, whatever its size (at most ``limit``).

    The work items the stored outcomes settle are acked by the batch too, in one write
    once their PubAcks are in (``store``'s ``then_ack``): an ack a batch, not one an
    item (issue #20). An item is acked only when its own outcome was stored (DESIGN.md
    section 2); one whose outcome was not stays unacked, for its worker to retry."""

    def __init__(self, nc: NATS, publisher: Publisher, limit: int = 256) -> None:
        self._nc = nc
        self._publisher = publisher
        self._limit = limit
        self._open: list[_Handed] | None = None
        self._publishing: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def store(self, outcome: Outbound, then_ack: Msg | None = None) -> bool:
        """``True`` once JetStream stored ``outcome`` (PubAck) and ``then_ack``, the
        work item it settles, if any, was acked; ``False`` if it was not stored (and
        ``then_ack`` not acked)."""
        loop = self._loop = running_loop(self._loop)
        stored: asyncio.Future[bool] = loop.create_future()
        if self._open is None or len(self._open) >= self._limit:
            self._open = []
            task = loop.create_task(self._publish(self._open))
            self._publishing.add(task)
            task.add_done_callback(self._publishing.discard)
        self._open.append((outcome, stored, then_ack))
        return await stored

    async def _ack_settled(self, batch: list[_Handed], results: list[bool]) -> None:
        """Ack, in one write, the items of ``batch`` whose outcomes were stored. Not
        acked (the connection closed): JetStream hands them out again, and their
        worker finds their outcomes in the log (``_ask_router``) and sends nothing."""
        settled = []
        for index, (_, _, then_ack) in enumerate(batch):
            if then_ack is not None and index < len(results) and results[index]:
                faults.point("delivery.after_outcome")
                settled.append(then_ack)
        if not settled:
            return
        try:
            await ack_all(self._nc, settled)
        except Exception as error:
            log.warning(
                "%d work item(s) whose outcome is stored not acked: %s", len(settled), error
            )

    async def _publish(self, batch: list[_Handed]) -> None:
        if self._open is batch:
            self._open = None  # what is handed in from now on makes the next batch
        results: list[bool] = []
        try:
            results = await self._publisher.publish([outcome for outcome, _, _ in batch])
            await self._ack_settled(batch, results)
        except Exception as error:  # e.g. the connection closed: none stored
            log.warning("%d outcome(s) not published: %s", len(batch), error)
        finally:  # what has no answer (cancelled, failed) counts as not stored
            for index, (_, stored, _) in enumerate(batch):
                if not stored.done():
                    stored.set_result(index < len(results) and results[index])


class Handoff:
    """Work items from a worker's puller to its sender loops, first in first out: an
    ``asyncio.Queue`` without its bound (the puller takes no more items than there are
    idle senders), its task accounting and its lookups of the running loop, ~2 us an
    item (issue #20). ``None`` tells a sender loop to stop."""

    def __init__(self) -> None:
        self._items: collections.deque[Msg | None] = collections.deque()
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None

    def qsize(self) -> int:
        return len(self._items)

    def put(self, item: Msg | None) -> None:
        self._items.append(item)
        self._wake_one()

    async def get(self) -> Msg | None:
        """The next item, waiting for one. An item stays here until taken: a sender
        cancelled once woken passes its wake-up on, and takes nothing."""
        while not self._items:
            self._loop = running_loop(self._loop)
            waiter = self._loop.create_future()
            self._waiting.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()
                raise
        return self._items.popleft()

    def _wake_one(self) -> None:
        """Wake the first sender still waiting (a cancelled one's wait is done)."""
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


class ReceiverWorker:
    """Sends one receiver's notifications, ``concurrency`` at a time: that many sender
    loops take work items from a queue the puller fills with only as many items as
    there are idle senders (the rest wait in JetStream). A task per work item, and
    ``asyncio.wait`` over every send in flight to find a free slot, cost ~25 us of CPU
    a notification."""

    def __init__(
        self,
        nc: NATS,
        publisher: Publisher,
        receiver: str,
        channel: Channel,
        retry: RetrySection,
        concurrency: int,
        max_per_minute: int | None = None,
        progress_every: float = 10.0,
        metrics: Metrics | None = None,
        tracing: Tracing | None = None,
        secrets: Secrets | None = None,
        ack_wait: float = 30.0,
    ) -> None:
        self._nc = nc
        self._outcomes = OutcomeBatches(nc, publisher)
        self.receiver = receiver
        self._channel = channel
        self._alerts_encoded = _alerts_encoded(channel)
        self._max_attempts = retry.max_attempts
        self._backoff = [float(d) for d in retry.backoff]
        self._concurrency = concurrency
        self._idle = 0  # sender loops not delivering (waiting for, or holding, an item)
        self._freed = asyncio.Event()  # set when a sender loop finishes an item
        self._sending: dict[int, int] = {}  # id(channel) -> sends under way through it
        self._unused: dict[int, asyncio.Event] = {}  # id(replaced channel) -> set when unused
        self._progress_every = progress_every
        self._gate = Gate(max_per_minute, progress_every) if max_per_minute else None
        self._retired: set[asyncio.Task[None]] = set()  # old channels closing after a reload
        self._metrics = metrics
        self._tracing = tracing or Tracing()
        self._secrets = secrets or Secrets()
        self._window_length = ack_wait + tb.TURBULENCE_MARGIN
        self._window: tb.Window | None = None
        self._reconnects = self._reconnect_count()
        self._deferrals: dict[int, int] = {}  # work item's stream seq -> deferrals here
        self._delivered_seq = DeliveredSeq(nc)
        self._send_observers: dict[tuple[str, bool], Callable[[float], None]] = {}

    def reconfigure(self, channel: Channel, max_per_minute: int | None) -> None:
        """A config reload changed this receiver's settings (``reload``): sends started
        from now on go through ``channel`` and the new ``max_per_minute``; the old
        channel is closed once the sends already under way through it have finished
        (a send in flight keeps the channel it started with)."""
        old, self._channel = self._channel, channel
        self._alerts_encoded = _alerts_encoded(channel)
        if (self._gate.per_minute if self._gate else None) != max_per_minute:
            # Sends waiting at the old gate are still let through by it, at its pace.
            self._gate = Gate(max_per_minute, self._progress_every) if max_per_minute else None
        closing = asyncio.create_task(self._close_when_unused(old))
        self._retired.add(closing)
        closing.add_done_callback(self._retired.discard)

    async def run(self, stop: asyncio.Event) -> None:
        puller = Puller(
            self._nc,
            STREAM_WORK,
            deliver_consumer(self.receiver),
            self._concurrency,
            prefetch=False,
        )
        await puller.start()
        await self._delivered_seq.follow(self.receiver)
        elections = [
            await self._nc.subscribe(subject, cb=self._on_leader_elected)
            for subject in leader_elected_subjects(STREAM_WORK, deliver_consumer(self.receiver))
        ]
        log.info("delivering to receiver %s (%s)", self.receiver, self._channel.kind)
        queue = Handoff()
        self._idle = self._concurrency
        senders = [asyncio.create_task(self._sender(queue)) for _ in range(self._concurrency)]
        try:
            while not stop.is_set():
                free = self._idle - queue.qsize()
                if free <= 0:
                    self._freed.clear()
                    await self._freed.wait()
                    continue
                for msg in await puller.take(limit=free, wait=0.5):
                    queue.put(msg)
        finally:

            async def wind_down() -> None:
                for _ in senders:  # after the items already handed out
                    queue.put(None)
                await asyncio.wait(senders)

            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wind_down(), 15)
            for sender in senders:  # still sending after 15 s: the items go back
                sender.cancel()
            for subscription in elections:
                with contextlib.suppress(Exception):  # closing anyway
                    await subscription.unsubscribe()
            await puller.stop()
            await self._delivered_seq.stop()
            await self._channel.close()
            if self._retired:
                await asyncio.wait(self._retired, timeout=15)

    async def _sender(self, queue: Handoff) -> None:
        """One of the ``concurrency`` loops: deliver items from ``queue`` until ``None``,
        under a ``SpanSlot`` that holds the span of the item in hand."""
        slot = SpanSlot()
        with CurrentSpan(slot):
            while (msg := await queue.get()) is not None:
                self._idle -= 1
                try:
                    await self.deliver(msg, slot)
                except Exception:  # the item stays unacked: JetStream hands it out again
                    log.exception("delivering a work item to %s failed", self.receiver)
                finally:
                    self._idle += 1
                    self._freed.set()

    async def _send(
        self, body: Body | EncodedGroup, traceparent: str, encoded: bytes | None = None
    ) -> SendResult:
        """``body`` through the current channel, which is not closed while in use (a
        reload may replace it meanwhile). A group's alerts go on encoded to a channel
        that sends them so (``SendsEncodedGroups``: the webhook), decoded to others; an
        alert's JSON (``encoded``, when given) to a channel that takes it
        (``SendsEncodedAlerts``: the webhook again)."""
        channel = self._channel
        key = id(channel)
        self._sending[key] = self._sending.get(key, 0) + 1
        try:
            if isinstance(body, EncodedGroup):
                if isinstance(channel, SendsEncodedGroups):
                    return await channel.send_encoded(body, traceparent=traceparent)
                body = body.decoded()
            takes_json = self._alerts_encoded
            if (
                takes_json is not None
                and takes_json[0] is channel  # not replaced since
                and encoded is not None
                and isinstance(body, Notification)
            ):
                return await takes_json[1].send_encoded_alert(
                    body, encoded, traceparent=traceparent
                )
            return await channel.send(body, traceparent=traceparent)
        finally:
            left = self._sending.pop(key) - 1
            if left:
                self._sending[key] = left
            elif key in self._unused:
                self._unused.pop(key).set()

    async def _close_when_unused(self, channel: Channel) -> None:
        """Close a replaced channel once no send is using it."""
        if self._sending.get(id(channel)):
            unused = self._unused[id(channel)] = asyncio.Event()
            await unused.wait()
        try:
            await channel.close()
        except Exception as error:  # it is replaced: a failure to close costs nothing else
            log.warning("closing a replaced %s channel: %s", channel.kind, error)

    async def deliver(self, msg: Msg, slot: SpanSlot | None = None) -> None:
        """One attempt at one work item, and what follows from it, in a delivery span
        under the router span that queued it (the receiver's request continues it).
        ``slot``: the caller's current span, which holds a span that does not record
        while the attempt lasts (``SpanSlot``); without one it is made current."""
        try:
            item = _work_decoder.decode(msg.data)
        except msgspec.DecodeError as error:
            log.error("unreadable work item on %s terminated: %s", msg.subject, error)
            await ack_all(self._nc, [msg], TERM)
            return
        if not self._tracing.recording:
            quick = unrecorded_child(msg.headers)
            if quick is not None:  # the router's plain traceparent: no general parse
                span, traceparent = quick
                if slot is None:
                    with CurrentSpan(span):
                        await self._attempt(msg, item, span, traceparent)
                    return
                slot.span = span
                try:
                    await self._attempt(msg, item, span, traceparent)
                finally:
                    slot.span = INVALID_SPAN
                return
        parent = parent_from(msg.headers)
        if parent is None and item.trace_id:
            parent = in_trace(item.trace_id)
        span = self._tracing.start(f"deliver {self.receiver}", parent, SpanKind.CLIENT)
        if span.is_recording():
            body = item.body
            alert_id, fingerprint, group_key = outcome_identity(body)
            span.set_attributes(
                {
                    "tocsin.receiver": self.receiver,
                    "tocsin.channel": self._channel.kind,
                    "tocsin.notification_id": body.notification_id,
                    "tocsin.alert_id": alert_id,
                    "tocsin.fingerprint": fingerprint,
                    "tocsin.severity": body.severity,
                    "tocsin.reason": body.reason,
                    "tocsin.delivery_count": delivery_count(msg),
                }
            )
            if isinstance(body, Notification):
                span.set_attribute("tocsin.dedup_key", body.dedup_key)
            if group_key is not None:
                span.set_attribute("tocsin.group_key", group_key)
        with activated(span, self._secrets.scrub):
            await self._attempt(msg, item, span, traceparent_of(span))

    def _reconnect_count(self) -> int:
        return int(getattr(self._nc, "stats", {}).get("reconnects", 0))

    def _turbulence(self, why: str) -> None:
        """Open (or extend) the turbulence window: delivery counts are not to be trusted
        for a while."""
        now = time.time()
        if not tb.is_open(self._window, now):
            log.info(
                "%s: checking every item to %s with the router for %.0fs",
                why,
                self.receiver,
                self._window_length,
            )
        self._window = tb.opened(self._window, now, self._window_length)

    async def _on_leader_elected(self, msg: Msg) -> None:
        self._turbulence(f"JetStream elected a new leader ({msg.subject})")

    def _turbulent(self, now: float) -> bool:
        reconnects = self._reconnect_count()
        if reconnects != self._reconnects:
            self._reconnects = reconnects
            self._turbulence("reconnected to NATS")
        return tb.is_open(self._window, now)

    async def _attempt(self, msg: Msg, item: EncodedWorkItem, span: Span, traceparent: str) -> None:
        """``traceparent``: what the receiver's request continues (``span``'s)."""
        nid = item.body.notification_id
        count = delivery_count(msg)
        seq = stream_seq(msg)
        deferrals = self._deferrals.get(seq, 0)
        attempt = tb.attempt_number(count, deferrals)
        span.set_attribute("tocsin.attempt", attempt)
        now = time.time()
        turbulent = self._turbulent(now) or deferrals > 0
        if tb.must_ask(count, turbulent):
            answer = await self._ask_router(nid, msg.headers)
            waited = tb.waiting(now, stored_at(msg), self._window)
            action = tb.before_send(answer, turbulent, waited)
            if action == "skip":
                log.info(
                    "%s to %s is already %s in the log; not sending it again",
                    nid,
                    self.receiver,
                    answer,
                    extra={"notification_id": nid, "receiver": self.receiver},
                )
                span.set_attribute("tocsin.outcome", "already_settled")
                self._deferrals.pop(seq, None)
                await ack_all(self._nc, [msg])
                return
            if action == "defer":
                self._deferred(seq, deferrals + 1)
                log.info(
                    "deferring %s to %s: the router cannot yet say whether it was sent"
                    " (%s); asking again in %.1fs",
                    nid,
                    self.receiver,
                    answer or "no answer",
                    tb.DEFER_DELAY,
                    extra={"notification_id": nid, "receiver": self.receiver},
                )
                span.set_attribute("tocsin.outcome", "deferred")
                await nak(self._nc, msg, tb.DEFER_DELAY)
                return
            if action == "send_anyway":
                log.warning(
                    "sending %s to %s after %.0fs deferred although the log may not hold"
                    " its last outcome (%s): it may reach the receiver twice",
                    nid,
                    self.receiver,
                    waited,
                    answer or "no answer",
                    extra={"notification_id": nid, "receiver": self.receiver},
                )
        if self._gate is not None:

            async def still_working() -> None:
                await ack_all(self._nc, [msg], PROGRESS)

            waited = await self._gate.admit(item.body.severity, still_working)
            span.set_attribute("tocsin.throttle_wait_seconds", waited)
            if self._metrics is not None:
                self._metrics.throttle_seconds.record(waited, {"receiver": self.receiver})
            if waited > 0.001:
                log.info(
                    "throttled %s to %s for %.2fs (max_per_minute=%d)",
                    nid,
                    self.receiver,
                    waited,
                    self._gate.per_minute,
                    extra={"notification_id": nid, "receiver": self.receiver, "waited": waited},
                )
        ordered_by = _ordered_by(item)
        known, latest = self._delivered_seq.known(self.receiver, ordered_by)
        if not known:  # not followed in memory (yet): asked for
            latest = await self._latest(ordered_by)
        if latest is not None and order.before_send(item.log_seq, latest) == "superseded":
            await self._supersede(msg, item, attempt, latest, span)
            return
        # An alert's JSON, encoded once for the channel's body and the outcome's splice.
        body = item.body
        encoded = _encoder.encode(body) if isinstance(body, Notification) else None
        started = time.monotonic()  # the clock asyncio's loop.time() reads
        try:
            result = await self._send(body, traceparent, encoded)
        except Exception as error:
            log.exception("channel %s raised", self._channel.kind)
            record_error(span, error, self._secrets.scrub)
            result = retryable(f"channel error: {type(error).__name__}: {error}")
        if result.error is not None:
            # Receivers echo URLs, bodies and headers into their answers: whatever the
            # error says is stored in the log and the audit messages, so it is scrubbed.
            scrubbed = self._secrets.scrub(result.error, cut=True)
            result = msgspec.structs.replace(result, error=scrubbed)
        if self._metrics is not None:
            self._send_seconds(result.ok)(time.monotonic() - started)
        faults.point("delivery.after_send")
        step = next_step(result, attempt, self._max_attempts, self._backoff)
        _describe(span, result, step)
        outcome = self._outcome(item, attempt, result, step, encoded)
        settles = step.action != "retry"  # the item is done: acked with the outcome
        if not await self._publish_outcome(msg, outcome, settles):
            log.error(
                "outcome of %s not stored; the item will be redelivered",
                nid,
                extra={"notification_id": nid, "receiver": self.receiver},
            )
            span.set_status(Status(StatusCode.ERROR, "outcome not stored"))
            return
        if settles:
            self._deferrals.pop(seq, None)
        else:
            faults.point("delivery.after_outcome")
            await nak(self._nc, msg, step.delay)
        if result.ok and item.raise_order:
            # Later retries of older notifications of the fingerprint: superseded. Raised
            # only once the outcome is stored and the item acked: a key-value store slow
            # in a broker failover must never widen the gap between a send and its
            # outcome, where JetStream would hand the item to another worker. Not
            # raised when no older notification of the key could still be sent
            # (``order.must_raise``, decided by the router).
            accepted = order.Latest(log_seq=item.log_seq, notification_id=nid)
            await self._record_accepted(ordered_by, accepted)

    def _send_seconds(self, ok: bool) -> Callable[[float], None]:
        """What records a send's duration in ``send_seconds``, by outcome and the
        channel's kind (a reload may change it), looked up once each."""
        assert self._metrics is not None
        kind = self._channel.kind
        observe = self._send_observers.get((kind, ok))
        if observe is None:
            labels = {"receiver": self.receiver, "channel": kind, "outcome": _OUTCOME[ok]}
            observe = self._send_observers[kind, ok] = self._metrics.send_seconds.observer(labels)
        return observe

    async def _record_accepted(self, ordered_by: str, accepted: order.Latest) -> None:
        """Raise the order record to ``accepted``: one compare-and-set publish batched
        with the outcomes while the record is followed (``DeliveredSeq.write``), a read
        and a compare-and-set request when it is not, or when the publish lost a race."""
        if self._delivered_seq.known(self.receiver, ordered_by)[0]:  # in memory
            write = self._delivered_seq.write(self.receiver, ordered_by, accepted)
            if write is None or await self._outcomes.store(write):
                return
        await self._delivered_seq.raise_to(self.receiver, ordered_by, accepted)

    async def _latest(self, ordered_by: str) -> order.Latest | None:
        """The latest notification the receiver accepted of ``ordered_by``, asked for at
        most ``ORDER_PATIENCE``: past it the send goes ahead (the order check is a
        guard against late retries, and a slow answer must not hold an item until
        JetStream hands it to another worker). Followed in memory, it costs no wait
        (``known``, which the caller reads first)."""
        try:
            return await asyncio.wait_for(
                self._delivered_seq.latest(self.receiver, ordered_by), ORDER_PATIENCE
            )
        except TimeoutError:
            log.warning(
                "no answer from the order record within %.1fs; sending to %s unchecked",
                ORDER_PATIENCE,
                self.receiver,
                extra={"receiver": self.receiver},
            )
            return None

    async def _supersede(
        self, msg: Msg, item: EncodedWorkItem, attempt: int, latest: order.Latest, span: Span
    ) -> None:
        """Settle an item without sending it: its receiver already accepted ``latest``,
        routed after it. The fact goes to the log like any outcome (never on
        ``alerts.delivery_failed``: nothing failed), then the item is acked."""
        notification = item.body
        nid = notification.notification_id
        alert_id, fingerprint, group_key = outcome_identity(notification)
        again = f":{item.generation}" if item.generation else ""
        message = DeliverySuperseded(
            notification_id=nid,
            receiver=self.receiver,
            alert_id=alert_id,
            fingerprint=fingerprint,
            group_key=group_key,
            channel=self._channel.kind,
            attempts=attempt - 1,
            superseded_by=latest.notification_id,
            superseded_by_seq=latest.log_seq,
            superseded_at=format_us(now_us()),
            log_seq=item.log_seq,
            trace_id=item.trace_id,
        )
        outcome = Outbound(
            superseded_subject(self.receiver), _encoder.encode(message), f"{nid}:superseded{again}"
        )
        log.info(
            "not sending %s (%s, routed at seq %d) to %s: it is superseded by %s (routed at"
            " seq %d), which %s already accepted",
            nid,
            notification.reason,
            item.log_seq,
            self.receiver,
            latest.notification_id,
            latest.log_seq,
            self.receiver,
            extra={
                "notification_id": nid,
                "receiver": self.receiver,
                "superseded_by": latest.notification_id,
            },
        )
        span.set_attribute("tocsin.outcome", "superseded")
        span.set_attribute("tocsin.superseded_by", latest.notification_id)
        if not await self._publish_outcome(msg, outcome, settles=True):
            log.error(
                "outcome of %s not stored; the item will be redelivered",
                nid,
                extra={"notification_id": nid, "receiver": self.receiver},
            )
            span.set_status(Status(StatusCode.ERROR, "outcome not stored"))
            return
        self._deferrals.pop(stream_seq(msg), None)

    def _deferred(self, seq: int, deferrals: int) -> None:
        self._deferrals[seq] = deferrals
        while len(self._deferrals) > DEFERRALS_KEPT:  # items another worker finished
            del self._deferrals[next(iter(self._deferrals))]

    async def _ask_router(self, nid: str, headers: dict[str, str] | None = None) -> str | None:
        """What the log says of ``nid`` (``status.REPLIES``); ``None`` when the router
        does not answer in time. An item whose outcome the log holds (the worker died
        after publishing it, before acking; or a new consumer leader handed it out
        again) is not sent again. The item's ``headers`` say which partition's router
        to ask (``partition.marked_by``)."""
        subject = delivery_status_subject(marked_by(headers))
        try:
            reply = await self._nc.request(subject, nid.encode(), timeout=STATUS_PATIENCE)
        except Exception as error:
            log.info("no delivery status for %s from the router: %s", nid, error)
            return None
        return reply.data.decode(errors="replace")

    def _outcome(
        self,
        item: EncodedWorkItem,
        attempt: int,
        result: SendResult,
        step: Step,
        encoded: bytes | None = None,
    ) -> Outbound:
        """The outcome message of an attempt; a group's lists its alerts as the work
        item carried them (``EncodedGroupDelivered``: the same JSON, not re-encoded);
        ``encoded``: the notification's JSON, when the caller has it already."""
        notification = item.body
        nid = notification.notification_id
        grouped = isinstance(notification, EncodedGroup)
        # A re-queued item's outcomes need ids JetStream has not deduplicated already.
        again = f":{item.generation}" if item.generation else ""
        now = format_us(now_us())
        common: dict[str, Any] = {
            "channel": self._channel.kind,
            "log_seq": item.log_seq,
            "trace_id": item.trace_id,
        }
        if step.action == "delivered":
            delivered = _ADDED[EncodedGroupDelivered if grouped else DeliverySucceeded]
            added = delivered(
                **common, attempts=attempt, delivered_at=now, status_code=result.status_code
            )
            payload = _extended(notification, added, encoded)
            return Outbound(DELIVERED, payload, f"{nid}:delivered{again}")
        if step.action == "dead_letter":
            dead = _ADDED[EncodedGroupDeadLettered if grouped else DeliveryDeadLettered]
            added = dead(
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
                extra={
                    "notification_id": nid,
                    "receiver": self.receiver,
                    "attempt": attempt,
                    "status_code": result.status_code,
                },
            )
            payload = _extended(notification, added, encoded)
            return Outbound(DELIVERY_FAILED, payload, f"{nid}:failed{again}")
        alert_id, fingerprint, group_key = outcome_identity(notification)
        message = DeliveryAttemptFailed(
            notification_id=nid,
            receiver=self.receiver,
            alert_id=alert_id,
            fingerprint=fingerprint,
            group_key=group_key,
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
            extra={
                "notification_id": nid,
                "receiver": self.receiver,
                "attempt": attempt,
                "status_code": result.status_code,
            },
        )
        return Outbound(
            attempts_subject(self.receiver),
            _encoder.encode(message),
            f"{nid}:attempt:{attempt}{again}",
        )

    async def _publish_outcome(self, msg: Msg, outcome: Outbound, settles: bool) -> bool:
        """Store the outcome, retrying while the broker is away (holding the item with
        progress acks), so a broker blip does not cause a second send; when the outcome
        ``settles`` the item, the item is acked with the outcome's batch once stored
        (``OutcomeBatches``). The outcome carries the item's partition, if any: that
        partition's recorder logs it."""
        outcome = carry_partition(outcome, msg.headers)
        then_ack = msg if settles else None
        if await self._outcomes.store(outcome, then_ack):  # as nearly always: stored
            return True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + OUTCOME_PUBLISH_PATIENCE
        backoff = Backoff(first=0.1, ceiling=2.0)
        while True:
            await ack_all(self._nc, [msg], PROGRESS)
            await asyncio.sleep(backoff.next())
            if await self._outcomes.store(outcome, then_ack):
                return True
            if loop.time() > deadline:
                return False


def _added_fields(
    outcome: type[msgspec.Struct], body: type[msgspec.Struct]
) -> type[msgspec.Struct]:
    """The fields ``outcome`` adds to ``body``, its base, in its order, as a struct of
    their own: encoded, they are what follows the body's fields in ``outcome``'s JSON
    (``_extended``)."""
    every, inherited = msgspec.structs.fields(outcome), msgspec.structs.fields(body)
    assert [f.name for f in every[: len(inherited)]] == [f.name for f in inherited]
    return msgspec.defstruct(
        f"{outcome.__name__}Added",
        [field_spec(f, f.type) for f in every[len(inherited) :]],
        kw_only=True,
    )


# An outcome message is its notification's fields and then its own: the notification
# encoded, the added fields encoded, the two spliced (``_extended``), not the outcome
# built field by field from the notification's (``asdict``: ~2 us a notification,
# issue #20). ``tests/pipeline/test_delivery_workers.py`` checks the bytes are the same.
_ADDED: dict[type[msgspec.Struct], type[msgspec.Struct]] = {
    outcome: _added_fields(outcome, body)
    for outcome, body in (
        (DeliverySucceeded, Notification),
        (DeliveryDeadLettered, Notification),
        (EncodedGroupDelivered, EncodedGroup),
        (EncodedGroupDeadLettered, EncodedGroup),
    )
}


def _extended(body: msgspec.Struct, added: msgspec.Struct, encoded: bytes | None = None) -> bytes:
    """The JSON of the outcome struct that is ``body``'s class with ``added``'s fields
    after its own (``_ADDED``): ``{<body's fields>,<added's fields>}``; ``encoded``:
    ``body``'s JSON, when already made."""
    if encoded is None:
        encoded = _encoder.encode(body)
    return encoded[:-1] + b"," + _encoder.encode(added)[1:]


def _alerts_encoded(channel: Channel) -> tuple[Channel, SendsEncodedAlerts] | None:
    """``channel`` (twice: as itself, and as what it also is) when it takes an alert's
    JSON with it (``SendsEncodedAlerts``), asked once a channel: a protocol's
    ``isinstance`` costs microseconds."""
    return (channel, channel) if isinstance(channel, SendsEncodedAlerts) else None


def _ordered_by(item: EncodedWorkItem) -> str:
    """What a receiver's notifications are ordered by (``order``): an alert's
    fingerprint, or a group's key (one PagerDuty incident, one Opsgenie alias each)."""
    if item.group is not None:
        return item.group.group_key
    _, fingerprint, _ = outcome_identity(item.body)
    return fingerprint


def _describe(span: Span, result: SendResult, step: Step) -> None:
    """What the attempt came to, on its span: outcome, HTTP status, error (scrubbed)."""
    if not span.is_recording():
        return
    span.set_attribute("tocsin.outcome", step.action)
    if result.status_code is not None:
        span.set_attribute("http.response.status_code", result.status_code)
    if step.action == "retry":
        span.set_attribute("tocsin.retry_in_seconds", step.delay)
    if not result.ok:
        span.set_status(Status(StatusCode.ERROR, result.error or "send failed"))
