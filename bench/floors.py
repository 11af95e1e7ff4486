"""The floor of W3's latency measured in the same run as W3 (issue #20: a target may be
reported unmet only with a measured floor of a part tocsin does not own, timed alone
next to tocsin's figure).

An alert that W3 times crosses, whatever tocsin does: JetStream into TOCSIN_IN (a
publish until a pull has it), a durable commit (its ``fsync``: the kernel's and the
disk's part), and JetStream into TOCSIN_WORK. Each is timed alone with a fresh
``nats-server`` and nothing else of tocsin's (``bench/ceiling_latency.py``'s hops), in
the run's data dir's file system. What they add up to is less than any alert can take:

- ``p50_ms``: the sum of the three hops' medians (the median of a sum of such
  independent, narrow parts is about the sum of their medians);
- ``p99_ms``: the largest of the three hops' 99th percentiles (a sum of parts that are
  never negative exceeds one part's 99th percentile at least 1% of the time: a lower
  bound, and a loose one).

W3's webhook POST is left out: tocsin's HTTP client is tocsin's choice.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from tests.support import NatsServer

from bench.ceiling_latency import ALERT, WORK_ITEM, Samples, fsync_alone, jetstream_hop

SAMPLES = 300  # per hop: ~1.5 s each at the pauses between samples


def summary(parts: list[Samples]) -> dict[str, Any]:
    """The floor's figures from its parts' samples (``p50_ms``, ``p99_ms``, each part's)."""
    return {
        "parts": {
            part.name.strip(): {"p50_ms": part.at(0.5), "p99_ms": part.at(0.99)} for part in parts
        },
        "p50_ms": sum(part.at(0.5) for part in parts),
        "p99_ms": max(part.at(0.99) for part in parts),
    }


async def w3_floor(n: int = SAMPLES) -> dict[str, Any]:
    """The three hops, ``n`` samples each, on a fresh ``nats-server`` of this machine."""
    with tempfile.TemporaryDirectory(prefix="tocsin-floor-") as name:
        tmp = Path(name)
        server = NatsServer(tmp / "js")
        server.start()
        try:
            inbound = await jetstream_hop(server.url, n, "IN", "alerts.in.bench", ALERT)
            durable = await fsync_alone(tmp, n, "fsync of a 4 KiB append")
            work = await jetstream_hop(server.url, n, "WORK", "work.hook", WORK_ITEM)
        finally:
            server.stop()
    return summary([inbound, durable, work])
