"""Webhook ``format = "alertmanager"`` as a real receiver (an HTTP sink on 127.0.0.1)
gets it: Alertmanager's webhook payload, version 4 (DESIGN.md section 14), field by
field as Alertmanager's notify/webhook/webhook.go ``Message`` and template.Data
``Data``/``Alert`` define it, decoded the way a Go consumer decodes it (every field of
the struct present, of its type, nothing else)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.support import AmMessage, HttpSink, make_group, make_group_alert, make_notification
from tocsin import config
from tocsin.channels import ChannelEnv
from tocsin.channels.webhook import WebhookChannel, WebhookConfig
from tocsin.core.contracts import Body
from tocsin.core.errors import ConfigError


async def received(sink: HttpSink, body: Body) -> tuple[AmMessage, dict[str, Any]]:
    config_ = WebhookConfig(channel="webhook", url=sink.url, format="alertmanager")
    channel = WebhookChannel("am", config_, ChannelEnv(version="t", dashboard_url="http://t/"))
    try:
        result = await channel.send(body)
    finally:
        await channel.close()
    assert result.ok, result.error
    [request] = sink.requests
    raw = json.loads(request.body)
    assert set(raw) == set(AmMessage.__struct_fields__)  # every field, none missing
    return msgspec.json.decode(request.body, type=AmMessage), raw


async def test_an_ungrouped_notification_is_a_group_of_one(sink: HttpSink) -> None:
    """Catches the tocsin body sent instead, a field missing or misnamed, labels without
    alertname and severity, details not as string annotations, a firing alert without
    Go's zero endsAt."""
    notification = make_notification(
        labels={"host": "db1", "severity": "page"},
        details={"generatorURL": "http://prom/graph?g0", "runbook": "r.md", "n": 3},
    )
    message, raw = await received(sink, notification)
    assert message.version == "4"
    assert message.status == "firing"
    assert message.receiver == "r"
    assert message.truncatedAlerts == 0
    assert message.groupLabels == {}
    assert message.externalURL == "http://t/"
    assert message.groupKey == '{}:{fingerprint="fp1"}'
    [alert] = message.alerts
    # the alert's own labels win: Alertmanager's severity label is kept as sent
    assert alert.labels == {"alertname": "disk_full", "severity": "page", "host": "db1"}
    assert alert.annotations == {"summary": "disk full on db1", "runbook": "r.md", "n": "3"}
    assert alert.generatorURL == "http://prom/graph?g0"
    assert alert.startsAt == "2026-11-23T12:00:00.000000Z"
    assert alert.endsAt == "0001-01-01T00:00:00Z"
    assert alert.fingerprint == "fp1"
    assert message.commonLabels == alert.labels
    assert message.commonAnnotations == alert.annotations
    assert raw["alerts"][0]["status"] == "firing"


async def test_a_group_lists_its_alerts_with_common_labels(sink: HttpSink) -> None:
    """Catches common labels or annotations that are not the shared pairs, group labels
    under tocsin's key names instead of Alertmanager's label names, a resolved alert's
    endsAt, the group key or the truncation count not carried."""
    group = make_group(
        3, truncated_alerts=2, group_labels={"labels.service": "api", "type": "host_down"}
    )
    group.alerts[2] = make_group_alert(
        9, status="resolved", severity="info", details={"runbook": "r.md"}
    )
    message, _ = await received(sink, group)
    assert message.groupKey == "route-0/r/labels.service=api"
    assert message.truncatedAlerts == 2
    assert message.groupLabels == {"service": "api", "alertname": "host_down"}
    assert len(message.alerts) == 3
    assert message.commonLabels == {"alertname": "host_down", "service": "api"}
    assert message.commonAnnotations == {}
    resolved = message.alerts[2]
    assert resolved.status == "resolved"
    assert resolved.endsAt == group.alerts[2].last_seen
    assert [a.labels["host"] for a in message.alerts] == ["h0", "h1", "h9"]


async def test_the_receiver_name_is_escaped_as_alertmanager_escapes_it(sink: HttpSink) -> None:
    """Catches a receiver name sent raw: Alertmanager's template.Data applies Go's
    regexp.QuoteMeta to it, and consumers matching on it expect that."""
    message, _ = await received(sink, make_notification(receiver="team.x+(db)"))
    assert message.receiver == "team\\.x\\+\\(db\\)"


def test_format_is_a_receiver_key_checked_by_the_config(tmp_path: Path) -> None:
    """Catches a ``format`` the loader refuses, or a wrong one accepted silently."""
    path = tmp_path / "c.toml"
    table = '[receivers.am]\nchannel = "webhook"\nurl = "http://127.0.0.1:9/"\n'
    path.write_text(table + 'format = "alertmanager"\n')
    receiver = config.load(path).receivers["am"]
    assert isinstance(receiver, WebhookConfig)
    assert receiver.format == "alertmanager"
    path.write_text(
        '[receivers.am]\nchannel = "webhook"\nurl = "http://127.0.0.1:9/"\nformat = "am"\n'
    )
    with pytest.raises(ConfigError, match="format"):
        config.load(path)
