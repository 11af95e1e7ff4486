"""The log's chain head, anchored in NATS (``core.anchor``; stream TOCSIN_ANCHOR).

``Anchor`` is the writer's side: a background task that publishes the newest head at
most once every ``interval`` seconds while commits go on, never on the commit path (a
commit only sets a flag), and once more at stop. ``anchored_head`` is the reader's side:
what ``tocsin verify --against-nats`` compares the file with.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from tocsin.core.anchor import Head, decode_head, encode_head
from tocsin.core.subjects import ANCHOR, STREAM_ANCHOR

log = logging.getLogger("tocsin.anchor")

PUBLISH_TIMEOUT = 5.0  # seconds to wait for the PubAck of a head


class Anchor:
    """Publishes ``head()`` (the log's last committed row, or None for an empty log) to
    ``subjects.ANCHOR``: once at start, then after commits (``committed``), at most once
    every ``interval`` seconds, and at stop (``publish_now``). A head NATS did not take
    is tried again on the next round; the log never waits for it."""

    def __init__(
        self,
        js: JetStreamContext,
        head: Callable[[], Head | None],
        interval: float = 1.0,
        subject: str = ANCHOR,
    ) -> None:
        """``subject``: where the head goes (a partition's log has its own,
        ``subjects.anchor_subject``)."""
        self._js = js
        self._subject = subject
        self._head = head
        self.interval = interval
        self.published: Head | None = None  # the last head NATS acknowledged
        self._changed = asyncio.Event()
        self._failing = False

    def committed(self, *_: object) -> None:
        """A commit happened: the head has moved. A ledger listener (called per commit,
        so it only sets a flag)."""
        self._changed.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop``: publish the head when it moved, then rest ``interval``. The
        head at stop is published by ``publish_now``, once every writer has stopped."""
        while not stop.is_set():
            self._changed.clear()
            await self.publish_now()
            await _first(stop.wait(), asyncio.sleep(self.interval))
            await _first(stop.wait(), self._changed.wait())

    async def publish_now(self) -> None:
        """Publish the current head unless NATS already has it; a failure is logged
        (once per outage) and left for the next round."""
        head = self._head()
        if head is None or head == self.published:
            return
        try:
            await self._js.publish(self._subject, encode_head(head), timeout=PUBLISH_TIMEOUT)
        except (NatsError, TimeoutError) as error:
            if not self._failing:
                log.warning("chain head seq %d not anchored in NATS yet: %r", head.seq, error)
            self._failing = True
            return
        if self._failing:
            log.info("chain head anchored in NATS again (seq %d)", head.seq)
        self._failing = False
        self.published = head


async def _first(*waits: Coroutine[Any, Any, Any]) -> None:
    """Wait for the first of ``waits`` to finish; cancel the rest."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def anchored_head(js: JetStreamContext, subject: str = ANCHOR) -> Head | None:
    """The head last anchored in NATS (on ``subject``), or None when there is none;
    ``ValueError`` when what is there is not a head."""
    try:
        message = await js.get_last_msg(STREAM_ANCHOR, subject)
    except NotFoundError:
        return None
    return decode_head(message.data or b"")
