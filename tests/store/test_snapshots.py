"""Snapshots: taken every N events, used at start (snapshot + tail), never trusted over
the log: verify proves snapshot + tail == full fold, and a bad snapshot is caught.
Their two forms: compact (positional, tagged with the structs' layout) for periodic
snapshots, named (maps, any version reads them) for a compacted log's base."""

from __future__ import annotations

import gc
import itertools
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from tests.core.test_retention import MINUTE, routed_in
from tests.core.test_retention import T0 as RETENTION_T0
from tests.core.test_retention import Log as RetentionLog
from tests.support import T0, add_firing
from tocsin.cli import main
from tocsin.core import events as ev
from tocsin.core.decide.dedup import NO_SLOTS
from tocsin.core.decide.idempotency import digest
from tocsin.core.deliveries import Deliveries, encoded
from tocsin.core.fold import fold
from tocsin.core.state import HOUR_US as HOUR
from tocsin.core.state import State
from tocsin.store import ledger as ledger_module
from tocsin.store import snapshots
from tocsin.store.eventlog import db_path
from tocsin.store.ledger import Ledger, load_state, load_state_fast
from tocsin.store.snapshots import LAYOUT, StaleSnapshot, decode_state, encode_state


async def feed(ledger: Ledger, count: int, start: int = 0) -> None:
    """``count`` firing events over 7 fingerprints, one batch (commit) each."""
    ids = itertools.count(start * 10)
    for i in range(start, start + count):
        async with ledger.batch() as batch:
            add_firing(
                batch, ledger.state, i, hosts=7, timestamp=T0 + i, new_id=lambda: f"id{next(ids)}"
            )


async def logged_with_snapshots(tmp_path: Path) -> tuple[Path, State]:
    """A log of 30 events with a snapshot taken every 20, and its final state."""
    path = db_path(tmp_path)
    ledger = await Ledger.open(path, snapshot_every=20)
    await feed(ledger, 30)
    await ledger.close()
    return path, ledger.state


def snapshot_seqs(path: Path) -> list[int]:
    with sqlite3.connect(path) as conn:
        return [row[0] for row in conn.execute("SELECT seq FROM snapshots ORDER BY seq")]


async def test_snapshots_are_taken_and_start_uses_the_newest_plus_the_tail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger_module, "STOP_SNAPSHOT_FRACTION", 10)  # a tail left at the stop
    path = db_path(tmp_path)
    ledger = await Ledger.open(path, snapshot_every=25)
    await feed(ledger, 40)
    taken = snapshot_seqs(path)
    assert taken
    assert len(taken) <= 2  # older ones are dropped
    assert all(seq >= 25 for seq in taken)
    live = ledger.state
    await ledger.close()

    reopened = await Ledger.open(path, snapshot_every=25)
    assert reopened.snapshot_seq == taken[-1]
    assert reopened.state == live == load_state(path)
    await feed(reopened, 5, start=40)
    assert reopened.state == load_state(path)
    await reopened.close()


async def test_verify_checks_every_snapshot_against_the_full_fold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = await logged_with_snapshots(tmp_path)
    taken = snapshot_seqs(path)
    assert main(["verify", "--data-dir", str(tmp_path)]) == 0
    assert f"checked against {len(taken)} snapshot(s)" in capsys.readouterr().out

    # A snapshot that decodes but lies: one alert's count changed.
    seq = taken[0]
    with sqlite3.connect(path) as conn:
        blob = conn.execute("SELECT state FROM snapshots WHERE seq = ?", (seq,)).fetchone()[0]
        state = decode_state(blob)
        next(iter(state.alerts.values())).occurrences += 100
        conn.execute("UPDATE snapshots SET state = ? WHERE seq = ?", (encode_state(state), seq))
    assert main(["verify", "--data-dir", str(tmp_path)]) == 1
    assert "differs from the full fold" in capsys.readouterr().err


async def test_an_unreadable_snapshot_is_skipped_at_start(tmp_path: Path) -> None:
    path, live = await logged_with_snapshots(tmp_path)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE snapshots SET state = x'00ff'")
    reopened = await Ledger.open(path, snapshot_every=0)
    assert reopened.snapshot_seq == 0  # fell back to the full fold
    assert reopened.state == live
    await reopened.close()


async def test_a_snapshot_in_parts_is_used_whole_and_skipped_with_a_part_missing(
    tmp_path: Path,
) -> None:
    """Catches a snapshot stored in parts (``snapshot_parts``, each written between the
    log's commits) read back as its ``snapshots`` row alone, or with a part missing
    taken for the projection: the start must use it whole, and fold the log instead
    once a part is gone."""
    path = db_path(tmp_path)
    ledger = await Ledger.open(path, snapshot_every=0)
    ledger.snapshot_part_bytes = 512
    await feed(ledger, 30)
    await ledger.snapshot()
    live = ledger.state
    await ledger.close()
    with sqlite3.connect(path) as conn:
        parts = conn.execute("SELECT count(*) FROM snapshot_parts").fetchone()[0]
    assert parts > 2
    reopened = await Ledger.open(path, snapshot_every=0)
    assert reopened.snapshot_seq == live.last_seq  # started from it
    assert reopened.state == live
    await reopened.close()
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM snapshot_parts WHERE part = 1")
    reopened = await Ledger.open(path, snapshot_every=0)
    assert reopened.snapshot_seq == 0  # fell back to the full fold
    assert reopened.state == live
    await reopened.close()


async def test_a_snapshot_in_parts_is_decoded_part_by_part_whatever_the_cut(
    tmp_path: Path,
) -> None:
    """Catches the documents of a compact snapshot (the head, then the alerts, the
    deliveries and the open fingerprints, ``_CHUNK`` values each), decoded as each part
    is read, misread where a part ends inside one, or inside the size before one: parts
    of 1, 3 and 5 bytes cut every size field, 61 and 700 bytes cut documents at odd
    places; each start must use the snapshot and be the fold."""
    path = db_path(tmp_path)
    ledger = await Ledger.open(path, snapshot_every=0)
    await feed(ledger, 30)
    live = ledger.state
    assert live.alerts
    assert live.deliveries
    assert live.open_by_fingerprint
    for part_bytes in (1, 3, 5, 61, 700):
        ledger.snapshot_part_bytes = part_bytes
        await ledger.snapshot()
        with sqlite3.connect(path) as conn:
            parts = conn.execute("SELECT count(*) FROM snapshot_parts").fetchone()[0]
        assert parts == -(-len(encode_state(live)) // part_bytes)
        restored, seq = load_state_fast(path)
        assert seq == live.last_seq  # started from it, not from the fold
        assert restored == live == load_state(path)
    await ledger.close()


async def test_a_compact_snapshot_is_documents_of_at_most_a_chunk_of_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Catches a compact snapshot written as one document (a start would hold all of
    its bytes at once) or chunks that lose or repeat values at their edges: with two
    values a chunk, every map has several chunks and an odd one at its end."""
    monkeypatch.setattr(snapshots, "_CHUNK", 2)
    state = await folded_state(tmp_path)
    assert min(len(state.alerts), len(state.deliveries), len(state.open_by_fingerprint)) > 4
    encoded = encode_state(state)
    decoded = decode_state(encoded)
    assert decoded == state
    assert list(decoded.open_by_fingerprint) == list(state.open_by_fingerprint)
    monkeypatch.setattr(snapshots, "_CHUNK", 1024)
    assert len(encode_state(state)) < len(encoded)  # fewer documents, fewer sizes


async def test_a_snapshot_of_another_log_is_never_used(tmp_path: Path) -> None:
    """The anchor (the hash of the row it covers) ties a snapshot to its log."""
    path, _ = await logged_with_snapshots(tmp_path)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE snapshots SET anchor = zeroblob(32)")
    reopened = await Ledger.open(path, snapshot_every=0)
    assert reopened.snapshot_seq == 0
    assert reopened.state == load_state(path)
    await reopened.close()


async def folded_state(tmp_path: Path) -> State:
    """A projection with records of each kind the feed makes: alerts, open dedup
    entries, deliveries, hourly stats, counters (40 events over 7 fingerprints)."""
    ledger = await Ledger.open(db_path(tmp_path), snapshot_every=0)
    await feed(ledger, 40)
    state = ledger.state
    await ledger.close()
    assert state.alerts
    assert state.open_by_fingerprint
    assert state.deliveries
    assert state.hours
    return state


async def test_a_compact_snapshot_is_tagged_and_decodes_to_the_same_state(tmp_path: Path) -> None:
    state = await folded_state(tmp_path)
    compact = encode_state(state)
    assert compact.startswith(LAYOUT)
    assert decode_state(compact) == state
    named = encode_state(state, named=True)
    assert decode_state(named) == state
    assert len(compact) < len(named) / 2  # no field names


async def test_a_compact_snapshot_keys_alerts_and_deliveries_by_their_own_ids(
    tmp_path: Path,
) -> None:
    """Catches a start's projection holding each alert's and each delivery's key as a
    string of its own beside the id the value holds (msgspec decoding the two maps: ~24
    MiB more of a 1M-event projection, and 11% more of its start's CPU): the compact
    snapshot stores them as lists of values, keyed again by each value's id object, in
    the same order, the fold's keys."""
    state = await folded_state(tmp_path)
    decoded = decode_state(encode_state(state))
    assert decoded == state
    assert list(decoded.alerts) == list(state.alerts)
    assert list(decoded.deliveries) == list(state.deliveries)
    assert all(key is alert.id for key, alert in decoded.alerts.items())
    assert all(key is delivery.notification_id for key, delivery in decoded.deliveries.items())


async def test_a_compact_snapshot_decodes_one_reason_object_for_every_delivery(
    tmp_path: Path,
) -> None:
    """Catches a start's projection holding each delivery's reason as a string of its
    own (``Delivery.reason`` typed ``str``: ~16 MiB and 289,000 objects of a 1M-event
    start): typed as the reasons' ``Literal``, msgspec returns the literal's own object,
    as the fold, which takes it from the routed fact, holds it."""
    state = await folded_state(tmp_path)
    decoded = decode_state(encode_state(state))
    assert decoded == state
    reasons = [delivery.reason for delivery in decoded.deliveries.values()]
    assert len(reasons) > 1
    assert all(reason is reasons[0] for reason in reasons)
    named = decode_state(encode_state(state, named=True))
    assert [delivery.reason for delivery in named.deliveries.values()] == reasons


async def test_a_named_snapshot_is_maps_of_field_names_as_before(tmp_path: Path) -> None:
    """The base of a compacted log, and every snapshot written before the compact form:
    plain MessagePack maps that any version can read."""
    state = await folded_state(tmp_path)
    raw = msgspec.msgpack.decode(encode_state(state, named=True))
    alert = next(iter(raw["alerts"].values()))
    assert {"id", "fingerprint", "occurrences", "labels"} <= set(alert)
    assert set(raw["counters"]) >= {"received", "routed"}


async def test_a_named_snapshot_from_another_version_fills_defaults_and_drops_extras(
    tmp_path: Path,
) -> None:
    state = await folded_state(tmp_path)
    raw = msgspec.msgpack.decode(encode_state(state, named=True))
    for alert in raw["alerts"].values():
        del alert["acked_by"]  # a field an older version did not have
        alert["from_the_future"] = 1  # and one a newer version added
    decoded = decode_state(msgspec.msgpack.encode(raw))
    assert decoded == state  # acked_by defaults to None, as it is in state


def test_a_base_snapshot_of_the_older_ids_layout_still_knows_its_ids() -> None:
    """Catches the 24 h event ids of a compacted log's base forgotten on upgrade: a base
    written before ids were kept as digests holds them raw (``at``, with ``by_slice``
    beside it); they are still repeats after decoding, and the next event folded
    digests them, oldest first, ahead of its own."""
    raw = msgspec.msgpack.decode(encode_state(State(), named=True))
    raw["received_ids"] = {
        "at": {"late": T0 + 5, "early": T0},
        "by_slice": {T0 // 3_600_000_000: ["early", "late"]},
        "swept": T0 // 3_600_000_000,
    }
    ids = decode_state(msgspec.msgpack.encode(raw)).received_ids
    assert ids.repeated("early", T0 + 10)
    assert ids.repeated("late", T0 + 10)
    assert not ids.repeated("other", T0 + 10)
    ids.remember("new", T0 + 10, T0 + 10)
    assert ids.at == {}
    assert list(ids.seen) == [digest("early"), digest("late"), digest("new")]
    assert ids.repeated("late", T0 + 11)


SNAPSHOTS_IN_A_FRESH_PROCESS = """
import asyncio, functools, sys
from pathlib import Path
from tests.core.test_alert_index import big_projection
from tocsin.core import events as ev
from tocsin.store import snapshots
from tocsin.store.eventlog import EventLog, Fact

def rss_anon():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024

async def main():
    state = big_projection(3000)
    for i in range(40_000):
        state.received_ids.remember(f"e{i}", i, i)
    log = await EventLog.open(Path(sys.argv[1]))
    before = rss_anon()
    for seq in range(1, 6):  # as the ledger takes them: encoded here, written by the log's thread
        await log.append([Fact(ev.AlertResolveIgnored(fingerprint="fp"))], seq)
        snapshot = snapshots.Snapshot(
            log.last_seq, 0, log.last_hash, snapshots.encode_state(state)
        )
        steps = functools.partial(snapshots.storing, snapshot=snapshot, part_bytes=256 << 10)
        del snapshot
        await log.write_in_turns(steps)
        del steps
    print(rss_anon() - before)
    await log.close()

asyncio.run(main())
"""


def test_a_snapshot_gives_back_the_memory_it_took(tmp_path: Path) -> None:
    """Catches the first snapshot of a run raising RSS for good (the soak's RSS step at
    50,000 events): its encoding and SQLite's pages were freed into a worker thread's
    malloc arena, which kept them: +4.7 to +10 MiB after five snapshots of a 1 MiB
    projection in a fresh process; given back (``malloc_trim``), ~+0.2 MiB. Written as
    the ledger writes one: encoded on the loop, stored in parts by the log's thread."""
    path = tmp_path / "log.db"
    done = subprocess.run(
        [sys.executable, "-c", SNAPSHOTS_IN_A_FRESH_PROCESS, str(path)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        timeout=120,
    )
    grew_mib = float(done.stdout)
    # Without the trim: +4.7 MiB at the least (measured); with it ~+0.2, and up to 2.6
    # seen once while two test suites ran at once on two cores.
    assert grew_mib < 3.5
    with sqlite3.connect(path) as conn:  # stored, the newest two kept, with their parts only
        assert conn.execute("SELECT seq FROM snapshots ORDER BY seq").fetchall() == [(4,), (5,)]
        parts = "SELECT DISTINCT seq FROM snapshot_parts ORDER BY seq"
        assert conn.execute(parts).fetchall() == [(4,), (5,)]


async def test_a_compact_snapshot_of_another_layout_is_not_used_and_not_a_fault(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, live = await logged_with_snapshots(tmp_path)
    other_layout = LAYOUT[:4] + bytes(8)
    with sqlite3.connect(path) as conn:
        blob = conn.execute("SELECT state FROM snapshots").fetchone()[0]
        conn.execute("UPDATE snapshots SET state = ?", (other_layout + blob[len(LAYOUT) :],))
    with pytest.raises(StaleSnapshot):
        decode_state(other_layout + blob[len(LAYOUT) :])
    reopened = await Ledger.open(path, snapshot_every=0)
    assert reopened.snapshot_seq == 0  # folded the log instead
    assert reopened.state == live
    await reopened.close()
    assert main(["verify", "--data-dir", str(tmp_path)]) == 0
    assert "checked against 0 snapshot(s)" in capsys.readouterr().out


async def test_the_ledgers_projection_is_frozen_before_the_gc_is_back_on(tmp_path: Path) -> None:
    """Catches the start collecting the freshly loaded projection once for nothing: were
    it frozen only after the load re-enabled the GC, the first allocation would run a
    young collection over all of it (~40 ms of a 1M-event start). No collection may run
    while the ledger opens, and the young generation is left empty."""
    path = db_path(tmp_path)
    ledger = await Ledger.open(path, snapshot_every=0)
    ids = itertools.count()
    async with ledger.batch() as batch:
        for i in range(600):  # each alert holds tuples: >700 containers (the threshold)
            add_firing(
                batch, ledger.state, i, hosts=600, timestamp=T0 + i, new_id=lambda: f"id{next(ids)}"
            )
    await ledger.snapshot()
    await ledger.close()
    collections: list[int] = []

    def collected(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(info["generation"])

    gc.collect()
    thresholds = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    gc.callbacks.append(collected)
    try:
        reopened = await Ledger.open(path, snapshot_every=0)
    finally:
        gc.callbacks.remove(collected)
        gc.set_threshold(*thresholds)
    try:
        assert reopened.snapshot_seq == reopened.state.last_seq  # started from the snapshot
        assert collections == []
        assert gc.get_count()[0] < 700  # frozen: the young generation starts empty
    finally:
        await reopened.close()
        gc.unfreeze()


async def test_a_stop_snapshots_a_long_tail_and_the_next_start_folds_none(tmp_path: Path) -> None:
    """Catches a start after a clean stop folding every row since the last periodic
    snapshot (up to twice ``snapshot_every``: ~0.4 s of a 1M-event log's start on top of
    its snapshot's ~0.65 s). A stop with at least a tenth of ``snapshot_every`` rows
    after the newest snapshot stores one of the state as closed, which the next start
    uses whole; a stop with fewer rows after it, or with snapshots off, takes none."""
    path = db_path(tmp_path)
    ledger = await Ledger.open(path, snapshot_every=1000)  # 100 rows after one: a snapshot
    await feed(ledger, 60)
    assert snapshot_seqs(path) == []  # none fell due
    live = ledger.state
    rows = ledger.event_log.last_seq
    assert rows >= 100
    await ledger.close()
    assert snapshot_seqs(path) == [rows]
    reopened = await Ledger.open(path, snapshot_every=1000)
    assert reopened.snapshot_seq == rows == reopened.state.last_seq
    assert reopened.state == live == load_state(path)
    await feed(reopened, 2, start=60)  # a few rows after it: folded faster than stored
    assert reopened.event_log.last_seq - rows < 100
    await reopened.close()
    assert snapshot_seqs(path) == [rows]
    off = await Ledger.open(path, snapshot_every=0)
    await feed(off, 60, start=62)
    await off.close()
    assert snapshot_seqs(path) == [rows]


async def test_a_snapshot_taken_again_at_the_same_seq_in_fewer_parts_is_used(
    tmp_path: Path,
) -> None:
    """Catches a snapshot stored at the seq of an older one keeping the older one's
    parts past its own count (``INSERT OR REPLACE`` per part): the start then refuses it
    as incomplete and folds the whole log. It happens at a stop with no row since a
    start that could not use its snapshot (written with another layout): the stop
    snapshots the same seq again, every time."""
    path = db_path(tmp_path)
    ledger = await Ledger.open(path, snapshot_every=0)
    await feed(ledger, 30)
    ledger.snapshot_part_bytes = 256
    await ledger.snapshot()
    live = ledger.state
    ledger.snapshot_part_bytes = 1024  # the same state again, in fewer parts
    await ledger.snapshot()
    await ledger.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM snapshots").fetchone()[0] == 1
        parts = conn.execute("SELECT count(*) FROM snapshot_parts").fetchone()[0]
    assert 1 < parts < len(encode_state(live)) // 256
    reopened = await Ledger.open(path, snapshot_every=0)
    assert reopened.snapshot_seq == live.last_seq  # used, not refused
    assert reopened.state == live
    await reopened.close()


def _logged_too(state: State, log: RetentionLog, write: Callable[[], object]) -> None:
    """What ``write`` logs, folded into ``state`` too."""
    before = len(log.rows)
    write()
    for seq, ts, fact in log.rows[before:]:
        fold(state, seq, ts, fact)


def _encoded_ids(state: State) -> set[str]:
    return {key for key, value in dict.items(state.deliveries) if encoded(value)}


def test_a_start_keeps_the_settled_deliveries_encoded_until_one_is_asked_for() -> None:
    """Catches a start that decodes every delivered or superseded notification of a
    long log (286,720 of 288,902 in a 1M-event log: ~20,000 of the start's ~110,000
    pages, docs/performance.md), a snapshot of a restored projection that decodes them
    to write them, and a restored projection that folds or sweeps otherwise than the
    log's fold: a late outcome of an encoded one, then the sweep a day later that lets
    the oldest go and keeps the newest still encoded."""
    log = RetentionLog()
    routed = [routed_in(log.feed(f"h{n}", RETENTION_T0 + n * MINUTE)) for n in range(5)]
    log.settle(routed[0], RETENTION_T0 + 10 * MINUTE, "delivered")
    log.settle(routed[1], RETENTION_T0 + 10 * MINUTE, "dead")
    log.supersede(routed[2], routed[0], RETENTION_T0 + 10 * MINUTE)
    log.settle(routed[4], RETENTION_T0 + 23 * HOUR, "delivered")  # routed[3] is still pending
    settled = {routed[n].notification_id for n in (0, 2, 4)}

    restored = decode_state(encode_state(log.state))
    assert restored == log.state
    assert log.state == restored
    assert isinstance(restored.deliveries, Deliveries)
    assert _encoded_ids(restored) == settled
    again = decode_state(encode_state(restored))
    assert _encoded_ids(restored) == settled  # written as kept, not decoded to be
    assert again == log.state
    assert _encoded_ids(again) == settled

    late = ev.DeliveryAttemptFailed(
        notification_id=routed[2].notification_id,
        receiver=routed[2].receiver,
        alert_id=routed[2].alert_id,
        fingerprint=routed[2].fingerprint,
        channel="webhook",
        attempt=3,
        error="HTTP 503",
        status_code=503,
        retry_in_seconds=1.0,
        at=RETENTION_T0 + 11 * MINUTE,
    )
    _logged_too(restored, log, lambda: log.append(RETENTION_T0 + 11 * MINUTE, late))
    assert restored == log.state
    assert _encoded_ids(restored) == settled - {routed[2].notification_id}

    _logged_too(restored, log, lambda: log.feed("h9", RETENTION_T0 + 24 * HOUR + 30 * MINUTE))
    assert routed[0].notification_id not in log.state.deliveries  # let go
    assert restored == log.state
    assert _encoded_ids(restored) == {routed[4].notification_id}


async def test_a_start_shares_each_tuple_of_receivers_and_the_empty_slots(
    tmp_path: Path,
) -> None:
    """Catches a start's projection holding a tuple and string(s) of its own per alert
    and per open fingerprint for the same few receivers, and two empty maps per open
    fingerprint (~49 MiB of a 1M-event start, ~13,000 of its first touches of a page):
    each value is one object, as the fold holds it, and an inhibitor's map is kept."""
    state = await folded_state(tmp_path)
    first = next(iter(state.open_by_fingerprint.values()))
    first.inhibits = {"rule": "db"}
    decoded = decode_state(encode_state(state))
    assert decoded == state
    receivers = [alert.receivers for alert in decoded.alerts.values()]
    receivers += [current.receivers for current in decoded.open_by_fingerprint.values()]
    assert len(receivers) > 2
    assert len(set(receivers)) == 1
    assert len({id(value) for value in receivers}) == 1
    [kept, *rest] = decoded.open_by_fingerprint.values()
    assert kept.inhibits == {"rule": "db"}
    assert kept.waits_on is NO_SLOTS
    assert rest
    assert all(c.inhibits is NO_SLOTS and c.waits_on is NO_SLOTS for c in rest)
