"""The shared record of the latest notification each receiver accepted per fingerprint:
a JetStream key-value bucket (``subjects.DELIVERED_SEQ_BUCKET``, created with the
streams), read before each send and raised after each successful one, so that every
delivery worker process sees what the others delivered (``core/policy/order.py``
decides; this module only reads and writes).

The record is only ever raised: a write is a compare-and-set on the revision read, and
a worker that loses the race reads again and writes only if it is still later. When the
bucket cannot be reached, a send goes ahead (the log still tells what was sent, and at
least once beats never): the record protects order, not delivery.

A worker that ``follow``s its receiver keeps the receiver's records in memory, fed by an
ordered consumer of the bucket (every worker's writes reach every other within
milliseconds of their PubAck), so the check before a send is a dict lookup, not a
request, and a raise is one compare-and-set publish (``write``) that the caller batches
with its outcomes: a read and a CAS request per notification cost ~200 us of CPU, most
of delivery's work. Until the consumer has caught up with the bucket, and whenever a
write's compare-and-set loses, the requests of ``latest`` and ``raise_to`` are used.
"""

from __future__ import annotations

import contextlib
import logging

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import api as js_api
from nats.js.client import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from tocsin.bus.puller import num_pending, stream_seq
from tocsin.core.outbound import Outbound
from tocsin.core.policy import order
from tocsin.core.subjects import (
    DELIVERED_SEQ_BUCKET,
    DELIVERED_SEQ_PREFIX,
    EXPECTED_LAST_SUBJECT_SEQ,
)

log = logging.getLogger("tocsin.delivery")

# Records of the followed receiver kept in memory (~250 bytes each): past it the oldest
# are forgotten, and a key not in memory is asked for again (``latest``).
RECORDS_KEPT = 50_000
RAISE_TRIES = 10  # compare-and-set rounds lost to other workers before giving up
KV_TIMEOUT = 5.0  # seconds for one key-value request


class DeliveredSeq:
    """Reads and raises one bucket's records; the bucket is looked up on first use."""

    def __init__(self, nc: NATS) -> None:
        self._js = nc.jetstream(timeout=KV_TIMEOUT)
        self._kv: KeyValue | None = None
        # key -> (record, its revision), for the keys of the receiver followed.
        self._known: dict[str, tuple[order.Latest | None, int]] = {}
        self._following: JetStreamContext.PushSubscription | None = None
        self._caught_up = False
        self._complete = True  # no record forgotten: a key not in memory has none

    async def follow(self, receiver: str) -> None:
        """Keep ``receiver``'s records in memory from now on (``stop`` ends it). A
        bucket that cannot be reached is logged, and the requests stay in use."""
        try:
            await self._bucket()
            self._following = await self._js.subscribe(
                f"{DELIVERED_SEQ_PREFIX}{receiver}.>",
                stream=f"KV_{DELIVERED_SEQ_BUCKET}",  # named: no lookup by subject
                cb=self._on_record,
                ordered_consumer=True,
                deliver_policy=js_api.DeliverPolicy.LAST_PER_SUBJECT,
            )
            info = await self._following.consumer_info()
        except Exception as error:
            log.warning(
                "cannot follow the records of %s (%s: %s); reading each one instead",
                receiver,
                type(error).__name__,
                error,
                extra={"receiver": receiver},
            )
            return
        if not info.num_pending and (info.delivered is None or not info.delivered.stream_seq):
            self._caught_up = True  # nothing to catch up with (else the last one says)

    async def stop(self) -> None:
        if self._following is not None:
            with contextlib.suppress(Exception):  # closing anyway
                await self._following.unsubscribe()
            self._following = None
        self._caught_up = False
        self._known.clear()
        self._complete = True

    async def _on_record(self, msg: Msg) -> None:
        key = msg.subject[len(DELIVERED_SEQ_PREFIX) :]
        if msg.headers and msg.headers.get("KV-Operation") in ("DEL", "PURGE"):
            self._known.pop(key, None)
        else:
            self._known.pop(key, None)  # the newest last, so the oldest go first
            self._known[key] = (order.decode(msg.data), stream_seq(msg))
            if len(self._known) > RECORDS_KEPT:
                del self._known[next(iter(self._known))]
                self._complete = False
        if not self._caught_up and num_pending(msg) == 0:
            self._caught_up = True

    def _followed(self, key: str) -> tuple[order.Latest | None, int] | None:
        """The record under ``key`` as followed: ``(None, 0)`` when there is none;
        ``None`` when not followed (not yet caught up, or not following)."""
        if not self._caught_up or self._following is None:
            return None
        found = self._known.get(key)
        if found is None and not self._complete:
            return None  # perhaps forgotten: ask
        return found or (None, 0)

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
        key = order.key(receiver, fingerprint)
        followed = self._followed(key)
        if followed is not None:
            return followed[0]
        try:
            return (await self._read(key))[0]
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

    def known(self, receiver: str, fingerprint: str) -> tuple[bool, order.Latest | None]:
        """``(True, record)`` from memory while the records are followed and caught up
        (``None``: there is none); ``(False, None)`` when ``latest`` must ask."""
        if not self._known and self._complete and self.following():
            # The receiver has no record at all (a storm of distinct alerts raises
            # none): none of this key either, without hashing it (~1 us a send).
            return True, None
        followed = self._followed(order.key(receiver, fingerprint))
        return (False, None) if followed is None else (True, followed[0])

    def write(self, receiver: str, fingerprint: str, delivered: order.Latest) -> Outbound | None:
        """The compare-and-set publish that records ``delivered`` against the record as
        followed; ``None`` when the record holds it or a later one already, or when the
        record is not in memory (``known`` says which; then ``raise_to``). A publish
        JetStream refuses (another worker wrote first) is for ``raise_to`` too."""
        key = order.key(receiver, fingerprint)
        followed = self._followed(key)
        if followed is None:
            return None
        new = order.raised(followed[0], delivered)
        if new is None:
            return None
        return Outbound(
            DELIVERED_SEQ_PREFIX + key,
            order.encode(new),
            "",  # no Nats-Msg-Id: the compare-and-set refuses a repeat
            headers={EXPECTED_LAST_SUBJECT_SEQ: str(followed[1])},
        )

    def following(self) -> bool:
        """Whether ``write`` can be used (the records are followed and caught up)."""
        return self._caught_up and self._following is not None

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
