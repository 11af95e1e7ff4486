"""The dispatcher protocol of the old in-process alert APIs, and its two implementations.

Code written against ``AlertDispatcher`` gets ``TocsinDispatcher`` where alerts should
reach tocsin and ``NoopAlertDispatcher`` where they should go nowhere (tests, tools, a
service with alerting off), with no branch at the call site.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from tocsin_client.emitter import Emitter

log = logging.getLogger("tocsin_client")

_TITLE_KEYS = ("title", "summary")


@runtime_checkable
class AlertDispatcher(Protocol):
    """Sends one alert; True when it was confirmed. Implementations never raise."""

    def send_alert(self, event: Any, *, severity: str, channel: str | None = None) -> bool: ...


class TocsinDispatcher:
    """Publishes to tocsin through an ``Emitter`` (default: the process's).

    ``event`` is a mapping (``title`` or ``summary``, ``message``, ``context``, and any
    field of the wire such as ``type`` or ``labels``; other keys go to details) or any
    other value, taken as the title. ``channel``, the old APIs' delivery hint, becomes
    the label ``channel``, so a tocsin route can match on it.
    """

    def __init__(self, emitter: Emitter | None = None) -> None:
        self._emitter = emitter

    def send_alert(self, event: Any, *, severity: str, channel: str | None = None) -> bool:
        try:
            fields: dict[str, Any] = {}
            if isinstance(event, Mapping):
                fields = {str(key): value for key, value in event.items()}
                title = next((fields.pop(k) for k in _TITLE_KEYS if k in fields), None)
                for key in _TITLE_KEYS:
                    fields.pop(key, None)
                message = fields.pop("message", None)
                context = fields.pop("context", None)
            else:
                title, message, context = event, None, None
            if channel is not None:
                labels = fields.get("labels")
                fields["labels"] = {
                    **(labels if isinstance(labels, Mapping) else {}),
                    "channel": channel,
                }
            emitter = self._emitter if self._emitter is not None else _default()
            return emitter.emit(severity, title, message, context, **fields)
        except Exception:
            log.exception("tocsin_client: send_alert failed; the alert was not sent")
            return False


class NoopAlertDispatcher:
    """Sends nothing, so confirms nothing: every call returns False."""

    def send_alert(self, event: Any, *, severity: str, channel: str | None = None) -> bool:
        return False


def _default() -> Emitter:
    from tocsin_client import default_emitter

    return default_emitter()
