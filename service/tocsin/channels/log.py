"""``log``: one JSON line per notification on stdout, so a first run visibly works.
One notification is one line, for ``str.splitlines`` too (see ``text.json_one_line``).

A group notification (DESIGN.md section 11) is one line per alert it lists:
``{"msg": "group notification", "receiver", "notification_id", "group_key", "reason",
"status", "truncated_alerts", "alert": {...}}``, the group's fields repeated on each line
so that every line stands alone for a log search; all lines go out in one write.
"""

from __future__ import annotations

import sys

import msgspec

from tocsin.channels import ChannelEnv, ChannelKind, ReceiverConfig
from tocsin.channels.text import json_one_line
from tocsin.core.contracts import Body, GroupNotification
from tocsin.core.policy.retry import SENT, SendResult, retryable

_encoder = msgspec.json.Encoder()


class LogConfig(ReceiverConfig, kw_only=True, forbid_unknown_fields=True):
    pass


def group_lines(receiver: str, group: GroupNotification) -> bytes:
    """The lines written for ``group``: one per alert it lists, each ending in a newline."""
    return b"".join(
        json_one_line(
            _encoder.encode(
                {
                    "msg": "group notification",
                    "receiver": receiver,
                    "notification_id": group.notification_id,
                    "group_key": group.group_key,
                    "reason": group.reason,
                    "status": group.status,
                    "truncated_alerts": group.truncated_alerts,
                    "alert": alert,
                }
            )
        )
        + b"\n"
        for alert in group.alerts
    )


class LogChannel:
    kind = "log"

    def __init__(self, name: str) -> None:
        self._name = name

    async def send(self, notification: Body, *, traceparent: str | None = None) -> SendResult:
        if isinstance(notification, GroupNotification):
            data = group_lines(self._name, notification)
        else:
            line = {"msg": "notification", "receiver": self._name, "notification": notification}
            data = json_one_line(_encoder.encode(line)) + b"\n"
        try:
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
        except OSError as error:
            return retryable(f"stdout: {error}")
        return SENT

    async def close(self) -> None:
        return None


def _build(name: str, config: ReceiverConfig, env: ChannelEnv) -> LogChannel:
    return LogChannel(name)


KIND = ChannelKind(name="log", config_type=LogConfig, build=_build)
