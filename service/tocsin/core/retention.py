"""What the projection keeps, and what it lets go (pure): the one place for these rules.

The projection holds what decisions need, not all history: open alerts, alerts resolved
less than ``keep_resolved`` ago (``[alerts] keep_resolved``, logged in ``config.loaded``),
every delivery that is not over (pending, retrying, and dead: a dead letter can be
re-queued) and the alerts they are for, delivered ones for ``keep_resolved`` after
their outcome, silences until ``keep_resolved`` after they end, the changes of a
fingerprint that does not flap for a ``[flapping] window`` after the last one. The rest
is in the log file, which the API reads for it (``store.reader``,
``core.fold.fold_alert``).

``sweep`` runs inside the fold, as a function of the log's append time alone: the first
event of each new hour of ``ts`` sweeps before it is folded (like ``State.hour``), so
live state, a rebuild, a snapshot plus its tail and ``verify`` all let go of the same
things at the same event. Something over is kept for at least ``keep_resolved`` and at
most an hour more. Counters and hourly stats are not touched: they are bounded already.
"""

from __future__ import annotations

from tocsin.core.state import HOUR_US, State, hour_of

NEVER = 2**63 - 1


def sweep(state: State) -> None:
    """Let go of what is over since before ``last_ts - keep_resolved``; the next sweep
    is at the next hour of log time (``fold`` calls this once ``ts`` reaches
    ``next_sweep``). A state that ``keep_everything`` (a report of the whole file,
    ``tocsin state``) never sweeps."""
    if state.keep_everything:
        state.next_sweep = NEVER
        return
    now = state.last_ts
    state.next_sweep = (hour_of(now) + 1) * HOUR_US
    cutoff = now - state.keep_resolved
    in_use: set[str] = set()  # alerts a delivery still needs (its work item, a re-queue)
    deliveries = state.deliveries
    for notification_id, delivery in list(deliveries.items()):
        if delivery.status == "delivered" and (delivery.delivered_ts or 0) <= cutoff:
            del deliveries[notification_id]
            state.queue["delivered"] = state.queue.get("delivered", 0) - 1
        else:
            in_use.add(delivery.alert_id)
    alerts = state.alerts
    for alert_id, alert in list(alerts.items()):
        if (
            alert.status == "resolved"
            and (alert.resolved_ts or 0) <= cutoff
            and alert_id not in in_use
        ):
            del alerts[alert_id]
    silences = state.silences
    for silence_id, silence in list(silences.items()):
        ended = silence.ends_at if silence.deleted_at is None else silence.deleted_at
        if min(ended, silence.ends_at) <= cutoff:
            del silences[silence_id]
    window = state.flap_window  # [flapping]: changes older than a window count for nothing
    flaps = state.flaps
    for fingerprint, flap in list(flaps.items()):
        if flap.since is None and (
            window is None or not flap.changes or flap.changes[-1] < now - window
        ):
            del flaps[fingerprint]
