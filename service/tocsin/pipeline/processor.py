"""One shape for every consumer that turns input messages into facts.

Pull a batch; decide its facts against the projection (a ``Step`` supplies the
deciding); commit them with each message's position on its input stream; publish what
the commit justifies and wait for JetStream's PubAcks; then ack the batch. Nothing
leaves before the commit, nothing is acked before its messages are stored, and a
redelivered message is recognised by the position logged with its facts: it is not
decided again, only its messages are published again (DESIGN.md invariants 2-4).

Pipelined: batch N+1 is decided while batch N commits; N is published and acked once
N is committed, and batches finish strictly in order. A batch whose commit fails (and
with it every batch decided on top of it) is handled again, with backoff, until the log
takes it.

A consumer that vanishes (deleted by an operator, or with its stream) is noticed by
its pulls, created again with its stream (``setup``), counted in
``tocsin_consumer_recreated_total``, and reported by ``missing`` (for /readyz) until
it is back. Positions are ``offset + seq`` of the stream's incarnation the log is bound
to (``binding``): a stream re-created, by tocsin or by anyone else, is bound anew
before any of its messages is decided, so its seqs, which restart at 1, are never taken
for redeliveries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Generic, Literal, TypeVar

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from tocsin.bus.publisher import Publishes
from tocsin.bus.puller import Puller, ack_all, backlog_after, stored_us
from tocsin.core import events as ev
from tocsin.core.outbound import Outbound
from tocsin.core.policy.backoff import Backoff
from tocsin.core.state import State
from tocsin.core.times import now_us, received_at
from tocsin.observability.telemetry import Metrics
from tocsin.pipeline import binding, faults
from tocsin.store.eventlog import LogWriteError, Row
from tocsin.store.ledger import Batch, Input, Ledger

Own = TypeVar("Own")

Milestone = Literal["decided", "committed", "published"]

Rider = Callable[[Batch], None]
"""Adds a fact of its own to each batch being decided, if it has one due: the outbox's
watermark (``outbox.Outbox.ride``), logged without a commit of its own."""

Setup = Callable[[JetStreamContext], Awaitable[None]]
"""Creates (or updates) a processor's stream and its consumer: ``streams.ensure_*``."""

First = Callable[[], Awaitable[None]]
"""What goes before each batch is decided: the clock's due timers (``Clock.serve_due``),
so a group's flush never waits behind a storm's batches."""

Waits = Callable[[], bool]
"""Whether a timer that is due, or about to be, waits for the batch being decided
(``Clock.waits``): the batch stops there, its messages decided so far are committed as
a batch of their own, and the rest are decided after ``First``."""

CHUNK = 32
"""Messages of a batch decided between two looks at ``Waits``, and received together
(``Step.by_arrival``: when JetStream stored the last of them). A timer that falls due
while a storm's batch of 1,000 is decided waits for at most this many (about 2 ms of
the router's work), not for the whole batch (up to 0.3 s in W5, issue #20), and its
commit queues behind that part alone. And a group's wait counts from its first alert's
arrival give or take the chunk's (about 1 ms of a storm), not the whole batch's (the
first batch of W5's storm took 0.12 s to arrive)."""

SETUP_PATIENCE = 10.0  # seconds one attempt to create a vanished consumer may take


@dataclass(eq=False)
class Pulled(Generic[Own]):
    """A batch of input messages on its way through the shell."""

    msgs: Sequence[Msg]
    positions: list[int]  # each message's position on the input stream, as logged
    own: Own  # what the step keeps of the batch (the router: its spans)
    logged: dict[int, list[Row]] = field(default_factory=dict)  # redelivered: their facts
    fresh: list[tuple[range, int, list[ev.Event]]] = field(default_factory=list)
    """(seqs, position, facts) of each message decided this time."""
    batch: Batch | None = None  # set once decided (queued for commit if it has facts)
    rest: Sequence[Msg] = ()
    """Messages pulled with it but left undecided for a due timer (``Waits``): the next
    batch, decided once the timer is served."""


class Step(ABC, Generic[Own]):
    """What a processor supplies: how it reads its input, the facts one message
    causes, and what the committed facts justify; the shell does the rest. The hooks
    (``reached``, ``not_stored``, ``ended``) let a step follow its batch, as the router's
    spans do; by default they do nothing."""

    name: ClassVar[str]  # its logger is tocsin.<name>, its fail-points <name>.before_commit...
    input: ClassVar[Input]  # the stream whose positions the log records for it
    by_arrival: ClassVar[bool] = False
    """Whether a batch's messages were received when they arrived in JetStream (the
    router: a group's wait counts from its first alert's arrival), not when the batch
    is decided (its rows' append time)."""

    @abstractmethod
    def begin(self, msgs: Sequence[Msg], state: State) -> tuple[list[int], Own]:
        """Each message's position on the input stream, and what the step keeps of
        this batch."""

    @abstractmethod
    def facts(self, pulled: Pulled[Own], msg: Msg, position: int, at: int) -> list[ev.Event]:
        """The facts of one message the log does not hold yet, decided against the
        ledger's state (each message's facts are folded in before the next is decided);
        ``at`` is when it was received (see ``by_arrival``)."""

    def outbound(self, pulled: Pulled[Own], state: State) -> list[Outbound]:
        """Once the batch is committed: what its facts justify publishing, those of
        redelivered messages included (their ``Nats-Msg-Id`` makes copies harmless)."""
        return []

    def reached(self, pulled: Pulled[Own], milestone: Milestone) -> None:
        """The batch was decided (and now waits for its commit), committed, or
        published."""

    def not_stored(self, pulled: Pulled[Own]) -> None:
        """Some of the batch's messages were not stored: it stays unacked."""

    def ended(self, pulled: Pulled[Own], error: BaseException | None) -> None:
        """The shell is done with the batch: finished, or given up by ``error``."""


class Processor(Generic[Own]):
    """pull -> decide -> commit with the input position -> publish -> ack, for one
    durable pull consumer and one ``Step``."""

    def __init__(
        self,
        nc: NATS,
        ledger: Ledger,
        step: Step[Own],
        *,
        stream: str,
        consumer: str,
        batch_size: int,
        publisher: Publishes | None = None,
        setup: Setup | None = None,
        metrics: Metrics | None = None,
        rider: Rider | None = None,
        linger: float = 0.0,
        first: First | None = None,
        waits: Waits | None = None,
        commit_wait: float = 0.0,
        commit_wait_below: int = 0,
    ) -> None:
        """``publisher`` may be left out by a step that never publishes; without
        ``setup`` a vanished consumer is reported (``missing``) but not created
        again; ``rider`` rides along in every batch decided; ``linger``: how long a
        pull that has its first messages waits for more (``Puller``); ``first`` is
        awaited before each batch pulled is decided, and a batch being decided stops
        when ``waits`` says a timer is due (the rest go after ``first``);
        ``commit_wait``: how long a batch of fewer than ``commit_wait_below`` messages
        may wait for the next batch of the ledger's, to share its commit
        (``Ledger.deciding``)."""
        self._nc = nc
        self._js = nc.jetstream(timeout=SETUP_PATIENCE / 2)
        self._setup = setup
        self._metrics = metrics
        self.missing: str | None = None
        """Why the processor cannot pull (its consumer is gone), for /readyz; else
        ``None``."""
        self._ledger = ledger
        self._step = step
        self._stream, self._consumer, self._batch_size = stream, consumer, batch_size
        self._publisher = publisher
        self._rider = rider
        self._linger = linger
        self._first = first
        self._waits = waits
        self._commit_wait, self._commit_wait_below = commit_wait, commit_wait_below
        self._log = logging.getLogger(f"tocsin.{step.name}")
        self._before_commit = f"{step.name}.before_commit"
        self._after_commit = f"{step.name}.after_commit"
        self._after_publish = f"{step.name}.after_publish"

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop``, pipelined: batch N+1 is decided while batch N
        commits; N's messages are published and acked once N is committed, and batches
        finish strictly in order."""
        puller = Puller(
            self._nc,
            self._stream,
            self._consumer,
            self._batch_size,
            prefetch=True,
            linger=self._linger,
        )
        await puller.start()
        self._log.info("%s consuming %s", self._step.name, self._stream)
        finishing: asyncio.Task[None] | None = None
        previous: Pulled[Own] | None = None  # the batch ``finishing`` finishes
        rest: Sequence[Msg] = ()  # pulled, left undecided for a due timer: decided next
        pause = Backoff(first=0.25, ceiling=5.0)
        try:
            while not stop.is_set():
                msgs, rest = rest or await puller.take(wait=0.5), ()
                if not msgs:
                    if puller.lost:
                        if finishing is not None:  # the old consumer's messages first
                            await finishing
                            finishing = previous = None
                        if await self._recover(puller):
                            pause = Backoff(first=0.25, ceiling=5.0)
                        else:
                            with contextlib.suppress(TimeoutError):
                                await asyncio.wait_for(stop.wait(), pause.next())
                    continue
                if self._first is not None:
                    await self._first()
                pulled = await self._decide(msgs, after=previous, waits=self._waits)
                if finishing is not None:
                    await finishing
                if pulled is None:  # the batch before failed: decide after its retry
                    pulled = await self._decide(msgs, waits=self._waits)
                    assert pulled is not None
                finishing = asyncio.create_task(self._finish_until_committed(pulled, stop))
                previous, rest = pulled, pulled.rest
            if finishing is not None:
                await finishing
                finishing = None
        finally:
            if finishing is not None and not finishing.done():
                await asyncio.wait([finishing])  # its commit is under way: see it through
            await puller.stop()

    async def _recover(self, puller: Puller) -> bool:
        """The puller was told its consumer may be gone. If JetStream says so, create
        it again with its stream (a stream re-created here is a new incarnation: bound
        before anything is pulled from it) and count it; ``True`` once it is back
        (created here, or by another process meanwhile: a new stream is then bound by
        ``_decide``). ``False``: it exists and was never missing (a passing answer,
        such as a leader election on a cluster), or it could not be created, or
        JetStream did not answer; the caller pauses, then pulls (and so finds out)
        again."""
        where = f"consumer {self._consumer} of {self._stream}"
        try:
            await self._js.consumer_info(self._stream, self._consumer)
        except NotFoundError:
            pass
        except Exception as error:  # no answer: look again after a pause
            self._log.info("%s did not answer: %s: %s", where, type(error).__name__, error)
            return False
        else:
            puller.lost = False
            if self.missing is None:
                return False
            self.missing = None
            self._log.warning("%s is back (created by another process); consuming", where)
            return True
        if self.missing is None:
            self._log.warning("%s is gone; creating it again", where)
        self.missing = f"{where} is missing; creating it again"
        if self._setup is None:
            return False
        try:
            await asyncio.wait_for(self._setup(self._js), SETUP_PATIENCE)
            await binding.bind_stream(self._js, self._ledger, self._step.input, self._stream)
        except Exception as error:
            self.missing = f"{where} is missing and could not be created again: {error}"
            self._log.warning(
                "%s could not be created again: %s: %s", where, type(error).__name__, error
            )
            return False
        self.missing = None
        puller.lost = False
        if self._metrics is not None:
            self._metrics.consumer_recreated(self._stream, self._consumer)
        self._log.warning("%s created again; consuming", where)
        return True

    async def handle(self, msgs: Sequence[Msg]) -> None:
        """Process one batch end to end: decide, commit, publish, ack."""
        pulled = await self._decide(msgs)
        assert pulled is not None
        await self._finish(pulled)

    async def _finish_until_committed(self, pulled: Pulled[Own], stop: asyncio.Event) -> None:
        """Finish a decided batch; if its commit failed (and with it any batch decided
        on top of it), handle its messages again until the log takes them. The next
        batch is decided only after that (see ``_decide``), so the log keeps the input's
        order."""
        try:
            await self._finish(pulled)
        except LogWriteError:
            await self._handle_until_committed(pulled.msgs, stop)

    async def _handle_until_committed(self, msgs: Sequence[Msg], stop: asyncio.Event) -> None:
        backoff = Backoff(first=0.2, ceiling=5.0)
        while True:
            try:
                await self.handle(msgs)
                return
            except LogWriteError:
                if stop.is_set():
                    return
                await asyncio.sleep(backoff.next())

    async def _decide(
        self,
        msgs: Sequence[Msg],
        after: Pulled[Own] | None = None,
        *,
        waits: Waits | None = None,
    ) -> Pulled[Own] | None:
        """Recognise redeliveries, decide the rest and queue the facts for commit.
        ``None`` (nothing done) when the batch decided ``after``, not finished yet,
        will not be committed: its messages are handled again first, and this batch
        must come after them. With ``waits``, a batch of fresh messages stops where a
        timer falls due: the messages left are its ``rest``."""
        ledger, step, stream = self._ledger, self._step, self._step.input
        if stream is Input.INBOUND and msgs:  # a storm on: a snapshot due waits for it
            ledger.inbound_backlog = backlog_after(msgs[-1])
        positions, own = step.begin(msgs, ledger.state)
        pulled = Pulled(msgs, positions, own)
        try:
            last = ledger.last_position(stream)
            maybe_logged = [p for p in positions if p <= last]
            renewed = await self._renewed_stream() if maybe_logged else None
            if maybe_logged and renewed is None:
                pulled.logged = await ledger.facts_caused_by(stream, maybe_logged)
            seen: set[int] = set(pulled.logged)
            wait = self._commit_wait if len(msgs) < self._commit_wait_below else 0.0
            async with ledger.deciding(wait) as batch:
                at, newest = batch.ts, ledger.state.last_ts  # before the batch's facts
                if after is not None and after.batch is not None and ledger.doomed(after.batch):
                    return None
                if renewed is not None:
                    pulled = self._rebound(batch, msgs, renewed)
                # Redeliveries and a re-bound stream are seldom: those batches go whole.
                if seen or renewed is not None:
                    waits = None
                fresh, chunked, by_arrival = pulled.fresh, pulled.msgs, step.by_arrival
                for n, (msg, position) in enumerate(
                    zip(pulled.msgs, pulled.positions, strict=True), 1
                ):
                    if by_arrival and (n - 1) % CHUNK == 0:  # a chunk's first message
                        stored_last = chunked[min(n - 1 + CHUNK, len(chunked)) - 1]
                        at = self._received_at(stored_last, batch.ts, newest)
                    if position in seen:
                        continue
                    seen.add(position)
                    facts = step.facts(pulled, msg, position, at)
                    fresh.append((batch.add_caused(facts, stream, position), position, facts))
                    if waits is not None and n % CHUNK == 0 and waits():
                        _stop_at(pulled, n)
                        break
                if self._rider is not None:
                    self._rider(batch)
                faults.point(self._before_commit)
            pulled.batch = batch
            return pulled
        except BaseException as error:
            step.ended(pulled, error)
            raise

    def _received_at(self, last: Msg, now: int, newest: int) -> int:
        """When a chunk of a batch was received (``CHUNK``): when JetStream stored its
        ``last`` message (the broker's wall clock) on the ledger's clock, whose time
        ``now`` the batch is appended at, never before ``newest``, the log's newest
        time before the batch (``times.received_at``). The two clocks are the same but
        in tests that inject time."""
        arrived = stored_us(last) + self._ledger.clock() - now_us()
        return received_at(now, now - arrived, newest)

    async def _renewed_stream(self) -> binding.Incarnation | None:
        """The stream's incarnation, if it is not the one the log is bound to: someone
        deleted and re-created the stream (and the consumer with it) while this
        processor ran, and its seqs restart at 1. Asked only when a batch holds
        positions that may be logged already, so seldom. ``None`` too when JetStream
        does not answer (the messages are then taken as the redeliveries they look
        like) or when the log is bound to no incarnation (a test driving a step by
        hand)."""
        stream = self._step.input
        was, _ = binding.bound(self._ledger.state, stream)
        if was is None:
            return None
        try:
            now = await binding.incarnation(self._js, stream, self._stream)
        except Exception as error:
            self._log.warning(
                "%s's incarnation unknown (%s: %s); taking the batch for redeliveries",
                self._stream,
                type(error).__name__,
                error,
            )
            return None
        return now if now.created != was else None

    def _rebound(self, batch: Batch, msgs: Sequence[Msg], now: binding.Incarnation) -> Pulled[Own]:
        """Bind the log to the stream's new incarnation in ``batch``, before the facts
        of ``msgs``, which are its messages: their positions follow every one logged."""
        ledger, stream = self._ledger, self._step.input
        was = binding.bound(ledger.state, stream)[0]
        fact = binding.binding(
            ledger.state, stream, now, ledger.last_position(stream), self._stream
        )
        # Only this processor binds its stream once it runs, and it decides one batch
        # at a time: the binding ``_renewed_stream`` saw is still the log's.
        assert fact is not None
        batch.add(fact)
        binding.told(fact, was)
        positions, own = self._step.begin(msgs, ledger.state)
        return Pulled(msgs, positions, own)

    async def _finish(self, pulled: Pulled[Own]) -> None:
        """Once the batch is committed: publish what its facts justify, wait for the
        PubAcks, then ack its messages."""
        try:
            await self._finish_unended(pulled)
        except BaseException as error:
            self._step.ended(pulled, error)
            raise
        self._step.ended(pulled, None)

    async def _finish_unended(self, pulled: Pulled[Own]) -> None:
        step = self._step
        step.reached(pulled, "decided")
        if pulled.batch is not None:
            await self._ledger.committed(pulled.batch)
        step.reached(pulled, "committed")
        faults.point(self._after_commit)
        outbound = step.outbound(pulled, self._ledger.state)
        if outbound:
            assert self._publisher is not None, f"{step.name} publishes, with no publisher"
            stored = await self._publisher.publish(outbound)
            if not all(stored):
                # Unacked messages come back; their facts are logged, so the retry only
                # publishes again (deduplicated by Nats-Msg-Id).
                self._log.warning(
                    "%d of %d outbound messages not stored; leaving the batch unacked",
                    stored.count(False),
                    len(stored),
                )
                step.not_stored(pulled)
                return
        step.reached(pulled, "published")
        faults.point(self._after_publish)
        await ack_all(self._nc, pulled.msgs)


def _stop_at(pulled: Pulled[Own], decided: int) -> None:
    """Cut ``pulled`` after its first ``decided`` messages (those decided): the others
    are its ``rest``, for the next batch; the positions of the rest are not logged
    (the batch holds no redelivery), so they are decided then as if pulled then."""
    pulled.rest = pulled.msgs[decided:]
    pulled.msgs = pulled.msgs[:decided]
    del pulled.positions[decided:]
