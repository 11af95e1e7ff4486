"""The one chain walk: every reader of the hash chain (verify, compaction before it
archives, an archive's check) asks it, so it must pass a sound chain whole and stop at
the first row that does not follow, naming that row and why."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator

import pytest

from tocsin.store.chain import (
    GENESIS,
    ChainBreak,
    ChainRow,
    chain_hash,
    hashes_of,
    kind_part,
    walk,
)


def chained(count: int, first_seq: int = 1, previous: bytes = GENESIS) -> list[ChainRow]:
    rows = []
    for seq in range(first_seq, first_seq + count):
        kind, data = "alert.received", b'{"n":%d}' % seq
        previous = chain_hash(previous, seq, 1_000 + seq, kind, data)
        rows.append((seq, 1_000 + seq, kind, data, previous))
    return rows


def test_a_sound_chain_is_walked_whole() -> None:
    rows = chained(5)
    assert list(walk(rows)) == rows
    assert list(walk(rows, GENESIS, first_seq=1)) == rows
    assert list(walk([])) == []


def test_a_chain_that_goes_on_from_an_anchor_is_walked_from_it() -> None:
    rows = chained(6)
    assert list(walk(rows[3:], rows[2][4], first_seq=4)) == rows[3:]
    with pytest.raises(ChainBreak) as broken:
        list(walk(rows[3:]))  # from the genesis hash instead of row 3's
    assert (broken.value.seq, broken.value.expected) == (4, None)


def test_an_edited_row_is_the_first_bad_one_and_the_rows_before_it_were_yielded() -> None:
    rows = chained(6)
    seq, ts, kind, data, digest = rows[3]
    rows[3] = (seq, ts, kind, data.replace(b"4", b"5"), digest)
    walked = walk(rows, GENESIS, first_seq=1)
    assert [next(walked)[0] for _ in range(3)] == [1, 2, 3]
    with pytest.raises(ChainBreak) as broken:
        next(walked)
    assert (broken.value.seq, broken.value.expected) == (4, None)
    assert str(broken.value) == "seq 4: hash does not chain"


@pytest.mark.parametrize("field", [1, 2, 4])  # ts, kind, hash: each is covered
def test_every_column_is_covered_by_the_hash(field: int) -> None:
    rows = chained(3)
    changed = list(rows[1])
    changed[field] = {1: 7, 2: "alert.routed", 4: b"\x01" * 32}[field]
    rows[1] = tuple(changed)  # type: ignore[assignment]
    with pytest.raises(ChainBreak) as broken:
        list(walk(rows))
    assert broken.value.seq == 2


def test_a_removed_row_is_named_by_the_gap_it_leaves() -> None:
    rows = chained(6)
    del rows[2:4]  # seqs 3 and 4
    with pytest.raises(ChainBreak) as broken:
        list(walk(rows))
    assert (broken.value.seq, broken.value.expected) == (5, 3)
    assert str(broken.value) == "seq 5: rows 3..4 missing"


def test_the_first_seq_is_checked_only_when_given() -> None:
    rows = chained(3, first_seq=10)
    assert list(walk(rows)) == rows
    with pytest.raises(ChainBreak) as broken:
        list(walk(rows, GENESIS, first_seq=9))
    assert (broken.value.seq, broken.value.expected) == (10, 9)


def test_the_walk_reads_no_further_than_the_first_break() -> None:
    """Lazy: a caller folding a million rows stops at the break, not after the log."""
    rows = chained(3)
    rows[1] = (*rows[1][:4], b"\x00" * 32)

    def source() -> Iterator[ChainRow]:
        yield from rows[:2]
        raise AssertionError("read past the break")

    with pytest.raises(ChainBreak):
        list(walk(source()))


def test_a_rows_hash_is_sha256_over_the_previous_hash_seq_time_kind_and_data() -> None:
    """Catches a change to the chain's formula (DESIGN.md: SHA-256 over the previous
    hash, the seq, the append time, the kind and the canonical event bytes) when the
    writer chains a batch in one loop (``hashes_of``) rather than a call a row: every log
    written before would then fail ``verify``."""
    previous, ts = b"\x05" * 32, 1_775_000_000_000_000
    rows = [("alert.received", b'{"n":1}'), ("alert.suppressed", b'{"n":2}')]
    expected, digest = [], previous
    for seq, (kind, data) in enumerate(rows, 41):
        head = struct.pack(">qq", seq, ts) + kind.encode() + b"\x00"
        digest = hashlib.sha256(digest + head + data).digest()
        expected.append(digest)
    assert hashes_of(previous, 41, ts, [(kind_part(kind), data) for kind, data in rows]) == expected
    assert chain_hash(expected[0], 42, ts, *rows[1]) == expected[1]
    assert hashes_of(previous, 41, ts, []) == []
