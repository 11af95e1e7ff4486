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
again every 24 h). Every NATS message has an id (its ``Nats-Msg-Id`` when it carries no
``event_id``), so this memory grows with every event received for 24 h, by design: it
is kept as small as exact equality allows (``digest``: one 16-byte key per id whatever
the id's length, one dict, no second index: 115 to 140 bytes an id, docs/reliability.md).
They are forgotten as a pure function of log time, an hour at a time: the dict is kept
in the order of receipt (a repeat moves to the end), so once per hour of log time the
ids at its front received more than 24 h before that hour began are dropped, up to the
first one that was not. Memory holds the ids of the last 25 hours (receive times follow
log order, as the router stamps them when it decides; one behind a later stamp, after a
clock stepped back, goes at a later hour).
"""

from __future__ import annotations

import hashlib
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


def digest(event_id: str) -> bytes:
    """The key an event id is remembered by: its 16-byte BLAKE2b digest. Equal ids have
    equal digests; two different ids share one with odds of ~n²/2¹²⁹ for n ids within
    a day (1e-23 at 1,000 events/s all day long), and making two collide on purpose
    costs ~2⁶⁴ hashes and only suppresses one's own event (matching somebody else's id
    is a second preimage: ~2¹²⁸). UTF-8 with ``surrogatepass`` is one-to-one on every
    ``str``, so nothing but a digest collision makes two ids one."""
    return hashlib.blake2b(event_id.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class ReceivedIds(Struct, kw_only=True, gc=False, array_like=True):
    """The event ids received in the last 24 h (and at most an hour more) of log time."""

    seen: dict[bytes, int] = {}  # digest(id) -> receive time of its latest event, in order
    swept: int = 0  # the hour of log time of the last sweep
    # Raw ids, as a base snapshot of an older version held them (by name: ``at``):
    # digested into ``seen`` by the next event folded; empty from then on.
    at: dict[str, int] = {}

    def repeated(self, event_id: str, at: int) -> bool:
        """Whether an event with ``event_id`` was received in the 24 h up to ``at``: one
        received exactly 24 h before is a repeat, a microsecond earlier it is not."""
        last = self.seen.get(digest(event_id))
        if last is None and self.at:
            last = self.at.get(event_id)
        return last is not None and at - last <= KEEP_US

    def remember(self, event_id: str, received_at: int, now: int) -> None:
        """The fold step of an ``alert.received`` that carries an event id: remember
        it, after forgetting, once per hour of log time (``now``, the fold's), the ids
        received before the hour that began 24 h before ``now``'s."""
        if self.at:
            self._take_raw_ids()
        hour = now // SLICE_US
        if hour != self.swept:
            self.swept = hour
            self._forget_before((hour - KEEP_US // SLICE_US) * SLICE_US)
        key = digest(event_id)
        seen = self.seen
        seen.pop(key, None)  # its latest receipt goes to the end: the order is receipt
        seen[key] = received_at

    def _forget_before(self, cutoff: int) -> None:
        """Drop the ids at the front received before ``cutoff``, up to the first that
        was not (the rest were received after it)."""
        seen = self.seen
        old = []
        for key, received_at in seen.items():
            if received_at >= cutoff:
                break
            old.append(key)
        for key in old:
            del seen[key]

    def _take_raw_ids(self) -> None:
        """Digest the raw ids of an older version's base snapshot into ``seen``, oldest
        receipt first, ahead of everything remembered since (nothing has been)."""
        oldest_first = sorted(self.at.items(), key=lambda item: item[1])
        taken = {digest(event_id): at for event_id, at in oldest_first}
        taken.update(self.seen)
        self.seen, self.at = taken, {}


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
