"""OutcomeBatches: outcomes handed in together leave in one publish, each caller gets
its own outcome's answer, and an outcome with no answer counts as not stored."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from tocsin.core.outbound import Outbound
from tocsin.core.subjects import DELIVERED
from tocsin.pipeline.delivery import OutcomeBatches


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
    batches = OutcomeBatches(publisher)  # type: ignore[arg-type]
    first = await asyncio.gather(*(batches.store(outcome(i)) for i in "abc"))
    assert first == [True, False, True]
    assert await batches.store(outcome("d"))
    assert publisher.batches == [["a", "b", "c"], ["d"]]


async def test_a_batch_is_at_most_its_limit() -> None:
    publisher = FakePublisher()
    batches = OutcomeBatches(publisher, limit=2)  # type: ignore[arg-type]
    assert all(await asyncio.gather(*(batches.store(outcome(i)) for i in "abcde")))
    assert publisher.batches == [["a", "b"], ["c", "d"], ["e"]]


async def test_a_failed_publish_stores_nothing() -> None:
    batches = OutcomeBatches(FakePublisher(fail=True))  # type: ignore[arg-type]
    assert await asyncio.gather(*(batches.store(outcome(i)) for i in "ab")) == [False, False]
