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


@dataclass
class Sent:
    """A batch ``Publisher.send`` published: ``count`` messages, a future for each one
    whose publish went out (fewer when the connection failed part way)."""

    count: int
    futures: list[asyncio.Future[bool]] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)


class Publisher:
    """Publishes to JetStream and collects the PubAcks on one wildcard inbox.

    ``js.publish`` makes a request per message (a future, a timer, a JSON parse into a
    dataclass): ~30 us each, most of the router's publishing cost. Here a batch is plain
    publishes whose reply subjects are tokens under one subscription, and one deadline
    covers the batch. The subscription is made on first use; nats-py restores it after
    a reconnect.
    """

    def __init__(self, nc: NATS, headers: dict[str, str] | None = None) -> None:
        """``headers`` go on every message published (a partition's router marks what
        it publishes with its partition, ``core.partition.marked``)."""
        self._nc = nc
        self._headers = headers or {}
        self._prefix = nc.new_inbox() + "."
        self._waiting: dict[str, asyncio.Future[bool]] = {}
        self._next = 0
        self._sub: Subscription | None = None
        self._starting: asyncio.Lock = asyncio.Lock()
        self._refusals: Counter[str] = Counter()  # why, since the last batch's summary

    async def _ensure_subscribed(self) -> None:
        if self._sub is None:
            async with self._starting:
                if self._sub is None:
                    self._sub = await self._nc.subscribe(self._prefix + "*", cb=self._on_ack)

    async def _on_ack(self, msg: Msg) -> None:
        waiting = self._waiting.pop(msg.subject[len(self._prefix) :], None)
        if waiting is None or waiting.done():
            return  # answered after its deadline
        if not msg.data:  # a status message: 503 no responders (no stream for the subject)
            self._refusals[f"status {(msg.headers or {}).get('Status', '?')}"] += 1
            waiting.set_result(False)
            return
        try:
            ack = _puback_decoder.decode(msg.data)
        except msgspec.DecodeError:
            waiting.set_result(False)
            return
        if ack.error is not None:
            self._refusals[str(ack.error.get("description", ack.error))] += 1
        waiting.set_result(ack.error is None and ack.seq > 0)

    async def publish(self, messages: Sequence[Outbound], timeout: float = 5.0) -> list[bool]:
        """Publish ``messages``; ``True`` for each message JetStream stored (or
        recognised as a duplicate of one it stored) within ``timeout`` seconds."""
        return await self.stored(await self.send(messages), timeout)

    async def send(self, messages: Sequence[Outbound]) -> Sent:
        """Publish ``messages``, in order, without waiting for their PubAcks: what
        ``stored`` waits for. A caller may send its next batch meanwhile (the order on
        the connection is the order of the sends)."""
        sent = Sent(len(messages))
        if not messages:
            return sent
        await self._ensure_subscribed()
        loop = asyncio.get_running_loop()
        for message in messages:
            self._next += 1
            token = str(self._next)
            future: asyncio.Future[bool] = loop.create_future()
            self._waiting[token] = future
            sent.futures.append(future)
            sent.tokens.append(token)
            headers = {**self._headers, **(message.headers or {})}
            if message.msg_id:
                headers = {MSG_ID: message.msg_id, **headers}
            try:
                await self._nc.publish(
                    message.subject,
                    message.payload,
                    reply=self._prefix + token,
                    headers=headers or None,
                )
            except Exception as error:  # closed or draining: the rest would fail alike
                log.warning("publish to %s failed: %s", message.subject, error)
                future.set_result(False)
                break
        return sent

    async def stored(self, sent: Sent, timeout: float = 5.0) -> list[bool]:
        """``True`` for each message of ``sent`` JetStream stored (or recognised as a
        duplicate of one it stored) within ``timeout`` seconds of now."""
        futures = sent.futures
        if futures:
            await asyncio.wait(futures, timeout=timeout)
        results = [f.done() and not f.cancelled() and f.result() for f in futures]
        for token in sent.tokens:
            self._waiting.pop(token, None)
        results += [False] * (sent.count - len(results))
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
