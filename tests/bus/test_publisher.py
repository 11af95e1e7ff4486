"""``Publisher``: its commands, byte for byte, without a broker (what a message's
``HPUB`` is made of on its quick ways), and the wait for a batch's PubAcks, with one
(``tests/bus/test_streams.py`` publishes through one too)."""

from __future__ import annotations

import asyncio

import nats
import pytest

from tocsin.bus.publisher import Publisher, _header_block
from tocsin.bus.streams import ensure_streams
from tocsin.core.outbound import Outbound
from tocsin.core.subjects import IN_PREFIX, MSG_ID


class FakeInbox:
    """All a ``Publisher`` asks of its connection before it publishes."""

    def new_inbox(self) -> str:
        return "_INBOX.test"


def hpub(block: bytes, payload: bytes) -> bytes:
    return b"HPUB s r %d %d\r\n%s%s\r\n" % (len(block), len(block) + len(payload), block, payload)


@pytest.mark.parametrize("msg_id", ["01JD0001:delivered", " a", "a ", "a\r\nb", "é", "\xa0x"])
def test_a_message_whose_one_header_is_its_id_is_written_as_with_others(msg_id: str) -> None:
    """Catches the block of a message with no header but its id (an outcome, issue #20:
    written without a dict built and walked) differing from the general block's bytes:
    an id written unclean where ``nc.publish`` would clean it, or another framing; and
    a publisher's own headers (a partition's mark) left off such a message."""
    payload = b'{"n":1}'
    publisher = Publisher(FakeInbox())  # type: ignore[arg-type]
    general = hpub(_header_block({MSG_ID: msg_id}), payload)
    assert publisher._command(Outbound("s", payload, msg_id), "r") == general
    marked = Publisher(FakeInbox(), {"Tocsin-Partition": "2"})  # type: ignore[arg-type]
    both = hpub(_header_block({MSG_ID: msg_id, "Tocsin-Partition": "2"}), payload)
    assert marked._command(Outbound("s", payload, msg_id), "r") == both


async def test_a_batch_without_every_puback_ends_at_its_timeout(nats_url: str) -> None:
    """Catches the wait for a batch's PubAcks (issue #20: a timer, not ``asyncio.wait``)
    never ending, or ending before the ``timeout``, when one message is never answered
    (a plain subscriber took it, no stream did): that one is not stored, the other is,
    and the publisher's next batch is answered as usual."""
    nc = await nats.connect(nats_url)
    try:
        await ensure_streams(nc.jetstream())
        quiet = await nc.subscribe("quiet.nobody-answers")
        publisher = Publisher(nc)
        stored = Outbound(f"{IN_PREFIX}timed", b"{}", "timed-1")
        loop = asyncio.get_running_loop()
        started = loop.time()
        results = await publisher.publish(
            [Outbound("quiet.nobody-answers", b"{}", ""), stored], timeout=0.3
        )
        waited = loop.time() - started
        assert results == [False, True]
        assert 0.3 <= waited < 5.0
        assert await publisher.publish([Outbound(f"{IN_PREFIX}timed", b"{}", "timed-2")]) == [True]
        await quiet.unsubscribe()
        await publisher.close()
    finally:
        await nc.close()
