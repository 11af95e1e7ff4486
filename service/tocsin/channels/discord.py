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

A group notification (DESIGN.md section 11) is one message of at most 10 embeds
("embeds: up to 10 embed objects", Execute Webhook): ``content`` is the receiver's
``group_title`` (escaped values, 2000 characters); the first embed heads the group
(title ``group_title``, description the status and alert count, the group's labels
and "and N more" when alerts are not shown, colour the group's severity or green once
resolved, footer the group key and notification id); then one embed per alert, most
severe first (title the receiver's ``title`` for that alert, description its reason
when not ``firing`` and the labels the group does not share, its colour, its
``last_seen``, a link to it). Alerts are listed while they fit in 9 embeds and in the
6000 characters Discord allows across all the embeds of a message (embed limits,
above); the rest are counted in "and N more".
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from tocsin.channels import ChannelEnv, ChannelKind, ReceiverConfig
from tocsin.channels.grouped import (
    alert_count,
    and_more,
    first_summary,
    fit,
    in_order,
    latest_seen,
    not_shown,
    pairs_text,
    shared_labels,
)
from tocsin.channels.http import PayloadChannel, check_url
from tocsin.channels.templates import Templates, context, escaped, group_context
from tocsin.channels.text import collapse_whitespace, details_lines, map_strings, truncate
from tocsin.core.contracts import AlertInGroup, GroupNotification, Notification

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
MAX_EMBEDS = 10
MAX_GROUP_LABELS_CHARS = 1000  # the group's labels in its head embed
MAX_ALERT_DESCRIPTION_CHARS = 300  # an alert's embed in a group: compact

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


def _colour(severity: str, resolved: bool) -> int:
    return RESOLVED_COLOR if resolved else COLORS.get(severity, 0)


def _alert_embed(
    alert: AlertInGroup, raw: dict[str, Any], templates: Templates, shared: list[str]
) -> dict[str, Any]:
    """One alert of a group as a compact embed; ``raw`` are its template variables
    (``templates.alert_context``), unescaped: a title renders no markdown."""
    title = collapse_whitespace(templates.render("title", raw) or alert.summary)
    resolved = alert.status == "resolved" or alert.reason == "resolved"
    parts = [f"*{alert.reason}*"] if alert.reason != "firing" else []
    labels = pairs_text(alert.labels, skip=shared)
    if labels:
        parts.append(escape(labels))
    embed: dict[str, Any] = {
        "title": truncate_markdown(title, MAX_TITLE_CHARS) or EMPTY_VALUE,
        "color": _colour(alert.severity, resolved),
        "timestamp": alert.last_seen,
    }
    description = truncate_markdown(" · ".join(parts), MAX_ALERT_DESCRIPTION_CHARS)
    if description:
        embed["description"] = description
    if raw["alert_url"]:
        embed["url"] = raw["alert_url"]
    return embed


def group_payload(
    group: GroupNotification, templates: Templates, dashboard_url: str | None = None
) -> dict[str, Any]:
    """The Execute Webhook body for a group notification: one message (pure)."""
    group = in_order(group)
    raw = group_context(group, dashboard_url)
    variables = escaped(raw, escape)
    count = alert_count(group)
    content = truncate_markdown(
        collapse_whitespace(templates.render("group_title", variables))
        or escape(first_summary(group)),
        MAX_CONTENT_CHARS,
    )
    title = truncate_markdown(
        collapse_whitespace(templates.render("group_title", raw)) or first_summary(group),
        MAX_TITLE_CHARS,
    )
    lines = [f"**{group.status.upper()}** · {count} alerts"]
    if group.group_labels:
        labels = escape(pairs_text(group.group_labels))
        lines.append(truncate_markdown(labels, MAX_GROUP_LABELS_CHARS))
    footer = truncate_markdown(
        f"group {group.group_key} · notification {group.notification_id}", MAX_FOOTER_CHARS
    )
    head: dict[str, Any] = {
        "title": title or EMPTY_VALUE,
        "description": "\n".join(lines),
        "color": _colour(group.severity, group.status == "resolved"),
        "footer": {"text": footer},
    }
    newest = latest_seen(group)
    if newest:
        head["timestamp"] = newest

    # Room for the alerts: what the head leaves, counting the longest "and N more".
    budget = MAX_EMBED_CHARS - embed_chars(head) - len("\n" + and_more(count))
    shared = shared_labels(group)
    embeds = fit(
        (
            _alert_embed(alert, alert_raw, templates, shared)
            for alert, alert_raw in zip(group.alerts, raw["alerts"], strict=True)
        ),
        embed_chars,
        budget,
        max_items=MAX_EMBEDS - 1,
    )
    hidden = not_shown(group, len(embeds))
    if hidden:
        head["description"] += "\n" + and_more(hidden)
    return {"content": content, "embeds": [head, *embeds], "allowed_mentions": {"parse": []}}


class DiscordChannel(PayloadChannel):
    kind = "discord"

    def __init__(self, name: str, config: DiscordConfig, env: ChannelEnv) -> None:
        url = execute_url(check_url(config.url, "https://discord.com/api/webhooks/..."))
        super().__init__(name, url, config, env, payload, group_payload)


def _build(name: str, config: ReceiverConfig, env: ChannelEnv) -> DiscordChannel:
    assert isinstance(config, DiscordConfig)
    return DiscordChannel(name, config, env)


KIND = ChannelKind(name="discord", config_type=DiscordConfig, build=_build)
