"""One accepted inbound event -> the facts it produces (pure).

Composes dedup (``dedup.decide``) and routing (``RoutingTable``) against the current
projection; returns events to append, without touching the state (the caller folds them
after deciding, so the next event of the same batch sees them).
"""

from __future__ import annotations

from collections.abc import Callable

from tocsin.core import events as ev
from tocsin.core.contracts import SEVERITY_RANK, Reason
from tocsin.core.decide.dedup import decide
from tocsin.core.decide.route import RoutingTable
from tocsin.core.decide.silences import covering
from tocsin.core.ingest import Normalized
from tocsin.core.state import State


def triage(
    state: State,
    event: Normalized,
    *,
    subject: str,
    received_at: int,
    routing: RoutingTable,
    window_seconds: float,
    new_id: Callable[[], str],
    trace_id: str | None,
) -> list[ev.Event]:
    """The facts for ``event``: received, then opened / suppressed / silenced /
    escalated / routed / resolved, in the order they are appended.

    A firing event that would be routed while an active silence matches it is recorded
    as ``alert.silenced`` instead, and its bucket stays unspent: once the silence ends,
    the next event of the alert is routed (``firing`` if nobody was ever told of the
    alert, else ``reminder``). An acknowledged alert gets no reminders (escalations
    still go out) until it resolves."""
    fp = event.fingerprint
    current = state.open_by_fingerprint.get(fp)
    decision = decide(
        current,
        fingerprint=fp,
        status=event.status,
        severity=event.severity,
        timestamp_us=event.timestamp,
        window_seconds=window_seconds,
    )
    key, bucket = decision.dedup_key, decision.bucket
    alert_id = current.alert_id if current is not None else None
    if decision.verdict == "open":
        alert_id = new_id()
    received = ev.AlertReceived(
        alert_id=alert_id,
        fingerprint=fp,
        dedup_key=key,
        type=event.type,
        severity=event.severity,
        summary=event.summary,
        source=event.source,
        status=event.status,
        labels=event.labels,
        details=event.details,
        timestamp=event.timestamp,
        received_at=received_at,
        subject=subject,
        event_id=event.event_id,
        timestamp_replaced=event.timestamp_replaced,
        trace_id=trace_id,
    )
    facts: list[ev.Event] = [received]
    if decision.verdict == "resolve_ignored" or alert_id is None:
        facts.append(ev.AlertResolveIgnored(fingerprint=fp, trace_id=trace_id))
        return facts

    def routed(receiver: str, reason: Reason) -> ev.AlertRouted:
        return ev.AlertRouted(
            alert_id=alert_id,
            fingerprint=fp,
            dedup_key=key,
            bucket=bucket,
            reason=reason,
            severity=event.severity,
            receiver=receiver,
            notification_id=new_id(),
            trace_id=trace_id,
        )

    def suppressed(cause: ev.SuppressCause) -> ev.AlertSuppressed:
        return ev.AlertSuppressed(
            alert_id=alert_id, fingerprint=fp, dedup_key=key, cause=cause, trace_id=trace_id
        )

    if decision.verdict == "resolve":
        assert current is not None
        facts.append(
            ev.AlertResolved(
                alert_id=alert_id, fingerprint=fp, resolved_at=event.timestamp, trace_id=trace_id
            )
        )
        facts.extend(routed(receiver, "resolved") for receiver in current.receivers)
        return facts
    verdict = decision.verdict
    # A bucket whose notification was silenced is unspent: its next event is routed.
    unspent = verdict == "suppress" and current is not None and current.silenced
    if verdict == "suppress" and not unspent:
        facts.append(suppressed("duplicate"))
        return facts
    receivers = routing.receivers_for(event.severity, event.type, event.source, event.labels)
    if verdict == "open":
        facts.append(
            ev.AlertOpened(
                alert_id=alert_id,
                fingerprint=fp,
                dedup_key=key,
                bucket=bucket,
                severity=event.severity,
                trace_id=trace_id,
            )
        )
    if (
        verdict == "reminder"
        and current is not None
        and current.acked
        and SEVERITY_RANK[event.severity] > SEVERITY_RANK[current.routed_severity]
    ):
        verdict = "escalate"  # acknowledged stops reminders, not news of a worse state
    reason: Reason = "reminder"
    if verdict == "open" or (unspent and current is not None and not current.receivers):
        reason = "firing"
    elif verdict == "escalate":
        reason = "escalated"
    acked = reason == "reminder" and current is not None and current.acked
    if receivers and not acked:
        silence = covering(
            state.silences.values(),
            received_at,
            severity=event.severity,
            type_=event.type,
            source=event.source,
            labels=event.labels,
        )
        if silence is not None:
            facts.append(
                ev.AlertSilenced(
                    alert_id=alert_id,
                    fingerprint=fp,
                    dedup_key=key,
                    silence_id=silence.id,
                    trace_id=trace_id,
                )
            )
            return facts
    if verdict == "escalate":
        assert current is not None
        facts.append(
            ev.AlertEscalated(
                alert_id=alert_id,
                fingerprint=fp,
                dedup_key=key,
                bucket=bucket,
                from_severity=current.routed_severity,
                severity=event.severity,
                trace_id=trace_id,
            )
        )
    if acked:
        facts.append(suppressed("acked"))
    elif receivers:
        facts.extend(routed(receiver, reason) for receiver in receivers)
    elif verdict in ("reminder", "suppress"):
        facts.append(suppressed("no_route"))
    return facts
