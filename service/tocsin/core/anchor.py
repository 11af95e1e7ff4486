"""The chain's head kept outside the log file, and what a file must hold to agree with it.

The hash chain alone proves only that the file is consistent with itself: whoever can
write the file can rewrite a row and recompute every hash after it, or drop the last
rows, and the chain still holds. So the writer publishes the head of the chain (seq,
hash, append time) to NATS (``subjects.ANCHOR``), and ``tocsin verify --against-nats``
(or ``--head SEQ:HASH``, a head written down elsewhere) checks that the file still has
that row with that hash. The file may be ahead of the anchor: the head is published at
most once a second, after the commit.
"""

from __future__ import annotations

import re

import msgspec

from tocsin.core.times import format_us


class Head(msgspec.Struct, kw_only=True, frozen=True):
    """A row of the log as its anchor records it: ``hash`` in lowercase hex, ``ts`` the
    row's append time (RFC 3339), for the people reading it."""

    seq: int
    hash: str
    ts: str | None = None

    def __str__(self) -> str:
        return f"{self.seq}:{self.hash}"


def head_of(seq: int, digest: bytes, ts: int) -> Head:
    """The head of a log whose last row is ``seq``, with ``digest``, appended at ``ts``."""
    return Head(seq=seq, hash=digest.hex(), ts=format_us(ts))


def encode_head(head: Head) -> bytes:
    return msgspec.json.encode(head)


def decode_head(payload: bytes) -> Head:
    """A published head; ``ValueError`` when it is not one."""
    try:
        head = msgspec.json.decode(payload, type=Head)
    except msgspec.DecodeError as error:
        raise ValueError(f"not a chain head: {error}") from error
    return _checked(head)


_SEQ_HASH = re.compile(r"^(\d+):([0-9a-fA-F]{64})$")


def parse_head(text: str) -> Head:
    """``SEQ:HASH`` (``tocsin verify --head``; the hash in hex, as ``verify`` prints
    it); ``ValueError`` naming the shape otherwise."""
    match = _SEQ_HASH.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not SEQ:HASH (a seq, a colon, 64 hex digits)")
    return _checked(Head(seq=int(match.group(1)), hash=match.group(2).lower()))


def _checked(head: Head) -> Head:
    if head.seq < 1 or not re.fullmatch(r"[0-9a-f]{64}", head.hash):
        raise ValueError(f"not a chain head: seq {head.seq}, hash {head.hash!r}")
    return head


def disagreement(anchored: Head, found: bytes | None, last_seq: int) -> str | None:
    """What is wrong with a log whose row ``anchored.seq`` has hash ``found`` (None:
    no such row) and whose last row is ``last_seq``, given the ``anchored`` head; None
    when the log holds that row with that hash (its chain, checked on its own, then
    carries the anchored history up to it)."""
    if found is None:
        if anchored.seq > last_seq:
            return (
                f"the anchor is at seq {anchored.seq} but the log ends at seq {last_seq}: "
                f"rows {last_seq + 1}..{anchored.seq} were dropped "
                "(or this file is an older copy of the log)"
            )
        return f"the anchor's seq {anchored.seq} is not in the log (compacted into an archive?)"
    if found.hex() != anchored.hash:
        return (
            f"seq {anchored.seq} has hash {found.hex()} but the anchor says {anchored.hash}: "
            "the log up to that row is not the history that was anchored (rewritten, "
            "or its tail dropped and written again)"
        )
    return None
