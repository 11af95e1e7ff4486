"""The puller and its acks against real NATS: messages are handed over as nats-py
parses them (no queue or task per message) and a batch's acks leave in one write
(issue #20, ``bus/wire.py``)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import msgspec
import nats
import pytest
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError, OutboundBufferLimitError

from tests.support import NatsServer, wait_until
from tocsin.bus import wire
from tocsin.bus.publisher import Publisher
from tocsin.bus.puller import Puller, ack_all, backlog_after, stream_seq
from tocsin.bus.streams import ensure_streams
from tocsin.core.outbound import Outbound
from tocsin.core.subjects import IN_PREFIX, ROUTER_CONSUMER, STREAM_IN, TERM

MESSAGES = 2500  # more than two of the puller's batches


async def test_a_pulled_storm_arrives_whole_in_order_and_one_write_acks_it_all(
    nats_url: str,
) -> None:
    """Catches the handoff losing or reordering messages, nats-py's count of a
    subscription's pending bytes growing with every message handed over (past its limit
    nats-py drops messages as a slow consumer's), and joined acks that JetStream does not
    take as acks (the messages would stay pending and come back after ``ack_wait``)."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await ensure_streams(js)
        sent = [
            Outbound(f"{IN_PREFIX}puller", msgspec.json.encode({"n": n}), f"puller-{n}")
            for n in range(MESSAGES)
        ]
        assert await Publisher(nc).publish(sent) == [True] * MESSAGES
        puller = Puller(nc, STREAM_IN, ROUTER_CONSUMER, 1000, prefetch=True)
        await puller.start()
        got: list[Msg] = []

        async def pulled_all() -> bool:
            got.extend(await puller.take(wait=0.5))
            return len(got) >= MESSAGES

        await wait_until(pulled_all, what="every message pulled")
        assert [stream_seq(m) for m in got] == list(range(1, MESSAGES + 1))
        assert [msgspec.json.decode(m.data)["n"] for m in got] == list(range(MESSAGES))
        # What a storm has left after each (the ledger's snapshot waits while it is on).
        assert [backlog_after(m) for m in got] == list(range(MESSAGES - 1, -1, -1))
        assert backlog_after(Msg(nc, subject="by.hand", data=b"")) == 0
        assert puller._sub is not None
        assert puller._sub.pending_bytes == 0  # handed over, not pending in nats-py
        info = await js.consumer_info(STREAM_IN, ROUTER_CONSUMER)
        assert info.num_ack_pending == MESSAGES  # nothing acked yet: the control

        await ack_all(nc, got[:-1])
        await ack_all(nc, got[-1:], TERM)

        async def all_acked() -> bool:
            info = await js.consumer_info(STREAM_IN, ROUTER_CONSUMER)
            return info.num_ack_pending == 0 and info.ack_floor.stream_seq == MESSAGES

        await wait_until(all_acked, what="every message acked")
        assert await puller.take(wait=0.3) == []  # none comes back
        await puller.stop()
    finally:
        await nc.close()


async def test_acks_on_a_closed_connection_are_refused_as_publish_refuses_them(
    nats_url: str,
) -> None:
    """Catches the joined acks being dropped silently on a closed connection, where
    ``nc.publish`` raised (the caller then knows the batch stays unacked)."""
    nc = await nats.connect(nats_url)
    await nc.close()
    msg = Msg(_client=nc, subject="x", reply="$JS.ACK.TOCSIN_IN.router.1.1.1.1.0")
    with pytest.raises(ConnectionClosedError):
        await ack_all(nc, [msg])


async def test_while_reconnecting_a_write_is_held_up_to_the_pending_limit_only(
    tmp_path: Path,
) -> None:
    """Catches the joined writes skipping the limit ``nc.publish`` keeps while the
    connection is down: retried batches of work items would pile up in memory for as
    long as the broker is away, instead of failing once the buffer is full."""
    server = NatsServer(tmp_path / "js")
    server.start()
    nc = await nats.connect(
        server.url, pending_size=4096, max_reconnect_attempts=-1, reconnect_time_wait=0.2
    )
    try:
        server.stop()
        await wait_until(lambda: nc.is_reconnecting, what="the client reconnecting")
        await wire.write(nc, b"PUB a 1\r\nx\r\n")  # held for the reconnect
        with pytest.raises(OutboundBufferLimitError):
            await wire.write(nc, b"PUB a 5000\r\n" + b"x" * 5000 + b"\r\n")
    finally:
        # nats-py's close flushes what is held to the dead socket and raises: as it
        # does for what nc.publish held.
        with contextlib.suppress(ConnectionResetError):
            await nc.close()


async def test_a_handed_over_message_is_the_msg_nats_py_would_have_queued(nats_url: str) -> None:
    """Catches the short way of a handed-over subscription's messages (issue #20:
    ``wire``'s ``_process_msg``, no queue bookkeeping) making a message other than the
    one nats-py's own path makes for a plain subscription to the same subject: its
    subject, reply, data, headers (a ``Nats-Msg-Id``; a status line's ``Status``, as a
    pull's inbox gets them) and subscription, or counting it nowhere (the client's
    ``in_msgs``); or taking another subscription's messages off their usual path."""
    nc = await nats.connect(nats_url)
    try:
        handed: list[Msg] = []
        usual: list[Msg] = []

        async def plainly(msg: Msg) -> None:
            usual.append(msg)

        await ensure_streams(nc.jetstream())  # a pull of nothing is answered by a status
        sub = await nc.subscribe("wire.short.*")
        wire.hand_over(sub, handed.append)
        plain = await nc.subscribe("wire.short.*", cb=plainly)
        assert getattr(nc._process_msg, "hands_over", False)  # the short way is taken
        before = nc.stats["in_msgs"]
        await nc.publish("wire.short.a", b"one", reply="r.1")
        await nc.publish("wire.short.b", b"two", headers={"Nats-Msg-Id": "m2", "x": "y"})
        pull = f"$JS.API.CONSUMER.MSG.NEXT.{STREAM_IN}.{ROUTER_CONSUMER}"
        await nc.publish(pull, b'{"batch":1,"no_wait":true}', reply="wire.short.c")
        await nc.flush()
        await wait_until(lambda: len(usual) == 3, what="the plain subscription's three")
        assert [(m.subject, m.reply, m.data, m.headers) for m in handed] == [
            (m.subject, m.reply, m.data, m.headers) for m in usual
        ]
        assert handed[1].headers == {"Nats-Msg-Id": "m2", "x": "y"}
        assert (handed[2].headers or {}).get("Status") == "404"
        assert {m._sid for m in handed} == {sub._id} != {m._sid for m in usual}
        assert nc.stats["in_msgs"] - before == 6
        assert (sub.pending_bytes, sub.delivered) == (0, 3)
        await plain.unsubscribe()
    finally:
        await nc.close()


async def test_a_lingering_take_ends_once_a_full_batch_is_here(nats_url: str) -> None:
    """A take that has its first message lingers for more (the recorder's trickle,
    ``recorder.LINGER``), but only until a full batch is here: catches a linger slept
    out whole, which held up a storm's every partly arrived batch (at 50 ms, ~8,000
    outcomes/s at most, near W1's target; issue #20). The linger here is a minute:
    the take must return the whole batch long before."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await ensure_streams(js)
        publisher = Publisher(nc)

        def messages(first: int, count: int) -> list[Outbound]:
            return [
                Outbound(f"{IN_PREFIX}linger", msgspec.json.encode({"n": n}), f"linger-{n}")
                for n in range(first, first + count)
            ]

        assert await publisher.publish(messages(0, 1)) == [True]
        puller = Puller(nc, STREAM_IN, ROUTER_CONSUMER, 100, prefetch=True, linger=60.0)
        await puller.start()
        taking = asyncio.create_task(puller.take(wait=10.0))

        async def first_pulled() -> bool:
            info = await js.consumer_info(STREAM_IN, ROUTER_CONSUMER)
            return int(info.delivered.stream_seq) == 1

        await wait_until(first_pulled, what="the first message in the puller's hands")
        assert not taking.done()  # lingering for more
        assert await publisher.publish(messages(1, 99)) == [True] * 99
        got = await asyncio.wait_for(taking, 10.0)
        assert [stream_seq(m) for m in got] == list(range(1, 101))
        await puller.stop()
    finally:
        await nc.close()
