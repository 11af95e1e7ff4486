"""DESIGN.md section 2 invariants, each with a test that fails if it is violated.

The router runs in-process against the real nats-server and a real SQLite file, so a
test can hand it the same inbound messages twice or lock the database under it.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest

from tests.support import HttpSink, Rig, log_events, wait_until
from tocsin.bus.streams import (
    ensure_consumer,
    ensure_inbound,
    router_consumer_config,
    stream_configs,
)
from tocsin.core import events as ev
from tocsin.core.subjects import MSG_ID, STREAM_IN, STREAM_OUT
from tocsin.core.times import now_us
from tocsin.pipeline.binding import bind_stream
from tocsin.store.chain import GENESIS, chain_hash
from tocsin.store.eventlog import EventLog, Fact, LogWriteError
from tocsin.store.ledger import Input, load_state

MINUTE_US = 60 * 1_000_000


def alert(**fields: Any) -> bytes:
    body = {"type": "queue_stuck", "severity": "critical", "summary": "queue stuck"}
    return msgspec.json.encode({**body, **fields})


async def test_a_redelivered_message_is_recognised_and_not_counted_twice(rig: Rig) -> None:
    """Invariant 4: the inbound seq committed with the facts makes redelivery harmless,
    and the work item re-published for it carries the same Nats-Msg-Id, so JetStream
    drops the copy."""
    await rig.js.publish("alerts.in.svc", alert())
    msgs = await rig.take(1)
    await rig.router.handle(msgs)
    facts_after_first = rig.ledger.event_log.last_seq
    assert rig.ledger.state.counters.received == 1
    assert await rig.work_items() == 1

    await rig.router.handle(msgs)  # the same message again, as after a lost ack

    assert rig.ledger.event_log.last_seq == facts_after_first
    assert rig.ledger.state.counters.received == 1
    assert await rig.work_items() == 1
    assert rig.ledger.state == load_state(rig.ledger.path)


async def test_an_event_id_sent_again_past_jetstreams_window_counts_once(rig: Rig) -> None:
    """Invariant 4 past JetStream's 2-minute duplicate window (issue #16 item 14): the
    same ``event_id`` 3 minutes later in log time, under another ``Nats-Msg-Id``, is
    recorded and suppressed (``duplicate_event``), not counted nor routed; 25 h later
    it counts again. Without the key the second copy was counted and, in a new bucket,
    a reminder."""
    clock = [now_us()]
    rig.ledger.clock = lambda: clock[0]
    body = alert(event_id="evt-1")
    await rig.js.publish("alerts.in.svc", body, headers={MSG_ID: "first"})
    await rig.router.handle(await rig.take(1))
    clock[0] += 3 * MINUTE_US
    await rig.js.publish("alerts.in.svc", body, headers={MSG_ID: "second"})
    await rig.router.handle(await rig.take(1))
    state = rig.ledger.state
    [counted] = state.alerts.values()
    assert (counted.occurrences, counted.suppressed_count) == (1, 0)
    assert (state.counters.received, state.counters.suppressed) == (2, 1)
    assert await rig.work_items() == 1
    [repeat] = log_events(rig.ledger.path, "alert.suppressed")
    assert (repeat["cause"], repeat["alert_id"]) == ("duplicate_event", "")

    clock[0] += 25 * 60 * MINUTE_US
    await rig.js.publish("alerts.in.svc", body, headers={MSG_ID: "third"})
    await rig.router.handle(await rig.take(1))
    assert counted.occurrences == 2
    assert await rig.work_items() == 2  # a reminder: a day later is news again
    assert rig.ledger.state == load_state(rig.ledger.path)


async def test_nothing_leaves_and_nothing_is_acked_before_the_commit(rig: Rig) -> None:
    """Invariants 2 and 3: with the log locked, no work item or rejection is published
    and the inbound message stays unacked; once the log accepts writes, all follows."""
    rejections = await rig.nc.subscribe("alerts.rejected")
    await rig.js.publish("alerts.in.svc", alert())
    await rig.js.publish("alerts.in.svc", b"garbage")
    msgs = await rig.take(2)
    blocker = sqlite3.connect(rig.ledger.path)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(LogWriteError):
            await rig.router.handle(msgs)
        assert await rig.work_items() == 0
        assert await rig.unacked() == 2
        assert rig.ledger.problem is not None
        assert "locked" in rig.ledger.problem
        assert rig.ledger.state.last_seq == rig.ledger.event_log.last_seq
        with pytest.raises(nats.errors.TimeoutError):
            await rejections.next_msg(timeout=0.2)
    finally:
        blocker.rollback()
        blocker.close()

    await rig.router.handle(msgs)

    assert rig.ledger.problem is None
    assert await rig.work_items() == 1
    assert (await rejections.next_msg(timeout=5)).headers["Nats-Msg-Id"].startswith("rejected:")
    await wait_until(_no_unacked(rig), what="inbound acked after commit")
    assert rig.ledger.state == load_state(rig.ledger.path)


def _no_unacked(rig: Rig) -> Any:
    async def check() -> bool:
        return await rig.unacked() == 0

    return check


async def test_a_failed_commit_under_the_pipelined_router_loses_nothing_and_keeps_order(
    rig: Rig,
) -> None:
    """Invariants 2-4 with pipelined commits: while the log is locked, every batch
    fails (those decided on top of a failed one included) and nothing is acked; once it
    accepts writes, every message is logged once, in the order published."""
    count = 1500  # more than one router batch
    await asyncio.gather(
        *(
            rig.js.publish("alerts.in.svc", alert(summary=f"n {i}", labels={"i": str(i % 7)}))
            for i in range(count)
        )
    )
    blocker = sqlite3.connect(rig.ledger.path)
    blocker.execute("BEGIN EXCLUSIVE")
    stop = asyncio.Event()
    running = asyncio.create_task(rig.router.run(stop))
    try:
        await wait_until(lambda: rig.ledger.problem is not None, 10, "a failed commit")
        assert await rig.work_items() == 0
        assert rig.ledger.event_log.last_seq == 0
    finally:
        blocker.rollback()
        blocker.close()
    try:
        await wait_until(lambda: rig.ledger.state.counters.received == count, 30, "all logged")
        await wait_until(_no_unacked(rig), 30, "every inbound message acked")
    finally:
        stop.set()
        await running
    with sqlite3.connect(rig.ledger.path) as conn:
        summaries = [
            row[0]
            for row in conn.execute(
                "SELECT json_extract(CAST(data AS TEXT), '$.summary') FROM events"
                " WHERE kind = 'alert.received' ORDER BY seq"
            )
        ]
    assert summaries == [f"n {i}" for i in range(count)]
    assert rig.ledger.problem is None
    assert await rig.work_items() == 7
    assert rig.ledger.state == load_state(rig.ledger.path)


async def test_the_log_refuses_update_and_delete(tmp_path: Path) -> None:
    """Invariant 1: rows only ever arrive; the table's triggers refuse changes."""
    log = await EventLog.open(tmp_path / "log.db")
    await log.append([Fact(ev.AlertResolveIgnored(fingerprint="f"))], ts=1)
    await log.close()
    with sqlite3.connect(tmp_path / "log.db") as conn:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("UPDATE events SET kind = 'x'")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("DELETE FROM events")
        assert conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 1


async def test_each_row_is_hash_chained_to_the_previous(tmp_path: Path) -> None:
    log = await EventLog.open(tmp_path / "log.db")
    events = [ev.AlertResolveIgnored(fingerprint=str(i)) for i in range(3)]
    await log.append([Fact(e) for e in events[:2]], ts=10)
    await log.append([Fact(events[2])], ts=20)
    await log.close()
    with sqlite3.connect(tmp_path / "log.db") as conn:
        rows = conn.execute("SELECT seq, ts, kind, data, hash FROM events ORDER BY seq").fetchall()
    previous = GENESIS
    for seq, ts, kind, data, digest in rows:
        previous = chain_hash(previous, seq, ts, kind, data)
        assert digest == previous
    reopened = await EventLog.open(tmp_path / "log.db")
    assert reopened.last_seq == 3
    await reopened.close()


async def test_a_failed_append_commits_nothing_and_keeps_the_position(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    log = await EventLog.open(path, busy_timeout_ms=50)
    await log.append([Fact(ev.AlertResolveIgnored(fingerprint="a"), in_seq=1)], ts=1)
    blocker = sqlite3.connect(path)
    blocker.execute("BEGIN EXCLUSIVE")
    with pytest.raises(LogWriteError):
        await log.append([Fact(ev.AlertResolveIgnored(fingerprint="b"), in_seq=2)], ts=2)
    blocker.rollback()
    blocker.close()
    assert (log.last_seq, log.max_in_seq) == (1, 1)
    assert await log.append([Fact(ev.AlertResolveIgnored(fingerprint="c"), in_seq=3)], ts=3) == [2]
    found = await log.facts_of_inbound([1, 2, 3])
    assert sorted(found) == [1, 3]
    await log.close()


async def test_a_recreated_inbound_stream_does_not_hide_new_alerts(
    nats_url: str, tmp_path: Path
) -> None:
    """Deleting and re-creating TOCSIN_IN restarts its seqs at 1. New messages must not
    be taken for redeliveries of the old ones with the same seqs (silently dropped)."""
    from tests.support import Tocsin, publish

    data = tmp_path / "data"
    first = await Tocsin(data, nats_url).start()
    for i in range(3):
        await publish(
            nats_url,
            "alerts.in.svc",
            {"type": "before", "severity": "info", "summary": f"old {i}", "labels": {"i": str(i)}},
        )
    await wait_until(lambda: first.count("alert.received") == 3, what="3 old events")
    await first.stop()

    nc = await nats.connect(nats_url)
    await nc.jetstream().delete_stream(STREAM_IN)
    await nc.close()

    second = await Tocsin(data, nats_url).start()
    try:
        for i in range(2):
            await publish(
                nats_url,
                "alerts.in.svc",
                {
                    "type": "after",
                    "severity": "info",
                    "summary": f"new {i}",
                    "labels": {"i": str(i)},
                },
            )
        await wait_until(lambda: second.count("alert.received") == 5, 10, "the 2 new events logged")
        summaries = sorted(e["summary"] for e in second.events("alert.received"))
        assert summaries == ["new 0", "new 1", "old 0", "old 1", "old 2"]
        await second.assert_live_state_is_the_log()
    finally:
        await second.stop()


async def test_an_inbound_stream_recreated_under_the_router_is_bound_before_its_messages(
    rig: Rig,
) -> None:
    """Another process deletes TOCSIN_IN and creates it again with the router's
    consumer (as a starting `tocsin deliver` does) while the router pulls: the new
    stream's first message, at seq 1, looks like a redelivery of the logged seq 1. The
    router asks the stream, finds it new, and binds the log to it in the same commit as
    that message's facts."""
    await bind_stream(rig.js, rig.ledger, Input.INBOUND)
    await rig.js.publish("alerts.in.svc", alert(summary="old", labels={"n": "1"}))
    await rig.router.handle(await rig.take(1))

    await rig.js.delete_stream(STREAM_IN)
    await ensure_inbound(rig.js)
    await rig.js.publish("alerts.in.svc", alert(summary="new", labels={"n": "2"}))
    await rig.router.handle(await rig.take(1))

    assert rig.ledger.state.counters.received == 2
    assert [b.offset for b in _bindings(rig.ledger.path, STREAM_IN)] == [0, 1]
    assert await rig.work_items() == 2
    assert rig.ledger.state == load_state(rig.ledger.path)


def _bindings(path: Path, stream: str) -> list[ev.StreamBound]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT data FROM events WHERE kind = 'stream.bound' ORDER BY seq")
        facts = [msgspec.json.decode(row[0], type=ev.StreamBound) for row in rows]
    return [fact for fact in facts if fact.stream == stream]


async def test_a_recreated_outcome_stream_does_not_hide_new_outcomes(
    nats_url: str, sink: HttpSink, tmp_path: Path
) -> None:
    """Deleting TOCSIN_OUT (and tocsin creating it again at its next start) restarts
    its seqs at 1: the next outcome must not be taken for a redelivery of the logged
    outcome with the same seq (silently dropped). The log is bound to the new stream,
    past every outcome logged before."""
    from tests.support import Tocsin, event, publish, webhook_config

    data = tmp_path / "data"
    toml = webhook_config(sink.url)
    first = await Tocsin(data, nats_url, toml).start()
    try:
        await publish(nats_url, "alerts.in.svc", event(labels={"host": "db1"}))
        await wait_until(lambda: first.count("delivery.succeeded") == 1, 15, "1 outcome logged")
    finally:
        await first.stop()

    nc = await nats.connect(nats_url)
    await nc.jetstream().delete_stream(STREAM_OUT)
    await nc.close()

    second = await Tocsin(data, nats_url, toml).start()
    try:
        await publish(nats_url, "alerts.in.svc", event(labels={"host": "db2"}))
        await wait_until(lambda: len(sink.requests) == 2, 15, "the second alert sent")
        await wait_until(
            lambda: second.count("delivery.succeeded") == 2, 15, "the second outcome logged"
        )
        delivered = {e["notification_id"] for e in second.events("delivery.succeeded")}
        assert delivered == {e["notification_id"] for e in second.events("alert.routed")}
        outbound = [e for e in second.events("stream.bound") if e["stream"] == STREAM_OUT]
        assert [b["offset"] for b in outbound] == [0, 1]
        await second.assert_live_state_is_the_log()
    finally:
        await second.stop()


async def test_a_full_inbound_stream_refuses_publishers_and_drops_nothing(nats_url: str) -> None:
    """Invariant 5: critical alerts are never discarded by stream limits. TOCSIN_IN is
    created from tocsin's own config (here with a tiny byte cap): once full, a publish
    is refused (the publisher knows) and every stored alert is still there."""
    import dataclasses

    from nats.js.errors import APIError

    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    [inbound] = [c for c in stream_configs() if c.name == STREAM_IN]
    await js.add_stream(dataclasses.replace(inbound, max_bytes=2048))
    await ensure_consumer(js, STREAM_IN, router_consumer_config())
    stored = 0
    refusal: APIError | None = None
    for _ in range(100):
        try:
            await js.publish("alerts.in.svc", alert(summary="disk full"))
        except APIError as error:
            refusal = error
            break
        stored += 1
    assert refusal is not None
    assert "maximum bytes" in str(refusal)
    assert stored > 0
    assert (await js.stream_info(STREAM_IN)).state.messages == stored
    assert (await js.stream_info(STREAM_IN)).state.first_seq == 1  # nothing dropped
    await nc.close()
