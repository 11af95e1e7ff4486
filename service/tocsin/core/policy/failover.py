"""When a delivery worker cannot trust JetStream's delivery count, and what it does then
(pure decisions; ``delivery.py`` does the I/O).

A worker asks the router whether a notification is already settled only when the item
is a redelivery (delivery count > 1): asking for every item would cost a request per
notification in a storm. But a consumer's delivered and acked state is replicated after
the fact: when its leader dies (or the node a worker talks to goes away), a new leader
may hand out again an item that was sent, with a delivery count of 1 (nats-server
issues on ``num_delivered`` after a leader change). So, for a while after the worker's
connection reconnects or JetStream announces a new leader for its stream or consumer,
every item is checked first: that while is a *turbulence window*.

The router answers from the log, after the recorder caught up with TOCSIN_OUT; if it
cannot (``behind``) or gives no answer, an item in turbulence is deferred (NAKed with a
short delay) rather than sent, but only for so long: after ``DEFER_LIMIT`` it is sent
anyway, since a notification sent twice beats one never sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tocsin.core.state import SETTLED

TURBULENCE_MARGIN = 10.0
"""Seconds a turbulence window outlasts the consumer's ``ack_wait``. A work item in
flight when the turbulence began comes back, at the latest, when its ack wait runs out
on the new leader; the margin covers the new leader's election and the worker's next
pull request reaching it."""

DEFER_DELAY = 1.0
"""Seconds before a deferred item comes back (the ``-NAK`` delay): about the router's
patience, so that each return is a fresh chance for the recorder to have caught up."""

DEFER_LIMIT = 60.0
"""Seconds an item may be held back in turbulence, counted from when it was queued or
from when the turbulence began, whichever is later. Past it the item is sent even though
the log may not hold its last outcome. After a failover the recorder was measured
stalling ~10 s before it pulled again; 60 s leaves room for a slow election, and bounds
how late a notification can be made by a broker failover."""

Action = Literal["send", "skip", "defer", "send_anyway"]


@dataclass(frozen=True, slots=True)
class Window:
    """A spell of turbulence: ``started`` when it began, open until ``until`` (seconds,
    Unix time)."""

    started: float
    until: float


def opened(window: Window | None, now: float, length: float) -> Window:
    """The window after turbulence at ``now``. A window still open is extended and keeps
    its start, so a spell that goes on and on still ends the deferrals (``waiting``); a
    closed one (or none) starts a new spell."""
    if window is not None and now <= window.until:
        return Window(window.started, max(window.until, now + length))
    return Window(now, now + length)


def is_open(window: Window | None, now: float) -> bool:
    return window is not None and now <= window.until


def must_ask(delivery_count: int, turbulent: bool) -> bool:
    """Whether to ask the router before sending: for a redelivery, and for any item in
    turbulence (its delivery count may be a new leader's mistake)."""
    return delivery_count > 1 or turbulent


def waiting(now: float, stored_at: float, window: Window | None) -> float:
    """Seconds the item has waited in turbulence: since it was queued (``stored_at``),
    or since the spell began if that is later (an item queued long before, say behind a
    rate limit, gets the whole ``DEFER_LIMIT`` too)."""
    since = stored_at if window is None else max(stored_at, window.started)
    return max(0.0, now - since)


def before_send(
    answer: str | None, turbulent: bool, waited: float, limit: float = DEFER_LIMIT
) -> Action:
    """What to do with an item, given the router's ``answer`` (``None``: no answer).

    ``skip``: the log holds its final outcome; ack it, do not send. ``defer``: in
    turbulence the answer says nothing (``behind`` or none): NAK with ``DEFER_DELAY``.
    ``send_anyway``: the same, but it has waited ``limit`` seconds: send, and say so.
    ``send``: otherwise (outside turbulence, no answer is taken as "not sent", as before:
    at least once beats never)."""
    if answer in SETTLED:
        return "skip"
    if turbulent and (answer is None or answer == BEHIND):
        return "defer" if waited < limit else "send_anyway"
    return "send"


def attempt_number(delivery_count: int, deferrals: int) -> int:
    """Which send this is: JetStream's delivery count less the deferrals that did not
    send (each ``-NAK`` counts as a delivery), so ``max_attempts`` still counts sends.
    Only the deferrals this worker made are known to it: an item deferred by another
    worker process counts those as attempts here (fewer sends than ``max_attempts``
    then, never more)."""
    return max(1, delivery_count - deferrals)


PENDING = "pending"

RETRYING = "retrying"

DELIVERED = "delivered"

DEAD = "dead"

SUPERSEDED = "superseded"

UNKNOWN = "unknown"

BEHIND = "behind"


REPLIES = {
    PENDING: "routed; no attempt recorded",
    RETRYING: "at least one failed attempt recorded; another is due",
    DELIVERED: "a successful send is recorded",
    DEAD: "dead-lettered (until re-queued)",
    SUPERSEDED: "not sent: its receiver accepted a later notification of the fingerprint",
    UNKNOWN: "no such notification in the log",
    BEHIND: "the log may not hold every stored outcome yet: undetermined",
}
