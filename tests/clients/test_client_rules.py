"""The client's pure rules, without NATS: what ``emit_alert`` builds is always an event the
service's own ingest (``tocsin.core.ingest.parse``, imported here as a test-only judge)
accepts, whatever the caller passed; the spool's drop order; the threshold gate."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tocsin.core import ingest
from tocsin_client import AlertEmitter, AlertEmitterConfig, ThresholdSignal
from tocsin_client.event import Outbound, build
from tocsin_client.spool import Entry, choose_drops
from tocsin_client.threshold import BREACH, NEAR

NOW = datetime(2026, 11, 18, 9, 30, tzinfo=UTC)
RECEIVED_AT = int(NOW.timestamp()) * 1_000_000 + 60_000_000


class Unprintable:
    """A value JSON cannot hold, with a readable ``str``."""

    def __str__(self) -> str:
        return "<unprintable>"


def accepted(outbound: Outbound) -> ingest.Normalized:
    """The service's verdict on what the client would send; fails the test on a rejection."""
    verdict = ingest.parse(
        outbound.payload,
        default_source=outbound.subject.rsplit(".", 1)[1],
        received_at=RECEIVED_AT,
        msg_id=outbound.event_id,
    )
    assert isinstance(verdict, ingest.Normalized), verdict
    assert verdict.event_id == outbound.event_id
    assert verdict.ignored_fields == ()
    return verdict


def emitted(severity: Any, title: Any, message: Any = None, context: Any = None, **fields: Any):  # type: ignore[no-untyped-def]
    return accepted(build(severity, title, message, context, fields, source="python", now=NOW))


def test_a_plain_call_maps_title_message_and_context() -> None:
    event = emitted("ERROR", "payments down", "card processor returned 502", {"region": "eu"})
    assert (event.severity, event.summary, event.source) == ("error", "payments down", "python")
    assert event.details == {"message": "card processor returned 502", "region": "eu"}
    assert event.type == "payments_down"  # the same title is the same alert
    assert event.timestamp == int(NOW.timestamp()) * 1_000_000  # stamped when emitted


@pytest.mark.parametrize(
    ("given_severity", "expected"),
    [("sev1", "critical"), (" Warn ", "warning"), ("urgent", "info"), (None, "info"), (3, "info")],
)
def test_an_unknown_severity_is_info(given_severity: Any, expected: str) -> None:
    """The wire rejects ``urgent``; the client sends it as info instead of losing it."""
    assert emitted(given_severity, "t").severity == expected


def test_values_json_cannot_hold_become_text_and_naive_datetimes_utc() -> None:
    naive = datetime(2026, 11, 18, 8, 0)
    context = {
        "at": naive,
        "thing": Unprintable(),
        "ratio": math.nan,
        "tags": {"a"},
        "nested": {"deep": [b"raw", (1, 2)]},
        7: "int key",
    }
    event = emitted("info", "t", "m", context, timestamp=naive, ends_at="2026-11-18T12:00:00")
    assert event.details["at"] == "2026-11-18T08:00:00+00:00"
    assert event.details["thing"] == "<unprintable>"
    assert event.details["ratio"] == "nan"
    assert event.details["tags"] == ["a"]
    assert event.details["nested"] == {"deep": ["b'raw'", [1, 2]]}
    assert event.details["7"] == "int key"
    assert event.timestamp == int(naive.replace(tzinfo=UTC).timestamp()) * 1_000_000


def test_what_the_wire_refuses_is_bent_not_sent_as_is() -> None:
    """Each of these alone makes the service reject a raw event (the test with raw
    fields below proves it); through the client each is accepted."""
    fields: dict[str, Any] = {
        "type": "disk full!",
        "labels": {"9lives": 1, "host name": "db 1", "ok": "x" * 2000},
        "fingerprint": "f" * 500,
        "timestamp": "yesterday",
        "status": "RESOLVED",
        "event_id": "",
    }
    event = emitted("info", "x" * 1000, None, None, **fields)
    assert event.type == "disk_full"
    assert event.labels == {"_9lives": "1", "host_name": "db 1", "ok": "x" * 1024}
    assert len(event.fingerprint) == 32
    assert event.timestamp == int(NOW.timestamp()) * 1_000_000  # an unreadable time: now
    assert event.status == "resolved"
    assert event.summary == "x" * 252 + "..."
    raw = {"type": "disk full!", "severity": "info", "summary": "s"}
    assert isinstance(
        ingest.parse(msgspec.json.encode(raw), default_source="x", received_at=RECEIVED_AT),
        ingest.Rejection,
    )


def test_unknown_keywords_and_traceparent() -> None:
    """Keywords the wire does not know go to details (nothing the caller said is lost);
    ``traceparent`` travels as the header, not in the body."""
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    outbound = build(
        "info",
        "t",
        "m",
        {"message": "ctx"},
        {"host": "db1", "traceparent": tp},
        source="billing jobs",
        now=NOW,
    )
    event = accepted(outbound)
    assert event.details == {"message": "m", "context_message": "ctx", "host": "db1"}
    assert outbound.traceparent == tp
    assert outbound.subject == "alerts.in.billing_jobs"
    assert event.source == "billing jobs"


def test_huge_details_stay_under_the_payload_limit() -> None:
    """A context of a megabyte would be rejected whole (64 KiB); the client keeps the
    gist and marks the cut."""
    context = {f"k{i}": ["y" * 600] * 100 for i in range(50)}
    outbound = build("critical", "t", "m", context, {}, source="python", now=NOW)
    assert len(outbound.payload) < 64 * 1024
    event = accepted(outbound)
    assert event.details["_truncated"] is True


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.datetimes(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(
    severity=st.one_of(st.text(), st.none(), st.integers()),
    title=st.one_of(st.text(), st.none(), st.integers()),
    message=json_values,
    context=st.one_of(st.dictionaries(st.text(), json_values, max_size=30), json_values),
    labels=st.dictionaries(st.text(), st.text(), max_size=40),
    kind=st.one_of(st.none(), st.text()),
    fingerprint=st.one_of(st.none(), st.text()),
    timestamp=st.one_of(st.none(), st.text(), st.datetimes(), st.floats()),
)
def test_whatever_the_caller_passes_the_service_accepts(
    severity: Any,
    title: Any,
    message: Any,
    context: Any,
    labels: Any,
    kind: Any,
    fingerprint: Any,
    timestamp: Any,
) -> None:
    """Catches any input the client would turn into an event the service rejects (the
    caller would get True for an alert the router then drops as invalid)."""
    fields = {"labels": labels, "type": kind, "fingerprint": fingerprint, "timestamp": timestamp}
    emitted(severity, title, message, context, **fields)


def entry(n: int, severity: str) -> Entry:
    return Entry(event_id=f"e{n}", severity=severity, subject="alerts.in.x", payload="{}")


def test_the_spool_drops_the_oldest_info_first_and_never_a_critical() -> None:
    entries = [entry(0, "warning"), entry(1, "info"), entry(2, "critical"), entry(3, "info")]
    assert choose_drops(entries, 4) == []
    assert [e.event_id for e in choose_drops(entries, 3)] == ["e1"]
    assert [e.event_id for e in choose_drops(entries, 2)] == ["e1", "e3"]
    assert [e.event_id for e in choose_drops(entries, 1)] == ["e1", "e3", "e0"]
    assert [e.event_id for e in choose_drops(entries, 0)] == ["e1", "e3", "e0"]  # not e2
    criticals = [entry(n, "critical") for n in range(5)]
    assert choose_drops(criticals, 2) == []


def signal(run: str | None = "run-1", entity: str = "acct-7") -> ThresholdSignal:
    return ThresholdSignal(
        metric="exposure", value=95.0, threshold=100.0, run_id=run, entity_id=entity
    )


def test_the_threshold_gate_throttles_caps_per_run_and_can_be_off() -> None:
    now = [1000.0]
    gate = AlertEmitter(
        config=AlertEmitterConfig(max_per_run=3, throttle_seconds=60), clock=lambda: now[0]
    )
    assert gate.allow(NEAR, signal())
    assert not gate.allow(NEAR, signal())  # same kind, same signal, inside the window
    assert gate.allow(BREACH, signal())  # an escalation is not throttled by the near miss
    now[0] += 61
    assert gate.allow(NEAR, signal())  # third of run-1
    now[0] += 61
    assert not gate.allow(NEAR, signal())  # run-1 is at its cap
    assert not gate.allow(NEAR, signal(entity="acct-8"))  # a new signal of run-1 too
    assert gate.allow(NEAR, signal(run="run-2"))
    assert all(gate.allow(NEAR, signal(run=None, entity=f"e{i}")) for i in range(10))
    off = AlertEmitter(config=AlertEmitterConfig(enabled=False))
    assert not off.allow(NEAR, signal())


def test_near_and_breach_of_one_signal_share_one_fingerprint() -> None:
    """So tocsin sees one alert escalated, not two alerts; another entity is another."""
    assert signal().fingerprint == signal(run="run-9").fingerprint
    assert signal().fingerprint != signal(entity="acct-8").fingerprint
