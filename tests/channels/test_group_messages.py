"""A group notification (DESIGN.md section 11) as ONE message on the chat channels and
the webhook, sent to a real HTTP receiver on 127.0.0.1: the documented payload shape,
the provider's limits counted on what the receiver got (Slack blocks and characters,
Discord embeds and their 6000 characters, Teams' 28 KB), and the alerts not shown
counted in "and N more".

The limits are written here from the providers' documentation, not imported from the
channel modules, so a channel constant that drifts past a limit fails these tests:
- Slack: at most 50 blocks a message, header text 150, section and context text 3000,
  context 10 elements (docs.slack.dev/reference/block-kit/blocks and the block pages);
  blocks over about 12,000 characters in total are refused with ``msg_blocks_too_long``
  (slackapi/bolt-js issues 2509 and 2867);
- Discord: at most 10 embeds, 6000 characters across all of them, title 256,
  description 4096, footer 2048, content 2000 (Execute Webhook, Embed Limits);
- Teams: a message of at most 28 KB (Workflows webhooks).
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
import pytest
from standardwebhooks.webhooks import Webhook

from tests.channels.test_webhook_signatures import WHSEC, tocsin_signature_is_valid
from tests.support import HttpSink, make_group, make_group_alert
from tocsin.channels import ChannelEnv
from tocsin.channels import teams as teams_module
from tocsin.channels.discord import DiscordChannel, DiscordConfig
from tocsin.channels.slack import SlackChannel, SlackConfig
from tocsin.channels.teams import TeamsChannel, TeamsConfig
from tocsin.channels.webhook import WebhookChannel, WebhookConfig
from tocsin.core.contracts import GroupNotification

DASHBOARD = "http://127.0.0.1:8080"
ENV = ChannelEnv(version="test", dashboard_url=DASHBOARD)
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

SLACK_MAX_BLOCKS = 50
SLACK_MAX_HEADER = 150
SLACK_MAX_TEXT = 3000
SLACK_MAX_CONTEXT_ELEMENTS = 10
SLACK_MAX_TOTAL_TEXT = 12_000
DISCORD_MAX_EMBEDS = 10
DISCORD_MAX_TOTAL = 6000
DISCORD_MAX_TITLE = 256
DISCORD_MAX_DESCRIPTION = 4096
DISCORD_MAX_FOOTER = 2048
DISCORD_MAX_CONTENT = 2000
TEAMS_MAX_BYTES = 28 * 1024

HOSTILE = "<!channel> <https://evil.example|x> [y](https://evil.example) @everyone"


def storm(shape: str = "lean") -> GroupNotification:
    """500 alerts listed and 1000 more cut by the route's max_alerts: 1500 in the
    group. ``lean`` alerts are short (a count limit bites: blocks, embeds); ``wide``
    ones carry 255-character summaries and long labels, and the group long labels (a
    size limit bites: characters, bytes)."""
    group = make_group(500, truncated_alerts=1000)
    if shape == "lean":
        return group
    alerts = [
        msgspec.structs.replace(
            alert,
            summary=f"host {alert.labels['host']} unreachable ".ljust(255, "s"),
            labels={**alert.labels, "note": "n" * 400, "zone": "z" * 400},
        )
        for alert in group.alerts
    ]
    labels = {"labels.service": "api", "labels.team": "t" * 1500}
    return msgspec.structs.replace(group, alerts=alerts, group_labels=labels)


SHAPES = pytest.mark.parametrize("shape", ["lean", "wide"])


async def posted(sink: HttpSink, channel: Any, group: GroupNotification) -> dict[str, Any]:
    """Send ``group`` through ``channel``; the one request the receiver got, decoded."""
    try:
        result = await channel.send(group, traceparent=TRACEPARENT)
    finally:
        await channel.close()
    assert result.ok, result.error
    [request] = sink.requests  # one message per group notification
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == "tocsin/test"
    assert request.headers["traceparent"] == TRACEPARENT
    body: dict[str, Any] = request.json()
    return body


def and_more_count(text: str) -> int:
    [count] = re.findall(r"and (\d+) more", text)
    return int(count)


# ---------------------------------------------------------------- webhook


async def test_webhook_posts_the_group_body_exactly_with_the_usual_headers(
    sink: HttpSink,
) -> None:
    """Catches a webhook that reshapes or drops the group body, or loses its headers:
    the receiver must get the msgspec encoding of the GroupNotification byte for byte,
    with Idempotency-Key = notification_id and both signatures valid."""
    group = make_group(3, truncated_alerts=2)
    channel = WebhookChannel(
        "hook", WebhookConfig(channel="webhook", url=sink.url, secret=WHSEC), ENV
    )
    result = await channel.send(group, traceparent=TRACEPARENT)
    await channel.close()

    assert result.ok, result.error
    [request] = sink.requests
    assert request.body == msgspec.json.encode(group)
    decoded = msgspec.json.decode(request.body, type=GroupNotification)
    assert decoded == group
    assert request.headers["idempotency-key"] == "g-n1"
    assert request.headers["webhook-id"] == "g-n1"
    assert request.headers["user-agent"] == "tocsin/test"
    assert request.headers["traceparent"] == TRACEPARENT
    assert Webhook(WHSEC).verify(request.body, request.headers)["group_key"] == group.group_key
    assert tocsin_signature_is_valid(WHSEC, request.headers["x-tocsin-signature"], request.body)


# ---------------------------------------------------------------- slack


def slack_texts(block: dict[str, Any]) -> list[str]:
    texts = [block["text"]["text"]] if "text" in block else []
    texts += [item["text"] for item in block.get("fields", []) + block.get("elements", [])]
    return texts


def slack(url: str, **config: Any) -> SlackChannel:
    return SlackChannel("chat", SlackConfig(channel="slack", url=url, **config), ENV)


async def test_slack_sends_a_group_as_one_message_a_section_per_alert(sink: HttpSink) -> None:
    """Catches a Slack channel that cannot send a group, or sends it in another shape:
    a header with status and count, the group's headline, one section per alert in
    order, and a context naming the group, with no "and N more" when all are shown."""
    body = await posted(sink, slack(sink.url), make_group(3))

    assert body["text"] == "[CRITICAL] 3 alerts: host h0 unreachable"
    header, top, *alerts, context = body["blocks"]
    assert header == {
        "type": "header",
        "text": {"type": "plain_text", "text": ":red_circle: FIRING: 3 alerts", "emoji": True},
    }
    assert top["text"]["text"] == ("*[CRITICAL] 3 alerts: host h0 unreachable*\nlabels.service=api")
    assert [block["text"]["text"] for block in alerts] == [
        f"{emoji} *[{severity}] host h{index} unreachable*\nhost=h{index}"
        f" · <{DASHBOARD}/alerts/a{index}|Open in tocsin>"
        for emoji, severity, index in [
            (":red_circle:", "CRITICAL", 0),
            (":large_yellow_circle:", "WARNING", 1),
            (":large_blue_circle:", "INFO", 2),
        ]
    ]
    assert all(block["text"]["verbatim"] for block in [top, *alerts])
    assert context["type"] == "context"
    assert [element["text"] for element in context["elements"]] == [
        "Group `route-0/r/labels.service=api`",
        "Notification `g-n1`",
    ]
    assert "more" not in msgspec.json.encode(body).decode()


@SHAPES
async def test_slack_keeps_a_500_alert_group_within_block_kit_limits(
    sink: HttpSink, shape: str
) -> None:
    """Catches a group message Slack would refuse (over 50 blocks, a text over its
    limit, or more text than msg_blocks_too_long allows) and a wrong count of the
    alerts not shown: the context must say "and N more" for exactly those."""
    group = storm(shape)
    body = await posted(sink, slack(sink.url), group)

    blocks = body["blocks"]
    assert len(blocks) <= SLACK_MAX_BLOCKS
    header, *_ = blocks
    assert header["text"]["text"] == ":red_circle: FIRING: 1500 alerts"
    assert len(header["text"]["text"]) <= SLACK_MAX_HEADER
    assert all(len(text) <= SLACK_MAX_TEXT for block in blocks for text in slack_texts(block))
    assert sum(len(text) for block in blocks for text in slack_texts(block)) < (
        SLACK_MAX_TOTAL_TEXT
    )
    assert len(body["text"]) <= SLACK_MAX_TEXT

    alert_sections = blocks[2:-1]
    assert alert_sections, "some alerts must be listed"
    # The most severe first: the listed ones are a prefix of the body's order.
    for block, alert in zip(alert_sections, group.alerts, strict=False):
        assert f"host {alert.labels['host']} unreachable" in block["text"]["text"]
    assert len(alert_sections) < 500
    context = blocks[-1]
    assert len(context["elements"]) <= SLACK_MAX_CONTEXT_ELEMENTS
    more = context["elements"][-1]["text"]
    assert and_more_count(more) == 1500 - len(alert_sections)


async def test_slack_group_text_from_alerts_is_escaped(sink: HttpSink) -> None:
    """Catches alert text reaching a group message unescaped: a summary or label that
    would broadcast (<!channel>) or link in Slack must arrive as entities."""
    hostile = make_group_alert(0, summary=HOSTILE, labels={"service": "api", "x": HOSTILE})
    group = make_group(1, alerts=[hostile], group_labels={"labels.service": HOSTILE})
    body = await posted(sink, slack(sink.url), group)
    encoded = msgspec.json.encode(body).decode()
    assert "<!channel>" not in encoded
    assert "<https://evil" not in encoded
    assert "&lt;!channel&gt;" in body["blocks"][2]["text"]["text"]


# ---------------------------------------------------------------- discord


def discord(url: str) -> DiscordChannel:
    return DiscordChannel("chat", DiscordConfig(channel="discord", url=url), ENV)


def embed_chars(embed: dict[str, Any]) -> int:
    """What Discord counts against the 6000: title, description, field names and
    values, footer text, author name."""
    return (
        len(embed.get("title", ""))
        + len(embed.get("description", ""))
        + sum(len(f["name"]) + len(f["value"]) for f in embed.get("fields", []))
        + len(embed.get("footer", {}).get("text", ""))
        + len(embed.get("author", {}).get("name", ""))
    )


async def test_discord_sends_a_group_as_one_message_an_embed_per_alert(sink: HttpSink) -> None:
    """Catches a Discord channel that cannot send a group or sends it in another shape:
    a head embed (title, status and count, group labels, footer naming the group) and
    one embed per alert with its colour and link, mentions disabled."""
    body = await posted(sink, discord(sink.url), make_group(3))

    assert body["content"] == "[CRITICAL] 3 alerts: host h0 unreachable"
    assert body["allowed_mentions"] == {"parse": []}
    head, *alerts = body["embeds"]
    assert head["title"] == "[CRITICAL] 3 alerts: host h0 unreachable"
    assert head["description"] == "**FIRING** · 3 alerts\nlabels.service=api"
    assert head["color"] == 0xD32F2F
    assert head["footer"] == {"text": "group route-0/r/labels.service=api · notification g-n1"}
    assert [(e["title"], e["color"], e["description"], e["url"]) for e in alerts] == [
        ("[CRITICAL] host h0 unreachable", 0xD32F2F, "host=h0", f"{DASHBOARD}/alerts/a0"),
        ("[WARNING] host h1 unreachable", 0xFBC02D, "host=h1", f"{DASHBOARD}/alerts/a1"),
        ("[INFO] host h2 unreachable", 0x1976D2, "host=h2", f"{DASHBOARD}/alerts/a2"),
    ]
    assert "more" not in head["description"]


@SHAPES
async def test_discord_keeps_a_500_alert_group_within_the_embed_limits(
    sink: HttpSink, shape: str
) -> None:
    """Catches a group message Discord would refuse with a 400 (over 10 embeds, or over
    6000 characters across them) and a wrong "and N more"."""
    body = await posted(sink, discord(sink.url), storm(shape))

    embeds = body["embeds"]
    assert len(embeds) <= DISCORD_MAX_EMBEDS
    assert sum(embed_chars(embed) for embed in embeds) <= DISCORD_MAX_TOTAL
    assert len(body["content"]) <= DISCORD_MAX_CONTENT
    for embed in embeds:
        assert len(embed["title"]) <= DISCORD_MAX_TITLE
        assert len(embed.get("description", "")) <= DISCORD_MAX_DESCRIPTION
        assert len(embed.get("footer", {}).get("text", "")) <= DISCORD_MAX_FOOTER
    head, *alerts = embeds
    assert head["description"].startswith("**FIRING** · 1500 alerts")
    assert and_more_count(head["description"]) == 1500 - len(alerts)


async def test_discord_resolved_group_is_green_and_alert_text_cannot_ping(
    sink: HttpSink,
) -> None:
    """Catches a resolved group that looks like a firing one, and alert text that
    would form a masked link in a group message."""
    alert = make_group_alert(0, summary=HOSTILE, status="resolved", reason="resolved")
    group = make_group(1, alerts=[alert], status="resolved", reason="resolved")
    body = await posted(sink, discord(sink.url), group)

    head, embed = body["embeds"]
    assert head["color"] == embed["color"] == 0x388E3C
    assert head["description"].startswith("**RESOLVED** · 1 alerts")
    assert "[y](https" not in body["content"]
    assert "\\[y\\]\\(https" in body["content"]
    assert embed["description"].startswith("*resolved*")


# ---------------------------------------------------------------- teams


def teams(url: str) -> TeamsChannel:
    return TeamsChannel("chat", TeamsConfig(channel="teams", url=url), ENV)


def card_of(body: dict[str, Any]) -> dict[str, Any]:
    [attachment] = body["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card: dict[str, Any] = attachment["content"]
    assert (card["type"], card["version"]) == ("AdaptiveCard", "1.4")
    return card


async def test_teams_sends_a_group_as_one_card_a_container_per_alert(sink: HttpSink) -> None:
    """Catches a Teams channel that cannot send a group or sends it in another shape:
    title, status line, the group's labels as facts, then one container per alert
    (coloured by severity, opening the alert), nothing counted when all are shown."""
    body = await posted(sink, teams(sink.url), make_group(3))

    assert body["type"] == "message"
    title, status, facts, *alerts = card_of(body)["body"]
    # The template's own brackets are text, not alert values: kept as written.
    assert title["text"] == "[CRITICAL] 3 alerts: host h0 unreachable"
    assert title["color"] == "attention"
    assert status["text"] == "FIRING · 3 alerts"
    assert facts == {"type": "FactSet", "facts": [{"title": "labels.service", "value": "api"}]}
    assert [
        (c["items"][0]["text"], c["items"][0]["color"], c["items"][1]["text"], c["selectAction"])
        for c in alerts
    ] == [
        (
            f"[{severity}] host h{index} unreachable",
            colour,
            f"host=h{index}",
            {"type": "Action.OpenUrl", "url": f"{DASHBOARD}/alerts/a{index}"},
        )
        for severity, colour, index in [
            ("CRITICAL", "attention", 0),
            ("WARNING", "warning", 1),
            ("INFO", "accent", 2),
        ]
    ]


async def test_teams_group_text_from_alerts_cannot_link(sink: HttpSink) -> None:
    """Catches alert text reaching a group card as markdown: a summary, a label or a
    group label with a markdown link or an autolink must arrive neutralized."""
    hostile = make_group_alert(0, summary=HOSTILE, labels={"service": "api", "x": HOSTILE})
    group = make_group(1, alerts=[hostile], group_labels={"labels.service": HOSTILE})
    body = await posted(sink, teams(sink.url), group)
    encoded = msgspec.json.encode(body).decode()
    assert "[y](" not in encoded
    assert "<https" not in encoded
    assert teams_module.neutralize("[y](https://evil.example)") in encoded


@SHAPES
async def test_teams_keeps_a_500_alert_group_under_28_kb(sink: HttpSink, shape: str) -> None:
    """Catches a group card Teams would refuse (over 28 KB) and a wrong "and N more"."""
    await posted(sink, teams(sink.url), storm(shape))
    [request] = sink.requests
    assert len(request.body) <= TEAMS_MAX_BYTES
    items = card_of(request.json())["body"]
    containers = [item for item in items if item["type"] == "Container"]
    assert containers
    assert and_more_count(items[-1]["text"]) == 1500 - len(containers)


@pytest.mark.parametrize("kind", ["slack", "discord", "teams"])
async def test_a_receivers_group_title_template_sees_the_group(sink: HttpSink, kind: str) -> None:
    """Catches group templates that do not get the documented variables: a receiver's
    ``group_title`` using group_labels, alert_count, not_shown and alerts renders in
    the message (and the per-alert ``title`` still renders each alert)."""
    templates = {
        "group_title": "{{ group_labels['labels.service'] }}: {{ alert_count }} "
        "({{ not_shown }} cut, first {{ alerts[0].alert_id }})",
        "title": "{{ alert_id }} {{ group_key }}",
    }
    group = make_group(2, truncated_alerts=4)
    config: Any
    if kind == "slack":
        channel: Any = SlackChannel(
            "chat", SlackConfig(channel="slack", url=sink.url, templates=templates), ENV
        )
    elif kind == "discord":
        config = DiscordConfig(channel="discord", url=sink.url, templates=templates)
        channel = DiscordChannel("chat", config, ENV)
    else:
        config = TeamsConfig(channel="teams", url=sink.url, templates=templates)
        channel = TeamsChannel("chat", config, ENV)
    body = await posted(sink, channel, group)
    text = msgspec.json.encode(body).decode()
    assert "api: 6 (4 cut, first a0)" in text
    assert "a1 route-0/r/labels.service=api" in text
