"""``pagerduty``: one PagerDuty Events API v2 alert event per notification.

Sources (PagerDuty's developer documentation, also kept in github.com/PagerDuty/developer-docs):
- https://developer.pagerduty.com/docs/events-api-v2/trigger-events/ ("Send an Alert
  Event"): the endpoint, the body (``routing_key``, ``event_action``, ``dedup_key`` at
  most 255 characters, ``payload.summary`` at most 1024 characters, ``payload.source``,
  ``payload.severity`` one of critical/error/warning/info, optional ``timestamp``,
  ``component``, ``group``, ``class``, ``custom_details``; top-level ``links``, ``client``
  and ``client_url``), and the resolve example: ``routing_key``, ``dedup_key`` and
  ``event_action`` only, no ``payload``.
- https://developer.pagerduty.com/docs/events-api-v2/overview/ ("Response Codes & Retry
  Logic"): 202 accepted; 400 bad request, do not retry; 429 and 5xx and network errors,
  retry after some time. Payloads are limited to 512 KB.

What tocsin sends:
- ``firing``, ``reminder`` and ``escalated`` are ``trigger`` events, ``resolved`` is a
  ``resolve`` event; ``dedup_key`` is the alert's fingerprint on both, so PagerDuty
  applies the resolve to the alert the triggers opened (and, by its de-duplication rules,
  a trigger after the resolve opens a new alert, as tocsin does). A fingerprint is at most
  128 characters (DESIGN.md section 4), inside PagerDuty's 255.
- ``payload.summary`` is the receiver's rendered ``title`` template, cut to 1024
  characters; ``class`` is the alert type; ``component`` and ``group`` are taken from the
  alert's labels of those names when it has them (PD-CEF's own meaning of the words);
  ``custom_details`` carries labels, details and tocsin's counters; ``links`` points at
  the alert in the dashboard when one is configured.
- The verdict is ``http.post``'s: 2xx delivered, 429 (with ``Retry-After``) / 408 / 5xx /
  transport errors retried, other 4xx dead-lettered.

A group notification (DESIGN.md section 11) is one event, so a group is one PagerDuty
alert (and incident):
- ``dedup_key`` is the ``group_key``, or when it passes 255 characters its head and its
  SHA-256 (``grouped.short_key``), the same on every notification of the group;
- ``trigger`` while the group fires (``firing``, ``update``, ``reminder``: PagerDuty
  de-duplicates them into the open alert), ``resolve`` (the three keys only) once its
  ``status`` is ``resolved``;
- ``payload.summary`` is the receiver's ``group_title`` (default
  ``N alerts: <first summary>``: PagerDuty shows the severity on its own), cut to 1024;
  ``severity`` the group's; ``source`` the first alert's; ``timestamp`` the newest
  ``last_seen``;
- ``custom_details`` carries the group (``notification_id``, ``reason``, ``status``,
  ``group_key``, ``group_labels``, ``alert_count``, ``truncated_alerts``), ``alerts``
  (each alert's id, fingerprint, severity, status, reason, summary, source, type,
  labels, times, occurrences and dashboard link; as many as fit in
  ``MAX_GROUP_ALERTS_BYTES`` of JSON, far inside the 512 KB an event may be), and
  ``not_shown`` / ``and_more`` counting the alerts left out.

The routing key is a secret: it is sent in the body only, kept out of ``repr`` of the
config and the channel, and masked in any error text a provider might echo it into.
"""

from __future__ import annotations

from typing import Any

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
    fit,
    in_order,
    latest_seen,
    not_shown,
    short_key,
)
from tocsin.channels.http import JsonPoster, check_url, mask_in_error
from tocsin.channels.templates import Templates, alert_url, context, group_context
from tocsin.channels.text import THREE_DOTS, truncate
from tocsin.core.contracts import AlertInGroup, Body, GroupNotification, Notification
from tocsin.core.policy.retry import SendResult
from tocsin.observability.redact import HIDDEN

DEFAULT_URL = "https://events.pagerduty.com/v2/enqueue"
MAX_SUMMARY = 1024  # payload.summary, "Send an Alert Event"
MAX_DEDUP_KEY = 255  # dedup_key, "Send an Alert Event"
# The JSON of the alerts a group's custom_details lists, at most: half of the 512 KB an
# event may be ("Response Codes & Retry Logic"), the rest left for everything else.
MAX_GROUP_ALERTS_BYTES = 256 * 1024
# A group's summary: PagerDuty shows the severity next to it.
DEFAULT_GROUP_TITLE = "{{ alert_count }} alerts: {{ first_summary }}"

# tocsin's severities are PagerDuty's four, one for one; spelled out so a new tocsin
# severity fails loudly here instead of sending a value PagerDuty refuses with a 400.
SEVERITY: dict[str, str] = {
    "critical": "critical",
    "error": "error",
    "warning": "warning",
    "info": "info",
}

_encoder = msgspec.json.Encoder()


class PagerDutyConfig(ReceiverConfig, kw_only=True, forbid_unknown_fields=True):
    # Empty by default so that a missing key reaches the channel, which names it in a
    # ChannelConfigError (``receivers.<name>.routing_key: ...``).
    routing_key: str = ""
    url: str = DEFAULT_URL

    def __repr__(self) -> str:
        return f"PagerDutyConfig(channel={self.channel!r}, url={self.url!r}, routing_key={HIDDEN})"

    def __rich_repr__(self) -> list[tuple[str, Any]]:
        return [("channel", self.channel), ("url", self.url)]


def event_body(
    notification: Notification,
    routing_key: str,
    templates: Templates,
    dashboard_url: str | None = None,
) -> dict[str, Any]:
    """The Events API v2 body for ``notification`` (pure: no I/O)."""
    if notification.reason == "resolved":
        return {
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": notification.fingerprint,
        }
    variables = context(notification, dashboard_url)
    title = templates.render("title", variables) or notification.summary
    payload: dict[str, Any] = {
        "summary": truncate(title, MAX_SUMMARY, ellipsis=THREE_DOTS),
        "source": notification.source,
        "severity": SEVERITY[notification.severity],
        "timestamp": notification.last_seen,
        "class": notification.type,
    }
    for key in ("component", "group"):
        if notification.labels.get(key):
            payload[key] = notification.labels[key]
    payload["custom_details"] = {
        "reason": notification.reason,
        "alert_id": notification.alert_id,
        "notification_id": notification.notification_id,
        "occurrences": notification.occurrences,
        "suppressed_count": notification.suppressed_count,
        "first_seen": notification.first_seen,
        "labels": dict(notification.labels),
        "details": dict(notification.details),
    }
    body: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": notification.fingerprint,
        "payload": payload,
        "client": "tocsin",
    }
    alert_url = variables["alert_url"]
    if alert_url:
        body["client_url"] = alert_url
        body["links"] = [{"href": alert_url, "text": "Alert in tocsin"}]
    return body


def group_dedup_key(group: GroupNotification) -> str:
    """The ``dedup_key`` of a group's events: its ``group_key``, within 255 characters."""
    return short_key(group.group_key, MAX_DEDUP_KEY)


def _listed(alert: AlertInGroup, dashboard_url: str | None) -> dict[str, Any]:
    """One alert as a group's ``custom_details`` lists it (no ``details``: an alert's
    own details may be large, and they are one click away in tocsin)."""
    entry: dict[str, Any] = {
        "alert_id": alert.alert_id,
        "fingerprint": alert.fingerprint,
        "severity": alert.severity,
        "status": alert.status,
        "reason": alert.reason,
        "summary": alert.summary,
        "source": alert.source,
        "type": alert.type,
        "labels": dict(alert.labels),
        "first_seen": alert.first_seen,
        "last_seen": alert.last_seen,
        "occurrences": alert.occurrences,
    }
    link = alert_url(dashboard_url, alert.alert_id)
    if link:
        entry["alert_url"] = link
    return entry


def group_event_body(
    group: GroupNotification,
    routing_key: str,
    templates: Templates,
    dashboard_url: str | None = None,
) -> dict[str, Any]:
    """The Events API v2 body for a group notification (pure): one event per group."""
    dedup_key = group_dedup_key(group)
    if group.status == "resolved":
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": dedup_key}
    group = in_order(group)
    entries = fit(
        (_listed(alert, dashboard_url) for alert in group.alerts),
        lambda entry: len(_encoder.encode(entry)) + 1,  # and its comma
        MAX_GROUP_ALERTS_BYTES,
    )
    hidden = not_shown(group, len(entries))
    title = templates.render("group_title", group_context(group, dashboard_url))
    payload: dict[str, Any] = {
        "summary": truncate(title or group.group_key, MAX_SUMMARY, ellipsis=THREE_DOTS),
        "source": first_source(group),
        "severity": SEVERITY[group.severity],
    }
    newest = latest_seen(group)
    if newest:
        payload["timestamp"] = newest
    payload["custom_details"] = {
        "notification_id": group.notification_id,
        "reason": group.reason,
        "status": group.status,
        "group_key": group.group_key,
        "group_labels": dict(group.group_labels),
        "alert_count": alert_count(group),
        "truncated_alerts": group.truncated_alerts,
        "alerts": entries,
        "not_shown": hidden,
        "and_more": and_more(hidden),
    }
    return {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key,
        "payload": payload,
        "client": "tocsin",
    }


class PagerDutyChannel:
    kind = "pagerduty"

    def __init__(self, name: str, config: PagerDutyConfig, env: ChannelEnv) -> None:
        routing_key = config.routing_key.strip()
        if not routing_key:
            raise ChannelConfigError(
                "routing_key", "routing_key is required: the Events API v2 integration key"
            )
        self._name = name
        self._url = check_url(config.url, "https://events.pagerduty.com/v2/enqueue")
        self._routing_key = routing_key
        self._templates = compile_templates(
            config.templates, {"group_title": DEFAULT_GROUP_TITLE}, receiver=name
        )
        self._dashboard_url = env.dashboard_url
        self._poster = JsonPoster(env.version, config.timeout, connections=env.connections)

    def __repr__(self) -> str:
        return f"PagerDutyChannel(name={self._name!r}, url={self._url!r})"

    async def send(self, notification: Body, *, traceparent: str | None = None) -> SendResult:
        if isinstance(notification, GroupNotification):
            event = group_event_body(
                notification, self._routing_key, self._templates, self._dashboard_url
            )
        else:
            event = event_body(
                notification, self._routing_key, self._templates, self._dashboard_url
            )
        body = _encoder.encode(event)
        result = await self._poster.post(self._url, body, traceparent)
        return mask_in_error(result, self._routing_key)

    async def close(self) -> None:
        await self._poster.close()


def _build(name: str, config: ReceiverConfig, env: ChannelEnv) -> PagerDutyChannel:
    assert isinstance(config, PagerDutyConfig)
    return PagerDutyChannel(name, config, env)


KIND = ChannelKind(name="pagerduty", config_type=PagerDutyConfig, build=_build)
