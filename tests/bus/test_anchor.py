"""The chain head anchored in NATS, and ``tocsin verify --against-nats`` / ``--head``
against it: the real service writing a real SQLite log, the real nats-server.

The hash chain alone proves only that the file agrees with itself: rewriting a row and
recomputing every hash after it, or deleting the last rows, leaves a chain that plain
``verify`` accepts. These tests do exactly that to a log whose writer anchored its
head, and show that the anchor catches both while an untouched log passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import nats
import pytest

from tests.support import HttpSink, Tocsin, publish, wait_until, webhook_config
from tocsin import cli
from tocsin.bus.anchor import Anchor, anchored_head
from tocsin.bus.streams import ensure_streams
from tocsin.core.anchor import Head, encode_head, head_of
from tocsin.core.subjects import ANCHOR, STREAM_ANCHOR
from tocsin.store.chain import GENESIS, chain_hash
from tocsin.store.eventlog import db_path


def alert(n: int) -> dict[str, Any]:
    return {
        "type": "disk_full",
        "severity": "warning",
        "summary": f"disk {n}",
        "labels": {"n": str(n)},
    }


async def verify(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``tocsin verify ARGS`` as the command runs it (its own event loop, in a thread)."""
    code = await asyncio.to_thread(cli.main, ["verify", *args])
    out, err = capsys.readouterr()
    return code, out, err


async def anchored(nats_url: str) -> Head | None:
    nc = await nats.connect(nats_url)
    try:
        return await anchored_head(nc.jetstream(timeout=10))
    finally:
        await nc.close()


async def run_and_stop(data_dir: Path, nats_url: str, sink: HttpSink, alerts: int) -> Head:
    """The service routes and delivers ``alerts`` alerts, then stops; returns the head it
    anchored, which is the log's last row."""
    service = await Tocsin(data_dir, nats_url, webhook_config(sink.url)).start()
    try:
        for n in range(alerts):
            await publish(nats_url, "alerts.in.db", alert(n))
        await wait_until(lambda: service.count("delivery.succeeded") == alerts, 30, "deliveries")
    finally:
        assert await service.stop() == 0
    head = await anchored(nats_url)
    assert head is not None
    with contextlib.closing(sqlite3.connect(db_path(data_dir))) as conn:
        seq, digest = conn.execute(
            "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1"
        ).fetchone()
    assert (head.seq, head.hash) == (seq, bytes(digest).hex()), "the head at stop is the last row"
    return head


def tamper(data_dir: Path, *statements: tuple[str, tuple[Any, ...]]) -> None:
    """Run SQL on the log with its append-only triggers dropped, as someone with the
    file would."""
    with contextlib.closing(sqlite3.connect(db_path(data_dir))) as conn, conn:
        conn.execute("DROP TRIGGER events_no_update")
        conn.execute("DROP TRIGGER events_no_delete")
        for sql, params in statements:
            conn.execute(sql, params)


async def test_an_untouched_log_passes_against_the_anchor_while_its_writer_runs(
    nats_url: str, data_dir: Path, sink: HttpSink, capsys: pytest.CaptureFixture[str]
) -> None:
    """The writer anchors its head after commits (the gauge follows it), and the file,
    possibly ahead of the anchor, passes ``--against-nats`` while the service runs."""
    service = await Tocsin(data_dir, nats_url, webhook_config(sink.url)).start()
    try:
        for n in range(3):
            await publish(nats_url, "alerts.in.db", alert(n))
        await wait_until(lambda: service.count("delivery.succeeded") == 3, 30, "deliveries")
        last = service.ledger().event_log.last_seq

        async def caught_up() -> bool:
            head = await anchored(nats_url)
            return head is not None and head.seq >= last

        await wait_until(caught_up, 10, "the head anchored after the deliveries")
        metrics = await service.metrics()
        assert metrics[("tocsin_log_anchored_seq", frozenset())] >= last
        code, out, err = await verify(
            capsys, "--data-dir", str(data_dir), "--nats-url", nats_url, "--against-nats"
        )
        assert code == 0, err
        assert "ok: the log holds the head of the anchor in NATS" in out
    finally:
        assert await service.stop() == 0


async def test_a_history_rewritten_with_its_chain_recomputed_fails_against_the_anchor(
    nats_url: str, data_dir: Path, sink: HttpSink, capsys: pytest.CaptureFixture[str]
) -> None:
    """Catches what the chain alone cannot: the first alert's summary edited and every
    hash from its row on recomputed. Plain verify passes; ``--against-nats`` and
    ``--head`` fail at the anchored seq, naming both hashes."""
    head = await run_and_stop(data_dir, nats_url, sink, alerts=2)
    with contextlib.closing(sqlite3.connect(db_path(data_dir))) as conn:
        rows = conn.execute("SELECT seq, ts, kind, data FROM events ORDER BY seq").fetchall()
    previous, statements, edited = GENESIS, [], 0
    for seq, ts, kind, data in rows:
        data = bytes(data)
        if kind == "alert.received" and b'"disk 0"' in data:
            data = data.replace(b'"disk 0"', b'"disk 9"')
            edited = seq
        previous = chain_hash(previous, seq, ts, kind, data)
        statements.append(
            ("UPDATE events SET data = ?, hash = ? WHERE seq = ?", (data, previous, seq))
        )
    assert 0 < edited < head.seq
    tamper(data_dir, *statements)

    code, out, err = await verify(capsys, "--data-dir", str(data_dir))
    assert code == 0, err  # what the chain alone proves: nothing here
    code, out, err = await verify(
        capsys, "--data-dir", str(data_dir), "--nats-url", nats_url, "--against-nats"
    )
    assert code == 1, out
    assert "verify FAILED against the anchor in NATS" in err
    assert f"seq {head.seq} has hash {previous.hex()} but the anchor says {head.hash}" in err
    code, _, err = await verify(capsys, "--data-dir", str(data_dir), "--head", str(head))
    assert code == 1
    assert f"verify FAILED against --head: seq {head.seq} has hash" in err


async def test_a_dropped_tail_fails_against_the_anchor(
    nats_url: str, data_dir: Path, sink: HttpSink, capsys: pytest.CaptureFixture[str]
) -> None:
    """Catches the last rows deleted (the chain before them still holds): the anchor's
    seq is past the file's end."""
    head = await run_and_stop(data_dir, nats_url, sink, alerts=2)
    tamper(data_dir, ("DELETE FROM events WHERE seq > ?", (head.seq - 3,)))

    code, _, err = await verify(capsys, "--data-dir", str(data_dir))
    assert code == 0, err
    code, out, err = await verify(
        capsys, "--data-dir", str(data_dir), "--nats-url", nats_url, "--against-nats"
    )
    assert code == 1, out
    assert (
        f"the anchor is at seq {head.seq} but the log ends at seq {head.seq - 3}: "
        f"rows {head.seq - 2}..{head.seq} were dropped"
    ) in err


async def test_a_head_given_by_hand_is_checked_without_nats(
    nats_url: str, data_dir: Path, sink: HttpSink, capsys: pytest.CaptureFixture[str]
) -> None:
    head = await run_and_stop(data_dir, nats_url, sink, alerts=1)
    code, out, err = await verify(capsys, "--data-dir", str(data_dir), "--head", str(head))
    assert code == 0, err
    assert f"ok: the log holds the head of --head, seq {head.seq}" in out
    code, _, err = await verify(capsys, "--data-dir", str(data_dir), "--head", "12:beef")
    assert code == 2
    assert "--head" in err


async def test_with_no_anchor_in_nats_verify_against_it_fails_saying_so(
    nats_url: str, data_dir: Path, sink: HttpSink, capsys: pytest.CaptureFixture[str]
) -> None:
    await run_and_stop(data_dir, nats_url, sink, alerts=1)
    nc = await nats.connect(nats_url)
    await nc.jetstream().delete_stream(STREAM_ANCHOR)
    await nc.close()
    code, _, err = await verify(
        capsys, "--data-dir", str(data_dir), "--nats-url", nats_url, "--against-nats"
    )
    assert code == 1
    assert f"no chain head is anchored in NATS at {nats_url}" in err


async def test_the_anchor_publishes_after_commits_at_most_once_an_interval(
    nats_url: str,
) -> None:
    """Catches a publish per commit: a commit only sets a flag, and heads moving faster
    than ``interval`` are not published one by one (the stream's last sequence counts
    every publish); the newest is published at stop."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream(timeout=10)
    await ensure_streams(js)
    current = [head_of(1, GENESIS, 1)]
    anchor = Anchor(js, lambda: current[-1], interval=3600)
    stop = asyncio.Event()
    task = asyncio.create_task(anchor.run(stop))
    try:
        await wait_until(lambda: anchor.published == current[0], 10, "the head at start")
        for seq in range(2, 50):
            current.append(head_of(seq, GENESIS, seq))
            anchor.committed()
        stop.set()
        await asyncio.wait_for(task, 10)
        assert (await js.stream_info(STREAM_ANCHOR)).state.last_seq == 1  # none in the hour
        await anchor.publish_now()  # what the service does at stop
        assert (await js.stream_info(STREAM_ANCHOR)).state.last_seq == 2
        last = await js.get_last_msg(STREAM_ANCHOR, ANCHOR)
        assert last.data == encode_head(current[-1])
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await nc.close()
