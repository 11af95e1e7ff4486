"""What the projection keeps, and what it lets go (pure): the one place for these rules.

The projection holds what decisions need, not all history: open alerts, alerts resolved
less than ``keep_resolved`` ago (``[alerts] keep_resolved``, logged in ``config.loaded``),
every delivery that is not over (pending, retrying, and dead: a dead letter can be
re-queued) and the alerts they are for, delivered and superseded ones for
``keep_resolved`` after their outcome, silences until ``keep_resolved`` after they end,
the changes of a fingerprint that does not flap for a ``[flapping] window`` after the
last one. The rest is in the log file, which the API reads for it (``store.reader``,
``core.fold.fold_alert``).

``sweep`` runs inside the fold, as a function of the log's append time alone: the log
time is cut into steps of ``sweep_step(keep_resolved)`` (the window itself, at least a
minute and at most an hour), and the first event of each new step of ``ts`` sweeps
before it is folded (like ``State.hour``), so live state, a rebuild, a snapshot plus its
tail and ``verify`` all let go of the same things at the same event. Something over is
kept for at least ``keep_resolved`` and at most one step more: with the default day an
hour more, with a one-minute window a minute more, so a short window bounds memory as
tightly as it says. Counters and hourly stats are not touched: they are bounded already.
"""

from __future__ import annotations

from tocsin.core.deliveries import sweep_facts
from tocsin.core.state import HOUR_US, DeliveryStatus, State

NEVER = 2**63 - 1
LET_GO: frozenset[DeliveryStatus] = frozenset({"delivered", "superseded"})
"""Deliveries over for good (a dead letter is not: it can be re-queued)."""
MIN_STEP_US = 60 * 1_000_000
"""The shortest step between sweeps: a window of seconds is swept once a minute, not at
every event (a sweep walks every delivery, alert and silence)."""


def sweep_step(keep_resolved: int) -> int:
    """Microseconds of log time between sweeps under a window of ``keep_resolved`` us:
    the window itself, at least ``MIN_STEP_US`` and at most an hour. Steps are aligned
    on the epoch, as hours are."""
    return min(HOUR_US, max(MIN_STEP_US, keep_resolved))


def next_sweep_after(ts: int, keep_resolved: int) -> int:
    """The log time from which the next event sweeps: the start of the step after
    ``ts``'s."""
    step = sweep_step(keep_resolved)
    return (ts // step + 1) * step


def sweep(state: State) -> None:
    """Let go of what is over since before ``last_ts - keep_resolved``; the next sweep
    is at the next step of log time (``fold`` calls this once ``ts`` reaches
    ``next_sweep``). A state that ``keep_everything`` (a report of the whole file,
    ``tocsin state``) never sweeps."""
    if state.keep_everything:
        state.next_sweep = NEVER
        return
    now = state.last_ts
    state.next_sweep = next_sweep_after(now, state.keep_resolved)
    cutoff = now - state.keep_resolved
    in_use: set[str] = set()  # alerts a delivery still needs (its work item, a re-queue)
    deliveries = state.deliveries
    for notification_id, status, settled_ts, alert_id in sweep_facts(deliveries):
        if status in LET_GO and (settled_ts or 0) <= cutoff:
            del deliveries[notification_id]
            state.queue[status] = state.queue.get(status, 0) - 1
        else:
            in_use.add(alert_id)
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
