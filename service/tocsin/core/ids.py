"""Every identifier tocsin makes: alert, notification, silence and event ids
(``new_id``), and a ``traceparent`` that continues a trace whose span is not at hand.

Ids are not derived from what they name (they follow the clock and a counter), so
decisions take ``new_id`` as an argument: the core stays deterministic under test with a
counter in its place."""

from __future__ import annotations

import os
import random
import time


def traceparent_for(trace_id: str) -> str:
    """A ``traceparent`` continuing ``trace_id`` with a fresh span id (for a message
    whose span is not at hand)."""
    return f"00-{trace_id}-{random.getrandbits(64) or 1:016x}-01"


_COUNTER_MASK = (1 << 32) - 1
_MS_MASK = (1 << 48) - 1
_counter = int.from_bytes(os.urandom(4), "big")


def new_id() -> str:
    """20 hex digits: the wall time in milliseconds (48 bits), then a per-process
    counter (32 bits, started at a random value). Unique within a process (it would take
    2**32 ids in one millisecond to repeat one) and, across processes, unless two draw
    the same counter value in the same millisecond.

    Ordered by time, not random, for the log's sake: the indexes on alert ids and
    notification ids (``events_alert_id``, ``events_routed_notification``) then take each
    new id at their right-hand end, so a commit dirties a few index pages instead of one
    per id. With random ids the alert-id index alone cost the router ~15 us per event in
    a storm of distinct alerts (``bench/parts_router.py``, issue #20)."""
    global _counter
    _counter = (_counter + 1) & _COUNTER_MASK
    return f"{time.time_ns() // 1_000_000 & _MS_MASK:012x}{_counter:08x}"
