"""The router: TOCSIN_IN -> facts in the log -> work items and rejections -> ack.

Per batch: recognise redeliveries by their logged inbound seq, triage the rest against
the projection, commit every fact in one transaction, publish what the facts justify and
wait for JetStream's PubAcks, then ack the inbound messages. Nothing leaves before the
commit; nothing is acked before its messages are stored (DESIGN.md invariants 2-4).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from tocsin.bus.publisher import Publisher
from tocsin.bus.puller import Puller, ack_all, stream_seq
from tocsin.config import Config
from tocsin.core import events as ev
from tocsin.core import ingest
from tocsin.core.decide.route import RoutingTable
from tocsin.core.decide.triage import triage
from tocsin.core.ids import new_id
from tocsin.core.outbound import messages_for
from tocsin.core.policy.backoff import Backoff
from tocsin.core.subjects import MSG_ID, ROUTER_CONSUMER, STREAM_IN, source_of
from tocsin.observability.redact import Secrets
from tocsin.observability.tracing import (
    Tracing,
    headers_of,
    in_trace,
    parent_from,
    record_error,
    route_attributes,
    trace_id_of,
)
from tocsin.pipeline import faults
from tocsin.store.eventlog import LogWriteError, Row
from tocsin.store.ledger import Batch, Ledger

log = logging.getLogger("tocsin.router")

BATCH = 1000
ROUTE_SPAN = "route"


@dataclass
class Decided:
    """A batch of inbound messages, decided: its facts queued for commit (``batch``),
    the facts already logged for redelivered messages, and a router span per message,
    open until the batch is finished."""

    msgs: Sequence[Msg]
    offset: int = 0
    seqs: list[int] = field(default_factory=list)
    logged: dict[int, list[Row]] = field(default_factory=dict)
    fresh: list[tuple[int, int, ev.Event]] = field(default_factory=list)  # seq, in_seq, fact
    spans: dict[int, Span] = field(default_factory=dict)
    batch: Batch | None = None

    def mark(self, milestone: str) -> None:
        """A span event on every message's span: a trace then shows how long the batch
        waited for its commit and for its PubAcks, not just the span's total."""
        for span in self.spans.values():
            span.add_event(milestone)

    def end_spans(
        self, error: BaseException | None = None, scrub: Callable[[str], str] | None = None
    ) -> None:
        for span in self.spans.values():
            if error is not None and scrub is not None:
                record_error(span, error, scrub)
            span.end()
        self.spans.clear()


class Router:
    def __init__(
        self,
        nc: NATS,
        publisher: Publisher,
        ledger: Ledger,
        config: Config,
        tracing: Tracing | None = None,
        secrets: Secrets | None = None,
    ) -> None:
        self._nc = nc
        self._publisher = publisher
        self._ledger = ledger
        self._config = config
        self._routing = RoutingTable.compile(config.routes)
        self._tracing = tracing or Tracing()
        self._secrets = secrets or Secrets()
        self._decided_in_seq = 0  # the highest inbound seq decided by this router

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop``, pipelined: batch N+1 is decided (parsed, triaged,
        folded) while batch N commits; N's messages are published and acked once N is
        committed, and batches finish strictly in order."""
        puller = Puller(self._nc, STREAM_IN, ROUTER_CONSUMER, BATCH, prefetch=True)
        await puller.start()
        log.info("router consuming %s", STREAM_IN)
        finishing: asyncio.Task[None] | None = None
        previous: Decided | None = None  # the batch ``finishing`` finishes
        try:
            while not stop.is_set():
                msgs = await puller.take(wait=0.5)
                if not msgs:
                    continue
                decided = await self._decide(msgs, after=previous)
                if finishing is not None:
                    await finishing
                if decided is None:  # the batch before failed: decide after its retry
                    decided = await self._decide(msgs)
                    assert decided is not None
                finishing = asyncio.create_task(self._finish_until_committed(decided, stop))
                previous = decided
            if finishing is not None:
                await finishing
                finishing = None
        finally:
            if finishing is not None and not finishing.done():
                await asyncio.wait([finishing])  # its commit is under way: see it through
            await puller.stop()

    async def _finish_until_committed(self, decided: Decided, stop: asyncio.Event) -> None:
        """Finish a decided batch; if its commit failed (and with it any batch decided
        on top of it), handle its messages again until the log takes them. The next
        batch is decided only after that (see ``_decide``), so the log keeps the
        inbound order."""
        try:
            await self._finish(decided)
        except LogWriteError:
            await self._handle_until_committed(decided.msgs, stop)

    async def _handle_until_committed(self, msgs: Sequence[Msg], stop: asyncio.Event) -> None:
        backoff = Backoff(first=0.2, ceiling=5.0)
        while True:
            try:
                await self.handle(msgs)
                return
            except LogWriteError:
                if stop.is_set():
                    return
                await asyncio.sleep(backoff.next())

    async def handle(self, msgs: Sequence[Msg]) -> None:
        """Process one batch end to end (decide, commit, publish, ack). Each message
        gets a router span (in the publisher's trace, or a new one) from triage until
        its ack."""
        decided = await self._decide(msgs)
        assert decided is not None
        await self._finish(decided)

    async def _decide(self, msgs: Sequence[Msg], after: Decided | None = None) -> Decided | None:
        """Recognise redeliveries, triage the rest against the projection and queue the
        facts for commit. ``None`` (nothing done) when the batch decided ``after``, not
        finished yet, will not be committed: its messages are handled again first, and
        this batch must come after them."""
        decided = Decided(msgs)
        try:
            return await self._decide_into(decided, after)
        except BaseException as error:
            decided.end_spans(error, self._secrets.scrub)
            raise

    async def _decide_into(self, decided: Decided, after: Decided | None) -> Decided | None:
        ledger = self._ledger
        tracing = self._tracing
        msgs = decided.msgs
        decided.offset = offset = ledger.state.inbound_offset  # see events.StreamBound
        decided.seqs = seqs = [offset + stream_seq(m) for m in msgs]
        horizon = max(ledger.log.max_in_seq, self._decided_in_seq)
        maybe_logged = [s for s in seqs if s <= horizon]
        if maybe_logged:
            await ledger.settled()  # a batch still committing may hold some of them
            decided.logged = await ledger.log.facts_of_inbound(maybe_logged)
        logged, spans, fresh = decided.logged, decided.spans, decided.fresh
        seen: set[int] = set(logged)
        async with ledger.deciding() as batch:
            if after is not None and after.batch is not None and ledger.doomed(after.batch):
                return None
            for msg, in_seq in zip(msgs, seqs, strict=True):
                if in_seq in seen:
                    continue
                seen.add(in_seq)
                span = tracing.start(ROUTE_SPAN, parent_from(msg.headers), SpanKind.CONSUMER)
                spans[in_seq] = span
                for event in self.facts_for(msg, batch.ts, span):
                    fresh.append((batch.add(event, in_seq=in_seq), in_seq, event))
            faults.point("router.before_commit")
        decided.batch = batch
        self._decided_in_seq = max(self._decided_in_seq, *seqs)
        return decided

    async def _finish(self, decided: Decided) -> None:
        """Once the batch is committed: publish what its facts justify, wait for the
        PubAcks, then ack its messages."""
        try:
            await self._finish_spans_open(decided)
        except BaseException as error:
            decided.end_spans(error, self._secrets.scrub)
            raise
        decided.end_spans()

    async def _finish_spans_open(self, decided: Decided) -> None:
        ledger = self._ledger
        msgs, seqs, offset = decided.msgs, decided.seqs, decided.offset
        logged, spans, fresh = decided.logged, decided.spans, decided.fresh
        decided.mark("decided")
        if decided.batch is not None:
            await ledger.committed(decided.batch)
        decided.mark("committed")
        faults.point("router.after_commit")
        for msg, in_seq in zip(msgs, seqs, strict=True):
            if in_seq in logged and in_seq not in spans:
                spans[in_seq] = self._redelivery_span(msg, logged[in_seq])
        state = ledger.state

        def trace_headers(in_seq: int, event: ev.Event) -> dict[str, str] | None:
            """A work item continues its message's router span."""
            return headers_of(spans[in_seq]) if isinstance(event, ev.AlertRouted) else None

        outbound = [
            m
            for seq, in_seq, e in fresh
            for m in messages_for(state, seq, e, in_seq - offset, trace_headers(in_seq, e))
        ]
        for in_seq, rows in logged.items():
            outbound.extend(
                m
                for row in rows
                for m in messages_for(
                    state, row.seq, row.event, in_seq - offset, trace_headers(in_seq, row.event)
                )
            )
        if logged:
            log.info(
                "recognised %d redelivered message(s); re-published their outcomes", len(logged)
            )
        stored = await self._publisher.publish(outbound)
        if not all(stored):
            # Unacked inbound messages come back; their facts are logged, so the retry
            # only re-publishes (deduplicated by Nats-Msg-Id).
            log.warning(
                "%d of %d outbound messages not stored; leaving the batch unacked",
                stored.count(False),
                len(stored),
            )
            for span in spans.values():
                span.set_status(Status(StatusCode.ERROR, "outbound messages not stored"))
            return
        decided.mark("published")
        faults.point("router.after_publish")
        await ack_all(self._nc, msgs)

    def _redelivery_span(self, msg: Msg, rows: Sequence[Row]) -> Span:
        """A span for a message whose facts are already logged, in the trace they
        recorded (the publisher's, or the one tocsin started the first time)."""
        trace_id = next((row.event.trace_id for row in rows if row.event.trace_id), None)
        parent = parent_from(msg.headers)
        if trace_id is not None and (parent is None or f"{parent.trace_id:032x}" != trace_id):
            parent = in_trace(trace_id)
        span = self._tracing.start(ROUTE_SPAN, parent, SpanKind.CONSUMER)
        if span.is_recording():
            span.set_attribute("messaging.destination.name", msg.subject)
            span.set_attribute("tocsin.outcome", "redelivered")
        return span

    def facts_for(self, msg: Msg, received_at: int, span: Span) -> list[ev.Event]:
        """The facts one inbound message produces (accepted or rejected), tagged with
        the trace of its router ``span``."""
        facts = self._facts_for(msg, received_at, span)
        if span.is_recording():
            span.set_attributes(route_attributes(msg.subject, facts))
            if isinstance(facts[0], ev.AlertRejected):
                span.set_status(Status(StatusCode.ERROR, f"rejected: {facts[0].reason}"))
        return facts

    def _facts_for(self, msg: Msg, received_at: int, span: Span) -> list[ev.Event]:
        trace_id = trace_id_of(span)
        headers = msg.headers or {}
        parsed = ingest.parse(
            msg.data,
            default_source=source_of(msg.subject),
            received_at=received_at,
            msg_id=headers.get(MSG_ID),
        )
        if isinstance(parsed, ingest.Rejection):
            raw, encoding = ingest.capped_raw(msg.data)
            log.info(
                "rejected message on %s: %s",
                msg.subject,
                parsed.message,
                extra={
                    "trace_id": trace_id,
                    "span_id": f"{span.get_span_context().span_id:016x}",
                    "reason": parsed.code,
                    "subject": msg.subject,
                },
            )
            return [
                ev.AlertRejected(
                    code=parsed.code,
                    reason=parsed.message,
                    field=parsed.field,
                    subject=msg.subject,
                    received_at=received_at,
                    raw=raw,
                    raw_encoding=encoding,
                    trace_id=trace_id,
                )
            ]
        return triage(
            self._ledger.state,
            parsed,
            subject=msg.subject,
            received_at=received_at,
            routing=self._routing,
            window_seconds=self._config.dedup_window,
            new_id=new_id,
            trace_id=trace_id,
        )
