"""The ``teams`` and ``file`` channels on real parts: a real HTTP receiver on 127.0.0.1
standing in for a Teams Workflows webhook, real files in a temporary folder.

Markdown is checked with markdown-it-py (installed with litestar, through rich), a
CommonMark renderer of the family Adaptive Card renderers use: what it does not turn
into a link cannot be a link in a card either.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from markdown_it import MarkdownIt

from tests.support import HttpSink, always, free_port, make_notification
from tocsin.channels import ChannelConfigError, ChannelEnv, teams
from tocsin.channels import file as file_channel
from tocsin.channels.file import FileChannel, FileConfig
from tocsin.channels.teams import TeamsChannel, TeamsConfig
from tocsin.channels.templates import Templates, context
from tocsin.core.contracts import Notification
from tocsin.core.times import Duration, parse_rfc3339

ENV = ChannelEnv(version="test", dashboard_url="http://127.0.0.1:8080")
ALERT_URL = "http://127.0.0.1:8080/alerts/a-1"
ELLIPSIS = "\N{HORIZONTAL ELLIPSIS}"
markdown = MarkdownIt("commonmark")


# What this file's notifications differ in from tests.support.make_notification.
NOTIFICATION = {
    "notification_id": "n-1",
    "alert_id": "a-1",
    "fingerprint": "fp-1",
    "dedup_key": "fp-1:2950",
    "summary": "disk 95% full on db1",
    "source": "billing",
    "labels": {"host": "db1", "env": "prod"},
    "details": {"used_percent": 95},
    "last_seen": "2026-11-23T12:05:00.000000Z",
    "suppressed_count": 1,
    "receiver": "team",
}


def notification(**changes: Any) -> Notification:
    return make_notification(**{**NOTIFICATION, **changes})


def links(text: str) -> list[str]:
    """The link targets a CommonMark renderer makes of ``text``."""
    return re.findall(r'<a href="([^"]*)"', markdown.render(text))


# --- teams ------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def teams_channel(
    url: str,
    *,
    timeout: float = 5.0,
    env: ChannelEnv = ENV,
    templates: dict[str, str] | None = None,
) -> AsyncIterator[TeamsChannel]:
    config = TeamsConfig(channel="teams", url=url, timeout=Duration(timeout), templates=templates)
    channel = teams.KIND.build("team", config, env)
    assert isinstance(channel, TeamsChannel)
    try:
        yield channel
    finally:
        await channel.close()


def only_card(sink: HttpSink) -> dict[str, Any]:
    assert len(sink.requests) == 1
    body = sink.requests[0].json()
    assert body["type"] == "message"
    assert len(body["attachments"]) == 1
    content: dict[str, Any] = body["attachments"][0]["content"]
    return content


def texts(card: dict[str, Any]) -> list[str]:
    """Every string of the card that Teams renders as markdown."""
    title, body, facts = card["body"]
    return [
        title["text"],
        body["text"],
        *(fact["title"] for fact in facts["facts"]),
        *(fact["value"] for fact in facts["facts"]),
    ]


async def test_teams_posts_an_adaptive_card_in_a_workflows_message(sink: HttpSink) -> None:
    sink.responder = always(202)
    sent = notification()
    async with teams_channel(sink.url) as channel:
        result = await channel.send(sent)

    assert (result.ok, result.status_code) == (True, 202)
    assert len(sink.requests) == 1
    request = sink.requests[0]
    assert (request.method, request.path) == ("POST", "/hook")
    rendered_body = Templates().render("body", context(sent, ENV.dashboard_url))
    assert "\n" in rendered_body  # so the paragraph rule below is really exercised
    assert request.json() == {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": [
                        {
                            "type": "TextBlock",
                            "text": "[CRITICAL] disk 95% full on db1",
                            "weight": "bolder",
                            "size": "medium",
                            "color": "attention",
                            "wrap": True,
                        },
                        {
                            "type": "TextBlock",
                            # Teams breaks a line outside a list only at "\n\n"
                            "text": "\n\n".join(rendered_body.split("\n")),
                            "wrap": True,
                        },
                        {
                            "type": "FactSet",
                            "facts": [
                                {"title": "Severity", "value": "critical"},
                                {"title": "Source", "value": "billing"},
                                {"title": "Occurrences", "value": "3"},
                                {"title": "env", "value": "prod"},
                                {"title": "host", "value": "db1"},
                            ],
                        },
                    ],
                    "actions": [
                        {"type": "Action.OpenUrl", "title": "Open in tocsin", "url": ALERT_URL}
                    ],
                },
            }
        ],
    }


async def test_teams_sends_json_with_user_agent_and_traceparent_when_traced(
    sink: HttpSink,
) -> None:
    sink.responder = always(202)
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    async with teams_channel(sink.url) as channel:
        assert channel.kind == "teams"
        traced = await channel.send(notification(), traceparent=traceparent)
        untraced = await channel.send(notification())

    assert traced.ok
    assert untraced.ok
    first, second = sink.requests
    for request in (first, second):
        assert request.headers["content-type"] == "application/json"
        assert request.headers["user-agent"] == "tocsin/test"
    assert first.headers["traceparent"] == traceparent
    assert "traceparent" not in second.headers


@pytest.mark.parametrize(
    ("severity", "reason", "colour"),
    [
        ("critical", "firing", "attention"),
        ("error", "firing", "attention"),
        ("warning", "escalated", "warning"),
        ("info", "reminder", "accent"),
        ("critical", "resolved", "good"),
    ],
)
async def test_teams_title_colour_follows_severity_and_resolved_is_good(
    sink: HttpSink, severity: str, reason: str, colour: str
) -> None:
    sink.responder = always(202)
    async with teams_channel(sink.url) as channel:
        result = await channel.send(notification(severity=severity, reason=reason))

    assert result.ok
    title = only_card(sink)["body"][0]
    assert (title["type"], title["weight"], title["color"]) == ("TextBlock", "bolder", colour)
    assert title["text"] == f"[{severity.upper()}] disk 95% full on db1"
    assert only_card(sink)["body"][2]["facts"][0] == {"title": "Severity", "value": severity}


async def test_teams_card_has_no_action_without_a_dashboard_url(sink: HttpSink) -> None:
    sink.responder = always(202)
    async with teams_channel(sink.url, env=ChannelEnv(version="test")) as channel:
        result = await channel.send(notification())

    assert result.ok
    card = only_card(sink)
    assert card["actions"] == []
    assert all("alerts/a-1" not in text for text in texts(card))


async def test_teams_cuts_oversized_text_instead_of_failing(sink: HttpSink) -> None:
    sink.responder = always(202)
    labels = {f"label{i:02d}": "v" * 1000 for i in range(32)}
    labels["k" * 300] = "long key"
    huge = notification(summary="word " * 4000, source="s" * 500, labels=labels)
    async with teams_channel(sink.url) as channel:
        result = await channel.send(huge)

    assert result.ok
    card = only_card(sink)
    title, body, factset = card["body"]
    assert len(title["text"]) == 256
    assert title["text"].endswith(ELLIPSIS)
    assert "\n" not in title["text"]
    assert len(body["text"]) == 4000
    assert body["text"].endswith(ELLIPSIS)
    facts = factset["facts"]
    assert len(facts) == 3 + 20 + 1  # severity, source, occurrences; 20 labels; the rest
    assert facts[1] == {"title": "Source", "value": "s" * 127 + ELLIPSIS}
    label_facts = facts[3:23]
    assert [fact["title"] for fact in label_facts] == ["k" * 63 + ELLIPSIS] + [
        f"label{i:02d}" for i in range(19)
    ]
    assert label_facts[1] == {"title": "label00", "value": "v" * 127 + ELLIPSIS}
    assert all(len(fact["title"]) <= 64 and len(fact["value"]) <= 128 for fact in facts)
    assert facts[-1] == {"title": ELLIPSIS, "value": "13 more labels"}


async def test_teams_keeps_the_message_under_the_28_kb_limit(sink: HttpSink) -> None:
    sink.responder = always(202)
    wide = "\N{COLLISION SYMBOL}"  # 4 bytes in UTF-8
    labels = {f"{wide * 70}{i:02d}": wide * 200 for i in range(32)}
    async with teams_channel(sink.url) as channel:
        result = await channel.send(notification(summary=wide * 5000, labels=labels))

    assert result.ok
    assert len(sink.requests[0].body) <= 28 * 1024
    body = only_card(sink)["body"][1]["text"]
    assert 0 < len(body) < 4000
    assert body.endswith(ELLIPSIS)


async def test_teams_injected_markdown_links_are_not_links(sink: HttpSink) -> None:
    sink.responder = always(202)
    evil = "[click here](https://evil.example/phish) [x](javascript:alert(1))"
    raw_links = links(evil)
    assert raw_links == ["https://evil.example/phish"]  # the control: raw, it is a link
    async with teams_channel(sink.url) as channel:
        result = await channel.send(
            notification(
                summary=f"disk full {evil}\n[ref]: https://evil.example/def",
                source="<https://evil.example/auto>",
                labels={"[k](https://evil.example/key)": evil, "host": "db1"},
            )
        )

    assert result.ok
    card = only_card(sink)
    for text in texts(card):
        assert links(text) == []
        assert "](" not in text
        assert "<https" not in text
    title = card["body"][0]["text"]
    # the text is still there, readable, with look-alike brackets that are not syntax
    assert title.startswith("[CRITICAL] disk full \uff3bclick here\uff3d\uff08https://evil")
    assert "\uff3bk\uff3d\uff08https://evil.example/key\uff09" in texts(card)
    assert card["actions"][0]["url"] == ALERT_URL


async def test_teams_operator_markdown_in_templates_survives_but_values_stay_inert(
    sink: HttpSink,
) -> None:
    sink.responder = always(202)
    templates = {
        # a value right after the template's own "]" must not complete a link
        "title": "[{{ severity | upper }}]{{ summary }}",
        "body": "{{ summary }} - [runbook](https://runbooks.example/{{ type }})",
    }
    async with teams_channel(sink.url, templates=templates) as channel:
        result = await channel.send(notification(summary="(https://evil.example)"))

    assert result.ok
    title, body, _ = only_card(sink)["body"]
    assert links(title["text"]) == []
    assert links(body["text"]) == ["https://runbooks.example/disk_full"]


@pytest.mark.parametrize("status", [202, 200])
async def test_teams_202_and_200_are_delivered(sink: HttpSink, status: int) -> None:
    sink.responder = always(status)
    async with teams_channel(sink.url) as channel:
        result = await channel.send(notification())
    assert (result.ok, result.status_code, result.error) == (True, status, None)


async def test_teams_429_is_retryable_after_its_retry_after(sink: HttpSink) -> None:
    sink.responder = always(429, {"Retry-After": "7"})
    async with teams_channel(sink.url) as channel:
        result = await channel.send(notification())
    assert (result.ok, result.retryable, result.status_code) == (False, True, 429)
    assert result.retry_after == 7.0


@pytest.mark.parametrize(("status", "retryable"), [(500, True), (503, True), (400, False)])
async def test_teams_5xx_is_retryable_and_400_permanent(
    sink: HttpSink, status: int, retryable: bool
) -> None:
    sink.responder = always(status)
    async with teams_channel(sink.url) as channel:
        result = await channel.send(notification())
    assert (result.ok, result.retryable, result.status_code) == (False, retryable, status)
    assert f"HTTP {status}" in (result.error or "")


async def test_teams_timeout_is_retryable(sink: HttpSink) -> None:
    sink.responder = always(202)
    sink.delay = 2.0
    async with teams_channel(sink.url, timeout=0.3) as channel:
        result = await channel.send(notification())
    assert (result.ok, result.retryable, result.status_code) == (False, True, None)
    assert result.error


async def test_teams_connection_refused_is_retryable() -> None:
    async with teams_channel(f"http://127.0.0.1:{free_port()}/hook") as channel:
        result = await channel.send(notification())
    assert (result.ok, result.retryable, result.status_code) == (False, True, None)
    assert "connection" in (result.error or "")


@pytest.mark.parametrize("url", ["", "ftp://example.com/hook", "example.com/hook"])
def test_teams_url_must_be_http_or_https(url: str) -> None:
    with pytest.raises(ChannelConfigError) as caught:
        TeamsChannel("team", TeamsConfig(channel="teams", url=url), ENV)
    assert caught.value.key == "url"


@pytest.mark.parametrize(
    ("templates", "key"),
    [({"title": "{{ summary"}, "templates.title"), ({"subject": "x"}, "templates.subject")],
)
def test_teams_bad_templates_name_their_key(templates: dict[str, str], key: str) -> None:
    config = TeamsConfig(channel="teams", url="https://example.com/hook", templates=templates)
    with pytest.raises(ChannelConfigError) as caught:
        TeamsChannel("team", config, ENV)
    assert caught.value.key == key


def test_teams_and_file_configs_refuse_unknown_keys() -> None:
    with pytest.raises(msgspec.ValidationError, match="secret"):
        msgspec.convert({"channel": "teams", "url": "https://x", "secret": "s"}, TeamsConfig)
    with pytest.raises(msgspec.ValidationError, match="url"):
        msgspec.convert({"channel": "file", "path": "/tmp/x", "url": "https://x"}, FileConfig)
    config = msgspec.convert({"channel": "file", "path": "/tmp/x"}, FileConfig)
    assert config.format == "text"
    assert (teams.KIND.name, teams.KIND.config_type) == ("teams", TeamsConfig)
    assert (file_channel.KIND.name, file_channel.KIND.config_type) == ("file", FileConfig)


# --- file -------------------------------------------------------------------------------


def file_channel_at(path: Path | str, **config: Any) -> FileChannel:
    channel = file_channel.KIND.build(
        "disk", FileConfig(channel="file", path=str(path), **config), ENV
    )
    assert isinstance(channel, FileChannel)
    assert channel.kind == "file"
    return channel


async def test_file_text_is_one_exact_line_per_notification(tmp_path: Path) -> None:
    path = tmp_path / "alerts.log"
    channel = file_channel_at(path)
    first = notification()
    second = notification(
        alert_id="a-2",
        severity="warning",
        reason="reminder",
        summary="backup failed\non db2\r\nsee \x1b[31mlog\u2028end",
        last_seen="2026-11-23T13:00:00.000000Z",
    )
    results = [await channel.send(first), await channel.send(second)]
    await channel.close()

    assert all(result.ok for result in results)
    content = path.read_text()
    assert content == (
        "2026-11-23T12:05:00.000000Z [CRITICAL] disk 95% full on db1 (firing, alert a-1)\n"
        "2026-11-23T13:00:00.000000Z [WARNING] backup failed on db2 see  [31mlog end"
        " (reminder, alert a-2)\n"
    )
    assert len(content.splitlines()) == 2


async def test_file_text_title_comes_from_the_receiver_template(tmp_path: Path) -> None:
    path = tmp_path / "alerts.log"
    channel = file_channel_at(path, templates={"title": "{{ type }} on {{ labels.host }}"})
    result = await channel.send(notification())
    await channel.close()

    assert result.ok
    assert path.read_text() == (
        "2026-11-23T12:05:00.000000Z [CRITICAL] disk_full on db1 (firing, alert a-1)\n"
    )


async def test_file_json_lines_decode_back_to_the_fields(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    channel = file_channel_at(path, format="json")
    sent = [
        notification(),
        notification(
            notification_id="n-2",
            summary="line one\nline two\u2028three\u2029four\x85five",
            labels={"host": "db2"},
            details={"nested": {"list": [1, "two"]}},
        ),
    ]
    results = [await channel.send(item) for item in sent]
    await channel.close()

    assert all(result.ok for result in results)
    data = path.read_bytes()
    lines = data.decode().splitlines()  # splitlines breaks at U+2028 too: must not here
    assert len(lines) == 2
    assert data.endswith(b"\n")
    for line, item in zip(lines, sent, strict=True):
        decoded = msgspec.json.decode(line)
        delivered_at = decoded.pop("delivered_at")
        assert decoded == msgspec.structs.asdict(item)
        assert delivered_at.endswith("Z")
        parse_rfc3339(delivered_at)


async def test_file_creates_nested_folders_at_build_and_the_file_on_first_write(
    tmp_path: Path,
) -> None:
    path = tmp_path / "a" / "b" / "c" / "alerts.log"
    channel = file_channel_at(path)
    assert path.parent.is_dir()
    assert not path.exists()

    result = await channel.send(notification())
    await channel.close()

    assert result.ok
    assert path.read_text().count("\n") == 1


async def test_file_folder_removed_after_build_is_created_again(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "alerts.log"
    channel = file_channel_at(path)
    shutil.rmtree(tmp_path / "logs")

    result = await channel.send(notification())
    await channel.close()

    assert result.ok
    assert path.read_text().endswith("(firing, alert a-1)\n")


@pytest.mark.parametrize("fmt", ["text", "json"])
async def test_file_50_concurrent_sends_give_50_whole_lines(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"alerts.{fmt}"
    channel = file_channel_at(path, format=fmt)
    sent = [
        notification(notification_id=f"n-{i}", alert_id=f"a-{i}", summary=f"{i:02d} " * 3000)
        for i in range(50)
    ]
    results = await asyncio.gather(*(channel.send(item) for item in sent))
    await channel.close()

    assert all(result.ok for result in results)
    lines = path.read_text().splitlines()
    assert len(lines) == 50
    if fmt == "json":
        decoded = [msgspec.json.decode(line) for line in lines]
        assert sorted(item["notification_id"] for item in decoded) == sorted(
            item.notification_id for item in sent
        )
        for item in decoded:
            number = int(item["alert_id"].removeprefix("a-"))
            assert item["summary"] == f"{number:02d} " * 3000
        stamps = [parse_rfc3339(item["delivered_at"]) for item in decoded]
        assert stamps == sorted(stamps)  # written in the order they were stamped
    else:
        expected = {
            f"2026-11-23T12:05:00.000000Z [CRITICAL] {item.summary.strip()}"
            f" (firing, alert {item.alert_id})"
            for item in sent
        }
        assert set(lines) == expected


async def test_file_path_that_is_a_directory_is_refused_at_build(tmp_path: Path) -> None:
    with pytest.raises(ChannelConfigError) as caught:
        file_channel_at(tmp_path)
    assert caught.value.key == "path"


async def test_file_path_that_became_a_directory_fails_permanently(tmp_path: Path) -> None:
    path = tmp_path / "alerts.log"
    channel = file_channel_at(path)
    path.mkdir()

    result = await channel.send(notification())
    await channel.close()

    assert (result.ok, result.retryable, result.status_code) == (False, False, None)
    assert "IsADirectoryError" in (result.error or "")


async def test_file_disk_full_is_retryable() -> None:
    channel = file_channel_at("/dev/full")  # every write: ENOSPC, no space left on device

    result = await channel.send(notification())
    await channel.close()

    assert (result.ok, result.retryable) == (False, True)
    assert "No space left on device" in (result.error or "")


def test_file_folder_that_cannot_be_created_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with pytest.raises(ChannelConfigError) as caught:
        file_channel_at(blocker / "sub" / "alerts.log")
    assert caught.value.key == "path"


@pytest.mark.parametrize(("config", "key"), [({"format": "yaml"}, "format"), ({}, "path")])
def test_file_bad_format_or_empty_path_names_the_key(
    tmp_path: Path, config: dict[str, str], key: str
) -> None:
    path = tmp_path / "alerts.log" if config else ""
    with pytest.raises(ChannelConfigError) as caught:
        file_channel_at(path, **config)
    assert caught.value.key == key


def test_file_bad_template_names_its_key(tmp_path: Path) -> None:
    with pytest.raises(ChannelConfigError) as caught:
        file_channel_at(tmp_path / "alerts.log", templates={"title": "{% if %}"})
    assert caught.value.key == "templates.title"
