"""The log's hash chain: each row's ``hash`` is SHA-256 over the previous hash, the
seq, the append time, the kind and the canonical event bytes.

``chain_hash`` links one new row; ``walk`` is the one check of rows already written
(the log itself, before compaction archives it, and an archive), so every reader of
the chain agrees on what a break is and which row it is at."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Iterator
from typing import TypeVar

GENESIS = b"\x00" * 32

_PACK = struct.Struct(">qq")

ChainRow = tuple[int, int, str, bytes, bytes]
"""A row as the chain sees it: ``(seq, ts, kind, data, hash)``."""

T = TypeVar("T")


def chain_hash(previous: bytes, seq: int, ts: int, kind: str, data: bytes) -> bytes:
    """The hash of a row given the hash of the row before it."""
    return hashlib.sha256(previous + _PACK.pack(seq, ts) + kind.encode() + b"\x00" + data).digest()


class ChainBreak(Exception):
    """The row at ``seq`` does not follow the row before it: rows ``expected..seq - 1``
    are missing (``expected`` set), or its hash is not that of its content chained to
    the previous hash (``expected`` None: the row, or one before it, was changed)."""

    def __init__(self, seq: int, expected: int | None = None) -> None:
        self.seq = seq
        self.expected = expected
        super().__init__(
            f"seq {seq}: rows {expected}..{seq - 1} missing"
            if expected is not None
            else f"seq {seq}: hash does not chain"
        )


def walk(
    rows: Iterable[ChainRow], previous: bytes = GENESIS, first_seq: int | None = None
) -> Iterator[ChainRow]:
    """Each of ``rows`` once it is checked to follow the one before it, starting from
    ``previous`` (the hash the first row chains to): its seq is the one after the
    previous row's (``first_seq`` for the first, any seq when None), and its hash is
    recomputed from its content and matches. Raises ``ChainBreak`` at the first row
    that does not, after yielding every row before it."""
    for row, _ in walk_carrying(((row, None) for row in rows), previous, first_seq):
        yield row


def walk_carrying(
    rows: Iterable[tuple[ChainRow, T]], previous: bytes = GENESIS, first_seq: int | None = None
) -> Iterator[tuple[ChainRow, T]]:
    """``walk`` over rows that carry more than the chain covers (``verify`` reads each
    row's indexed columns with it): each ``(row, extra)`` is yielded once ``row`` is
    checked, so the check of the chain stays in one place."""
    expected = first_seq
    for item in rows:
        seq, ts, kind, data, digest = item[0]
        if expected is not None and seq != expected:
            raise ChainBreak(seq, expected)
        if chain_hash(previous, seq, ts, kind, data) != digest:
            raise ChainBreak(seq)
        previous, expected = digest, seq + 1
        yield item
