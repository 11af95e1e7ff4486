"""Compaction by the service that writes the log (issue #16 item 9, DESIGN.md section 6):
``tocsin compact`` asks the running service over NATS, and ``[log] retention`` has it
compact on its own, hourly, into archives in the data dir named by time."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.api.test_history import T0, Writer
from tests.support import HttpSink, Tocsin, event, publish, wait_until, webhook_config
from tocsin.cli import main
from tocsin.core.state import HOUR_US
from tocsin.pipeline.compactor import Compactor
from tocsin.store import forensics
from tocsin.store.compaction import verify_archives
from tocsin.store.eventlog import db_path
from tocsin.store.ledger import Ledger, load_state


async def test_tocsin_compact_is_carried_out_by_the_running_service(
    data_dir: Path,
    nats_url: str,
    sink: HttpSink,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Catches ``tocsin compact`` that only works with the service stopped: while it
    runs (holding the writer's lock, so an offline compaction is refused), the command
    asks it over ``tocsin.control.compact``, the service archives and logs the move,
    its live state stays the fold of the log, and it goes on routing. Also: the
    service logs its ``[alerts] keep_resolved`` in ``config.loaded``, and folds it."""
    toml = webhook_config(sink.url) + '\n[alerts]\nkeep_resolved = "2h"\n'
    service = await Tocsin(data_dir, nats_url, toml).start()
    try:
        assert service.events("config.loaded")[-1]["keep_resolved_seconds"] == 7200
        assert service.live_state().keep_resolved == 2 * HOUR_US
        for host in ("db1", "db2"):
            await publish(nats_url, "alerts.in.db", event(labels={"host": host}))
        await wait_until(lambda: service.count("delivery.succeeded") == 2, 15, "two outcomes")
        archive = tmp_path / "archives" / "old.jsonl.gz"
        args = ["compact", "--data-dir", str(data_dir), "--nats-url", nats_url]
        code = await asyncio.to_thread(main, [*args, "--before", "0s", "--archive", str(archive)])
        assert code == 0, capsys.readouterr().err
        assert "by the running service" in capsys.readouterr().out
        assert service.count("log.compacted") == 1
        assert archive.exists()
        assert verify_archives([archive], service.db)
        await service.assert_live_state_is_the_log()

        await publish(nats_url, "alerts.in.db", event(labels={"host": "db3"}))
        await wait_until(lambda: len(sink.requests) == 3, 15, "a third notification")
        # The first two outcomes are in the archive now; the third is logged after it.
        await wait_until(lambda: service.count("delivery.succeeded") == 1, 15, "its outcome")
        await service.assert_live_state_is_the_log()
    finally:
        assert await service.stop() == 0
    assert forensics.verify(service.db).ok


async def test_retention_archives_what_is_older_every_hour_into_the_data_dir(
    tmp_path: Path,
) -> None:
    """Catches a ``[log] retention`` that never compacts, or compacts the wrong rows:
    at an injected now, the events appended more than ``retention`` before it move to
    an archive named by that time in ``<data-dir>/archives``; the next hour moves the
    next ones into a second archive that continues the first; nothing is moved twice,
    and the live state stays the fold of the log throughout."""
    ledger = await Ledger.open(db_path(tmp_path), snapshot_every=0)
    try:
        writer = Writer(ledger)
        for hour in range(5):
            writer.now = T0 + hour * HOUR_US
            await writer.event(f"h{hour}")
        now = T0 + 3 * HOUR_US + 1
        compactor = Compactor(ledger, tmp_path, retention=2 * 3600, clock=lambda: now)
        first = await compactor.keep_retention()
        assert first is not None
        assert first.archive.parent == tmp_path / "archives"
        assert first.archive.name == "tocsin-20270115T090000Z.jsonl.gz"
        assert first.first_seq == 1
        assert await compactor.keep_retention() is None  # the same hour: nothing new
        await ledger.settled()
        assert ledger.state == load_state(ledger.path)

        now += HOUR_US
        second = await compactor.keep_retention()
        assert second is not None
        assert second.first_seq == first.last_seq + 1
        assert len(verify_archives([first.archive, second.archive], ledger.path)) == 2
        writer.now = now
        await writer.event("after")  # the writer goes on from the compacted row
        await ledger.settled()
        assert ledger.state == load_state(ledger.path)
        assert forensics.verify(ledger.path).ok
    finally:
        await ledger.close()
