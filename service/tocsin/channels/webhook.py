"""``webhook``: POST the notification JSON (schemas/notification.schema.json).

Headers: ``Content-Type``, ``Idempotency-Key`` (the notification id, stable across
retries and restarts), ``User-Agent: tocsin/<version>``, ``traceparent`` when traced,
custom ``headers``, and ``X-Tocsin-Signature: t=<unix>,v1=<hex HMAC-SHA256 of
"<t>.<body>">`` when the receiver has a ``secret``.
"""

from __future__ import annotations

import hashlib
import hmac
import time

import msgspec

from tocsin.channels import ChannelConfigError, ChannelEnv, ChannelKind, ReceiverConfig
from tocsin.channels.http import pooled_client, post
from tocsin.contracts import Notification
from tocsin.retry import SendResult

_encoder = msgspec.json.Encoder()


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
        if not config.url.startswith(("http://", "https://")):
            raise ChannelConfigError(
                "url", f"url must start with http:// or https://, got {config.url!r}"
            )
        self._url = config.url
        self._secret = config.secret
        self._headers = {
            **(config.headers or {}),
            "Content-Type": "application/json",
            "User-Agent": f"tocsin/{env.version}",
        }
        self._client = pooled_client(config.timeout)

    async def send(
        self, notification: Notification, *, traceparent: str | None = None
    ) -> SendResult:
        body = _encoder.encode(notification)
        headers = dict(self._headers)
        headers["Idempotency-Key"] = notification.notification_id
        if traceparent:
            headers["traceparent"] = traceparent
        if self._secret:
            headers["X-Tocsin-Signature"] = signature(self._secret, body, int(time.time()))
        return await post(self._client, self._url, body, headers)

    async def close(self) -> None:
        await self._client.aclose()


def _build(name: str, config: ReceiverConfig, env: ChannelEnv) -> WebhookChannel:
    assert isinstance(config, WebhookConfig)
    return WebhookChannel(name, config, env)


KIND = ChannelKind(name="webhook", config_type=WebhookConfig, build=_build)
