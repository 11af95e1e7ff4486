"""Retention without lying: compaction moves old rows to an archive that carries the
hash chain, logs that it did, and leaves the state exactly as it was."""

from __future__ import annotations

import asyncio
import gzip
import sqlite3
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from tests.store.test_snapshots import feed
from tests.support import free_port
from tocsin.cli import main
from tocsin.core.times import format_us
from tocsin.store.compaction import CompactionError, check_archive
from tocsin.store.eventlog import db_path
from tocsin.store.ledger import Ledger, load_state
from tocsin.store.lock import WriterLock


def ts_of(path: Path, seq: int) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT ts FROM events WHERE seq = ?", (seq,)).fetchone()[0])


def compact(data: str, before: str, archive: str) -> int:
    """``tocsin compact`` through the CLI entry point; returns its exit code."""
    return main(["compact", "--data-dir", data, "--before", before, "--archive", archive])


def replay_json(
    capsys: pytest.CaptureFixture[str], data: Path, *extra: str
) -> list[dict[str, object]]:
    assert main(["replay", "--data-dir", str(data), "--json", *extra]) == 0
    return [msgspec.json.decode(line) for line in capsys.readouterr().out.splitlines()]


@pytest.fixture
async def data(tmp_path: Path) -> Path:
    ledger = await Ledger.open(db_path(tmp_path), snapshot_every=0)
    await feed(ledger, 40)
    await ledger.close()
    return tmp_path


async def test_compaction_moves_old_rows_and_changes_nothing_else(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = db_path(data)
    before_state = load_state(path)
    before_rows = replay_json(capsys, data)
    cut = ts_of(path, 50)
    archive = tmp_path / "archive" / "2026-11.jsonl.gz"

    assert compact(str(data), format_us(cut), str(archive)) == 0
    assert "compacted" in capsys.readouterr().out

    with sqlite3.connect(path) as conn:
        first = conn.execute("SELECT MIN(seq) FROM events").fetchone()[0]
        kinds = [
            row[0] for row in conn.execute("SELECT kind FROM events ORDER BY seq DESC LIMIT 1")
        ]
    assert first > 1
    assert kinds == ["log.compacted"]
    after_state = load_state(path)
    after_state.last_seq, after_state.last_ts = before_state.last_seq, before_state.last_ts
    assert after_state == before_state  # only the compaction event itself is new

    # the archive + the log replay exactly what the log held before, then the compaction
    replayed = replay_json(capsys, data, "--archive", str(archive))
    assert replayed[: len(before_rows)] == before_rows
    assert [r["kind"] for r in replayed[len(before_rows) :]] == ["log.compacted"]
    compacted = replayed[-1]["data"]
    assert isinstance(compacted, dict)
    assert compacted["first_seq"] == 1
    assert compacted["last_seq"] == first - 1

    assert main(["verify", "--data-dir", str(data), "--archive", str(archive)]) == 0
    out = capsys.readouterr().out
    assert "chain intact, linked" in out
    assert out.strip().splitlines()[-1].startswith("ok:")


async def test_a_compacted_log_keeps_working_and_compacts_again(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = db_path(data)
    first, second = tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl.gz"
    assert compact(str(data), format_us(ts_of(path, 30)), str(first)) == 0
    ledger = await Ledger.open(path, snapshot_every=0)
    assert ledger.state == load_state(path)
    await feed(ledger, 10, start=40)
    await ledger.close()
    assert compact(str(data), format_us(ts_of(path, 90)), str(second)) == 0
    capsys.readouterr()
    assert (
        main(["verify", "--data-dir", str(data), "--archive", str(first), "--archive", str(second)])
        == 0
    )
    assert "linked" in capsys.readouterr().out
    assert main(["verify", "--data-dir", str(data), "--archive", str(first)]) == 1
    assert "pass every archive since" in capsys.readouterr().err
    everything = replay_json(capsys, data, "--archive", str(first), "--archive", str(second))
    received = [r for r in everything if r["kind"] == "alert.received"]
    assert len(received) == 50
    assert [r["seq"] for r in everything] == sorted(r["seq"] for r in everything)


async def test_a_tampered_archive_is_caught(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = tmp_path / "a.jsonl.gz"
    assert compact(str(data), format_us(ts_of(db_path(data), 30)), str(archive)) == 0
    lines = gzip.decompress(archive.read_bytes()).splitlines()
    lines[3] = lines[3].replace(b"warning", b"critical")
    archive.write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    capsys.readouterr()
    assert main(["verify", "--data-dir", str(data), "--archive", str(archive)]) == 1
    assert "hash does not chain" in capsys.readouterr().err


async def test_compaction_refuses_while_the_service_writes_and_says_what_it_cannot_do(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A writer holds the lock but no service answers on NATS (none listens at that
    URL): refused, nothing archived. (A service that answers compacts itself:
    ``tests/pipeline/test_compactor.py``.)"""
    held = WriterLock(data)
    assert held.acquire()
    nowhere = f"nats://127.0.0.1:{free_port()}"
    args = ["compact", "--data-dir", str(data), "--before", "0s", "--nats-url", nowhere]
    try:
        # In a thread: asking the service runs an event loop of its own.
        code = await asyncio.to_thread(main, [*args, "--archive", str(tmp_path / "x.jsonl.gz")])
    finally:
        held.release()
    assert code == 1
    assert "did not answer" in capsys.readouterr().err
    assert not (tmp_path / "x.jsonl.gz").exists()

    assert compact(str(data), "2000-01-01T00:00:00Z", str(tmp_path / "none.jsonl.gz")) == 0
    assert "nothing to compact" in capsys.readouterr().out

    cut = ts_of(db_path(data), 30)
    assert compact(str(data), format_us(cut), str(tmp_path / "a.jsonl.gz")) == 0
    capsys.readouterr()
    assert main(["state", "--data-dir", str(data), "--at", format_us(cut - 1)]) == 1
    assert "compacted into an archive" in capsys.readouterr().err


def _upper_hash(line: bytes) -> bytes:
    """The same row with its hash in upper-case hex: the same bytes, not the stored text."""
    row = msgspec.json.decode(line)
    row["hash"] = row["hash"].upper()
    return msgspec.json.encode(row)


def _rewrite_archive(archive: Path, change: Callable[[list[bytes]], list[bytes]]) -> None:
    lines = gzip.decompress(archive.read_bytes()).splitlines()
    archive.write_bytes(gzip.compress(b"\n".join(change(lines)) + b"\n"))


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda lines: lines[:3] + lines[4:], "seq 3: missing from the archive"),
        (lambda lines: lines[:-1], "the archive ends before its header says it does"),
        (
            lambda lines: [*lines[:2], lines[2].replace(b'"hash":"', b'"hash":"zz'), *lines[3:]],
            "seq 2: hash does not chain",
        ),
        (
            lambda lines: [*lines[:2], _upper_hash(lines[2]), *lines[3:]],
            "seq 2: hash does not chain",
        ),
        (lambda lines: [*lines[:2], b"{", *lines[3:]], "unreadable archive"),
    ],
)
async def test_each_break_in_an_archive_is_named(
    data: Path,
    tmp_path: Path,
    change: Callable[[list[bytes]], list[bytes]],
    problem: str,
) -> None:
    archive = tmp_path / "a.jsonl.gz"
    assert compact(str(data), format_us(ts_of(db_path(data), 30)), str(archive)) == 0
    _rewrite_archive(archive, change)
    with pytest.raises(CompactionError) as error:
        check_archive(archive)
    assert problem in str(error.value)


@pytest.mark.parametrize(
    ("tamper", "bad_seq"),
    [("UPDATE events SET ts = ts + 1 WHERE seq = 7", 7), ("DELETE FROM events WHERE seq = 7", 8)],
)
async def test_compaction_refuses_a_log_whose_chain_is_broken(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], tamper: str, bad_seq: int
) -> None:
    path = db_path(data)
    cut = ts_of(path, 30)
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TRIGGER events_no_update")
        conn.execute("DROP TRIGGER events_no_delete")
        conn.execute(tamper)
    archive = tmp_path / "a.jsonl.gz"
    assert compact(str(data), format_us(cut), str(archive)) == 1
    assert f"seq {bad_seq}: hash does not chain; run tocsin verify" in capsys.readouterr().err
    assert not archive.exists()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT MIN(seq) FROM events").fetchone()[0] == 1
