"""Repartitioning on the broker (``bus.repartition``), against real NATS: 1 -> 2 -> 1
changes TOCSIN_IN's consumer without losing what waits in the stream, and the check
names a consumer still holding messages decided under the old count."""

from __future__ import annotations

import nats

from tocsin.bus.repartition import Consumer, obsolete, reshape, undrained
from tocsin.bus.streams import ensure_streams
from tocsin.core.subjects import (
    PARTITIONER_CONSUMER,
    RECORDER_CONSUMER,
    ROUTER_CONSUMER,
    STREAM_IN,
    STREAM_OUT,
    STREAM_PART,
    part_subject,
    recorder_consumer,
    router_consumer,
)


def test_the_consumers_a_new_count_does_not_use() -> None:
    """Which consumers each move deletes (catches a reader of the new shape deleted, or
    an old one left holding TOCSIN_IN's messages for ever)."""
    assert obsolete(1, 3) == [
        Consumer(STREAM_IN, ROUTER_CONSUMER),
        Consumer(STREAM_OUT, RECORDER_CONSUMER),
    ]
    assert obsolete(3, 1) == [
        Consumer(STREAM_IN, PARTITIONER_CONSUMER),
        *(Consumer(STREAM_PART, router_consumer(k)) for k in range(3)),
        *(Consumer(STREAM_OUT, recorder_consumer(k)) for k in range(3)),
    ]
    assert obsolete(2, 3) == []
    assert obsolete(3, 2) == [
        Consumer(STREAM_PART, router_consumer(2)),
        Consumer(STREAM_OUT, recorder_consumer(2)),
    ]


async def consumer_names(js: nats.js.JetStreamContext, stream: str) -> set[str]:
    return {info.name for info in await js.consumers_info(stream)}


async def test_one_to_two_and_back_keeps_what_waits_in_tocsin_in(nats_url: str) -> None:
    """What publishers sent while the services were stopped is read by the new shape's
    consumer (catches deleting the old consumer first: TOCSIN_IN, kept by interest,
    would drop the messages at once); a TOCSIN_PART consumer with unread messages is
    named by the check (catches moving while messages routed by the old count wait)."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await ensure_streams(js, partitions=1)
        for i in range(5):
            await js.publish(f"alerts.in.s{i}", b"{}")
        assert await undrained(js, 1) == []

        deleted = await reshape(js, 1, 2, replicas=1, ack_wait=30.0)
        assert Consumer(STREAM_IN, ROUTER_CONSUMER) in deleted
        assert await consumer_names(js, STREAM_IN) == {PARTITIONER_CONSUMER}
        assert (await js.consumer_info(STREAM_IN, PARTITIONER_CONSUMER)).num_pending == 5
        assert await consumer_names(js, STREAM_PART) == {router_consumer(0), router_consumer(1)}

        await js.publish(part_subject(1), b"{}")
        (problem,) = await undrained(js, 2)
        assert problem == f"{router_consumer(1)} on {STREAM_PART}: 1 unread, 0 unacknowledged"

        await reshape(js, 2, 1, replicas=1, ack_wait=30.0)
        assert await consumer_names(js, STREAM_IN) == {ROUTER_CONSUMER}
        assert (await js.consumer_info(STREAM_IN, ROUTER_CONSUMER)).num_pending == 5
        assert await consumer_names(js, STREAM_PART) == set()
    finally:
        await nc.close()
