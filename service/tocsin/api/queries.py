"""Read models over the projection (pure): what the API and commands show."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from msgspec import Struct

from tocsin.projections import Alert, State
from tocsin.times import format_us

MAX_LIMIT = 500
DEFAULT_LIMIT = 50


class AlertView(Struct, kw_only=True):
    id: str
    fingerprint: str
    type: str
    severity: str
    status: str
    summary: str
    source: str
    labels: dict[str, str]
    details: dict[str, Any]
    first_seen: str
    last_seen: str
    occurrences: int
    suppressed_count: int
    receivers: list[str]
    last_delivery_status: str | None
    resolved_at: str | None = None
    trace_id: str | None = None


class AlertPage(Struct, kw_only=True):
    alerts: list[AlertView]
    next_cursor: str | None


class QueryError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def alert_view(alert: Alert) -> AlertView:
    return AlertView(
        id=alert.id,
        fingerprint=alert.fingerprint,
        type=alert.type,
        severity=alert.severity,
        status=alert.status,
        summary=alert.summary,
        source=alert.source,
        labels=alert.labels,
        details=alert.details,
        first_seen=format_us(alert.first_seen),
        last_seen=format_us(alert.last_seen),
        occurrences=alert.occurrences,
        suppressed_count=alert.suppressed_count,
        receivers=list(alert.receivers),
        last_delivery_status=alert.last_delivery_status,
        resolved_at=None if alert.resolved_at is None else format_us(alert.resolved_at),
        trace_id=alert.trace_id,
    )


def _encode_cursor(alert: Alert) -> str:
    return base64.urlsafe_b64encode(f"{alert.last_seen}:{alert.id}".encode()).decode()


def _decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        last_seen, _, alert_id = base64.urlsafe_b64decode(cursor.encode()).decode().partition(":")
        return int(last_seen), alert_id
    except (ValueError, binascii.Error, UnicodeDecodeError) as error:
        raise QueryError("cursor", "cursor is not one this API returned") from error


def list_alerts(
    state: State,
    *,
    severity: str | None = None,
    type_: str | None = None,
    status: str | None = None,
    source: str | None = None,
    q: str | None = None,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> AlertPage:
    """Alerts newest first by ``last_seen``, filtered, one page at a time."""
    if not 1 <= limit <= MAX_LIMIT:
        raise QueryError("limit", f"limit must be 1 to {MAX_LIMIT}")
    needle = q.lower() if q else None

    def keep(alert: Alert) -> bool:
        if severity and alert.severity != severity:
            return False
        if type_ and alert.type != type_:
            return False
        if status and alert.status != status:
            return False
        if source and alert.source != source:
            return False
        if needle:
            haystack = " ".join([alert.summary, *alert.labels.keys(), *alert.labels.values()])
            if needle not in haystack.lower():
                return False
        return True

    ordered = sorted(
        (a for a in state.alerts.values() if keep(a)),
        key=lambda a: (a.last_seen, a.id),
        reverse=True,
    )
    if cursor:
        after = _decode_cursor(cursor)
        ordered = [a for a in ordered if (a.last_seen, a.id) < after]
    page = ordered[:limit]
    next_cursor = _encode_cursor(page[-1]) if len(ordered) > limit else None
    return AlertPage(alerts=[alert_view(a) for a in page], next_cursor=next_cursor)
