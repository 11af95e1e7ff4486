"""Work for receivers no longer configured, found at start: dead-lettered, and their
delivery consumers deleted.

No worker takes ``tocsin.route.<receiver>`` once the receiver is gone from the config,
so its work items (a retry waiting on its backoff, a resolve queued before the change)
would stay in TOCSIN_WORK for ever, and its ``deliver-<receiver>`` consumer with them.
The router's process (``serve``, ``router``: the one whose config decides who is told)
dead-letters each such item with the reason ``receiver X is not in the configuration``
(on ``alerts.delivery_failed``, which the recorder logs), removes it from the stream,
then deletes the consumer. ``tocsin deliver`` processes never do: one started with
``--receiver R`` serves a part of the config, not all of it.

Items are read by stream seq (``get_msg``), not through the orphan consumer: an item a
dead worker held unacked would come back only after the consumer's ack wait. Each is
removed only after its dead letter was stored (PubAck); a crash in between publishes it
again under the same message id, which JetStream drops.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from tocsin.bus.publisher import Publisher
from tocsin.core.contracts import WorkItem
from tocsin.core.outbound import dead_letter, unconfigured
from tocsin.core.partition import carry_partition
from tocsin.core.subjects import ROUTE_PREFIX, STREAM_WORK, deliver_consumer, route_subject
from tocsin.core.times import now_us

log = logging.getLogger("tocsin.orphans")

_work_decoder = msgspec.json.Decoder(WorkItem)
CONSUMER_PREFIX = deliver_consumer("")


class OrphansNotCleared(Exception):
    """A dead letter could not be stored: the item stays, for the next start."""


async def orphaned_receivers(js: JetStreamContext, configured: Collection[str]) -> list[str]:
    """Receivers not in ``configured`` that TOCSIN_WORK still holds a delivery consumer
    or work items for."""
    found: set[str] = set()
    for consumer in await js.consumers_info(STREAM_WORK):
        name = consumer.name or ""
        if name.startswith(CONSUMER_PREFIX):
            found.add(name.removeprefix(CONSUMER_PREFIX))
    info = await js.stream_info(STREAM_WORK, subjects_filter=ROUTE_PREFIX + ">")
    found.update(subject.removeprefix(ROUTE_PREFIX) for subject in (info.state.subjects or {}))
    return sorted(found - set(configured))


async def clear_orphans(
    js: JetStreamContext, publisher: Publisher, configured: Collection[str]
) -> dict[str, int]:
    """Dead-letter the work items of every receiver not in ``configured`` and delete
    its consumer; returns the number dead-lettered per such receiver."""
    cleared: dict[str, int] = {}
    for receiver in await orphaned_receivers(js, configured):
        count = await _dead_letter_items(js, publisher, receiver)
        deleted = True
        try:
            await js.delete_consumer(STREAM_WORK, deliver_consumer(receiver))
        except NotFoundError:
            deleted = False
        log.warning(
            "receiver %s is not in the configuration: dead-lettered its %d queued"
            " notification(s)%s",
            receiver,
            count,
            f" and deleted its consumer {deliver_consumer(receiver)} of {STREAM_WORK}"
            if deleted
            else "",
            extra={"receiver": receiver},
        )
        cleared[receiver] = count
    return cleared


async def _dead_letter_items(js: JetStreamContext, publisher: Publisher, receiver: str) -> int:
    subject = route_subject(receiver)
    reason = unconfigured(receiver)
    count = 0
    seq = 1
    while True:
        try:
            msg = await js.get_msg(STREAM_WORK, seq=seq, subject=subject, next=True)
        except NotFoundError:
            return count
        seq = msg.seq or seq
        try:
            item = _work_decoder.decode(msg.data or b"")
        except msgspec.DecodeError as error:
            log.error("unreadable work item %d on %s removed: %s", seq, subject, error)
        else:
            # Its partition's recorder logs it (``partition.carry_partition``).
            letter = carry_partition(dead_letter(item, reason, now_us()), msg.headers)
            [stored] = await publisher.publish([letter])
            if not stored:
                raise OrphansNotCleared(
                    f"the dead letter of {item.body.notification_id} was not stored"
                )
            count += 1
        await js.delete_msg(STREAM_WORK, seq)
        seq += 1
