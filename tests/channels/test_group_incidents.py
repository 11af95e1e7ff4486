"""A group notification (DESIGN.md section 11) as ONE incident, sent to a real HTTP
receiver on 127.0.0.1: one PagerDuty Events API v2 event per group notification
(``dedup_key`` from the ``group_key``, ``trigger`` while it fires, ``resolve`` once it
is resolved) and one Opsgenie alert per group (``alias`` from the ``group_key``, created
while it fires, closed by alias once resolved), within the documented limits.

Limits written from the providers' documentation (not imported from the channels):
PagerDuty "Send an Alert Event": ``dedup_key`` at most 255 characters,
``payload.summary`` 1024; "Events API v2 Overview": at most 512 KB an event. Opsgenie
"Alert API": ``message`` 130, ``alias`` 512, ``description`` 15000, ``source`` 100, at
most 20 tags of 50 characters; ``details`` 8000 in total.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import msgspec
import pytest

from tests.channels.test_pagerduty_opsgenie import (
    API_KEY,
    ROUTING_KEY,
    RawSink,
    og_url,
    opsgenie,
    pagerduty,
    pd_url,
)
from tests.support import HttpSink, make_group, make_group_alert
from tocsin.core.contracts import GroupNotification

PD_MAX_DEDUP_KEY = 255
PD_MAX_SUMMARY = 1024
PD_MAX_EVENT_BYTES = 512 * 1024
OG_MAX_MESSAGE = 130
OG_MAX_ALIAS = 512
OG_MAX_DESCRIPTION = 15000
OG_MAX_SOURCE = 100
OG_MAX_TAGS = 20
OG_MAX_TAG = 50
OG_MAX_DETAILS = 8000
LONG_KEY = "route-0/pager/" + ",".join(f"labels.k{i}=" + "v" * 40 for i in range(20))


@pytest.fixture
async def raw_sink() -> AsyncIterator[RawSink]:
    """An HTTP receiver that keeps each request's undecoded path (the alias in it)."""
    receiver = RawSink()
    await receiver.start()
    yield receiver
    await receiver.stop()


def resolved(group: GroupNotification) -> GroupNotification:
    alerts = [
        msgspec.structs.replace(alert, status="resolved", reason="resolved")
        for alert in group.alerts
    ]
    return msgspec.structs.replace(group, alerts=alerts, status="resolved", reason="resolved")


def big_group() -> GroupNotification:
    """500 alerts listed, each with large labels, and 1000 more truncated."""
    group = make_group(500, truncated_alerts=1000)
    alerts = [
        msgspec.structs.replace(alert, labels={**alert.labels, "blob": "b" * 1000})
        for alert in group.alerts
    ]
    return msgspec.structs.replace(group, alerts=alerts)


async def send_all(channel: Any, *groups: GroupNotification) -> None:
    try:
        for group in groups:
            result = await channel.send(group)
            assert result.ok, result.error
    finally:
        await channel.close()


# ---------------------------------------------------------------- pagerduty


async def test_pagerduty_one_event_per_group_trigger_then_resolve(sink: HttpSink) -> None:
    """Catches a group paged as one incident per alert, or resolved under another key:
    a firing group is one trigger whose dedup_key is the group_key, summary "N alerts:
    <first summary>" and custom_details listing the alerts; the resolved group is one
    resolve with that same dedup_key and nothing else."""
    group = make_group(3, truncated_alerts=2)
    await send_all(pagerduty(pd_url(sink.port)), group, resolved(group))

    trigger, resolve = (request.json() for request in sink.requests)
    assert [request.path for request in sink.requests] == ["/v2/enqueue", "/v2/enqueue"]
    assert trigger["routing_key"] == ROUTING_KEY
    assert trigger["event_action"] == "trigger"
    assert trigger["dedup_key"] == "route-0/r/labels.service=api"
    assert trigger["client"] == "tocsin"
    payload = trigger["payload"]
    assert payload["summary"] == "5 alerts: host h0 unreachable"
    assert (payload["severity"], payload["source"]) == ("critical", "node")
    assert payload["timestamp"] == max(alert.last_seen for alert in group.alerts)
    details = payload["custom_details"]
    assert details["group_key"] == group.group_key
    assert details["group_labels"] == {"labels.service": "api"}
    assert (details["alert_count"], details["truncated_alerts"]) == (5, 2)
    assert [alert["alert_id"] for alert in details["alerts"]] == ["a0", "a1", "a2"]
    assert details["alerts"][0]["alert_url"] == "http://127.0.0.1:8080/alerts/a0"
    assert (details["not_shown"], details["and_more"]) == (2, "and 2 more")
    assert resolve == {
        "routing_key": ROUTING_KEY,
        "event_action": "resolve",
        "dedup_key": "route-0/r/labels.service=api",
    }


@pytest.mark.parametrize("reason", ["update", "reminder"])
async def test_pagerduty_a_group_that_still_fires_triggers_its_incident_again(
    sink: HttpSink, reason: str
) -> None:
    """Catches an update or a reminder sent as anything but a trigger of the group's
    incident (PagerDuty de-duplicates it into the open alert by dedup_key)."""
    await send_all(pagerduty(pd_url(sink.port)), make_group(2, reason=reason))
    [request] = sink.requests
    event = request.json()
    assert event["event_action"] == "trigger"
    assert event["dedup_key"] == "route-0/r/labels.service=api"
    assert event["payload"]["custom_details"]["reason"] == reason


async def test_pagerduty_a_long_group_key_is_hashed_to_255_the_same_on_resolve(
    sink: HttpSink,
) -> None:
    """Catches a dedup_key PagerDuty refuses (over 255 characters) or one that differs
    between the trigger and the resolve (the incident would never close)."""
    group = make_group(2, group_key=LONG_KEY)
    other = make_group(2, group_key=LONG_KEY + "x")  # same first 255 characters
    await send_all(pagerduty(pd_url(sink.port)), group, resolved(group), other)

    trigger, resolve, third = (request.json()["dedup_key"] for request in sink.requests)
    assert len(trigger) == PD_MAX_DEDUP_KEY
    assert trigger == resolve
    assert trigger.startswith(LONG_KEY[:100])
    assert third != trigger


async def test_pagerduty_a_500_alert_group_stays_within_the_event_limits(
    sink: HttpSink,
) -> None:
    """Catches an event over PagerDuty's 512 KB or a summary over 1024, and a wrong
    count of the alerts left out of custom_details."""
    summary = "s" * 255
    group = big_group()
    group.alerts[0] = msgspec.structs.replace(group.alerts[0], summary=summary)
    await send_all(pagerduty(pd_url(sink.port)), group)

    [request] = sink.requests
    assert len(request.body) <= PD_MAX_EVENT_BYTES
    payload = request.json()["payload"]
    assert len(payload["summary"]) <= PD_MAX_SUMMARY
    assert payload["summary"] == f"1500 alerts: {summary}"
    details = payload["custom_details"]
    listed = len(details["alerts"])
    assert 0 < listed < 500
    assert details["not_shown"] == 1500 - listed
    assert details["and_more"] == f"and {1500 - listed} more"


async def test_pagerduty_summary_is_cut_to_1024_with_a_receivers_group_title(
    sink: HttpSink,
) -> None:
    """Catches a receiver's group_title that makes the summary pass 1024 characters."""
    channel = pagerduty(pd_url(sink.port), templates={"group_title": "{{ 'x' * 5000 }}"})
    await send_all(channel, make_group(1))
    [request] = sink.requests
    summary = request.json()["payload"]["summary"]
    assert len(summary) == PD_MAX_SUMMARY
    assert summary.endswith("...")


# ---------------------------------------------------------------- opsgenie


async def test_opsgenie_creates_one_alert_per_group_and_closes_it_by_alias(
    raw_sink: RawSink,
) -> None:
    """Catches an Opsgenie group that is not one alert: the firing group is one Create
    Alert whose alias is the group_key (message "N alerts: <first summary>", the alerts
    in the description, priority from the group's severity, tags from its labels); the
    resolved group is one Close Alert by that alias, URL-encoded in the path."""
    group = make_group(3, truncated_alerts=2)
    await send_all(opsgenie(og_url(raw_sink.port)), group, resolved(group))

    create, close = raw_sink.requests
    assert create.path == "/v2/alerts"
    assert create.headers["authorization"] == f"GenieKey {API_KEY}"
    body = create.json()
    assert body["alias"] == "route-0/r/labels.service=api"
    assert body["message"] == "5 alerts: host h0 unreachable"
    assert body["priority"] == "P1"
    assert body["tags"] == ["labels.service:api"]
    assert body["source"] == "node"
    for index in range(3):
        assert f"host h{index} unreachable" in body["description"]
    assert "and 2 more" in body["description"]
    assert body["details"]["group_key"] == group.group_key
    assert body["details"]["alert_ids"] == "a0, a1, a2"
    assert body["details"]["labels.service"] == "api"

    raw_path, query = raw_sink.raw[1]
    alias = quote("route-0/r/labels.service=api", safe="")
    assert raw_path.decode() == f"/v2/alerts/{alias}/close"
    assert query == b"identifierType=alias"
    assert set(close.json()) == {"source", "note"}
    assert close.json()["note"] == "Resolved in tocsin: 5 alerts: host h0 unreachable"


async def test_opsgenie_a_long_group_key_is_hashed_to_512_the_same_on_close(
    raw_sink: RawSink,
) -> None:
    """Catches an alias Opsgenie refuses (over 512 characters) or one that differs
    between create and close (the alert would stay open)."""
    key = LONG_KEY * 2
    assert len(key) > OG_MAX_ALIAS
    group = make_group(2, group_key=key)
    await send_all(opsgenie(og_url(raw_sink.port)), group, resolved(group))

    alias = raw_sink.requests[0].json()["alias"]
    assert len(alias) == OG_MAX_ALIAS
    raw_path, _ = raw_sink.raw[1]
    assert raw_path.decode() == f"/v2/alerts/{quote(alias, safe='')}/close"


async def test_opsgenie_a_500_alert_group_stays_within_the_alert_limits(
    raw_sink: RawSink,
) -> None:
    """Catches a Create Alert Opsgenie refuses (message over 130, description over
    15000, details over 8000, tags over 20 x 50) and a wrong "and N more"."""
    group = big_group()
    labels = {f"labels.k{i}": "v" * 80 for i in range(30)}
    group = msgspec.structs.replace(group, group_labels=labels)
    group.alerts[0] = msgspec.structs.replace(group.alerts[0], summary="s" * 255)
    await send_all(opsgenie(og_url(raw_sink.port)), group)

    body = raw_sink.requests[0].json()
    assert len(body["message"]) <= OG_MAX_MESSAGE
    assert body["message"].startswith("1500 alerts: sss")
    assert len(body["description"]) <= OG_MAX_DESCRIPTION
    assert len(body["source"]) <= OG_MAX_SOURCE
    assert len(body["tags"]) <= OG_MAX_TAGS
    assert all(len(tag) <= OG_MAX_TAG for tag in body["tags"])
    assert sum(len(k) + len(v) for k, v in body["details"].items()) <= OG_MAX_DETAILS
    listed = body["description"].count("\n- [")
    assert 0 < listed < 500
    [more] = re.findall(r"and (\d+) more", body["description"])
    assert int(more) == 1500 - listed
    assert body["details"]["not_shown"] == str(1500 - listed)


async def test_opsgenie_group_priority_is_the_most_severe_alerts(raw_sink: RawSink) -> None:
    """Catches a group whose priority is not its most severe alert's."""
    alerts = [make_group_alert(0, severity="warning"), make_group_alert(1, severity="info")]
    await send_all(opsgenie(og_url(raw_sink.port)), make_group(alerts=alerts))
    assert raw_sink.requests[0].json()["priority"] == "P3"
