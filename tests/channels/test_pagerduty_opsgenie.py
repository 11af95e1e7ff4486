"""pagerduty and opsgenie: the documented payloads (pure builders), and the channels
against a real HTTP receiver on 127.0.0.1: paths, headers, trigger/resolve and
create/close, which answers are retried, and the secrets kept out of repr and errors.

Payloads are checked against PagerDuty's "Send an Alert Event" and "Events API v2
Overview" pages and Opsgenie's "Alert API" page (URLs in the channel modules)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest

from tests.support import HttpSink, Request, always, free_port, make_notification
from tocsin.channels import Channel, ChannelConfigError, ChannelEnv
from tocsin.channels import opsgenie as og
from tocsin.channels import pagerduty as pd
from tocsin.channels.opsgenie import OpsgenieChannel, OpsgenieConfig
from tocsin.channels.pagerduty import PagerDutyChannel, PagerDutyConfig
from tocsin.channels.templates import Templates
from tocsin.core.contracts import Notification
from tocsin.core.times import Duration
from tocsin.observability.redact import MASK

ROUTING_KEY = "R0UT1NGKEY" + "k" * 22  # 32 characters, like an integration key
API_KEY = "eb243592-faa2-4ba2-a551-1afdf565c889"
DASHBOARD = "http://127.0.0.1:8080"
ENV = ChannelEnv(version="test", dashboard_url=DASHBOARD)
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
# Templates that spell everything out, so exact payloads do not depend on the defaults.
EXPLICIT = {
    "title": "{{ severity }}: {{ summary }}",
    "body": "{{ summary }} ({{ occurrences }}x) {{ alert_url }}",
}


# What this file's notifications differ in from tests.support.make_notification.
NOTIFICATION = {
    "fingerprint": "fp-db1-disk",
    "dedup_key": "fp-db1-disk:2948",
    "labels": {"host": "db1", "component": "postgres"},
    "details": {"used_pct": 95, "mount": "/var"},
    "receiver": "oncall",
}


def notification(**fields: Any) -> Notification:
    return make_notification(**{**NOTIFICATION, **fields})


def resolved(**fields: Any) -> Notification:
    return notification(reason="resolved", status="resolved", **fields)


@dataclass
class RawSink(HttpSink):
    """``HttpSink`` that also keeps each request's undecoded path and query string
    (ASGI ``raw_path``/``query_string``): the sink's ``path`` is percent-decoded."""

    raw: list[tuple[bytes, bytes]] = field(default_factory=list)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.raw.append((scope["raw_path"], scope["query_string"]))
        await super().__call__(scope, receive, send)


@pytest.fixture
async def raw_sink() -> AsyncIterator[RawSink]:
    receiver = RawSink()
    await receiver.start()
    yield receiver
    await receiver.stop()


def pagerduty(url: str, *, timeout: float = 3.0, **config: Any) -> PagerDutyChannel:
    settings = PagerDutyConfig(
        channel="pagerduty", routing_key=ROUTING_KEY, url=url, timeout=Duration(timeout), **config
    )
    return PagerDutyChannel("pd", settings, ENV)


def opsgenie(url: str, *, timeout: float = 3.0, **config: Any) -> OpsgenieChannel:
    settings = OpsgenieConfig(
        channel="opsgenie", api_key=API_KEY, url=url, timeout=Duration(timeout), **config
    )
    return OpsgenieChannel("og", settings, ENV)


def pd_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/v2/enqueue"


def og_url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


# (channel factory, base URL for a port) for the tests both channels must pass.
Factory = Callable[..., Channel]
BOTH: list[Any] = [
    pytest.param(pagerduty, pd_url, id="pagerduty"),
    pytest.param(opsgenie, og_url, id="opsgenie"),
]


# --- PagerDuty: the event body (pure) ----------------------------------------------------


def test_pagerduty_trigger_is_the_documented_alert_event() -> None:
    body = pd.event_body(notification(), ROUTING_KEY, Templates(EXPLICIT), DASHBOARD)
    assert body == {
        "routing_key": ROUTING_KEY,
        "event_action": "trigger",
        "dedup_key": "fp-db1-disk",
        "payload": {
            "summary": "critical: disk full on db1",
            "source": "db",
            "severity": "critical",
            "timestamp": "2026-11-23T12:01:00.000000Z",
            "class": "disk_full",
            "component": "postgres",
            "custom_details": {
                "reason": "firing",
                "alert_id": "a1",
                "notification_id": "n1",
                "occurrences": 3,
                "suppressed_count": 2,
                "first_seen": "2026-11-23T12:00:00.000000Z",
                "labels": {"host": "db1", "component": "postgres"},
                "details": {"used_pct": 95, "mount": "/var"},
            },
        },
        "client": "tocsin",
        "client_url": "http://127.0.0.1:8080/alerts/a1",
        "links": [{"href": "http://127.0.0.1:8080/alerts/a1", "text": "Alert in tocsin"}],
    }


@pytest.mark.parametrize("severity", ["critical", "error", "warning", "info"])
def test_pagerduty_severity_is_its_own_four_level_enum(severity: str) -> None:
    body = pd.event_body(notification(severity=severity), ROUTING_KEY, Templates())
    assert body["payload"]["severity"] == severity
    assert body["payload"]["summary"] == f"[{severity.upper()}] disk full on db1"


@pytest.mark.parametrize("reason", ["firing", "reminder", "escalated"])
def test_pagerduty_firing_reminder_and_escalated_are_triggers(reason: str) -> None:
    body = pd.event_body(notification(reason=reason), ROUTING_KEY, Templates())
    assert (body["event_action"], body["dedup_key"]) == ("trigger", "fp-db1-disk")
    assert body["payload"]["custom_details"]["reason"] == reason


def test_pagerduty_resolve_carries_only_what_the_docs_ask_for() -> None:
    body = pd.event_body(resolved(), ROUTING_KEY, Templates(EXPLICIT), DASHBOARD)
    assert body == {
        "routing_key": ROUTING_KEY,
        "event_action": "resolve",
        "dedup_key": "fp-db1-disk",
    }


def test_pagerduty_summary_is_cut_to_1024_characters_and_group_comes_from_a_label() -> None:
    body = pd.event_body(
        notification(summary="x" * 3000, labels={"group": "prod-datapipe"}),
        ROUTING_KEY,
        Templates({"title": "{{ summary }}"}),
    )
    summary = body["payload"]["summary"]
    assert len(summary) == 1024
    assert summary == "x" * 1021 + "..."
    assert body["payload"]["group"] == "prod-datapipe"
    assert "component" not in body["payload"]


def test_pagerduty_without_a_dashboard_has_no_links() -> None:
    body = pd.event_body(notification(labels={}), ROUTING_KEY, Templates(), None)
    assert "links" not in body
    assert "client_url" not in body
    assert "component" not in body["payload"]
    assert "group" not in body["payload"]


def test_pagerduty_an_empty_title_falls_back_to_the_summary() -> None:
    body = pd.event_body(notification(), ROUTING_KEY, Templates({"title": "  "}))
    assert body["payload"]["summary"] == "disk full on db1"


# --- PagerDuty: the channel against a real receiver ----------------------------------------


async def test_pagerduty_posts_the_event_with_its_headers(sink: HttpSink) -> None:
    sink.responder = always(202)
    channel = pagerduty(pd_url(sink.port), templates=EXPLICIT)
    try:
        result = await channel.send(notification(), traceparent=TRACEPARENT)
    finally:
        await channel.close()
    assert (result.ok, result.status_code) == (True, 202)
    [request] = sink.requests
    assert (request.method, request.path) == ("POST", "/v2/enqueue")
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == "tocsin/test"
    assert request.headers["traceparent"] == TRACEPARENT
    assert "authorization" not in request.headers
    assert request.json() == pd.event_body(
        notification(), ROUTING_KEY, Templates(EXPLICIT), DASHBOARD
    )


async def test_pagerduty_trigger_then_resolve_share_the_dedup_key(sink: HttpSink) -> None:
    sink.responder = always(202)
    channel = pagerduty(pd_url(sink.port))
    try:
        first = await channel.send(notification())
        second = await channel.send(resolved())
    finally:
        await channel.close()
    assert first.ok
    assert second.ok
    trigger, resolve = (request.json() for request in sink.requests)
    assert (trigger["event_action"], resolve["event_action"]) == ("trigger", "resolve")
    assert trigger["dedup_key"] == resolve["dedup_key"] == "fp-db1-disk"
    assert trigger["routing_key"] == resolve["routing_key"] == ROUTING_KEY
    assert "payload" not in resolve
    assert "traceparent" not in sink.requests[0].headers


# --- Opsgenie: the request bodies (pure) -------------------------------------------------


def test_opsgenie_create_is_the_documented_alert() -> None:
    body = og.create_body(notification(), Templates(EXPLICIT), DASHBOARD)
    assert body == {
        "message": "critical: disk full on db1",
        "alias": "fp-db1-disk",
        "description": "disk full on db1 (3x) http://127.0.0.1:8080/alerts/a1",
        "priority": "P1",
        "tags": ["component:postgres", "host:db1"],
        "details": {
            "alert_id": "a1",
            "notification_id": "n1",
            "reason": "firing",
            "type": "disk_full",
            "severity": "critical",
            "fingerprint": "fp-db1-disk",
            "occurrences": "3",
            "suppressed_count": "2",
            "first_seen": "2026-11-23T12:00:00.000000Z",
            "last_seen": "2026-11-23T12:01:00.000000Z",
            "alert_url": "http://127.0.0.1:8080/alerts/a1",
            "component": "postgres",
            "host": "db1",
            "used_pct": "95",
            "mount": "/var",
        },
        "source": "db",
    }


@pytest.mark.parametrize(
    ("severity", "priority"),
    [("critical", "P1"), ("error", "P2"), ("warning", "P3"), ("info", "P5")],
)
def test_opsgenie_priority_from_severity(severity: str, priority: str) -> None:
    assert og.create_body(notification(severity=severity), Templates())["priority"] == priority


def test_opsgenie_oversized_fields_are_cut_to_the_documented_limits() -> None:
    labels = {f"label{i:02d}": "v" * 60 for i in range(32)}
    details = {f"detail{i:02d}": "d" * 500 for i in range(20)}
    body = og.create_body(
        notification(summary="s" * 20000, source="q" * 300, labels=labels, details=details),
        Templates({"title": "{{ summary }}", "body": "{{ summary }}"}),
    )
    assert body["message"] == "s" * 127 + "..."
    assert len(body["description"]) == 15000
    assert body["description"].endswith("s...")
    assert len(body["source"]) == 100
    assert len(body["tags"]) == 20
    assert all(len(tag) <= 50 for tag in body["tags"])
    assert body["tags"][0] == "label00:" + "v" * 39 + "..."
    detail_map = body["details"]
    assert all(isinstance(v, str) for v in detail_map.values())
    assert sum(len(k) + len(v) for k, v in detail_map.items()) <= 8000
    assert detail_map["_truncated"] == "true"
    assert detail_map["alert_id"] == "a1"  # tocsin's own fields go first and stay


def test_opsgenie_labels_do_not_override_tocsins_fields_and_values_are_strings() -> None:
    body = og.create_body(
        notification(labels={"alert_id": "forged"}, details={"nested": {"a": [1, True]}}),
        Templates(),
    )
    assert body["details"]["alert_id"] == "a1"
    assert body["details"]["nested"] == '{"a":[1,true]}'
    assert "_truncated" not in body["details"]
    assert "alert_url" not in body["details"]  # no dashboard given


def test_opsgenie_close_url_encodes_the_alias_as_one_path_segment() -> None:
    url = og.close_url("https://api.eu.opsgenie.com/", resolved(fingerprint="db/1 disk?full%#"))
    assert url == (
        "https://api.eu.opsgenie.com/v2/alerts/db%2F1%20disk%3Ffull%25%23/close"
        "?identifierType=alias"
    )


def test_opsgenie_close_body_is_small() -> None:
    body = og.close_body(resolved(), Templates(EXPLICIT), DASHBOARD)
    assert body == {"source": "db", "note": "Resolved in tocsin: critical: disk full on db1"}


# --- Opsgenie: the channel against a real receiver ---------------------------------------


async def test_opsgenie_creates_the_alert_with_the_geniekey_header(raw_sink: RawSink) -> None:
    raw_sink.responder = always(202)
    channel = opsgenie(og_url(raw_sink.port) + "/", templates=EXPLICIT)
    try:
        result = await channel.send(notification(severity="warning"), traceparent=TRACEPARENT)
    finally:
        await channel.close()
    assert (result.ok, result.status_code) == (True, 202)
    [request] = raw_sink.requests
    assert (request.method, request.path) == ("POST", "/v2/alerts")
    assert raw_sink.raw == [(b"/v2/alerts", b"")]
    assert request.headers["authorization"] == f"GenieKey {API_KEY}"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == "tocsin/test"
    assert request.headers["traceparent"] == TRACEPARENT
    sent = request.json()
    assert sent == og.create_body(notification(severity="warning"), Templates(EXPLICIT), DASHBOARD)
    assert sent["priority"] == "P3"


async def test_opsgenie_resolved_closes_the_alert_by_its_encoded_alias(
    raw_sink: RawSink,
) -> None:
    raw_sink.responder = always(202)
    channel = opsgenie(og_url(raw_sink.port), templates=EXPLICIT)
    try:
        result = await channel.send(resolved(fingerprint="db/1 disk?full%#"))
    finally:
        await channel.close()
    assert (result.ok, result.status_code) == (True, 202)
    [request] = raw_sink.requests
    assert request.method == "POST"
    assert raw_sink.raw == [
        (b"/v2/alerts/db%2F1%20disk%3Ffull%25%23/close", b"identifierType=alias")
    ]
    assert request.headers["authorization"] == f"GenieKey {API_KEY}"
    assert "traceparent" not in request.headers
    assert request.json() == {
        "source": "db",
        "note": "Resolved in tocsin: critical: disk full on db1",
    }


# --- both channels: retry classification, transport failures, secrets --------------------


@pytest.mark.parametrize(("make", "base"), BOTH)
@pytest.mark.parametrize(
    ("status", "headers", "ok", "retryable", "retry_after"),
    [
        pytest.param(202, {}, True, False, None, id="202-ok"),
        pytest.param(429, {"Retry-After": "7"}, False, True, 7.0, id="429-retry-after"),
        pytest.param(500, {}, False, True, None, id="500-retryable"),
        pytest.param(400, {}, False, False, None, id="400-permanent"),
    ],
)
async def test_http_answers_are_classified(
    sink: HttpSink,
    make: Factory,
    base: Callable[[int], str],
    status: int,
    headers: dict[str, str],
    ok: bool,
    retryable: bool,
    retry_after: float | None,
) -> None:
    sink.responder = always(status, headers)
    channel = make(base(sink.port))
    try:
        result = await channel.send(notification())
    finally:
        await channel.close()
    assert len(sink.requests) == 1
    assert (result.ok, result.retryable, result.retry_after) == (ok, retryable, retry_after)
    assert result.status_code == status
    if not ok:
        assert result.error is not None
        assert result.error.startswith(f"HTTP {status}")


@pytest.mark.parametrize(("make", "base"), BOTH)
async def test_a_slow_receiver_times_out_and_is_retryable(
    sink: HttpSink, make: Factory, base: Callable[[int], str]
) -> None:
    sink.responder = always(202)
    sink.delay = 2.0
    channel = make(base(sink.port), timeout=0.3)
    try:
        result = await channel.send(notification())
    finally:
        await channel.close()
    assert (result.ok, result.retryable, result.status_code) == (False, True, None)
    assert result.error is not None
    assert result.error.startswith("timeout")
    assert len(sink.requests) == 1


@pytest.mark.parametrize(("make", "base"), BOTH)
async def test_a_refused_connection_is_retryable(make: Factory, base: Callable[[int], str]) -> None:
    channel = make(base(free_port()))
    try:
        result = await channel.send(notification())
    finally:
        await channel.close()
    assert (result.ok, result.retryable, result.status_code) == (False, True, None)
    assert result.error is not None
    assert result.error.startswith("connection error")


Responder = Callable[[Request, int], tuple[int, dict[str, str], bytes]]


def echo(status: int, padding: int, secret: str) -> Responder:
    """A provider that echoes what it got (the body, then the Authorization header) from
    the secret on, after ``padding`` characters: at 190 the secret straddles the end of
    the 200-character excerpt ``http.post`` keeps. It fails if the secret never came."""

    def respond(request: Request, index: int) -> tuple[int, dict[str, str], bytes]:
        echoed = request.body + request.headers.get("authorization", "").encode()
        start = echoed.index(secret.encode())
        return status, {}, b"x" * padding + echoed[start:]

    return respond


@pytest.mark.parametrize("padding", [0, 190], ids=["whole", "cut-by-the-excerpt"])
@pytest.mark.parametrize(
    ("make", "base", "secret", "status"),
    [
        pytest.param(pagerduty, pd_url, ROUTING_KEY, 400, id="pagerduty"),
        pytest.param(opsgenie, og_url, API_KEY, 401, id="opsgenie"),
    ],
)
async def test_a_secret_echoed_by_the_provider_is_masked_in_the_error(
    sink: HttpSink,
    make: Factory,
    base: Callable[[int], str],
    secret: str,
    status: int,
    padding: int,
) -> None:
    sink.responder = echo(status, padding, secret)
    channel = make(base(sink.port))
    try:
        result = await channel.send(notification())
    finally:
        await channel.close()
    assert (result.ok, result.retryable, result.status_code) == (False, False, status)
    assert result.error is not None
    assert result.error.startswith(f"HTTP {status}: ")
    assert MASK in result.error
    assert secret[:4] not in result.error


async def test_secrets_stay_out_of_repr() -> None:
    pd_config = PagerDutyConfig(channel="pagerduty", routing_key=ROUTING_KEY)
    og_config = OpsgenieConfig(channel="opsgenie", api_key=API_KEY)
    pd_channel = PagerDutyChannel("pd", pd_config, ENV)
    og_channel = OpsgenieChannel("og", og_config, ENV)
    try:
        texts = [repr(pd_config), repr(og_config), repr(pd_channel), repr(og_channel)]
        texts += [str(pd_config.__rich_repr__()), str(og_config.__rich_repr__())]
        assert all(ROUTING_KEY not in text and API_KEY not in text for text in texts)
        assert "events.pagerduty.com" in repr(pd_channel)
        assert "api.opsgenie.com" in repr(og_channel)
    finally:
        await pd_channel.close()
        await og_channel.close()


# --- configuration --------------------------------------------------------------------


@pytest.mark.parametrize("routing_key", [None, "", "   "])
def test_pagerduty_without_a_routing_key_names_the_key(routing_key: str | None) -> None:
    fields: dict[str, Any] = {} if routing_key is None else {"routing_key": routing_key}
    config = PagerDutyConfig(channel="pagerduty", **fields)
    with pytest.raises(ChannelConfigError) as caught:
        pd.KIND.build("pd", config, ENV)
    assert caught.value.key == "routing_key"


@pytest.mark.parametrize("api_key", [None, "", "   "])
def test_opsgenie_without_an_api_key_names_the_key(api_key: str | None) -> None:
    fields: dict[str, Any] = {} if api_key is None else {"api_key": api_key}
    config = OpsgenieConfig(channel="opsgenie", **fields)
    with pytest.raises(ChannelConfigError) as caught:
        og.KIND.build("og", config, ENV)
    assert caught.value.key == "api_key"


@pytest.mark.parametrize(
    ("build", "config", "key"),
    [
        pytest.param(
            pd.KIND.build,
            PagerDutyConfig(channel="pagerduty", routing_key=ROUTING_KEY, url="ftp://x"),
            "url",
            id="pagerduty-url",
        ),
        pytest.param(
            pd.KIND.build,
            PagerDutyConfig(
                channel="pagerduty", routing_key=ROUTING_KEY, templates={"title": "{{ oops"}
            ),
            "templates.title",
            id="pagerduty-template",
        ),
        pytest.param(
            og.KIND.build,
            OpsgenieConfig(channel="opsgenie", api_key=API_KEY, url="api.opsgenie.com"),
            "url",
            id="opsgenie-url",
        ),
        pytest.param(
            og.KIND.build,
            OpsgenieConfig(channel="opsgenie", api_key=API_KEY, templates={"subject": "x"}),
            "templates.subject",
            id="opsgenie-unknown-template",
        ),
    ],
)
def test_bad_config_names_the_key(
    build: Callable[[str, Any, ChannelEnv], Channel], config: Any, key: str
) -> None:
    with pytest.raises(ChannelConfigError) as caught:
        build("r", config, ENV)
    assert caught.value.key == key
    assert ROUTING_KEY not in str(caught.value)
    assert API_KEY not in str(caught.value)


async def test_kinds_decode_their_keys_with_the_documented_defaults() -> None:
    pd_config = msgspec.convert(
        {"channel": "pagerduty", "routing_key": ROUTING_KEY}, pd.KIND.config_type
    )
    og_config = msgspec.convert({"channel": "opsgenie", "api_key": API_KEY}, og.KIND.config_type)
    assert isinstance(pd_config, PagerDutyConfig)
    assert isinstance(og_config, OpsgenieConfig)
    assert pd_config.url == "https://events.pagerduty.com/v2/enqueue"
    assert og_config.url == "https://api.opsgenie.com"
    assert (pd.KIND.name, og.KIND.name) == ("pagerduty", "opsgenie")
    with pytest.raises(msgspec.ValidationError, match="service_key"):
        msgspec.convert(
            {"channel": "pagerduty", "routing_key": "k", "service_key": "k"}, PagerDutyConfig
        )
    channels = [pd.KIND.build("pd", pd_config, ENV), og.KIND.build("og", og_config, ENV)]
    try:
        assert [channel.kind for channel in channels] == ["pagerduty", "opsgenie"]
    finally:
        for channel in channels:
            await channel.close()
