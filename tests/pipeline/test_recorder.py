"""The recorder on the processor shell, against the real nats-server and a real SQLite
file: each outcome on TOCSIN_OUT becomes one fact, recorded once however often it is
delivered, and acked only once it is committed (DESIGN.md invariants 3 and 4)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest

from tests.support import make_notification, wait_until
from tocsin.bus.puller import Puller
from tocsin.bus.streams import (
    ensure_consumer,
    ensure_outcomes,
    ensure_streams,
    recorder_consumer_config,
)
from tocsin.core.contracts import DeliveryAttemptFailed as ContractAttemptFailed
from tocsin.core.contracts import DeliveryDeadLettered as ContractDeadLettered
from tocsin.core.contracts import DeliverySucceeded
from tocsin.core.contracts import DeliverySuperseded as ContractSuperseded
from tocsin.core.subjects import (
    DELIVERED,
    DELIVERY_FAILED,
    RECORDER_CONSUMER,
    STREAM_OUT,
    attempts_subject,
    superseded_subject,
)
from tocsin.pipeline.binding import bind_stream
from tocsin.pipeline.recorder import Recorder
from tocsin.store.eventlog import LogWriteError, db_path
from tocsin.store.ledger import Input, Ledger, load_state


class OutcomeRig:
    """A recorder wired to real NATS and a real log, driven by hand."""

    def __init__(self, nc: Any, js: Any, ledger: Ledger) -> None:
        self.nc, self.js, self.ledger = nc, js, ledger
        self.recorder = Recorder(nc, ledger)
        self.puller = Puller(nc, STREAM_OUT, RECORDER_CONSUMER, 100, prefetch=False)

    async def publish_delivered(self, notification_id: str) -> None:
        outcome = DeliverySucceeded(
            **msgspec.structs.asdict(make_notification(notification_id=notification_id)),
            channel="webhook",
            attempts=1,
            delivered_at="2026-11-23T12:00:00.000000Z",
            log_seq=1,
        )
        await self.js.publish(DELIVERED, msgspec.json.encode(outcome))

    async def take(self, count: int) -> list[Any]:
        msgs: list[Any] = []

        async def got_all() -> bool:
            msgs.extend(await self.puller.take(limit=count - len(msgs), wait=0.2))
            return len(msgs) == count

        await wait_until(got_all, what=f"{count} outcome messages")
        return msgs

    async def unacked(self) -> int:
        info = await self.js.consumer_info(STREAM_OUT, RECORDER_CONSUMER)
        return int(info.num_ack_pending) + int(info.num_pending)

    def recorded(self) -> list[tuple[str, int]]:
        """(kind, outcome seq) of every logged row, in log order."""
        with sqlite3.connect(self.ledger.path) as conn:
            return list(conn.execute("SELECT kind, out_seq FROM events ORDER BY seq"))


@pytest.fixture
async def outcomes(nats_url: str, tmp_path: Path) -> AsyncIterator[OutcomeRig]:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_streams(js)
    await ensure_consumer(js, STREAM_OUT, recorder_consumer_config())
    ledger = await Ledger.open(db_path(tmp_path), busy_timeout_ms=100)
    rig = OutcomeRig(nc, js, ledger)
    await rig.puller.start()
    yield rig
    await rig.puller.stop()
    await ledger.close()
    await nc.close()


async def test_a_redelivered_outcome_is_recorded_once_and_acked(outcomes: OutcomeRig) -> None:
    await outcomes.publish_delivered("n1")
    msgs = await outcomes.take(1)
    await outcomes.recorder.handle(msgs)
    await outcomes.recorder.handle(msgs)  # the same message again, as after a lost ack

    assert outcomes.recorded() == [("delivery.succeeded", 1)]
    await wait_until(_all_acked(outcomes), what="the outcome acked")
    assert outcomes.ledger.state == load_state(outcomes.ledger.path)


async def test_an_unreadable_outcome_is_skipped_and_acked_with_its_batch(
    outcomes: OutcomeRig,
) -> None:
    await outcomes.js.publish(DELIVERED, b"not an outcome")
    await outcomes.publish_delivered("n2")
    await outcomes.recorder.handle(await outcomes.take(2))

    assert outcomes.recorded() == [("delivery.succeeded", 2)]
    await wait_until(_all_acked(outcomes), what="both outcomes acked")


async def test_an_outcome_is_not_acked_before_its_commit(outcomes: OutcomeRig) -> None:
    await outcomes.publish_delivered("n3")
    msgs = await outcomes.take(1)
    blocker = sqlite3.connect(outcomes.ledger.path)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(LogWriteError):
            await outcomes.recorder.handle(msgs)
        assert await outcomes.unacked() == 1
    finally:
        blocker.rollback()
        blocker.close()
    assert outcomes.recorded() == []

    await outcomes.recorder.handle(msgs)

    assert outcomes.recorded() == [("delivery.succeeded", 1)]
    await wait_until(_all_acked(outcomes), what="the outcome acked after its commit")


async def test_the_running_recorder_waits_out_a_refusing_log_and_loses_nothing(
    outcomes: OutcomeRig,
) -> None:
    """Pipelined batches (more outcomes than one batch) while the log refuses writes:
    nothing is acked; once it accepts them, every outcome is logged once, in order."""
    await outcomes.puller.stop()  # the running recorder pulls for itself
    count = 700
    await asyncio.gather(*(outcomes.publish_delivered(f"n{i}") for i in range(count)))
    blocker = sqlite3.connect(outcomes.ledger.path)
    blocker.execute("BEGIN EXCLUSIVE")
    stop = asyncio.Event()
    running = asyncio.create_task(outcomes.recorder.run(stop))
    try:
        await wait_until(lambda: outcomes.ledger.problem is not None, what="a refused commit")
        assert outcomes.ledger.event_log.last_seq == 0
        assert await outcomes.unacked() == count
    finally:
        blocker.rollback()
        blocker.close()
    await wait_until(_all_acked(outcomes), 30, "every outcome acked")
    stop.set()
    await running

    assert outcomes.recorded() == [("delivery.succeeded", seq) for seq in range(1, count + 1)]
    assert outcomes.ledger.problem is None
    assert outcomes.ledger.state == load_state(outcomes.ledger.path)


async def test_outcomes_that_trickle_in_within_the_linger_share_one_commit(
    outcomes: OutcomeRig,
) -> None:
    """At a steady rate each outcome arrives alone; a running recorder that has pulled
    one waits its ``linger`` for more before it commits, so two outcomes a moment
    apart share one commit (one append time) instead of paying a commit and an fsync
    each. Catches a recorder that commits every outcome of a trickle alone (issue #20,
    W3's CPU per event): without the linger the first is committed before the second
    is published, and their append times differ."""
    await outcomes.puller.stop()  # the running recorder pulls for itself
    recorder = Recorder(outcomes.nc, outcomes.ledger, linger=1.0)
    stop = asyncio.Event()
    running = asyncio.create_task(recorder.run(stop))

    async def first_pulled() -> bool:
        info = await outcomes.js.consumer_info(STREAM_OUT, RECORDER_CONSUMER)
        return int(info.delivered.stream_seq) == 1

    try:
        await outcomes.publish_delivered("n1")
        await wait_until(first_pulled, what="the first outcome in the recorder's pull")
        await outcomes.publish_delivered("n2")
        await wait_until(_all_acked(outcomes), what="both outcomes recorded and acked")
    finally:
        stop.set()
        await running

    with sqlite3.connect(outcomes.ledger.path) as conn:
        rows = list(conn.execute("SELECT kind, out_seq, ts FROM events ORDER BY seq"))
    assert [(kind, seq) for kind, seq, _ in rows] == [
        ("delivery.succeeded", 1),
        ("delivery.succeeded", 2),
    ]
    assert len({ts for _, _, ts in rows}) == 1


def _all_acked(rig: OutcomeRig) -> Any:
    async def check() -> bool:
        return await rig.unacked() == 0

    return check


async def test_an_outcome_stream_recreated_under_the_recorder_is_bound_before_its_outcomes(
    outcomes: OutcomeRig,
) -> None:
    """Another process deletes TOCSIN_OUT and creates it again with the recorder's
    consumer while the recorder pulls: the new stream's first outcome, at seq 1, looks
    like a redelivery of the logged seq 1. The recorder asks the stream, finds it new,
    and binds the log to it in the same commit as that outcome's fact."""
    await bind_stream(outcomes.js, outcomes.ledger, Input.OUTCOMES)
    await outcomes.publish_delivered("n1")
    await outcomes.recorder.handle(await outcomes.take(1))

    await outcomes.js.delete_stream(STREAM_OUT)
    await ensure_outcomes(outcomes.js)
    await outcomes.publish_delivered("n2")
    await outcomes.recorder.handle(await outcomes.take(1))

    assert outcomes.recorded() == [
        ("stream.bound", None),
        ("delivery.succeeded", 1),
        ("stream.bound", None),
        ("delivery.succeeded", 2),
    ]
    assert outcomes.ledger.state.outbound_offset == 1
    assert outcomes.ledger.state == load_state(outcomes.ledger.path)


async def test_the_rows_of_each_kind_of_outcome_are_as_they_were(outcomes: OutcomeRig) -> None:
    """Pins the recorder's rows byte for byte (kind, the event's JSON, the columns
    derived from it, the outcome's position) for one outcome of each kind, as the
    delivery worker encodes them: catches an optimisation of the recorder's decode,
    of ``outcome_event`` or of the rows (issue #20) that changes what the log holds."""
    nid, failed_at = "n-golden", "2026-11-23T12:00:01.500000Z"
    body = msgspec.structs.asdict(make_notification(notification_id=nid))
    where = {key: body[key] for key in ("notification_id", "receiver", "alert_id", "fingerprint")}
    published = [
        (
            attempts_subject("r"),
            ContractAttemptFailed(
                **where, channel="webhook", attempt=1, error="HTTP 503", status_code=503,
                retry_in_seconds=1.5, failed_at=failed_at, log_seq=7, trace_id="ab" * 16,
            ),
        ),
        (
            DELIVERED,
            DeliverySucceeded(
                **body, channel="webhook", attempts=2, delivered_at="2026-11-23T12:00:03.25Z",
                log_seq=7, trace_id="ab" * 16, status_code=200,
            ),
        ),
        (
            DELIVERY_FAILED,
            ContractDeadLettered(
                **body, channel="webhook", attempts=3, failed_at=failed_at, log_seq=7,
                error="HTTP 410", last_status_code=410,
            ),
        ),
        (
            superseded_subject("r"),
            ContractSuperseded(
                **where, channel="webhook", attempts=1, superseded_by="n-later",
                superseded_by_seq=9, superseded_at=failed_at, log_seq=7, group_key="g1",
            ),
        ),
    ]  # fmt: skip
    for subject, outcome in published:
        await outcomes.js.publish(subject, msgspec.json.encode(outcome))
    await outcomes.recorder.handle(await outcomes.take(len(published)))

    with sqlite3.connect(outcomes.ledger.path) as conn:
        columns = "kind, data, in_seq, out_seq, fingerprint, alert_id"
        rows = list(conn.execute(f"SELECT {columns} FROM events ORDER BY seq"))
    common = b'"notification_id":"n-golden","receiver":"r","alert_id":"a1","fingerprint":"fp1"'
    assert rows == [
        (
            "delivery.attempt_failed",
            b'{"kind":"delivery.attempt_failed",' + common + b',"channel":"webhook","attempt":1,'
            b'"error":"HTTP 503","status_code":503,"retry_in_seconds":1.5,'
            b'"at":1795435201500000,"trace_id":"' + b"ab" * 16 + b'"}',
            None, 1, "fp1", "a1",
        ),
        (
            "delivery.succeeded",
            b'{"kind":"delivery.succeeded",' + common + b',"channel":"webhook","attempts":2,'
            b'"at":1795435203250000,"status_code":200,"trace_id":"' + b"ab" * 16 + b'"}',
            None, 2, "fp1", "a1",
        ),
        (
            "delivery.dead_lettered",
            b'{"kind":"delivery.dead_lettered",' + common + b',"channel":"webhook",'
            b'"attempts":3,"error":"HTTP 410","status_code":410,"at":1795435201500000}',
            None, 3, "fp1", "a1",
        ),
        (
            "delivery.superseded",
            b'{"kind":"delivery.superseded",' + common + b',"channel":"webhook","attempts":1,'
            b'"log_seq":7,"superseded_by":"n-later","superseded_by_seq":9,'
            b'"at":1795435201500000,"group_key":"g1"}',
            None, 4, "fp1", "a1",
        ),
    ]  # fmt: skip
