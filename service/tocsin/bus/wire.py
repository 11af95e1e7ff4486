"""Below nats-py's per-message API, where the hot paths need it (issue #20).

``nc.publish`` checks, counts and queues one command a call (~1.7 us); a batch of acks
or of work items is written here as one block of the same ``PUB``/``HPUB`` commands,
with the same refusals (``write``). A subscription whose messages nats-py would queue
for a task to hand to a callback, one wake-up a message, can have each message handled
as nats-py's reader parses it instead (``hand_over``), past the bookkeeping nats-py
does for a queue (``_handing_over``). And the messages nats-py's reader gets are cut out
of what it reads without its regular expressions and copies (``parse_quickly``).

All lean on nats-py's internals (its pending buffer and flusher, a subscription's
queue, the client's ``_process_msg``, its protocol parser), pinned by the locks and
covered by ``tests/bus/test_wire.py``, ``tests/bus/test_puller.py`` and
``tests/bus/test_streams.py``.
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
from nats.protocol.parser import AWAITING_CONTROL_LINE, Parser


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
    parse_quickly(nc)
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


def parse_quickly(nc: NATS) -> None:
    """Have ``nc``'s reader cut the messages it reads out the quick way
    (``_QuickParser``); what it was in the middle of parsing is carried over."""
    parser = nc._ps
    if type(parser) is Parser:
        parser.__class__ = _QuickParser
        parser._wanted = 0  # type: ignore[attr-defined]


class _QuickParser(Parser):
    """nats-py's protocol parser with a short way for ``MSG`` and ``HMSG``, the commands
    that carry messages: every message tocsin receives (an inbound event, a work item,
    an outcome, a PubAck) passes here. nats-py matches each control line against up to
    two regular expressions, copies the payload and the headers twice (a ``bytearray``
    slice, then ``bytes``) and deletes them from the front of its buffer: ~4.7 us an
    ``HMSG`` and ~3.1 a ``MSG`` on this project's bench machine, against ~2.7 and ~2.0
    here (``_process_msg`` included; issue #20). Here the bytes read are parsed where
    they lie: a control line split at whitespace (what nats-py's expressions match
    between fields), the headers and the payload sliced once each, and ``_process_msg``
    called with what nats-py would pass it.

    Anything else (``PING``, ``PONG``, ``+OK``, ``-ERR``, ``INFO``, a malformed line)
    and all that follows it in the bytes at hand go to nats-py's own ``parse``, which
    also finishes a message it had begun before this parser took over. A message cut
    short by the read waits in the buffer until ``_wanted`` bytes are there; a line cut
    short, until the next read. A reconnect's ``reset`` (a new buffer) ends a parse."""

    _wanted: int  # bytes the buffer must hold before a message in it is whole

    def reset(self) -> None:
        super().reset()
        self._wanted = 0

    async def parse(self, data: bytes = b"") -> None:
        if self.state != AWAITING_CONTROL_LINE:  # nats-py's own, begun before
            await super().parse(data)
            if self.state != AWAITING_CONTROL_LINE:
                return
            data = b""
        buf = self.buf
        if buf:
            buf.extend(data)
            if len(buf) < self._wanted:
                return
            data = bytes(buf)
            buf.clear()
        self._wanted = 0
        process = self.nc._process_msg
        size, pos = len(data), 0
        while pos < size:
            end = data.find(b"\r\n", pos)
            if end < 0:
                break
            if data.startswith(b"MSG ", pos):
                args = data[pos + 4 : end].split()
                if len(args) == 3 and args[1].isdigit() and args[2].isdigit():
                    subject, sid, length = args
                    reply = b""
                elif len(args) == 4 and args[1].isdigit() and args[3].isdigit():
                    subject, sid, reply, length = args
                else:
                    break  # malformed: nats-py's parse says so
                start = split = end + 2
                stop = start + int(length)
            elif data.startswith(b"HMSG ", pos):
                args = data[pos + 5 : end].split()
                if len(args) == 4 and args[1].isdigit() and args[2].isdigit():
                    subject, sid, header_length, length = args
                    reply = b""
                elif len(args) == 5 and args[1].isdigit() and args[3].isdigit():
                    subject, sid, reply, header_length, length = args
                else:
                    break
                if not length.isdigit():
                    break
                start = end + 2
                split, stop = start + int(header_length), start + int(length)
                if split > stop:
                    break
            else:
                break  # a command nats-py handles itself
            if stop + 2 > size:  # the message is not all here yet
                self._wanted = stop + 2 - pos
                buf.extend(data[pos:])
                return
            headers = data[start:split] if split > start else None  # as nats-py: none is None
            pos = stop + 2
            await process(int(sid), subject, reply, data[split:stop], headers)
            if self.buf is not buf:  # reset while the message was handled
                return
        if pos < size:
            buf.extend(data[pos:])
            if end >= 0:  # a whole line, not MSG or HMSG: nats-py's parse from here
                await super().parse()
