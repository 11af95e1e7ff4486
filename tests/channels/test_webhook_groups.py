"""The webhook's ``send_encoded`` (issue #20's W5) as a real receiver (an HTTP sink on
127.0.0.1) gets it: a group whose alerts arrive encoded is posted as the same bytes
``send`` posts for the decoded group, in tocsin's format and in Alertmanager's."""

from __future__ import annotations

from typing import Literal

import pytest

from tests.support import HttpSink, make_group
from tocsin.channels import ChannelEnv, SendsEncodedGroups
from tocsin.channels.webhook import WebhookChannel, WebhookConfig
from tocsin.core.contracts import encoded_group


@pytest.mark.parametrize("format_", ["tocsin", "alertmanager"])
async def test_an_encoded_group_is_posted_as_the_decoded_group_would_be(
    sink: HttpSink, format_: Literal["tocsin", "alertmanager"]
) -> None:
    """Catches ``send_encoded`` posting other bytes than ``send`` of the same group:
    the tocsin body with its alerts spliced in, or, for ``format = "alertmanager"``,
    tocsin's group body instead of Alertmanager's payload (which renders the alerts)."""
    group = make_group(5, truncated_alerts=2, group_labels={"labels.service": "api ☃ ü"})
    config = WebhookConfig(channel="webhook", url=sink.url, format=format_)
    channel = WebhookChannel("r", config, ChannelEnv(version="t", dashboard_url="http://t/"))
    assert isinstance(channel, SendsEncodedGroups)
    try:
        assert (await channel.send(group)).ok
        assert (await channel.send_encoded(encoded_group(group))).ok
    finally:
        await channel.close()
    decoded, encoded = sink.requests
    assert encoded.body == decoded.body
    assert encoded.headers["idempotency-key"] == decoded.headers["idempotency-key"] == "g-n1"
    assert (b'"groupKey"' in encoded.body) == (format_ == "alertmanager")
