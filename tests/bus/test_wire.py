"""``wire.header_lines``: a handed-over message's headers parsed as nats-py parses them
(issue #20), compared with nats-py's own ``_process_headers`` on the blocks tocsin
gets and on the odd ones a publisher could send; and ``wire.parse_quickly``'s parser,
compared with nats-py's on every command a server sends, read in pieces of every size.
No broker but for the last test: the parse is pure."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import pytest
from nats.aio.client import Client
from nats.errors import ProtocolError
from nats.js.errors import NotFoundError
from nats.protocol.parser import Parser

from tocsin.bus import connection, wire

LINES = [
    b"Nats-Msg-Id: 01JD000000000000000000000001",
    b"traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    b"Tocsin-Partition: 3",
    b"Name:Value",
    b"Name:\tTabbed\t",
    b"  Spaced  :  value with  spaces  ",
    b"Has Space: dropped",
    b"Has\x1cSeparator: dropped",
    b"Ends\x1c: dropped",
    b"caf\xc3\xa9: not ascii, dropped",
    b"Value: caf\xc3\xa9",
    b"Broken: \xff\xfe not utf-8",
    b": an empty name",
    b"no colon at all",
    b"Repeated: first",
    b"Repeated: second",
    b"Colons: a:b:c",
    b"",
]


def blocks() -> list[bytes]:
    """Header blocks without a status: each line alone, every line, and none."""
    every = b"\r\n".join(LINES)
    return [
        b"NATS/1.0\r\n",
        b"NATS/1.0\r\n\r\n",
        *(b"NATS/1.0\r\n" + line + b"\r\n\r\n" for line in LINES),
        b"NATS/1.0\r\n" + every + b"\r\n\r\n",
        b"NATS/1.0\r\n" + every,  # cut short
    ]


def test_header_lines_are_what_nats_py_makes_of_them() -> None:
    """Catches the quick parse of a handed-over message's headers (a work item's, an
    inbound event's) differing from nats-py's: a name with whitespace inside or a
    non-ASCII one kept, a value not stripped or decoded otherwise, a repeated header's
    last value lost, or an empty block given as ``{}`` instead of ``None``."""
    nc = Client()

    async def theirs() -> list[dict[str, str] | None]:
        return [await nc._process_headers(block) for block in blocks()]

    ours = [wire.header_lines(block.removeprefix(b"NATS/1.0\r\n")) for block in blocks()]
    assert ours == asyncio.run(theirs())
    assert ours[-2] is not None
    assert "Has Space" not in ours[-2]
    assert ours[-2]["Repeated"] == "second"
    assert ours[0] is None


# -- the quick parser: what nats-py's reader hands on, compared with nats-py's own --


class Recorder:
    """What a client's parser hands on, in order: each message as ``_process_msg``
    gets it, and each other command it handles."""

    def __init__(self) -> None:
        self.seen: Seen = []
        self._ps = Parser(self)

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None
    ) -> None:
        self.seen.append(("msg", sid, bytes(subject), bytes(reply), bytes(data), headers))
        if headers is not None:
            self.seen.append(("headers type", type(headers)))

    async def _process_ping(self) -> None:
        self.seen.append(("ping",))

    async def _process_pong(self) -> None:
        self.seen.append(("pong",))

    async def _process_info(self, info: dict[str, object]) -> None:
        self.seen.append(("info", info))

    async def _process_err(self, error: str) -> None:
        self.seen.append(("err", error))


def hmsg(subject: bytes, sid: int, reply: bytes, headers: bytes, payload: bytes) -> bytes:
    fields = [subject, b"%d" % sid, *([reply] if reply else []), b"%d" % len(headers)]
    total = len(headers) + len(payload)
    return b"HMSG " + b" ".join(fields) + b" %d\r\n" % total + headers + payload + b"\r\n"


STREAM = b"".join(
    [
        b'INFO {"server_id":"n1","max_payload":1048576}\r\n',
        b"MSG alerts.disk 1 5\r\nhello\r\n",
        b"MSG _INBOX.a.1 2 $JS.ACK.TOCSIN_IN.router.1.7.7.1733450000000000000.0 0\r\n\r\n",
        hmsg(b"tocsin.work.h", 3, b"$JS.ACK.W.1.2", b"NATS/1.0\r\nNats-Msg-Id: 01\r\n\r\n", b"{}"),
        hmsg(b"_INBOX.b.1", 4, b"", b"NATS/1.0 404 No Messages\r\n\r\n", b""),
        b"MSG binary 1 reply.to 23\r\n\r\nMSG fake 1 3\r\nxyz\r\n\x00\xff\r\n",
        b"PING\r\n",
        b"HMSG no.headers 5 0 4\r\nbody\r\n",
        b"PONG\r\n",
        b"MSG\ttabbed 1 3\r\ntab\r\n",
        b"MSG  two.spaces   1   3\r\nabc\r\n",
        b"+OK\r\n",
        b"-ERR 'Stale Connection'\r\n",
        hmsg(b"big", 6, b"r", b"NATS/1.0\r\nK: v\r\n\r\n", bytes(range(256)) * 300),
        b"MSG last 1 1\r\n!\r\n",
    ]
)
"""Every command a server sends a client, the messages in each shape (a reply or none,
headers or none, an empty payload, a status, bytes that look like commands inside a
payload, a payload larger than a read), and the odd spacing nats-py accepts."""


Seen = list[tuple[object, ...]]


def handed_on(parser_of: Callable[[Recorder], None], reads: list[bytes]) -> Seen:
    client = Recorder()
    parser_of(client)

    async def feed() -> None:
        for read in reads:
            await client._ps.parse(read)

    asyncio.run(feed())
    return client.seen


def nats_py(client: Recorder) -> None:
    """nats-py's parser, as it is."""


def quick(client: Recorder) -> None:
    wire.parse_quickly(client)  # type: ignore[arg-type]


def cut(data: bytes, size: int) -> list[bytes]:
    return [data[at : at + size] for at in range(0, len(data), size)]


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 13, 64, 100, 4096, 32768, len(STREAM)])
def test_the_quick_parser_hands_on_what_nats_py_does(size: int) -> None:
    """Catches the quick parse of ``MSG``/``HMSG`` differing from nats-py's: a field
    taken from the wrong place (a reply where there is none), headers given for a
    message that has none or ``b""`` for ``None``, a payload that holds ``\\r\\n`` or
    a command's text cut short, a message or a line split between two reads lost or
    handed on twice, or the other commands (``INFO``, ``PING``, ``-ERR``...) skipped
    or handed on out of order. Reads of every size from one byte to the whole."""
    reads = cut(STREAM, size)
    ours = handed_on(quick, reads)
    assert ours == handed_on(nats_py, reads)
    messages = [seen for seen in ours if seen[0] == "msg"]
    assert len(messages) == 10
    assert ("ping",) in ours
    assert ("err", "'stale connection'") in ours
    assert messages[2][5] == b"NATS/1.0\r\nNats-Msg-Id: 01\r\n\r\n"
    assert messages[4][4] == b"\r\nMSG fake 1 3\r\nxyz\r\n\x00\xff"
    assert ("headers type", bytes) in ours


def test_the_quick_parser_finishes_a_message_nats_py_began() -> None:
    """Catches a connection's parser, swapped while nats-py's was in the middle of a
    message (the reader runs from the moment the client connects), losing it or
    taking its payload for a command."""
    middle = STREAM.index(b"hello") + 2

    def swapped_midway(reads: list[bytes]) -> Seen:
        client = Recorder()

        async def feed() -> None:
            await client._ps.parse(reads[0])
            wire.parse_quickly(client)  # type: ignore[arg-type]
            assert type(client._ps) is not Parser
            for read in reads[1:]:
                await client._ps.parse(read)

        asyncio.run(feed())
        return client.seen

    reads = [STREAM[:middle], *cut(STREAM[middle:], 9)]
    assert swapped_midway(reads) == handed_on(nats_py, reads)


def test_a_reset_drops_what_the_quick_parser_held() -> None:
    """Catches a reconnect's ``reset`` leaving half a message of the old connection to
    be completed by the new one's bytes."""
    client = Recorder()
    wire.parse_quickly(client)  # type: ignore[arg-type]
    fresh = b"MSG after.reset 1 2\r\nok\r\n"

    async def feed() -> None:
        await client._ps.parse(b"MSG before 1 10\r\nhalf")
        client._ps.reset()
        await client._ps.parse(fresh)

    asyncio.run(feed())
    assert client.seen == [("msg", 1, b"after.reset", b"", b"ok", None)]


def outcome(parser_of: Callable[[Recorder], None], reads: list[bytes]) -> object:
    """What was handed on, or the error the parse raised."""
    try:
        return handed_on(parser_of, reads)
    except Exception as error:
        return (type(error), str(error))


@pytest.mark.parametrize(
    "line",
    [
        b"MSG a b 3\r\nabc\r\n",
        b"MSG a 1 x\r\nabc\r\n",
        b"HMSG a 1 r x 3\r\nabc\r\n",
        b"BOGUS\r\n",
        b"HMSG a 1 9 3\r\nabc\r\n",  # headers longer than the whole: nats-py takes it
        b"MSG a 1 +3\r\nabc\r\n",
    ],
)
def test_a_malformed_command_fares_as_it_does_with_nats_py(line: bytes) -> None:
    """Catches the quick parser raising what nats-py's reader does not expect (a
    ``ValueError`` from a non-numeric field would end the reader without a word) or
    taking a line nats-py refuses: it gives such a line to nats-py's own parse."""
    reads = [b"MSG ok 1 2\r\nok\r\n" + line]
    theirs = outcome(nats_py, reads)
    assert outcome(quick, reads) == theirs
    if b"HMSG a 1 9" not in line:
        assert theirs == (ProtocolError, "nats: protocol error")


async def test_every_connection_tocsin_makes_parses_quickly(nats_url: str) -> None:
    """Catches ``connection.connect`` (serve, router, deliver) left on nats-py's
    parser, and a message through JetStream not arriving whole on it."""
    nc = await connection.connect(nats_url, "test-quick-parser")
    js = nc.jetstream()
    with contextlib.suppress(NotFoundError):  # this test's stream, from a run before
        await js.delete_stream("QUICK_PARSER")
    try:
        assert type(nc._ps) is not Parser
        await js.add_stream(name="QUICK_PARSER", subjects=["quick.parser"])
        payload = bytes(range(256)) * 200
        ack = await js.publish("quick.parser", payload, headers={"Nats-Msg-Id": "one"})
        sub = await js.pull_subscribe("quick.parser", "reader", stream="QUICK_PARSER")
        [msg] = await sub.fetch(1, timeout=5)
        assert (msg.data, msg.headers, msg.metadata.sequence.stream) == (
            payload,
            {"Nats-Msg-Id": "one"},
            ack.seq,
        )
    finally:
        with contextlib.suppress(NotFoundError):
            await js.delete_stream("QUICK_PARSER")
        await nc.close()
