"""The shared record of the latest notification each receiver accepted per fingerprint:
a JetStream key-value bucket (``subjects.DELIVERED_SEQ_BUCKET``, created with the
streams), read before each send and raised after each successful one, so that every
delivery worker process sees what the others delivered (``core/policy/order.py``
decides; this module only reads and writes).

The record is only ever raised: a write is a compare-and-set on the revision read, and
a worker that loses the race reads again and writes only if it is still later. When the
bucket cannot be reached, a send goes ahead (the log still tells what was sent, and at
least once beats never): the record protects order, not delivery.
"""

from __future__ import annotations

import logging

from nats.aio.client import Client as NATS
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from tocsin.core.policy import order
from tocsin.core.subjects import DELIVERED_SEQ_BUCKET

log = logging.getLogger("tocsin.delivery")

RAISE_TRIES = 10  # compare-and-set rounds lost to other workers before giving up
KV_TIMEOUT = 5.0  # seconds for one key-value request


class DeliveredSeq:
    """Reads and raises one bucket's records; the bucket is looked up on first use."""

    def __init__(self, nc: NATS) -> None:
        self._js = nc.jetstream(timeout=KV_TIMEOUT)
        self._kv: KeyValue | None = None

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            self._kv = await self._js.key_value(DELIVERED_SEQ_BUCKET)
        return self._kv

    async def _read(self, key: str) -> tuple[order.Latest | None, int | None]:
        """The record under ``key`` and its revision; ``(None, None)`` when there is none."""
        kv = await self._bucket()
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:  # never written, or deleted
            return None, None
        return (order.decode(entry.value) if entry.value else None), entry.revision

    async def latest(self, receiver: str, fingerprint: str) -> order.Latest | None:
        """The latest notification ``receiver`` accepted for ``fingerprint``; ``None``
        when there is none or the bucket does not answer (logged)."""
        try:
            return (await self._read(order.key(receiver, fingerprint)))[0]
        except Exception as error:
            log.warning(
                "cannot read which notification %s last accepted (%s: %s); sending without"
                " the ordering check",
                receiver,
                type(error).__name__,
                error,
                extra={"receiver": receiver},
            )
            return None

    async def raise_to(self, receiver: str, fingerprint: str, delivered: order.Latest) -> None:
        """Record that ``receiver`` accepted ``delivered``, unless it holds a later one."""
        key = order.key(receiver, fingerprint)
        try:
            for _ in range(RAISE_TRIES):
                current, revision = await self._read(key)
                new = order.raised(current, delivered)
                if new is None:
                    return
                kv = await self._bucket()
                try:
                    if revision is None:
                        await kv.create(key, order.encode(new))
                    else:
                        await kv.update(key, order.encode(new), last=revision)
                    return
                except KeyWrongLastSequenceError:
                    continue  # another worker wrote in between: read again
            log.warning(
                "gave up recording %s as the latest accepted by %s: the record kept changing",
                delivered.notification_id,
                receiver,
                extra={"receiver": receiver, "notification_id": delivered.notification_id},
            )
        except Exception as error:
            log.warning(
                "cannot record %s as the latest accepted by %s (%s: %s): a late retry of an"
                " older notification of its fingerprint may still be sent",
                delivered.notification_id,
                receiver,
                type(error).__name__,
                error,
                extra={"receiver": receiver, "notification_id": delivered.notification_id},
            )
