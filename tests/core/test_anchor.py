"""When a log file agrees with its anchored chain head (core/anchor.py), without NATS
or files: the decisions ``tocsin verify --against-nats`` / ``--head`` print."""

from __future__ import annotations

import hashlib

import pytest

from tocsin.core.anchor import Head, decode_head, disagreement, encode_head, head_of, parse_head

DIGEST = hashlib.sha256(b"row 7").digest()
OTHER = hashlib.sha256(b"another row 7").digest()
HEAD = head_of(7, DIGEST, 1_790_000_000_000_000)


def test_a_log_holding_the_anchored_row_agrees_even_when_it_has_more() -> None:
    """The anchor lags the file by up to a second: rows after it are fine."""
    assert disagreement(HEAD, DIGEST, last_seq=7) is None
    assert disagreement(HEAD, DIGEST, last_seq=12) is None


def test_a_dropped_tail_is_named_by_the_rows_missing() -> None:
    """Catches: the last rows deleted, the chain still intact on its own."""
    problem = disagreement(HEAD, None, last_seq=4)
    assert problem is not None
    assert "log ends at seq 4" in problem
    assert "rows 5..7 were dropped" in problem


def test_a_rewritten_history_is_named_by_the_seq_and_both_hashes() -> None:
    """Catches: rows rewritten and the chain recomputed (or the tail dropped and
    rows appended again past the anchored seq)."""
    problem = disagreement(HEAD, OTHER, last_seq=9)
    assert problem is not None
    assert f"seq 7 has hash {OTHER.hex()}" in problem
    assert f"the anchor says {DIGEST.hex()}" in problem


def test_an_anchored_seq_gone_from_the_middle_of_the_log_fails() -> None:
    problem = disagreement(HEAD, None, last_seq=30)
    assert problem is not None
    assert "seq 7 is not in the log" in problem


def test_a_head_is_published_and_read_back_as_itself() -> None:
    assert HEAD.ts == "2026-09-21T14:13:20.000000Z"
    assert decode_head(encode_head(HEAD)) == HEAD
    with pytest.raises(ValueError, match="not a chain head"):
        decode_head(b'{"seq": 0, "hash": "00"}')
    with pytest.raises(ValueError, match="not a chain head"):
        decode_head(b"garbage")


def test_a_head_given_by_hand_is_seq_colon_hash() -> None:
    assert parse_head(f"7:{DIGEST.hex().upper()}") == Head(seq=7, hash=DIGEST.hex())
    assert str(parse_head(str(HEAD))) == f"7:{DIGEST.hex()}"
    for bad in ("7", f"x:{DIGEST.hex()}", "7:abc"):
        with pytest.raises(ValueError, match="is not SEQ:HASH"):
            parse_head(bad)
    with pytest.raises(ValueError, match="not a chain head: seq 0"):
        parse_head(f"0:{DIGEST.hex()}")
