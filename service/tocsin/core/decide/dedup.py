"""The time-bucket dedup decision (pure): route, suppress, escalate, resolve.

Rules (DESIGN.md section 4): dedup key = fingerprint + ``floor(unix_time / window)``.
The first firing event of a new alert is routed (``firing``); the first of a new bucket
for an alert still open is routed (``reminder``); later events of the same key are
suppressed unless their severity beats the highest already routed for it
(``escalated``). ``resolved`` bypasses dedup. An event whose timestamp falls in an
earlier bucket than the alert's current one is judged against the current bucket: an
old event never re-opens a period that was already notified. When the window changes,
the fold moves each open alert's bucket to the new window (``rebucket``), so the
comparison is always between buckets of the window in force.

``dedup`` is the first decision stage after ``idempotency`` (which stops a repeated
``event_id``): it records the event and tells the stages after it whether the event is
news for its alert, and why (``candidate.reason``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from msgspec import Struct

from tocsin.core import events as ev
from tocsin.core.contracts import SEVERITY_RANK, Reason, Severity, Status
from tocsin.core.decide.candidate import PASS, STOP, Candidate

if TYPE_CHECKING:  # the projection holds OpenAlert: state.py imports this module
    from tocsin.core.state import State

_US = 1_000_000

DEFAULT_WINDOW_SECONDS = 600.0
"""``[dedup] window`` when the config does not set it."""


NO_SLOTS: dict[str, str] = {}
"""The one empty ``inhibits`` and ``waits_on`` the fold gives every open alert that has
none: msgspec would make a dict per alert for the ``{}`` default (~64 B each, twice per
open fingerprint). Never changed in place: the fold replaces these dicts, as it does
every dict of the projection."""


class OpenAlert(Struct, kw_only=True, gc=False, array_like=True):
    """What dedup needs to know of a fingerprint's open alert (a projection)."""

    alert_id: str
    bucket: int
    routed_severity: Severity
    receivers: tuple[str, ...]
    acked: bool = False
    silenced: bool = False  # the current bucket's would-be notification was silenced
    groups: tuple[str, ...] = ()  # the groups it joined: a resolve goes to each (a tuple:
    # untracked by the cyclic GC, unlike a list per alert)
    silenced_by: str | None = None  # the silence that held back its current news
    inhibits: dict[str, str] = {}  # inhibit rule -> its equal values, as a source of it
    inhibited_by: str | None = None  # the alert that inhibited its current news
    waits_on: dict[str, str] = {}  # while inhibited: rule -> equal values (alert.inhibited)


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


def rebucket(bucket: int, old_window: float, new_window: float) -> int:
    """The bucket of ``new_window`` that holds the first instant of ``bucket`` of
    ``old_window``: where an open alert's notified bucket lies once ``[dedup] window``
    changes. A bucket index means nothing under another window (10m -> 1h would leave
    it far ahead of every new bucket: no reminder ever; 1h -> 10m far behind: a
    reminder at once); its start time does, so the next reminder comes with the first
    event of a later bucket of the new window, one per bucket as always."""
    return bucket_of(bucket * int(old_window * _US), new_window)


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


def dedup(state: State, candidate: Candidate) -> bool:
    """Record the event (``alert.received``) and judge whether it is news for its alert.

    Stops a resolve that matches no open alert (``alert.resolve_ignored``), a duplicate
    in a bucket already notified (suppressed, ``duplicate``) and a reminder of an
    acknowledged alert (suppressed, ``acked``: an ack stops reminders until the alert
    resolves, not news of a worse state). Passes on a resolve (after ``alert.resolved``),
    a new alert (after ``alert.opened``), a reminder, an escalation, and a duplicate in
    a bucket whose notification was silenced: that bucket is unspent, so the event is
    its news (``firing`` if nobody was ever told of the alert, else ``reminder``)."""
    event = candidate.event
    current = candidate.current = state.open_by_fingerprint.get(event.fingerprint)
    decision = decide(
        current,
        fingerprint=event.fingerprint,
        status=event.status,
        severity=event.severity,
        timestamp_us=event.timestamp,
        window_seconds=candidate.window_seconds,
    )
    verdict = decision.verdict
    candidate.dedup_key, candidate.bucket = decision.dedup_key, decision.bucket
    facts = candidate.facts
    if verdict == "open":
        alert_id = candidate.alert_id = candidate.new_id()
        facts.append(candidate.received(alert_id))
        facts.append(
            ev.AlertOpened(
                alert_id=alert_id,
                fingerprint=event.fingerprint,
                dedup_key=decision.dedup_key,
                bucket=decision.bucket,
                severity=event.severity,
                trace_id=candidate.trace_id,
            )
        )
        candidate.reason = "firing"
        return PASS
    if current is None:  # a resolve with no open alert ("resolve_ignored")
        facts.append(candidate.received(None))
        facts.append(
            ev.AlertResolveIgnored(fingerprint=event.fingerprint, trace_id=candidate.trace_id)
        )
        return STOP
    candidate.alert_id = current.alert_id
    facts.append(candidate.received(current.alert_id))
    if verdict == "resolve":
        facts.append(
            ev.AlertResolved(
                alert_id=current.alert_id,
                fingerprint=event.fingerprint,
                # Alertmanager's clients resolve with ``endsAt``: when it ended, while
                # ``timestamp`` (``startsAt``) stays when it began (DESIGN.md section 14).
                resolved_at=_resolved_at(event.timestamp, event.ends_at, candidate.received_at),
                trace_id=candidate.trace_id,
            )
        )
        candidate.reason = "resolved"
        return PASS
    reason: Reason
    if verdict == "suppress":
        if not current.silenced:
            facts.append(candidate.suppressed("duplicate"))
            return STOP
        reason = "reminder" if current.receivers or current.groups else "firing"
    elif verdict == "escalate":
        reason = "escalated"
    elif current.acked and SEVERITY_RANK[event.severity] > SEVERITY_RANK[current.routed_severity]:
        reason = "escalated"  # an ack stops reminders, not news of a worse state
    else:
        reason = "reminder"
    if reason == "reminder" and current.acked:
        facts.append(candidate.suppressed("acked"))
        return STOP
    candidate.reason = reason
    return PASS


def _resolved_at(timestamp: int, ends_at: int | None, received_at: int) -> int:
    """When a resolve says its alert ended: ``ends_at`` when it has one (never later
    than its arrival), else its ``timestamp``."""
    if ends_at is None:
        return timestamp
    return max(timestamp, min(ends_at, received_at))
