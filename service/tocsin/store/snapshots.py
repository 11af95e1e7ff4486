"""How a projection is stored: a snapshot's bytes, and back.

A start on a long log is mostly the time to read and decode the newest snapshot, so
periodic snapshots are MessagePack *arrays*: the projection's structs are
``array_like``, which leaves every field name out (a million-event projection is
~2.5x smaller than as maps, and decodes faster). Arrays are positional, so such a
snapshot starts with a layout tag derived from every struct's fields; one written by
a version whose structs differ is not decoded (``StaleSnapshot``: the log after an
older snapshot, or the whole log, is folded instead, as for any unusable snapshot).
Its two largest maps, the alerts and the deliveries, are stored as lists of their
values (``_Compact``), each keyed again by its own id as it is decoded.

The base snapshot of a compacted log is different: it stands for rows that are gone,
so every later version must read it. It is stored *named* (MessagePack maps keyed by
field name, the format of every snapshot before the layout tag); a named snapshot
decodes whatever fields it has, missing ones taking their defaults.
"""

from __future__ import annotations

import ctypes
import hashlib
import sqlite3
import struct
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect as mi

from tocsin.core import events as ev
from tocsin.core.fold import recount_open
from tocsin.core.state import Alert, Delivery, State
from tocsin.store import tables


class _Compact(msgspec.Struct, array_like=True, gc=False):
    """A compact snapshot's body: ``state`` without its alerts and deliveries, which
    are lists of their values. A start rebuilds those two maps keyed by each value's own
    id (``Alert.id``, ``Delivery.notification_id``, the keys the fold files them under),
    in one comprehension each: a 1M-event start's CPU 0.72 -> 0.65 s against msgspec
    decoding them as maps, whose every key was a second string object (25 MiB more of
    the projection); encoding the lists costs ~13 ms more (docs/performance.md, W4)."""

    alerts: list[Alert]
    deliveries: list[Delivery]
    state: State


LAYOUT = b"TSNP" + hashlib.blake2b(repr(mi.type_info(_Compact)).encode(), digest_size=8).digest()

_compact_encoder = msgspec.msgpack.Encoder()
_compact_decoder = msgspec.msgpack.Decoder(_Compact)


def _named_twin(cls: type[msgspec.Struct], made: dict[type, type]) -> type[msgspec.Struct]:
    """A map-encoded struct with ``cls``'s fields, defaults and nested types (each
    projection struct in them replaced by its own twin): what a named snapshot is
    decoded into and encoded from, converted to and from ``cls`` by msgspec in C."""
    if cls in made:
        return made[cls]
    hints = typing.get_type_hints(cls)
    fields = [
        ev.field_spec(info, _twin_type(hints[info.name], made))
        for info in msgspec.structs.fields(cls)
    ]
    twin = msgspec.defstruct(cls.__name__, fields, kw_only=True, gc=False, module=__name__)
    made[cls] = twin
    return twin


def _twin_type(hint: Any, made: dict[type, type]) -> Any:
    if isinstance(hint, type) and issubclass(hint, msgspec.Struct):
        return _named_twin(hint, made)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is dict:
        return dict[args[0], _twin_type(args[1], made)]  # type: ignore[misc,valid-type]
    if origin is list:
        return list[_twin_type(args[0], made)]  # type: ignore[misc]
    if origin in (typing.Union, types.UnionType):
        return typing.Union[tuple(_twin_type(a, made) for a in args)]  # noqa: UP007
    return hint


_NamedState = _named_twin(State, {})
_named_decoder = msgspec.msgpack.Decoder(_NamedState)


class StaleSnapshot(msgspec.DecodeError):
    """A compact snapshot written with another layout of the projection's structs."""


def encode_state(state: State, *, named: bool = False) -> bytes:
    """A snapshot of ``state``: compact and tagged, or ``named`` for a compaction base."""
    if named:
        return msgspec.msgpack.encode(msgspec.convert(state, _NamedState, from_attributes=True))
    rest = msgspec.structs.replace(state, alerts={}, deliveries={})
    body = _Compact(list(state.alerts.values()), list(state.deliveries.values()), rest)
    return LAYOUT + _compact_encoder.encode(body)


def decode_state(blob: bytes | bytearray) -> State:
    """A projection from a snapshot of either form; raises ``StaleSnapshot`` for a
    compact one of another layout and ``msgspec.DecodeError`` if corrupt."""
    if blob[: len(LAYOUT)] == LAYOUT:
        body = _compact_decoder.decode(memoryview(blob)[len(LAYOUT) :])
        state = body.state
        state.alerts = {alert.id: alert for alert in body.alerts}
        state.deliveries = {delivery.notification_id: delivery for delivery in body.deliveries}
        return state
    if blob[:4] == LAYOUT[:4]:
        raise StaleSnapshot("snapshot written with another layout of the projection")
    if stored_size(blob) is not None:
        raise msgspec.DecodeError("snapshot stored in parts that are not all there")
    named = _named_decoder.decode(blob)
    try:
        state = msgspec.convert(named, State, from_attributes=True)
    except msgspec.ValidationError as error:
        raise msgspec.DecodeError(f"named snapshot does not fit the projection: {error}") from error
    recount_open(state)  # a named snapshot of an older version lacks the order keys
    return state


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The projection as of ``seq``, valid only with the log whose row ``seq`` has the
    hash ``anchor``. A cache for fast starts: it never replaces the log."""

    seq: int
    ts: int
    anchor: bytes
    state: bytes | bytearray  # bytearray: joined from parts (``read_snapshots``)


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``; ``None`` under another C library (nothing to do)."""
    try:
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


_MALLOC_TRIM = _malloc_trim()


PART_BYTES = 1 << 20
"""A snapshot larger than this is stored in parts of this size, each a transaction of
its own on the log's thread, so a batch's commit waits behind one part (~2 ms), not
the whole (a 10 MB W2 projection: ~130 ms to write, prune and fsync; issue #20)."""

PARTS_TAG = b"TSPT"
"""Begins the ``state`` of a snapshot stored in parts: the tag, then the number of parts
and the state's size (``_PARTS``)."""

_PARTS = struct.Struct(">IQ")


class SnapshotAbandoned(RuntimeError):
    """A snapshot not stored: its anchor row is not in the log (the batches it was taken
    on top of failed to commit)."""


def storing(
    conn: sqlite3.Connection, snapshot: Snapshot, keep: int = 2, part_bytes: int = PART_BYTES
) -> Iterator[None]:
    """Store ``snapshot`` on ``conn`` (the log's writer connection, on its thread) one
    transaction a step, then drop all but the newest ``keep`` and the parts of none.

    Steps, so that the log's thread runs the batches' commits queued meanwhile between
    them (``EventLog.write_in_turns``): the ledger encodes the projection under its lock
    and writes it without, never fighting a commit for SQLite's write lock. The
    snapshot may be taken before the batches it includes are committed: it is stored
    only if its anchor is the hash of its row, which the log's thread, running jobs in
    the order queued, has written (or refused) by the first step.

    Then the memory it took goes back to the system: the encoding is freed, and SQLite's
    pages allocated, on another thread than the one that made them, whose malloc arena
    kept them once freed (~4.7 MiB after a 1 MiB snapshot, ~15 MiB after a 5 MiB one),
    so the first snapshot of a run raised RSS for good; ``malloc_trim`` returns the free
    pages of every arena (glibc; elsewhere nothing is done)."""
    seq, ts, anchor, encoded = snapshot.seq, snapshot.ts, snapshot.anchor, snapshot.state
    del snapshot  # the encoding's last reference is this frame's: freed when written
    found = conn.execute(tables.HASH_AT, (seq,)).fetchone()
    if found is None or bytes(found[0]) != anchor:
        raise SnapshotAbandoned(f"the log has no row {seq} with the snapshot's anchor")
    # One taken again at the seq of a snapshot stored (or half stored before a crash):
    # a stop with no row since a start that could not use its snapshot (another
    # layout). The old one goes whole, its row then its parts, first: INSERT OR REPLACE
    # alone would keep its parts past the new count, and the start refuse the new one.
    conn.execute(tables.DROP_SNAPSHOT_AT, (seq,))
    while conn.execute(tables.DROP_A_LOOSE_PART).rowcount:
        yield
    if len(encoded) > part_bytes:
        whole = memoryview(encoded)
        starts = range(0, len(whole), part_bytes)
        for part, start in enumerate(starts):
            conn.execute(tables.PUT_SNAPSHOT_PART, (seq, part, whole[start : start + part_bytes]))
            yield
        whole.release()
        encoded = PARTS_TAG + _PARTS.pack(len(starts), len(encoded))
    with tables.immediate_transaction(conn):
        conn.execute(tables.PUT_SNAPSHOT, (seq, ts, anchor, encoded))
        conn.execute(tables.PRUNE_SNAPSHOTS, (keep,))
    del encoded
    while conn.execute(tables.DROP_A_LOOSE_PART).rowcount:
        yield
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def stored_size(state: bytes | bytearray) -> tuple[int, int] | None:
    """``(parts, size)`` if ``state`` is the ``snapshots`` row of a snapshot stored in
    parts, else ``None``."""
    if state[: len(PARTS_TAG)] != PARTS_TAG:
        return None
    parts, size = _PARTS.unpack_from(state, len(PARTS_TAG))
    return parts, size


def read_snapshots(path: Path) -> Iterator[Snapshot]:
    """Snapshots whose anchor matches the log, newest first (the base snapshot of a
    compacted log matches the anchor its ``log.compacted`` event recorded)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        try:
            # The list first, each blob when asked for: a start reads only the newest
            # (a million-event projection is ~60-150 MB).
            rows = conn.execute(tables.SNAPSHOTS_OF_THE_LOG).fetchall()
        except sqlite3.OperationalError:  # a log from before snapshots existed
            rows = []
        for seq, ts, anchor in rows:
            found = conn.execute(tables.SNAPSHOT_STATE, (seq,)).fetchone()
            if found is not None:  # gone if a writer pruned it meanwhile
                yield Snapshot(seq, ts, bytes(anchor), _joined(conn, seq, bytes(found[0])))
    finally:
        conn.close()
    base = read_base(path)
    if base is not None:
        yield base


def _joined(conn: sqlite3.Connection, seq: int, state: bytes) -> bytes | bytearray:
    """A snapshot's state: ``state`` itself, or the parts it names joined; if they are
    not all there, ``state`` (which ``decode_state`` refuses as unreadable)."""
    parts = stored_size(state)
    if parts is None:
        return state
    count, size = parts
    joined = bytearray()
    found = 0
    for (part,) in conn.execute(tables.SNAPSHOT_PARTS, (seq,)):
        joined += part
        found += 1
    if found != count or len(joined) != size:
        return state
    return joined  # not copied into bytes: a million-event projection is ~60-150 MB


def compacted(path: Path) -> bool:
    """Whether rows were ever compacted out of this log."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        found = conn.execute(tables.ANY_COMPACTED).fetchone()
    finally:
        conn.close()
    return found is not None


def read_base(path: Path) -> Snapshot | None:
    """The base snapshot of a compacted log: the state of every archived row, valid
    only if it matches the anchor of the newest ``log.compacted`` event."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        compacted = conn.execute(tables.LAST_COMPACTED).fetchone()
        if compacted is None:
            return None
        event = ev.decode(bytes(compacted[0]))
        assert isinstance(event, ev.LogCompacted)
        row = conn.execute(tables.BASE_SNAPSHOT, (event.last_seq,)).fetchone()
    finally:
        conn.close()
    if row is None or bytes(row[2]).hex() != event.anchor:
        return None
    return Snapshot(row[0], row[1], bytes(row[2]), bytes(row[3]))
