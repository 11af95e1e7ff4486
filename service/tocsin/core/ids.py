"""Every identifier tocsin makes: alert, notification, silence and event ids
(``new_id``), and a ``traceparent`` that continues a trace whose span is not at hand.

Ids are random, not derived, so decisions take ``new_id`` as an argument: the core stays
deterministic under test with a counter in its place."""

from __future__ import annotations

import os
import random


def traceparent_for(trace_id: str) -> str:
    """A ``traceparent`` continuing ``trace_id`` with a fresh span id (for a message
    whose span is not at hand)."""
    return f"00-{trace_id}-{random.getrandbits(64) or 1:016x}-01"


_ID_BYTES = 10
_random_pool = b""
_random_at = 0


def new_id() -> str:
    """20 hex digits from the OS's CSPRNG, as ``secrets.token_hex(10)``, but drawn from
    a pool refilled 10 KiB at a time: one ``getrandom`` call per thousand ids instead
    of one per id (two ids per new alert, on the router's hot path)."""
    global _random_pool, _random_at
    if _random_at >= len(_random_pool):
        _random_pool, _random_at = os.urandom(_ID_BYTES * 1024), 0
    _random_at += _ID_BYTES
    return _random_pool[_random_at - _ID_BYTES : _random_at].hex()
