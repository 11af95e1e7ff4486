"""Every channel end to end: TOML config -> route -> channel -> a real local receiver
(HTTP on 127.0.0.1, aiosmtpd, a file, stdout), firing and then resolved."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.support import HttpSink, Mailbox, Tocsin, publish, wait_until
from tocsin.channels import ChannelEnv
from tocsin.channels.discord import DiscordChannel
from tocsin.channels.slack import SlackChannel
from tocsin.channels.webhook import KIND as WEBHOOK
from tocsin.channels.webhook import WebhookChannel, WebhookConfig

RECEIVERS = ["hook", "slack", "discord", "teams", "pager", "genie", "mail", "disk", "stdout"]


def config(sink: HttpSink, smtp_port: int, out: Path) -> str:
    base = f"http://127.0.0.1:{sink.port}"
    return f"""
[[route]]
match = {{}}
receivers = {msgspec.json.encode(RECEIVERS).decode()}

[receivers.hook]
channel = "webhook"
url = "{base}/hook"

[receivers.slack]
channel = "slack"
url = "{base}/slack"

[receivers.discord]
channel = "discord"
url = "{base}/discord"

[receivers.teams]
channel = "teams"
url = "{base}/teams"

[receivers.pager]
channel = "pagerduty"
routing_key = "R0UT1NGKEY0000000000000000000000"
url = "{base}/v2/enqueue"

[receivers.genie]
channel = "opsgenie"
api_key = "genie-secret"
url = "{base}"

[receivers.mail]
channel = "email"
to = ["oncall@example.org"]

[receivers.disk]
channel = "file"
path = "{out}"
format = "json"

[receivers.stdout]
channel = "log"

[smtp]
host = "127.0.0.1"
port = {smtp_port}
from = "tocsin@example.org"
starttls = false
"""


def by_path(sink: HttpSink) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for request in sink.requests:
        out.setdefault(request.path, []).append(
            {"body": request.json(), "headers": request.headers}
        )
    return out


async def test_every_channel_from_config_to_receiver(
    nats_url: str, sink: HttpSink, smtp: tuple[Mailbox, int], data_dir: Path, tmp_path: Path
) -> None:
    mailbox, smtp_port = smtp
    out = tmp_path / "notifications" / "tocsin.jsonl"
    service = await Tocsin(data_dir, nats_url, config(sink, smtp_port, out)).start()
    alert = {
        "type": "db_down",
        "severity": "critical",
        "summary": "primary db unreachable",
        "labels": {"cluster": "eu-1"},
    }
    try:
        await publish(nats_url, "alerts.in.db", alert)
        await wait_until(
            lambda: service.count("delivery.succeeded") == len(RECEIVERS),
            20,
            "one delivery per receiver",
        )
        seen = by_path(sink)
        assert set(seen) == {"/hook", "/slack", "/discord", "/teams", "/v2/enqueue", "/v2/alerts"}
        assert seen["/hook"][0]["body"]["summary"] == "primary db unreachable"
        assert "primary db unreachable" in seen["/slack"][0]["body"]["text"]
        assert isinstance(seen["/slack"][0]["body"]["blocks"], list)
        assert seen["/discord"][0]["body"]["embeds"][0]["title"]
        [attachment] = seen["/teams"][0]["body"]["attachments"]
        assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
        trigger = seen["/v2/enqueue"][0]["body"]
        assert (trigger["event_action"], trigger["payload"]["severity"]) == ("trigger", "critical")
        genie = seen["/v2/alerts"][0]
        assert genie["headers"]["authorization"] == "GenieKey genie-secret"
        assert genie["body"]["priority"] == "P1"
        [(recipients, message)] = mailbox.messages
        assert recipients == ["oncall@example.org"]
        assert message["Subject"] == "[CRITICAL] primary db unreachable"
        [line] = out.read_text().splitlines()
        assert msgspec.json.decode(line)["summary"] == "primary db unreachable"
        channels = {e["receiver"]: e["channel"] for e in service.events("delivery.succeeded")}
        assert channels == {
            "hook": "webhook",
            "slack": "slack",
            "discord": "discord",
            "teams": "teams",
            "pager": "pagerduty",
            "genie": "opsgenie",
            "mail": "email",
            "disk": "file",
            "stdout": "log",
        }

        await publish(nats_url, "alerts.in.db", {**alert, "status": "resolved"})
        await wait_until(
            lambda: service.count("delivery.succeeded") == 2 * len(RECEIVERS),
            20,
            "resolved to every receiver told",
        )
        seen = by_path(sink)
        resolve = seen["/v2/enqueue"][1]["body"]
        assert resolve["event_action"] == "resolve"
        assert resolve["dedup_key"] == trigger["dedup_key"]
        [close] = [p for p in seen if p.endswith("/close")]
        assert close.startswith("/v2/alerts/")
        assert len(mailbox.messages) == 2
        assert len(out.read_text().splitlines()) == 2
    finally:
        await service.stop()


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("https://hooks.slack.com/services/T000/B000/XXXX", SlackChannel),
        ("https://discord.com/api/webhooks/123/abc", DiscordChannel),
        ("https://example.org/tocsin", WebhookChannel),
    ],
)
def test_a_generic_webhook_recognises_slack_and_discord_urls(url: str, kind: type) -> None:
    channel = WEBHOOK.build("r", WebhookConfig(channel="webhook", url=url), ChannelEnv(version="t"))
    assert type(channel) is kind
