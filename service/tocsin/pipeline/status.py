"""The router's answer to ``tocsin.control.delivery-status``: what the log says of one
notification, once the log holds every outcome stored before the question was asked.

A delivery worker asks before sending an item that may have been sent already. The
projection alone would lag: outcomes reach the log through TOCSIN_OUT and the recorder,
which after a broker failover was measured 10 s behind. So unless the projection
already says ``delivered`` or ``dead``, the answer waits (at most ``CATCH_UP_PATIENCE``)
until the recorder has committed every outcome up to TOCSIN_OUT's last seq, read after
the question arrived, and only then reads the projection. The recorder acks an outcome
only after its fact is committed, so its consumer's ack floor is a safe measure.

The request is a notification id; the reply is one of ``REPLIES``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from nats.aio.msg import Msg
from nats.js import JetStreamContext

from tocsin.core.policy.failover import BEHIND, UNKNOWN
from tocsin.core.state import SETTLED
from tocsin.core.subjects import DELIVERY_STATUS, RECORDER_CONSUMER, STREAM_OUT
from tocsin.store.ledger import Ledger

log = logging.getLogger("tocsin.status")


CATCH_UP_PATIENCE = 1.5  # seconds; below the worker's STATUS_PATIENCE (2 s)

CATCH_UP_POLL = 0.05  # seconds between looks at the recorder's progress


T = TypeVar("T")


def recorded_through(last_out_seq: int, ack_floor: int, pending: int, ack_pending: int) -> bool:
    """Whether the recorder has committed every outcome stored up to ``last_out_seq``,
    judged from its consumer's info taken after ``last_out_seq`` was read: its ack floor
    reached that seq, or it had nothing left to deliver or to ack (when the stream ends
    with messages the recorder does not take, such as ``alerts.rejected``, its ack floor
    may stay below the stream's last seq)."""
    return ack_floor >= last_out_seq or (pending == 0 and ack_pending == 0)


class Fresh(Generic[T]):
    """One ``fetch`` shared by the callers waiting at the same time, never a stale one:
    each caller gets the result of a fetch that began after it called."""

    def __init__(self, fetch: Callable[[], Awaitable[T]]) -> None:
        self._fetch = fetch
        self._running: asyncio.Task[T] | None = None
        self._next: asyncio.Task[T] | None = None  # not begun: callers may join it

    async def get(self) -> T:
        if self._next is None:
            self._next = asyncio.create_task(self._run(self._running))
            self._next.add_done_callback(_retrieve)
        return await asyncio.shield(self._next)

    async def _run(self, before: asyncio.Task[T] | None) -> T:
        if before is not None:
            await asyncio.wait([before])
        me = asyncio.current_task()
        self._next = None  # from here on a caller waits for the fetch after this one
        self._running = me
        try:
            return await self._fetch()
        finally:
            if self._running is me:
                self._running = None


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark a shared fetch's failure as seen: its callers may all have stopped waiting."""
    if not task.cancelled():
        task.exception()


class OutcomesRecorded:
    """Waits until the recorder has committed what TOCSIN_OUT holds."""

    def __init__(self, js: JetStreamContext, consumer: str = RECORDER_CONSUMER) -> None:
        """``consumer``: the recorder's (a partition's recorder has its own)."""
        self._js = js
        self._consumer = consumer
        self._last = Fresh(self._last_out_seq)
        self._progress = Fresh(self._recorder_progress)

    async def _last_out_seq(self) -> int:
        info = await self._js.stream_info(STREAM_OUT)
        return int(info.state.last_seq)

    async def _recorder_progress(self) -> tuple[int, int, int]:
        info = await self._js.consumer_info(STREAM_OUT, self._consumer)
        floor = info.ack_floor.stream_seq if info.ack_floor is not None else 0
        return int(floor or 0), int(info.num_pending or 0), int(info.num_ack_pending or 0)

    async def wait(self, patience: float) -> bool:
        """``True`` once every outcome stored before this call is committed to the log;
        ``False`` if that cannot be known within ``patience`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + patience
        try:
            last = await asyncio.wait_for(self._last.get(), patience)
            while True:
                remaining = deadline - loop.time()
                progress = await asyncio.wait_for(self._progress.get(), max(remaining, 0.01))
                if recorded_through(last, *progress):
                    return True
                if loop.time() + CATCH_UP_POLL > deadline:
                    return False
                await asyncio.sleep(CATCH_UP_POLL)
        except Exception as error:  # no answer from JetStream (election, timeout, away)
            log.debug("recorder progress unknown: %s: %s", type(error).__name__, error)
            return False


def from_projection(ledger: Ledger, notification_id: str) -> str:
    delivery = ledger.state.deliveries.get(notification_id)
    return delivery.status if delivery else UNKNOWN


async def answer_delivery_status(
    nc: Any,
    ledger: Ledger,
    js: JetStreamContext | None = None,
    consumer: str = RECORDER_CONSUMER,
    subject: str = DELIVERY_STATUS,
) -> None:
    """Serve ``tocsin.control.delivery-status``. Each question is answered in its own
    task: one waiting for the recorder must not hold up the others. ``consumer``: the
    recorder's; ``subject``: a partition's router answers on its own
    (``subjects.delivery_status_subject``)."""
    recorded = OutcomesRecorded(js or nc.jetstream(timeout=CATCH_UP_PATIENCE), consumer)
    answering: set[asyncio.Task[None]] = set()

    async def answer(msg: Msg) -> None:
        nid = msg.data.decode(errors="replace")
        reply = from_projection(ledger, nid)
        if reply not in SETTLED:
            caught_up = await recorded.wait(CATCH_UP_PATIENCE)
            reply = from_projection(ledger, nid) if caught_up else BEHIND
        try:
            await msg.respond(reply.encode())
        except Exception as error:  # the connection closed meanwhile: nobody to tell
            log.debug("delivery status of %s not sent: %s", nid, error)

    async def receive(msg: Msg) -> None:
        task = asyncio.create_task(answer(msg))
        answering.add(task)
        task.add_done_callback(answering.discard)

    await nc.subscribe(subject, queue="tocsin-router", cb=receive)
