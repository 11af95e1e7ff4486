"""``webhook``: POST the notification JSON (schemas/notification.schema.json), or for a
group notification the group body exactly (schemas/group-notification.schema.json,
DESIGN.md section 11): one request per notification either way, with the same headers.

Headers: ``Content-Type``, ``Idempotency-Key`` (the notification id, stable across
retries and restarts), ``User-Agent: tocsin/<version>``, ``traceparent`` when traced,
custom ``headers``, and, when the receiver has a ``secret``, two signatures of the same
body at the same second (DESIGN.md section 10):

- the Standard Webhooks headers (https://www.standardwebhooks.com), which the
  ``standardwebhooks`` verifiers of every language accept: ``webhook-id`` (the
  notification id), ``webhook-timestamp`` (unix seconds) and ``webhook-signature:
  v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">``, keyed with the secret
  base64-decoded when it is written ``whsec_<base64>``, else with its UTF-8 bytes;
- ``X-Tocsin-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">``, keyed with
  the secret's UTF-8 bytes as written (``whsec_`` included), as before.

With ``format = "alertmanager"`` the body is Alertmanager's webhook payload, version 4
(DESIGN.md section 14; ``alertmanager_payload``), so consumers written for
Alertmanager read it unchanged; the headers are the same.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import time
from typing import Any, Literal
from urllib.parse import urlsplit

import msgspec

from tocsin.channels import (
    Channel,
    ChannelConfigError,
    ChannelEnv,
    ChannelKind,
    ReceiverConfig,
    discord,
    slack,
)
from tocsin.channels.http import JsonPoster, check_url
from tocsin.channels.http1 import HeaderError
from tocsin.core.contracts import (
    AlertInGroup,
    Body,
    EncodedGroup,
    GroupNotification,
    Notification,
)
from tocsin.core.policy.retry import SendResult

_encoder = msgspec.json.Encoder()
log = logging.getLogger("tocsin.channels.webhook")


class WebhookConfig(ReceiverConfig, kw_only=True, forbid_unknown_fields=True):
    url: str
    secret: str | None = None
    headers: dict[str, str] | None = None
    format: Literal["tocsin", "alertmanager"] = "tocsin"


AM_VERSION = "4"
AM_ZERO_TIME = "0001-01-01T00:00:00Z"  # Go's zero time.Time: a firing alert's endsAt
_GO_QUOTE_META = set("\\.+*?()|[]{}^$")  # what Go's regexp.QuoteMeta escapes


def alertmanager_payload(body: Body, external_url: str = "") -> dict[str, Any]:
    """Alertmanager's webhook ``Message`` (notify/webhook/webhook.go: ``template.Data``
    plus ``version``, ``groupKey``, ``truncatedAlerts``) for a tocsin notification: a
    group's alerts, or an ungrouped alert as a group of one. Labels are the alert's
    labels plus ``alertname`` (its type) and ``severity`` where they lack them;
    annotations its summary and details as strings (``generatorURL`` is its own
    field); common labels and annotations are those every listed alert shares, as
    Alertmanager computes them; the receiver name is escaped as Alertmanager escapes
    it (``regexp.QuoteMeta``)."""
    if isinstance(body, GroupNotification):
        alerts = [_am_alert(a) for a in body.alerts]
        group_key = body.group_key
        group_labels = {_am_label_name(k): v for k, v in body.group_labels.items()}
        truncated = body.truncated_alerts
    else:
        alerts = [_am_alert(body)]
        group_key = f'{{}}:{{fingerprint="{body.fingerprint}"}}'
        group_labels = {}
        truncated = 0
    return {
        "receiver": "".join(f"\\{c}" if c in _GO_QUOTE_META else c for c in body.receiver),
        "status": body.status,
        "alerts": alerts,
        "groupLabels": group_labels,
        "commonLabels": _common([a["labels"] for a in alerts]),
        "commonAnnotations": _common([a["annotations"] for a in alerts]),
        "externalURL": external_url,
        "version": AM_VERSION,
        "groupKey": group_key,
        "truncatedAlerts": truncated,
    }


def _am_alert(alert: Notification | AlertInGroup) -> dict[str, Any]:
    labels = {"alertname": alert.type, "severity": alert.severity, **alert.labels}
    details = dict(alert.details)
    generator = details.pop("generatorURL", "")
    annotations = {"summary": alert.summary}
    for key, value in details.items():
        annotations[key] = value if isinstance(value, str) else _encoder.encode(value).decode()
    resolved = alert.status == "resolved"
    return {
        "status": alert.status,
        "labels": labels,
        "annotations": annotations,
        "startsAt": alert.first_seen,
        "endsAt": alert.last_seen if resolved else AM_ZERO_TIME,
        "generatorURL": generator if isinstance(generator, str) else "",
        "fingerprint": alert.fingerprint,
    }


def _am_label_name(key: str) -> str:
    """A tocsin ``group_by`` key as the Alertmanager label it stands for."""
    if key == "type":
        return "alertname"
    return key.removeprefix("labels.")


def _common(sets: list[dict[str, str]]) -> dict[str, str]:
    """The pairs every one of ``sets`` has (Alertmanager's common labels/annotations)."""
    if not sets:
        return {}
    first, *rest = sets
    return {k: v for k, v in first.items() if all(s.get(k) == v for s in rest)}


def signature(secret: str, body: bytes, unix_seconds: int) -> str:
    """The ``X-Tocsin-Signature`` value for ``body`` at ``unix_seconds``."""
    digest = hmac.new(secret.encode(), f"{unix_seconds}.".encode() + body, hashlib.sha256)
    return f"t={unix_seconds},v1={digest.hexdigest()}"


STANDARD_SECRET_PREFIX = "whsec_"


def signing_key(secret: str) -> bytes:
    """The Standard Webhooks key of ``secret``: ``whsec_<base64>`` decoded (padding
    optional), any other string as its UTF-8 bytes. A ``ValueError`` that does not echo
    the secret when the part after ``whsec_`` is not base64 or is empty."""
    if not secret.startswith(STANDARD_SECRET_PREFIX):
        return secret.encode()
    encoded = secret.removeprefix(STANDARD_SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error:
        raise ValueError("a secret written whsec_... must be base64 after whsec_") from None
    if not key:
        raise ValueError("a secret written whsec_... needs a key after whsec_")
    return key


def standard_signature(key: bytes, message_id: str, unix_seconds: int, body: bytes) -> str:
    """The Standard Webhooks ``webhook-signature`` value for ``body``."""
    signed = f"{message_id}.{unix_seconds}.".encode() + body
    return "v1," + base64.b64encode(hmac.digest(key, signed, "sha256")).decode()


class WebhookChannel:
    kind = "webhook"

    def __init__(self, name: str, config: WebhookConfig, env: ChannelEnv) -> None:
        self._url = check_url(config.url)
        self._secret = config.secret
        self._key = b""
        if config.secret:
            try:
                self._key = signing_key(config.secret)
            except ValueError as error:
                raise ChannelConfigError("secret", str(error)) from None
        try:
            self._poster = JsonPoster(
                env.version, config.timeout, config.headers, connections=env.connections
            )
        except HeaderError as error:
            raise ChannelConfigError("headers", str(error)) from None
        self._alertmanager = config.format == "alertmanager"
        self._external_url = env.dashboard_url or ""

    async def send(self, notification: Body, *, traceparent: str | None = None) -> SendResult:
        if self._alertmanager:
            body = _encoder.encode(alertmanager_payload(notification, self._external_url))
        else:
            body = _encoder.encode(notification)  # an alert's body or a group's, as it is
        return await self._post(notification.notification_id, body, traceparent)

    async def send_encoded_alert(
        self, notification: Notification, encoded: bytes, *, traceparent: str | None = None
    ) -> SendResult:
        """``send`` of an alert's notification, given its JSON (``encoded``): tocsin's
        format posts those bytes, what ``send`` would encode; Alertmanager's renders."""
        if self._alertmanager:
            return await self.send(notification, traceparent=traceparent)
        return await self._post(notification.notification_id, encoded, traceparent)

    async def send_encoded(
        self, group: EncodedGroup, *, traceparent: str | None = None
    ) -> SendResult:
        """A group's notification with its alerts as the router encoded them: the group
        body is those bytes spliced in, the same as ``send`` of the decoded group would
        post, without decoding a few hundred alerts to encode them again (issue #20's
        W5). Alertmanager's format renders the alerts, so it decodes them."""
        if self._alertmanager:
            return await self.send(group.decoded(), traceparent=traceparent)
        return await self._post(group.notification_id, _encoder.encode(group), traceparent)

    async def _post(self, nid: str, body: bytes, traceparent: str | None) -> SendResult:
        """POST ``body`` with the headers of notification ``nid`` (signed with a secret)."""
        headers = {"Idempotency-Key": nid}
        if self._secret:
            now = int(time.time())
            headers["webhook-id"] = nid
            headers["webhook-timestamp"] = str(now)
            headers["webhook-signature"] = standard_signature(self._key, nid, now, body)
            headers["X-Tocsin-Signature"] = signature(self._secret, body, now)
        return await self._poster.post(self._url, body, traceparent, headers)

    async def close(self) -> None:
        await self._poster.close()


def _build(name: str, config: ReceiverConfig, env: ChannelEnv) -> Channel:
    """A generic webhook, unless its URL is a Slack or Discord incoming webhook (teams
    paste those into generic webhooks): then it speaks that provider's format."""
    assert isinstance(config, WebhookConfig)
    if config.format == "alertmanager":  # asked for Alertmanager's payload: whatever the URL
        return WebhookChannel(name, config, env)
    if slack.matches_url(config.url):
        log.info(
            "receiver %s: %s is a Slack webhook; sending Slack messages", name, _host(config.url)
        )
        slack_config = slack.SlackConfig(
            channel="slack",
            url=config.url,
            timeout=config.timeout,
            max_per_minute=config.max_per_minute,
            templates=config.templates,
        )
        return slack.SlackChannel(name, slack_config, env)
    if discord.matches_url(config.url):
        log.info(
            "receiver %s: %s is a Discord webhook; sending Discord messages",
            name,
            _host(config.url),
        )
        discord_config = discord.DiscordConfig(
            channel="discord",
            url=config.url,
            timeout=config.timeout,
            max_per_minute=config.max_per_minute,
            templates=config.templates,
        )
        return discord.DiscordChannel(name, discord_config, env)
    return WebhookChannel(name, config, env)


def _host(url: str) -> str:
    """The URL without its path: Slack and Discord webhook paths are credentials."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


KIND = ChannelKind(name="webhook", config_type=WebhookConfig, build=_build)
