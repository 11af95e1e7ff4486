"""Below nats-py's per-message API, where the hot paths need it (issue #20).

``nc.publish`` checks, counts and queues one command a call (~1.7 us); a batch of acks
or of work items is written here as one block of the same ``PUB``/``HPUB`` commands,
with the same refusals (``write``). A subscription whose messages nats-py would queue
for a task to hand to a callback, one wake-up a message, can have each message handled
as nats-py's reader parses it instead (``hand_over``), past the bookkeeping nats-py
does for a queue (``_handing_over``).

Both lean on nats-py's internals (its pending buffer and flusher, a subscription's
queue, the client's ``_process_msg``), pinned by the locks and covered by
``tests/bus/test_puller.py`` and ``tests/bus/test_streams.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import (
    ConnectionClosedError,
    ConnectionDrainingError,
    OutboundBufferLimitError,
)


async def write(nc: NATS, commands: bytes) -> None:
    """Queue ``commands`` (whole NATS protocol commands) as one write, and have the
    flusher send them, as ``nc.publish`` does with one: refused on a closed or draining
    connection, and, while reconnecting, beyond the pending buffer's limit."""
    if nc.is_closed:
        raise ConnectionClosedError
    if nc.is_draining_pubs:
        raise ConnectionDrainingError
    if not nc.is_connected and (
        nc._max_pending_size <= 0 or len(commands) + nc._pending_data_size > nc._max_pending_size
    ):
        raise OutboundBufferLimitError
    await nc._send_command(commands)
    if nc._flush_queue is not None and nc._flush_queue.empty():  # as publish: one kick
        await nc._flush_pending()


def hand_over(sub: Subscription, handle: Callable[[Msg], None]) -> None:
    """Have each message of ``sub`` (made without a callback, before anything can
    arrive on it) passed to ``handle`` as nats-py's reader parses it."""
    sub._pending_queue = _HandOver(sub, handle)
    nc = sub._conn
    if not getattr(nc._process_msg, "hands_over", False):
        nc._process_msg = _handing_over(nc)


def _handing_over(nc: NATS) -> Callable[[int, bytes, bytes, bytes, bytes], Awaitable[None]]:
    """``nc._process_msg`` (what nats-py's parser calls with every message) with a short
    way for a handed-over subscription's: the ``Msg`` made and handed on, without the
    checks and bookkeeping of a queue nothing waits on (its pending bytes, a request's
    future, JetStream's flow control, none of which such a subscription has), and
    headers parsed only when there are some (a status, on a pull's inbox): ~1.9 -> ~1.5
    us a message, two a new alert (its inbound message and its work item's PubAck).
    Header lines without a status are parsed by ``header_lines``, the rest by nats-py.
    Any other subscription's messages go the usual way."""
    usual = nc._process_msg
    subs, stats, make = nc._subs, nc.stats, nc.msg_class

    async def process(sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes) -> None:
        sub = subs.get(sid)
        queue = sub._pending_queue if sub is not None else None
        if type(queue) is not _HandOver or sub is None or sub._max_msgs > 0:
            await usual(sid, subject, reply, data, headers)
            return
        stats["in_msgs"] += 1
        stats["in_bytes"] += len(data)
        sub._received += 1
        hdr = None
        if headers:
            if headers.startswith(_NO_STATUS):
                hdr = header_lines(headers[len(_NO_STATUS) :])
            else:  # a status line (a pull's 404, 408, 409, 100): nats-py's own parse
                hdr = await nc._process_headers(headers)
        queue._handle(
            make(
                subject=subject.decode(),
                reply=reply.decode(),
                data=data,
                headers=hdr,
                _client=nc,
                _sid=sid,
            )
        )

    process.hands_over = True  # type: ignore[attr-defined]
    return process


_NO_STATUS = b"NATS/1.0\r\n"  # a header block's first line when it holds no status


def header_lines(raw: bytes) -> dict[str, str] | None:
    """The headers of a block's lines after its ``NATS/1.0`` line, as nats-py's
    ``_process_headers`` gives them (its ``_parse_header_lines``, then ``None`` for
    none): a name stripped, ASCII and without whitespace (a line whose name is not
    is dropped), a value stripped and decoded as UTF-8 with replacements. nats-py asks
    ``isspace`` of each of a name's characters in a generator, ~1.7 us of the ~2.9 a
    work item's two headers took (issue #20); ``str.split`` without arguments splits
    at exactly the characters ``isspace`` is true of. ``tests/bus/test_wire.py``
    checks the two agree."""
    found: dict[str, str] = {}
    for line in raw.split(b"\r\n"):
        name, colon, value = line.partition(b":")
        if not colon:
            continue
        try:
            key = name.strip().decode("ascii")
        except UnicodeDecodeError:
            continue
        if key and key.split() != [key]:
            continue
        found[key] = value.strip().decode("utf-8", "replace")
    return found or None


class _HandOver(asyncio.Queue[Msg]):
    """The queue nats-py puts a subscription's messages in, replaced: ``put_nowait``
    hands each one on at once. Nothing is ever held, so whatever bounds the messages
    that may arrive (a pull request's credit, a batch's PubAcks) bounds the caller's."""

    def __init__(self, sub: Subscription, handle: Callable[[Msg], None]) -> None:
        super().__init__()
        self._sub, self._handle = sub, handle

    def put_nowait(self, item: Msg) -> None:
        self._sub._pending_size -= len(item.data)  # nats-py counted it in: handled now
        self._handle(item)
