"""``opsgenie``: create an Opsgenie alert per firing notification, close it when resolved.

Sources (Opsgenie's documentation):
- https://docs.opsgenie.com/docs/alert-api ("Alert API"): ``POST {url}/v2/alerts``
  (Create Alert) with ``message`` (mandatory, 130 characters), ``alias`` (the
  de-duplication key, 512), ``description`` (15000), ``tags``, ``details``, ``entity``
  (512), ``source`` (100), ``priority`` P1..P5 (default P3); ``POST
  {url}/v2/alerts/:identifier/close?identifierType=alias`` (Close Alert) with optional
  ``user``, ``source`` (100) and ``note`` (25000); the ``Authorization: GenieKey <key>``
  header; the EU instance at https://api.eu.opsgenie.com; and "requests are processed
  asynchronously ... valid requests are responded to with HTTP status 202 - Accepted".
- https://docs.opsgenie.com/docs/alert-api-continued: its samples put an alias in the
  path URL-encoded (``/v2/alerts/life%20is%20too%20short%20for%20no%20alias/...``).
- https://docs.opsgenie.com/docs/alerts-and-alert-fields: at most 20 tags of at most 50
  characters each; alias at most 512 characters.
- https://support.atlassian.com/jira-service-management-cloud/docs/what-are-alert-priorities/:
  P1 Critical, P2 High, P3 Moderate, P4 Low, P5 Informational.
- https://docs.opsgenie.com/docs/api-rate-limiting: over the limit, 429 Too Many Requests.
- The ``details`` limit of 8000 characters in total is the Create Alert table's as quoted
  at https://metainf.atlassian.net/wiki/pages/diffpages.action?originalId=2495480226&pageId=2510815273
  (the copy of docs.opsgenie.com searched did not show that row).

What tocsin sends:
- ``firing``, ``reminder``, ``escalated``: Create Alert with ``alias`` = the fingerprint
  (at most 128 characters, DESIGN.md section 4), so Opsgenie de-duplicates repeats into
  the open alert; ``message`` = the rendered ``title``; ``description`` = the rendered
  ``body``; ``tags`` = ``key:value`` of the labels; ``details`` = tocsin's fields, then
  the labels, then the alert's details (JSON text for non-strings), within 8000
  characters. ``entity`` is left out: no notification field names the "domain" Opsgenie
  means by it (a server or application) for every alert.
- ``resolved``: Close Alert by alias, the alias URL-encoded as one path segment.
- Priority from severity: critical P1 (Critical) and error P2 (High) page at once;
  warning P3 (Moderate) is Opsgenie's own default, the middle of the scale; info P5
  (Informational), not P4 (Low): an info alert is a record, not work to be done, and
  tocsin has no level between info and warning to spend P4 on.
- Opsgenie answers 202 to valid requests and processes them later, so 202 is delivered;
  http.post classifies the rest (429/408/5xx/transport retried, other 4xx dead-lettered).

A group notification (DESIGN.md section 11) is one Opsgenie alert:
- ``alias`` is the ``group_key``, or when it passes 512 characters its head and its
  SHA-256 (``grouped.short_key``), the same on every notification of the group;
- while the group fires: Create Alert with ``message`` = the receiver's
  ``group_title`` (default ``N alerts: <first summary>``; Opsgenie shows the priority
  on its own) cut to 130, ``description`` = ``group_body`` listing as many alerts as
  fit in 15000 characters and "and N more" for the rest, ``priority`` from the group's
  severity, ``tags`` from ``group_labels``, ``details`` the group's fields and labels,
  ``source`` the first alert's. Opsgenie de-duplicates a create for an open alias into
  the open alert (its count goes up; its message and description stay those of the
  first create);
- once its ``status`` is ``resolved``: Close Alert by that alias.

The API key is a secret: it travels in the ``Authorization`` header only, is kept out of
``repr`` of the config and the channel, and is masked in any error text.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import msgspec

from tocsin.channels import (
    ChannelConfigError,
    ChannelEnv,
    ChannelKind,
    ReceiverConfig,
    compile_templates,
)
from tocsin.channels.grouped import (
    alert_count,
    and_more,
    first_source,
    fit_rendered,
    in_order,
    not_shown,
    short_key,
)
from tocsin.channels.http import JsonPoster, check_url, mask_in_error
from tocsin.channels.templates import Templates, context, group_context, listing_first
from tocsin.channels.text import THREE_DOTS, truncate
from tocsin.core.contracts import Body, GroupNotification, Notification
from tocsin.core.policy.retry import SendResult
from tocsin.observability.redact import HIDDEN

DEFAULT_URL = "https://api.opsgenie.com"
MAX_MESSAGE = 130
MAX_ALIAS = 512
MAX_DESCRIPTION = 15000
MAX_SOURCE = 100
MAX_NOTE = 25000
MAX_TAGS = 20
MAX_TAG = 50
MAX_DETAILS_CHARS = 8000  # keys and values together
TRUNCATED_KEY = "_truncated"

# A group's message: Opsgenie shows the priority next to it.
DEFAULT_GROUP_TITLE = "{{ alert_count }} alerts: {{ first_summary }}"

PRIORITY: dict[str, str] = {"critical": "P1", "error": "P2", "warning": "P3", "info": "P5"}

_encoder = msgspec.json.Encoder()


class OpsgenieConfig(ReceiverConfig, kw_only=True, forbid_unknown_fields=True):
    # Empty by default so that a missing key reaches the channel, which names it in a
    # ChannelConfigError (``receivers.<name>.api_key: ...``).
    api_key: str = ""
    url: str = DEFAULT_URL

    def __repr__(self) -> str:
        return f"OpsgenieConfig(channel={self.channel!r}, url={self.url!r}, api_key={HIDDEN})"

    def __rich_repr__(self) -> list[tuple[str, Any]]:
        return [("channel", self.channel), ("url", self.url)]


def alias_of(notification: Notification) -> str:
    """The Opsgenie alias of an alert: its fingerprint, the same on create and close."""
    return truncate(notification.fingerprint, MAX_ALIAS, ellipsis=THREE_DOTS)


def tags_of(labels: dict[str, str]) -> list[str]:
    """``key:value`` per label, sorted, at most 20 tags of at most 50 characters."""
    return [
        truncate(f"{key}:{value}", MAX_TAG, ellipsis=THREE_DOTS)
        for key, value in sorted(labels.items())
    ][:MAX_TAGS]


def details_of(notification: Notification, alert_url: str | None) -> dict[str, str]:
    """The ``details`` map: tocsin's fields, the labels, then the alert's details; the
    first of a key wins; entries that would pass 8000 characters are left out and
    ``_truncated`` says so."""
    ours: dict[str, str] = {
        "alert_id": notification.alert_id,
        "notification_id": notification.notification_id,
        "reason": notification.reason,
        "type": notification.type,
        "severity": notification.severity,
        "fingerprint": notification.fingerprint,
        "occurrences": str(notification.occurrences),
        "suppressed_count": str(notification.suppressed_count),
        "first_seen": notification.first_seen,
        "last_seen": notification.last_seen,
    }
    if alert_url:
        ours["alert_url"] = alert_url
    candidates: list[tuple[str, str]] = list(ours.items())
    candidates += sorted(notification.labels.items())
    for key, value in notification.details.items():
        text = value if isinstance(value, str) else _encoder.encode(value).decode()
        candidates.append((key, text))
    return _bounded_details(candidates)


def _bounded_details(candidates: list[tuple[str, str]]) -> dict[str, str]:
    """``candidates`` as a ``details`` map: the first of a key wins; entries that would
    pass 8000 characters are left out and ``_truncated`` says so."""
    budget = MAX_DETAILS_CHARS - len(TRUNCATED_KEY) - len("true")
    out: dict[str, str] = {}
    used = 0
    cut = False
    for key, value in candidates:
        if key in out:
            continue
        size = len(key) + len(value)
        if used + size > budget:
            cut = True
            continue
        out[key] = value
        used += size
    if cut:
        out[TRUNCATED_KEY] = "true"
    return out


def create_body(
    notification: Notification, templates: Templates, dashboard_url: str | None = None
) -> dict[str, Any]:
    """The Create Alert body for a firing, reminder or escalated notification (pure)."""
    variables = context(notification, dashboard_url)
    title = templates.render("title", variables) or notification.summary
    return {
        "message": truncate(title, MAX_MESSAGE, ellipsis=THREE_DOTS),
        "alias": alias_of(notification),
        "description": truncate(
            templates.render("body", variables), MAX_DESCRIPTION, ellipsis=THREE_DOTS
        ),
        "priority": PRIORITY[notification.severity],
        "tags": tags_of(notification.labels),
        "details": details_of(notification, variables["alert_url"]),
        "source": truncate(notification.source, MAX_SOURCE, ellipsis=THREE_DOTS),
    }


def close_url(base_url: str, notification: Notification) -> str:
    """Close Alert by alias; the alias is one path segment, so ``/`` is encoded too."""
    return close_url_of(base_url, alias_of(notification))


def close_url_of(base_url: str, alias: str) -> str:
    """Close Alert for ``alias``, encoded as one path segment (``/`` included)."""
    return f"{base_url.rstrip('/')}/v2/alerts/{quote(alias, safe='')}/close?identifierType=alias"


def close_body(
    notification: Notification, templates: Templates, dashboard_url: str | None = None
) -> dict[str, Any]:
    """The Close Alert body for a resolved notification (pure)."""
    title = templates.render("title", context(notification, dashboard_url))
    return {
        "source": truncate(notification.source, MAX_SOURCE, ellipsis=THREE_DOTS),
        "note": truncate(
            f"Resolved in tocsin: {title or notification.summary}", MAX_NOTE, ellipsis=THREE_DOTS
        ),
    }


def group_alias(group: GroupNotification) -> str:
    """The Opsgenie alias of a group: its ``group_key`` within 512 characters, the same
    on create and close."""
    return short_key(group.group_key, MAX_ALIAS)


def group_details(group: GroupNotification, shown: int) -> dict[str, str]:
    """The ``details`` map of a group's alert: its fields, the ids of the ``shown``
    alerts the description lists, then its labels; within 8000 characters."""
    hidden = not_shown(group, shown)
    ours: dict[str, str] = {
        "notification_id": group.notification_id,
        "group_key": group.group_key,
        "reason": group.reason,
        "status": group.status,
        "severity": group.severity,
        "alert_count": str(alert_count(group)),
        "truncated_alerts": str(group.truncated_alerts),
        "not_shown": str(hidden),
    }
    if hidden:
        ours["and_more"] = and_more(hidden)
    ours["alert_ids"] = ", ".join(alert.alert_id for alert in group.alerts[:shown])
    return _bounded_details([*ours.items(), *sorted(group.group_labels.items())])


def group_create_body(
    group: GroupNotification, templates: Templates, dashboard_url: str | None = None
) -> dict[str, Any]:
    """The Create Alert body for a group that fires (pure)."""
    group = in_order(group)
    variables = group_context(group, dashboard_url)
    title = templates.render("group_title", variables)
    description, shown = fit_rendered(
        lambda count: templates.render("group_body", listing_first(variables, count)),
        len(group.alerts),
        MAX_DESCRIPTION,
    )
    return {
        "message": truncate(title or group.group_key, MAX_MESSAGE, ellipsis=THREE_DOTS),
        "alias": group_alias(group),
        "description": truncate(description, MAX_DESCRIPTION, ellipsis=THREE_DOTS),
        "priority": PRIORITY[group.severity],
        "tags": tags_of(group.group_labels),
        "details": group_details(group, shown),
        "source": truncate(first_source(group), MAX_SOURCE, ellipsis=THREE_DOTS),
    }


def group_close_body(
    group: GroupNotification, templates: Templates, dashboard_url: str | None = None
) -> dict[str, Any]:
    """The Close Alert body for a resolved group (pure)."""
    title = templates.render("group_title", group_context(in_order(group), dashboard_url))
    return {
        "source": truncate(first_source(group), MAX_SOURCE, ellipsis=THREE_DOTS),
        "note": truncate(
            f"Resolved in tocsin: {title or group.group_key}", MAX_NOTE, ellipsis=THREE_DOTS
        ),
    }


class OpsgenieChannel:
    kind = "opsgenie"

    def __init__(self, name: str, config: OpsgenieConfig, env: ChannelEnv) -> None:
        api_key = config.api_key.strip()
        if not api_key:
            raise ChannelConfigError("api_key", "api_key is required: an Opsgenie API key")
        self._name = name
        self._base = check_url(config.url, "https://api.opsgenie.com").rstrip("/")
        self._api_key = api_key
        self._templates = compile_templates(
            config.templates, {"group_title": DEFAULT_GROUP_TITLE}, receiver=name
        )
        self._dashboard_url = env.dashboard_url
        self._poster = JsonPoster(
            env.version,
            config.timeout,
            {"Authorization": f"GenieKey {api_key}"},
            connections=env.connections,
        )

    def __repr__(self) -> str:
        return f"OpsgenieChannel(name={self._name!r}, url={self._base!r})"

    async def send(self, notification: Body, *, traceparent: str | None = None) -> SendResult:
        if isinstance(notification, GroupNotification):
            url, payload = self._group_request(notification)
        elif notification.reason == "resolved":
            url = close_url(self._base, notification)
            payload = close_body(notification, self._templates, self._dashboard_url)
        else:
            url = f"{self._base}/v2/alerts"
            payload = create_body(notification, self._templates, self._dashboard_url)
        result = await self._poster.post(url, _encoder.encode(payload), traceparent)
        return mask_in_error(result, self._api_key)

    def _group_request(self, group: GroupNotification) -> tuple[str, dict[str, Any]]:
        """Where a group notification goes and what: close by alias once resolved,
        else create."""
        if group.status == "resolved":
            url = close_url_of(self._base, group_alias(group))
            return url, group_close_body(group, self._templates, self._dashboard_url)
        return f"{self._base}/v2/alerts", group_create_body(
            group, self._templates, self._dashboard_url
        )

    async def close(self) -> None:
        await self._poster.close()


def _build(name: str, config: ReceiverConfig, env: ChannelEnv) -> OpsgenieChannel:
    assert isinstance(config, OpsgenieConfig)
    return OpsgenieChannel(name, config, env)


KIND = ChannelKind(name="opsgenie", config_type=OpsgenieConfig, build=_build)
