"""The order record followed in memory (``bus/delivered.py``, issue #20): what other
workers raise is seen without a request, and a raise written against a stale revision
is refused by JetStream, so the record still only ever goes up. Real NATS."""

from __future__ import annotations

import nats
import pytest
from nats.aio.client import Client as NATS

from tests.support import wait_until
from tocsin.bus import delivered
from tocsin.bus.delivered import DeliveredSeq
from tocsin.bus.publisher import Publisher
from tocsin.bus.streams import ensure_streams
from tocsin.core.outbound import Outbound
from tocsin.core.policy import order
from tocsin.core.subjects import DELIVERED_SEQ_PREFIX


def latest(seq: int) -> order.Latest:
    return order.Latest(log_seq=seq, notification_id=f"n{seq}")


async def connected(nats_url: str) -> NATS:
    nc = await nats.connect(nats_url)
    await ensure_streams(nc.jetstream())
    return nc


async def test_a_follower_knows_records_written_before_and_after_it_started(
    nats_url: str,
) -> None:
    """Catches a follower that answers from memory before it caught up (a record written
    before it started would read as none, and a late retry would be sent), or that misses
    another worker's raise: both are known without asking the bucket."""
    nc = await connected(nats_url)
    other, follower = DeliveredSeq(nc), DeliveredSeq(nc)
    try:
        publisher = Publisher(nc)
        earlier = [order.key("hook", f"fp{i}") for i in range(2000)]
        stored = await publisher.publish(
            [
                Outbound(DELIVERED_SEQ_PREFIX + key, order.encode(latest(i + 1)), key)
                for i, key in enumerate(earlier)
            ]
        )
        await publisher.close()
        assert all(stored)
        await other.raise_to("hook", "fp-before", latest(5))
        await other.raise_to("elsewhere", "fp-before", latest(9))  # another receiver's
        await follower.follow("hook")
        await wait_until(lambda: follower.following(), what="the follower caught up")
        assert follower.known("hook", "fp-before") == (True, latest(5))
        assert [follower.known("hook", f"fp{i}")[1] for i in range(2000)] == [
            latest(i + 1) for i in range(2000)
        ]
        assert follower.known("hook", "fp-never") == (True, None)
        await other.raise_to("hook", "fp-after", latest(7))
        await wait_until(
            lambda: follower.known("hook", "fp-after") == (True, latest(7)),
            what="another worker's raise seen by the follower",
        )
        assert await follower.latest("hook", "fp-after") == latest(7)
    finally:
        await follower.stop()
        await nc.close()


async def test_a_receiver_without_records_is_answered_without_hashing_the_key(
    nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Catches the check before each send hashing the fingerprint into the record's key
    (``order.key``, ~1 us) while the followed receiver has no record at all, as in a
    storm of distinct alerts (issue #20), and catches that shortcut outliving the first
    record: once one is seen, keys are hashed again and it is known."""
    nc = await connected(nats_url)
    other, follower = DeliveredSeq(nc), DeliveredSeq(nc)
    hashed: list[str] = []
    key = order.key

    def counted(receiver: str, fingerprint: str) -> str:
        hashed.append(fingerprint)
        return key(receiver, fingerprint)

    try:
        await follower.follow("empty")
        await wait_until(lambda: follower.following(), what="the follower caught up")
        monkeypatch.setattr(order, "key", counted)
        assert [follower.known("empty", f"fp{i}") for i in range(3)] == [(True, None)] * 3
        assert hashed == []
        await other.raise_to("empty", "fp1", latest(3))
        await wait_until(
            lambda: follower.known("empty", "fp1") == (True, latest(3)),
            what="the first record seen by the follower",
        )
        assert follower.known("empty", "fp2") == (True, None)
        assert "fp2" in hashed
    finally:
        await follower.stop()
        await nc.close()


async def test_a_raise_written_against_a_stale_revision_is_refused(nats_url: str) -> None:
    """Catches a blind write: a follower whose memory lags behind another worker's raise
    builds its compare-and-set on the old revision, and JetStream must refuse it, else a
    raise to 6 would overwrite 8 and a late retry routed at 7 would be sent."""
    nc = await connected(nats_url)
    other, follower = DeliveredSeq(nc), DeliveredSeq(nc)
    publisher = Publisher(nc)
    try:
        await other.raise_to("hook", "fp", latest(4))
        await follower.follow("hook")
        await wait_until(
            lambda: follower.known("hook", "fp") == (True, latest(4)), what="caught up"
        )
        stale = follower.write("hook", "fp", latest(6))  # built on 4's revision
        assert stale is not None
        await other.raise_to("hook", "fp", latest(8))  # another worker, meanwhile
        assert await publisher.publish([stale]) == [False]
        reader = DeliveredSeq(nc)
        assert await reader.latest("hook", "fp") == latest(8)
        await wait_until(lambda: follower.known("hook", "fp") == (True, latest(8)))
        assert follower.write("hook", "fp", latest(6)) is None  # nothing to raise
        fresh = follower.write("hook", "fp", latest(9))
        assert fresh is not None
        assert await publisher.publish([fresh]) == [True]
        assert await reader.latest("hook", "fp") == latest(9)
    finally:
        await follower.stop()
        await publisher.close()
        await nc.close()


async def test_a_forgotten_record_is_asked_for_not_taken_as_none(
    nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Catches memory that is bounded by forgetting as if there were no record: past
    ``RECORDS_KEPT`` the oldest keys are dropped, and one of those must be read from the
    bucket (else its late retries would be sent), while a kept key still reads memory."""
    monkeypatch.setattr(delivered, "RECORDS_KEPT", 3)
    nc = await connected(nats_url)
    other, follower = DeliveredSeq(nc), DeliveredSeq(nc)
    try:
        for i in range(5):
            await other.raise_to("hook", f"fp{i}", latest(i + 1))
        await follower.follow("hook")
        await wait_until(lambda: follower.following(), what="the follower caught up")
        assert follower.known("hook", "fp4") == (True, latest(5))
        assert follower.known("hook", "fp0") == (False, None)  # forgotten: ask
        assert follower.known("hook", "fp-never") == (False, None)  # perhaps forgotten
        assert follower.write("hook", "fp0", latest(9)) is None  # not from memory
        assert await follower.latest("hook", "fp0") == latest(1)
    finally:
        await follower.stop()
        await nc.close()
