"""``log``: one JSON line per notification on stdout, so a first run visibly works.
One notification is one line, for ``str.splitlines`` too (see ``text.json_one_line``)."""

from __future__ import annotations

import sys

import msgspec

from tocsin.channels import ChannelEnv, ChannelKind, ReceiverConfig
from tocsin.channels.text import json_one_line
from tocsin.core.contracts import Notification
from tocsin.core.policy.retry import SENT, SendResult, retryable

_encoder = msgspec.json.Encoder()


class LogConfig(ReceiverConfig, kw_only=True, forbid_unknown_fields=True):
    pass


class LogChannel:
    kind = "log"

    def __init__(self, name: str) -> None:
        self._name = name

    async def send(
        self, notification: Notification, *, traceparent: str | None = None
    ) -> SendResult:
        line = {"msg": "notification", "receiver": self._name, "notification": notification}
        try:
            sys.stdout.buffer.write(json_one_line(_encoder.encode(line)) + b"\n")
            sys.stdout.flush()
        except OSError as error:
            return retryable(f"stdout: {error}")
        return SENT

    async def close(self) -> None:
        return None


def _build(name: str, config: ReceiverConfig, env: ChannelEnv) -> LogChannel:
    return LogChannel(name)


KIND = ChannelKind(name="log", config_type=LogConfig, build=_build)
