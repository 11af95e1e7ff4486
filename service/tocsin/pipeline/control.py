"""Operator commands carried out by the service that writes the log (DESIGN.md section 6).

The HTTP API (ack, resolve, silences, re-queue), ``tocsin retry-failed`` (over
``tocsin.control.retry-failed``) and ``tocsin compact`` (over ``tocsin.control.compact``,
done by ``compactor``) end here: the pure ``commands`` decide the facts under
the ledger's lock, the ledger commits them, and the work items they justify are
published after the commit, through the outbox, as the router does for its own facts.
A work item the broker does not store at once is the outbox relay's: the command is
committed, so it is answered as done, and no notification waits on the operator.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from nats.aio.client import Client as NATS

from tocsin.config import Config
from tocsin.core import commands
from tocsin.core import events as ev
from tocsin.core.commands import CommandError
from tocsin.core.ids import new_id
from tocsin.core.outbound import Outbound, for_configured, messages_for
from tocsin.core.state import State
from tocsin.core.subjects import COMPACT, command_subject, retry_failed_subject
from tocsin.core.times import now_us, parse_instant
from tocsin.core.versions import stamped
from tocsin.pipeline import faults
from tocsin.pipeline.compactor import Compactor
from tocsin.pipeline.outbox import Outbox
from tocsin.pipeline.router import warn_unconfigured
from tocsin.store.compaction import CompactionError
from tocsin.store.eventlog import LogWriteError
from tocsin.store.ledger import Batch, Ledger
from tocsin.store.reader import LogReader

log = logging.getLogger("tocsin.control")


class RetryRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Body of ``POST /api/v1/deliveries/retry`` and of ``tocsin.control.retry-failed``."""

    receiver: str | None = None
    since: str | None = None
    by: str | None = None


class RetryReply(msgspec.Struct, kw_only=True):
    requeued: int = 0
    notification_ids: list[str] = []
    error: str | None = None
    status: int | None = None  # the refusal's HTTP-style status: 404/422 are bad usage


class CommandReply(msgspec.Struct, kw_only=True):
    """A partition's answer to a ``commands.Command``: the seq its log reached with the
    command's facts (the asker's view catches up to it before it answers), or the
    refusal (``error`` with its HTTP ``status`` and ``field``)."""

    seq: int = 0
    facts: int = 0
    error: str | None = None
    status: int | None = None
    field: str | None = None


class CompactRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Body of ``tocsin.control.compact``: the data dir the caller means (a service
    answers only for its own log), ``before`` (µs) and the archive's absolute path."""

    data_dir: str
    before: int
    archive: str


class CompactReply(msgspec.Struct, kw_only=True):
    """``rows`` moved (0: nothing was appended before that time), or ``error``."""

    rows: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    archive: str | None = None
    error: str | None = None


@dataclass(eq=False)
class Committed:
    """Facts committed by ``Control.commit``, their work items not published yet
    (``Control.publish``)."""

    added: list[tuple[int, ev.Event]]  # (seq, fact) of each fact, in order


@dataclass(eq=False)
class Queued:
    """Facts decided by ``Control.queue`` (folded into the live state), their commit
    queued and not waited for yet (``Control.committed``)."""

    batch: Batch
    added: list[tuple[int, ev.Event]]  # (seq, fact) of each fact, in order


class Control:
    """Commits operator commands through the single writer and queues their work."""

    def __init__(
        self,
        ledger: Ledger,
        reader: LogReader,
        outbox: Outbox,
        receivers: Collection[str] = (),
        compactor: Compactor | None = None,
        config_version: str | None = None,
    ) -> None:
        """``config_version``: the running config's, named by the routed facts a command
        makes (an operator's resolve tells every receiver told of the alert)."""
        self._ledger = ledger
        self._version = config_version
        self._compactor = compactor
        self._reader = reader
        self._outbox = outbox
        self._receivers = frozenset(receivers)  # the configured ones, for re-queues

    def reconfigure(self, config: Config) -> None:
        """A reload (under the ledger's lock): commands route under its version."""
        self._version = config.digest()

    async def execute(
        self, decide: Callable[[State], list[ev.Event]], *, logged_as: str = "operator command"
    ) -> list[ev.Event]:
        """Decide under the ledger's lock (so no router batch slips in between), commit,
        then publish; returns the facts added. ``CommandError`` when refused (nothing
        added); ``CommandError(503)`` when the log cannot take it. Each
        fact is logged as ``logged_as`` (the clock logs its own, in its words: "")."""
        return await self.publish(await self.commit(decide), logged_as)

    async def commit(self, decide: Callable[[State], list[ev.Event]]) -> Committed:
        """``execute``'s first half: decide under the ledger's lock and commit. The
        clock publishes a tick's work items (``publish``) while it decides the next,
        instead of waiting for their PubAcks first (W5, issue #20)."""
        return await self.committed(await self.queue(decide))

    async def queue(self, decide: Callable[[State], list[ev.Event]]) -> Queued:
        """``commit`` in two: decide under the ledger's lock and queue the commit,
        without waiting for it (``committed`` does). The clock decides a flush's next
        tick while the one before is written (W5, issue #20); nothing is published
        before ``committed`` returns."""
        async with self._ledger.deciding() as batch:
            added = self._added(batch, decide)
        return Queued(batch, added)

    async def committed(self, queued: Queued) -> Committed:
        """Wait until ``queued``'s facts are on disk. ``CommandError(503)`` when the log
        refused them; then the commits queued after them fail too (``abandon`` them)."""
        try:
            await self._ledger.committed(queued.batch)
        except LogWriteError as error:
            raise CommandError(503, f"the event log refused the write: {error}") from error
        return Committed(queued.added)

    async def abandon(self, queued: Queued) -> None:
        """Wait for a commit queued on top of one that failed, and ignore its failure
        (it fails with it): its facts are in the log only if they were written, and
        their work items are then the outbox relay's."""
        with contextlib.suppress(LogWriteError):
            await self._ledger.committed(queued.batch)

    def _added(
        self, batch: Batch, decide: Callable[[State], list[ev.Event]]
    ) -> list[tuple[int, ev.Event]]:
        """The facts ``decide`` makes, stamped with the config's version, added to
        ``batch`` (with the outbox's watermark, if due): (seq, fact) each."""
        facts = decide(self._ledger.state)
        if self._version is not None:
            facts = stamped(facts, self._version)
        added = [(batch.add(fact), fact) for fact in facts]
        self._outbox.ride(batch)
        return added

    async def publish(self, committed: Committed, logged_as: str = "") -> list[ev.Event]:
        """``execute``'s second half: publish what the ``committed`` facts justify (a
        work item the broker does not store now is the outbox relay's); the facts."""
        added = committed.added
        faults.point("control.after_commit")
        state = self._ledger.state
        outbound = [m for seq, fact in added for m in messages_for(state, seq, fact, None)]
        if self._receivers:  # a re-queue for a receiver removed since: dead-lettered again
            outbound, unsent = for_configured(outbound, self._receivers, now_us())
            warn_unconfigured(unsent)
        if outbound:
            await self._publish(outbound)
        if logged_as:
            for seq, fact in added:
                log.info("%s logged: %s at seq %d", logged_as, ev.kind_of(fact), seq)
        return [fact for _, fact in added]

    async def command(self, command: commands.Command) -> int:
        """Carry out an operator command given as data; the number of facts it added."""
        facts = await self.execute(lambda state: commands.decide(state, command, new_id))
        return len(facts)

    async def _publish(self, outbound: list[Outbound]) -> None:
        """Queue the command's work items once; those the broker does not store now
        are owed, and the outbox relay publishes them when it can."""
        stored = await self._outbox.publish(outbound)
        if not all(stored):
            log.warning(
                "committed; %d work item(s) not queued yet: the outbox relay queues them"
                " once NATS stores them",
                stored.count(False),
            )

    async def retry_failed(self, request: RetryRequest) -> RetryReply:
        """Re-queue dead letters (optionally of one receiver, dead since a time)."""
        since = None
        if request.since:
            try:
                since = parse_instant(request.since)
            except ValueError as error:
                raise CommandError(422, f"since: {error}", "since") from error
        commands.check_receiver(self._ledger.state, request.receiver, self._receivers)
        chosen = commands.dead_letters(self._ledger.state, receiver=request.receiver, since=since)
        routed_by_seq = await self._reader.events_at(d.routed_seq for d in chosen)
        routed = {
            s: e
            for s, e in routed_by_seq.items()
            if isinstance(e, ev.AlertRouted | ev.GroupNotified)
        }
        facts = await self.execute(
            lambda state: commands.requeue(
                state, routed, receiver=request.receiver, since=since, by=request.by
            )
        )
        ids = [f.notification_id for f in facts if isinstance(f, ev.DeliveryRequeued)]
        if ids:
            log.info("re-queued %d dead-lettered notification(s)", len(ids))
        return RetryReply(requeued=len(ids), notification_ids=ids)

    async def compact(self, request: CompactRequest) -> CompactReply | None:
        """Compact as asked, or ``None`` when the request is for another data dir's log
        (another service's: this one stays silent)."""
        if self._compactor is None or not _same_dir(request.data_dir, self._compactor.data_dir):
            return None
        try:
            done = await self._compactor.compact(request.before, Path(request.archive))
        except (CompactionError, OSError) as error:
            return CompactReply(error=str(error))
        if done is None:
            return CompactReply()
        return CompactReply(
            rows=done.rows,
            first_seq=done.first_seq,
            last_seq=done.last_seq,
            archive=str(done.archive),
        )

    async def answer(self, nc: NATS, partition: int | None = None) -> None:
        """Serve ``tocsin.control.retry-failed`` and ``tocsin.control.compact``
        (request-reply) for the CLI, and ``tocsin.control.command`` for the API of
        ``serve --partitions N`` (a partition's router on its own subjects)."""
        command_decoder = msgspec.json.Decoder(commands.Command)

        async def command(msg: Any) -> None:
            try:
                added = await self.command(command_decoder.decode(msg.data))
                answer = CommandReply(seq=self._ledger.event_log.last_seq, facts=added)
            except msgspec.DecodeError as error:
                answer = CommandReply(error=f"bad request: {error}", status=400)
            except CommandError as error:
                answer = CommandReply(error=str(error), status=error.status, field=error.field)
            await msg.respond(msgspec.json.encode(answer))

        await nc.subscribe(command_subject(partition), cb=command)

        async def compact(msg: Any) -> None:
            try:
                request = msgspec.json.decode(msg.data, type=CompactRequest)
            except msgspec.DecodeError as error:
                await msg.respond(msgspec.json.encode(CompactReply(error=f"bad request: {error}")))
                return
            answer = await self.compact(request)
            if answer is not None:
                await msg.respond(msgspec.json.encode(answer))

        await nc.subscribe(COMPACT, cb=compact)

        async def reply(msg: Any) -> None:
            try:
                request = msgspec.json.decode(msg.data or b"{}", type=RetryRequest)
                answer = await self.retry_failed(request)
            except msgspec.DecodeError as error:
                answer = RetryReply(error=f"bad request: {error}")
            except CommandError as error:
                answer = RetryReply(error=str(error), status=error.status)
            await msg.respond(msgspec.json.encode(answer))

        await nc.subscribe(retry_failed_subject(partition), queue="tocsin-router", cb=reply)


def _same_dir(asked: str, mine: Path) -> bool:
    try:
        return Path(asked).resolve() == mine.resolve()
    except OSError:
        return False
