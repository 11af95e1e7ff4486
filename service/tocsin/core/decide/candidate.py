"""The candidate: one accepted inbound event on its way through the decision stages.

A stage is a pure function ``(state, candidate) -> bool``. It reads the projection and
what the stages before it learned, appends the facts it decides to ``candidate.facts``,
and returns ``PASS`` to hand the candidate on or ``STOP`` when its facts are complete.
No stage changes the state: the caller folds the facts once the decision is made.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final, TypeAlias

from msgspec import Struct, field

from tocsin.core import events as ev
from tocsin.core.grouptarget import GroupTarget

if TYPE_CHECKING:  # for annotations only: the stages' modules import this one
    from tocsin.core.contracts import Reason
    from tocsin.core.decide.dedup import OpenAlert
    from tocsin.core.decide.route import RoutingTable
    from tocsin.core.ingest import Normalized
    from tocsin.core.state import State

PASS: Final = True
STOP: Final = False


class Candidate(Struct, kw_only=True, gc=False):
    """The event being decided, the rules it is decided under, and what the stages
    have learned of it so far. One is made per inbound event on the router's hot path
    (a Struct: measured a third of the cost of a slotted class with ``__init__``)."""

    event: Normalized
    subject: str
    received_at: int
    routing: RoutingTable
    window_seconds: float
    new_id: Callable[[], str]
    trace_id: str | None
    facts: list[ev.Event] = field(default_factory=list)
    # What the dedup stage learns, for the stages after it.
    current: OpenAlert | None = None  # the fingerprint's open alert, if any
    alert_id: str = ""
    dedup_key: str = ""
    bucket: int = 0
    reason: Reason = "firing"  # what a notification of it would say
    _receivers: Sequence[str] | None = None
    _groups: list[GroupTarget] | None = None

    @property
    def receivers(self) -> Sequence[str]:
        """Who would be told at once (ungrouped routes): every receiver told of the
        alert for a resolve (whatever the routes say now), else the receivers of the
        matching routes. Asked of the routing table once, by the first stage that needs
        it (mute, to hold back only what would reach someone; route, to tell them)."""
        receivers = self._receivers
        if receivers is None:
            if self.reason == "resolved" and self.current is not None:
                receivers = self.current.receivers
                self._groups = None  # a resolve's groups come from the state
            elif self.routing.grouped:
                event = self.event
                receivers, self._groups = self.routing.targets_for(
                    event.severity, event.type, event.source, event.labels, event.fingerprint
                )
            else:
                event = self.event
                receivers = self.routing.receivers_for(
                    event.severity, event.type, event.source, event.labels
                )
                self._groups = []
            self._receivers = receivers
        return receivers

    def groups(self, state: State) -> list[GroupTarget]:
        """The groups the news joins (grouped routes): for a resolve, every group the
        alert joined, whatever the routes say now."""
        if self._receivers is None:
            self.receivers  # noqa: B018 - computes both
        groups = self._groups
        if groups is None:
            current = self.current
            keys = current.groups if current is not None else []
            groups = self._groups = [
                GroupTarget(key, group.receiver, group.route, group.labels, None)
                for key in keys
                if (group := state.groups.get(key)) is not None
            ]
        return groups

    def received(self, alert_id: str | None) -> ev.AlertReceived:
        """The fact of the event's arrival, counted for ``alert_id`` (``None``: for no
        alert, as a resolve that found none, or a repeat of an event already received)."""
        event = self.event
        return ev.AlertReceived(
            alert_id=alert_id,
            fingerprint=event.fingerprint,
            dedup_key=self.dedup_key,
            type=event.type,
            severity=event.severity,
            summary=event.summary,
            source=event.source,
            status=event.status,
            labels=event.labels,
            details=event.details,
            timestamp=event.timestamp,
            received_at=self.received_at,
            subject=self.subject,
            event_id=event.event_id,
            timestamp_replaced=event.timestamp_replaced,
            ignored_fields=event.ignored_fields,
            ends_at=event.ends_at,
            trace_id=self.trace_id,
        )

    def suppressed(
        self, cause: ev.SuppressCause, *, newly_unrouted: bool = False
    ) -> ev.AlertSuppressed:
        """The fact of an event counted for its alert but told to nobody (for no alert,
        ``alert_id`` empty, when it repeats an event already received)."""
        return ev.AlertSuppressed(
            alert_id=self.alert_id,
            fingerprint=self.event.fingerprint,
            dedup_key=self.dedup_key,
            cause=cause,
            newly_unrouted=newly_unrouted,
            trace_id=self.trace_id,
        )


Stage: TypeAlias = Callable[["State", Candidate], bool]
"""One step of the decision: adds facts to the candidate, then ``PASS`` or ``STOP``."""
