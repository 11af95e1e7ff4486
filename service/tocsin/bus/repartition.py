"""Repartitioning N -> M on the broker (DESIGN.md section 17): which consumers still
hold messages routed under N, and the consumers of M made before those of N go.

Partitioned (N > 1), the partitioners read TOCSIN_IN through ``partitioner`` and each
partition's router reads ``tocsin.part.<k>`` through ``router-p<k>``; unpartitioned, the
router reads TOCSIN_IN through ``router``. TOCSIN_IN and TOCSIN_PART keep a message only
while a consumer is interested in it, so the consumers of M are created first (a new
one starts at the oldest message still kept, so what was published while the services
were stopped is read under M), and only then are those of N that M does not use deleted.
"""

from __future__ import annotations

from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from tocsin.bus.streams import ensure_streams
from tocsin.core.subjects import (
    PARTITIONER_CONSUMER,
    RECORDER_CONSUMER,
    ROUTER_CONSUMER,
    STREAM_IN,
    STREAM_OUT,
    STREAM_PART,
    recorder_consumer,
    router_consumer,
)


@dataclass(frozen=True, slots=True)
class Consumer:
    stream: str
    name: str

    def __str__(self) -> str:
        return f"{self.name} on {self.stream}"


def readers(count: int) -> list[Consumer]:
    """The consumers whose messages are routed by a ``count``-partition shape."""
    if count == 1:
        return [Consumer(STREAM_IN, ROUTER_CONSUMER)]
    return [Consumer(STREAM_IN, PARTITIONER_CONSUMER)] + [
        Consumer(STREAM_PART, router_consumer(k)) for k in range(count)
    ]


def obsolete(from_count: int, to_count: int) -> list[Consumer]:
    """The consumers of the ``from_count`` shape the ``to_count`` shape does not use
    (the readers, and the recorders of partitions that are gone)."""
    if to_count == 1:
        recorders = [recorder_consumer(k) for k in range(from_count)]
    elif from_count == 1:
        recorders = [RECORDER_CONSUMER]
    else:
        recorders = [recorder_consumer(k) for k in range(to_count, from_count)]
    kept = set(readers(to_count))
    return [c for c in readers(from_count) if c not in kept] + [
        Consumer(STREAM_OUT, name) for name in recorders
    ]


async def undrained(js: JetStreamContext, from_count: int) -> list[str]:
    """What the ``from_count`` shape's consumers still hold that would be decided under
    the wrong partitions: messages delivered and not acked anywhere (a process stopped
    mid-batch: they come back after ``ack_wait``), and, on TOCSIN_PART, messages not
    yet read (forwarded by the old count). Unread TOCSIN_IN messages are fine: the new
    shape's consumer reads them."""
    out = []
    for consumer in readers(from_count):
        try:
            info = await js.consumer_info(consumer.stream, consumer.name)
        except NotFoundError:
            continue
        unacked = info.num_ack_pending or 0
        unread = (info.num_pending or 0) if consumer.stream == STREAM_PART else 0
        if unacked or unread:
            out.append(f"{consumer}: {unread} unread, {unacked} unacknowledged")
    return out


async def reshape(
    js: JetStreamContext, from_count: int, to_count: int, replicas: int, ack_wait: float
) -> list[Consumer]:
    """The streams and consumers of ``to_count`` made, then those of ``from_count`` it
    does not use deleted; the deleted ones."""
    await ensure_streams(js, replicas, ack_wait, partitions=to_count)
    deleted = []
    for consumer in obsolete(from_count, to_count):
        try:
            await js.delete_consumer(consumer.stream, consumer.name)
        except NotFoundError:
            continue
        deleted.append(consumer)
    return deleted
