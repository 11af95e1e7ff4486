"""slack and discord against a real HTTP receiver on 127.0.0.1: the payload each provider
documents (and its limits, on oversized and hostile input), the headers, and how each
answer is classified for retries."""

from __future__ import annotations

import re
from typing import Any

import msgspec
import pytest

from tests.support import HttpSink, always, free_port, make_notification
from tocsin.channels import ChannelConfigError, ChannelEnv
from tocsin.channels import discord as discord_module
from tocsin.channels import slack as slack_module
from tocsin.channels.discord import DiscordChannel, DiscordConfig, embed_chars, execute_url
from tocsin.channels.slack import SlackChannel, SlackConfig
from tocsin.channels.templates import Templates
from tocsin.core.contracts import Notification
from tocsin.core.times import Duration, decode_duration

ENV = ChannelEnv(version="test", dashboard_url="http://127.0.0.1:8080")
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
HOSTILE = "<!channel> <https://evil.example|x> & <@U123> @here [y](https://evil.example) @everyone"


# What this file's notifications differ in from tests.support.make_notification.
NOTIFICATION = {
    "summary": "disk 95% full on db1",
    "source": "billing",
    "labels": {"host": "db1", "env": "prod"},
    "details": {"used_pct": 95, "mount": "/var"},
    "last_seen": "2026-11-23T12:05:00.000000Z",
    "receiver": "chat",
}


def notification(**fields: Any) -> Notification:
    return make_notification(**{**NOTIFICATION, **fields})


def oversized() -> Notification:
    return notification(
        summary="S" * 5000,
        labels={f"label{i:02d}": f"value-{i:02d}-" + "v" * 3000 for i in range(40)},
        details={f"key{i:02d}": "d" * 600 for i in range(20)},
        fingerprint="f" * 128,
    )


def make(kind: str, url: str, **config: Any) -> SlackChannel | DiscordChannel:
    if kind == "slack":
        return SlackChannel("chat", SlackConfig(channel="slack", url=url, **config), ENV)
    return DiscordChannel("chat", DiscordConfig(channel="discord", url=url, **config), ENV)


def slack_texts(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Every text object in a Block Kit message."""
    texts = []
    for block in body["blocks"]:
        if "text" in block:
            texts.append(block["text"])
        texts.extend(block.get("fields", []))
        texts.extend(block.get("elements", []))
    return texts


# ---------------------------------------------------------------- slack


async def test_slack_posts_a_block_kit_message_with_its_headers(sink: HttpSink) -> None:
    channel = make("slack", sink.url)
    result = await channel.send(notification(), traceparent=TRACEPARENT)
    await channel.close()

    assert result.ok
    assert result.status_code == 200
    [request] = sink.requests
    assert request.method == "POST"
    assert request.path == "/hook"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == "tocsin/test"
    assert request.headers["traceparent"] == TRACEPARENT
    body = request.json()
    assert set(body) == {"text", "blocks"}
    assert body["text"] == "[CRITICAL] disk 95% full on db1"
    blocks = body["blocks"]
    assert [block["type"] for block in blocks] == [
        "section",
        "section",
        "section",
        "section",
        "context",
    ]
    assert blocks[0]["text"]["text"] == ":red_circle: *[CRITICAL] disk 95% full on db1*"
    assert blocks[1]["text"]["text"].startswith("disk 95% full on db1\nReason: firing")
    assert [field["text"] for field in blocks[2]["fields"]] == ["*env*\nprod", "*host*\ndb1"]
    assert blocks[3]["text"]["text"] == '*Details*\n```\nused_pct: 95\nmount: "/var"\n```'
    assert [element["text"] for element in blocks[4]["elements"]] == [
        "Source: *billing*",
        "Alert `a1`",
        "Occurrences: 3 (2 suppressed)",
        "<http://127.0.0.1:8080/alerts/a1|Open in tocsin>",
    ]
    for text in slack_texts(body):
        assert text["type"] == "mrkdwn"
        assert text["verbatim"] is True
        assert isinstance(text["text"], str)
        assert 1 <= len(text["text"]) <= 3000


async def test_slack_escapes_untrusted_text_so_it_cannot_link_or_mention(sink: HttpSink) -> None:
    channel = make("slack", sink.url)
    hostile = notification(
        summary=HOSTILE,
        source="<!subteam^S1>",
        labels={"<!here>": "<https://evil.example|click>"},
        details={"note": "<!channel>"},
    )
    result = await channel.send(hostile)
    await channel.close()

    assert result.ok
    body = sink.requests[0].json()
    encoded = sink.requests[0].body.decode()
    for injected in ("<!channel>", "<!here>", "<@U123>", "<https://evil", "<!subteam"):
        assert injected not in encoded
    assert body["text"].startswith("[CRITICAL] &lt;!channel&gt; &lt;https://evil.example|x&gt;")
    assert "&amp; &lt;@U123&gt;" in body["text"]
    assert body["blocks"][2]["fields"] == [
        {
            "type": "mrkdwn",
            "text": "*&lt;!here&gt;*\n&lt;https://evil.example|click&gt;",
            "verbatim": True,
        }
    ]
    # the only markup left is tocsin's own link to the dashboard
    links = [m for t in slack_texts(body) for m in re.findall(r"<[^>]*>", t["text"])]
    assert links == ["<http://127.0.0.1:8080/alerts/a1|Open in tocsin>"]


async def test_slack_templates_keep_their_markup_while_values_are_escaped() -> None:
    templates = Templates({"title": "<{{ alert_url }}|{{ summary }}> *{{ labels.host }}*"})
    body = slack_module.payload(
        notification(summary="a <b> & c", labels={"host": "<!here>"}),
        templates,
        "http://127.0.0.1:8080",
    )

    link = "<http://127.0.0.1:8080/alerts/a1|a &lt;b&gt; &amp; c>"
    assert body["text"] == link + " *&lt;!here&gt;*"


async def test_slack_cuts_oversized_input_to_the_block_kit_limits(sink: HttpSink) -> None:
    channel = make("slack", sink.url)
    result = await channel.send(oversized())
    await channel.close()

    assert result.ok
    body = sink.requests[0].json()
    assert len(body["text"]) <= 3000
    assert body["text"].endswith("…")
    assert len(body["blocks"]) <= 50
    for text in slack_texts(body):
        assert 1 <= len(text["text"]) <= 3000
    headline = body["blocks"][0]["text"]["text"]
    assert headline.startswith(":red_circle: *[CRITICAL] SSS")
    assert headline.endswith("…*")
    fields = body["blocks"][2]["fields"]
    assert len(fields) == 10
    assert all(len(field["text"]) <= 2000 for field in fields)
    assert fields[0]["text"].startswith("*label00*\nvalue-00-vvv")
    assert fields[-1]["text"].startswith("*+31 more labels*\nlabel09, label10, ")
    details = body["blocks"][3]["text"]["text"]
    assert details.count("\n") == 2 + 11  # 10 keys, a line counting the other 10
    assert "… 10 more keys" in details
    assert len(body["blocks"][4]["elements"]) <= 10


async def test_slack_cuts_never_leave_half_an_entity() -> None:
    assert slack_module.truncate_mrkdwn("ab&amp;cd", 4) == "ab…"
    assert slack_module.truncate_mrkdwn("ab&amp;cd", 8) == "ab&amp;…"
    assert slack_module.truncate_mrkdwn("&lt;" * 10, 6) == "&lt;…"


async def test_slack_resolved_and_severity_emoji_and_no_link_without_dashboard() -> None:
    templates = Templates()
    resolved = slack_module.payload(notification(status="resolved", reason="resolved"), templates)
    assert resolved["blocks"][0]["text"]["text"].startswith(":white_check_mark: *")
    assert all("<http" not in e["text"] for e in resolved["blocks"][-1]["elements"])
    for severity, emoji in [
        ("error", ":large_orange_circle:"),
        ("warning", ":large_yellow_circle:"),
        ("info", ":large_blue_circle:"),
    ]:
        body = slack_module.payload(notification(severity=severity), templates)
        assert body["blocks"][0]["text"]["text"].startswith(emoji + " *")
    bare = slack_module.payload(notification(labels={}, details={}), templates)
    assert [block["type"] for block in bare["blocks"]] == ["section", "section", "context"]


# ---------------------------------------------------------------- discord


async def test_discord_posts_one_embed_with_mentions_disabled(sink: HttpSink) -> None:
    sink.responder = always(204)
    channel = make("discord", sink.url)
    result = await channel.send(notification(), traceparent=TRACEPARENT)
    await channel.close()

    assert result.ok
    assert result.status_code == 204
    [request] = sink.requests
    assert request.method == "POST"
    assert request.path == "/hook"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == "tocsin/test"
    assert request.headers["traceparent"] == TRACEPARENT
    body = request.json()
    assert set(body) == {"content", "embeds", "allowed_mentions"}
    assert body["allowed_mentions"] == {"parse": []}
    assert body["content"] == "[CRITICAL] disk 95% full on db1"
    [embed] = body["embeds"]
    assert set(embed) == {
        "title",
        "description",
        "color",
        "timestamp",
        "footer",
        "url",
        "fields",
    }
    assert embed["title"] == "[CRITICAL] disk 95% full on db1"
    assert embed["description"].startswith("disk 95% full on db1\nReason: firing")
    assert embed["color"] == 0xD32F2F
    assert isinstance(embed["color"], int)
    assert embed["timestamp"] == "2026-11-23T12:05:00.000000Z"
    assert embed["url"] == "http://127.0.0.1:8080/alerts/a1"
    assert embed["footer"] == {
        "text": "billing · 3 occurrences (2 suppressed) · alert a1 · fingerprint fp1"
    }
    assert embed["fields"] == [
        {"name": "env", "value": "prod", "inline": True},
        {"name": "host", "value": "db1", "inline": True},
        {"name": "Details", "value": 'used\\_pct: 95\nmount: "/var"', "inline": False},
    ]


async def test_discord_escapes_markdown_and_never_pings(sink: HttpSink) -> None:
    channel = make("discord", sink.url)
    result = await channel.send(
        notification(summary=HOSTILE, labels={"owner": "<@&42> [z](https://evil.example)"})
    )
    await channel.close()

    assert result.ok
    body = sink.requests[0].json()
    assert body["allowed_mentions"] == {"parse": []}
    content = body["content"]
    assert "\\[y\\]\\(https://evil.example\\)" in content
    assert "\\<@U123\\>" in content
    assert "@everyone" in content  # shown, but allowed_mentions keeps it from pinging
    [embed] = body["embeds"]
    for text in (content, embed["description"], embed["fields"][0]["value"]):
        assert "[y](" not in text
        assert "[z](" not in text
        assert re.search(r"(?<!\\)<@", text) is None
    assert embed["fields"][0]["value"] == "\\<@&42\\> \\[z\\]\\(https://evil.example\\)"
    # the title renders no links or mentions: the raw text, unescaped
    assert embed["title"].startswith("[CRITICAL] <!channel>")


async def test_discord_cuts_oversized_input_to_the_embed_limits(sink: HttpSink) -> None:
    channel = make("discord", sink.url)
    result = await channel.send(oversized())
    await channel.close()

    assert result.ok
    body = sink.requests[0].json()
    assert len(body["content"]) <= 2000
    [embed] = body["embeds"]
    assert len(embed["title"]) == 256
    assert embed["title"].endswith("…")
    assert len(embed["description"]) <= 4096
    assert embed["description"].endswith("…")
    assert len(embed["footer"]["text"]) <= 2048
    assert 1 <= len(embed["fields"]) <= 25
    for field in embed["fields"]:
        assert 1 <= len(field["name"]) <= 256
        assert 1 <= len(field["value"]) <= 1024
    assert embed_chars(embed) <= 6000
    assert embed["fields"][0]["name"] == "label00"


async def test_discord_fields_many_small_labels_and_the_rest_counted() -> None:
    labels = {f"k{i:02d}": ("" if i == 0 else f"v{i}") for i in range(40)}
    body = discord_module.payload(notification(labels=labels), Templates())
    fields = body["embeds"][0]["fields"]

    assert len(fields) == 25
    assert fields[0] == {"name": "k00", "value": "(empty)", "inline": True}
    assert all(field["inline"] for field in fields[:23])
    assert fields[23]["name"] == "+17 more labels"
    assert fields[23]["value"].startswith("k23, k24, ")
    assert fields[24]["name"] == "Details"
    assert embed_chars(body["embeds"][0]) <= 6000


async def test_discord_colours_by_severity_and_green_when_resolved() -> None:
    colours = {
        severity: discord_module.payload(notification(severity=severity), Templates())
        for severity in ("critical", "error", "warning", "info")
    }
    assert {k: v["embeds"][0]["color"] for k, v in colours.items()} == {
        "critical": 13840175,
        "error": 16088064,
        "warning": 16498733,
        "info": 1668818,
    }
    resolved = discord_module.payload(
        notification(status="resolved", reason="resolved"), Templates(), None
    )
    assert resolved["embeds"][0]["color"] == 3706428
    assert "url" not in resolved["embeds"][0]


async def test_discord_waits_for_the_message_to_be_saved() -> None:
    hook = "https://discord.com/api/webhooks/123/tok-en_1"
    assert execute_url(hook) == hook + "?wait=true"
    assert execute_url(hook + "?thread_id=9") == hook + "?thread_id=9&wait=true"
    assert execute_url(hook + "?wait=false") == hook + "?wait=false"


# ---------------------------------------------------------------- both: retries, config


@pytest.mark.parametrize("kind", ["slack", "discord"])
@pytest.mark.parametrize(
    ("status", "headers", "ok", "retryable", "retry_after"),
    [
        (200, {}, True, False, None),
        (204, {}, True, False, None),
        (429, {"Retry-After": "7"}, False, True, 7.0),
        (500, {}, False, True, None),
        (503, {}, False, True, None),
        (400, {}, False, False, None),
        (404, {}, False, False, None),
    ],
)
async def test_answers_are_classified_for_retries(
    sink: HttpSink,
    kind: str,
    status: int,
    headers: dict[str, str],
    ok: bool,
    retryable: bool,
    retry_after: float | None,
) -> None:
    sink.responder = always(status, headers)
    channel = make(kind, sink.url)
    result = await channel.send(notification())
    await channel.close()

    assert len(sink.requests) == 1
    assert result.ok is ok
    assert result.retryable is retryable
    assert result.status_code == status
    assert result.retry_after == retry_after
    if not ok:
        assert result.error is not None
        assert result.error.startswith(f"HTTP {status}")


@pytest.mark.parametrize("kind", ["slack", "discord"])
async def test_a_receiver_slower_than_the_timeout_is_retryable(sink: HttpSink, kind: str) -> None:
    sink.delay = 2.0
    channel = make(kind, sink.url, timeout=Duration(0.3))
    result = await channel.send(notification())
    await channel.close()

    assert len(sink.requests) == 1
    assert not result.ok
    assert result.retryable
    assert result.status_code is None
    assert result.error


@pytest.mark.parametrize("kind", ["slack", "discord"])
async def test_a_refused_connection_is_retryable(kind: str) -> None:
    channel = make(kind, f"http://127.0.0.1:{free_port()}/hook", timeout=Duration(2.0))
    result = await channel.send(notification())
    await channel.close()

    assert not result.ok
    assert result.retryable
    assert result.status_code is None
    assert result.error is not None
    assert result.error.startswith("connection error")


@pytest.mark.parametrize("kind", ["slack", "discord"])
@pytest.mark.parametrize(
    "url", ["", "hooks.slack.com/services/T/B/x", "ftp://example.com/hook", "https://"]
)
async def test_a_bad_url_is_a_config_error_naming_url(kind: str, url: str) -> None:
    with pytest.raises(ChannelConfigError) as caught:
        make(kind, url)
    assert caught.value.key == "url"


@pytest.mark.parametrize("kind", ["slack", "discord"])
@pytest.mark.parametrize(
    ("templates", "key"),
    [
        ({"title": "{{ summary"}, "templates.title"),
        ({"body": "{% if %}"}, "templates.body"),
        ({"footer": "x"}, "templates.footer"),
    ],
)
async def test_a_bad_template_is_a_config_error_naming_it(
    kind: str, templates: dict[str, str], key: str
) -> None:
    with pytest.raises(ChannelConfigError) as caught:
        make(kind, "https://example.com/hook", templates=templates)
    assert caught.value.key == key


def dec_hook(kind: type, value: Any) -> Any:
    if kind is Duration:
        return decode_duration(value)
    raise NotImplementedError


@pytest.mark.parametrize(
    ("module", "config_type"),
    [(slack_module, SlackConfig), (discord_module, DiscordConfig)],
)
async def test_config_converts_like_tocsin_config_and_the_kind_builds_it(
    sink: HttpSink, module: Any, config_type: type[SlackConfig | DiscordConfig]
) -> None:
    name = module.KIND.name
    table = {"channel": name, "url": sink.url, "timeout": "2s", "templates": {"title": "t"}}
    config = msgspec.convert(table, config_type, dec_hook=dec_hook)
    assert config.timeout == 2.0
    assert module.KIND.config_type is config_type
    with pytest.raises(msgspec.ValidationError, match="secret"):
        msgspec.convert({**table, "secret": "s"}, config_type, dec_hook=dec_hook)
    with pytest.raises(msgspec.ValidationError, match="url"):
        msgspec.convert({"channel": name}, config_type, dec_hook=dec_hook)

    channel = module.KIND.build("chat", config, ENV)
    assert channel.kind == name
    result = await channel.send(notification())
    await channel.close()
    assert result.ok
    sent = sink.requests[0].json()
    assert (sent["text"] if name == "slack" else sent["embeds"][0]["title"]) == "t"


@pytest.mark.parametrize(
    ("url", "slack", "discord"),
    [
        ("https://hooks.slack.com/services/T000/B000/XXXX", True, False),
        ("https://HOOKS.slack.com/services/T000/B000/XXXX", True, False),
        ("https://hooks.slack.com/workflows/T000/A000/1/x", False, False),
        ("https://hooks.slack.com.evil.example/services/T/B/X", False, False),
        ("https://evil.example/hooks.slack.com/services/T/B/X", False, False),
        ("https://discord.com/api/webhooks/123456/abc-DEF_ghi", False, True),
        ("https://discordapp.com/api/webhooks/123456/abc-DEF_ghi", False, True),
        ("https://discord.com/api/v10/webhooks/123456/abc?thread_id=1", False, True),
        ("https://canary.discord.com/api/webhooks/123456/abc", False, True),
        ("https://discord.com/api/webhooks/123456/abc/slack", False, False),
        ("https://discord.com.evil.example/api/webhooks/123456/abc", False, False),
        ("https://discord.com/api/webhooks/", False, False),
        ("https://example.com/hook", False, False),
        ("not a url", False, False),
    ],
)
async def test_matches_url_recognises_each_providers_webhooks(
    url: str, slack: bool, discord: bool
) -> None:
    assert slack_module.matches_url(url) is slack
    assert discord_module.matches_url(url) is discord
