"""The projection's deliveries by notification id, with those settled for good kept
encoded until something asks for one (``Deliveries``).

A start with a snapshot decodes what it reads, and of a long log's deliveries nearly
all are delivered or superseded (286,720 of 288,902 in ``bench/log_scale.py``'s
1M-event log): nothing reads one of those again but a query by its id, a late copy of
an outcome, or the retention sweep that lets it go. Decoded, each was a struct of 17
fields with strings and ints of its own, ~450 bytes and a good part of a start's time
(docs/performance.md, W4); kept as its encoding (``msgspec.Raw``, a view of the bytes
the snapshot was read into), it is one small object until it is asked for, then
decoded and kept decoded. Only a snapshot's decode makes a ``Deliveries``
(``tocsin.store.snapshots``); a projection folded from the log holds a plain dict, and
the fold's lookups stay the dict's own.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, TypeVar, cast, overload

import msgspec
from msgspec import Raw

from tocsin.core.state import Delivery, DeliveryStatus

if TYPE_CHECKING:
    from _collections_abc import dict_items, dict_values

_T = TypeVar("_T")

_decoder = msgspec.msgpack.Decoder(Delivery)


class _Absent:
    """What ``dict.get`` returns for a key not there (``None`` may be a default)."""


_ABSENT = _Absent()


class _Settled(msgspec.Struct, array_like=True, gc=False):
    """What the retention sweep reads of an encoded delivery: ``Delivery``'s first
    fields (an array-like struct decodes the leading values of a longer array)."""

    status: DeliveryStatus
    settled_ts: int | None
    alert_id: str


_settled_decoder = msgspec.msgpack.Decoder(_Settled)


class Deliveries(dict[str, Delivery]):
    """A dict of deliveries some of whose values are still encoded (``msgspec.Raw``,
    always of a delivered or superseded delivery): every way of reading a value decodes
    it first and keeps it decoded. ``values()`` and ``items()`` decode every one;
    readers that only need what may still be sent ask ``open_deliveries``, and those
    that only read ``each_delivery``, neither of which decodes for good."""

    __slots__ = ()

    def _thaw(self, key: str, value: Raw) -> Delivery:
        delivery: Delivery = _decoder.decode(value)
        dict.__setitem__(self, key, delivery)
        return delivery

    def __getitem__(self, key: str) -> Delivery:
        value: Delivery | Raw = dict.__getitem__(self, key)
        return self._thaw(key, value) if isinstance(value, Raw) else value

    @overload
    def get(self, key: str, default: None = None, /) -> Delivery | None: ...
    @overload
    def get(self, key: str, default: Delivery, /) -> Delivery: ...
    @overload
    def get(self, key: str, default: _T, /) -> Delivery | _T: ...
    def get(self, key: str, default: object = None, /) -> object:
        value: Delivery | Raw | _Absent = dict.get(self, key, _ABSENT)
        if isinstance(value, Delivery):
            return value
        return default if isinstance(value, _Absent) else self._thaw(key, value)

    @overload
    def pop(self, key: str, /) -> Delivery: ...
    @overload
    def pop(self, key: str, default: Delivery, /) -> Delivery: ...
    @overload
    def pop(self, key: str, default: _T, /) -> Delivery | _T: ...
    def pop(self, key: str, default: object = _ABSENT, /) -> object:
        value = dict.pop(_stored(self), key, _ABSENT)
        if isinstance(value, _Absent):
            if isinstance(default, _Absent):
                raise KeyError(key)
            return default
        return _decoder.decode(value) if isinstance(value, Raw) else value

    def thaw(self) -> None:
        """Decode every value still encoded."""
        stored = _stored(self)
        for key, value in [
            (key, value) for key, value in dict.items(stored) if isinstance(value, Raw)
        ]:
            self._thaw(key, value)

    def values(self) -> dict_values[str, Delivery]:
        self.thaw()
        return dict.values(self)

    def items(self) -> dict_items[str, Delivery]:
        self.thaw()
        return dict.items(self)

    def __iter__(self) -> Iterator[str]:
        # Defined so that ``dict(d)``, ``{**d}`` and ``other.update(d)`` take the path
        # that reads each value through ``__getitem__``, never copying an encoding.
        return dict.__iter__(self)

    def copy(self) -> Deliveries:
        return Deliveries(dict.copy(self))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, dict):
            return NotImplemented
        return len(self) == len(other) and dict(_peeked(self)) == dict(_peeked(other))

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    __hash__ = None

    def __repr__(self) -> str:
        return f"Deliveries({dict(_peeked(self))!r})"


def _stored(deliveries: dict[str, Delivery]) -> dict[str, Delivery | Raw]:
    """The dict as it is stored: a value may still be an encoding."""
    return cast("dict[str, Delivery | Raw]", deliveries)


def _peeked(deliveries: dict[str, Delivery]) -> Iterator[tuple[str, Delivery]]:
    """Every delivery, those still encoded decoded for the caller only."""
    for key, value in dict.items(_stored(deliveries)):
        yield key, (_decoder.decode(value) if isinstance(value, Raw) else value)


def each_delivery(deliveries: dict[str, Delivery]) -> Iterator[Delivery]:
    """Every delivery, to read: those still encoded are decoded for the caller only,
    not kept (a scan for one receiver's name must not decode a long log for good)."""
    for _, delivery in _peeked(deliveries):
        yield delivery


def open_deliveries(deliveries: dict[str, Delivery]) -> Iterable[Delivery]:
    """The deliveries not kept encoded: every one that may still be sent (pending,
    retrying, dead) is among them, with the settled ones decoded so far."""
    if type(deliveries) is dict:
        return deliveries.values()
    return [value for value in dict.values(_stored(deliveries)) if isinstance(value, Delivery)]


def sweep_facts(
    deliveries: dict[str, Delivery],
) -> Iterator[tuple[str, DeliveryStatus, int | None, str]]:
    """``(notification id, status, settled_ts, alert id)`` of every delivery, what the
    retention sweep decides by, read from the encoding of those still encoded (only
    these three fields) without decoding them for good."""
    for key, value in list(dict.items(_stored(deliveries))):
        if isinstance(value, Raw):
            settled = _settled_decoder.decode(value)
            yield key, settled.status, settled.settled_ts, settled.alert_id
        else:
            yield key, value.status, value.settled_ts, value.alert_id


def encoded(value: Delivery | Raw) -> bool:
    """Whether a value read with ``dict``'s own methods is still an encoding."""
    return isinstance(value, Raw)
