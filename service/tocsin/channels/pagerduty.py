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
from tocsin.channels.http import JsonPoster, check_url, mask_in_error
from tocsin.channels.templates import Templates, context
from tocsin.channels.text import THREE_DOTS, truncate
from tocsin.core.contracts import Notification
from tocsin.core.policy.retry import SendResult
from tocsin.observability.redact import HIDDEN

DEFAULT_URL = "https://events.pagerduty.com/v2/enqueue"
MAX_SUMMARY = 1024  # payload.summary, "Send an Alert Event"

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
        self._templates = compile_templates(config.templates, receiver=name)
        self._dashboard_url = env.dashboard_url
        self._poster = JsonPoster(env.version, config.timeout)

    def __repr__(self) -> str:
        return f"PagerDutyChannel(name={self._name!r}, url={self._url!r})"

    async def send(
        self, notification: Notification, *, traceparent: str | None = None
    ) -> SendResult:
        body = _encoder.encode(
            event_body(notification, self._routing_key, self._templates, self._dashboard_url)
        )
        result = await self._poster.post(self._url, body, traceparent)
        return mask_in_error(result, self._routing_key)

    async def close(self) -> None:
        await self._poster.close()


def _build(name: str, config: ReceiverConfig, env: ChannelEnv) -> PagerDutyChannel:
    assert isinstance(config, PagerDutyConfig)
    return PagerDutyChannel(name, config, env)


KIND = ChannelKind(name="pagerduty", config_type=PagerDutyConfig, build=_build)
