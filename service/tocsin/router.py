"""The router: TOCSIN_IN -> facts in the log -> work items and rejections -> ack.

Per batch: recognise redeliveries by their logged inbound seq, triage the rest against
the projection, commit every fact in one transaction, publish what the facts justify and
wait for JetStream's PubAcks, then ack the inbound messages. Nothing leaves before the
commit; nothing is acked before its messages are stored (DESIGN.md invariants 2-4).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Sequence

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from tocsin import broker, faults, ingest
from tocsin import events as ev
from tocsin.config import Config
from tocsin.ledger import Ledger
from tocsin.log import LogWriteError, Row
from tocsin.outbound import messages_for
from tocsin.redact import Secrets
from tocsin.routing import RoutingTable
from tocsin.tracing import (
    Tracing,
    headers_of,
    in_trace,
    parent_from,
    record_error,
    route_attributes,
    trace_id_of,
)
from tocsin.triage import triage

log = logging.getLogger("tocsin.router")

BATCH = 1000
ROUTE_SPAN = "route"


def new_id() -> str:
    return secrets.token_hex(10)


class Router:
    def __init__(
        self,
        nc: NATS,
        publisher: broker.Publisher,
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

    async def run(self, stop: asyncio.Event) -> None:
        puller = broker.Puller(
            self._nc, broker.STREAM_IN, broker.ROUTER_CONSUMER, BATCH, prefetch=True
        )
        await puller.start()
        log.info("router consuming %s", broker.STREAM_IN)
        try:
            while not stop.is_set():
                msgs = await puller.take(wait=0.5)
                if msgs:
                    await self._handle_until_committed(msgs, stop)
        finally:
            await puller.stop()

    async def _handle_until_committed(self, msgs: Sequence[Msg], stop: asyncio.Event) -> None:
        delay = 0.2
        while True:
            try:
                await self.handle(msgs)
                return
            except LogWriteError:
                if stop.is_set():
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def handle(self, msgs: Sequence[Msg]) -> None:
        """Process one batch end to end. Each message gets a router span (in the
        publisher's trace, or a new one) from triage until its ack."""
        spans: dict[int, Span] = {}
        try:
            await self._handle(msgs, spans)
        except BaseException as error:
            for span in spans.values():
                record_error(span, error, self._secrets.scrub)
                span.end()
            raise
        for span in spans.values():
            span.end()

    async def _handle(self, msgs: Sequence[Msg], spans: dict[int, Span]) -> None:
        ledger = self._ledger
        tracing = self._tracing
        offset = ledger.state.inbound_offset  # see events.StreamBound
        seqs = [offset + broker.stream_seq(m) for m in msgs]
        maybe_logged = [s for s in seqs if s <= ledger.log.max_in_seq]
        logged = await ledger.log.facts_of_inbound(maybe_logged) if maybe_logged else {}
        fresh: list[tuple[int, int, ev.Event]] = []
        seen: set[int] = set(logged)
        async with ledger.batch() as batch:
            for msg, in_seq in zip(msgs, seqs, strict=True):
                if in_seq in seen:
                    continue
                seen.add(in_seq)
                span = tracing.start(ROUTE_SPAN, parent_from(msg.headers), SpanKind.CONSUMER)
                spans[in_seq] = span
                for event in self.facts_for(msg, batch.ts, span):
                    fresh.append((batch.add(event, in_seq=in_seq), in_seq, event))
            faults.point("router.before_commit")
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
        faults.point("router.after_publish")
        await broker.ack_all(self._nc, msgs)

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
            default_source=broker.source_of(msg.subject),
            received_at=received_at,
            msg_id=headers.get(broker.MSG_ID),
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
