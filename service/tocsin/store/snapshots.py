"""How a projection is stored: a snapshot's bytes, and back.

A start on a long log is mostly the time to read and decode the newest snapshot, so
periodic snapshots are MessagePack *arrays*: the projection's structs are
``array_like``, which leaves every field name out (a million-event projection is
~2.5x smaller than as maps, and decodes faster). Arrays are positional, so such a
snapshot starts with a layout tag derived from every struct's fields; one written by
a version whose structs differ is not decoded (``StaleSnapshot``: the log after an
older snapshot, or the whole log, is folded instead, as for any unusable snapshot).
After the tag come documents, each preceded by its size: the rest of the projection
(``_Head``), then its largest maps, the alerts, the deliveries that may still be sent
(lists of values, each keyed again by its own id), those settled for good (maps by id,
whose values a start keeps encoded: ``core.deliveries``) and the open fingerprints,
``_CHUNK`` values a document, so a snapshot stored in parts is decoded as its parts
are read.

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
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect as mi

from tocsin.core import events as ev
from tocsin.core.decide.dedup import NO_SLOTS, OpenAlert
from tocsin.core.deliveries import Deliveries, encoded
from tocsin.core.fold import recount_open
from tocsin.core.retention import LET_GO
from tocsin.core.state import Alert, Delivery, State
from tocsin.store import tables


class _Head(msgspec.Struct, array_like=True, gc=False):
    """A compact snapshot's first document: ``state`` without its alerts, deliveries
    and open fingerprints, and how many of each follow in the next documents, in
    that order (``_CHUNK`` values a document). The alerts and the deliveries that may
    still be sent are lists of values, keyed again by each value's own id at start
    (``Alert.id``, ``Delivery.notification_id``, the keys the fold files them under),
    in one comprehension each: msgspec decoding them as maps allocated every key as a
    second string (docs/performance.md, W4). The ``settled`` deliveries (delivered or
    superseded) are maps, decoded as keys and encodings kept as they are: their key
    is the only string made for them at start."""

    state: State
    alerts: int
    deliveries: int
    settled: int
    open: int


_CHUNK = 1024
"""Values a document: a few hundred KiB, so a start decodes a snapshot stored in parts
as the parts are read (``_documents``), never holding all of its bytes at once (a 68
MB buffer for a 1M-event projection: ~17,000 first touches of a page, and its copy).
The parts that hold settled deliveries stay, their encodings' home (~23 MB of the
1M-event log's 60 MB snapshot: their bytes, where a decoded delivery took ~450)."""

_SIZE = struct.Struct(">I")  # each document is preceded by its size

_FOLD = 2
"""Raised when the fold puts other values in the same fields (2: a settled delivery's
order key is empty), so that an older snapshot is folded anew rather than differ from
the log's fold (``tocsin verify``)."""

_SHAPE = (
    "documents",
    _FOLD,
    mi.type_info(_Head),
    mi.type_info(Alert),
    mi.type_info(Delivery),
)
LAYOUT = b"TSNP" + hashlib.blake2b(repr(_SHAPE).encode(), digest_size=8).digest()

_compact_encoder = msgspec.msgpack.Encoder()
_head_decoder = msgspec.msgpack.Decoder(_Head)
_alerts_decoder = msgspec.msgpack.Decoder(list[Alert])
_deliveries_decoder = msgspec.msgpack.Decoder(list[Delivery])
_settled_decoder = msgspec.msgpack.Decoder(dict[str, msgspec.Raw])
_open_decoder = msgspec.msgpack.Decoder(dict[str, OpenAlert])


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


def encode_state(state: State, *, named: bool = False) -> bytes | bytearray:
    """A snapshot of ``state``: compact and tagged, or ``named`` for a compaction base."""
    if named:
        if isinstance(state.deliveries, Deliveries):
            state = msgspec.structs.replace(state, deliveries=dict(state.deliveries))
        return msgspec.msgpack.encode(msgspec.convert(state, _NamedState, from_attributes=True))
    rest = msgspec.structs.replace(state, alerts={}, deliveries={}, open_by_fingerprint={})
    alerts = list(state.alerts.values())
    deliveries: list[Delivery] = []
    settled: list[tuple[str, Delivery]] = []  # an encoding kept since a start is written as is
    for key, delivery in dict.items(state.deliveries):
        if encoded(delivery) or delivery.status in LET_GO:
            settled.append((key, delivery))
        else:
            deliveries.append(delivery)
    opened = list(state.open_by_fingerprint.items())
    out = bytearray(LAYOUT)
    _put(out, _Head(rest, len(alerts), len(deliveries), len(settled), len(opened)))
    for values in (alerts, deliveries):
        for start in range(0, len(values), _CHUNK):
            _put(out, values[start : start + _CHUNK])
    for pairs in (settled, opened):
        for start in range(0, len(pairs), _CHUNK):
            _put(out, dict(pairs[start : start + _CHUNK]))
    return out


def _put(out: bytearray, value: object) -> None:
    """Append ``value`` to ``out`` as a document: its size, then its encoding."""
    at = len(out)
    out += bytes(_SIZE.size)
    _compact_encoder.encode_into(value, out, -1)
    _SIZE.pack_into(out, at, len(out) - at - _SIZE.size)


def decode_state(blob: bytes | bytearray | StoredParts) -> State:
    """A projection from a snapshot of either form, whole or as stored in parts;
    raises ``StaleSnapshot`` for a compact one of another layout and
    ``msgspec.DecodeError`` if corrupt or incomplete."""
    if isinstance(blob, StoredParts):
        parts = blob.read()
        try:
            first = b""
            for part in parts:  # enough for the tag: parts may be smaller than it
                first += part
                if len(first) >= len(LAYOUT):
                    break
            if first[: len(LAYOUT)] == LAYOUT:
                return _decode_documents(_documents(_then(memoryview(first)[len(LAYOUT) :], parts)))
            if first[:4] == LAYOUT[:4]:
                raise StaleSnapshot("snapshot written with another layout of the projection")
            blob = bytearray(first)  # not compact: decoded whole, as before
            for part in parts:
                blob += part
        finally:
            parts.close()  # its connection closed now, on this thread, however it ended
    if blob[: len(LAYOUT)] == LAYOUT:
        return _decode_documents(_documents((memoryview(blob)[len(LAYOUT) :],)))
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


def _then(first: memoryview, rest: Iterator[bytes]) -> Iterator[bytes | memoryview]:
    yield first
    yield from rest


def _documents(pieces: Iterable[bytes | memoryview]) -> Iterator[memoryview]:
    """The documents of a compact snapshot's body given in ``pieces`` (its parts, as
    they are read): each a view of its piece, or of a copy of it when it spans two or
    more. Each must be decoded before the next is asked for."""
    carry = bytearray()  # the beginning of a document that spans pieces
    for piece in pieces:
        view = memoryview(piece)
        at, end = 0, len(view)
        if carry:
            if len(carry) < _SIZE.size:
                at = min(_SIZE.size - len(carry), end)
                carry += view[:at]
                if len(carry) < _SIZE.size:
                    continue
            need = _SIZE.size + _SIZE.unpack_from(carry)[0] - len(carry)
            taken = min(need, end - at)
            carry += view[at : at + taken]
            at += taken
            if taken < need:
                continue
            yield memoryview(carry)[_SIZE.size :]
            carry = bytearray()
        while end - at >= _SIZE.size:
            size = _SIZE.unpack_from(view, at)[0]
            if end - at - _SIZE.size < size:
                break
            yield view[at + _SIZE.size : at + _SIZE.size + size]
            at += _SIZE.size + size
        carry = bytearray(view[at:])
    if carry:
        raise msgspec.DecodeError("snapshot ends inside a document")


def _decode_documents(documents: Iterator[memoryview]) -> State:
    first = next(documents, None)
    if first is None:
        raise msgspec.DecodeError("snapshot without a body")
    head = _head_decoder.decode(first)
    del first
    alerts: list[Alert] = []
    deliveries: list[Delivery] = []
    settled: list[dict[str, msgspec.Raw]] = []
    settled_count = 0
    opened = head.state.open_by_fingerprint
    receivers: dict[tuple[str, ...], tuple[str, ...]] = {}
    for document in documents:
        if len(alerts) < head.alerts:
            alerts += _shared_alerts(_alerts_decoder.decode(document), receivers)
        elif len(deliveries) < head.deliveries:
            deliveries += _deliveries_decoder.decode(document)
        elif settled_count < head.settled:
            settled.append(_settled_decoder.decode(document))
            settled_count += len(settled[-1])
        else:
            opened.update(_shared_open(_open_decoder.decode(document), receivers))
    found = (len(alerts), len(deliveries), settled_count, len(opened))
    if found != (head.alerts, head.deliveries, head.settled, head.open):
        raise msgspec.DecodeError("snapshot incomplete: documents missing")
    state = head.state
    state.alerts = {alert.id: alert for alert in alerts}
    by_id = {delivery.notification_id: delivery for delivery in deliveries}
    if settled:
        by_id = Deliveries(by_id)
        for encodings in settled:
            dict.update(by_id, encodings)  # the values kept encoded
    state.deliveries = by_id
    return state


def _shared_alerts(
    alerts: list[Alert], receivers: dict[tuple[str, ...], tuple[str, ...]]
) -> list[Alert]:
    """``alerts`` with each tuple of receivers the one object of its value, as the fold
    keeps them: a few distinct tuples, decoded as one tuple and string(s) of its own
    per alert (16 MiB of a 1M-event start). Done a document at a time, so the copies
    are freed before the next document's decode takes their memory again."""
    for alert in alerts:
        alert.receivers = receivers.setdefault(alert.receivers, alert.receivers)
    return alerts


def _shared_open(
    opened: dict[str, OpenAlert], receivers: dict[tuple[str, ...], tuple[str, ...]]
) -> dict[str, OpenAlert]:
    """``opened`` with the receivers shared as ``_shared_alerts`` shares them, and each
    empty ``inhibits`` and ``waits_on`` the fold's own empty map (``NO_SLOTS``, which
    the fold replaces, never fills): 33 MiB of a 1M-event start together, ~8,500 and
    ~4,500 first touches of a page (docs/performance.md, W4)."""
    for current in opened.values():
        current.receivers = receivers.setdefault(current.receivers, current.receivers)
        if not current.inhibits:
            current.inhibits = NO_SLOTS
        if not current.waits_on:
            current.waits_on = NO_SLOTS
    return opened


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The projection as of ``seq``, valid only with the log whose row ``seq`` has the
    hash ``anchor``. A cache for fast starts: it never replaces the log."""

    seq: int
    ts: int
    anchor: bytes
    state: bytes | bytearray


@dataclass(frozen=True, slots=True)
class StoredSnapshot:
    """A snapshot as ``read_snapshots`` yields it: its state whole, or its parts, each
    read when iterated (``StoredParts``)."""

    seq: int
    ts: int
    anchor: bytes
    state: bytes | bytearray | StoredParts


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


def read_snapshots(path: Path) -> Iterator[StoredSnapshot]:
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
                state = bytes(found[0])
                parts = stored_size(state)
                stored = state if parts is None else StoredParts(path, seq, *parts)
                yield StoredSnapshot(seq, ts, bytes(anchor), stored)
    finally:
        conn.close()
    base = read_base(path)
    if base is not None:
        yield StoredSnapshot(base.seq, base.ts, base.anchor, base.state)


class StoredParts:
    """A snapshot's state stored in parts, read one part at a time (``read``),
    so that ``decode_state`` decodes each part's documents as it is read, never
    holding the whole. Raises ``msgspec.DecodeError`` at the end if parts are missing
    (a writer may have pruned the snapshot since it was listed)."""

    def __init__(self, path: Path, seq: int, count: int, size: int) -> None:
        self.path, self.seq, self.count, self.size = path, seq, count, size

    def read(self) -> Generator[bytes, None, None]:
        found = length = 0
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            for (part,) in conn.execute(tables.SNAPSHOT_PARTS, (self.seq,)):
                found += 1
                length += len(part)
                yield part
                del part  # freed before the next is read, which reuses its memory
                # (unless settled deliveries in it are kept encoded: ``core.deliveries``)
        finally:
            conn.close()
        if found != self.count or length != self.size:
            raise msgspec.DecodeError("snapshot stored in parts that are not all there")


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
