"""Storage trouble for the whole service (issue #9, faults): the log's disk fills, or
the file turns read-only, while events stream in.

What must hold throughout: no inbound message is acked before its facts are committed
(an unacked message stays in TOCSIN_IN, which has interest retention); no notification
leaves for a fact that is not committed; ``/readyz`` says 503 and why; operator
commands are refused with 503; and when the log accepts writes again, everything
resumes by itself and every event is counted exactly once.

``tests/test_storage.py`` covers one event against a full log; this streams events
through both kinds of trouble, and (when the tests may mount a file system) fills a
real one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import nats
import pytest
from nats.js.errors import NotFoundError

from tests.support import (
    HttpSink,
    Serve,
    Tocsin,
    log_count,
    log_events,
    wait_until,
    webhook_config,
)
from tocsin.core.subjects import ROUTER_CONSUMER, STREAM_IN, STREAM_WORK
from tocsin.core.times import format_us, now_us
from tocsin.store import forensics
from tocsin.store.eventlog import db_path

PHASE = 100  # events published per phase
FINGERPRINTS = 40
WINDOW_US = 600 * 1_000_000


def bucket_start() -> int:
    now = now_us()
    return now - now % WINDOW_US - WINDOW_US + 1_000_000  # early in the previous bucket


class Stream:
    """Publishes numbered events one by one (PubAck each) and remembers their seqs.
    With ``big``, each carries ~6 KB of details and ~20 KB of labels, more than a page
    (``tables.PAGE_BYTES``): its facts never fit in space the log file already holds,
    so a full disk refuses every one."""

    def __init__(self, js: Any, big: bool = False) -> None:
        self.js = js
        self.base = bucket_start()
        self.seqs: dict[int, int] = {}  # TOCSIN_IN seq -> event number
        self.details = {f"k{j}": "x" * 500 for j in range(12)} if big else {}
        self.padding = {f"pad{j}": "x" * 1000 for j in range(20)} if big else {}

    async def publish(self, first: int, count: int) -> None:
        for i in range(first, first + count):
            body = {
                "type": "storage_fault",
                "severity": "warning",
                "summary": f"event {i}",
                "labels": {"n": str(i % FINGERPRINTS), **self.padding},
                "timestamp": format_us(self.base + i * 1000),
                "details": self.details,
            }
            ack = await self.js.publish("alerts.in.disk", msgspec.json.encode(body), timeout=10)
            self.seqs[ack.seq] = i


def committed_in_seqs(db: Path) -> set[int]:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        rows = conn.execute("SELECT DISTINCT in_seq FROM events WHERE in_seq IS NOT NULL")
        return {row[0] for row in rows}


async def check_nothing_early(js: Any, stream: Stream, db: Path, sink_ids: set[str]) -> int:
    """The invariants at this instant: every message whose facts are not committed is
    still in TOCSIN_IN (unacked), and every notification the receiver got belongs to a
    committed routed fact. Returns how many messages wait uncommitted."""
    committed = committed_in_seqs(db)
    waiting = [seq for seq in stream.seqs if seq not in committed]
    for seq in waiting:
        try:
            await js.get_msg(STREAM_IN, seq)
        except NotFoundError:
            raise AssertionError(f"inbound seq {seq} left TOCSIN_IN, not in the log") from None
    routed = {e["notification_id"] for e in log_events(db, "alert.routed")}
    assert sink_ids <= routed, "a notification left before its fact was committed"
    return len(waiting)


async def trouble(
    service: Tocsin,
    js: Any,
    stream: Stream,
    sink: HttpSink,
    first: int,
    start: Callable[[], Awaitable[None]],
    end: Callable[[], Awaitable[None]],
    reason_has: str,
    may_fit: bool,
) -> str:
    """One phase: trouble starts, a phase of events arrives, the invariants hold, the
    service says why it is not ready and refuses commands; trouble ends, all resumes."""
    db = service.db
    await start()
    publishing = asyncio.create_task(stream.publish(first, PHASE))

    async def readyz() -> httpx.Response:
        async with httpx.AsyncClient(timeout=5) as client:
            return await client.get(f"{service.api}/readyz")

    async def not_ready() -> str | None:
        answer = await readyz()
        return str(answer.json()["reason"]) if answer.status_code == 503 else None

    reason = await wait_until(not_ready, 20, "/readyz 503 while the log refuses writes")
    assert reason_has in reason, reason
    while not publishing.done():  # the whole phase arrives while writes fail
        await check_nothing_early(js, stream, db, sink_ids(sink))
        await asyncio.wait([publishing], timeout=0.5)
    await publishing
    assert await check_nothing_early(js, stream, db, sink_ids(sink)) == PHASE
    assert await not_ready() == reason
    # An operator command is refused with the reason, or (a full disk still has room
    # in pages it already holds, for a small fact) committed: never half done.
    acked_before = service.count("alert.acked")
    alert_id = next(a.id for a in service.live_state().alerts.values() if a.acked_by is None)
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.post(
            f"{service.api}/api/v1/alerts/{alert_id}/ack", json={"by": "ops", "comment": "x"}
        )
    if answer.status_code == 200 and may_fit:
        assert service.count("alert.acked") == acked_before + 1
    else:
        assert answer.status_code == 503, answer.text
        assert reason_has in answer.json()["error"]
        assert service.count("alert.acked") == acked_before
    await end()

    async def ready() -> bool:
        return (await readyz()).status_code == 200

    await wait_until(ready, 30, "/readyz 200 once the log accepts writes")
    await wait_until(
        lambda: log_count(db, "alert.received") == first + PHASE, 60, "the phase's events logged"
    )
    return str(reason)


def sink_ids(sink: HttpSink) -> set[str]:
    return {r.headers["idempotency-key"] for r in list(sink.requests)}


async def test_full_then_read_only_log_holds_everything_back_and_loses_nothing(
    nats_url: str, sink: HttpSink, data_dir: Path
) -> None:
    config = webhook_config(sink.url) + '\n[nats]\nack_wait = "3s"\n'
    service = await Tocsin(data_dir, nats_url, config).start()
    log = service.ledger().event_log
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    stream = Stream(js, big=True)
    try:
        await stream.publish(0, PHASE)
        await wait_until(lambda: service.count("alert.received") == PHASE, 30, "phase 1 logged")

        async def fill() -> None:  # no room for one more page: the disk is full
            await log.set_page_limit(await log.set_page_limit(None))

        async def free() -> None:
            await log.set_page_limit(None)

        full = await trouble(service, js, stream, sink, PHASE, fill, free, "full", may_fit=True)

        # SQLite answers a write on a read-only file (a file system remounted read-only
        # after an error, a volume's permissions changed) with SQLITE_READONLY; the
        # query_only pragma makes the writer's own connection answer exactly that.
        async def read_only() -> None:
            await log.set_query_only(True)

        async def writable() -> None:
            await log.set_query_only(False)

        readonly = await trouble(
            service, js, stream, sink, 2 * PHASE, read_only, writable, "readonly", may_fit=False
        )
        await stream.publish(3 * PHASE, PHASE)

        # Everything once: counts, notifications, streams drained, state = fold(log).
        total = 4 * PHASE
        await wait_until(lambda: service.count("alert.received") == total, 60, "all logged")
        routed = {e["notification_id"] for e in service.events("alert.routed")}
        await wait_until(lambda: sink_ids(sink) == routed, 30, "every notification sent")
        await wait_until(
            lambda: service.count("delivery.succeeded") == len(routed), 30, "outcomes logged"
        )

        async def drained() -> bool:
            router = await js.consumer_info(STREAM_IN, ROUTER_CONSUMER)
            work = (await js.stream_info(STREAM_WORK)).state.messages
            return (router.num_pending, router.num_ack_pending, work) == (0, 0, 0)

        await wait_until(drained, 30, "nothing left in TOCSIN_IN or TOCSIN_WORK")
        state = service.live_state()
        assert sum(a.occurrences for a in state.alerts.values()) == total
        assert len(state.alerts) == FINGERPRINTS
        assert sorted(int(e["summary"].split()[1]) for e in service.events("alert.received")) == (
            list(range(total))
        )
        assert len(routed) == FINGERPRINTS  # one dedup key per fingerprint, told once
        assert len(sink.requests) == len(routed)
        assert service.count("delivery.dead_lettered") == 0
        assert state == service.rebuilt_state()
        assert forensics.verify(service.db).ok
        print(f"\nreadyz while full: {full!r}; while read-only: {readonly!r}")
    finally:
        await nc.close()
        await service.stop()


# -- a real file system that fills up ---------------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs of our own (needs root; skipped elsewhere)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill_up(directory: Path) -> Path:
    """A file taking every free byte of ``directory``'s file system."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 4096, 1):  # megabytes, then pages, then the last bytes
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * size):
                    pass
    finally:
        os.close(fd)
    return filler


async def test_a_real_full_disk_under_tocsin_serve(
    nats_url: str, sink: HttpSink, tmp_path: Path, small_fs: Path
) -> None:
    """``tocsin serve`` with its data dir on a small tmpfs: a filler file takes the last
    byte mid-stream; tocsin holds everything back and says so; the filler is removed and
    tocsin resumes by itself, every event counted once."""
    config = tmp_path / "tocsin.toml"
    config.write_text(webhook_config(sink.url) + '\n[nats]\nack_wait = "3s"\n')
    data = small_fs / "data"
    serve = await Serve(data, nats_url, config, stderr=tmp_path / "serve.log").start()
    db = db_path(data)
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    stream = Stream(js)
    try:
        await stream.publish(0, PHASE)
        await wait_until(lambda: log_count(db, "alert.received") == PHASE, 30, "phase 1 logged")
        filler = await asyncio.to_thread(fill_up, small_fs)
        # The write-ahead log may still have room for a while: publish until tocsin
        # reports the full disk (bounded), then a few more that must all be held back.
        full = asyncio.Event()

        async def keep_publishing() -> None:
            count = PHASE
            while not full.is_set() and count < 20 * PHASE:
                await stream.publish(count, 10)
                count += 10
            await stream.publish(count, 20)

        publishing = asyncio.create_task(keep_publishing())

        async def readyz() -> httpx.Response:
            async with httpx.AsyncClient(timeout=5) as client:
                return await client.get(f"{serve.api}/readyz")

        async def not_ready() -> bool:
            return (await readyz()).status_code == 503

        await wait_until(not_ready, 60, "/readyz 503 on a full disk")
        full.set()
        reason = (await readyz()).json()["reason"]
        assert "full" in reason, reason
        await publishing
        total = len(stream.seqs)
        waiting = await check_nothing_early(js, stream, db, sink_ids(sink))
        assert waiting >= 20
        assert (await readyz()).status_code == 503
        filler.unlink()

        async def ready() -> bool:
            return (await readyz()).status_code == 200

        await wait_until(ready, 30, "/readyz 200 once space returns")
        await wait_until(lambda: log_count(db, "alert.received") == total, 60, "all logged")
        routed = {e["notification_id"] for e in log_events(db, "alert.routed")}
        await wait_until(lambda: sink_ids(sink) == routed, 30, "every notification sent")
        state, _ = forensics.state_at(db)
        assert sum(a.occurrences for a in state.alerts.values()) == total
        assert sorted(int(e["summary"].split()[1]) for e in log_events(db, "alert.received")) == (
            list(range(total))
        )
        assert forensics.verify(db).ok
        print(
            f"\nreadyz on a really full disk: {reason!r} ({waiting} of {total} messages held back)"
        )
    finally:
        await nc.close()
        assert serve.process is not None
        assert serve.process.returncode is None, "tocsin serve died on a full disk"
        assert await serve.stop() == 0
