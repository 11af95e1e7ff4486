"""Traces: one per alert, from the publisher's span through the router and the delivery
to the receiver's HTTP request, carried as W3C trace context in NATS and HTTP headers.

Every message is traced (DESIGN.md section 10): with a ``traceparent`` the router span
joins the publisher's trace; without one, tocsin starts a trace at receipt, and that
trace's id is the ``trace_id`` of the log events and audit messages.

Spans are recorded by the OpenTelemetry SDK only when something consumes them: an OTLP
exporter configured by the standard ``OTEL_*`` variables (``Tracing.from_environment``),
or a ``TracerProvider`` handed in (the tests' in-memory exporter). Otherwise they are
non-recording spans that still carry real ids, so receivers get a ``traceparent`` and
logs a ``span_id``, for ~2 us instead of the SDK's ~20 us per span (the router handles
batches of 1000). Exports go through a ``BatchSpanProcessor``: a queue and a thread,
never a wait on the event loop.
"""

from __future__ import annotations

import random
import re
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, assert_never

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import (
    INVALID_SPAN,
    INVALID_SPAN_CONTEXT,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)
from opentelemetry.util.types import AttributeValue

from tocsin import __version__
from tocsin.core import events as ev
from tocsin.core.ids import traceparent_for
from tocsin.core.kinds import by_kind, handled_by

if TYPE_CHECKING:  # the SDK is imported only where spans are recorded (issue #20's RSS)
    from opentelemetry.sdk.trace import TracerProvider

TRACEPARENT = "traceparent"

TRACESTATE = "tracestate"

OTLP_PROTOCOL = "http/protobuf"


_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)

# A ``traceparent`` as tocsin writes it (version 00, lower-case hex, nothing after): the
# one form ``unrecorded_child`` reads without the general parse.
_PLAIN_TRACEPARENT = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
_NO_TRACE, _NO_SPAN = "0" * 32, "0" * 16
_TRACESTATE_CAPITALIZED = TRACESTATE.capitalize()  # as ``_header`` also reads it
_FLAGS = {f"{flags:02x}": TraceFlags(flags) for flags in range(256)}


def _header(headers: Mapping[str, str], name: str) -> str | None:
    return headers.get(name) or headers.get(name.capitalize())


def parent_from(headers: Mapping[str, str] | None) -> SpanContext | None:
    """The remote parent a valid ``traceparent`` (and ``tracestate``) header names."""
    if not headers:
        return None
    value = _header(headers, TRACEPARENT)
    if not value:
        return None
    match = _TRACEPARENT.match(value.strip().lower())
    if match is None:
        return None
    version, trace_hex, span_hex, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest):
        return None
    trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)
    if not trace_id or not span_id:
        return None
    state = _header(headers, TRACESTATE)
    return SpanContext(
        trace_id,
        span_id,
        is_remote=True,
        trace_flags=TraceFlags(int(flags, 16)),
        trace_state=TraceState.from_header([state]) if state else None,
    )


def in_trace(trace_id: str) -> SpanContext:
    """A parent inside a trace the log knows only by id (a redelivered message whose
    router span is gone): spans started under it join that trace."""
    return SpanContext(
        int(trace_id, 16), random.getrandbits(64) or 1, is_remote=True, trace_flags=_SAMPLED
    )


def traceparent_of(span: Span) -> str:
    """The W3C ``traceparent`` that makes ``span`` the parent of the receiver's work."""
    c = span.get_span_context()
    return f"00-{c.trace_id:032x}-{c.span_id:016x}-{int(c.trace_flags):02x}"


def headers_of(span: Span) -> dict[str, str]:
    """``traceparent`` (and ``tracestate`` when there is one) for a NATS message."""
    headers = {TRACEPARENT: traceparent_of(span)}
    state = span.get_span_context().trace_state
    if state:
        headers[TRACESTATE] = state.to_header()
    return headers


def trace_id_of(span: Span) -> str:
    return f"{span.get_span_context().trace_id:032x}"


def trace_context_from(given: Mapping[str, str]) -> dict[str, str]:
    """The headers that carry a message's trace on: the caller's W3C context when it is
    valid (the router span then joins the caller's trace), else a new trace, since every
    message is traced (DESIGN.md section 10)."""
    parent = parent_from(given)
    if parent is None:
        return {TRACEPARENT: traceparent_for(f"{random.getrandbits(128) or 1:032x}")}
    return headers_of(NonRecordingSpan(parent))


class Unrecorded:
    """A message's router span when nothing records spans (``Tracing.recording`` is
    false): only what its facts and work items need of it, the trace it is in and, made
    the first time something asks, its span id and ``traceparent``. The router handles
    a storm of duplicates with no work item at all, so a ``NonRecordingSpan`` per
    message, with its span events and its end, was ~1.6 us of pure overhead
    (issue #20); this costs a random trace id (~0.4 us), or nothing more than the
    publisher's ``traceparent`` parsed when it sent one."""

    __slots__ = ("_headers", "_parent", "_span_id", "trace_id")

    def __init__(self, parent: SpanContext | None) -> None:
        self._parent = parent
        trace = parent.trace_id if parent is not None else random.getrandbits(128) or 1
        self.trace_id = f"{trace:032x}"
        self._span_id = 0
        self._headers: dict[str, str] | None = None

    @property
    def span_id(self) -> str:
        """The span's id (drawn once): what a log line about the message names."""
        if not self._span_id:
            self._span_id = random.getrandbits(64) or 1
        return f"{self._span_id:016x}"

    def headers(self) -> dict[str, str]:
        """``traceparent`` (and the parent's ``tracestate``) for a work item: the same
        a ``NonRecordingSpan`` under the same parent gives (``headers_of``)."""
        if self._headers is None:
            parent = self._parent
            flags = int(parent.trace_flags) if parent is not None else int(_SAMPLED)
            self._headers = {TRACEPARENT: f"00-{self.trace_id}-{self.span_id}-{flags:02x}"}
            if parent is not None and parent.trace_state:
                self._headers[TRACESTATE] = parent.trace_state.to_header()
        return self._headers


class _UnrecordedChild(NonRecordingSpan):
    """``unrecorded_child``'s span: a ``NonRecordingSpan`` whose ``SpanContext`` is made
    the first time something asks for it (a log line written during the send, a
    test), from the parts the ``traceparent`` was written with. A delivery asks for
    none when nothing goes wrong, and the context, a tuple subclass built through a
    Python ``__new__`` from the trace id parsed out of its hex, was ~1 us of the ~2
    the span cost (issue #20)."""

    def __init__(self, trace_hex: str, span_id: int, flags: str) -> None:
        # Not ``NonRecordingSpan.__init__``, which takes the context made: the two
        # methods that read it (``get_span_context``, ``__repr__``) are these.
        self._parts = (trace_hex, span_id, flags)
        self._made: SpanContext | None = None

    def get_span_context(self) -> SpanContext:
        if self._made is None:
            trace_hex, span_id, flags = self._parts
            self._made = SpanContext(
                int(trace_hex, 16), span_id, is_remote=False, trace_flags=_FLAGS[flags]
            )
        return self._made

    def __repr__(self) -> str:
        return f"NonRecordingSpan({self.get_span_context()!r})"


def unrecorded_child(headers: Mapping[str, str] | None) -> tuple[Span, str] | None:
    """A non-recording span under the ``traceparent`` of ``headers``, and the
    ``traceparent`` that makes it the parent of the receiver's work: what
    ``Tracing().start(name, parent_from(headers))`` and ``traceparent_of`` give, for
    ~1 us instead of ~6 (issue #20: a delivery worker makes one per notification; its
    ``SpanContext`` is made only when asked for, ``_UnrecordedChild``). Only for the
    plain form tocsin's router writes (``_PLAIN_TRACEPARENT``) with no ``tracestate``;
    ``None`` for anything else, which takes the general path."""
    if not headers:
        return None
    value = headers.get(TRACEPARENT)
    if value is None or not _PLAIN_TRACEPARENT.fullmatch(value):
        return None
    if TRACESTATE in headers or _TRACESTATE_CAPITALIZED in headers:
        return None
    trace_hex, flags = value[3:35], value[53:55]
    if trace_hex == _NO_TRACE or value[36:52] == _NO_SPAN:
        return None
    span_id = random.getrandbits(64) or 1
    return _UnrecordedChild(trace_hex, span_id, flags), f"00-{trace_hex}-{span_id:016x}-{flags}"


class CurrentSpan:
    """``span`` is the current span inside the block (log lines carry its ids): the
    part of ``activated`` a non-recording span needs, without a generator (it records
    no exception and its end does nothing)."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: Span) -> None:
        self._span = span

    def __enter__(self) -> Span:
        self._token = otel_context.attach(trace.set_span_in_context(self._span))
        return self._span

    def __exit__(self, *exc_info: object) -> None:
        otel_context.detach(self._token)


class SpanSlot(NonRecordingSpan):
    """The current span of a task that handles one item at a time (a delivery worker's
    sender loop): made current once for the task's life (``CurrentSpan``), it stands
    for the span put in it (``span``, the item in hand's) and for none between items,
    so a log line written meanwhile names that span. A span made current per item (a
    context copied, attached and detached: ``CurrentSpan``) was ~1 us a notification
    (issue #20). Only for spans that do not record: one that does is made current
    above the slot (``activated``), where its exception and end are recorded."""

    def __init__(self) -> None:
        super().__init__(INVALID_SPAN_CONTEXT)
        self.span: Span = INVALID_SPAN

    def get_span_context(self) -> SpanContext:
        return self.span.get_span_context()

    def __repr__(self) -> str:
        return f"SpanSlot({self.span!r})"


class TracingConfigError(ValueError):
    """The ``OTEL_*`` variables ask for something tocsin cannot do."""


def otlp_endpoint(environ: Mapping[str, str]) -> str | None:
    """Where spans go, from the standard variables; ``None``: nowhere (no exporter)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    exporters = {n.strip().lower() for n in environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")}
    if "otlp" not in exporters:
        return None
    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if not endpoint:
        base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        if not base:
            return None
        endpoint = base.rstrip("/") + "/v1/traces"
    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or OTLP_PROTOCOL
    ).strip()
    if protocol != OTLP_PROTOCOL:
        raise TracingConfigError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL: tocsin exports traces over {OTLP_PROTOCOL} only, "
            f"not {protocol!r} (a collector listens for it on port 4318)"
        )
    return endpoint


class Tracing:
    """Starts tocsin's spans. One per running service (no global tracer provider: the
    tests run several services in one process, each with its own exporter)."""

    def __init__(self, provider: TracerProvider | None = None, *, owned: bool = False) -> None:
        self._provider = provider
        self._owned = owned
        self._tracer = provider.get_tracer("tocsin", __version__) if provider else None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> Tracing:
        """An OTLP/HTTP exporter behind a batch processor when ``OTEL_EXPORTER_OTLP_ENDPOINT``
        (or ``..._TRACES_ENDPOINT``) is set; else non-recording spans. The exporter reads
        the other standard variables itself (headers, timeout, compression, certificates);
        the provider reads ``OTEL_TRACES_SAMPLER``, the batch processor ``OTEL_BSP_*``."""
        endpoint = otlp_endpoint(environ)
        if endpoint is None:
            return cls()
        # Only here: without an exporter the SDK's ~100 modules would be held for nothing.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        resource = Resource.create(
            {
                "service.name": environ.get("OTEL_SERVICE_NAME") or "tocsin",
                "service.version": __version__,
            }
        )
        provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        return cls(provider, owned=True)

    @property
    def recording(self) -> bool:
        return self._tracer is not None

    def start(
        self, name: str, parent: SpanContext | None, kind: SpanKind = SpanKind.INTERNAL
    ) -> Span:
        """A span under ``parent``, or the root of a new trace; end it yourself."""
        if self._tracer is None:
            if parent is None:
                context = SpanContext(
                    random.getrandbits(128) or 1,
                    random.getrandbits(64) or 1,
                    is_remote=False,
                    trace_flags=_SAMPLED,
                )
            else:
                context = SpanContext(
                    parent.trace_id,
                    random.getrandbits(64) or 1,
                    is_remote=False,
                    trace_flags=parent.trace_flags,
                    trace_state=parent.trace_state,
                )
            return NonRecordingSpan(context)
        within = trace.set_span_in_context(NonRecordingSpan(parent)) if parent else Context()
        return self._tracer.start_span(name, context=within, kind=kind)

    def shutdown(self) -> None:
        """Flush what the batch processor holds (only a provider this object made)."""
        if self._owned and self._provider is not None:
            self._provider.shutdown()


def record_error(span: Span, error: BaseException, scrub: Callable[[str], str]) -> None:
    """Mark ``span`` failed by ``error``; its message and stack are scrubbed of secrets
    before they reach the trace backend."""
    if not span.is_recording():
        return
    message = scrub(str(error))
    span.record_exception(
        error,
        attributes={
            "exception.message": message,
            "exception.stacktrace": scrub("".join(traceback.format_exception(error))),
        },
    )
    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {message}"))


@contextmanager
def activated(span: Span, scrub: Callable[[str], str]) -> Iterator[Span]:
    """``span`` is the current span inside the block (log lines carry its ids), records
    an exception escaping it, and ends with it."""
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        yield span
    except BaseException as error:
        record_error(span, error, scrub)
        raise
    finally:
        otel_context.detach(token)
        span.end()


def route_attributes(subject: str, facts: Sequence[ev.Event]) -> dict[str, AttributeValue]:
    """What a router span says about one inbound message: what it was and what became
    of it (``tocsin.outcome``: routed, suppressed, silenced, inhibited, rejected,
    resolve_ignored, unrouted, heartbeat: a beat that resolved nothing)."""
    # Each attribute costs ~10 us to encode for export: only what answers a question.
    attributes: dict[str, AttributeValue] = {"messaging.destination.name": subject}
    receivers: list[str] = []
    outcome = "unrouted"
    for fact in facts:
        note = _NOTES[type(fact)]
        if note is not None:
            outcome = note(fact, attributes, receivers) or outcome
    if receivers:
        attributes["tocsin.receivers"] = receivers
    attributes["tocsin.outcome"] = outcome
    return attributes


# What each fact of an inbound message adds to its route span: attributes, and the
# outcome it makes the message's (``None``: the outcome stays what it was).
Note = Callable[[Any, dict[str, AttributeValue], list[str]], str | None]


def _received(
    fact: ev.AlertReceived, attributes: dict[str, AttributeValue], receivers: list[str]
) -> None:
    attributes["tocsin.fingerprint"] = fact.fingerprint
    attributes["tocsin.dedup_key"] = fact.dedup_key
    attributes["tocsin.severity"] = fact.severity
    attributes["tocsin.type"] = fact.type
    if fact.alert_id:
        attributes["tocsin.alert_id"] = fact.alert_id


def _routed(
    fact: ev.AlertRouted, attributes: dict[str, AttributeValue], receivers: list[str]
) -> str:
    receivers.append(fact.receiver)
    attributes["tocsin.reason"] = fact.reason
    return "routed"


def _suppressed(
    fact: ev.AlertSuppressed, attributes: dict[str, AttributeValue], receivers: list[str]
) -> str:
    attributes["tocsin.suppressed_cause"] = fact.cause
    return "suppressed"


def _silenced(
    fact: ev.AlertSilenced, attributes: dict[str, AttributeValue], receivers: list[str]
) -> str:
    return "silenced"


def _inhibited(
    fact: ev.AlertInhibited, attributes: dict[str, AttributeValue], receivers: list[str]
) -> str:
    attributes["tocsin.inhibit_rule"] = fact.rule
    attributes["tocsin.inhibited_by"] = fact.inhibited_by
    return "inhibited"


def _resolve_ignored(
    fact: ev.AlertResolveIgnored, attributes: dict[str, AttributeValue], receivers: list[str]
) -> str:
    if fact.cause is not None:  # a repeated event_id, not a want of an open alert
        attributes["tocsin.suppressed_cause"] = fact.cause
    return "resolve_ignored"


def _rejected(
    fact: ev.AlertRejected, attributes: dict[str, AttributeValue], receivers: list[str]
) -> str:
    attributes["tocsin.rejected_reason"] = fact.code
    if fact.field:
        attributes["tocsin.rejected_field"] = fact.field
    return "rejected"


def _flapping(
    fact: ev.AlertFlapping, attributes: dict[str, AttributeValue], receivers: list[str]
) -> str:
    attributes["tocsin.flapping_changes"] = fact.changes
    return "flapping"


def _beat(
    fact: ev.HeartbeatReceived, attributes: dict[str, AttributeValue], receivers: list[str]
) -> str:
    attributes["tocsin.heartbeat"] = fact.name
    return "heartbeat"


def _note(kind: type[ev.Event]) -> Note | None:
    """What a route span notes of a fact of ``kind``; ``None``: nothing (it adds
    nothing a trace is read for, or the router never decides it)."""
    if issubclass(kind, ev.AlertReceived):
        return handled_by(kind, _received)
    if issubclass(kind, ev.AlertRouted):
        return handled_by(kind, _routed)
    if issubclass(kind, ev.AlertSuppressed):
        return handled_by(kind, _suppressed)
    if issubclass(kind, ev.AlertSilenced):
        return handled_by(kind, _silenced)
    if issubclass(kind, ev.AlertInhibited):
        return handled_by(kind, _inhibited)
    if issubclass(kind, ev.AlertResolveIgnored):
        return handled_by(kind, _resolve_ignored)
    if issubclass(kind, ev.AlertRejected):
        return handled_by(kind, _rejected)
    if issubclass(kind, ev.AlertFlapping):
        return handled_by(kind, _flapping)
    if issubclass(kind, ev.HeartbeatReceived):
        return handled_by(kind, _beat)
    if issubclass(
        kind,
        ev.HeartbeatMissed  # the clock's, never a router's
        | ev.AlertOpened
        | ev.AlertEscalated
        | ev.AlertResolved
        | ev.AlertAcked
        | ev.DeliveryAttemptFailed
        | ev.DeliverySucceeded
        | ev.DeliveryDeadLettered
        | ev.DeliveryRequeued
        | ev.DeliverySuperseded
        | ev.SilenceCreated
        | ev.SilenceDeleted
        | ev.ConfigLoaded
        | ev.StreamBound
        | ev.LogCompacted
        | ev.OutboxPublished
        | ev.GroupOpened
        | ev.AlertGrouped
        | ev.GroupNotified
        | ev.GroupDeferred
        | ev.SilenceExpired
        | ev.InhibitSource
        | ev.InhibitReleased
        | ev.EscalationStarted
        | ev.EscalationFired
        | ev.AlertSettled
        | ev.PartitionSeeded  # written offline, by `tocsin repartition`, never routed
        | ev.AlertMoved,
    ):
        return None
    assert_never(kind)


_NOTES = by_kind(_note)
