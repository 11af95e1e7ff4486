"""The log is the outbox (DESIGN.md invariant 5): a routed fact whose work item never
reached the broker is published again by tocsin itself, not by an operator.

Every fact that justifies a work item (``alert.routed``, ``group.notified``,
``delivery.requeued``) is *owed* from its commit until JetStream stores its item (a
PubAck) or it needs sending no more (its notification delivered, dead-lettered or
re-queued since). Whoever
publishes work items (the router, operator commands, the relay below) publishes
through the ``Outbox``, which notes the PubAcks.

Knowing "stored" durably costs no commit of its own: the *watermark* (every work item
of a fact at or below it was stored) is the lowest owed seq minus one, or the last
committed seq when nothing is owed; once it has moved past a fact that was owed, an
``outbox.published`` fact rides in the next batch the ledger commits (``ride``), or,
when nothing else is committed for a second, in a batch of its own.

The relay (a part of the router's process) publishes again, under the same
``Nats-Msg-Id``, what is still owed a while (``grace``) after its commit: at start,
the facts above the logged watermark whose notification has no outcome; later, those
whose publish failed (a broker away, a full or missing ``TOCSIN_WORK``, a command's
publish given up), every second while it fails, backing off to five. Before it
publishes, it waits until the recorder has committed every outcome ``TOCSIN_OUT``
holds, and asks the projection again: a notification delivered is never sent again
on the strength of JetStream's two-minute duplicate window. For the same reason a work
item that is not owed (a redelivered inbound message's, stored long ago) is not
published again by anyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Sequence

from tocsin.bus.publisher import Publishes
from tocsin.core import events as ev
from tocsin.core.deliveries import open_deliveries
from tocsin.core.outbound import WORK_ITEM_KINDS, Outbound, for_configured, messages_for
from tocsin.core.policy.backoff import Backoff
from tocsin.core.state import SETTLED, State
from tocsin.core.times import now_us
from tocsin.pipeline.status import CATCH_UP_PATIENCE
from tocsin.store.eventlog import LogWriteError
from tocsin.store.ledger import Batch, Ledger
from tocsin.store.reader import LogReader

log = logging.getLogger("tocsin.outbox")

GRACE = 2.0  # seconds a fact's own publisher has before the relay publishes it again
INTERVAL = 1.0  # seconds between the relay's looks (and the idle watermark's)


class Outbox:
    """The owed work items of the log, the watermark, and the relay."""

    def __init__(
        self,
        ledger: Ledger,
        publisher: Publishes,
        reader: LogReader,
        outcomes_recorded: Callable[[float], Awaitable[bool]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        receivers: Collection[str] = (),
        grace: float = GRACE,
        interval: float = INTERVAL,
    ) -> None:
        """``outcomes_recorded(patience)`` answers whether the recorder has committed
        every outcome ``TOCSIN_OUT`` holds (``status.OutcomesRecorded.wait``); without
        it the relay trusts the projection as it is. ``clock`` (monotonic seconds) is
        injectable, for tests that let minutes pass without waiting them."""
        self._ledger = ledger
        self._publisher = publisher
        self._reader = reader
        self._outcomes_recorded = outcomes_recorded
        self._clock = clock
        self._receivers = frozenset(receivers)  # configured: others get dead letters
        self._grace = grace
        self._interval = interval
        self._owed: dict[int, tuple[ev.Event, float]] = {}  # seq -> (fact, owed since)
        self._done: list[int] = []  # heap: seqs owed once, stored since, maybe not logged
        self._horizon = 0  # every work-item fact up to this seq is owed or known stored

    # -- taking note ------------------------------------------------------------------

    async def take_up(self) -> int:
        """Before anything else is committed: owe the work items of the facts above the
        logged watermark whose notification has no outcome (their publish may never
        have happened: a crash after the commit), and follow every commit from here on.
        Returns how many are owed."""
        ledger = self._ledger
        state = ledger.state
        seqs = sorted(
            seq
            for delivery in open_deliveries(state.deliveries)
            if delivery.status not in SETTLED
            and (seq := delivery.requeued_seq or delivery.routed_seq) > state.published_through
        )
        facts = await self._reader.events_at(seqs)
        for seq in seqs:  # ascending, as every later entry: the first key is the lowest
            fact = facts.get(seq)
            if fact is not None and type(fact) in WORK_ITEM_KINDS:
                self._owed[seq] = (fact, float("-inf"))  # the relay's at once
        self._horizon = ledger.event_log.last_seq
        ledger.listeners.append(self.committed)
        return len(self._owed)

    def committed(self, facts: list[ev.Event], state: State) -> None:
        """A ledger listener: the batch just committed (the log's last rows) owes the
        work items of its routed and re-queue facts."""
        last = self._ledger.event_log.last_seq
        seq = last - len(facts)
        since = self._clock()
        owed, kinds = self._owed, WORK_ITEM_KINDS
        for fact in facts:
            seq += 1
            if type(fact) in kinds:
                owed[seq] = (fact, since)
        self._horizon = last

    async def publish(self, messages: Sequence[Outbound], timeout: float = 5.0) -> list[bool]:
        """Publish through the broker's publisher, noting the work items stored. A
        work item whose fact is not owed (stored already: a redelivered inbound
        message's, say) is not published again but answered as stored: JetStream's
        duplicate window, two minutes, may have passed, and a copy would be queued as
        new and sent twice."""
        owed = self._owed
        sending = [m for m in messages if m.fact_seq is None or m.fact_seq in owed]
        if len(sending) == len(messages):  # the router's batches: every one is owed
            stored = await self._publisher.publish(sending, timeout) if sending else []
        else:
            due = [m.fact_seq is None or m.fact_seq in owed for m in messages]  # as sent
            answers = iter(await self._publisher.publish(sending, timeout) if sending else [])
            stored = [next(answers) if send else True for send in due]
        for message, ok in zip(messages, stored, strict=True):
            if ok and message.fact_seq is not None:
                self._settle(message.fact_seq)
        return stored

    def _settle(self, seq: int) -> None:
        """The fact at ``seq`` owes nothing any more."""
        if self._owed.pop(seq, None) is not None:
            heapq.heappush(self._done, seq)

    @property
    def owed(self) -> int:
        """How many facts still owe their work item."""
        return len(self._owed)

    # -- the watermark ----------------------------------------------------------------

    def watermark(self) -> int:
        """The highest seq at or below which every work item was stored."""
        if self._owed:
            return next(iter(self._owed)) - 1
        return self._horizon

    def due(self) -> int | None:
        """The watermark, when logging it would record something new: it passed a fact
        that was owed and the log's watermark has not."""
        logged = self._ledger.state.published_through
        done = self._done
        while done and done[0] <= logged:
            heapq.heappop(done)
        mark = self.watermark()
        return mark if done and done[0] <= mark else None

    def ride(self, batch: Batch) -> None:
        """Add the watermark to a batch being decided, if it is due: no commit of its own."""
        mark = self.due()
        if mark is not None:
            batch.add(ev.OutboxPublished(up_to_seq=mark))

    # -- the relay --------------------------------------------------------------------

    async def relay(self) -> int | None:
        """Publish again what is owed longer than ``grace``: the number stored, or
        ``None`` when some could not be (or the recorder could not be seen caught up),
        so the caller backs off."""
        now = self._clock()
        ripe = [seq for seq, (_, since) in self._owed.items() if now - since >= self._grace]
        if not ripe:
            return 0
        if self._outcomes_recorded is not None and not await self._outcomes_recorded(
            CATCH_UP_PATIENCE
        ):
            log.info(
                "outbox: %d work item(s) owed; waiting for the recorder to catch up", len(ripe)
            )
            return None
        state = self._ledger.state
        messages: list[Outbound] = []
        for seq in ripe:
            entry = self._owed.get(seq)
            if entry is None:  # stored meanwhile
                continue
            made = messages_for(state, seq, entry[0], None)
            if made:
                messages.extend(made)
            else:  # delivered, dead-lettered or re-queued since: nothing to send
                self._settle(seq)
        if not messages:
            return 0
        if self._receivers:  # a receiver removed since the commit: its dead letter
            messages, unsent = for_configured(messages, self._receivers, now_us())
            for item in unsent:
                log.warning(
                    "outbox: %s dead-lettered: receiver %s is not in the configuration",
                    item.body.notification_id,
                    item.body.receiver,
                )
        stored = await self.publish(messages)
        count = stored.count(True)
        log.info(
            "outbox relay re-published %d work item(s) committed but not stored%s",
            count,
            "" if count == len(stored) else f"; {len(stored) - count} still refused",
        )
        return count if count == len(stored) else None

    async def write_due(self) -> None:
        """Log the watermark in a batch of its own, if it is due (nothing else carried
        it: the router is idle)."""
        if self.due() is None:
            return
        async with self._ledger.batch() as batch:
            self.ride(batch)

    async def run(self, stop: asyncio.Event) -> None:
        """The relay's loop, until ``stop``: a look every ``interval``, backing off
        while publishes fail."""
        backoff = Backoff(first=self._interval, ceiling=5.0)
        while not stop.is_set():
            pause = self._interval
            try:
                if await self.relay() is None:
                    pause = backoff.next()
                else:
                    backoff = Backoff(first=self._interval, ceiling=5.0)
                await self.write_due()
            except LogWriteError as error:  # the ledger says so to /readyz; look again
                log.debug("outbox watermark not logged: %s", error)
            except Exception as error:  # never let the relay die: the next look retries
                log.warning("outbox relay: %s: %s", type(error).__name__, error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)
