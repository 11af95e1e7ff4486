"""The ``tocsin`` command: what a tocsin process sets before it imports anything else,
then the command line (``cli.main``).

nats-py imports aiohttp at import when it is installed, for its WebSocket transport
(``ws://``, ``wss://`` NATS URLs). tocsin does not depend on aiohttp (its HTTP client
is ``channels/http1.py``), but an environment may hold it for something else (bench/'s
tools do), and imported for nothing it costs ~11 MiB of RSS in every tocsin process:
``tocsin serve`` and each of its children (measured: importing what a delivery child
imports, 45.7 MiB with it, 34.9 MiB without). So a process whose NATS URL, from
``--nats-url`` or ``TOCSIN_NATS_URL`` (the only places one is given), names no
WebSocket server tells Python aiohttp is not there; one that does imports it as
nats-py needs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

WEBSOCKET_SCHEMES = ("ws://", "wss://")


def websocket_wanted(argv: Sequence[str], environ: Mapping[str, str]) -> bool:
    """Whether a NATS URL this process was given names a WebSocket server (a comma list
    of URLs, or ``--nats-url=...``, included)."""
    given = [*argv, environ.get("TOCSIN_NATS_URL", "")]
    return any(scheme in text.lower() for text in given for scheme in WEBSOCKET_SCHEMES)


def main() -> int:
    if not websocket_wanted(sys.argv[1:], os.environ):
        sys.modules.setdefault("aiohttp", None)  # type: ignore[arg-type]
    from tocsin.cli import main as command_line

    return command_line()


if __name__ == "__main__":  # ``python -m tocsin.entry``: how ``tocsin serve`` starts its children
    raise SystemExit(main())
