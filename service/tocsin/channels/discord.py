"""``discord``: one rich embed posted to a Discord webhook (Execute Webhook).

The receiver's ``url`` is a webhook URL
(``https://discord.com/api/webhooks/<id>/<token>``). tocsin posts to it with
``?wait=true``: without it Discord answers 204 before the message is stored and "a
message that is not saved does not return an error", so a lost message would be
counted as delivered; with it, the answer is 200 with the message once it is saved.
Any 2xx is a success; 429 (with ``Retry-After``), 408 and 5xx are retried, other 4xx
(400 for a payload Discord refuses, 401/404 for a deleted webhook) are permanent.

Discord documentation relied on:

- Execute Webhook: ``content`` up to 2000 characters, up to 10 ``embeds``,
  ``allowed_mentions``, the ``wait`` query parameter:
  https://discord.com/developers/docs/resources/webhook#execute-webhook
- Embed object (``title``, ``description``, ``url``, ``timestamp`` ISO8601, ``color``
  integer, ``footer.text``, ``fields`` of ``name``/``value``/``inline``) and its limits:
  title 256, description 4096, at most 25 fields, field name 256, field value 1024,
  footer text 2048, and the sum of title, description, field names and values, footer
  text and author name at most 6000 characters (whitespace at either end trimmed);
  a violation is a 400:
  https://discord.com/developers/docs/resources/message#embed-object-embed-limits
- Allowed mentions: ``{"parse": []}`` suppresses every mention (``@everyone``,
  ``@here``, users, roles); message content from user-generated strings should be
  sanitized and sent with ``allowed_mentions``:
  https://discord.com/developers/docs/resources/message#allowed-mentions-object
  https://discord.com/developers/docs/resources/message#create-message
- Backslash-escaping Discord-flavoured markdown, as the client libraries do
  (discord.js ``escapeMarkdown``):
  https://discord.js.org/docs/packages/discord.js/14.25.1/escapeMarkdown:Function

Choices:

- Colour by severity: critical ``0xD32F2F`` (13840175, red), error ``0xF57C00``
  (16088064, orange), warning ``0xFBC02D`` (16498733, yellow), info ``0x1976D2``
  (1668818, blue); a resolved notification ``0x388E3C`` (3706428, green) whatever its
  severity, so a resolved critical alert does not look like a firing one.
- ``allowed_mentions: {"parse": []}`` always: alert text is untrusted and must not ping.
- Untrusted text (every notification field) is escaped *before* it reaches the
  templates wherever Discord renders markdown (``content``, ``description``, field
  values): ``\\ * _ ~ ` | < > [ ] ( ) #`` get a backslash, so an alert cannot form a
  masked link, a mention, a heading or a code block, while markdown a receiver's
  ``templates`` write keeps working. The embed title, field names and footer (which
  render no links or mentions; the footer no markdown at all) carry the raw text.
- Fields: one inline field per label, sorted by key (at most 24, or 23 when details
  are present; then one "+N more labels" field), and one "Details" field summarizing
  ``details`` as ``key: <JSON value>`` lines.
- ``timestamp`` is the alert's ``last_seen``; ``url`` the alert in the dashboard when
  one is configured; the footer names source, occurrences, alert id and fingerprint.
- Limits are met by cutting (a cut ends with "…"), never by failing: content 2000,
  title 256, description 4096, field name 256, value 1024, footer 512, and the embed's
  total within 6000 (title and footer first, then the description, then fields in
  order while they fit).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from tocsin.channels import ChannelEnv, ChannelKind, ReceiverConfig
from tocsin.channels.http import PayloadChannel, check_url
from tocsin.channels.templates import Templates, context
from tocsin.channels.text import collapse_whitespace, details_lines, map_strings, truncate
from tocsin.core.contracts import Notification

MAX_CONTENT_CHARS = 2000
MAX_TITLE_CHARS = 256
MAX_DESCRIPTION_CHARS = 4096
MAX_FIELDS = 25
MAX_FIELD_NAME_CHARS = 256
MAX_FIELD_VALUE_CHARS = 1024
MAX_FOOTER_CHARS = 512  # Discord allows 2048; ours is an id line, kept short for the total
MAX_EMBED_CHARS = 6000
MAX_DETAIL_KEYS = 10
MAX_DETAIL_KEY_CHARS = 64
MAX_DETAIL_VALUE_CHARS = 200
MIN_CUT_VALUE_CHARS = 16  # a field cut shorter than this to fit the total is left out
EMPTY_VALUE = "(empty)"

COLORS = {
    "critical": 0xD32F2F,
    "error": 0xF57C00,
    "warning": 0xFBC02D,
    "info": 0x1976D2,
}
RESOLVED_COLOR = 0x388E3C

_HOSTS = {"discord.com", "discordapp.com", "ptb.discord.com", "canary.discord.com"}
_WEBHOOK_PATH = re.compile(r"^/api(?:/v\d+)?/webhooks/\d+/[A-Za-z0-9_-]+/?$")
_MARKDOWN = re.compile(r"([\\*_~`|<>\[\]()#])")


class DiscordConfig(ReceiverConfig, kw_only=True, forbid_unknown_fields=True):
    url: str


def matches_url(url: str) -> bool:
    """Whether ``url`` is a Discord webhook URL: ``discord.com/api/webhooks/<id>/<token>``
    or the same on ``discordapp.com`` (also ``ptb.``/``canary.``, and with an API
    version like ``/api/v10/``). The ``/slack`` and ``/github`` variants take other
    payloads and do not match."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return False
    return (
        parts.scheme.lower() in ("http", "https")
        and (parts.hostname or "") in _HOSTS
        and _WEBHOOK_PATH.match(parts.path) is not None
    )


def execute_url(url: str) -> str:
    """``url`` with ``wait=true`` added (unless it already sets ``wait``), other query
    parameters (``thread_id``) kept."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(key == "wait" for key, _ in query):
        return url
    return urlunsplit(parts._replace(query=urlencode([*query, ("wait", "true")])))


def escape(text: str) -> str:
    """``text`` as literal Discord markdown: markup characters backslash-escaped."""
    return _MARKDOWN.sub(r"\\\1", text)


def _without_lone_backslash(kept: str) -> str:
    """``kept`` without an escape backslash a cut parted from the character it escaped."""
    if (len(kept) - len(kept.rstrip("\\"))) % 2:
        return kept[:-1]
    return kept


def truncate_markdown(text: str, limit: int) -> str:
    """``text`` trimmed, in at most ``limit`` characters (``text.truncate``: a cut ends
    with "…"), never leaving a dangling escape backslash."""
    return truncate(text.strip(), limit, tidy_end=_without_lone_backslash)


def _field(name: str, value: str, *, inline: bool) -> dict[str, Any]:
    return {
        "name": truncate_markdown(name, MAX_FIELD_NAME_CHARS) or EMPTY_VALUE,
        "value": truncate_markdown(value, MAX_FIELD_VALUE_CHARS) or EMPTY_VALUE,
        "inline": inline,
    }


def _candidate_fields(notification: Notification) -> list[dict[str, Any]]:
    items = sorted(notification.labels.items())
    room = MAX_FIELDS - (1 if notification.details else 0)
    shown = items if len(items) <= room else items[: room - 1]
    fields = [_field(key, escape(value), inline=True) for key, value in shown]
    hidden = items[len(shown) :]
    if hidden:
        names = ", ".join(escape(key) for key, _ in hidden)
        fields.append(_field(f"+{len(hidden)} more labels", names, inline=False))
    if notification.details:
        lines = "\n".join(
            details_lines(
                notification.details,
                max_keys=MAX_DETAIL_KEYS,
                max_key_chars=MAX_DETAIL_KEY_CHARS,
                max_value_chars=MAX_DETAIL_VALUE_CHARS,
            )
        )
        fields.append(_field("Details", escape(lines), inline=False))
    return fields


def _fit(fields: list[dict[str, Any]], budget: int) -> list[dict[str, Any]]:
    """The fields, in order, that fit in ``budget`` characters (the last one cut)."""
    kept = []
    for field in fields:
        size = len(field["name"]) + len(field["value"])
        if size <= budget:
            kept.append(field)
            budget -= size
            continue
        room = budget - len(field["name"])
        if room >= MIN_CUT_VALUE_CHARS:
            kept.append({**field, "value": truncate_markdown(field["value"], room)})
        break
    return kept


def payload(
    notification: Notification, templates: Templates, dashboard_url: str | None = None
) -> dict[str, Any]:
    """The Execute Webhook body for ``notification`` (pure)."""
    raw = context(notification, dashboard_url)
    variables = {
        key: value if key == "alert_url" else map_strings(value, escape)
        for key, value in raw.items()
    }
    title = truncate_markdown(
        collapse_whitespace(templates.render("title", raw) or notification.summary),
        MAX_TITLE_CHARS,
    )
    content = truncate_markdown(
        collapse_whitespace(templates.render("title", variables)) or escape(notification.summary),
        MAX_CONTENT_CHARS,
    )
    footer = truncate_markdown(
        f"{notification.source} · {notification.occurrences} occurrences"
        f" ({notification.suppressed_count} suppressed) · alert {notification.alert_id}"
        f" · fingerprint {notification.fingerprint}",
        MAX_FOOTER_CHARS,
    )
    budget = MAX_EMBED_CHARS - len(title) - len(footer)
    description = truncate_markdown(
        templates.render("body", variables) or escape(notification.summary),
        min(MAX_DESCRIPTION_CHARS, budget),
    )
    budget -= len(description)

    resolved = notification.status == "resolved" or notification.reason == "resolved"
    embed: dict[str, Any] = {
        "title": title,
        "color": RESOLVED_COLOR if resolved else COLORS.get(notification.severity, 0),
        "timestamp": notification.last_seen,
        "footer": {"text": footer},
    }
    if description:
        embed["description"] = description
    if raw["alert_url"]:
        embed["url"] = raw["alert_url"]
    fields = _fit(_candidate_fields(notification), budget)
    if fields:
        embed["fields"] = fields
    return {"content": content, "embeds": [embed], "allowed_mentions": {"parse": []}}


def embed_chars(embed: dict[str, Any]) -> int:
    """The characters Discord counts against an embed's 6000: title, description, field
    names and values, footer text, author name."""
    fields = embed.get("fields", [])
    return (
        len(embed.get("title", ""))
        + len(embed.get("description", ""))
        + sum(len(field["name"]) + len(field["value"]) for field in fields)
        + len(embed.get("footer", {}).get("text", ""))
        + len(embed.get("author", {}).get("name", ""))
    )


class DiscordChannel(PayloadChannel):
    kind = "discord"

    def __init__(self, name: str, config: DiscordConfig, env: ChannelEnv) -> None:
        url = execute_url(check_url(config.url, "https://discord.com/api/webhooks/..."))
        super().__init__(name, url, config, env, payload)


def _build(name: str, config: ReceiverConfig, env: ChannelEnv) -> DiscordChannel:
    assert isinstance(config, DiscordConfig)
    return DiscordChannel(name, config, env)


KIND = ChannelKind(name="discord", config_type=DiscordConfig, build=_build)
