"""tocsin.status, pure: when the router judges the log caught up with TOCSIN_OUT, its
reply values, and the shared fetch that is never older than the question."""

from __future__ import annotations

import asyncio

import pytest

from tocsin.core.policy.failover import BEHIND, REPLIES, SETTLED
from tocsin.pipeline.status import Fresh, recorded_through


@pytest.mark.parametrize(
    ("last", "floor", "pending", "ack_pending", "caught_up"),
    [
        (100, 100, 5, 3, True),  # everything up to 100 acked (more arriving)
        (100, 120, 0, 0, True),
        (100, 99, 1, 0, False),  # 100 not delivered to the recorder yet
        (100, 99, 0, 1, False),  # delivered, not committed (the recorder acks after)
        (100, 97, 0, 0, True),  # 98..100 are not the recorder's (alerts.rejected)
    ],
)
def test_the_log_is_caught_up_when_the_recorder_acked_everything_stored(
    last: int, floor: int, pending: int, ack_pending: int, caught_up: bool
) -> None:
    assert recorded_through(last, floor, pending, ack_pending) is caught_up


def test_every_reply_value_is_documented_and_settled_ones_among_them() -> None:
    assert set(REPLIES) >= SETTLED
    assert BEHIND in REPLIES
    assert BEHIND not in SETTLED


async def test_a_shared_fetch_is_never_older_than_the_question() -> None:
    """Callers waiting together share one fetch; one who asks while a fetch is under way
    gets the next one, begun after it asked."""
    began: list[int] = []
    release = asyncio.Event()

    async def fetch() -> int:
        began.append(len(began) + 1)
        await release.wait()
        return len(began)

    fresh = Fresh(fetch)
    first = [asyncio.create_task(fresh.get()) for _ in range(3)]
    await asyncio.sleep(0)  # the fetch begins
    await asyncio.sleep(0)
    assert began == [1]
    later = [asyncio.create_task(fresh.get()) for _ in range(2)]
    release.set()
    assert await asyncio.gather(*first) == [1, 1, 1]
    assert await asyncio.gather(*later) == [2, 2]
    assert began == [1, 2]
