"""nats-py's protocol parser against ``tocsin.bus.wire``'s quick one, per message.

Every message a tocsin process receives from NATS (an inbound event, a PubAck, a work
item, an outcome, an ack of a pull) is cut out of the bytes its client reads by the
client's protocol parser, then handed to ``_process_msg``. This times that cut alone,
in-process and without a broker, for the shapes W1 sends each process:

- ``MSG``: a message without headers and with a reply subject, as JetStream delivers a
  published alert to the router's pull (the reply is its ``$JS.ACK`` subject) and as a
  PubAck comes back to a publisher's inbox (its ``{"stream":…,"seq":…}``);
- ``HMSG``: a message with headers, as a work item reaches the delivery child and an
  outcome the recorder (``Nats-Msg-Id`` and ``traceparent``).

``--messages`` of each shape, back to back, are fed to a fresh parser in reads of
32 KiB (nats-py's read size); ``_process_msg`` only counts them. The figure is the wall
time of the whole feed divided by the messages (one thread, nothing else to wait on, so
wall is CPU); each is the best of ``--repeat`` feeds, and ``--rounds`` rounds alternate
the two parsers. A W1 event crosses three parses in ``tocsin serve`` (its inbound
``MSG``, its work item's PubAck ``MSG``, its outcome's ``HMSG``) and two in the delivery
child (the work item's ``HMSG``, its outcome's PubAck ``MSG``).

Run: .venv/bin/python bench/wire_parser.py [--messages 20000] [--rounds 3] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)  # the repository, not bench/

from nats.protocol.parser import Parser

from tocsin.bus import wire

READ = 32768  # nats-py's DEFAULT_BUFFER_SIZE: what its reader asks of the socket at a time
PAYLOAD = (
    b'{"type":"disk_full","severity":"critical","summary":"disk 1 full on db-17",'
    b'"source":"node-exporter","labels":{"host":"db-17","service":"db","env":"prod"},'
    b'"details":{"used_percent":97.5}}'
)
HEADERS = (
    b"NATS/1.0\r\nNats-Msg-Id: 0193a5c2d4e6f8a1b2c3\r\n"
    b"traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n"
)


def inbound(n: int) -> bytes:
    """``MSG``: an alert as JetStream delivers it to the router's pull."""
    reply = b"$JS.ACK.TOCSIN_IN.router.1.%d.%d.1733450000000000000.0" % (n, n)
    return b"MSG alerts.disk 7 %s %d\r\n%s\r\n" % (reply, len(PAYLOAD), PAYLOAD)


def puback(n: int) -> bytes:
    """``MSG``: a PubAck to a publisher's inbox."""
    body = b'{"stream":"TOCSIN_WORK","seq":%d}' % n
    return b"MSG _INBOX.Xq3bZ9.%d 9 %d\r\n%s\r\n" % (n, len(body), body)


def work_item(n: int) -> bytes:
    """``HMSG``: a work item as JetStream delivers it to the delivery child's pull."""
    reply = b"$JS.ACK.TOCSIN_WORK.deliver-hook.1.%d.%d.1733450000000000000.0" % (n, n)
    total = len(HEADERS) + len(PAYLOAD)
    head = b"HMSG tocsin.work.hook 3 %s %d %d\r\n" % (reply, len(HEADERS), total)
    return head + HEADERS + PAYLOAD + b"\r\n"


class Counting:
    """The client a parser hands messages to: it only counts them."""

    def __init__(self) -> None:
        self.messages = 0
        self._ps = Parser(self)

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None
    ) -> None:
        self.messages += 1


async def feed(quick: bool, reads: list[bytes], expected: int) -> float:
    """Seconds to parse ``reads`` with a fresh parser of either kind."""
    client = Counting()
    if quick:
        wire.parse_quickly(client)  # type: ignore[arg-type]
    parse = client._ps.parse
    started = time.perf_counter()
    for read in reads:
        await parse(read)
    took = time.perf_counter() - started
    if client.messages != expected:
        raise SystemExit(f"parsed {client.messages} of {expected} messages")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    n = args.messages
    shapes = {
        "MSG (an inbound alert)": inbound,
        "MSG (a PubAck)": puback,
        "HMSG (a work item)": work_item,
    }
    figures: dict[tuple[str, bool], list[float]] = {}

    async def run() -> None:
        for _ in range(args.rounds):
            for name, make in shapes.items():
                stream = b"".join(make(i) for i in range(n))
                reads = [stream[at : at + READ] for at in range(0, len(stream), READ)]
                for quick in (False, True):
                    best = min([await feed(quick, reads, n) for _ in range(args.repeat)])
                    figures.setdefault((name, quick), []).append(best / n * 1e6)

    asyncio.run(run())
    print(f"us a message, median (min-max) of {args.rounds} rounds, each the best of {args.repeat}")
    for name in shapes:
        theirs, ours = figures[(name, False)], figures[(name, True)]
        mid, low, high = statistics.median(theirs), min(theirs), max(theirs)
        quick = f"{statistics.median(ours):5.2f} ({min(ours):.2f}-{max(ours):.2f})"
        print(f"  {name:<24} nats-py {mid:5.2f} ({low:.2f}-{high:.2f})   quick {quick}")
    print("command: .venv/bin/python bench/wire_parser.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
