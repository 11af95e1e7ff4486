"""Publishing to JetStream and waiting for every PubAck (invariants 2 and 3: nothing is
acked upstream before its messages are stored)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import BadSubjectError

from tocsin.bus import wire
from tocsin.core.outbound import Outbound
from tocsin.core.subjects import MSG_ID

log = logging.getLogger("tocsin.broker")


class _PubAck(msgspec.Struct):
    """What JetStream answers a publish: the stream and seq, or an error."""

    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    error: dict[str, object] | None = None


_puback_decoder = msgspec.json.Decoder(_PubAck)


class Publishes(Protocol):
    """What publishes a batch and says which messages JetStream stored: a ``Publisher``,
    or the outbox (``pipeline.outbox``), which also notes the work items stored."""

    async def publish(self, messages: Sequence[Outbound], timeout: float = 5.0) -> list[bool]:
        """``True`` for each message stored (or a duplicate of one stored) in time."""
        ...


class _Batch:
    """The PubAcks one ``publish`` awaits: an answer per message (``None`` until it
    comes), and one future, set when the last one has come."""

    __slots__ = ("answered", "left", "results")

    def __init__(self, size: int, answered: asyncio.Future[None]) -> None:
        self.results: list[bool | None] = [None] * size
        self.left = size
        self.answered = answered

    def answer(self, index: int, stored: bool) -> None:
        if self.results[index] is not None:
            return
        self.results[index] = stored
        self.left -= 1
        if not self.left and not self.answered.done():
            self.answered.set_result(None)


def _end(answered: asyncio.Future[None]) -> None:
    """A batch's time is up: its wait ends with the answers it has (``stored``)."""
    if not answered.done():
        answered.set_result(None)


@dataclass
class Sent:
    """A batch ``Publisher.send`` wrote: its PubAcks as they come (``_Batch``), and the
    reply tokens still awaited (none when the write failed: every answer is False)."""

    batch: _Batch
    tokens: list[str] = field(default_factory=list)


_NEWLINES = str.maketrans({"\r": " ", "\n": " "})  # as nats-py cleans a header value


def _header_block(headers: dict[str, str]) -> bytes:
    """A message's NATS header block, as ``nc.publish`` writes it (values stripped, line
    breaks made spaces; the keys are tocsin's own names). A value that is printable and
    starts and ends with no space (a message id, a ``traceparent``: all of a router's)
    is already clean: it is not stripped and translated, and the block is encoded once
    (~1.5 -> 0.7 us a work item, issue #20)."""
    lines = ["NATS/1.0\r\n"]
    for key, value in headers.items():
        if not _clean(value):
            value = value.strip().translate(_NEWLINES)
        lines.append(f"{key}: {value}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode()


def _clean(value: str) -> bool:
    """Whether a header value is written as it is (``_header_block``)."""
    return value.isprintable() and value[:1] != " " and value[-1:] != " "


# A message whose one header is its id (an outcome, a delivery worker's every message):
# its block is these bytes around the id, not a dict built and walked (~1.45 -> ~1.0 us
# a command).
_ID_BLOCK_START, _BLOCK_END = f"NATS/1.0\r\n{MSG_ID}: ".encode(), b"\r\n\r\n"


class Publisher:
    """Publishes to JetStream and collects the PubAcks on one wildcard inbox.

    ``js.publish`` makes a request per message (a future, a timer, a JSON parse into a
    dataclass): ~30 us each, most of the router's publishing cost. Here a batch is plain
    publishes whose reply subjects are tokens under one subscription, written in one go
    (the ``PUB``/``HPUB`` commands ``nc.publish`` would queue one at a time, without its
    per-message checks and header parsing), answered into one count per batch, and one
    deadline covers the batch. The subscription is made on first use; nats-py restores
    it after a reconnect.
    """

    def __init__(self, nc: NATS, headers: dict[str, str] | None = None) -> None:
        """``headers`` go on every message published (a partition's router marks what
        it publishes with its partition, ``core.partition.marked``)."""
        self._nc = nc
        self._headers = headers or {}
        self._prefix = nc.new_inbox() + "."
        self._waiting: dict[str, tuple[_Batch, int]] = {}
        self._subjects: set[str] = set()  # checked once each: they are a config's few
        self._next = 0
        self._sub: Subscription | None = None
        self._starting: asyncio.Lock = asyncio.Lock()
        self._refusals: Counter[str] = Counter()  # why, since the last batch's summary

    async def _ensure_subscribed(self) -> None:
        if self._sub is None:
            async with self._starting:
                if self._sub is None:
                    sub = await self._nc.subscribe(self._prefix + "*")
                    # Nothing is published to it yet: no answer came before the hand-over.
                    wire.hand_over(sub, self._on_ack)
                    self._sub = sub

    def _on_ack(self, msg: Msg) -> None:
        waiting = self._waiting.pop(msg.subject[len(self._prefix) :], None)
        if waiting is None:
            return  # answered after its deadline
        batch, index = waiting
        if not msg.data:  # a status message: 503 no responders (no stream for the subject)
            self._refusals[f"status {(msg.headers or {}).get('Status', '?')}"] += 1
            batch.answer(index, False)
            return
        try:
            ack = _puback_decoder.decode(msg.data)
        except msgspec.DecodeError:
            batch.answer(index, False)
            return
        if ack.error is not None:
            self._refusals[str(ack.error.get("description", ack.error))] += 1
        batch.answer(index, ack.error is None and ack.seq > 0)

    def _command(self, message: Outbound, reply: str) -> bytes:
        """The ``PUB`` or ``HPUB`` command of one message, as ``nc.publish`` makes it."""
        subject = message.subject
        if subject not in self._subjects:
            if not subject or any(c in subject for c in " \t\r\n"):
                raise BadSubjectError(subject)
            self._subjects.add(subject)
        headers = message.headers
        payload = message.payload
        if not headers and not self._headers and message.msg_id and _clean(message.msg_id):
            block = _ID_BLOCK_START + message.msg_id.encode() + _BLOCK_END
            size = len(block) + len(payload)
            return b"HPUB %s %s %d %d\r\n%s%s\r\n" % (
                subject.encode(), reply.encode(), len(block), size, block, payload)  # fmt: skip
        if self._headers:
            headers = {**self._headers, **(headers or {})}
        if message.msg_id:
            headers = {MSG_ID: message.msg_id, **(headers or {})}
        if not headers:
            return b"PUB %s %s %d\r\n%s\r\n" % (
                subject.encode(), reply.encode(), len(payload), payload)  # fmt: skip
        block = _header_block(headers)
        size = len(block) + len(payload)
        return b"HPUB %s %s %d %d\r\n%s%s\r\n" % (
            subject.encode(), reply.encode(), len(block), size, block, payload)  # fmt: skip

    async def publish(self, messages: Sequence[Outbound], timeout: float = 5.0) -> list[bool]:
        """Publish ``messages``; ``True`` for each message JetStream stored (or
        recognised as a duplicate of one it stored) within ``timeout`` seconds."""
        return await self.stored(await self.send(messages), timeout)

    async def send(self, messages: Sequence[Outbound]) -> Sent:
        """Publish ``messages``, in order, in one write, without waiting for their
        PubAcks: what ``stored`` waits for. A caller may send its next batch meanwhile
        (the order on the connection is the order of the sends)."""
        batch = _Batch(len(messages), asyncio.get_running_loop().create_future())
        sent = Sent(batch)
        if not messages:
            return sent
        await self._ensure_subscribed()
        nc = self._nc
        commands: list[bytes] = []
        for index, message in enumerate(messages):
            self._next += 1
            token = str(self._next)
            try:
                command = self._command(message, self._prefix + token)
            except BadSubjectError:
                log.warning("not published: bad subject %r", message.subject)
                batch.answer(index, False)
                continue
            if len(message.payload) > nc.max_payload:  # nc.publish refuses it too
                log.warning("not published to %s: larger than max_payload", message.subject)
                batch.answer(index, False)
                continue
            self._waiting[token] = (batch, index)
            sent.tokens.append(token)
            commands.append(command)
        try:
            if commands:
                await wire.write(nc, b"".join(commands))
        except Exception as error:  # closed, draining, its buffer full: nothing was sent
            log.warning("publish of %d messages failed: %s", len(commands), error)
            for token in sent.tokens:
                self._waiting.pop(token, None)
            sent.tokens = []
        return sent

    async def stored(self, sent: Sent, timeout: float = 5.0) -> list[bool]:
        """``True`` for each message of ``sent`` JetStream stored (or recognised as a
        duplicate of one it stored) within ``timeout`` seconds of now."""
        batch = sent.batch
        if sent.tokens and batch.left:
            # A timer that ends the wait, not ``asyncio.wait`` (a set, a waiter, done
            # callbacks: ~8 us a batch against ~3, issue #20); nothing else awaits it.
            timer = batch.answered.get_loop().call_later(timeout, _end, batch.answered)
            try:
                await batch.answered
            finally:
                timer.cancel()
        for token in sent.tokens:
            self._waiting.pop(token, None)
        results = [stored is True for stored in batch.results]
        if not all(results):
            # One line a batch, not one a message: a failover refuses thousands at once.
            refused = ", ".join(f"{why}: {n}" for why, n in self._refusals.most_common())
            self._refusals.clear()
            log.warning(
                "%d of %d publishes not stored (%s; the rest without a PubAck within %.1fs)",
                results.count(False),
                len(results),
                f"refused: {refused}" if refused else "none refused",
                timeout,
            )
        return results

    async def close(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):  # closing anyway
                await self._sub.unsubscribe()
            self._sub = None
