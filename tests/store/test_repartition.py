"""Repartitioning on disk (``store.repartition``), real SQLite files: 1 -> 2 -> 1 keeps
every open alert, archives the old logs read-only, and refuses what it must."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.core.test_fold import MINUTE, T0, WINDOW, Run, normalized
from tests.core.test_repartition import settle
from tests.store.test_eventlog import page_bytes
from tocsin.core.state import State
from tocsin.store import forensics, tables
from tocsin.store.eventlog import EventLog, db_path
from tocsin.store.lock import WriterLock
from tocsin.store.repartition import Done, RepartitionError, run
from tocsin.store.tables import PAGE_BYTES

HOSTS = [f"db{i}" for i in range(10)]
NOW = T0 + 5 * MINUTE


async def unpartitioned_log(data_dir: Path, *, settled: bool = True) -> State:
    """An unpartitioned log written by the log's own writer: an alert per host, settled."""
    source = Run()
    for host in HOSTS:
        source.feed(normalized(0, host=host))
    if settled:
        settle(source, T0 + MINUTE)
    log = await EventLog.open(db_path(data_dir))
    try:
        await log.append([tables.Fact(e) for _, _, e in source.log], T0 + MINUTE)
    finally:
        await log.close()
    return source.state


def open_alerts(path: Path) -> dict[str, str]:
    state, _ = forensics.state_at(path)
    return {f: o.alert_id for f, o in state.open_by_fingerprint.items()}


def repartition(data_dir: Path, from_count: int, to_count: int, **options: bool) -> Done:
    return run(
        data_dir,
        from_count=from_count,
        to_count=to_count,
        key=(),
        window_seconds=WINDOW,
        now=NOW,
        **options,
    )


async def test_one_to_two_and_back_keeps_every_open_alert(tmp_path: Path) -> None:
    """1 -> 2 -> 1 (the unpartitioned log at <data-dir>/tocsin.db, partitions in p<k>):
    the open alerts are the same alerts after each move (catches an alert lost or
    split), every new log verifies and has a new log's page size (catches one made
    with SQLite's 4 KiB), the old ones are archived read-only and verify
    there, and the second move's logs count on from the first's seqs."""
    data_dir = tmp_path / "data"
    before = await unpartitioned_log(data_dir)
    expected = {f: o.alert_id for f, o in before.open_by_fingerprint.items()}
    assert len(expected) == len(HOSTS)

    first = repartition(data_dir, 1, 2)
    assert not db_path(data_dir).exists()
    moved: dict[str, str] = {}
    for k in range(2):
        path = db_path(data_dir / f"p{k}")
        assert forensics.verify(path).ok
        assert page_bytes(path) == PAGE_BYTES  # a new log's page size, as the router's
        moved |= open_alerts(path)
    assert moved == expected
    archived = db_path(first.archive)
    assert not archived.stat().st_mode & 0o222
    assert forensics.verify(archived).ok
    assert open_alerts(archived) == expected  # the old log, unchanged

    repartition(data_dir, 2, 1)
    assert not (data_dir / "p0" / "tocsin.db").exists()
    path = db_path(data_dir)
    assert forensics.verify(path).ok
    assert open_alerts(path) == expected
    first_row = next(iter(forensics.replay(path)))
    assert first_row.kind == "partition.seeded"
    assert first_row.seq > len(HOSTS)


async def test_refuses_a_running_router_unsettled_deliveries_and_a_wrong_from(
    tmp_path: Path,
) -> None:
    """Each refusal names its cause and changes nothing: a writer lock held (a router
    running: named by its path), deliveries pending (their count; ``force`` moves
    anyway and the new log records it), a ``--from`` the data dir does not have, and
    a staging directory left by an interrupted run."""
    data_dir = tmp_path / "data"
    await unpartitioned_log(data_dir, settled=False)
    untouched = db_path(data_dir).read_bytes()

    lock = WriterLock(data_dir)
    assert lock.acquire()
    try:
        with pytest.raises(RepartitionError, match=str(lock.path)):
            repartition(data_dir, 1, 2)
    finally:
        lock.release()
    with pytest.raises(RepartitionError, match="10 delivery"):
        repartition(data_dir, 1, 2)
    with pytest.raises(RepartitionError, match="--from 2"):
        repartition(data_dir, 2, 3)
    (data_dir / "repartition.staging").mkdir()
    with pytest.raises(RepartitionError, match="interrupted"):
        repartition(data_dir, 1, 2)
    (data_dir / "repartition.staging").rmdir()
    assert db_path(data_dir).read_bytes() == untouched
    assert not (data_dir / "p0" / "tocsin.db").exists()

    repartition(data_dir, 1, 2, force=True)
    for k in range(2):
        first = next(iter(forensics.replay(db_path(data_dir / f"p{k}"))))
        assert first.kind == "partition.seeded"
        (forced,) = first.data["forced"]
        assert forced.startswith("10 delivery(ies) pending or retrying")
