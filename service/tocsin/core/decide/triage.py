"""One accepted inbound event -> the facts it produces (pure), through the stages in order.

Was it received already (``idempotency``: its ``event_id`` in the last 24 h)? Is it
news for its alert (``dedup``)? Does its fingerprint flap (``flapping``)? Is anything
holding it back (``mute``, asking each source in turn)? Then who is told (``route``).
Each stage adds facts to the candidate and passes it on or stops it (``candidate``). A
new rule is a new stage in ``STAGES``, or a new source in ``mute(...)``, not a branch in
this function. ``RECORDS`` run after the stages whichever stopped the candidate:
bookkeeping every accepted event needs, news or not (which inhibit rules its alert is a
source of).

The state is not touched: the caller folds the facts after deciding, so the next event
of the same batch sees them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from tocsin.core import events as ev
from tocsin.core.decide.candidate import Candidate, Stage
from tocsin.core.decide.dedup import dedup
from tocsin.core.decide.flapping import flapping
from tocsin.core.decide.idempotency import idempotency
from tocsin.core.decide.inhibit import inhibited, inhibitors
from tocsin.core.decide.mute import mute
from tocsin.core.decide.route import RoutingTable, route
from tocsin.core.decide.silences import silenced
from tocsin.core.ingest import Normalized
from tocsin.core.state import State

STAGES: Final[tuple[Stage, ...]] = (
    idempotency,
    dedup,
    flapping,
    mute(silenced, inhibited),
    route,
)

RECORDS: Final[tuple[Stage, ...]] = (inhibitors,)


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
    escalated / routed / resolved, in the order they are appended."""
    candidate = Candidate(
        event=event,
        subject=subject,
        received_at=received_at,
        routing=routing,
        window_seconds=window_seconds,
        new_id=new_id,
        trace_id=trace_id,
    )
    for stage in STAGES:
        if not stage(state, candidate):
            break
    for record in RECORDS:
        record(state, candidate)
    return candidate.facts
