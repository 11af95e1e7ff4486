"""Hostile input (issue #9): arbitrary bytes, arbitrary JSON and near-valid events.

The bulk is property-based on the pure ingest path, and whatever it accepts is carried
on through triage, the log's encoding, the work item and every channel's rendering.
A smaller seeded run goes through a real ``tocsin serve`` over NATS (and HTTP ingest).

Never an exception; exactly one outcome per payload (accepted, or rejected with a code,
a status, a short reason and at most a field); a rejection is stored compactly; memory
stays bounded.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import itertools
import json
import random
import sqlite3
import tracemalloc
from pathlib import Path
from typing import Any

import httpx
import msgspec
import nats
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from tests import hostile
from tests.support import HttpSink, Serve, log_count, wait_until, webhook_config
from tocsin.channels import ChannelEnv, compile_templates, discord, opsgenie, pagerduty, slack
from tocsin.channels import email as email_channel
from tocsin.channels import file as file_channel
from tocsin.channels.teams import TeamsChannel, TeamsConfig
from tocsin.core import contracts as c
from tocsin.core import events as ev
from tocsin.core import ingest
from tocsin.core.contracts import WorkItem
from tocsin.core.decide.route import Route, RoutingTable
from tocsin.core.decide.triage import triage
from tocsin.core.fold import fold
from tocsin.core.outbound import messages_for
from tocsin.core.state import State
from tocsin.core.subjects import REJECTED, STREAM_OUT
from tocsin.store.eventlog import db_path

RECEIVED_AT = 1_795_000_000_000_000  # 2026-11-18, fixed so every run decides alike
STATUS = {"payload_too_large": 413, "invalid_json": 400, "not_an_object": 400}
STATUS["invalid_field"] = 422
DASHBOARD = "http://127.0.0.1:8080"
ENV = ChannelEnv(version="test", dashboard_url=DASHBOARD)
TEMPLATES = compile_templates(None)
FILE_TEMPLATES = compile_templates(None, {"title": file_channel.DEFAULT_TITLE})
TEAMS = TeamsChannel("teams", TeamsConfig(channel="teams", url=f"{DASHBOARD}/teams"), ENV)
ROUTING = RoutingTable.compile([Route(receivers=["r"])])
# The email headers tocsin writes; anything else in a parsed message was injected.
EMAIL_HEADERS = {"from", "to", "subject", "x-tocsin-notification-id"}
EMAIL_HEADERS |= {"content-type", "mime-version"}

SETTINGS = settings(
    max_examples=400,
    deadline=None,  # a shared 2-core machine: time per example varies a lot
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

ids = (f"id{n}" for n in itertools.count())


def outcome(payload: bytes) -> ingest.Normalized | ingest.Rejection:
    """Parse ``payload`` and check everything that follows from its one outcome."""
    result = ingest.parse(payload, default_source="fuzz", received_at=RECEIVED_AT)
    if isinstance(result, ingest.Rejection):
        check_rejection(payload, result)
    else:
        assert isinstance(result, ingest.Normalized)
        check_accepted(result)
    return result


def check_rejection(payload: bytes, rejection: ingest.Rejection) -> None:
    assert rejection.http_status == STATUS[rejection.code]
    assert rejection.message
    assert len(rejection.message) <= 400, "a reason must not echo the payload"
    assert rejection.field is None or 0 < len(rejection.field) <= 80
    if len(payload) > c.MAX_PAYLOAD_BYTES:
        assert rejection.code == "payload_too_large"
    # What the router logs and publishes for it: compact, whatever the payload.
    raw, encoding = ingest.capped_raw(payload)
    stored = raw.encode() if encoding == "utf-8" else msgspec.json.decode(f'"{raw}"'.encode())
    assert len(stored) <= c.MAX_RAW_BYTES or encoding == "base64"
    fact = ev.AlertRejected(
        code=rejection.code,
        reason=rejection.message,
        field=rejection.field,
        subject="alerts.in.fuzz",
        received_at=RECEIVED_AT,
        raw=raw,
        raw_encoding=encoding,
    )
    row = ev.encode(fact)
    assert ev.decode(row) == fact
    assert len(row) <= 2 * c.MAX_RAW_BYTES + 600
    [published] = messages_for(State(), 1, fact, 7)
    assert published.msg_id == "rejected:7"
    assert len(published.payload) <= 2 * c.MAX_RAW_BYTES + 600


def check_accepted(event: ingest.Normalized) -> None:
    assert 1 <= len(event.summary) <= c.MAX_SUMMARY_CHARS
    assert len(event.labels) <= c.MAX_LABELS
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in event.labels.items())
    assert len(event.details) <= c.MAX_DETAILS_KEYS
    assert len(msgspec.json.encode(event.details)) <= c.MAX_DETAILS_BYTES + 32
    assert 1 <= len(event.fingerprint) <= c.MAX_FINGERPRINT_CHARS
    # The router's next steps, pure: triage, the log row, the fold, the work item.
    state = State()
    facts = triage(
        state,
        event,
        subject="alerts.in.fuzz",
        received_at=RECEIVED_AT,
        routing=ROUTING,
        window_seconds=600,
        new_id=lambda: next(ids),
        trace_id=None,
    )
    for seq, fact in enumerate(facts, 1):
        assert ev.decode(ev.encode(fact)) == fact
        fold(state, seq, RECEIVED_AT, fact)
    items = [m for seq, f in enumerate(facts, 1) for m in messages_for(state, seq, f, 1)]
    for item in items:
        render_everywhere(msgspec.json.decode(item.payload, type=WorkItem).notification)


def render_everywhere(notification: Any) -> None:
    """Every built-in channel's rendering of ``notification``: none may raise, and the
    email's headers stay the ones tocsin wrote."""
    slack.payload(notification, TEMPLATES, DASHBOARD)
    discord.payload(notification, TEMPLATES, DASHBOARD)
    TEAMS.render(notification)
    pagerduty.event_body(notification, "k" * 32, TEMPLATES, DASHBOARD)
    opsgenie.create_body(notification, TEMPLATES, DASHBOARD)
    opsgenie.close_url("http://127.0.0.1:1", notification)
    line = file_channel.json_line(notification, "2026-11-23T12:00:00.000000Z")
    assert line.count(b"\n") == 1
    text = file_channel.FileChannel.line(file_line, notification, "t")  # type: ignore[arg-type]
    assert len(text.decode().splitlines()) == 1
    message = email_channel.render(notification, "t@example.org", ["o@example.org"], TEMPLATES)
    parsed = email.message_from_bytes(message.as_bytes(), policy=email.policy.default)
    assert {name.lower() for name in parsed} <= EMAIL_HEADERS
    assert "\n" not in str(parsed["Subject"])


class _FileLine:
    """Just enough of a ``FileChannel`` for its pure ``line`` (text format)."""

    _format = "text"
    _templates = FILE_TEMPLATES
    _dashboard_url = DASHBOARD


file_line = _FileLine()


# -- strategies ----------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=40,
)
hostile_text = st.text(
    st.characters(codec="utf-8", categories=["Cc", "Cf", "Zl", "Zp", "Zs", "Lo", "So", "Po"])
)
field_values = st.one_of(
    st.sampled_from(hostile.FRAGMENTS),
    hostile_text.map(lambda t: json.dumps(t).encode()),
    hostile_text.map(lambda t: json.dumps(t, ensure_ascii=False).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=40).map(lambda b: b'"' + b + b'"'),
)
# Text an attacker would choose for fields that are accepted as they are.
INJECTIONS = [
    "{{ 7 * 7 }}",
    "{% for x in range(9) %}X{% endfor %}",
    "{{ ''.__class__.__mro__ }}",
    "\r\nBcc: victim@example.org\r\n",
    "\r\n\r\n<html>",
    "<script>alert(1)</script>",
    "<!channel> @here <@U123> [link](http://evil) ||spoiler||",
    "=?utf-8?b?SGVsbG8=?=",
    "=?utf-8?q?x=0D=0ABcc:_victim@evil.example=0D=0A?=",  # decoded: a header line
    "\x00\x1b[31m\u2028\u202e\ufeff",
]
hostile_strings = (
    st.lists(st.sampled_from(INJECTIONS) | hostile_text, min_size=1, max_size=6)
    .map("".join)
    .filter(bool)
)
accepted_shape = st.fixed_dictionaries(
    {
        "type": st.just("disk_full"),
        "severity": st.sampled_from(["critical", "WARN", "sev3", "Error"]),
        "summary": hostile_strings | st.text(min_size=300, max_size=600),
        "source": hostile_strings.filter(lambda t: len(t) <= 255),
        # Label names have a grammar (they are identity, and Alertmanager's); their
        # values take any text up to 1024 characters.
        "labels": st.dictionaries(
            st.from_regex(c.LABEL_NAME_PATTERN, fullmatch=True),
            (hostile_strings | st.text(max_size=1024)).filter(
                lambda t: len(t) <= c.MAX_LABEL_VALUE_CHARS
            ),
            max_size=32,
        ),
        "details": st.dictionaries(hostile_strings, json_values | hostile_strings, max_size=25),
    },
    optional={"status": st.sampled_from(["firing", "resolved"])},
).map(lambda event: json.dumps(event, ensure_ascii=False).encode())
near_valid = st.dictionaries(st.sampled_from(hostile.FIELDS), field_values, max_size=5).map(
    hostile.near_valid
)


@SETTINGS
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_get_exactly_one_outcome(payload: bytes) -> None:
    outcome(payload)


@SETTINGS
@given(json_values)
def test_arbitrary_json_is_an_object_or_rejected_as_not_one(value: Any) -> None:
    result = outcome(json.dumps(value).encode())
    if isinstance(value, dict):
        assert not isinstance(result, ingest.Rejection) or result.code == "invalid_field"
    else:
        assert isinstance(result, ingest.Rejection)
        assert result.code == "not_an_object"


@settings(SETTINGS, max_examples=1200)
@given(near_valid)
def test_near_valid_events_get_exactly_one_outcome(payload: bytes) -> None:
    outcome(payload)


@settings(SETTINGS, max_examples=300)
@given(accepted_shape)
def test_hostile_text_in_valid_fields_is_accepted_and_renders_everywhere(payload: bytes) -> None:
    """Templates, CRLF, HTML, mentions, control characters and long strings in fields
    that take any text: accepted, then triaged, logged and rendered by every channel."""
    result = outcome(payload)
    if len(payload) <= c.MAX_PAYLOAD_BYTES:
        assert isinstance(result, ingest.Normalized), result


@SETTINGS
@given(st.sampled_from(hostile.FIELDS), st.sampled_from(hostile.FRAGMENTS))
def test_every_hostile_fragment_in_every_field(field: str, fragment: bytes) -> None:
    outcome(hostile.near_valid({field: fragment}))


def test_whole_payloads_and_the_64_kib_edge() -> None:
    for payload in hostile.WHOLE:
        outcome(payload)
    below, at, above = (outcome(hostile.padded(size)) for size in hostile.SIZES)
    assert isinstance(below, ingest.Normalized)
    assert isinstance(at, ingest.Normalized)
    assert isinstance(above, ingest.Rejection)
    assert above.code == "payload_too_large"


def test_deep_nesting_is_rejected_or_cut_never_raised() -> None:
    """Nesting deeper than the interpreter's recursion limit used to escape as a
    RecursionError: in the router, a message that kills it at every redelivery."""
    for depth in (100, 990, 1000, 5000, 30_000):
        deep = hostile.nested(depth)
        in_details = outcome(hostile.near_valid({"details": b'{"a":' + deep + b"}"}))
        in_unknown = outcome(hostile.near_valid({"extra": deep}))
        as_whole = outcome(hostile.nested_objects(depth))
        for result in (in_details, in_unknown, as_whole):
            assert isinstance(result, ingest.Normalized | ingest.Rejection)
        if isinstance(in_details, ingest.Normalized):
            assert in_details.details.get("_truncated") is (depth > c.MAX_DETAILS_DEPTH)


def test_a_number_out_of_range_names_its_field() -> None:
    """A JSON object is never called "not an object": a number msgspec cannot hold is a
    field's fault (422 naming it), as any other bad value."""
    for field, fragment in [("details", b'{"n":1e400}'), ("summary", b"1e400")]:
        result = outcome(hostile.near_valid({field: fragment}))
        assert isinstance(result, ingest.Rejection)
        assert (result.code, result.field, result.http_status) == ("invalid_field", field, 422)


def test_memory_stays_bounded_over_thousands_of_large_payloads() -> None:
    """3,000 hostile payloads of up to 64 KiB: what parsing keeps afterwards is
    bounded (nothing accumulates per message)."""
    rng = random.Random(9)
    payloads = [hostile.seeded(rng) for _ in range(300)]
    for payload in payloads:  # warm every cache first
        ingest.parse(payload, default_source="fuzz", received_at=RECEIVED_AT)
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for _ in range(10):
            for payload in payloads:
                ingest.parse(payload, default_source="fuzz", received_at=RECEIVED_AT)
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - before < 256 * 1024, f"{after - before} bytes kept after 3,000 parses"
    assert peak - before < 16 * 1024 * 1024, f"peak {peak - before} bytes for one parse"


# -- the same through a real service ---------------------------------------------------

SERVICE_MESSAGES = 400


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def deeply_nested(payload: bytes) -> bool:
    """Near the recursion limit, decoding depends on the caller's stack depth: the
    router may refuse as "nested too deeply" what this test's shallower stack decodes."""
    return payload.count(b"[") + payload.count(b"{") > 900


async def test_hostile_messages_through_a_real_service(
    nats_url: str, sink: HttpSink, tmp_path: Path
) -> None:
    """A seeded mix of hostile payloads published to ``tocsin serve``: each inbound
    message gets exactly one outcome in the log, the one ``ingest.parse`` gives; the
    rejected ones are counted and published; HTTP ingest answers 4xx, never 5xx; the
    service stays ready and its memory bounded."""
    rng = random.Random(2026)
    payloads = [hostile.seeded(rng) for _ in range(SERVICE_MESSAGES - 60)]
    payloads += [json.dumps(hostile.json_value(rng)).encode() for _ in range(40)]
    payloads += [rng.randbytes(rng.randrange(1, 200)) for _ in range(20)]
    config = tmp_path / "tocsin.toml"
    config.write_text(webhook_config(sink.url))
    serve = await Serve(tmp_path / "data", nats_url, config, stderr=tmp_path / "serve.log").start()
    db = db_path(tmp_path / "data")
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    try:
        warm = [await js.publish("alerts.in.fuzz", p, timeout=10) for p in payloads[:40]]
        await wait_until(lambda: outcomes(db) >= len(warm), 60, "the warm-up logged")
        baseline = rss_bytes(serve.pid)
        seqs = {a.seq: p for a, p in zip(warm, payloads, strict=False)}
        for payload in payloads[40:]:
            seqs[(await js.publish("alerts.in.fuzz", payload, timeout=10)).seq] = payload
        await wait_until(lambda: outcomes(db) >= len(payloads), 90, "an outcome per message")
        grown = rss_bytes(serve.pid) - baseline

        logged: dict[int, list[tuple[str, dict[str, Any]]]] = {}
        for in_seq, kind, data in log_rows(db):
            logged.setdefault(in_seq, []).append((kind, data))
        assert sorted(logged) == sorted(seqs), "every message, and only those, has facts"
        for seq, payload in seqs.items():
            kinds = [kind for kind, _ in logged[seq]]
            outcome_kinds = [k for k in kinds if k in ("alert.received", "alert.rejected")]
            assert len(outcome_kinds) == 1, (seq, kinds)
            expected = ingest.parse(payload, default_source="fuzz", received_at=RECEIVED_AT)
            if outcome_kinds[0] == "alert.rejected":
                [(_, data)] = [e for e in logged[seq] if e[0] == "alert.rejected"]
                wanted = getattr(expected, "code", "accepted")
                if data["code"] != wanted:
                    assert deeply_nested(payload), (payload[:200], data["code"], wanted)
                    assert data["reason"] == "payload is nested too deeply to decode"
                assert len(data["raw"]) <= 2 * c.MAX_RAW_BYTES
            else:
                assert isinstance(expected, ingest.Normalized) or deeply_nested(payload)
        rejected = log_count(db, "alert.rejected")
        assert 0 < rejected < len(payloads)

        out = await js.stream_info(STREAM_OUT, subjects_filter=REJECTED)
        assert (out.state.subjects or {}).get(REJECTED) == rejected
        async with httpx.AsyncClient(timeout=10) as client:
            ready = await client.get(f"{serve.api}/readyz")
            assert ready.status_code == 200, ready.text
            metrics = (await client.get(f"{serve.api}/metrics")).text
            answers = {}
            for name, body in HTTP_BODIES.items():
                response = await client.post(
                    f"{serve.api}/api/v1/events",
                    content=body,
                    headers={"Content-Type": "application/json"},
                )
                answers[name] = response.status_code
        counted = sum(
            sample.value
            for family in text_string_to_metric_families(metrics)
            for sample in family.samples
            if sample.name == "tocsin_events_rejected_total"
        )
        assert counted == rejected
        assert answers == {
            "deep": 400,
            "deep in details": 202,
            "huge number": 422,
            "NaN": 400,
            "64 KiB + 1": 413,
            "lone surrogate": 400,
        }
        assert serve.process is not None
        assert serve.process.returncode is None
        assert grown < 40 * 1024 * 1024, f"RSS grew by {grown / 2**20:.1f} MiB"
        print(
            f"\n{len(payloads)} hostile messages: {rejected} rejected, "
            f"{len(payloads) - rejected} accepted; RSS {baseline / 2**20:.1f} MiB after the "
            f"warm-up, {grown / 2**20:+.1f} MiB after the rest"
        )
    finally:
        await nc.close()
        assert await serve.stop() == 0


HTTP_BODIES = {
    "deep": hostile.nested(30_000),
    "deep in details": hostile.near_valid({"details": b'{"a":' + hostile.nested(200) + b"}"}),
    "huge number": hostile.near_valid({"details": b'{"n":1e400}'}),
    "NaN": hostile.near_valid({"summary": b"NaN"}),
    "64 KiB + 1": hostile.padded(c.MAX_PAYLOAD_BYTES + 1),
    "lone surrogate": hostile.near_valid({"summary": b'"\\ud800"'}),
}


def outcomes(db: Path) -> int:
    return log_count(db, "alert.received") + log_count(db, "alert.rejected")


def log_rows(db: Path) -> list[tuple[int, str, dict[str, Any]]]:
    """(in_seq, kind, data) of every fact an inbound message produced."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        rows = conn.execute(
            "SELECT in_seq, kind, data FROM events WHERE in_seq IS NOT NULL ORDER BY seq"
        ).fetchall()
    return [(in_seq, kind, msgspec.json.decode(data)) for in_seq, kind, data in rows]
