"""``slack``: a Block Kit message posted to a Slack incoming webhook.

The receiver's ``url`` is an incoming-webhook URL (``https://hooks.slack.com/services/...``).
Slack answers 200 ``ok``; errors come as 400 ``invalid_payload``, 403, 404, 410 (all
permanent) or 500 (retryable), and 429 with ``Retry-After``: the shared classifier in
``channels/http.py`` already reads them that way.

Slack documentation relied on:

- Incoming webhooks: a JSON POST with ``text`` and ``blocks``; with blocks, ``text`` is
  the fallback shown in notifications:
  https://api.slack.com/messaging/webhooks
- Incoming-webhook error answers (400 invalid_payload, 403 action_prohibited, 404
  channel_not_found, 410 channel_is_archived, 500 rollup_error):
  https://api.slack.com/changelog/2016-05-17-changes-to-errors-for-incoming-webhooks
- Section block: ``text`` 1-3000 characters, ``fields`` at most 10 items of at most
  2000 characters each:
  https://docs.slack.dev/reference/block-kit/blocks/section-block
- Context block: at most 10 elements:
  https://docs.slack.dev/reference/block-kit/blocks/context-block
- Header block (``plain_text``, 150 characters; not used, see below):
  https://docs.slack.dev/reference/block-kit/blocks/header-block
- Text object: ``mrkdwn`` text 1-3000 characters; ``verbatim: true`` stops Slack from
  auto-linking URLs, link-ifying channel names and parsing mentions in the text:
  https://docs.slack.dev/reference/block-kit/composition-objects/text-object
- Escaping: ``&``, ``<`` and ``>`` are control characters and must be sent as ``&amp;``,
  ``&lt;`` and ``&gt;`` when they are not markup; links are ``<url|text>``:
  https://api.slack.com/reference/surfaces/formatting

Choices:

- Untrusted text (every notification field: summary, labels, details, source, ...) is
  escaped *before* it reaches the templates, so a receiver's ``templates`` may use
  mrkdwn and ``<url|text>`` links while an alert's fields cannot form a link, a
  ``<!channel>``/``<!here>`` broadcast or a ``<@U123>`` mention; every text object is
  ``verbatim`` so a plain ``@channel`` or URL in an alert is not parsed either.
- The headline is a ``section`` (severity emoji + bold title), not a ``header``: a
  header is ``plain_text``, whose treatment of ``&amp;`` entities is not documented, so
  one escaping rule (mrkdwn) covers every block. Emoji: critical ``:red_circle:``,
  error ``:large_orange_circle:``, warning ``:large_yellow_circle:``, info
  ``:large_blue_circle:``; a resolved notification ``:white_check_mark:``.
- Limits are met by cutting (a cut ends with "…", never inside an entity), never by
  failing: every text object at most 3000 characters, at most 10 label fields (the
  10th says how many more) of at most 2000, details summarized to 10 keys of 200
  characters, the fallback ``text`` at most 3000.

A group notification (DESIGN.md section 11) is one message:

- a ``header`` block (``plain_text``, at most 150 characters, emoji shortcodes on)
  with the group's status and alert count only, text tocsin writes (no alert text, so
  the ``plain_text`` escaping question above does not arise);
- a section with the receiver's ``group_title`` in bold and the group's labels;
- one compact section per alert, most severe first: severity emoji (or the resolved
  one), the receiver's ``title`` for that alert in bold, its own reason when not
  ``firing``, then its labels (those the group does not share) and a link to it;
- a context block naming the group key and notification id, and "and N more" when
  alerts are not shown (the route's ``truncated_alerts`` plus those left out here).

Limits: at most 50 blocks in a message
(https://docs.slack.dev/reference/block-kit/blocks), so at most 47 alert sections;
header text 150 (https://docs.slack.dev/reference/block-kit/blocks/header-block);
section text 3000, an alert's section cut to ``MAX_ALERT_SECTION_CHARS``; and all the
text of the blocks within ``MAX_GROUP_TEXT_CHARS``: Slack refuses messages whose blocks
hold more than about 12,000-13,000 characters in total with ``msg_blocks_too_long``, a
limit it does not document (https://github.com/slackapi/bolt-js/issues/2509,
https://github.com/slackapi/bolt-js/issues/2867). Alerts are listed while they fit.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit

from tocsin.channels import ChannelEnv, ChannelKind, ReceiverConfig
from tocsin.channels.grouped import (
    alert_count,
    and_more,
    first_summary,
    fit,
    in_order,
    not_shown,
    pairs_text,
    shared_labels,
)
from tocsin.channels.http import PayloadChannel, check_url
from tocsin.channels.templates import Templates, context, escaped, group_context
from tocsin.channels.text import collapse_whitespace, details_lines, map_strings, truncate
from tocsin.core.contracts import AlertInGroup, GroupNotification, Notification

MAX_TEXT_CHARS = 3000
MAX_FIELDS = 10
MAX_FIELD_CHARS = 2000
MAX_FIELD_KEY_CHARS = 200
MAX_FALLBACK_CHARS = 3000
MAX_DETAIL_KEYS = 10
MAX_DETAIL_KEY_CHARS = 64
MAX_DETAIL_VALUE_CHARS = 200
MAX_CONTEXT_CHARS = 500
OPEN_LINK_TEXT = "Open in tocsin"
MAX_BLOCKS = 50
MAX_HEADER_CHARS = 150
MAX_GROUP_TEXT_CHARS = 10_000  # every text object of a group's message, together
MAX_ALERT_SECTION_CHARS = 600
MAX_ALERT_TITLE_CHARS = 250
MAX_ALERT_LABELS_CHARS = 300
GROUP_FRAME_BLOCKS = 3  # header, headline, context: the rest may list alerts

SEVERITY_EMOJI = {
    "critical": ":red_circle:",
    "error": ":large_orange_circle:",
    "warning": ":large_yellow_circle:",
    "info": ":large_blue_circle:",
}
RESOLVED_EMOJI = ":white_check_mark:"


class SlackConfig(ReceiverConfig, kw_only=True, forbid_unknown_fields=True):
    url: str


def matches_url(url: str) -> bool:
    """Whether ``url`` is a Slack incoming-webhook URL (``hooks.slack.com/services/...``)."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return False
    segments = [segment for segment in parts.path.split("/") if segment]
    return (
        parts.scheme.lower() in ("http", "https")
        and (parts.hostname or "") == "hooks.slack.com"
        and len(segments) >= 2
        and segments[0] == "services"
    )


def escape(text: str) -> str:
    """``text`` as literal mrkdwn: only ``&``, ``<`` and ``>`` are entity-encoded."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _without_half_entity(kept: str) -> str:
    """``kept`` without the entity a cut broke at its end (``&am`` of ``&amp;``)."""
    amp = kept.rfind("&")
    if amp != -1 and ";" not in kept[amp:] and len(kept) - amp <= len("&amp"):
        return kept[:amp]
    return kept


def truncate_mrkdwn(text: str, limit: int) -> str:
    """``text`` (escaped mrkdwn) in at most ``limit`` characters (``text.truncate``: a cut
    ends with "…"), never leaving half an entity (``&am``) behind."""
    return truncate(text, limit, tidy_end=_without_half_entity)


def _mrkdwn(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text, "verbatim": True}


def _link_target(url: str) -> str:
    """A URL safe inside ``<url|text>``: ``|``, ``<``, ``>`` and spaces percent-encoded,
    ``&`` entity-encoded as Slack asks."""
    return escape(quote(url, safe=":/?#[]@!$&'()*+,;=%~"))


def _label_fields(labels: dict[str, str]) -> list[dict[str, Any]]:
    items = sorted(labels.items())
    shown = items if len(items) <= MAX_FIELDS else items[: MAX_FIELDS - 1]
    fields = []
    for key, value in shown:
        name = truncate_mrkdwn(escape(key), MAX_FIELD_KEY_CHARS)
        head = f"*{name}*\n"
        fields.append(
            _mrkdwn(head + truncate_mrkdwn(escape(value) or " ", MAX_FIELD_CHARS - len(head)))
        )
    hidden = items[len(shown) :]
    if hidden:
        names = ", ".join(escape(key) for key, _ in hidden)
        more = f"*+{len(hidden)} more labels*\n"
        fields.append(_mrkdwn(more + truncate_mrkdwn(names, MAX_FIELD_CHARS - len(more))))
    return fields


def payload(
    notification: Notification, templates: Templates, dashboard_url: str | None = None
) -> dict[str, Any]:
    """The incoming-webhook body for ``notification`` (pure)."""
    raw = context(notification, dashboard_url)
    variables = {key: map_strings(value, escape) for key, value in raw.items()}
    summary = escape(notification.summary)
    title = collapse_whitespace(templates.render("title", variables) or summary)
    body = templates.render("body", variables) or summary

    resolved = notification.status == "resolved" or notification.reason == "resolved"
    emoji = RESOLVED_EMOJI if resolved else SEVERITY_EMOJI.get(notification.severity, "")
    prefix = f"{emoji} *" if emoji else "*"
    headline = prefix + truncate_mrkdwn(title, MAX_TEXT_CHARS - len(prefix) - 1) + "*"

    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": _mrkdwn(headline)},
        {"type": "section", "text": _mrkdwn(truncate_mrkdwn(body, MAX_TEXT_CHARS))},
    ]
    if notification.labels:
        blocks.append({"type": "section", "fields": _label_fields(notification.labels)})
    if notification.details:
        opening, closing = "*Details*\n```\n", "\n```"
        lines = escape(
            "\n".join(
                details_lines(
                    notification.details,
                    max_keys=MAX_DETAIL_KEYS,
                    max_key_chars=MAX_DETAIL_KEY_CHARS,
                    max_value_chars=MAX_DETAIL_VALUE_CHARS,
                )
            )
        )
        room = MAX_TEXT_CHARS - len(opening) - len(closing)
        blocks.append(
            {"type": "section", "text": _mrkdwn(opening + truncate_mrkdwn(lines, room) + closing)}
        )

    elements = [
        _mrkdwn(truncate_mrkdwn(f"Source: *{escape(notification.source)}*", MAX_CONTEXT_CHARS)),
        _mrkdwn(truncate_mrkdwn(f"Alert `{escape(notification.alert_id)}`", MAX_CONTEXT_CHARS)),
        _mrkdwn(
            f"Occurrences: {notification.occurrences} ({notification.suppressed_count} suppressed)"
        ),
    ]
    if raw["alert_url"]:
        elements.append(_mrkdwn(f"<{_link_target(raw['alert_url'])}|{OPEN_LINK_TEXT}>"))
    blocks.append({"type": "context", "elements": elements})
    return {"text": truncate_mrkdwn(title, MAX_FALLBACK_CHARS), "blocks": blocks}


def _emoji(severity: str, resolved: bool) -> str:
    return RESOLVED_EMOJI if resolved else SEVERITY_EMOJI.get(severity, "")


def _alert_section(
    alert: AlertInGroup,
    variables: dict[str, Any],
    templates: Templates,
    shared: list[str],
) -> dict[str, Any]:
    """One alert of a group as a compact section; ``variables`` are its escaped
    template variables (``templates.alert_context``)."""
    title = collapse_whitespace(templates.render("title", variables)) or escape(alert.summary)
    emoji = _emoji(alert.severity, alert.status == "resolved" or alert.reason == "resolved")
    prefix = f"{emoji} *" if emoji else "*"
    line = prefix + truncate_mrkdwn(title, MAX_ALERT_TITLE_CHARS) + "*"
    if alert.reason != "firing":
        line += f" _{alert.reason}_"
    link = variables["alert_url"]
    opener = f"<{_link_target(link)}|{OPEN_LINK_TEXT}>" if link else ""
    room = MAX_ALERT_SECTION_CHARS - len(line) - len("\n") - len(" · ") - len(opener)
    if room < 0:  # a dashboard URL too long to link from here
        opener, room = "", MAX_ALERT_SECTION_CHARS - len(line) - len("\n")
    labels = escape(pairs_text(alert.labels, skip=shared))
    parts = [truncate_mrkdwn(labels, min(room, MAX_ALERT_LABELS_CHARS)) if labels else ""]
    details = " · ".join(part for part in [*parts, opener] if part)
    return {"type": "section", "text": _mrkdwn(line + ("\n" + details if details else ""))}


def _context_elements(group: GroupNotification, hidden: int) -> list[dict[str, Any]]:
    elements = [
        _mrkdwn(truncate_mrkdwn(f"Group `{escape(group.group_key)}`", MAX_CONTEXT_CHARS)),
        _mrkdwn(truncate_mrkdwn(f"Notification `{escape(group.notification_id)}`", 200)),
    ]
    if hidden:
        elements.append(_mrkdwn(f"*{and_more(hidden)}*"))
    return elements


def _text_chars(block: dict[str, Any]) -> int:
    """The characters of a block's text objects."""
    texts = [block["text"]] if "text" in block else []
    texts += block.get("fields", []) + block.get("elements", [])
    return sum(len(text["text"]) for text in texts)


def group_payload(
    group: GroupNotification, templates: Templates, dashboard_url: str | None = None
) -> dict[str, Any]:
    """The incoming-webhook body for a group notification: one message (pure)."""
    group = in_order(group)
    variables = escaped(group_context(group, dashboard_url), escape)
    count = alert_count(group)
    title = collapse_whitespace(templates.render("group_title", variables)) or escape(
        first_summary(group)
    )
    resolved = group.status == "resolved"
    emoji = _emoji(group.severity, resolved)
    header_text = truncate(f"{emoji} {group.status.upper()}: {count} alerts", MAX_HEADER_CHARS)
    header = {"type": "header", "text": {"type": "plain_text", "text": header_text, "emoji": True}}
    headline = "*" + truncate_mrkdwn(title, MAX_TEXT_CHARS // 2) + "*"
    if group.group_labels:
        headline += "\n" + truncate_mrkdwn(escape(pairs_text(group.group_labels)), 1000)
    top = {"type": "section", "text": _mrkdwn(headline)}

    # Room for the alerts: what the frame leaves, counting the longest "and N more".
    widest_context = {"type": "context", "elements": _context_elements(group, count)}
    budget = MAX_GROUP_TEXT_CHARS - len(header_text) - _text_chars(top)
    budget -= _text_chars(widest_context)
    shared = shared_labels(group)
    sections = fit(
        (
            _alert_section(alert, alert_variables, templates, shared)
            for alert, alert_variables in zip(group.alerts, variables["alerts"], strict=True)
        ),
        _text_chars,
        budget,
        max_items=MAX_BLOCKS - GROUP_FRAME_BLOCKS,
    )
    hidden = not_shown(group, len(sections))
    context_block = {"type": "context", "elements": _context_elements(group, hidden)}
    return {
        "text": truncate_mrkdwn(title, MAX_FALLBACK_CHARS),
        "blocks": [header, top, *sections, context_block],
    }


class SlackChannel(PayloadChannel):
    kind = "slack"

    def __init__(self, name: str, config: SlackConfig, env: ChannelEnv) -> None:
        url = check_url(config.url, "https://hooks.slack.com/services/...")
        super().__init__(name, url, config, env, payload, group_payload)


def _build(name: str, config: ReceiverConfig, env: ChannelEnv) -> SlackChannel:
    assert isinstance(config, SlackConfig)
    return SlackChannel(name, config, env)


KIND = ChannelKind(name="slack", config_type=SlackConfig, build=_build)
