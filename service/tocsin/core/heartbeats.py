"""Heartbeats, dead man's switches (DESIGN.md section 13), pure: what a beat causes,
when a heartbeat falls due, and what its missed deadline opens.

A heartbeat is configured (``[heartbeats.<name>]``, logged in ``config.loaded``) and
kept in the projection (``state.Heartbeat``). A beat (any message on
``alerts.heartbeat.<name>``, however it was sent) is ``heartbeat.received``; a name not
configured is rejected like bad input. No beat for ``every + grace`` since the last one
(or since the heartbeat was first configured) is a deadline the clock fires
(``core.clock``): ``heartbeat.missed``, then the facts of a firing event of type
``heartbeat.missed`` decided by the same stages as any inbound event (``triage``), so it
is deduplicated, silenced, routed and grouped like any alert. The next beat resolves it
the same way. While that alert is open, the heartbeat has no deadline.
"""

from __future__ import annotations

from collections.abc import Callable

from tocsin.core import events as ev
from tocsin.core.decide.dedup import DEFAULT_WINDOW_SECONDS, OpenAlert
from tocsin.core.decide.route import RoutingTable
from tocsin.core.decide.triage import triage
from tocsin.core.groups import seconds_to_us
from tocsin.core.ingest import Normalized, capped_raw, default_fingerprint
from tocsin.core.state import Heartbeat, State
from tocsin.core.subjects import heartbeat_subject
from tocsin.core.times import format_us

MISSED_TYPE = "heartbeat.missed"
"""The type of the alert a missed deadline opens."""

LABEL = "heartbeat"
"""The label naming the heartbeat on its alert (with the configured labels)."""

SOURCE = "heartbeat"
"""The source of a heartbeat's alert."""

UNKNOWN = "unknown_heartbeat"
"""The rejection code of a beat for a name the configuration does not have."""


def due_at(heartbeat: Heartbeat, state: State) -> int | None:
    """When ``heartbeat`` next misses its deadline: ``every + grace`` after ``since``;
    ``None`` while the alert it opened is open (its next beat, or a hand, resolves it)."""
    if open_alert(heartbeat, state) is not None:
        return None
    return heartbeat.since + heartbeat.every + heartbeat.grace


def next_due(state: State) -> int | None:
    """The earliest deadline of any heartbeat."""
    due = [d for hb in state.heartbeats.values() if (d := due_at(hb, state)) is not None]
    return min(due) if due else None


def open_alert(heartbeat: Heartbeat, state: State) -> OpenAlert | None:
    """The ``heartbeat.missed`` alert ``heartbeat`` opened, while it is open."""
    if heartbeat.missed_alert is None or heartbeat.missed_fingerprint is None:
        return None
    current = state.open_by_fingerprint.get(heartbeat.missed_fingerprint)
    if current is None or current.alert_id != heartbeat.missed_alert:
        return None
    return current


def labels_of(heartbeat: Heartbeat) -> dict[str, str]:
    """Its alert's labels: ``heartbeat = <name>`` and the configured ones."""
    return {LABEL: heartbeat.name, **heartbeat.labels}


def beat(
    state: State,
    name: str,
    *,
    subject: str,
    received_at: int,
    raw: bytes,
    routing: RoutingTable,
    new_id: Callable[[], str],
    trace_id: str | None,
) -> list[ev.Event]:
    """The facts of one beat of ``name`` (its payload is ignored, and kept only when
    the beat is rejected): ``heartbeat.received``, then, when its missed alert is open,
    the facts of that alert's resolve (routed to everyone told of it). A name not
    configured is ``alert.rejected`` (``unknown_heartbeat``) with the capped raw bytes."""
    heartbeat = state.heartbeats.get(name)
    if heartbeat is None:
        text, encoding = capped_raw(raw)
        known = ", ".join(sorted(state.heartbeats)) or "none configured"
        return [
            ev.AlertRejected(
                code=UNKNOWN,
                reason=f"no heartbeat {name[:64]!r} is configured (known: {known})",
                field=None,
                subject=subject,
                received_at=received_at,
                raw=text,
                raw_encoding=encoding,
                trace_id=trace_id,
            )
        ]
    current = open_alert(heartbeat, state)
    alert = state.alerts.get(current.alert_id) if current is not None else None
    received = ev.HeartbeatReceived(
        name=name,
        at=received_at,
        subject=subject,
        alert_id=alert.id if alert is not None else None,
        fingerprint=alert.fingerprint if alert is not None else None,
        trace_id=trace_id,
    )
    if alert is None:
        return [received]
    resolve = Normalized(
        type=alert.type,
        severity=alert.severity,
        summary=alert.summary,
        source=alert.source,
        status="resolved",
        labels=alert.labels,
        fingerprint=alert.fingerprint,
        details=alert.details,
        timestamp=received_at,
        timestamp_replaced=False,
        event_id=None,
    )
    return [
        received,
        *triage(
            state,
            resolve,
            subject=subject,
            received_at=received_at,
            routing=routing,
            window_seconds=state.dedup_window or DEFAULT_WINDOW_SECONDS,
            new_id=new_id,
            trace_id=trace_id,
        ),
    ]


def missed(
    state: State, now: int, *, routing: RoutingTable, new_id: Callable[[], str]
) -> list[ev.Event]:
    """The facts of the heartbeat whose deadline passed first, at ``now`` (none due:
    none): ``heartbeat.missed``, then those of its alert's firing event. One heartbeat
    per call: the facts are folded before the next is decided (two heartbeats may open
    the same group), and the clock asks again at once while one is due."""
    due: list[tuple[int, str]] = [
        (d, name)
        for name, hb in state.heartbeats.items()
        if (d := due_at(hb, state)) is not None and d <= now
    ]
    if not due:
        return []
    deadline, name = min(due)
    heartbeat = state.heartbeats[name]
    labels = labels_of(heartbeat)
    details: dict[str, object] = {
        "heartbeat": name,
        "every_seconds": heartbeat.every / 1e6,
        "grace_seconds": heartbeat.grace / 1e6,
        "deadline": format_us(deadline),
        "last_beat": None if heartbeat.last_beat is None else format_us(heartbeat.last_beat),
    }
    event = Normalized(
        type=MISSED_TYPE,
        severity=heartbeat.severity,
        summary=heartbeat.summary,
        source=SOURCE,
        status="firing",
        labels=labels,
        fingerprint=default_fingerprint(MISSED_TYPE, labels),
        details=details,
        timestamp=deadline,
        timestamp_replaced=False,
        event_id=None,
    )
    facts = triage(
        state,
        event,
        subject=heartbeat_subject(name),
        received_at=now,
        routing=routing,
        window_seconds=state.dedup_window or DEFAULT_WINDOW_SECONDS,
        new_id=new_id,
        trace_id=None,
    )
    received = facts[0]
    assert isinstance(received, ev.AlertReceived)
    assert received.alert_id is not None  # a firing event is always some alert's
    return [
        ev.HeartbeatMissed(
            name=name,
            alert_id=received.alert_id,
            fingerprint=event.fingerprint,
            due_at=deadline,
            fired_at=now,
            last_beat=heartbeat.last_beat,
        ),
        *facts,
    ]


def configured(state: State, rules: dict[str, ev.HeartbeatRule], at: int) -> None:
    """The fold step of ``config.loaded``: the heartbeats it names, with their rules;
    one seen for the first time starts counting ``at`` (the log time), one known keeps
    its beats and deadline (a restart resets nothing), one the config dropped is gone."""
    kept = state.heartbeats
    state.heartbeats = {}
    for name, rule in rules.items():
        heartbeat = kept.get(name)
        if heartbeat is None:
            heartbeat = Heartbeat(
                name=name,
                every=0,
                grace=0,
                severity=rule.severity,
                summary=rule.summary,
                labels=rule.labels,
                since=at,
                configured_at=at,
            )
        heartbeat.every = seconds_to_us(rule.every_seconds)
        heartbeat.grace = seconds_to_us(rule.grace_seconds)
        heartbeat.severity, heartbeat.summary = rule.severity, rule.summary
        heartbeat.labels = rule.labels
        state.heartbeats[name] = heartbeat


def received(state: State, e: ev.HeartbeatReceived) -> None:
    """The fold step of a beat: its next deadline counts from it."""
    heartbeat = state.heartbeats.get(e.name)
    if heartbeat is None:
        return
    heartbeat.last_beat = heartbeat.since = e.at
    heartbeat.beats += 1
    heartbeat.missed_alert = heartbeat.missed_fingerprint = None


def was_missed(state: State, e: ev.HeartbeatMissed) -> None:
    """The fold step of a missed deadline: quiet while its alert is open; should a hand
    resolve that alert with no beat since, the next deadline counts from now."""
    state.hour().heartbeats_missed += 1
    heartbeat = state.heartbeats.get(e.name)
    if heartbeat is None:
        return
    heartbeat.missed += 1
    heartbeat.since = e.fired_at
    heartbeat.missed_alert, heartbeat.missed_fingerprint = e.alert_id, e.fingerprint
