"""Inbound bytes -> a normalized event or a rejection with its reason (pure, no I/O).

The rules are DESIGN.md section 4. Everything here is deterministic given the bytes, the
subject, the headers and the receive time, so the same code serves NATS and HTTP ingest.

Fields the contract does not know are accepted (a publisher may already send a newer
one) and named in ``Normalized.ignored_fields``: this module is the one place that knows
which fields are known (``KNOWN_FIELDS``), so the HTTP answer, the ``alert.received``
fact and ``tocsin publish`` all say the same.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable
from typing import Any, Literal

import msgspec
from msgspec import Struct

from tocsin.core import contracts as c
from tocsin.core.contracts import Severity, Status
from tocsin.core.times import parse_rfc3339

_TYPE_RE = re.compile(c.TYPE_PATTERN)
_LABEL_NAME_RE = re.compile(c.LABEL_NAME_PATTERN)
# Types and label names already seen to match their pattern: a storm repeats a few of
# each, and a set lookup is ~0.01 us where the pattern's match is ~0.3-0.4 (issue #20).
# Bounded: past ``_NAMES_KEPT`` each, a new name is matched every time.
_types_matched: set[str] = set()
_label_names_matched: set[str] = set()
_NAMES_KEPT = 4096
_FUTURE_TOLERANCE_US = 5 * 60 * 1_000_000
_TRUNCATED_MARK = "_truncated"
_FIELD_AT = re.compile(r" - at `\$\.([a-z_]+)")  # msgspec's path to a known field

KNOWN_FIELDS: frozenset[str] = frozenset(c.InboundEvent.__struct_fields__)
"""The top-level fields of an inbound event (DESIGN.md section 4); any other is ignored."""
MAX_IGNORED_FIELDS = 20
MAX_IGNORED_NAME_CHARS = 64
"""At most 20 ignored names are reported, each cut to 64 characters: a payload of
thousands of odd keys must not bloat the log or an answer."""


class Normalized(Struct, frozen=True, kw_only=True):
    """An accepted event, every field in its canonical form."""

    type: str
    severity: Severity
    summary: str
    source: str
    status: Status
    labels: dict[str, str]
    fingerprint: str
    details: dict[str, Any]
    timestamp: int
    timestamp_replaced: bool
    event_id: str | None
    ignored_fields: tuple[str, ...] = ()  # top-level fields not in KNOWN_FIELDS, capped
    ends_at: int | None = None  # the alert resolves by itself then (section 11)


class Rejection(Struct, frozen=True, kw_only=True):
    """Why an inbound message was refused: ``code`` for metrics, ``field`` names the culprit."""

    code: Literal["payload_too_large", "invalid_json", "not_an_object", "invalid_field"]
    field: str | None
    message: str
    http_status: int


class _Raw(Struct, kw_only=True):
    """Lenient first pass: every field as whatever JSON held, checked one by one below."""

    type: Any = None
    severity: Any = None
    summary: Any = None
    source: Any = None
    status: Any = None
    labels: Any = None
    fingerprint: Any = None
    details: Any = None
    timestamp: Any = None
    event_id: Any = None
    ends_at: Any = None


class _Known(_Raw, kw_only=True, forbid_unknown_fields=True):
    """``_Raw`` that fails on a field it does not know: the common payload is decoded
    once, and only one with an unknown field pays for a second, lenient pass."""


_known_decoder = msgspec.json.Decoder(_Known)
_raw_decoder = msgspec.json.Decoder(_Raw)
_keys_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])
_encoder = msgspec.json.Encoder()


class _Invalid(Exception):
    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def parse(
    payload: bytes,
    *,
    default_source: str,
    received_at: int,
    msg_id: str | None = None,
) -> Normalized | Rejection:
    """Decode, validate and normalize one inbound payload."""
    if len(payload) > c.MAX_PAYLOAD_BYTES:
        return Rejection(
            code="payload_too_large",
            field=None,
            message=f"payload is {len(payload)} bytes; the limit is {c.MAX_PAYLOAD_BYTES}",
            http_status=413,
        )
    try:
        raw, ignored = _decode(payload)
    except msgspec.ValidationError as error:
        # An object whose field holds a number msgspec cannot represent (1e400, an
        # integer of thousands of digits) is that field's fault, not "not an object".
        at = _FIELD_AT.search(str(error))
        if at is not None:
            return Rejection(
                code="invalid_field",
                field=at.group(1),
                message=f"{at.group(1)}: {error}",
                http_status=422,
            )
        return Rejection(
            code="not_an_object",
            field=None,
            message=f"payload is not a JSON object ({error})",
            http_status=400,
        )
    except (msgspec.DecodeError, UnicodeDecodeError) as error:
        return Rejection(
            code="invalid_json",
            field=None,
            message=f"payload is not JSON ({error})",
            http_status=400,
        )
    except RecursionError:
        # Nesting deeper than the interpreter's recursion limit (a few hundred bytes of
        # "[[[[..."): raised, it would kill the router at every redelivery.
        return Rejection(
            code="invalid_json",
            field=None,
            message="payload is nested too deeply to decode",
            http_status=400,
        )
    try:
        return _normalize(raw, default_source, received_at, msg_id, ignored)
    except _Invalid as bad:
        return Rejection(
            code="invalid_field", field=bad.field, message=bad.message, http_status=422
        )


def _decode(payload: bytes) -> tuple[_Raw, tuple[str, ...]]:
    """The payload's known fields, and the names of the others (``ignored_fields``).
    A payload the strict pass refuses is decoded leniently: if that fails too, its error
    is the one the caller answers with, exactly as without the strict pass."""
    try:
        return _known_decoder.decode(payload), ()
    except msgspec.ValidationError:
        pass
    raw = _raw_decoder.decode(payload)
    return raw, ignored_fields(_keys_decoder.decode(payload))


def ignored_fields(fields: Iterable[str]) -> tuple[str, ...]:
    """The names among ``fields`` (an event's top-level keys) that the contract does not
    know, in order, each once: at most ``MAX_IGNORED_FIELDS``, each cut to
    ``MAX_IGNORED_NAME_CHARS`` characters."""
    out: dict[str, None] = {}
    for name in fields:
        if name in KNOWN_FIELDS:
            continue
        out[name[:MAX_IGNORED_NAME_CHARS]] = None
        if len(out) == MAX_IGNORED_FIELDS:
            break
    return tuple(out)


def _normalize(
    raw: _Raw,
    default_source: str,
    received_at: int,
    msg_id: str | None,
    ignored: tuple[str, ...],
) -> Normalized:
    kind = _require_str(raw.type, "type")
    if kind not in _types_matched:
        if not _TYPE_RE.match(kind):
            raise _Invalid("type", f"type {kind[:80]!r} does not match {c.TYPE_PATTERN}")
        if len(_types_matched) < _NAMES_KEPT:
            _types_matched.add(kind)
    severity = normalize_severity(_require_str(raw.severity, "severity"))
    summary = _require_str(raw.summary, "summary")
    if not summary:
        raise _Invalid("summary", "summary is empty")
    if len(summary) > c.MAX_SUMMARY_CHARS:
        summary = summary[: c.MAX_SUMMARY_CHARS - 3] + "..."
    source = default_source if raw.source is None else _require_str(raw.source, "source")
    if not 1 <= len(source) <= 255:
        raise _Invalid("source", "source must be 1 to 255 characters")
    status = _status(raw.status)
    labels = _labels(raw.labels)
    if raw.fingerprint is None:
        fingerprint = default_fingerprint(kind, labels)
    else:
        fingerprint = _require_str(raw.fingerprint, "fingerprint")
        if not 1 <= len(fingerprint) <= c.MAX_FINGERPRINT_CHARS or not fingerprint.isprintable():
            raise _Invalid("fingerprint", "fingerprint must be 1 to 128 printable characters")
    details = sanitize_details(raw.details)
    timestamp, replaced = _timestamp(raw.timestamp, received_at)
    ends_at = None if raw.ends_at is None else _instant(raw.ends_at, "ends_at")
    event_id = msg_id
    if raw.event_id is not None:
        event_id = _require_str(raw.event_id, "event_id")
        if not 1 <= len(event_id) <= 256:
            raise _Invalid("event_id", "event_id must be 1 to 256 characters")
    return Normalized(
        type=kind,
        severity=severity,
        summary=summary,
        source=source,
        status=status,
        labels=labels,
        fingerprint=fingerprint,
        details=details,
        timestamp=timestamp,
        timestamp_replaced=replaced,
        event_id=event_id,
        ignored_fields=ignored,
        ends_at=ends_at,
    )


def normalize_severity(text: str) -> Severity:
    """Case-insensitive severity with aliases; raises for anything else."""
    canonical = c.SEVERITY_ALIASES.get(text.strip().lower())
    if canonical is None:
        raise _Invalid(
            "severity",
            f"severity {text[:40]!r} is not one of critical, error, warning, info "
            "(or sev1, sev2, sev3, fatal, warn)",
        )
    return canonical  # type: ignore[return-value]


def default_fingerprint(kind: str, labels: dict[str, str]) -> str:
    """A stable identity from ``type`` and the sorted labels (SHA-256, 32 hex digits).
    The last ``_FINGERPRINTS_KEPT`` computed are remembered by ``type`` and the labels in
    the order given: a storm's duplicates carry the same labels, and their fingerprint
    cost ~1.8 us each (sorted, encoded, hashed: issue #20, W2), the look-up ~0.4."""
    key: tuple[object, ...] = (kind, *labels.items())
    fingerprint = _fingerprints.get(key)
    if fingerprint is None:
        canonical = _encoder.encode([kind, sorted(labels.items())])
        fingerprint = hashlib.sha256(canonical).hexdigest()[:32]
        if len(_fingerprints) >= _FINGERPRINTS_KEPT:
            _fingerprints.clear()
        _fingerprints[key] = fingerprint
    return fingerprint


_FINGERPRINTS_KEPT = 2048
_fingerprints: dict[tuple[object, ...], str] = {}


def sanitize_details(value: Any) -> dict[str, Any]:
    """At most 20 keys, strings at most 512 characters, nesting at most 32 deep, 8 KiB
    encoded; marks what it cut."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Invalid("details", "details must be a JSON object")
    cut = False
    items = list(value.items())
    if len(items) > c.MAX_DETAILS_KEYS:
        items = items[: c.MAX_DETAILS_KEYS - 1]
        cut = True
    out: dict[str, Any] = {}
    for key, item in items:
        clean, item_cut = _clip_strings(item)
        cut = cut or item_cut or len(key) > c.MAX_DETAILS_STRING
        out[key[: c.MAX_DETAILS_STRING]] = clean
    if cut:
        while len(out) >= c.MAX_DETAILS_KEYS:  # the mark counts toward the 20
            out.pop(next(reversed(out)))
        out[_TRUNCATED_MARK] = True
    while len(_encoder.encode(out)) > c.MAX_DETAILS_BYTES:
        keys = [key for key in out if key != _TRUNCATED_MARK]
        out.pop(keys[-1])
        out[_TRUNCATED_MARK] = True
    return out


def _clip_strings(value: Any, depth: int = 1) -> tuple[Any, bool]:
    """``value`` with long strings cut and containers nested deeper than
    ``MAX_DETAILS_DEPTH`` replaced by null (every later step that walks details, from
    the channels' escaping to the API's encoder, then stays far from the recursion
    limit); the flag says whether anything was cut."""
    if isinstance(value, str):
        if len(value) > c.MAX_DETAILS_STRING:
            return value[: c.MAX_DETAILS_STRING], True
        return value, False
    if isinstance(value, list | dict) and depth > c.MAX_DETAILS_DEPTH:
        return None, True
    if isinstance(value, list):
        cut = False
        clipped = []
        for item in value:
            clean, item_cut = _clip_strings(item, depth + 1)
            clipped.append(clean)
            cut = cut or item_cut
        return clipped, cut
    if isinstance(value, dict):
        cut = False
        out = {}
        for key, item in value.items():
            clean, item_cut = _clip_strings(item, depth + 1)
            out[key[: c.MAX_DETAILS_STRING]] = clean
            cut = cut or item_cut or len(key) > c.MAX_DETAILS_STRING
        return out, cut
    return value, False


def capped_raw(payload: bytes) -> tuple[str, Literal["utf-8", "base64"]]:
    """The first 1024 bytes, as text when they decode as UTF-8 (cut back to a whole
    character), else base64 (DESIGN.md section 10)."""
    head = payload[: c.MAX_RAW_BYTES]
    try:
        return head.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as error:
        was_cut = len(payload) > c.MAX_RAW_BYTES
        # Only a character split by the cut itself may be trimmed (at most 3 bytes).
        if was_cut and error.reason == "unexpected end of data":
            try:
                return head[: error.start].decode("utf-8"), "utf-8"
            except UnicodeDecodeError:
                pass
    return base64.b64encode(head).decode("ascii"), "base64"


def _require_str(value: Any, field: str) -> str:
    if value is None:
        raise _Invalid(field, f"{field} is required")
    if not isinstance(value, str):
        raise _Invalid(field, f"{field} must be a string, got {_json_type(value)}")
    return value


def _status(value: Any) -> Status:
    if value is None:
        return "firing"
    text = _require_str(value, "status").strip().lower()
    if text == "firing":
        return "firing"
    if text == "resolved":
        return "resolved"
    raise _Invalid("status", f"status {str(value)[:40]!r} is neither firing nor resolved")


def _labels(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Invalid("labels", f"labels must be an object, got {_json_type(value)}")
    if len(value) > c.MAX_LABELS:
        raise _Invalid("labels", f"labels has {len(value)} keys; at most {c.MAX_LABELS}")
    matched = _label_names_matched
    for key, item in value.items():
        if key not in matched:
            if not _LABEL_NAME_RE.match(key):
                raise _Invalid(
                    f"labels.{key[:64]}",
                    f"label name {key[:64]!r} does not match {c.LABEL_NAME_PATTERN}",
                )
            if len(matched) < _NAMES_KEPT:
                matched.add(key)
        if not isinstance(item, str):
            raise _Invalid(f"labels.{key}", f"label {key!r} must be a string")
        if len(item) > c.MAX_LABEL_VALUE_CHARS:
            raise _Invalid(
                f"labels.{key}",
                f"label {key!r} is {len(item)} characters; at most {c.MAX_LABEL_VALUE_CHARS}",
            )
    return value


def _instant(value: Any, field: str) -> int:
    text = _require_str(value, field)
    try:
        return parse_rfc3339(text)
    except (ValueError, OverflowError) as error:
        raise _Invalid(
            field, f"{field} {text[:40]!r} is not RFC 3339 with an offset ({error})"
        ) from error


def _timestamp(value: Any, received_at: int) -> tuple[int, bool]:
    if value is None:
        return received_at, False
    stamp = _instant(value, "timestamp")
    if stamp > received_at + _FUTURE_TOLERANCE_US:
        return received_at, True
    return stamp, False


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "null" if value is None else type(value).__name__
