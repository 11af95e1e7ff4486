"""Flapping (pure): a fingerprint that opens and resolves again and again is told of
once it settles, not at every change (DESIGN.md section 13).

``[flapping] changes = 4, window = "1h"`` (off unless configured, logged in
``config.loaded``): each opening and each resolve of a fingerprint is a change (the
fold keeps the last ``changes`` instants, ``record``). The change that makes
``changes`` of them fall within ``window`` marks it flapping (``alert.flapping``);
from then on its firing news (a new alert, a reminder, an escalation) is held, counted
as suppressed with cause ``flapping``. A resolve is never held: it goes to whoever was
told of the alert, and nobody is told of an alert opened while it flaps. Once the
fingerprint has been stable for ``window`` (no change), the clock settles it
(``alert.settled``, ``settled``): when it still fires, its alert is routed once as
``firing``; when it ended resolved, every receiver's last word of it was a resolve
already, and nothing more is sent.
"""

from __future__ import annotations

from collections.abc import Callable

from tocsin.core import events as ev
from tocsin.core.decide.candidate import PASS, STOP, Candidate
from tocsin.core.decide.route import RoutingTable, told_after_silence
from tocsin.core.state import Flap, State


def flapping(state: State, candidate: Candidate) -> bool:
    """The stage: marks a fingerprint flapping at the change that makes it so, and
    holds the firing news of a flapping one (``alert.suppressed``, ``flapping``)."""
    flaps = state.flaps
    if state.flap_changes is None and not flaps:
        return PASS  # off, and nothing flaps since it was on
    event = candidate.event
    flap = flaps.get(event.fingerprint)
    reason = candidate.reason
    if flap is None or flap.since is None:
        changing = reason == "resolved" or candidate.current is None
        if not changing or not starts_flapping(state, flap, candidate.received_at):
            return PASS
        assert state.flap_changes is not None
        assert state.flap_window is not None
        candidate.facts.append(
            ev.AlertFlapping(
                alert_id=candidate.alert_id,
                fingerprint=event.fingerprint,
                changes=state.flap_changes,
                window=state.flap_window,
                at=candidate.received_at,
                trace_id=candidate.trace_id,
            )
        )
    if reason == "resolved":
        return PASS  # to whoever was told of it: nobody, for an alert held since it opened
    if not candidate.receivers and not candidate.groups(state):
        return PASS  # nobody would be told: the route stage counts it unrouted
    candidate.facts.append(candidate.suppressed("flapping"))
    return STOP


def starts_flapping(state: State, flap: Flap | None, now: int) -> bool:
    """Whether a change at ``now`` makes ``[flapping] changes`` changes of the
    fingerprint (``flap``'s, this one included) fall within ``window``."""
    changes, window = state.flap_changes, state.flap_window
    if changes is None or window is None:
        return False
    before = flap.changes[-(changes - 1) :] if flap is not None else []
    return len(before) + 1 >= changes and now - before[0] <= window


# --- the fold's side -----------------------------------------------------------------


def record(state: State, fingerprint: str) -> None:
    """A change of ``fingerprint`` (an opening or a resolve), at the log time being
    folded: kept while ``[flapping]`` is on (the last ``changes`` of them), and a
    flapping fingerprint's settling moved to ``window`` after it."""
    flap = state.flaps.get(fingerprint)
    keep = state.flap_changes
    if keep is None:
        if flap is not None and flap.since is not None:
            flap.due_at = state.last_ts + flap.window
        return
    if flap is None:
        flap = state.flaps[fingerprint] = Flap(changes=[])
    flap.changes.append(state.last_ts)
    if len(flap.changes) > keep:
        del flap.changes[:-keep]
    if flap.since is not None:
        flap.due_at = state.last_ts + flap.window


def began(state: State, e: ev.AlertFlapping) -> None:
    """``alert.flapping``: it settles ``window`` after its last change."""
    flap = state.flaps.get(e.fingerprint)
    if flap is None:
        flap = state.flaps[e.fingerprint] = Flap(changes=[])
    flap.since = e.at
    flap.window = e.window
    last = flap.changes[-1] if flap.changes else e.at
    flap.due_at = last + e.window


def ended(state: State, e: ev.AlertSettled) -> None:
    """``alert.settled``: stable for its window, every change it counted is older
    than that: it starts again from nothing."""
    state.flaps.pop(e.fingerprint, None)


# --- the clock's side ----------------------------------------------------------------


def settled(
    state: State, now: int, routing: RoutingTable, new_id: Callable[[], str]
) -> list[ev.Event]:
    """Fingerprints stable for their window at ``now``: ``alert.settled``, then, when
    it still fires, its alert routed once (reason ``firing``)."""
    facts: list[ev.Event] = []
    for fingerprint, flap in state.flaps.items():
        due = flap.due_at
        if due is None or due > now:
            continue
        current = state.open_by_fingerprint.get(fingerprint)
        alert = None if current is None else state.alerts.get(current.alert_id)
        facts.append(
            ev.AlertSettled(
                fingerprint=fingerprint,
                status="resolved" if alert is None else "firing",
                alert_id=None if alert is None else alert.id,
                due_at=due,
                fired_at=now,
            )
        )
        if current is not None and alert is not None and not current.acked:
            facts += told_after_silence(state, routing, current, alert, new_id=new_id, at=now)
    return facts
