"""Groups (pure): which group an alert's news joins, when a group is due, and what its
notification says (DESIGN.md section 11).

Dedup decides which events are news for an alert; a grouped route hands that news to a
group (``alert.grouped``), keyed by route, receiver and the route's ``group_by`` values.
The group's timers decide when the receiver is told, in one notification for the whole
group (``group.notified``): ``group_wait`` after its first alert, ``group_interval``
after a notification when something changed since, ``repeat_interval`` after one when
nothing did and it still fires. The fold (``tocsin.core.fold``) keeps each group's
``due_at`` with it; the clock (``tocsin.core.clock``) fires what is due.

A route with the defaults (``group_by = ["fingerprint"]`` and no timers) is not grouped:
each alert's news is routed at once, as sections 4 and 5 say.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tocsin.core.contracts import SEVERITY_RANK, AlertInGroup, GroupReason, Reason, Status
from tocsin.core.state import Alert, Group, Member, State
from tocsin.core.times import format_us

FINGERPRINT = "fingerprint"
EVERY_LABEL = "..."
TOP_LEVEL_KEYS = ("type", "source", "severity", "fingerprint")
LABEL_PREFIX = "labels."
MAX_KEY_CHARS = 255
DEFAULT_MAX_ALERTS = 100
_US = 1_000_000


@dataclass(frozen=True, slots=True)
class Grouping:
    """A route's grouping keys, compiled (durations in microseconds)."""

    group_by: tuple[str, ...] = (FINGERPRINT,)
    wait: int = 0
    interval: int = 0
    repeat: int | None = None
    max_alerts: int = DEFAULT_MAX_ALERTS
    active_intervals: tuple[str, ...] = ()
    mute_intervals: tuple[str, ...] = ()

    @property
    def grouped(self) -> bool:
        """Whether the route notifies through groups; with every key at its default
        it does not: each alert is its own group, notified at once, as before."""
        return self != _PER_ALERT


_PER_ALERT = Grouping()


def check_group_by(keys: Sequence[str]) -> str | None:
    """What is wrong with a ``group_by`` list (``None``: nothing): every key is a
    top-level field, ``labels.<name>``, or ``...`` alone."""
    if EVERY_LABEL in keys and len(keys) > 1:
        return '"..." groups by type and every label: give it alone'
    for key in keys:
        if key == EVERY_LABEL or key in TOP_LEVEL_KEYS:
            continue
        if key.startswith(LABEL_PREFIX) and len(key) > len(LABEL_PREFIX):
            continue
        known = ", ".join([*TOP_LEVEL_KEYS, "labels.<name>", '"..."'])
        return f"{key!r} can never match: group by one of {known}"
    return None


def group_labels(
    group_by: Sequence[str],
    *,
    type_: str,
    source: str,
    severity: str,
    fingerprint: str,
    labels: Mapping[str, str],
) -> dict[str, str]:
    """The ``group_by`` keys as written and the alert's values for them (a label the
    alert lacks groups as the empty string, as in Alertmanager)."""
    if tuple(group_by) == (EVERY_LABEL,):
        out = {"type": type_}
        out.update((LABEL_PREFIX + name, value) for name, value in sorted(labels.items()))
        return out
    fields = {"type": type_, "source": source, "severity": severity, FINGERPRINT: fingerprint}
    return {
        key: fields[key] if key in fields else labels.get(key[len(LABEL_PREFIX) :], "")
        for key in group_by
    }


def group_key(route: int, receiver: str, values: Mapping[str, str]) -> str:
    """Stable for the same route, receiver and values: ``route[0]/pager/{k="v",...}``,
    or, when that would pass ``MAX_KEY_CHARS``, its prefix and a hash of the values."""
    inner = ",".join(f'{k}="{_escaped(v)}"' for k, v in sorted(values.items()))
    key = f"route[{route}]/{receiver}/{{{inner}}}"
    if len(key) <= MAX_KEY_CHARS:
        return key
    digest = hashlib.sha256(inner.encode()).hexdigest()[:32]
    return f"route[{route}]/{receiver}/#{digest}"


def _escaped(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


# --- the fold's side: membership and timers ------------------------------------------


def join(group: Group, alert_id: str, reason: Reason, dedup_key: str) -> None:
    """An alert's news reaches its group (firing, reminder, escalated or resolved).

    A reminder (a new dedup bucket) is not news for a group: its own
    ``repeat_interval`` reminds. A resolve before the group was ever notified takes
    the alert out (nobody was told of it); after, it is news until notified."""
    members = group.members
    member = members.get(alert_id)
    if reason == "resolved":
        if member is None or member.resolved:
            return
        if group.notified_at is None:
            del members[alert_id]
            return
        member.resolved = True
        member.news = "resolved"
        member.dedup_key = dedup_key or member.dedup_key
        return
    if member is None:
        members[alert_id] = Member(alert_id=alert_id, news="firing", dedup_key=dedup_key)
        return
    member.dedup_key = dedup_key
    if reason == "escalated" and member.news is None:
        member.news = "escalated"


def acknowledge(group: Group, alert_id: str) -> None:
    member = group.members.get(alert_id)
    if member is not None:
        member.acked = True


def notified(group: Group, resolved: Sequence[str], fired_at: int) -> None:
    """After a notification: resolved alerts leave, nothing is news any more."""
    for alert_id in resolved:
        group.members.pop(alert_id, None)
    for member in group.members.values():
        member.news = None
    group.notified_at = fired_at
    group.notifications += 1
    group.deferred_until = None


def due_at(group: Group) -> int | None:
    """When the clock next has something to decide for ``group``, or ``None``."""
    members = group.members.values()
    if not group.members:
        return None
    if group.notified_at is None:
        due: int | None = group.opened_at + group.wait
    elif any(m.news is not None for m in members):
        due = group.notified_at + group.interval
    elif group.repeat is not None and any(not m.resolved and not m.acked for m in members):
        due = group.notified_at + group.repeat
    else:
        due = None
    if due is not None and group.deferred_until is not None:
        due = max(due, group.deferred_until)
    return due


def closed(group: Group) -> bool:
    """A group with no alert left (all resolved and notified, or never told) closes."""
    return not group.members


# --- the clock's side: the notification ----------------------------------------------


@dataclass(frozen=True, slots=True)
class Told:
    """What a group's notification says (``group.notified``'s fields)."""

    reason: GroupReason
    status: Status
    alerts: list[AlertInGroup]
    alert_ids: list[str]
    resolved_alert_ids: list[str]
    truncated: int


def told(state: State, group: Group) -> Told | None:
    """The group's notification as of now: every alert in it, most severe first, then
    oldest, at most ``max_alerts`` listed; ``None`` when there is nothing to say."""
    members = [
        (m, alert)
        for m in group.members.values()
        if (alert := state.alerts.get(m.alert_id)) is not None
    ]
    if not members:
        return None
    firing = [m for m, _ in members if not m.resolved]
    if group.notified_at is None:
        reason: GroupReason = "firing"
    elif not firing:
        reason = "resolved"
    elif any(m.news is not None for m, _ in members):
        reason = "update"
    else:
        reason = "reminder"
    members.sort(key=lambda pair: (-SEVERITY_RANK[pair[1].severity], pair[1].first_seen))
    shown = members[: group.max_alerts]
    return Told(
        reason=reason,
        status="firing" if firing else "resolved",
        alerts=[_alert_in_group(alert, member) for member, alert in shown],
        alert_ids=[member.alert_id for member, _ in shown],
        resolved_alert_ids=[m.alert_id for m, _ in members if m.resolved],
        truncated=len(members) - len(shown),
    )


def _alert_in_group(alert: Alert, member: Member) -> AlertInGroup:
    own: Reason = "reminder" if member.news is None else member.news
    # Most alerts of a storm were seen once: one instant to format, not two (~0.5 us
    # each, a listed alert's flush costs ~10 us; issue #20's W5).
    first_seen = format_us(alert.first_seen)
    last_seen = first_seen if alert.last_seen == alert.first_seen else format_us(alert.last_seen)
    return AlertInGroup(
        reason=own,
        alert_id=alert.id,
        fingerprint=alert.fingerprint,
        dedup_key=member.dedup_key,
        type=alert.type,
        severity=alert.severity,
        status="resolved" if member.resolved else "firing",
        summary=alert.summary,
        source=alert.source,
        labels=alert.labels,
        details=alert.details,
        first_seen=first_seen,
        last_seen=last_seen,
        occurrences=alert.occurrences,
        suppressed_count=alert.suppressed_count,
    )


def seconds_to_us(seconds: float) -> int:
    return round(seconds * _US)
