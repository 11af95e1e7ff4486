"""Channels: one module per provider behind one small protocol, found through a registry.

Built-in channels register here; third-party ones through the ``tocsin.channels``
entry-point group (each entry point names a ``ChannelKind``), so a team can
``pip install`` a channel without touching tocsin.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Protocol, runtime_checkable

from msgspec import Struct

from tocsin.channels.templates import TemplateConfigError, Templates
from tocsin.core.contracts import Body, EncodedGroup, Notification
from tocsin.core.policy.retry import SendResult
from tocsin.core.times import Duration

# ``[delivery] concurrency``'s default: the sends a delivery worker has under way to one
# receiver at once, and the connections an HTTP channel keeps to it (``ChannelEnv``). A
# send holds its item past its POST, until its outcome's PubAck is back (DESIGN.md
# invariant 3), so a worker needs more sends under way than POSTs on the wire to keep
# its connections busy: 64 sent a W1 storm 11% faster than 32 (docs/performance.md).
DEFAULT_CONCURRENCY = 64


class ReceiverConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    """Keys every receiver takes; each channel's config extends it."""

    channel: str
    timeout: Duration = Duration(10.0)
    max_per_minute: int | None = None
    templates: dict[str, str] | None = None


@dataclass(frozen=True)
class ChannelEnv:
    """What channels may need from the service beyond their own config."""

    version: str
    smtp: SmtpSettings | None = None
    dashboard_url: str | None = None
    # connections an HTTP channel keeps to its receiver's origin at most: as many as the
    # worker's sends under way (``[delivery] concurrency``), so that no send waits for a
    # connection, a wait its timeout would count against
    connections: int = DEFAULT_CONCURRENCY


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int = 587
    sender: str = "tocsin@localhost"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    starttls: bool = True
    use_tls: bool = False


class Channel(Protocol):
    """Sends one notification (an alert's, or a group's as one message); never raises
    for a failed send, it returns the verdict."""

    kind: str

    async def send(self, notification: Body, *, traceparent: str | None = None) -> SendResult: ...

    async def close(self) -> None: ...


@runtime_checkable
class SendsEncodedGroups(Protocol):
    """A channel that sends a group's notification with its alerts as the router
    encoded them (``EncodedGroup``), never decoding them: the webhook, whose body is the
    group body itself. A delivery worker hands any other channel the decoded
    ``GroupNotification`` (``send``)."""

    async def send_encoded(
        self, group: EncodedGroup, *, traceparent: str | None = None
    ) -> SendResult: ...


@runtime_checkable
class SendsEncodedAlerts(Protocol):
    """A channel that can send an alert's notification handed its JSON too, encoded
    once by the delivery worker, whose outcome message splices the same bytes: the
    webhook, whose body in tocsin's format is that JSON (~1 us a notification not
    encoded twice, issue #20). A delivery worker hands any other channel the
    notification alone (``send``)."""

    async def send_encoded_alert(
        self, notification: Notification, encoded: bytes, *, traceparent: str | None = None
    ) -> SendResult: ...


class ChannelConfigError(ValueError):
    """A receiver's config cannot build its channel; ``key`` names the bad key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def compile_templates(
    overrides: Mapping[str, str] | None,
    defaults: Mapping[str, str] | None = None,
    *,
    receiver: str | None = None,
) -> Templates:
    """A receiver's templates (its own ``templates`` table over its channel's
    ``defaults``), or a ``ChannelConfigError`` naming ``templates.<key>``. ``receiver``
    names it in the log line of a template that fails to render."""
    try:
        return Templates(overrides, defaults=defaults, receiver=receiver)
    except TemplateConfigError as error:
        raise ChannelConfigError(error.key, str(error)) from error


@dataclass(frozen=True)
class ChannelKind:
    """A channel as the registry knows it: its config type and how to build it."""

    name: str
    config_type: type[ReceiverConfig]
    build: Callable[[str, ReceiverConfig, ChannelEnv], Channel]


def registry() -> dict[str, ChannelKind]:
    """Built-in channels plus every installed ``tocsin.channels`` entry point."""
    from tocsin.channels import (
        discord,
        email,
        file,
        log,
        opsgenie,
        pagerduty,
        slack,
        teams,
        webhook,
    )

    builtin = (
        webhook.KIND,
        slack.KIND,
        discord.KIND,
        teams.KIND,
        pagerduty.KIND,
        opsgenie.KIND,
        email.KIND,
        file.KIND,
        log.KIND,
    )
    kinds = {kind.name: kind for kind in builtin}
    for point in entry_points(group="tocsin.channels"):
        loaded = point.load()
        if isinstance(loaded, ChannelKind):
            kinds[loaded.name] = loaded
    return kinds
