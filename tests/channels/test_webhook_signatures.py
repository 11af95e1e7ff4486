"""Webhook signatures as a real receiver (an HTTP sink on 127.0.0.1) gets them: the
Standard Webhooks headers, checked with the ``standardwebhooks`` library's own verifier
on the exact bytes and headers received, and ``X-Tocsin-Signature`` beside them."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.support import HttpSink, make_notification
from tocsin.channels import ChannelConfigError, ChannelEnv
from tocsin.channels.webhook import WebhookChannel, WebhookConfig

KEY = bytes(range(1, 17))  # 16 bytes: base64 ends in "==", which some write without
WHSEC = "whsec_" + base64.b64encode(KEY).decode()
PLAIN = "s3cret, plain ünïcode"


def hook(url: str, secret: str | None) -> WebhookChannel:
    config = WebhookConfig(channel="webhook", url=url, secret=secret)
    return WebhookChannel("hook", config, ChannelEnv(version="test"))


async def received(sink: HttpSink, secret: str | None) -> tuple[bytes, dict[str, str]]:
    """The body and headers of one notification as the sink got them."""
    channel = hook(sink.url, secret)
    try:
        result = await channel.send(make_notification(notification_id="n-7f3a"))
    finally:
        await channel.close()
    assert result.ok, result.error
    [request] = sink.requests
    return request.body, request.headers


def tocsin_signature_is_valid(secret: str, header: str, body: bytes) -> bool:
    fields = dict(part.split("=", 1) for part in header.split(","))
    signed = f"{fields['t']}.".encode() + body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields["v1"])


@pytest.mark.parametrize(
    ("secret", "verifier_secret"),
    [
        (WHSEC, WHSEC),  # whsec_<base64>: the key is the decoded bytes
        (WHSEC.rstrip("="), WHSEC),  # the same key with its base64 padding left off
        (PLAIN, "whsec_" + base64.b64encode(PLAIN.encode()).decode()),  # its UTF-8 bytes
    ],
    ids=["whsec", "whsec-unpadded", "plain"],
)
async def test_the_standard_webhooks_verifier_accepts_what_the_receiver_got(
    sink: HttpSink, secret: str, verifier_secret: str
) -> None:
    body, headers = await received(sink, secret)
    assert headers["webhook-id"] == "n-7f3a"  # the notification id, like Idempotency-Key
    assert headers["idempotency-key"] == "n-7f3a"
    assert Webhook(verifier_secret).verify(body, headers)["notification_id"] == "n-7f3a"
    with pytest.raises(WebhookVerificationError):
        Webhook(base64.b64encode(b"another key").decode()).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(verifier_secret).verify(body + b" ", headers)

    # X-Tocsin-Signature is unchanged: keyed with the secret as written, same second.
    tocsin = headers["x-tocsin-signature"]
    assert tocsin.startswith(f"t={headers['webhook-timestamp']},v1=")
    assert tocsin_signature_is_valid(secret, tocsin, body)


async def test_no_secret_no_signature_headers(sink: HttpSink) -> None:
    _, headers = await received(sink, None)
    assert not {"webhook-id", "webhook-timestamp", "webhook-signature", "x-tocsin-signature"} & set(
        headers
    )


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("whsec_", "a secret written whsec_... needs a key after whsec_"),
        ("whsec_n0t base64!", "a secret written whsec_... must be base64 after whsec_"),
    ],
)
def test_a_whsec_secret_without_a_base64_key_is_a_config_error(secret: str, message: str) -> None:
    with pytest.raises(ChannelConfigError) as raised:
        hook("http://127.0.0.1:9/hook", secret)
    assert raised.value.key == "secret"
    assert str(raised.value) == message  # the secret is not echoed
