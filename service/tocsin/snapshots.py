"""How a projection is stored: a snapshot's bytes, and back.

A start on a long log is mostly the time to read and decode the newest snapshot, so
periodic snapshots are MessagePack *arrays*: the projection's structs are
``array_like``, which leaves every field name out (a million-event projection is
~2.5x smaller than as maps, and decodes faster). Arrays are positional, so such a
snapshot starts with a layout tag derived from every struct's fields; one written by
a version whose structs differ is not decoded (``StaleSnapshot``: the log after an
older snapshot, or the whole log, is folded instead, as for any unusable snapshot).

The base snapshot of a compacted log is different: it stands for rows that are gone,
so every later version must read it. It is stored *named* (MessagePack maps keyed by
field name, the format of every snapshot before the layout tag); a named snapshot
decodes whatever fields it has, missing ones taking their defaults.
"""

from __future__ import annotations

import hashlib
import types
import typing
from typing import Any

import msgspec
import msgspec.inspect as mi

from tocsin.projections import State

LAYOUT = b"TSNP" + hashlib.blake2b(repr(mi.type_info(State)).encode(), digest_size=8).digest()

_compact_encoder = msgspec.msgpack.Encoder()
_compact_decoder = msgspec.msgpack.Decoder(State)


def _named_twin(cls: type[msgspec.Struct], made: dict[type, type]) -> type[msgspec.Struct]:
    """A map-encoded struct with ``cls``'s fields, defaults and nested types (each
    projection struct in them replaced by its own twin): what a named snapshot is
    decoded into and encoded from, converted to and from ``cls`` by msgspec in C."""
    if cls in made:
        return made[cls]
    hints = typing.get_type_hints(cls)
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for info in msgspec.structs.fields(cls):
        kind = _twin_type(hints[info.name], made)
        if info.default is not msgspec.NODEFAULT:
            fields.append((info.name, kind, info.default))
        elif info.default_factory is not msgspec.NODEFAULT:
            fields.append((info.name, kind, msgspec.field(default_factory=info.default_factory)))
        else:
            fields.append((info.name, kind))
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
    return LAYOUT + _compact_encoder.encode(state)


def decode_state(blob: bytes) -> State:
    """A projection from a snapshot of either form; raises ``StaleSnapshot`` for a
    compact one of another layout and ``msgspec.DecodeError`` if corrupt."""
    if blob[: len(LAYOUT)] == LAYOUT:
        return _compact_decoder.decode(memoryview(blob)[len(LAYOUT) :])
    if blob[:4] == LAYOUT[:4]:
        raise StaleSnapshot("snapshot written with another layout of the projection")
    named = _named_decoder.decode(blob)
    try:
        return msgspec.convert(named, State, from_attributes=True)
    except msgspec.ValidationError as error:
        raise msgspec.DecodeError(f"named snapshot does not fit the projection: {error}") from error
