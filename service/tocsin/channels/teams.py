"""``teams``: an Adaptive Card posted to a Microsoft Teams Workflows webhook.

The receiver's ``url`` is the HTTP POST URL of a Teams workflow (Power Automate) started
by "When a Teams webhook request is received", whose "Post card in a chat or channel"
step posts ``attachments[0].content``. Such a webhook answers 202 Accepted (sometimes
200); any 2xx is a success, and every other answer is classified like the webhook
channel's (429 with ``Retry-After``, 408 and 5xx retryable, other 4xx permanent).

Documentation relied on:

- Office 365 connectors are retired in favour of Workflows and the "When a Teams
  webhook request is received" trigger; Workflows take Adaptive Cards only; a message
  is at most 28 KB; more than four requests a second are throttled:
  https://learn.microsoft.com/en-us/microsoftteams/platform/webhooks-and-connectors/how-to/add-incoming-webhook
- The request body (``type: message``, ``attachments`` of ``contentType``
  ``application/vnd.microsoft.card.adaptive`` with ``contentUrl: null`` and the card as
  ``content``) and ``Action.OpenUrl`` among the supported actions:
  https://learn.microsoft.com/en-us/microsoftteams/platform/webhooks-and-connectors/how-to/connectors-using
- Teams renders Adaptive Card features of schema v1.5 or earlier:
  https://learn.microsoft.com/en-us/microsoftteams/platform/task-modules-and-cards/cards/cards-reference
  https://learn.microsoft.com/en-us/microsoft-copilot-studio/guidance/adaptive-cards-overview
- Markdown is rendered in ``TextBlock`` text and in ``Fact.title``/``Fact.value``
  (bold, italic, lists, ``[Title](url)`` links; no HTML); a line break outside a list
  needs ``\\n\\n``:
  https://learn.microsoft.com/en-us/microsoftteams/platform/task-modules-and-cards/cards/cards-format
  https://learn.microsoft.com/adaptive-cards/create/textfeatures
- ``TextBlock`` ``color`` (default, dark, light, accent, good, warning, attention),
  ``weight`` (lighter, default, bolder), ``wrap``; ``FactSet``; ``Action.OpenUrl``:
  https://adaptivecards.io/explorer/TextBlock.html
  https://learn.microsoft.com/en-us/adaptive-cards/schema-explorer/fact-set
  https://learn.microsoft.com/adaptive-cards/schema-explorer/action-open-url
- Workflows webhooks answer 202 Accepted with an empty body (not in Microsoft's pages;
  reported by their users): https://github.com/Skitionek/notify-microsoft-teams/issues/98

Choices:

- Card version ``1.4``: below Teams' ceiling of 1.5, and everything used here
  (``TextBlock``, ``FactSet``, ``Action.OpenUrl``) exists since 1.0, so older clients
  render it too.
- Title colour by severity: ``attention`` for critical and error, ``warning`` for
  warning, ``accent`` for info; a ``resolved`` notification is ``good`` whatever its
  severity, so a resolved critical alert does not look like a firing one.
- Untrusted text (every notification field: summary, labels, details, source, ...) is
  neutralized *before* it reaches the templates, so markdown an operator writes in a
  ``templates`` table keeps working while markdown smuggled in an alert cannot form a
  link: ``[ ] ( ) < >`` in those values become their fullwidth look-alikes (U+FF3B,
  U+FF3D, U+FF08, U+FF09, U+FF1C, U+FF1E). Without ``[``/``]`` no inline link,
  reference link or link definition can start; without ``<``/``>`` no autolink; and
  without ``(``/``)`` no ``](`` can be completed by a value placed right after a
  template's own ``]`` (nor a ``{{DATE(...)}}`` card function run). Substitution rather
  than backslash escapes: the Adaptive Card docs do not promise that every Teams client
  honours CommonMark escapes, and an unhonoured escape would leave the link live; a
  substituted character cannot become syntax on any renderer, and reads the same.
  ``*`` and ``_`` are left alone: emphasis is cosmetic, not a way out of the card. Bare
  ``http(s)`` URLs may still be auto-linked by Teams, as in any chat message; the
  fact titles and values (labels, source) are neutralized the same way, and control
  characters are dropped. The ``Open in tocsin`` action takes ``alert_url`` as tocsin
  built it (dashboard URL + alert id), never text from the alert.
- Limits instead of failures: title 256 characters, body 4000, at most 20 label facts
  (fact titles 64, values 128 characters) plus severity, source and occurrences, a
  "more labels" fact for the rest; the body is cut further if the encoded message would
  pass Teams' 28 KB limit. A cut ends with "…".

A group notification (DESIGN.md section 11) is one card: the receiver's
``group_title`` (coloured by the group's severity, ``good`` once resolved), a line with
the status and alert count, the group's labels as a FactSet, then one ``Container``
per alert, most severe first (separator; the receiver's ``title`` for that alert,
coloured by its severity, with its reason when not ``firing``; the labels the group
does not share; the whole container opening the alert in tocsin when a dashboard is
configured, ``selectAction``:
https://adaptivecards.io/explorer/Container.html), and "and N more" for the alerts not
shown. Alerts are listed while the encoded message stays within ``MAX_MESSAGE_BYTES``
(Teams' 28 KB, above); the rest are counted.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from tocsin.channels import ChannelEnv, ChannelKind, ReceiverConfig, compile_templates
from tocsin.channels.grouped import (
    alert_count,
    and_more,
    fit,
    in_order,
    not_shown,
    pairs_text,
    shared_labels,
)
from tocsin.channels.http import JsonPoster, check_url
from tocsin.channels.templates import Templates, context, escaped, group_context
from tocsin.channels.text import ELLIPSIS, collapse_whitespace, map_strings, truncate
from tocsin.core.contracts import AlertInGroup, Body, GroupNotification, Notification
from tocsin.core.policy.retry import SendResult

CARD_SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
CARD_VERSION = "1.4"
CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"

MAX_TITLE_CHARS = 256
MAX_BODY_CHARS = 4000
MAX_LABEL_FACTS = 20
MAX_FACT_TITLE_CHARS = 64
MAX_FACT_VALUE_CHARS = 128
MAX_MESSAGE_BYTES = 27 * 1024  # Teams refuses messages over 28 KB; keep a margin
OPEN_ACTION_TITLE = "Open in tocsin"
MAX_ALERT_LABELS_CHARS = 300  # an alert's line of labels in a group's card

SEVERITY_COLORS: dict[str, str] = {
    "critical": "attention",
    "error": "attention",
    "warning": "warning",
    "info": "accent",
}
RESOLVED_COLOR = "good"

_MARKDOWN_SAFE = str.maketrans(
    {
        "[": "\N{FULLWIDTH LEFT SQUARE BRACKET}",
        "]": "\N{FULLWIDTH RIGHT SQUARE BRACKET}",
        "(": "\N{FULLWIDTH LEFT PARENTHESIS}",
        ")": "\N{FULLWIDTH RIGHT PARENTHESIS}",
        "<": "\N{FULLWIDTH LESS-THAN SIGN}",
        ">": "\N{FULLWIDTH GREATER-THAN SIGN}",
        "\t": " ",
    }
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\x80-\x9f]")
_NEWLINES = re.compile(r"\r\n?|[\n\u2028\u2029]")
_BLANK_RUNS = re.compile(r"\n(?:[ \t]*\n)*")

_encoder = msgspec.json.Encoder()


class TeamsConfig(ReceiverConfig, kw_only=True, forbid_unknown_fields=True):
    url: str


def _neutral(text: str) -> str:
    return _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n")).translate(
        _MARKDOWN_SAFE
    )


def neutralize(value: Any) -> Any:
    """Untrusted text that markdown cannot turn into a link (see the module docstring);
    dicts and lists are walked, other values returned as they are."""
    return map_strings(value, _neutral)


def title_text(rendered: str) -> str:
    """The title on one line (a heading), cut to its limit."""
    return truncate(collapse_whitespace(rendered), MAX_TITLE_CHARS)


def body_text(rendered: str, limit: int = MAX_BODY_CHARS) -> str:
    """Each line of the body its own paragraph (Teams needs ``\\n\\n`` to break a line
    outside a list), cut to ``limit``."""
    text = _BLANK_RUNS.sub("\n\n", _NEWLINES.sub("\n", rendered).strip())
    return truncate(text, limit)


def color(notification: Notification) -> str:
    if notification.reason == "resolved":
        return RESOLVED_COLOR
    return SEVERITY_COLORS.get(notification.severity, "default")


def fact(title: str, value: str) -> dict[str, str]:
    """One fact of untrusted text, neutralized, on one line and cut."""
    return {
        "title": truncate(collapse_whitespace(neutralize(title)), MAX_FACT_TITLE_CHARS),
        "value": truncate(collapse_whitespace(neutralize(value)), MAX_FACT_VALUE_CHARS),
    }


def label_facts(labels: dict[str, str]) -> list[dict[str, str]]:
    """At most ``MAX_LABEL_FACTS`` labels by name, then one fact counting the rest."""
    items = sorted(labels.items())
    out = [fact(key, value) for key, value in items[:MAX_LABEL_FACTS]]
    if len(items) > MAX_LABEL_FACTS:
        out.append(fact(ELLIPSIS, f"{len(items) - MAX_LABEL_FACTS} more labels"))
    return out


def facts(notification: Notification) -> list[dict[str, str]]:
    """Severity, source, occurrences, then at most ``MAX_LABEL_FACTS`` labels by name."""
    out = [
        fact("Severity", notification.severity),
        fact("Source", notification.source),
        fact("Occurrences", str(notification.occurrences)),
    ]
    out.extend(label_facts(notification.labels))
    return out


def card(
    notification: Notification,
    title: str,
    body: str,
    alert_url: str | None,
) -> dict[str, Any]:
    """The Adaptive Card for a notification whose title and body are rendered."""
    actions: list[dict[str, Any]] = []
    if alert_url:
        actions.append({"type": "Action.OpenUrl", "title": OPEN_ACTION_TITLE, "url": alert_url})
    return {
        "$schema": CARD_SCHEMA,
        "type": "AdaptiveCard",
        "version": CARD_VERSION,
        "body": [
            {
                "type": "TextBlock",
                "text": title,
                "weight": "bolder",
                "size": "medium",
                "color": color(notification),
                "wrap": True,
            },
            {"type": "TextBlock", "text": body, "wrap": True},
            {"type": "FactSet", "facts": facts(notification)},
        ],
        "actions": actions,
    }


def message(content: dict[str, Any]) -> dict[str, Any]:
    """The Workflows webhook body around one card."""
    return {
        "type": "message",
        "attachments": [{"contentType": CARD_CONTENT_TYPE, "contentUrl": None, "content": content}],
    }


def _alert_container(
    alert: AlertInGroup, variables: dict[str, Any], templates: Templates, shared: list[str]
) -> dict[str, Any]:
    """One alert of a group; ``variables`` are its neutralized template variables."""
    title = title_text(templates.render("title", variables))
    if alert.reason != "firing":
        title += f" ({alert.reason})"
    resolved = alert.status == "resolved" or alert.reason == "resolved"
    items: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "text": title,
            "weight": "bolder",
            "color": RESOLVED_COLOR if resolved else SEVERITY_COLORS.get(alert.severity, "default"),
            "wrap": True,
        }
    ]
    labels = collapse_whitespace(neutralize(pairs_text(alert.labels, skip=shared)))
    if labels:
        items.append(
            {
                "type": "TextBlock",
                "text": truncate(labels, MAX_ALERT_LABELS_CHARS),
                "isSubtle": True,
                "spacing": "none",
                "wrap": True,
            }
        )
    container: dict[str, Any] = {"type": "Container", "separator": True, "items": items}
    if variables["alert_url"]:
        container["selectAction"] = {"type": "Action.OpenUrl", "url": variables["alert_url"]}
    return container


def _more_block(count: int) -> dict[str, Any]:
    return {"type": "TextBlock", "text": and_more(count), "isSubtle": True, "wrap": True}


def group_message(
    group: GroupNotification, templates: Templates, dashboard_url: str | None
) -> bytes:
    """The request body for a group notification: one card, within the size limit."""
    group = in_order(group)
    variables = escaped(group_context(group, dashboard_url), _neutral)
    count = alert_count(group)
    resolved = group.status == "resolved"
    head: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "text": title_text(templates.render("group_title", variables)),
            "weight": "bolder",
            "size": "medium",
            "color": RESOLVED_COLOR if resolved else SEVERITY_COLORS.get(group.severity, "default"),
            "wrap": True,
        },
        {"type": "TextBlock", "text": f"{group.status.upper()} · {count} alerts", "wrap": True},
    ]
    if group.group_labels:
        head.append({"type": "FactSet", "facts": label_facts(group.group_labels)})

    def encoded(body: list[dict[str, Any]]) -> bytes:
        content = {"$schema": CARD_SCHEMA, "type": "AdaptiveCard", "version": CARD_VERSION}
        return _encoder.encode(message({**content, "body": body, "actions": []}))

    # Room for the alerts: what the rest of the card leaves, with the longest "and N more".
    budget = MAX_MESSAGE_BYTES - len(encoded([*head, _more_block(count)]))
    shared = shared_labels(group)
    containers = fit(
        (
            _alert_container(alert, alert_variables, templates, shared)
            for alert, alert_variables in zip(group.alerts, variables["alerts"], strict=True)
        ),
        lambda container: len(_encoder.encode(container)) + len(","),
        budget,
    )
    hidden = not_shown(group, len(containers))
    return encoded([*head, *containers, *([_more_block(hidden)] if hidden else [])])


class TeamsChannel:
    kind = "teams"

    def __init__(self, name: str, config: TeamsConfig, env: ChannelEnv) -> None:
        self._url = check_url(config.url, "the Teams workflow's webhook URL")
        self._templates = compile_templates(config.templates, receiver=name)
        self._dashboard_url = env.dashboard_url
        self._poster = JsonPoster(env.version, config.timeout, connections=env.connections)

    def render(self, notification: Notification) -> bytes:
        """The request body: the card, its body cut further if the message is too big."""
        raw = context(notification, self._dashboard_url)
        variables = neutralize(raw)
        variables["alert_url"] = raw["alert_url"]  # built by tocsin, not by the publisher
        title = title_text(self._templates.render("title", variables))
        rendered_body = self._templates.render("body", variables)
        limit = MAX_BODY_CHARS
        while True:
            body = body_text(rendered_body, limit)
            encoded = _encoder.encode(message(card(notification, title, body, raw["alert_url"])))
            if len(encoded) <= MAX_MESSAGE_BYTES or limit <= 64:
                return encoded
            limit //= 2

    async def send(self, notification: Body, *, traceparent: str | None = None) -> SendResult:
        if isinstance(notification, GroupNotification):
            body = group_message(notification, self._templates, self._dashboard_url)
        else:
            body = self.render(notification)
        return await self._poster.post(self._url, body, traceparent)

    async def close(self) -> None:
        await self._poster.close()


def _build(name: str, config: ReceiverConfig, env: ChannelEnv) -> TeamsChannel:
    assert isinstance(config, TeamsConfig)
    return TeamsChannel(name, config, env)


KIND = ChannelKind(name="teams", config_type=TeamsConfig, build=_build)
