"""The log's hash chain: each row's ``hash`` is SHA-256 over the previous hash, the
seq, the append time, the kind and the canonical event bytes.

``chain_hash`` links one new row; ``walk`` is the one check of rows already written
(the log itself, before compaction archives it, and an archive), so every reader of
the chain agrees on what a break is and which row it is at."""

from __future__ import annotations

import functools
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
    return hashes_of(previous, seq, ts, [(kind_part(kind), data)])[-1]


@functools.cache
def kind_part(kind: str) -> bytes:
    """A kind as its rows' hashes cover it: UTF-8, then a NUL (asked once a kind)."""
    return kind.encode() + b"\x00"


def hashes_of(
    previous: bytes, first_seq: int, ts: int, rows: Iterable[tuple[bytes, bytes]]
) -> list[bytes]:
    """The hashes of rows appended together at ``ts``, seqs from ``first_seq`` on, the
    first chained on ``previous``; each row is ``(kind_part(kind), data)``. The writer
    chains a batch's rows here in one loop: a call per row cost ~0.3 us of the router's
    ~0.8 a row (issue #20)."""
    sha256, pack, join = hashlib.sha256, _PACK.pack, b"".join
    hashes: list[bytes] = []
    seq = first_seq
    for kind, data in rows:
        previous = sha256(join((previous, pack(seq, ts), kind, data))).digest()
        hashes.append(previous)
        seq += 1
    return hashes


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
