"""The time-bucket dedup decision (pure): route, suppress, escalate, resolve.

Rules (DESIGN.md section 4): dedup key = fingerprint + ``floor(unix_time / window)``.
The first firing event of a new alert is routed (``firing``); the first of a new bucket
for an alert still open is routed (``reminder``); later events of the same key are
suppressed unless their severity beats the highest already routed for it
(``escalated``). ``resolved`` bypasses dedup. An event whose timestamp falls in an
earlier bucket than the alert's current one is judged against the current bucket: an
old event never re-opens a period that was already notified.
"""

from __future__ import annotations

from typing import Literal

from msgspec import Struct

from tocsin.core.contracts import SEVERITY_RANK, Severity, Status

_US = 1_000_000


class OpenAlert(Struct, kw_only=True, gc=False, array_like=True):
    """What dedup needs to know of a fingerprint's open alert (a projection)."""

    alert_id: str
    bucket: int
    routed_severity: Severity
    receivers: list[str]
    acked: bool = False
    silenced: bool = False  # the current bucket's would-be notification was silenced


Verdict = Literal["open", "reminder", "escalate", "suppress", "resolve", "resolve_ignored"]


class Decision(Struct, frozen=True, kw_only=True):
    verdict: Verdict
    bucket: int
    dedup_key: str


def bucket_of(timestamp_us: int, window_seconds: float) -> int:
    """The epoch-aligned bucket index of an instant."""
    return int(timestamp_us // int(window_seconds * _US))


def dedup_key(fingerprint: str, bucket: int) -> str:
    return f"{fingerprint}:{bucket}"


def decide(
    current: OpenAlert | None,
    *,
    fingerprint: str,
    status: Status,
    severity: Severity,
    timestamp_us: int,
    window_seconds: float,
) -> Decision:
    """What to do with one event of ``fingerprint`` given its open alert, if any."""
    bucket = bucket_of(timestamp_us, window_seconds)
    if status == "resolved":
        verdict: Verdict = "resolve" if current is not None else "resolve_ignored"
        if current is not None:
            bucket = max(bucket, current.bucket)
        return Decision(verdict=verdict, bucket=bucket, dedup_key=dedup_key(fingerprint, bucket))
    if current is None:
        return Decision(verdict="open", bucket=bucket, dedup_key=dedup_key(fingerprint, bucket))
    if bucket > current.bucket:
        return Decision(verdict="reminder", bucket=bucket, dedup_key=dedup_key(fingerprint, bucket))
    bucket = current.bucket
    key = dedup_key(fingerprint, bucket)
    if SEVERITY_RANK[severity] > SEVERITY_RANK[current.routed_severity]:
        return Decision(verdict="escalate", bucket=bucket, dedup_key=key)
    return Decision(verdict="suppress", bucket=bucket, dedup_key=key)
