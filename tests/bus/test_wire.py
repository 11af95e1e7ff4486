"""``wire.header_lines``: a handed-over message's headers parsed as nats-py parses them
(issue #20), compared with nats-py's own ``_process_headers`` on the blocks tocsin
gets and on the odd ones a publisher could send. No broker: the parse is pure."""

from __future__ import annotations

import asyncio

from nats.aio.client import Client

from tocsin.bus import wire

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
