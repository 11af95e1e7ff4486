"""The recorder: delivery outcomes on TOCSIN_OUT -> facts in the log.

Workers stay stateless and publish outcomes; this consumer is how those outcomes reach
the single writer of the log. The outcome stream seq is committed with the fact, so a
redelivered outcome is recognised and acked without being counted twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from tocsin.bus.puller import Puller, ack_all, stream_seq
from tocsin.core import events as ev
from tocsin.core.contracts import AttemptFailed, Delivered, DeliveryFailed
from tocsin.core.policy.backoff import Backoff
from tocsin.core.subjects import DELIVERED, DELIVERY_FAILED, RECORDER_CONSUMER, STREAM_OUT
from tocsin.core.times import parse_rfc3339
from tocsin.store.eventlog import LogWriteError
from tocsin.store.ledger import Ledger

log = logging.getLogger("tocsin.recorder")

BATCH = 500

_delivered = msgspec.json.Decoder(Delivered)
_failed = msgspec.json.Decoder(DeliveryFailed)
_attempt = msgspec.json.Decoder(AttemptFailed)


def outcome_event(subject: str, data: bytes) -> ev.Event:
    """The log fact for one outcome message; raises ``msgspec.DecodeError`` if malformed."""
    if subject == DELIVERED:
        d = _delivered.decode(data)
        return ev.DeliverySucceeded(
            notification_id=d.notification_id,
            receiver=d.receiver,
            alert_id=d.alert_id,
            fingerprint=d.fingerprint,
            channel=d.channel,
            attempts=d.attempts,
            at=parse_rfc3339(d.delivered_at),
            trace_id=d.trace_id,
        )
    if subject == DELIVERY_FAILED:
        f = _failed.decode(data)
        return ev.DeliveryDeadLettered(
            notification_id=f.notification_id,
            receiver=f.receiver,
            alert_id=f.alert_id,
            fingerprint=f.fingerprint,
            channel=f.channel,
            attempts=f.attempts,
            error=f.error,
            status_code=f.last_status_code,
            at=parse_rfc3339(f.failed_at),
            trace_id=f.trace_id,
        )
    a = _attempt.decode(data)
    return ev.DeliveryAttemptFailed(
        notification_id=a.notification_id,
        receiver=a.receiver,
        alert_id=a.alert_id,
        fingerprint=a.fingerprint,
        channel=a.channel,
        attempt=a.attempt,
        error=a.error,
        status_code=a.status_code,
        retry_in_seconds=a.retry_in_seconds,
        at=parse_rfc3339(a.failed_at),
        trace_id=a.trace_id,
    )


class Recorder:
    def __init__(self, nc: NATS, ledger: Ledger) -> None:
        self._nc = nc
        self._ledger = ledger

    async def run(self, stop: asyncio.Event) -> None:
        puller = Puller(self._nc, STREAM_OUT, RECORDER_CONSUMER, BATCH, prefetch=True)
        await puller.start()
        try:
            while not stop.is_set():
                msgs = await puller.take(wait=0.5)
                backoff = Backoff(first=0.2, ceiling=5.0)
                while msgs and not stop.is_set():
                    try:
                        await self.handle(msgs)
                        break
                    except LogWriteError:
                        await asyncio.sleep(backoff.next())
        finally:
            await puller.stop()

    async def handle(self, msgs: Sequence[Msg]) -> None:
        ledger = self._ledger
        seqs = [stream_seq(m) for m in msgs]
        maybe_logged = [s for s in seqs if s <= ledger.log.max_out_seq]
        seen = set(await ledger.log.facts_of_outcomes(maybe_logged)) if maybe_logged else set()
        async with ledger.batch() as batch:
            for msg, out_seq in zip(msgs, seqs, strict=True):
                if out_seq in seen:
                    continue
                seen.add(out_seq)
                try:
                    event = outcome_event(msg.subject, msg.data)
                except (msgspec.DecodeError, ValueError) as error:
                    log.error(
                        "unreadable outcome on %s (seq %d) skipped: %s", msg.subject, out_seq, error
                    )
                    continue
                batch.add(event, out_seq=out_seq)
        await ack_all(self._nc, msgs)
