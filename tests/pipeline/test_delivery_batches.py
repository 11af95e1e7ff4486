"""OutcomeBatches: outcomes handed in together leave in one publish, each caller gets
its own outcome's answer, and an outcome with no answer counts as not stored; the work
items whose outcomes were stored are acked with their batch, in one write."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import nats
import pytest
from nats.aio.msg import Msg

from tests.pipeline.test_delivery_workers import item
from tests.support import wait_until
from tocsin.bus.publisher import Publisher
from tocsin.bus.puller import Puller
from tocsin.bus.streams import deliver_consumer_config, ensure_consumer, ensure_streams
from tocsin.core.outbound import Outbound
from tocsin.core.subjects import ACK, DELIVERED, STREAM_WORK, deliver_consumer
from tocsin.pipeline import delivery
from tocsin.pipeline.delivery import Handoff, OutcomeBatches


class FakePublisher:
    """Answers each publish with ``answer(outcome)``; remembers the batches."""

    def __init__(self, refuse: str = "", fail: bool = False) -> None:
        self.batches: list[list[str]] = []
        self._refuse = refuse
        self._fail = fail

    async def publish(self, messages: Sequence[Outbound]) -> list[bool]:
        self.batches.append([m.msg_id for m in messages])
        await asyncio.sleep(0)  # the PubAcks come back later
        if self._fail:
            raise ConnectionError("closed")
        return [m.msg_id != self._refuse for m in messages]


def outcome(msg_id: str) -> Outbound:
    return Outbound(DELIVERED, b"{}", msg_id)


async def test_outcomes_handed_in_together_leave_in_one_publish() -> None:
    publisher = FakePublisher(refuse="b")
    batches = OutcomeBatches(None, publisher)  # type: ignore[arg-type]
    first = await asyncio.gather(*(batches.store(outcome(i)) for i in "abc"))
    assert first == [True, False, True]
    assert await batches.store(outcome("d"))
    assert publisher.batches == [["a", "b", "c"], ["d"]]


async def test_a_batch_is_at_most_its_limit() -> None:
    publisher = FakePublisher()
    batches = OutcomeBatches(None, publisher, limit=2)  # type: ignore[arg-type]
    assert all(await asyncio.gather(*(batches.store(outcome(i)) for i in "abcde")))
    assert publisher.batches == [["a", "b"], ["c", "d"], ["e"]]


async def test_a_failed_publish_stores_nothing() -> None:
    batches = OutcomeBatches(None, FakePublisher(fail=True))  # type: ignore[arg-type]
    assert await asyncio.gather(*(batches.store(outcome(i)) for i in "ab")) == [False, False]


class HeldPublisher(FakePublisher):
    """A ``FakePublisher`` whose PubAcks wait for ``release``."""

    def __init__(self, refuse: str = "") -> None:
        super().__init__(refuse=refuse)
        self.publishing = False
        self.release = asyncio.Event()

    async def publish(self, messages: Sequence[Outbound]) -> list[bool]:
        self.publishing = True
        await self.release.wait()
        return await super().publish(messages)


async def test_items_are_acked_with_their_batch_once_their_outcomes_are_stored(
    nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Catches an item acked before its outcome is stored (DESIGN.md section 2), an
    item acked whose outcome was refused, and the batch's acks leaving one write an
    item instead of one a batch (issue #20). Real NATS: what JetStream counts as
    unacked is the proof."""
    receiver = "acked"
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_streams(js)
    await ensure_consumer(js, STREAM_WORK, deliver_consumer_config(receiver, 10.0))
    puller = Puller(nc, STREAM_WORK, deliver_consumer(receiver), 10, prefetch=False)
    await puller.start()
    writes: list[int] = []
    real_ack_all = delivery.ack_all

    async def counted(nc: nats.NATS, msgs: Sequence[Msg], body: bytes = ACK) -> None:
        writes.append(len(msgs))
        await real_ack_all(nc, msgs, body)

    monkeypatch.setattr(delivery, "ack_all", counted)

    async def unacked() -> int:
        info = await js.consumer_info(STREAM_WORK, deliver_consumer(receiver))
        return int(info.num_ack_pending)

    async def one_unacked() -> bool:
        return await unacked() == 1

    try:
        assert await Publisher(nc).publish([item(i, receiver) for i in (1, 2, 3)]) == [True] * 3
        msgs: list[Msg] = []

        async def taken() -> bool:
            msgs.extend(await puller.take(limit=3 - len(msgs), wait=0.2))
            return len(msgs) == 3

        await wait_until(taken, what="three work items")
        publisher = HeldPublisher(refuse="b")
        batches = OutcomeBatches(nc, publisher)  # type: ignore[arg-type]
        storing = asyncio.gather(
            *(batches.store(outcome(i), msg) for i, msg in zip("abc", msgs, strict=True))
        )
        await wait_until(lambda: publisher.publishing, what="the batch published")
        await nc.flush()
        assert await unacked() == 3  # PubAcks not in: nothing acked
        publisher.release.set()
        assert await storing == [True, False, True]
        await wait_until(one_unacked, what="the two stored acked")
        assert writes == [2]
    finally:
        await puller.stop()
        await nc.close()


async def test_the_handoff_gives_each_item_once_in_order_even_to_cancelled_senders() -> None:
    """``Handoff`` replaced the sender loops' ``asyncio.Queue`` (issue #20). Catches an
    item lost or given twice: items come out first in first out, to waiting senders in
    the order they waited; a sender cancelled while waiting takes nothing, and one
    cancelled after it was woken passes the item on to the next."""
    handoff = Handoff()
    handoff.put("a")  # type: ignore[arg-type]
    handoff.put("b")  # type: ignore[arg-type]
    assert [await handoff.get(), await handoff.get()] == ["a", "b"]
    first, second, third = (asyncio.create_task(handoff.get()) for _ in range(3))
    await asyncio.wait([first, second, third], timeout=0)  # all three waiting
    first.cancel()  # cancelled while waiting: takes nothing
    handoff.put("c")  # type: ignore[arg-type]
    second.cancel()  # woken for "c", cancelled before it ran: "c" goes to the third
    assert await third == "c"
    for task in (first, second):
        with pytest.raises(asyncio.CancelledError):
            await task
    assert handoff.qsize() == 0
    handoff.put(None)
    assert await handoff.get() is None
