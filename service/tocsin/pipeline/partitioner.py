"""The partitioner: TOCSIN_IN -> ``tocsin.part.<k>`` (DESIGN.md section 17).

Stateless, any number of them: they share one durable pull consumer on TOCSIN_IN, so
each inbound message goes to one of them. Each message is forwarded, its bytes and
headers as published (``partition.forward_headers`` adds where it came from), to the
partition ``partition.of_message`` computes with the router's own ingest code, under
a ``Nats-Msg-Id`` derived from its TOCSIN_IN seq; the inbound message is acked only
after TOCSIN_PART's PubAck for its forward. A partitioner that dies in between leaves
the message unacked: another (or the same, restarted) forwards it again under the same
id, and TOCSIN_PART's duplicate window drops the copy, so every message reaches its
partition exactly once.

A batch is forwarded while the one before waits for its PubAcks (so one process is not
held to a batch per round trip), and acked once they came: at most ``2 * BATCH``
messages are in flight per partitioner. Forwards go out in the order they were pulled,
from one task, so an alert's events reach its partition in their TOCSIN_IN order.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from tocsin.bus.connection import connect, connect_options
from tocsin.bus.publisher import Publisher, Sent
from tocsin.bus.puller import Puller, ack_all, nak, stream_seq
from tocsin.bus.streams import ensure_inbound, ensure_streams
from tocsin.config import Config
from tocsin.core import partition
from tocsin.core.errors import ConfigError
from tocsin.core.outbound import Outbound
from tocsin.core.subjects import PARTITIONER_CONSUMER, STREAM_IN, part_subject
from tocsin.core.times import now_us
from tocsin.pipeline import faults

log = logging.getLogger("tocsin.partitioner")

BATCH = 500
"""Messages pulled, forwarded and acked together: the bound on what is in flight."""

RETRY_DELAY = 1.0
"""Seconds before a message whose forward was not stored is delivered again."""

PUBLISH_TIMEOUT = 5.0


def check_partitioned(config: Config) -> int:
    """The partition count, or a ``ConfigError`` when there is nothing to partition:
    with one partition the router consumes TOCSIN_IN itself."""
    count = config.partitions.count
    if count < 2:
        raise ConfigError(
            "partitions.count: is 1, so the router consumes TOCSIN_IN itself; "
            "`tocsin partition` runs only with 2 partitions or more"
        )
    return count


class Partitioner:
    """One partitioner: pulls batches from the shared consumer and forwards them."""

    def __init__(self, nc: NATS, js: JetStreamContext, config: Config) -> None:
        self._nc = nc
        self._js = js
        self._count = check_partitioned(config)
        self._key = config.partitions.key
        self._publisher = Publisher(nc)
        self._setup = functools.partial(
            ensure_inbound,
            js,
            config.nats.replicas or 1,
            config.nats.ack_wait,
            partitions=self._count,
        )
        self.forwarded = 0  # messages forwarded and acked by this process

    def forwards(self, msgs: Sequence[Msg]) -> list[Outbound]:
        """The forward of each message, in order."""
        received_at = now_us()
        out = []
        for msg in msgs:
            seq = stream_seq(msg)
            k = partition.of_message(
                msg.subject,
                msg.data,
                inbound_seq=seq,
                count=self._count,
                key=self._key,
                received_at=received_at,
            )
            out.append(
                Outbound(
                    subject=part_subject(k),
                    payload=msg.data,
                    msg_id=partition.forward_msg_id(seq),
                    headers=partition.forward_headers(msg.headers, msg.subject, seq),
                )
            )
        return out

    async def handle(self, msgs: Sequence[Msg]) -> None:
        """Forward a batch and settle it (``settle``)."""
        await self.settle(msgs, await self._publisher.send(self.forwards(msgs)))

    async def settle(self, msgs: Sequence[Msg], sent: Sent) -> None:
        """Once the batch's PubAcks came: ack each message whose forward JetStream
        stored, and have the others delivered again shortly (their forwards carry the
        same ids)."""
        stored = await self._publisher.stored(sent, timeout=PUBLISH_TIMEOUT)
        faults.point("partition.after_forward")
        done = [msg for msg, ok in zip(msgs, stored, strict=True) if ok]
        await ack_all(self._nc, done)
        self.forwarded += len(done)
        for msg, ok in zip(msgs, stored, strict=True):
            if not ok:
                await nak(self._nc, msg, RETRY_DELAY)

    async def run(self, stop: asyncio.Event) -> None:
        """Forward until ``stop``; the batches under way are finished first."""
        await self._setup()
        puller = Puller(self._nc, STREAM_IN, PARTITIONER_CONSUMER, BATCH, prefetch=True)
        await puller.start()
        log.info("partitioning TOCSIN_IN into %d partitions", self._count)
        waiting: tuple[Sequence[Msg], Sent] | None = None  # forwarded, PubAcks not seen
        try:
            while not stop.is_set():
                if puller.lost:
                    await self._found_lost(puller)
                msgs = await puller.take(wait=0.5 if waiting is None else 0.0)
                sent = await self._publisher.send(self.forwards(msgs)) if msgs else None
                if waiting is not None:
                    await self.settle(*waiting)
                waiting = (msgs, sent) if sent is not None else None
        finally:
            if waiting is not None:
                await self.settle(*waiting)
            await puller.stop()
            await self._publisher.close()

    async def _found_lost(self, puller: Puller) -> None:
        """The consumer may be gone (deleted, or its leader being elected): make it
        again (a no-op when it is there) and go on."""
        log.warning("consumer %s of %s may be gone; ensuring it", PARTITIONER_CONSUMER, STREAM_IN)
        puller.lost = False
        await self._setup()


async def run(config: Config, nats_url: str, stop: asyncio.Event) -> int:
    """``tocsin partition``: connect, make the streams and consumers it needs, forward
    until ``stop``; 0 once stopped."""
    count = check_partitioned(config)
    nc = await connect(nats_url, name="tocsin-partition", login=connect_options(config.nats_login))
    try:
        js = nc.jetstream(timeout=10)
        await ensure_streams(js, config.nats.replicas or 1, config.nats.ack_wait, partitions=count)
        await Partitioner(nc, js, config).run(stop)
    finally:
        await nc.drain()
    return 0
