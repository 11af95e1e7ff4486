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


_EPOCH_MS = 1_577_836_800_000  # 2020-01-01T00:00:00Z: 42 bits of ms last until 2159
_TAG_BITS = 24
_COUNT_BITS = 14
_COUNT_MAX = (1 << _COUNT_BITS) - 1


class IdSource:
    """Ids of one process: 42 bits of milliseconds, 24 bits of this process's random
    tag, 14 bits of a counter within the millisecond (20 hex digits in all).

    Ordered by time, not random, for the log's sake: the indexes on alert ids and
    notification ids (``events_alert_id``, ``events_notification_id``) then take each
    new id at their right-hand end, so a commit dirties a few index pages instead of one
    per id. With random ids the alert-id index alone cost the router ~15 us per event in
    a storm of distinct alerts (``bench/parts_router.py``, issue #20).

    Unique within a process by construction: a millisecond that runs out of counter
    borrows the next one, and a clock that steps back is not followed. Across processes
    (partition routers, delivery workers, a restarted service) two ids can be equal only
    if their processes drew the same tag (1 in 16.7 million a pair) and the same counter
    in the same millisecond: a notification id is a ``Nats-Msg-Id``, and an equal one
    within JetStream's duplicate window would be dropped, so a counter started at random
    in a 32-bit space (once tried here) is not enough."""

    def __init__(self, tag: int) -> None:
        self._tag = tag & ((1 << _TAG_BITS) - 1)
        self._ms = 0
        self._count = 0

    def next(self, now_ms: int) -> str:
        ms = now_ms - _EPOCH_MS
        if ms > self._ms:
            self._ms, self._count = ms, 0
        elif self._count < _COUNT_MAX:
            self._count += 1
        else:
            self._ms, self._count = self._ms + 1, 0
        value = (self._ms << (_TAG_BITS + _COUNT_BITS)) | (self._tag << _COUNT_BITS) | self._count
        return f"{value:020x}"


def _fresh_source() -> IdSource:
    return IdSource(int.from_bytes(os.urandom(3), "big"))


_source = _fresh_source()


def _new_source_after_fork() -> None:
    global _source
    _source = _fresh_source()  # a forked child must not share its parent's tag


os.register_at_fork(after_in_child=_new_source_after_fork)


def new_id() -> str:
    """A new id: see ``IdSource``."""
    return _source.next(time.time_ns() // 1_000_000)
