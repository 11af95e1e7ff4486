"""What a caller hands ``emit_alert`` -> one inbound event the service accepts (pure).

The wire (DESIGN.md section 4) is strict: an unknown severity, a naive timestamp or a
label name with a space is rejected there. A caller of an alert API must never fail for
that, so this module is lenient where the wire is strict: it bends every value into
something the service accepts (unknown severity -> ``info``, naive datetimes -> UTC,
values JSON cannot hold -> ``str``, ``title`` -> ``summary``, ``message`` and
``context`` -> ``details``) instead of refusing it. The service's own ingest stays the
judge: the tests feed what this builds to it.
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import msgspec

SEVERITIES = ("info", "warning", "error", "critical")
"""Least to most severe: the order the spool drops in (a critical is never dropped)."""

_SEVERITY_ALIASES = {
    "critical": "critical",
    "error": "error",
    "warning": "warning",
    "info": "info",
    "sev1": "critical",
    "sev2": "warning",
    "sev3": "info",
    "fatal": "critical",
    "warn": "warning",
}
_TYPE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
_TYPE_BAD = re.compile(r"[^A-Za-z0-9_.:-]+")
_LABEL_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")
_LABEL_BAD = re.compile(r"[^A-Za-z0-9_.-]+")
_SUBJECT_TOKEN_BAD = re.compile(r"[\s.*>]+")

MAX_SUMMARY = 255
MAX_LABELS = 32
MAX_LABEL_VALUE = 1024
MAX_FINGERPRINT = 128
MAX_EVENT_ID = 256
MAX_SOURCE = 255
MAX_STRING = 512  # the service cuts details strings here; cutting first keeps payloads small
MAX_DEPTH = 32
MAX_ITEMS = 100  # items kept of one list or object inside details
MAX_PAYLOAD = 60 * 1024  # under the service's 64 KiB, with room for the envelope
SUBJECT_PREFIX = "alerts.in."

_FIELDS = frozenset(
    ["type", "source", "status", "labels", "fingerprint", "details", "timestamp", "ends_at"]
)
"""Fields of section 4 a caller may pass to ``emit_alert`` as keywords; ``event_id`` and
``traceparent`` are taken apart (they are the envelope), anything else goes to details."""


@dataclass(frozen=True)
class Outbound:
    """One event ready to publish: where, its idempotency key, and the bytes."""

    subject: str
    event_id: str
    severity: str
    payload: bytes
    traceparent: str | None = None


def new_event_id() -> str:
    """A random idempotency key (the service dedups by it for 24 h)."""
    return secrets.token_hex(10)


def severity_of(value: Any) -> str:
    """The canonical severity for ``value``: case-insensitive, with the wire's aliases;
    anything else is ``info`` (lenient: a typo must not lose the alert)."""
    if isinstance(value, str):
        return _SEVERITY_ALIASES.get(value.strip().lower(), "info")
    return "info"


def summary_of(title: Any) -> str:
    """``title`` as a summary: 1..255 characters, cut like the service cuts (the first
    252 characters and ``...``)."""
    text = title if isinstance(title, str) else ("" if title is None else _text(title))
    text = " ".join(text.split())
    if not text:
        return "(untitled alert)"
    if len(text) > MAX_SUMMARY:
        return text[: MAX_SUMMARY - 3] + "..."
    return text


def type_of(value: Any, title: str) -> str:
    """An event type the wire accepts: ``value`` when valid, else one made from it (or
    from the title when no type was given), so the same title is the same alert."""
    raw = value if isinstance(value, str) and value else title
    if _TYPE_RE.match(raw):
        return raw
    slug = _TYPE_BAD.sub("_", raw).strip("_.:-")[:128]
    return slug if slug and _TYPE_RE.match(slug) else "alert"


def subject_token(source: str) -> str:
    """``source`` as one NATS subject token (no dots, spaces or wildcards)."""
    token = _SUBJECT_TOKEN_BAD.sub("_", source).strip("_")
    return token or "python"


def timestamp_of(value: Any) -> str | None:
    """An RFC 3339 time with an offset, or None when ``value`` is not a time: datetimes
    and ISO strings without an offset are taken as UTC, numbers as Unix seconds."""
    moment: datetime
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
    elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        try:
            moment = datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    else:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.isoformat()


def json_safe(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON can hold it: containers walked (at most ``MAX_ITEMS`` items,
    ``MAX_DEPTH`` deep, so a cycle ends), naive datetimes as UTC, strings cut to
    ``MAX_STRING``, NaN and infinities and every other object as ``str``."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return value[:MAX_STRING]
    if isinstance(value, datetime):
        return timestamp_of(value)
    if isinstance(value, date):
        return value.isoformat()
    if depth >= MAX_DEPTH:
        return _text(value)[:MAX_STRING]
    if isinstance(value, Mapping):
        return {
            _text(key)[:MAX_STRING]: json_safe(item, depth + 1)
            for key, item in list(value.items())[:MAX_ITEMS]
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(item, depth + 1) for item in list(value)[:MAX_ITEMS]]
    return _text(value)[:MAX_STRING]


def labels_of(value: Any) -> dict[str, str]:
    """Labels the wire accepts: names bent to its grammar, values as strings cut to 1024
    characters, at most 32 (the alert's identity, so nothing is invented)."""
    if not isinstance(value, Mapping):
        return {}
    out: dict[str, str] = {}
    for key, item in value.items():
        name = _text(key)
        if not _LABEL_NAME_RE.match(name):
            name = _LABEL_BAD.sub("_", name)[:128]
            if not name or not (name[0].isalpha() or name[0] == "_"):
                name = ("_" + name)[:128]
        text = item if isinstance(item, str) else _text(item)
        out[name] = text[:MAX_LABEL_VALUE]
        if len(out) == MAX_LABELS:
            break
    return out


def fingerprint_of(value: Any) -> str | None:
    """An explicit identity kept verbatim when the wire accepts it (1..128 printable
    characters), else a stable hash of it; None when none was given."""
    if value is None:
        return None
    text = value if isinstance(value, str) else _text(value)
    if 1 <= len(text) <= MAX_FINGERPRINT and text.isprintable():
        return text
    return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:32]


def build(
    severity: Any,
    title: Any,
    message: Any,
    context: Any,
    fields: Mapping[str, Any],
    *,
    source: str,
    now: datetime,
) -> Outbound:
    """The event for one ``emit_alert`` call, stamped with ``now`` when it has no time of
    its own (so a spooled event keeps the moment it happened). Raises only when a value
    cannot even be turned into text (its ``__str__`` raises); the caller catches that."""
    canonical = severity_of(severity)
    summary = summary_of(title)
    event_source = _text(fields.get("source") or source)[:MAX_SOURCE] or "python"
    body: dict[str, Any] = {
        "type": type_of(fields.get("type"), summary),
        "severity": canonical,
        "summary": summary,
        "source": event_source,
        "status": "resolved" if _text(fields.get("status", "")).lower() == "resolved" else "firing",
    }
    labels = labels_of(fields.get("labels"))
    if labels:
        body["labels"] = labels
    fingerprint = fingerprint_of(fields.get("fingerprint"))
    if fingerprint is not None:
        body["fingerprint"] = fingerprint
    body["details"] = _details(message, context, fields)
    body["timestamp"] = timestamp_of(fields.get("timestamp")) or timestamp_of(now)
    ends_at = timestamp_of(fields.get("ends_at"))
    if ends_at is not None:
        body["ends_at"] = ends_at
    given_id = fields.get("event_id")
    event_id = given_id if isinstance(given_id, str) and 1 <= len(given_id) <= 256 else None
    body["event_id"] = event_id = event_id or new_event_id()
    payload = msgspec.json.encode(body)
    if len(payload) > MAX_PAYLOAD:  # details too big even after cutting: keep the gist
        body["details"] = {"message": json_safe(message), "_truncated": True}
        payload = msgspec.json.encode(body)
    traceparent = fields.get("traceparent")
    return Outbound(
        subject=SUBJECT_PREFIX + subject_token(event_source),
        event_id=event_id,
        severity=canonical,
        payload=payload,
        traceparent=traceparent if isinstance(traceparent, str) and traceparent else None,
    )


def _details(message: Any, context: Any, fields: Mapping[str, Any]) -> dict[str, Any]:
    """``message``, then the context's items, then the ``details`` keyword's, then any
    keyword the wire does not know: nothing the caller said is lost. A context that is
    not a mapping is kept whole under ``context``."""
    details: dict[str, Any] = {}
    if message is not None:
        details["message"] = json_safe(message)
    extra: dict[Any, Any] = {}
    if isinstance(context, Mapping):
        extra.update(context)
    elif context is not None:
        extra["context"] = context
    if isinstance(fields.get("details"), Mapping):
        extra.update(fields["details"])
    elif fields.get("details") is not None:
        extra["details"] = fields["details"]
    for key, value in fields.items():
        if key not in _FIELDS and key not in ("event_id", "traceparent"):
            extra[key] = value
    for key, value in json_safe(extra).items():
        details["context_message" if key == "message" and "message" in details else key] = value
    return details


def _text(value: Any) -> str:
    """``str(value)``, for values whose own ``__str__`` works (one that raises makes the
    caller log and return False)."""
    return value if isinstance(value, str) else str(value)
