"""One trace from the publisher to the receiver (issue #7), on real parts: nats-server,
an HTTP receiver, the SQLite log, and the OpenTelemetry SDK with an in-memory exporter
(or, for export, a real OTLP/HTTP request to a local receiver).

publisher span -> router span (CONSUMER) -> delivery span (CLIENT) -> the webhook
request's ``traceparent``; without a publisher ``traceparent`` the router span starts
the trace, and its id is the ``trace_id`` of the log events and the audit messages.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

import msgspec
import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, SpanKind, StatusCode

from tests import support
from tests.core.test_fold import MINUTE, T0, Run, normalized
from tests.pipeline.test_invariants import alert
from tests.support import (
    HttpSink,
    Rig,
    Subscriber,
    Tocsin,
    publish,
    script,
    wait_until,
    webhook_config,
)
from tocsin import config
from tocsin.bus.publisher import Publisher
from tocsin.core import events as ev
from tocsin.core.fold import fold
from tocsin.observability import tracing
from tocsin.observability.tracing import (
    CurrentSpan,
    Tracing,
    TracingConfigError,
    Unrecorded,
    headers_of,
    otlp_endpoint,
    parent_from,
    route_attributes,
    trace_context_from,
    traceparent_of,
    unrecorded_child,
)
from tocsin.pipeline.router import Router
from tocsin.store.eventlog import LogWriteError

PUBLISHER_TRACE = "0af7651916cd43dd8448eb211c80319c"
PUBLISHER_SPAN = "b7ad6b7169203331"


def event(**fields: Any) -> dict[str, Any]:
    """A critical disk_full event (the support one, more severe)."""
    return support.event(**{"severity": "critical", "summary": "disk 97% full on db1", **fields})


def traced() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def traceparent(span: ReadableSpan) -> str:
    """What OTel's own W3C propagator would send for ``span``."""
    context = span.get_span_context()
    assert context is not None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def hexes(span: ReadableSpan) -> tuple[str, str]:
    """(trace id, span id) of a finished span, as W3C hex."""
    context = span.get_span_context()
    assert context is not None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def parent_hex(span: ReadableSpan) -> str:
    assert span.parent is not None
    return f"{span.parent.span_id:016x}"


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


async def test_a_published_traceparent_is_followed_to_the_webhook_request(
    nats_url: str, sink: HttpSink, data_dir: Path
) -> None:
    provider, exporter = traced()
    audit = await Subscriber().start(nats_url, "alerts.delivered")
    service = await Tocsin(
        data_dir, nats_url, webhook_config(sink.url), tracer_provider=provider
    ).start()
    try:
        await publish(
            nats_url,
            "alerts.in.billing",
            event(),
            headers={
                "traceparent": f"00-{PUBLISHER_TRACE}-{PUBLISHER_SPAN}-01",
                "tracestate": "vendor=opaque",
            },
        )
        await wait_until(lambda: named(exporter, "deliver hook"), what="the delivery span")
        await wait_until(lambda: audit.messages, what="the audit message")
        await wait_until(lambda: service.count("delivery.succeeded") == 1, what="the outcome")
    finally:
        await service.stop()
        await audit.close()

    [route] = named(exporter, "route")
    [deliver] = named(exporter, "deliver hook")
    assert hexes(route)[0] == PUBLISHER_TRACE
    assert parent_hex(route) == PUBLISHER_SPAN
    assert route.kind is SpanKind.CONSUMER
    assert route.parent is not None
    assert route.parent.is_remote
    assert hexes(deliver)[0] == PUBLISHER_TRACE
    assert parent_hex(deliver) == hexes(route)[1]
    assert deliver.kind is SpanKind.CLIENT
    # The receiver's request continues the delivery span, so its own spans join too.
    [request] = sink.requests
    assert request.headers["traceparent"] == f"00-{PUBLISHER_TRACE}-{hexes(deliver)[1]}-01"
    assert request.headers["traceparent"] == traceparent(deliver)
    # The publisher's tracestate travels with the trace.
    for span in (route, deliver):
        assert span.context is not None
        assert span.context.trace_state.get("vendor") == "opaque"

    body = request.json()
    assert route.attributes is not None
    assert route.attributes["tocsin.fingerprint"] == body["fingerprint"]
    assert route.attributes["tocsin.dedup_key"] == body["dedup_key"]
    assert route.attributes["tocsin.severity"] == "critical"
    assert route.attributes["tocsin.outcome"] == "routed"
    assert list(route.attributes["tocsin.receivers"]) == ["hook"]  # type: ignore[arg-type]
    assert route.attributes["messaging.destination.name"] == "alerts.in.billing"
    assert deliver.attributes is not None
    assert deliver.attributes["tocsin.receiver"] == "hook"
    assert deliver.attributes["tocsin.channel"] == "webhook"
    assert deliver.attributes["tocsin.notification_id"] == body["notification_id"]
    assert deliver.attributes["tocsin.attempt"] == 1
    assert deliver.attributes["tocsin.outcome"] == "delivered"
    assert deliver.attributes["http.response.status_code"] == 200
    assert deliver.status.status_code is not StatusCode.ERROR
    assert route.start_time is not None
    assert deliver.start_time is not None
    assert route.start_time <= deliver.start_time

    # Log events and audit messages name the same trace.
    logged = [e for kind in ("alert.received", "alert.routed") for e in service.events(kind)]
    logged += service.events("delivery.succeeded")
    assert {e["trace_id"] for e in logged} == {PUBLISHER_TRACE}
    assert audit.json()[0]["trace_id"] == PUBLISHER_TRACE


async def test_without_traceparent_the_router_starts_the_trace_the_log_records(
    nats_url: str, sink: HttpSink, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Every message is traced: the router span is a root, its trace id is the one in
    the log events, the audit messages and the receiver's ``traceparent``. A retried
    send is a second delivery span in the same trace; a rejection is a failed span."""
    provider, exporter = traced()
    sink.responder = script(503, 200)
    audit = await Subscriber().start(nats_url, "alerts.delivered")
    service = await Tocsin(
        data_dir, nats_url, webhook_config(sink.url), tracer_provider=provider
    ).start()
    caplog.set_level(logging.INFO, logger="tocsin")
    try:
        await publish(nats_url, "alerts.in.db", event())
        await publish(nats_url, "alerts.in.db", b"{not json")
        await wait_until(lambda: len(named(exporter, "deliver hook")) == 2, what="two sends")
        await wait_until(lambda: audit.messages, what="the audit message")
        await wait_until(lambda: service.count("alert.rejected") == 1, what="the rejection")
    finally:
        await service.stop()
        await audit.close()

    routes = named(exporter, "route")
    [routed] = [s for s in routes if s.attributes and s.attributes["tocsin.outcome"] == "routed"]
    [rejected] = [
        s for s in routes if s.attributes and s.attributes["tocsin.outcome"] == "rejected"
    ]
    trace_id, route_span = hexes(routed)
    assert routed.parent is None
    [received] = service.events("alert.received")
    assert received["trace_id"] == trace_id
    assert {e["trace_id"] for e in service.events("alert.routed")} == {trace_id}
    assert audit.json()[0]["trace_id"] == trace_id

    first, second = sorted(named(exporter, "deliver hook"), key=lambda s: s.start_time or 0)
    for attempt, span in enumerate((first, second), start=1):
        assert hexes(span)[0] == trace_id
        assert parent_hex(span) == route_span
        assert span.attributes is not None
        assert span.attributes["tocsin.attempt"] == attempt
    assert first.attributes is not None
    assert first.attributes["tocsin.outcome"] == "retry"
    assert first.attributes["http.response.status_code"] == 503
    assert first.status.status_code is StatusCode.ERROR
    assert second.attributes is not None
    assert second.attributes["tocsin.outcome"] == "delivered"
    assert [r.headers["traceparent"] for r in sink.requests] == [
        traceparent(span) for span in (first, second)
    ]

    # The rejection: its own trace, recorded on the log event and the log line.
    assert rejected.parent is None
    assert rejected.status.status_code is StatusCode.ERROR
    assert rejected.attributes is not None
    assert rejected.attributes["tocsin.rejected_reason"] == "invalid_json"
    [logged_rejection] = service.events("alert.rejected")
    assert logged_rejection["trace_id"] == hexes(rejected)[0]
    [line] = [r for r in caplog.records if r.getMessage().startswith("rejected message")]
    assert line.__dict__["trace_id"] == hexes(rejected)[0]


async def test_spans_leave_over_otlp_when_the_endpoint_is_set(
    nats_url: str, sink: HttpSink, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The standard variable alone turns export on: the batch processor posts OTLP/HTTP
    protobuf to ``<endpoint>/v1/traces`` (flushed at the latest when the service stops)."""
    collector = HttpSink()
    await collector.start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{collector.port}")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "tocsin-under-test")
    service = await Tocsin(data_dir, nats_url, webhook_config(sink.url)).start()
    try:
        await publish(
            nats_url,
            "alerts.in.db",
            event(),
            headers={"traceparent": f"00-{PUBLISHER_TRACE}-{PUBLISHER_SPAN}-01"},
        )
        await wait_until(lambda: service.count("delivery.succeeded") == 1, what="the delivery")
    finally:
        await service.stop()
        await collector.stop()

    spans: dict[str, Any] = {}
    services: set[str] = set()
    for request in collector.requests:
        assert request.path == "/v1/traces"
        assert request.headers["content-type"] == "application/x-protobuf"
        export = ExportTraceServiceRequest.FromString(request.body)
        for resource_spans in export.resource_spans:
            for attribute in resource_spans.resource.attributes:
                if attribute.key == "service.name":
                    services.add(attribute.value.string_value)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans[span.name] = span
    assert services == {"tocsin-under-test"}
    assert {"route", "deliver hook"} <= set(spans)
    assert spans["route"].trace_id.hex() == PUBLISHER_TRACE
    assert spans["route"].parent_span_id.hex() == PUBLISHER_SPAN
    assert spans["deliver hook"].trace_id.hex() == PUBLISHER_TRACE
    assert spans["deliver hook"].parent_span_id == spans["route"].span_id
    traceparent = sink.requests[0].headers["traceparent"]
    assert traceparent == f"00-{PUBLISHER_TRACE}-{spans['deliver hook'].span_id.hex()}-01"


async def test_a_redelivery_and_a_failed_commit_keep_the_logged_trace(rig: Rig) -> None:
    """A batch whose commit fails ends its spans in error, and the retry's trace is the
    one logged; a redelivery of a logged message is traced in the trace it logged."""
    provider, exporter = traced()
    rig.router = Router(
        rig.nc,
        Publisher(rig.nc),
        rig.ledger,
        config.load(None, {}),
        tracing=Tracing(provider),
    )
    await rig.js.publish("alerts.in.svc", alert())
    msgs = await rig.take(1)
    blocker = sqlite3.connect(rig.ledger.path)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(LogWriteError):
            await rig.router.handle(msgs)
    finally:
        blocker.rollback()
        blocker.close()
    [failed] = named(exporter, "route")
    assert failed.status.status_code is StatusCode.ERROR
    # It was decided, never committed: the trace says where it stopped.
    assert [e.name for e in failed.events] == ["decided", "exception"]

    await rig.router.handle(msgs)  # the retry commits
    await rig.router.handle(msgs)  # and the same message again, as after a lost ack
    _, committed, redelivered = named(exporter, "route")
    logged = {e.trace_id for e in rig.ledger.state.alerts.values()}
    assert logged == {hexes(committed)[0]}
    assert hexes(failed)[0] != hexes(committed)[0]  # its facts were never logged
    assert hexes(redelivered)[0] == hexes(committed)[0]
    assert [e.name for e in committed.events] == ["decided", "committed", "published"]
    assert redelivered.attributes is not None
    assert redelivered.attributes["tocsin.outcome"] == "redelivered"


def test_traceparent_parsing_follows_w3c() -> None:
    ok = parent_from({"traceparent": f"00-{PUBLISHER_TRACE}-{PUBLISHER_SPAN}-01"})
    assert ok is not None
    assert ok.is_remote
    assert ok.trace_flags.sampled
    assert f"{ok.trace_id:032x}" == PUBLISHER_TRACE
    unsampled = parent_from({"Traceparent": f"00-{PUBLISHER_TRACE}-{PUBLISHER_SPAN}-00"})
    assert unsampled is not None
    assert not unsampled.trace_flags.sampled
    future = parent_from({"traceparent": f"01-{PUBLISHER_TRACE}-{PUBLISHER_SPAN}-01-extra"})
    assert future is not None
    for bad in (
        f"ff-{PUBLISHER_TRACE}-{PUBLISHER_SPAN}-01",
        f"00-{PUBLISHER_TRACE}-{PUBLISHER_SPAN}-01-extra",
        f"00-{'0' * 32}-{PUBLISHER_SPAN}-01",
        f"00-{PUBLISHER_TRACE}-{'0' * 16}-01",
        f"00-{PUBLISHER_TRACE[:-1]}-{PUBLISHER_SPAN}-01",
        "garbage",
        "",
    ):
        assert parent_from({"traceparent": bad}) is None, bad
    assert parent_from(None) is None
    assert parent_from({}) is None


async def test_without_an_exporter_every_message_is_still_traced_to_the_receiver(
    nats_url: str, sink: HttpSink, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No exporter: the router keeps no span object per message (``Unrecorded``, issue
    #20), yet every message is traced (DESIGN.md section 10). Catches the cheap path
    losing the trace: the log's ``trace_id`` must be the one the receiver's
    ``traceparent`` continues, and a rejection's log line must name its trace and a
    span."""
    service = await Tocsin(data_dir, nats_url, webhook_config(sink.url)).start()
    caplog.set_level(logging.INFO, logger="tocsin")
    try:
        await publish(nats_url, "alerts.in.db", event())
        await publish(nats_url, "alerts.in.db", b"{not json")
        await wait_until(lambda: sink.requests, what="the webhook call")
        await wait_until(lambda: service.count("alert.rejected") == 1, what="the rejection")
    finally:
        await service.stop()
    [received] = service.events("alert.received")
    [routed] = service.events("alert.routed")
    version, trace_id, span_id, flags = sink.requests[0].headers["traceparent"].split("-")
    assert (version, flags, len(trace_id), len(span_id)) == ("00", "01", 32, 16)
    assert received["trace_id"] == routed["trace_id"] == trace_id
    [rejected] = service.events("alert.rejected")
    [line] = [r for r in caplog.records if r.getMessage().startswith("rejected message")]
    assert line.__dict__["trace_id"] == rejected["trace_id"] != trace_id
    assert len(line.__dict__["span_id"]) == 16


def test_an_unrecorded_route_span_carries_what_a_non_recording_span_would() -> None:
    """``Unrecorded`` stands in for the ``NonRecordingSpan`` the router made per message
    when nothing records spans. Catches a work item's ``traceparent`` leaving the
    publisher's trace, its sampled flag or its ``tracestate``, or naming a span other
    than the one a log line about the message names."""
    parent = parent_from(
        {
            "traceparent": f"00-{PUBLISHER_TRACE}-{PUBLISHER_SPAN}-00",
            "tracestate": "vendor=opaque",
        }
    )
    assert parent is not None
    for given in (parent, None):
        trace = Unrecorded(given)
        ours, theirs = trace.headers(), headers_of(Tracing().start("route", given))
        assert trace.headers() is ours  # one span: every work item of the message names it
        version, trace_id, span_id, flags = ours["traceparent"].split("-")
        their_version, their_trace, _, their_flags = theirs["traceparent"].split("-")
        assert (version, flags) == (their_version, their_flags)
        assert (trace_id, span_id) == (trace.trace_id, trace.span_id)
        assert ours.get("tracestate") == theirs.get("tracestate")
        if given is not None:
            assert trace_id == their_trace == PUBLISHER_TRACE
            assert (flags, ours["tracestate"]) == ("00", "vendor=opaque")
        else:
            assert (len(trace_id), flags) == (32, "01")
            assert int(trace_id, 16)
    assert Unrecorded(None).trace_id != Unrecorded(None).trace_id


def test_an_unrecorded_delivery_span_is_the_one_the_general_path_makes() -> None:
    """``unrecorded_child`` stands in for ``Tracing().start`` under ``parent_from`` and
    ``traceparent_of`` when nothing records spans (issue #20: one per notification).
    Catches the receiver's ``traceparent`` leaving the publisher's trace, losing its
    sampled flag, or naming a span other than the one ``CurrentSpan`` makes current
    (the one log lines name); and a header the general parse reads otherwise (a
    ``tracestate``, upper case, another version, zero ids, a bad length) taken by the
    quick path instead of left to the general one."""
    for flags in ("01", "00"):
        headers = {"traceparent": f"00-{PUBLISHER_TRACE}-{PUBLISHER_SPAN}-{flags}"}
        quick = unrecorded_child(headers)
        assert quick is not None
        span, traceparent = quick
        general = Tracing().start("deliver hook", parent_from(headers), SpanKind.CLIENT)
        ours, theirs = span.get_span_context(), general.get_span_context()
        assert (ours.trace_id, ours.trace_flags, ours.is_remote, ours.trace_state) == (
            theirs.trace_id,
            theirs.trace_flags,
            theirs.is_remote,
            theirs.trace_state,
        )
        assert not span.is_recording()
        assert traceparent == traceparent_of(span)
        assert traceparent.startswith(f"00-{PUBLISHER_TRACE}-")
        assert traceparent.endswith(f"-{flags}")
        assert traceparent.split("-")[2] != PUBLISHER_SPAN  # a child, not the parent
        with CurrentSpan(span):
            assert trace.get_current_span() is span
        assert trace.get_current_span() is not span
    headers = {"traceparent": f"00-{PUBLISHER_TRACE}-{PUBLISHER_SPAN}-01"}
    first, second = unrecorded_child(headers), unrecorded_child(headers)
    assert first is not None
    assert second is not None
    assert first[1] != second[1]  # a span id of its own each
    plain = f"00-{PUBLISHER_TRACE}-{PUBLISHER_SPAN}-01"
    for general_only in (
        {"traceparent": plain, "tracestate": "vendor=opaque"},
        {"traceparent": plain, "Tracestate": "vendor=opaque"},
        {"Traceparent": plain},
        {"traceparent": plain.upper()},
        {"traceparent": f" {plain}"},
        {"traceparent": f"01-{PUBLISHER_TRACE}-{PUBLISHER_SPAN}-01-extra"},
        {"traceparent": f"00-{'0' * 32}-{PUBLISHER_SPAN}-01"},
        {"traceparent": f"00-{PUBLISHER_TRACE}-{'0' * 16}-01"},
        {"traceparent": f"00-{PUBLISHER_TRACE[:-1]}-{PUBLISHER_SPAN}-01"},
        {"traceparent": plain + "-"},
        {},
        None,
    ):
        assert unrecorded_child(general_only) is None, general_only


def test_an_unrecorded_delivery_spans_context_is_made_only_when_asked_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The quick path's span makes its ``SpanContext`` the first time something asks
    (a log line, an error), not with every notification (issue #20: ~1 us of the ~2 it
    cost). Catches it being made up front again, made anew at each ask (log lines of
    one send naming different contexts), or naming other ids than the ``traceparent``
    the receiver was sent."""
    made: list[int] = []

    class Counted(SpanContext):
        def __new__(cls, *args: Any, **kwargs: Any) -> Counted:
            made.append(1)
            return super().__new__(cls, *args, **kwargs)

    monkeypatch.setattr(tracing, "SpanContext", Counted)
    quick = unrecorded_child({"traceparent": f"00-{PUBLISHER_TRACE}-{PUBLISHER_SPAN}-01"})
    assert quick is not None
    span, traceparent = quick
    assert made == []
    context = span.get_span_context()
    assert span.get_span_context() is context
    assert made == [1]
    assert traceparent == traceparent_of(span)
    assert repr(span) == f"NonRecordingSpan({context!r})"


def test_otlp_export_is_chosen_by_the_standard_variables() -> None:
    assert otlp_endpoint({}) is None
    base = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318/"}
    assert otlp_endpoint(base) == "http://127.0.0.1:4318/v1/traces"
    specific = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:9/custom"}
    assert otlp_endpoint({**base, **specific}) == "http://127.0.0.1:9/custom"
    assert otlp_endpoint({**base, "OTEL_TRACES_EXPORTER": "none"}) is None
    assert otlp_endpoint({**base, "OTEL_SDK_DISABLED": "true"}) is None
    with pytest.raises(TracingConfigError, match="http/protobuf"):
        otlp_endpoint({**base, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})


def test_http_ingest_carries_the_callers_trace_context_or_starts_one() -> None:
    given = {
        "traceparent": f"00-{PUBLISHER_TRACE}-{PUBLISHER_SPAN}-01",
        "tracestate": "vendor=abc",
    }
    assert trace_context_from(given) == given
    started = trace_context_from({"traceparent": "00-" + "0" * 32 + "-" + "1" * 16 + "-01"})
    assert set(started) == {"traceparent"}
    version, trace_id, span_id, flags = started["traceparent"].split("-")
    assert (version, flags, len(trace_id), len(span_id)) == ("00", "01", 32, 16)
    assert trace_id != "0" * 32


SUBJECT = "alerts.in.db"


def silenced_run() -> Run:
    """triage + fold (tests/core/test_fold: critical to pager, all to hook), with a
    silence of host db2 for the first hour."""
    run = Run()
    silence = ev.SilenceCreated(
        silence_id="s1",
        matchers={"labels": {"host": "db2"}},
        starts_at=T0,
        ends_at=T0 + 60 * MINUTE,
        created_by="ann",
        created_at=T0,
    )
    run.log.append((1, T0, silence))
    fold(run.state, 1, T0, silence)
    return run


def test_a_silenced_alerts_route_span_says_silenced() -> None:
    run = silenced_run()
    facts = run.feed(normalized(0, host="db2"))
    assert [ev.kind_of(f) for f in facts][-1] == "alert.silenced"
    attributes = route_attributes(SUBJECT, facts)
    assert attributes["tocsin.outcome"] == "silenced"
    assert "tocsin.receivers" not in attributes
    assert attributes["tocsin.fingerprint"] == facts[0].fingerprint  # type: ignore[union-attr]


def test_a_route_span_says_what_became_of_each_message() -> None:
    run = silenced_run()

    def outcome(facts: list[ev.Event]) -> object:
        return route_attributes(SUBJECT, facts)["tocsin.outcome"]

    opened = run.feed(normalized(0))
    routed = route_attributes(SUBJECT, opened)
    assert (routed["tocsin.outcome"], routed["tocsin.reason"]) == ("routed", "firing")
    assert routed["tocsin.receivers"] == ["hook"]
    assert routed["tocsin.alert_id"] == opened[0].alert_id  # type: ignore[union-attr]
    assert outcome(opened[:2]) == "unrouted"  # received and opened, no route taken
    duplicate = route_attributes(SUBJECT, run.feed(normalized(1)))
    assert duplicate["tocsin.outcome"] == "suppressed"
    assert duplicate["tocsin.suppressed_cause"] == "duplicate"
    ignored = route_attributes(SUBJECT, run.feed(normalized(2, status="resolved", host="db9")))
    assert ignored["tocsin.outcome"] == "resolve_ignored"
    assert "tocsin.suppressed_cause" not in ignored  # no open alert: no cause to give
    again = msgspec.structs.replace(normalized(2, status="resolved"), event_id="r1")
    run.feed(again)
    repeated = route_attributes(SUBJECT, run.feed(again))  # issue #16 item 14
    assert (repeated["tocsin.outcome"], repeated["tocsin.suppressed_cause"]) == (
        "resolve_ignored",
        "duplicate_event",
    )
    assert outcome(run.feed(normalized(3, host="db2"))) == "silenced"
    rejected = ev.AlertRejected(
        code="invalid_field",
        reason="severity: not one of critical, error, warning, info",
        field="severity",
        subject=SUBJECT,
        received_at=T0,
        raw="{}",
        raw_encoding="utf-8",
    )
    assert route_attributes(SUBJECT, [rejected]) == {
        "messaging.destination.name": SUBJECT,
        "tocsin.rejected_reason": "invalid_field",
        "tocsin.rejected_field": "severity",
        "tocsin.outcome": "rejected",
    }
