"""replay, state --at and verify on a real log file, through the CLI entry point."""

from __future__ import annotations

import itertools
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tocsin.cli import main
from tocsin.core.decide.route import Route, RoutingTable
from tocsin.core.decide.triage import triage
from tocsin.core.fold import fold
from tocsin.core.ingest import Normalized, default_fingerprint
from tocsin.core.matchers import Match
from tocsin.core.state import State
from tocsin.core.times import format_us
from tocsin.store.eventlog import EventLog, Fact, db_path

T0 = 1_790_000_000 * 1_000_000
SECOND = 1_000_000
ROUTES = RoutingTable.compile([Route(receivers=["hook"], match=Match())])


def event(kind: str, at: int, status: str = "firing", host: str = "db1") -> Normalized:
    labels = {"host": host}
    return Normalized(
        type=kind,
        severity="warning",
        summary=f"{kind} on {host}",
        source="db",
        status=status,
        labels=labels,
        fingerprint=default_fingerprint(kind, labels),  # type: ignore[arg-type]
        details={},
        timestamp=at,
        timestamp_replaced=False,
        event_id=None,
    )


@pytest.fixture
async def data_dir(tmp_path: Path) -> Path:
    """A log of two alerts: disk_full (fired twice, then resolved) and cpu_hot."""
    script = [
        event("disk_full", T0),
        event("disk_full", T0 + 10 * SECOND),
        event("cpu_hot", T0 + 20 * SECOND, host="web1"),
        event("disk_full", T0 + 30 * SECOND, status="resolved"),
    ]
    await write_log(tmp_path, script)
    return tmp_path


async def write_log(
    directory: Path, script: list[Normalized], ids: Iterator[int] | None = None
) -> None:
    """The router's facts for ``script``'s events, appended to ``directory``'s log;
    ``ids`` numbers the ids it makes (give the partitions of one data dir one counter:
    the ids a router makes are unique across partitions)."""
    log = await EventLog.open(db_path(directory))
    state = State()
    ids = itertools.count(1) if ids is None else ids
    for in_seq, item in enumerate(script, 1):
        facts = triage(
            state,
            item,
            subject="alerts.in.db",
            received_at=item.timestamp,
            routing=ROUTES,
            window_seconds=600,
            new_id=lambda: f"id{next(ids)}",
            trace_id=None,
        )
        first = log.last_seq + 1
        for offset, fact in enumerate(facts):
            fold(state, first + offset, item.timestamp, fact)
        await log.append([Fact(f, in_seq=in_seq) for f in facts], ts=item.timestamp)
    await log.close()


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def records(out: str) -> list[dict[str, Any]]:
    return [msgspec.json.decode(line) for line in out.splitlines()]


def test_replay_json_prints_every_event_oldest_first(data_dir: Path, capsys: Any) -> None:
    code, out, _ = run(capsys, "replay", "--data-dir", str(data_dir), "--json")
    assert code == 0
    rows = records(out)
    assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
    assert set(rows[0]) == {"seq", "ts", "kind", "data"}
    assert rows[0]["kind"] == "alert.received"
    assert rows[0]["ts"] == format_us(T0)
    assert rows[0]["data"]["timestamp"] == format_us(T0)  # instants as RFC 3339
    assert "kind" not in rows[0]["data"]
    assert [r["kind"] for r in rows].count("alert.resolved") == 1


def test_replay_filters(data_dir: Path, capsys: Any) -> None:
    base = ["replay", "--data-dir", str(data_dir), "--json"]
    everything = records(run(capsys, *base)[1])
    disk = records(run(capsys, *base, "--type", "disk_full")[1])
    assert disk
    assert {r["data"]["fingerprint"] for r in disk} == {
        default_fingerprint("disk_full", {"host": "db1"})
    }
    alert_id = disk[0]["data"]["alert_id"]
    by_alert = records(run(capsys, *base, "--alert", alert_id)[1])
    assert by_alert == [r for r in everything if r["data"].get("alert_id") == alert_id]
    fp = default_fingerprint("cpu_hot", {"host": "web1"})
    assert {
        r["data"]["fingerprint"] for r in records(run(capsys, *base, "--fingerprint", fp)[1])
    } == {fp}
    window = records(
        run(
            capsys,
            *base,
            "--since",
            format_us(T0 + 5 * SECOND),
            "--until",
            format_us(T0 + 25 * SECOND),
        )[1]
    )
    assert {r["ts"] for r in window} == {format_us(T0 + 10 * SECOND), format_us(T0 + 20 * SECOND)}


def test_replay_text_and_bad_times(data_dir: Path, capsys: Any) -> None:
    code, out, err = run(capsys, "replay", "--data-dir", str(data_dir))
    assert code == 0
    assert "alert.routed" in out
    assert "receiver=hook" in out
    assert err.strip().endswith("event(s)")
    assert main(["replay", "--data-dir", str(data_dir), "--since", "yesterday"]) == 2


def test_state_at_a_time_is_the_fold_of_the_log_until_then(data_dir: Path, capsys: Any) -> None:
    base = ["state", "--data-dir", str(data_dir), "--json"]
    before = msgspec.json.decode(run(capsys, *base, "--at", format_us(T0 + 25 * SECOND))[1])
    after = msgspec.json.decode(run(capsys, *base)[1])
    # DESIGN.md section 6's keys, plus the open notification groups (additive, section 10)
    assert set(before) == {"as_of_seq", "as_of", "alerts", "groups"}
    assert before["as_of"] == format_us(T0 + 20 * SECOND)
    disk_before = next(a for a in before["alerts"] if a["type"] == "disk_full")
    disk_after = next(a for a in after["alerts"] if a["type"] == "disk_full")
    assert (disk_before["status"], disk_before["occurrences"], disk_before["suppressed_count"]) == (
        "firing",
        2,
        1,
    )
    assert disk_after["status"] == "resolved"
    assert after["as_of_seq"] > before["as_of_seq"]
    assert [a["last_seen"] for a in after["alerts"]] == sorted(
        (a["last_seen"] for a in after["alerts"]), reverse=True
    )


def test_state_text_shows_alerts_suppressed_counts_and_deliveries(
    data_dir: Path, capsys: Any
) -> None:
    code, out, _ = run(capsys, "state", "--data-dir", str(data_dir))
    assert code == 0
    header, *lines = out.splitlines()
    assert "2 alert(s), 1 open" in header
    assert "deliveries: 0 delivered, 3 pending, 0 retrying, 0 dead-lettered" in header
    disk = next(line for line in lines if "disk_full on db1" in line)
    assert "resolved" in disk
    assert "(1 suppressed)" in disk
    assert "told hook: pending" in disk


def test_verify_passes_on_a_sound_log(data_dir: Path, capsys: Any) -> None:
    code, out, _ = run(capsys, "verify", "--data-dir", str(data_dir))
    assert code == 0
    assert out.startswith("ok:")
    assert "2 alert(s), 1 open" in out


def _tamper(data_dir: Path, sql: str) -> None:
    with sqlite3.connect(db_path(data_dir)) as conn:
        conn.execute("DROP TRIGGER events_no_update")
        conn.execute("DROP TRIGGER events_no_delete")
        conn.execute(sql)


def test_verify_catches_a_row_edited_behind_its_back(data_dir: Path, capsys: Any) -> None:
    with sqlite3.connect(db_path(data_dir)) as conn:
        data = conn.execute("SELECT data FROM events WHERE seq = 4").fetchone()[0]
    forged = bytes(data).replace(b'"warning"', b'"critical"')
    assert forged != bytes(data)
    _tamper(data_dir, f"UPDATE events SET data = x'{forged.hex()}' WHERE seq = 4")
    code, _, err = run(capsys, "verify", "--data-dir", str(data_dir))
    assert code == 1
    assert "seq 4" in err
    assert "hash does not chain" in err


def test_verify_catches_a_removed_row(data_dir: Path, capsys: Any) -> None:
    _tamper(data_dir, "DELETE FROM events WHERE seq = 3")
    code, _, err = run(capsys, "verify", "--data-dir", str(data_dir))
    assert code == 1
    assert "seq 4" in err
    assert "missing" in err


@pytest.mark.parametrize("column", ["alert_id", "fingerprint"])
def test_verify_catches_an_indexed_column_edited_behind_its_back(
    data_dir: Path, capsys: Any, column: str
) -> None:
    """The hash covers ``data``, not the columns ``replay --alert`` / ``--fingerprint``
    look rows up by: one UPDATE hid an alert's row from ``replay --alert`` while verify
    said ok. Now each column is checked against its event, naming the seq and column."""
    with sqlite3.connect(db_path(data_dir)) as conn:
        alert_id = conn.execute("SELECT alert_id FROM events WHERE seq = 2").fetchone()[0]
    assert alert_id is not None
    before = records(
        run(capsys, "replay", "--data-dir", str(data_dir), "--json", "--alert", alert_id)[1]
    )
    assert 2 in [r["seq"] for r in before]
    _tamper(data_dir, f"UPDATE events SET {column} = 'forged' WHERE seq = 2")
    if column == "alert_id":  # what the edit does: the row no longer shows for its alert
        after = run(capsys, "replay", "--data-dir", str(data_dir), "--json", "--alert", alert_id)
        assert 2 not in [r["seq"] for r in records(after[1])]
    code, out, err = run(capsys, "verify", "--data-dir", str(data_dir))
    assert code == 1, out
    assert "verify FAILED at seq 2" in err
    assert f"{column} column 'forged'" in err


def test_commands_say_when_there_is_no_log(tmp_path: Path, capsys: Any) -> None:
    code, _, err = run(capsys, "verify", "--data-dir", str(tmp_path / "nowhere"))
    assert code == 1
    assert "no event log" in err


DISK = [event("disk_full", T0), event("disk_full", T0 + 20 * SECOND)]
CPU = [event("cpu_hot", T0 + 10 * SECOND, host="web1"), event("cpu_hot", T0 + 30 * SECOND)]


@pytest.fixture
async def partitioned(tmp_path: Path) -> Path:
    """A data dir of two partitions' logs (DESIGN.md section 17), no log of its own:
    disk_full's events in p0, cpu_hot's in p1, their times interleaved."""
    (tmp_path / "p0").mkdir()
    (tmp_path / "p1").mkdir()
    ids = itertools.count(1)
    await write_log(tmp_path / "p0", DISK, ids)
    await write_log(tmp_path / "p1", CPU, ids)
    return tmp_path


@pytest.fixture
async def one_log(tmp_path: Path) -> Path:
    """One log holding the events of ``partitioned``'s two, in time order."""
    directory = tmp_path / "one"
    directory.mkdir()
    await write_log(directory, sorted([*DISK, *CPU], key=lambda e: e.timestamp))
    return directory


def without_ids(text: str) -> str:
    """``state``'s output with alert ids masked (each log made its own)."""
    return re.sub(r"\bid\d+\b", "id", text)


def test_replay_of_a_partitioned_data_dir_merges_the_partitions_by_time(
    partitioned: Path, capsys: Any
) -> None:
    """Catches ``replay`` answering "no event log" for a partitioned data dir, or
    printing one partition after the other: the history is one, in time order, each row
    saying which log it comes from."""
    code, out, _ = run(capsys, "replay", "--data-dir", str(partitioned), "--json")
    assert code == 0
    rows = records(out)
    received = [(r["partition"], r["data"]["type"]) for r in rows if r["kind"] == "alert.received"]
    assert received == [(0, "disk_full"), (1, "cpu_hot"), (0, "disk_full"), (1, "cpu_hot")]
    assert [r["ts"] for r in rows] == sorted(r["ts"] for r in rows)
    code, out, err = run(capsys, "replay", "--data-dir", str(partitioned), "--type", "cpu_hot")
    assert code == 0
    assert {line.split()[0] for line in out.splitlines()} == {"p1"}
    assert "from 2 partition(s)" in err


def test_verify_of_a_partitioned_data_dir_checks_every_chain(
    partitioned: Path, capsys: Any
) -> None:
    """Catches a verify that passes a partitioned data dir without reading its logs, or
    stops at the first: each chain is checked and a broken one is named."""
    code, out, _ = run(capsys, "verify", "--data-dir", str(partitioned))
    assert code == 0
    assert [line.split()[2] for line in out.splitlines()] == ["0:", "1:"]
    _tamper(partitioned / "p1", "DELETE FROM events WHERE seq = 2")
    code, out, err = run(capsys, "verify", "--data-dir", str(partitioned))
    assert code == 1
    assert "partition 1 at seq" in err
    assert "ok: partition 0" in out
    code, _, err = run(capsys, "verify", "--data-dir", str(partitioned), "--head", "1:00")
    assert code == 2
    assert f"--data-dir {partitioned / 'p0'}" in err


@pytest.mark.parametrize("at", [None, format_us(T0 + 25 * SECOND)])
@pytest.mark.parametrize("shape", [["--json"], []])
def test_state_of_a_partitioned_data_dir_is_one_log_holding_both(
    partitioned: Path, one_log: Path, capsys: Any, at: str | None, shape: list[str]
) -> None:
    """Catches ``state`` refusing a partitioned data dir (it did: "read one partition
    at a time"), or showing one partition's projection: the merged projection prints
    as one log holding every partition's events would (alerts, their counts and
    deliveries; ``as_of_seq`` the sum of the partitions' seqs, which here is one log's),
    as of now and as of a time, as JSON and as text; stderr says what was merged."""
    when = [] if at is None else ["--at", at]
    code, merged, err = run(capsys, "state", "--data-dir", str(partitioned), *shape, *when)
    assert code == 0, err
    assert "state of 2 partition(s) merged: p0, p1" in err
    code, whole, _ = run(capsys, "state", "--data-dir", str(one_log), *shape, *when)
    assert code == 0
    assert without_ids(merged) == without_ids(whole)
    if shape:
        report = msgspec.json.decode(merged)
        types = ["cpu_hot", "disk_full"] if at else ["cpu_hot", "cpu_hot", "disk_full"]
        assert sorted(a["type"] for a in report["alerts"]) == types
        assert report["as_of"] == format_us(T0 + (30 if at is None else 20) * SECOND)


def test_state_of_one_partition_reads_that_log_alone(partitioned: Path, capsys: Any) -> None:
    """``--data-dir <data-dir>/p<k>`` is still one log: fails if it is merged too."""
    code, out, err = run(capsys, "state", "--data-dir", str(partitioned / "p1"), "--json")
    assert code == 0
    assert "merged" not in err
    assert [a["type"] for a in msgspec.json.decode(out)["alerts"]] == ["cpu_hot", "cpu_hot"]
