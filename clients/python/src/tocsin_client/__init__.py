"""tocsin-client: publish alerts to tocsin from Python without ever failing the caller.

    from tocsin_client import emit_alert

    emit_alert("critical", "payments down", "card processor returned 502", {"region": "eu"})

``emit_alert`` never raises and never blocks past its timeout (2 s): it publishes over
JetStream and waits for the PubAck; when NATS is unreachable the event stays in a local
spool and the next successful emit (or ``flush()``) re-sends it, in order, with its
original ``event_id``. DESIGN.md section 16.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from typing import Any

from tocsin_client.dispatch import AlertDispatcher, NoopAlertDispatcher, TocsinDispatcher
from tocsin_client.emitter import DEFAULT_TIMEOUT, Emitter
from tocsin_client.spool import Spool
from tocsin_client.threshold import AlertEmitter, AlertEmitterConfig, ThresholdSignal

__all__ = [
    "AlertDispatcher",
    "AlertEmitter",
    "AlertEmitterConfig",
    "Emitter",
    "NoopAlertDispatcher",
    "Spool",
    "ThresholdSignal",
    "TocsinDispatcher",
    "default_emitter",
    "emit_alert",
    "flush",
]

log = logging.getLogger("tocsin_client")
_default: Emitter | None = None
_default_lock = threading.Lock()


def default_emitter() -> Emitter:
    """The process's emitter, made on first use from the environment
    (``TOCSIN_NATS_URL``, ``TOCSIN_SOURCE``, ``TOCSIN_SPOOL``)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Emitter()
        return _default


def emit_alert(
    severity: Any,
    title: Any,
    message: Any = None,
    context: Any = None,
    *,
    timeout: float | None = DEFAULT_TIMEOUT,
    **fields: Any,
) -> bool:
    """Publish one alert; True once tocsin's stream stored it. Never raises, never
    blocks past ``timeout``; on False the event is spooled (or, with the spool full,
    dropped and logged). ``fields`` may carry any event field (``type``, ``labels``,
    ``source``, ``status``, ``fingerprint``, ``timestamp``, ``ends_at``, ``event_id``),
    ``details``, ``traceparent``; any other keyword goes to details."""
    try:
        return default_emitter().emit(severity, title, message, context, timeout=timeout, **fields)
    except Exception:
        log.exception("tocsin_client: emit_alert failed; the alert was not sent")
        return False


def flush(timeout: float | None = None) -> bool:
    """Re-send the spool now, in order; True when nothing is left in it. Never raises."""
    try:
        return default_emitter().flush(timeout)
    except Exception:
        log.exception("tocsin_client: flush failed")
        return False


def _forget_default() -> None:
    """In a forked child the parent's emitter thread does not exist: start afresh."""
    global _default, _default_lock
    _default, _default_lock = None, threading.Lock()


def _close_default() -> None:
    if _default is not None:
        _default.close(timeout=0.5)


os.register_at_fork(after_in_child=_forget_default)
atexit.register(_close_default)
