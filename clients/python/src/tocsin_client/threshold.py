"""Threshold alerts: a signal near its threshold is a warning, past it a critical.

``AlertEmitter`` is for the callers of the old in-process threshold alerts: a measured
signal (metric, value, threshold, ratio, run and entity ids) becomes a
``threshold.near`` (warning) or ``threshold.breach`` (critical) event. Both kinds share
one fingerprint per signal (metric + entity), so tocsin sees one alert: a breach after a
near miss in the same dedup bucket is routed at once as ``escalated``, not as a second
alert. Per run id at most ``max_per_run`` alerts are sent, the same kind for the same
signal at most once per ``throttle_seconds``, and nothing at all when ``enabled`` is off.
These are decided here, in the caller's process, before anything is published.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from tocsin_client.emitter import Emitter

log = logging.getLogger("tocsin_client")

NEAR = "threshold.near"
BREACH = "threshold.breach"
_REMEMBERED = 10_000  # runs and signals kept for the cap and the throttle (oldest forgotten)


@dataclass(frozen=True)
class ThresholdSignal:
    """One measurement against its threshold. ``ratio`` defaults to value / threshold."""

    metric: str
    value: float
    threshold: float
    ratio: float | None = None
    run_id: str | None = None
    entity_id: str | None = None
    context: Mapping[str, Any] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        """The alert's identity: the metric on its entity (not the run, not the kind)."""
        key = msgspec.json.encode([str(self.metric), str(self.entity_id or "")])
        return "threshold:" + hashlib.sha256(key).hexdigest()[:32]

    def ratio_or_computed(self) -> float | None:
        if self.ratio is not None:
            return self.ratio
        try:
            return float(self.value) / float(self.threshold)
        except (TypeError, ValueError, ZeroDivisionError):
            return None


@dataclass(frozen=True)
class AlertEmitterConfig:
    """``enabled`` off sends nothing; ``max_per_run`` caps the alerts of one run id
    (signals without one are not capped); ``throttle_seconds`` is the window in which
    the same kind for the same signal is sent once."""

    enabled: bool = True
    max_per_run: int = 10
    throttle_seconds: float = 300.0


class AlertEmitter:
    """Near-threshold and breach alerts through an ``Emitter`` (default: the process's).
    ``clock`` is injectable so the throttle is tested without waiting."""

    def __init__(
        self,
        emitter: Emitter | None = None,
        config: AlertEmitterConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._emitter = emitter
        self.config = config or AlertEmitterConfig()
        self._clock = clock
        self._lock = threading.Lock()
        self._per_run: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._last_sent: collections.OrderedDict[tuple[str, str], float] = collections.OrderedDict()

    def emit_near_threshold(
        self,
        signal: ThresholdSignal,
        *,
        message: str | None = None,
        timeout: float | None = None,
    ) -> bool:
        """A ``threshold.near`` warning for ``signal``; True once acknowledged. Never raises."""
        return self._emit(NEAR, "warning", signal, None, message, timeout)

    def emit_breach(
        self,
        signal: ThresholdSignal,
        action_taken: str | None = None,
        *,
        message: str | None = None,
        timeout: float | None = None,
    ) -> bool:
        """A ``threshold.breach`` critical for ``signal``, saying what was done about it."""
        return self._emit(BREACH, "critical", signal, action_taken, message, timeout)

    def allow(self, kind: str, signal: ThresholdSignal) -> bool:
        """Whether an alert of ``kind`` for ``signal`` goes out now (and count it if so):
        the enabled flag, then the throttle, then the cap per run."""
        if not self.config.enabled:
            return False
        now = self._clock()
        key = (kind, signal.fingerprint)
        with self._lock:
            last = self._last_sent.get(key)
            if last is not None and now - last < self.config.throttle_seconds:
                return False
            run = None if signal.run_id is None else str(signal.run_id)
            if run is not None and self._per_run.get(run, 0) >= self.config.max_per_run:
                return False
            _remember(self._last_sent, key, now)
            if run is not None:
                _remember(self._per_run, run, self._per_run.get(run, 0) + 1)
        return True

    def _emit(
        self,
        kind: str,
        severity: str,
        signal: ThresholdSignal,
        action_taken: str | None,
        message: str | None,
        timeout: float | None,
    ) -> bool:
        try:
            if not self.allow(kind, signal):
                log.debug(
                    "tocsin_client: %s for %s not sent (off, throttled or capped)",
                    kind,
                    signal.metric,
                )
                return False
            ratio = signal.ratio_or_computed()
            details: dict[str, Any] = {
                **signal.context,
                "metric": signal.metric,
                "value": signal.value,
                "threshold": signal.threshold,
                "ratio": ratio,
                "run_id": signal.run_id,
                "entity_id": signal.entity_id,
            }
            if action_taken is not None:
                details["action_taken"] = action_taken
            labels = {"metric": str(signal.metric)}
            if signal.entity_id is not None:
                labels["entity_id"] = str(signal.entity_id)
            emitter = self._emitter if self._emitter is not None else _default()
            return emitter.emit(
                severity,
                _summary(kind, signal, ratio, action_taken),
                message,
                details,
                timeout=timeout,
                type=kind,
                labels=labels,
                fingerprint=signal.fingerprint,
            )
        except Exception:
            log.exception("tocsin_client: %s failed; the alert was not sent", kind)
            return False


def _summary(
    kind: str, signal: ThresholdSignal, ratio: float | None, action_taken: str | None
) -> str:
    where = f" for {signal.entity_id}" if signal.entity_id is not None else ""
    measured = f"{_number(signal.value)} against {_number(signal.threshold)}"
    if kind == NEAR:
        share = f" at {ratio:.0%} of its threshold" if ratio is not None else " near its threshold"
        return f"{signal.metric}{where}{share} ({measured})"
    action = f"; {action_taken}" if action_taken else ""
    return f"{signal.metric}{where} breached its threshold ({measured}){action}"


def _number(value: Any) -> str:
    try:
        return format(value, "g")
    except (TypeError, ValueError):
        return str(value)


def _remember(table: collections.OrderedDict[Any, Any], key: Any, value: Any) -> None:
    table[key] = value
    table.move_to_end(key)
    if len(table) > _REMEMBERED:
        table.popitem(last=False)


def _default() -> Emitter:
    from tocsin_client import default_emitter

    return default_emitter()
