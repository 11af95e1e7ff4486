"""The log's hash chain: each row's ``hash`` is SHA-256 over the previous hash, the
seq, the append time, the kind and the canonical event bytes."""

from __future__ import annotations

import hashlib
import struct

GENESIS = b"\x00" * 32

_PACK = struct.Struct(">qq")


def chain_hash(previous: bytes, seq: int, ts: int, kind: str, data: bytes) -> bytes:
    """The hash of a row given the hash of the row before it."""
    return hashlib.sha256(previous + _PACK.pack(seq, ts) + kind.encode() + b"\x00" + data).digest()
