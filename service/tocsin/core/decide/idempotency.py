"""``event_id`` as an idempotency key (DESIGN.md section 4): the stage that stops an
event already received in the last 24 h, and the ids it remembers (a projection).

JetStream drops a message whose ``Nats-Msg-Id`` it stored in the last 2 minutes, no
longer; a publisher that sends an event again later (a retry after a long outage, the
same event through HTTP and NATS) would count it twice. So an event whose ``event_id``
(else its ``Nats-Msg-Id``: ``ingest`` takes it) was received in the 24 h before it is
recorded (``alert.received``, for no alert) and stopped before dedup: a firing one is
suppressed (``duplicate_event``: counted in the stats' ``suppressed``, not for any
alert, so no occurrence and no ``last_seen``), a resolve is ignored
(``alert.resolve_ignored`` with that cause: it never closes an alert twice, nor a later
alert of its fingerprint).

The ids live in the projection with the receive time of their latest event, folded from
``alert.received`` (a repeat renews the time: an event retried for days is not news
again every 24 h). They are forgotten as a pure function of log time, an hour at a
time: each id is also listed under the hour it was received in, and once per hour of
log time the hours that ended more than 24 h before are dropped whole. Memory holds
the ids of the last 25 hours at most.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from msgspec import Struct

from tocsin.core import events as ev
from tocsin.core.decide.candidate import PASS, STOP, Candidate
from tocsin.core.decide.dedup import bucket_of, dedup_key

if TYPE_CHECKING:  # the projection holds ReceivedIds: state.py imports this module
    from tocsin.core.state import State

KEEP_US: Final = 24 * 3600 * 1_000_000
"""How long an ``event_id`` is remembered after its latest event: 24 h."""
SLICE_US: Final = KEEP_US // 24
"""Ids are forgotten an hour at a time (amortised: one sweep per hour of log time)."""


class ReceivedIds(Struct, kw_only=True, gc=False, array_like=True):
    """The event ids received in the last 24 h (and at most an hour more) of log time."""

    at: dict[str, int] = {}  # event id -> receive time of its latest event
    by_slice: dict[int, list[str]] = {}  # hour of receipt -> ids received in it
    swept: int = 0  # the hour of log time of the last sweep

    def repeated(self, event_id: str, at: int) -> bool:
        """Whether an event with ``event_id`` was received in the 24 h up to ``at``: one
        received exactly 24 h before is a repeat, a microsecond earlier it is not."""
        last = self.at.get(event_id)
        return last is not None and at - last <= KEEP_US

    def remember(self, event_id: str, received_at: int, now: int) -> None:
        """The fold step of an ``alert.received`` that carries an event id: remember
        it, after forgetting, once per hour of log time (``now``, the fold's), every
        hour that ended more than 24 h before ``now``."""
        hour = now // SLICE_US
        if hour != self.swept:
            self.swept = hour
            self._forget_before(hour - KEEP_US // SLICE_US)
        self.at[event_id] = received_at
        self.by_slice.setdefault(received_at // SLICE_US, []).append(event_id)

    def _forget_before(self, first_kept: int) -> None:
        """Drop the hours before ``first_kept`` and their ids, but not an id received
        again since (it is listed under a later hour too)."""
        at = self.at
        for old in [index for index in self.by_slice if index < first_kept]:
            for event_id in self.by_slice.pop(old):
                last = at.get(event_id)
                if last is not None and last // SLICE_US == old:
                    del at[event_id]


def idempotency(state: State, candidate: Candidate) -> bool:
    """Stop an event whose ``event_id`` was already received in the last 24 h: recorded
    for no alert, then suppressed (``duplicate_event``) if firing, ignored with that
    cause if a resolve. Any other event passes on to dedup."""
    event = candidate.event
    event_id = event.event_id
    if event_id is None or not state.received_ids.repeated(event_id, candidate.received_at):
        return PASS
    # Its own dedup key under the window in force, for the record: it is judged by none.
    bucket = bucket_of(event.timestamp, candidate.window_seconds)
    candidate.dedup_key = dedup_key(event.fingerprint, bucket)
    candidate.facts.append(candidate.received(None))
    if event.status == "resolved":
        candidate.facts.append(
            ev.AlertResolveIgnored(
                fingerprint=event.fingerprint, cause="duplicate_event", trace_id=candidate.trace_id
            )
        )
    else:
        candidate.facts.append(candidate.suppressed("duplicate_event"))
    return STOP
