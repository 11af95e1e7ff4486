"""``bus.puller.Puller`` against the real nats-server: a ``take`` per batch, and at a
steady rate every message is a batch of its own (issue #20, W3), so its wait must be
cheap: a future and a timer, no task of its own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest

from tests.support import wait_until
from tocsin.bus.puller import Puller
from tocsin.bus.streams import ensure_consumer, ensure_streams, recorder_consumer_config
from tocsin.core.subjects import DELIVERED, RECORDER_CONSUMER, STREAM_OUT


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Any]:
    """A connection to a server with TOCSIN_OUT and the recorder's consumer."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_streams(js)
    await ensure_consumer(js, STREAM_OUT, recorder_consumer_config())
    yield nc
    await nc.close()


async def test_a_take_waits_for_its_first_message_without_a_task_of_its_own(nc: Any) -> None:
    """Catches ``asyncio.wait_for`` around the wait (a task, an event's future and a
    timer per take): the only new task while a take waits is the one running it; the
    message that arrives ends the wait."""
    puller = Puller(nc, STREAM_OUT, RECORDER_CONSUMER, 10, prefetch=False)
    await puller.start()
    try:
        before = asyncio.all_tasks()
        taking = asyncio.create_task(puller.take(wait=30))
        await wait_until(lambda: puller._waiter is not None, what="the take waiting")
        assert asyncio.all_tasks() - before == {taking}
        await nc.jetstream().publish(DELIVERED, b"{}")
        msgs = await asyncio.wait_for(taking, 10)
        assert [msg.data for msg in msgs] == [b"{}"]
        assert puller._waiter is None
    finally:
        await puller.stop()


async def test_a_take_with_nothing_to_take_ends_when_its_wait_does(nc: Any) -> None:
    """Catches a wait that outlives its ``wait`` (the timer must end it) or that is
    taken for a message."""
    puller = Puller(nc, STREAM_OUT, RECORDER_CONSUMER, 10, prefetch=False)
    await puller.start()
    try:
        assert await asyncio.wait_for(puller.take(wait=0.05), 10) == []
        assert await puller.take(wait=0) == []
    finally:
        await puller.stop()
