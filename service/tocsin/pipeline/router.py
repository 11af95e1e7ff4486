"""The router: TOCSIN_IN -> facts in the log -> work items and rejections -> ack.

The loop is the processor shell's (``processor``): per batch it recognises redeliveries
by their logged inbound position, has the rest decided here, commits every fact in one
transaction, publishes what the facts justify and waits for JetStream's PubAcks, then
acks the inbound messages. The router supplies the deciding (parse, then ``triage``
against the projection, or a rejection), the work items and rejections its facts
justify, and its tracing.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from tocsin.bus.publisher import Publishes
from tocsin.bus.puller import stream_seq
from tocsin.bus.streams import ensure_inbound
from tocsin.config import Config
from tocsin.core import events as ev
from tocsin.core import heartbeats, ingest, partition
from tocsin.core.contracts import WorkItem, outcome_identity
from tocsin.core.decide.route import RoutingTable
from tocsin.core.decide.triage import triage
from tocsin.core.ids import new_id
from tocsin.core.outbound import Outbound, for_configured, fresh_messages, messages_for
from tocsin.core.state import State
from tocsin.core.subjects import ROUTER_CONSUMER, STREAM_IN, heartbeat_of, source_of
from tocsin.core.times import now_us
from tocsin.core.versions import stamped
from tocsin.observability.redact import Secrets
from tocsin.observability.telemetry import Metrics
from tocsin.observability.tracing import (
    Tracing,
    Unrecorded,
    headers_of,
    in_trace,
    parent_from,
    record_error,
    route_attributes,
    trace_id_of,
)
from tocsin.pipeline import binding
from tocsin.pipeline.processor import (
    First,
    Milestone,
    Processor,
    Pulled,
    Rider,
    Setup,
    Step,
    Waits,
)
from tocsin.store.eventlog import Row
from tocsin.store.ledger import Input, Ledger

log = logging.getLogger("tocsin.router")

BATCH = 1000
ROUTE_SPAN = "route"


@dataclass(eq=False)
class Traced:
    """The router's own record of a batch: the inbound offset its positions were taken
    with, and a router span per message, open until the batch is finished (``spans``),
    or, when nothing records spans, only the trace of each message decided
    (``unrecorded``; a redelivered message's span is in ``spans`` either way)."""

    offset: int
    spans: dict[int, Span] = field(default_factory=dict)
    unrecorded: dict[int, Unrecorded] = field(default_factory=dict)


class Router(Step[Traced]):
    """The processor step of TOCSIN_IN: inbound messages -> accepted or rejected facts
    -> work items and rejections. Each message gets a router span (in the publisher's
    trace, or a new one) from triage until its ack; the span's events ``decided``,
    ``committed`` and ``published`` show how long the batch waited for its commit and
    for its PubAcks."""

    name = "router"
    input = Input.INBOUND
    by_arrival = True

    def __init__(
        self,
        nc: NATS,
        publisher: Publishes,
        ledger: Ledger,
        config: Config,
        tracing: Tracing | None = None,
        secrets: Secrets | None = None,
        metrics: Metrics | None = None,
        setup: Setup | None = None,
        rider: Rider | None = None,
        on_commit: Callable[[], None] | None = None,
        first: First | None = None,
        waits: Waits | None = None,
        stream: str = STREAM_IN,
        consumer: str = ROUTER_CONSUMER,
        forwarded: bool = False,
        linger: float = 0.0,
    ) -> None:
        """``setup`` creates TOCSIN_IN and the router's consumer should the consumer
        vanish (by default ``ensure_inbound`` with the config's replicas and ack
        wait). In a service, ``publisher`` is the outbox and ``rider`` its watermark
        (``outbox``); ``on_commit`` is told of every batch committed (the clock's
        nudge: a group may be due at once), and ``first`` is awaited before each batch
        is decided (the clock's due timers: ``Clock.serve_due``), ``waits`` asked while
        one is decided (a batch stops where a timer falls due: ``Clock.waits``). A
        partition's router reads ``stream`` TOCSIN_PART with its own ``consumer``; its
        messages were ``forwarded`` by a partitioner, and are decided on the subject
        and id they were published with (``partition.origin_of``). ``linger``: how long
        a pull that has its first messages waits for more (none in a service: an event
        waits for no other; a test may want one batch of what JetStream holds)."""
        self._on_commit = on_commit
        self._forwarded = forwarded
        self._ledger = ledger
        self.reconfigure(config)
        self._tracing = tracing or Tracing()
        self._secrets = secrets or Secrets()
        self._processor = Processor(
            nc,
            ledger,
            self,
            stream=stream,
            consumer=consumer,
            batch_size=BATCH,
            publisher=publisher,
            # The one router of ``tocsin serve`` makes TOCSIN_IN again if it was deleted,
            # checked fresh (``repair_stale``: no other process creates it meanwhile).
            setup=setup
            or functools.partial(
                ensure_inbound,
                replicas=config.nats.replicas or 1,
                ack_wait=config.nats.ack_wait,
                repair_stale=True,
            ),
            metrics=metrics,
            rider=rider,
            first=first,
            waits=waits,
            linger=linger,
        )

    def reconfigure(self, config: Config) -> None:
        """Decide under ``config`` from the next batch on (``reload`` calls it under the
        ledger's lock, so no batch is decided half under each): its routes, grouping,
        inhibit rules and dedup window, and its version on every routed fact."""
        self._config = config
        self._routing = RoutingTable.compile(config.routes, config.inhibit)
        self._receivers = frozenset(config.receivers)
        self._version = config.digest()

    @property
    def missing(self) -> str | None:
        """Why the router cannot pull: its consumer is gone (for /readyz)."""
        return self._processor.missing

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` (pipelined: see ``processor``)."""
        await self._processor.run(stop)

    async def handle(self, msgs: Sequence[Msg]) -> None:
        """Process one batch end to end (decide, commit, publish, ack)."""
        await self._processor.handle(msgs)

    def begin(self, msgs: Sequence[Msg], state: State) -> tuple[list[int], Traced]:
        offset = binding.bound(state, self.input)[1]  # see events.StreamBound
        return [offset + stream_seq(m) for m in msgs], Traced(offset)

    def facts(self, pulled: Pulled[Traced], msg: Msg, position: int, at: int) -> list[ev.Event]:
        parent = parent_from(msg.headers)
        if self._tracing.recording:
            span = self._tracing.start(ROUTE_SPAN, parent, SpanKind.CONSUMER)
            pulled.own.spans[position] = span
            return self.facts_for(msg, at, span)
        trace = pulled.own.unrecorded[position] = Unrecorded(parent)
        return self.facts_for(msg, at, trace)

    def outbound(self, pulled: Pulled[Traced], state: State) -> list[Outbound]:
        """Work items and rejections for the facts decided now and for those logged
        before for redelivered messages (each traced in the trace it logged)."""
        offset, spans, logged = pulled.own.offset, pulled.own.spans, pulled.logged
        unrecorded = pulled.own.unrecorded
        for msg, position in zip(pulled.msgs, pulled.positions, strict=True):
            if position in logged and position not in spans:
                spans[position] = self._redelivery_span(msg, logged[position])

        def trace_headers(position: int) -> dict[str, str]:
            """A work item continues its message's router span."""
            trace = unrecorded.get(position)
            return trace.headers() if trace is not None else headers_of(spans[position])

        outbound = fresh_messages(state, pulled.fresh, offset, trace_headers)
        for position, rows in logged.items():
            outbound.extend(
                m
                for row in rows
                for m in messages_for(
                    state,
                    row.seq,
                    row.event,
                    position - offset,
                    trace_headers(position) if isinstance(row.event, ev.AlertRouted) else None,
                )
            )
        if logged:
            log.info(
                "recognised %d redelivered message(s); re-published their outcomes", len(logged)
            )
        for _, _, facts in pulled.fresh:
            _warn_if_unrouted(facts)
        outbound, unsent = for_configured(outbound, self._receivers, now_us())
        warn_unconfigured(unsent)
        return outbound

    def reached(self, pulled: Pulled[Traced], milestone: Milestone) -> None:
        """A span event on every message's span: a trace then shows how long the batch
        waited for its commit and for its PubAcks, not just the span's total."""
        for span in pulled.own.spans.values():
            span.add_event(milestone)
        if milestone == "committed" and self._on_commit is not None:
            self._on_commit()

    def not_stored(self, pulled: Pulled[Traced]) -> None:
        for span in pulled.own.spans.values():
            span.set_status(Status(StatusCode.ERROR, "outbound messages not stored"))

    def ended(self, pulled: Pulled[Traced], error: BaseException | None) -> None:
        spans = pulled.own.spans
        for span in spans.values():
            if error is not None:
                record_error(span, error, self._secrets.scrub)
            span.end()
        spans.clear()

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

    def facts_for(self, msg: Msg, received_at: int, span: Span | Unrecorded) -> list[ev.Event]:
        """The facts one inbound message produces (accepted or rejected), tagged with
        the trace of its router ``span``."""
        if isinstance(span, Unrecorded):
            return stamped(self._facts_for(msg, received_at, span), self._version)
        facts = stamped(self._facts_for(msg, received_at, span), self._version)
        if span.is_recording():
            span.set_attributes(route_attributes(msg.subject, facts))
            if isinstance(facts[0], ev.AlertRejected):
                span.set_status(Status(StatusCode.ERROR, f"rejected: {facts[0].reason}"))
        return facts

    def _facts_for(self, msg: Msg, received_at: int, span: Span | Unrecorded) -> list[ev.Event]:
        trace_id = span.trace_id if isinstance(span, Unrecorded) else trace_id_of(span)
        origin = partition.origin_of(msg.subject, msg.headers, self._forwarded)
        subject = origin.subject
        heartbeat = heartbeat_of(subject)
        if heartbeat is not None:  # a beat: its payload is no alert event, and ignored
            facts = heartbeats.beat(
                self._ledger.state,
                heartbeat,
                subject=subject,
                received_at=received_at,
                raw=msg.data,
                routing=self._routing,
                new_id=new_id,
                trace_id=trace_id,
            )
            if isinstance(facts[0], ev.AlertRejected):
                log.warning(
                    "rejected beat on %s: %s",
                    subject,
                    facts[0].reason,
                    extra={"trace_id": trace_id, "reason": facts[0].code, "subject": subject},
                )
                if origin.inbound_seq is not None:
                    facts = [msgspec.structs.replace(facts[0], inbound_seq=origin.inbound_seq)]
            return facts
        parsed = ingest.parse(
            msg.data,
            default_source=source_of(subject),
            received_at=received_at,
            msg_id=origin.msg_id,
        )
        if isinstance(parsed, ingest.Rejection):
            raw, encoding = ingest.capped_raw(msg.data)
            log.info(
                "rejected message on %s: %s",
                subject,
                parsed.message,
                extra={
                    "trace_id": trace_id,
                    "span_id": span.span_id
                    if isinstance(span, Unrecorded)
                    else f"{span.get_span_context().span_id:016x}",
                    "reason": parsed.code,
                    "subject": subject,
                },
            )
            return [
                ev.AlertRejected(
                    code=parsed.code,
                    reason=parsed.message,
                    field=parsed.field,
                    subject=subject,
                    received_at=received_at,
                    raw=raw,
                    raw_encoding=encoding,
                    trace_id=trace_id,
                    inbound_seq=origin.inbound_seq,
                )
            ]
        return triage(
            self._ledger.state,
            parsed,
            subject=subject,
            received_at=received_at,
            routing=self._routing,
            window_seconds=self._config.dedup_window,
            new_id=new_id,
            trace_id=trace_id,
        )


def warn_unconfigured(items: Sequence[WorkItem]) -> None:
    """Say which notifications were dead-lettered at once because their receiver is no
    longer configured (a resolve goes to every receiver told of its alert)."""
    for item in items:
        notification = item.body
        alert_id, _, group_key = outcome_identity(notification)
        of = f"group {group_key}" if group_key is not None else f"alert {alert_id}"
        log.warning(
            "dead-lettered %s (%s of %s) at once: receiver %s is not in the configuration",
            notification.notification_id,
            notification.reason,
            of,
            notification.receiver,
            extra={
                "notification_id": notification.notification_id,
                "receiver": notification.receiver,
                "alert_id": alert_id,
                "trace_id": item.trace_id,
            },
        )


def _warn_if_unrouted(facts: Sequence[ev.Event]) -> None:
    """Once the facts of one inbound event are committed: a warning when they found
    its alert unrouted (no route matches it, nobody was ever told of it). The route
    stage marks one fact per alert, so this is said once, not at every event; a
    redelivered message's facts are not decided again, nor warned of again. Its fact
    is the event's last (the route stage is the last stage): one look per event."""
    last, received = facts[-1], facts[0]
    if not (isinstance(last, ev.AlertSuppressed) and last.newly_unrouted):
        return
    if isinstance(received, ev.AlertReceived):  # an accepted event's first fact
        log.warning(
            "alert %s (%s, %s, from %s) matches no route: nobody is told of it;"
            " add a route for it, or a catch-all route (match = {})",
            last.alert_id,
            received.type,
            received.severity,
            received.source,
            extra={
                "trace_id": last.trace_id,
                "alert_id": last.alert_id,
                "type": received.type,
                "severity": received.severity,
                "source": received.source,
            },
        )
