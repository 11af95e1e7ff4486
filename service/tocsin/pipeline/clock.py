"""The clock loop: timers in the projection -> facts through the single writer
(DESIGN.md section 11).

It runs in the process that writes the log, beside the router. It sleeps until the
projection's next due time (``core.clock.next_due``), or until the router says a batch
was committed that made something due sooner (a new group may be due at once;
``core.clock.wakes_sooner``), then has ``core.clock.tick`` decide the
facts under the ledger's lock and commits and publishes them as operator commands are
(``Control.execute``), a tick at a time (``core.clock.FLUSH_ALERTS``), until nothing
is due. A timer that fell due while tocsin was stopped is due at start, so it fires
once the loop starts. The router asks ``serve_due`` before each inbound batch, so what
is due goes first, and ``waits`` while it decides one, so a batch stops where a timer
falls due. Nothing here decides: it only asks when.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from tocsin.config import Config
from tocsin.core import clock
from tocsin.core import events as ev
from tocsin.core.commands import CommandError
from tocsin.core.decide.route import RoutingTable
from tocsin.core.ids import new_id
from tocsin.core.policy.backoff import Backoff
from tocsin.core.state import State
from tocsin.core.times import now_us
from tocsin.core.versions import stamped
from tocsin.pipeline.control import Control, Queued
from tocsin.store.ledger import Ledger

log = logging.getLogger("tocsin.clock")

MAX_NAP = 1.0
"""Seconds between looks when nothing is due sooner: a bound on how late a timer set by
a fact the router did not announce (an operator's ack, a re-queue) is seen."""

_US = 1_000_000


class Clock:
    """Fires what falls due, through ``control``'s commit-then-publish."""

    def __init__(
        self,
        control: Control,
        ledger: Ledger,
        config: Config,
        now: Callable[[], int] = now_us,
        flush_alerts: int = clock.FLUSH_ALERTS,
        lead: int = clock.LEAD_US,
    ) -> None:
        """``flush_alerts``: about how many alerts one tick's group notifications list
        (``core.clock.FLUSH_ALERTS``); the groups beyond are the next tick's. ``lead``:
        how long before a timer falls due the router's batches are cut to a chunk
        (``core.clock.LEAD_US``; ``waits``)."""
        self._control = control
        self._flush_alerts = flush_alerts
        self._lead = lead
        self._ledger = ledger
        self._now = now
        self._nudged = asyncio.Event()
        self._looks_at: int | None = None  # while it naps: when it means to look next (us)
        self._due: int | None = None  # the next due time it knows of (us), for the router
        self._turn = asyncio.Lock()  # one look at a time: the loop's, or the router's
        self.reconfigure(config)

    def reconfigure(self, config: Config) -> None:
        """Fire under ``config`` from the next tick on (``reload``, under the ledger's
        lock): its routing, time intervals and version."""
        self._intervals = config.time_intervals
        self._routing = RoutingTable.compile(config.routes, config.inhibit)
        self._version = config.digest()
        self._nudged.set()  # a new interval or route may decide what is due differently

    def nudge(self) -> None:
        """Something was committed: look again now if it made a timer due before the
        clock means to look (a group may be due at once). A commit that did not (at a
        steady rate, nearly every one) costs a ``next_due``, not a wake-up of the loop;
        awake, the clock asks ``next_due`` itself before it naps again."""
        looks_at = self._looks_at
        if looks_at is None:
            return
        due = clock.next_due(self._ledger.state)
        if clock.wakes_sooner(due, looks_at):
            self._due = due
            self._nudged.set()

    async def run(self, stop: asyncio.Event) -> None:
        backoff = Backoff(first=0.5, ceiling=10.0)
        while not stop.is_set():
            try:
                async with self._turn:
                    nap = await self._look()
            except CommandError as error:
                # Committed facts whose work items NATS did not take are the outbox's
                # to publish again; a refused write is tried again later.
                log.warning("clock: %s; trying again", error)
                await _nap(stop, backoff.next())
                continue
            if nap is None:  # it fired: what that made due (or left due) at once
                backoff = Backoff(first=0.5, ceiling=10.0)
                continue
            seconds, wakeable = nap
            if not wakeable:
                await _nap(stop, seconds)
                continue
            self._nudged.clear()
            self._looks_at = self._now() + int(seconds * _US)
            try:
                await _nap(stop, seconds, self._nudged)
            finally:
                self._looks_at = None

    async def serve_due(self) -> None:
        """The router asks this before it decides each inbound batch: when a timer has
        fallen due (``clock.goes_first``), or the clock is firing, the clock's look (its
        facts decided, committed, and their work items published) is done first, so
        a group's flush does not queue behind a storm's batches for the event loop,
        the ledger's lock and the commits decided before it. Otherwise nothing (a
        comparison: it runs once a batch). A refused write is left to the clock's own
        loop, which tries again later; the router's batch goes ahead meanwhile."""
        if not self._turn.locked() and not clock.goes_first(self._due, self._now()):
            return  # neither firing now (its lock is held across awaits only then) nor due
        async with self._turn:
            try:
                while await self._look() is None:  # until nothing more is due now
                    pass
            except CommandError as error:
                log.warning("clock: %s; the clock loop tries again", error)
                self._due = None  # the loop's retry, not every batch's

    def waits(self) -> bool:
        """The router asks this while it decides an inbound batch (every
        ``processor.CHUNK`` messages): whether a timer falls due within
        ``clock.LEAD_US`` (``clock.near_due``), or has since it began, or the clock is
        firing and waits for the ledger's lock. Then the batch stops there and
        ``serve_due`` goes next, so a flush waits for a few messages' decisions and
        their commit, not for a storm's whole batch: near a due time the router's
        batches are a chunk each, and what the timer's first commit queues behind is
        one or two of them (issue #20, W5)."""
        return self._turn.locked() or clock.near_due(self._due, self._now(), self._lead)

    async def _look(self) -> tuple[float, bool] | None:
        """One look at the timers (under ``_turn``): fire what is due now and return
        ``None`` (look again at once: a tick's facts may make more due), or how long to
        nap and whether a commit that makes a timer due sooner may wake it; the next
        due time is noted for ``serve_due``."""
        due = clock.next_due(self._ledger.state)
        now = self._now()
        if due is not None and due <= now:
            self._due = None  # firing: the router waits for the lock meanwhile
            if await self._fire():
                # What is still due now (the groups past a tick's ``FLUSH_ALERTS``) goes
                # before the router's next batch too, whoever looks next.
                self._due = clock.next_due(self._ledger.state)
                return None
            # Due but nothing to decide (a timer the fold left behind): look again
            # later, and not at every commit, rather than spin.
            return MAX_NAP, False
        self._due = due
        return (MAX_NAP if due is None else min(MAX_NAP, (due - now) / _US)), True

    async def _fire(self) -> bool:
        """Commit what is due now, a tick at a time until nothing more is; whether
        anything was. While a tick is written, the next is decided on top of it (the
        state has its facts already); a tick's work items are published once it is
        committed, while the ticks after it are: a tick waits neither for the commit
        of the one before (2-4 ms of a 2,000-alert tick in W5's flush) nor for
        JetStream's PubAcks of its work items (3-10 ms, issue #20)."""
        control = self._control
        publishing: asyncio.Task[list[ev.Event]] | None = None
        fired = False
        queued: Queued | None = await control.queue(self._tick)
        try:
            while queued is not None:
                after = None
                if queued.added and self._still_due():
                    after = await control.queue(self._tick)
                try:
                    committed = await control.committed(queued)
                except BaseException:
                    if after is not None:  # decided on top of a failed commit: failed too
                        await control.abandon(after)
                    raise
                previous = publishing
                publishing = asyncio.create_task(control.publish(committed))
                if previous is not None:
                    self._logged(await previous)
                fired = fired or bool(committed.added)
                queued = after
        except BaseException:
            if publishing is not None:  # a tick committed: its work items go out
                await asyncio.wait([publishing])
                if not publishing.cancelled() and publishing.exception() is None:
                    self._logged(publishing.result())
            raise
        if publishing is not None:
            self._logged(await publishing)
        return fired

    def _still_due(self) -> bool:
        """Whether a timer is due now, with the facts decided so far folded in."""
        return clock.goes_first(clock.next_due(self._ledger.state), self._now())

    def _tick(self, state: State) -> list[ev.Event]:
        """One tick's facts at the clock's time now, as ``Control`` decides them."""
        return stamped(
            clock.tick(
                state,
                self._now(),
                new_id=new_id,
                intervals=self._intervals,
                routing=self._routing,
                config_version=self._version,
                max_listed=self._flush_alerts,
            ),
            self._version,
        )

    def _logged(self, facts: list[ev.Event]) -> None:
        """Log the clock's committed facts, in its words."""
        for fact in facts:
            if isinstance(fact, ev.GroupNotified):
                log.info(
                    "group %s: %s notification %s to %s (%d alert(s), due %.3fs ago)",
                    fact.group_key,
                    fact.reason,
                    fact.notification_id,
                    fact.receiver,
                    len(fact.alert_ids) + fact.truncated,
                    (fact.fired_at - fact.due_at) / _US,
                    extra={"notification_id": fact.notification_id, "group_key": fact.group_key},
                )
            elif isinstance(fact, ev.GroupDeferred):
                log.info(
                    "group %s: notification to %s deferred by its time intervals",
                    fact.group_key,
                    fact.receiver,
                    extra={"group_key": fact.group_key},
                )
            elif isinstance(fact, ev.EscalationFired):
                log.info(
                    "escalation %s: step %d to %s (%d unacknowledged alert(s), due %.3fs ago)",
                    fact.chain,
                    fact.step + 1,
                    ", ".join(fact.receivers),
                    len(fact.alert_ids),
                    (fact.fired_at - fact.due_at) / _US,
                    extra={"alert_id": fact.alert_id, "group_key": fact.group_key},
                )
            elif isinstance(fact, ev.AlertSettled):
                log.info(
                    "fingerprint %s stopped flapping (%s)",
                    fact.fingerprint,
                    fact.status,
                    extra={"alert_id": fact.alert_id},
                )
            elif isinstance(fact, ev.HeartbeatMissed):
                log.warning(
                    "heartbeat %s missed its deadline (no beat for every + grace): alert %s",
                    fact.name,
                    fact.alert_id,
                    extra={"alert_id": fact.alert_id, "heartbeat": fact.name},
                )
            elif isinstance(fact, ev.AlertResolved):
                log.info(
                    "alert %s resolved by the clock (%s)",
                    fact.alert_id,
                    fact.by,
                    extra={"alert_id": fact.alert_id},
                )


async def _nap(stop: asyncio.Event, seconds: float, also: asyncio.Event | None = None) -> None:
    """Sleep up to ``seconds``, waking early when ``stop`` (or ``also``) is set."""
    waits = [asyncio.ensure_future(stop.wait())]
    if also is not None:
        waits.append(asyncio.ensure_future(also.wait()))
    try:
        await asyncio.wait(waits, timeout=max(seconds, 0.0), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await wait
