"""``webhook``: POST the notification JSON (schemas/notification.schema.json).

Headers: ``Content-Type``, ``Idempotency-Key`` (the notification id, stable across
retries and restarts), ``User-Agent: tocsin/<version>``, ``traceparent`` when traced,
custom ``headers``, and ``X-Tocsin-Signature: t=<unix>,v1=<hex HMAC-SHA256 of
"<t>.<body>">`` when the receiver has a ``secret``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from urllib.parse import urlsplit

import msgspec

from tocsin.channels import Channel, ChannelEnv, ChannelKind, ReceiverConfig, discord, slack
from tocsin.channels.http import JsonPoster, check_url
from tocsin.core.contracts import Notification
from tocsin.core.policy.retry import SendResult

_encoder = msgspec.json.Encoder()
log = logging.getLogger("tocsin.channels.webhook")


class WebhookConfig(ReceiverConfig, kw_only=True, forbid_unknown_fields=True):
    url: str
    secret: str | None = None
    headers: dict[str, str] | None = None


def signature(secret: str, body: bytes, unix_seconds: int) -> str:
    """The ``X-Tocsin-Signature`` value for ``body`` at ``unix_seconds``."""
    digest = hmac.new(secret.encode(), f"{unix_seconds}.".encode() + body, hashlib.sha256)
    return f"t={unix_seconds},v1={digest.hexdigest()}"


class WebhookChannel:
    kind = "webhook"

    def __init__(self, name: str, config: WebhookConfig, env: ChannelEnv) -> None:
        self._url = check_url(config.url)
        self._secret = config.secret
        self._poster = JsonPoster(env.version, config.timeout, config.headers)

    async def send(
        self, notification: Notification, *, traceparent: str | None = None
    ) -> SendResult:
        body = _encoder.encode(notification)
        headers = {"Idempotency-Key": notification.notification_id}
        if self._secret:
            headers["X-Tocsin-Signature"] = signature(self._secret, body, int(time.time()))
        return await self._poster.post(self._url, body, traceparent, headers)

    async def close(self) -> None:
        await self._poster.close()


def _build(name: str, config: ReceiverConfig, env: ChannelEnv) -> Channel:
    """A generic webhook, unless its URL is a Slack or Discord incoming webhook (teams
    paste those into generic webhooks): then it speaks that provider's format."""
    assert isinstance(config, WebhookConfig)
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
