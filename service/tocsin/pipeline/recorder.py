"""The recorder: delivery outcomes on TOCSIN_OUT -> facts in the log.

Workers stay stateless and publish outcomes; this consumer is how those outcomes reach
the single writer of the log. Its loop is the processor shell's (``processor``): the
outcome's position (its stream seq past the offset of the TOCSIN_OUT incarnation the
log is bound to, see ``binding``) is committed with the fact, so a redelivered outcome
is recognised and acked without being counted twice, and an outcome of a re-created
TOCSIN_OUT is never taken for an old one.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from tocsin.bus.puller import stream_seq
from tocsin.bus.streams import ensure_outcomes
from tocsin.core import events as ev
from tocsin.core.contracts import DeliveryAttemptFailed, DeliverySuperseded
from tocsin.core.partition import is_ours
from tocsin.core.state import State
from tocsin.core.subjects import (
    DELIVERED,
    DELIVERY_FAILED,
    STREAM_OUT,
    SUPERSEDED_PREFIX,
    recorder_consumer,
)
from tocsin.core.times import parse_rfc3339
from tocsin.observability.telemetry import Metrics
from tocsin.pipeline import binding
from tocsin.pipeline.processor import Processor, Pulled, Rider, Setup, Step
from tocsin.store.ledger import Input, Ledger

log = logging.getLogger("tocsin.recorder")

BATCH = 500
LINGER = 0.05
"""Seconds a pull that has its first outcomes waits for more (``Puller``). At a steady
rate each outcome arrives alone, and a batch of one pays a whole commit (an fsync)
and the processor's per-batch work: at 200 outcomes/s, 20 ms made batches of ~4 and
cut ``tocsin serve``'s CPU per event by about a quarter (docs/performance.md, "W3: CPU
per event at a steady rate"); at W1's ~5,500 outcomes/s, 50 ms instead of 20 makes
batches of ~275, not ~110, and cut the recorder's CPU per outcome 35.8 -> 30.0 us
(``bench/parts_recorder.py --rate 5500``, docs/performance.md, "The recorder's cost
per outcome"). Only the outcome's row waits: the notification was sent already, and
its worker's PubAck does not wait for the recorder."""

COMMIT_WAIT = 0.05
"""Seconds a batch of outcomes may wait, once decided, for the router's next batch, to
be committed in its transaction (``EventLog.append_rows``): at W3's steady rate a
recorder's own commit held the log's thread ~0.7 ms, and a router's commit queued
meanwhile waited behind it and its ``fsync`` (docs/performance.md, "W3's tail"). Only
the outcome's row waits, and for at most this long more than ``LINGER``; its message
is acked once it is committed, as before."""

COMMIT_WAIT_BELOW = 32
"""Only a batch of fewer outcomes than this waits (``COMMIT_WAIT``): a trickle's. A
storm's batches (~275 outcomes in W1) are committed the moment they are decided, as
before, so they never lengthen the router's commits."""


class _FirstAlert(msgspec.Struct):
    alert_id: str
    fingerprint: str


_first_alert = msgspec.json.Decoder(_FirstAlert)


class _Outcome(msgspec.Struct, kw_only=True):
    """The fields of an ``alerts.delivered`` / ``alerts.delivery_failed`` message the
    log records, for an alert's notification and a group's alike (a group's alert
    fields are its first alert's; the rest of the body is not decoded at all: a
    group's listed alerts stay encoded, ``msgspec.Raw`` each, and only the first is
    read, 0.39 -> 0.24 us a listed alert on the router's core, issue #20's W5)."""

    notification_id: str
    receiver: str
    channel: str
    attempts: int
    alert_id: str = ""
    fingerprint: str = ""
    group_key: str | None = None
    alerts: list[msgspec.Raw] = []
    delivered_at: str = ""
    failed_at: str = ""
    error: str = ""
    status_code: int | None = None
    last_status_code: int | None = None
    trace_id: str | None = None

    def identity(self) -> tuple[str, str]:
        if self.group_key is not None and self.alerts:
            first = _first_alert.decode(self.alerts[0])
            return first.alert_id, first.fingerprint
        return self.alert_id, self.fingerprint


_outcome = msgspec.json.Decoder(_Outcome)
_attempt = msgspec.json.Decoder(DeliveryAttemptFailed)
_superseded = msgspec.json.Decoder(DeliverySuperseded)


def outcome_event(subject: str, data: bytes) -> ev.Event:
    """The log fact for one outcome message; raises ``msgspec.DecodeError`` if malformed."""
    if subject == DELIVERED:
        d = _outcome.decode(data)
        alert_id, fingerprint = d.identity()
        return ev.DeliverySucceeded(
            notification_id=d.notification_id,
            receiver=d.receiver,
            alert_id=alert_id,
            fingerprint=fingerprint,
            channel=d.channel,
            attempts=d.attempts,
            at=parse_rfc3339(d.delivered_at),
            status_code=d.status_code,
            trace_id=d.trace_id,
            group_key=d.group_key,
        )
    if subject == DELIVERY_FAILED:
        f = _outcome.decode(data)
        alert_id, fingerprint = f.identity()
        return ev.DeliveryDeadLettered(
            notification_id=f.notification_id,
            receiver=f.receiver,
            alert_id=alert_id,
            fingerprint=fingerprint,
            channel=f.channel,
            attempts=f.attempts,
            error=f.error,
            status_code=f.last_status_code,
            at=parse_rfc3339(f.failed_at),
            trace_id=f.trace_id,
            group_key=f.group_key,
        )
    if subject.startswith(SUPERSEDED_PREFIX):
        s = _superseded.decode(data)
        return ev.DeliverySuperseded(
            notification_id=s.notification_id,
            receiver=s.receiver,
            alert_id=s.alert_id,
            fingerprint=s.fingerprint,
            channel=s.channel,
            attempts=s.attempts,
            log_seq=s.log_seq,
            superseded_by=s.superseded_by,
            superseded_by_seq=s.superseded_by_seq,
            at=parse_rfc3339(s.superseded_at),
            trace_id=s.trace_id,
            group_key=s.group_key,
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
        group_key=a.group_key,
    )


class Recorder(Step[None]):
    """The processor step of TOCSIN_OUT: each outcome message becomes one fact; there
    is nothing to publish. An unreadable outcome is logged and skipped (acked with its
    batch): sending it again would not make it readable."""

    name = "recorder"
    input = Input.OUTCOMES

    def __init__(
        self,
        nc: NATS,
        ledger: Ledger,
        metrics: Metrics | None = None,
        setup: Setup | None = None,
        rider: Rider | None = None,
        partition: int | None = None,
        linger: float = LINGER,
        commit_wait: float = COMMIT_WAIT,
    ) -> None:
        """``setup`` creates TOCSIN_OUT and the recorder's consumer should the consumer
        vanish (by default ``ensure_outcomes`` with one replica); ``rider``: the
        outbox's watermark, which outcome batches carry too. A ``partition``'s recorder
        has its own consumer and logs only the outcomes of its router's notifications
        (``partition.is_ours``): the others belong to another partition's log.
        ``linger``: how long a pull waits for more outcomes once it has one
        (``LINGER``); ``commit_wait``: how long its rows may wait to share the next
        commit (``COMMIT_WAIT``)."""
        self._partition = partition
        self._processor = Processor(
            nc,
            ledger,
            self,
            stream=STREAM_OUT,
            consumer=recorder_consumer(partition),
            batch_size=BATCH,
            # serve's one recorder: TOCSIN_OUT made again checked fresh (``repair_stale``).
            setup=setup or functools.partial(ensure_outcomes, repair_stale=True),
            metrics=metrics,
            rider=rider,
            linger=linger,
            commit_wait=commit_wait,
            commit_wait_below=COMMIT_WAIT_BELOW,
        )

    @property
    def missing(self) -> str | None:
        """Why the recorder cannot pull: its consumer is gone (for /readyz)."""
        return self._processor.missing

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` (pipelined: see ``processor``)."""
        await self._processor.run(stop)

    async def handle(self, msgs: Sequence[Msg]) -> None:
        """Record one batch of outcomes end to end (decide, commit, ack)."""
        await self._processor.handle(msgs)

    def begin(self, msgs: Sequence[Msg], state: State) -> tuple[list[int], None]:
        offset = binding.bound(state, self.input)[1]  # see events.StreamBound
        return [offset + stream_seq(m) for m in msgs], None

    def facts(self, pulled: Pulled[None], msg: Msg, position: int, at: int) -> list[ev.Event]:
        if not is_ours(msg.headers, self._partition):
            return []
        try:
            return [outcome_event(msg.subject, msg.data)]
        except (msgspec.DecodeError, ValueError) as error:
            log.error(
                "unreadable outcome on %s (seq %d) skipped: %s", msg.subject, stream_seq(msg), error
            )
            return []
