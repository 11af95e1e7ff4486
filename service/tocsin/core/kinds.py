"""One decision per event kind, which mypy holds exhaustive.

Every module that treats kinds differently (the fold, the messages a fact justifies,
metrics, route spans, read models, the dashboard's timeline) decides in one function
of the kind, that names every member of ``events.Event`` and ends in ``assert_never``::

    def _choose(kind: type[ev.Event]) -> Handler | None:
        if issubclass(kind, ev.AlertRouted):
            return handled_by(kind, _routed)
        ...
        if issubclass(kind, ev.ConfigLoaded | ev.LogCompacted):
            return None  # nothing to do here: decided, not forgotten
        assert_never(kind)

A kind added to ``Event`` then fails ``mypy --strict`` at each such ``assert_never``
until that module says what the kind means there; were mypy skipped, the import fails
instead, since ``by_kind`` asks the function about every kind.

``by_kind`` asks once per kind, at import, and keeps the answers in a dict keyed by the
event's class: dispatching an event is ``table[type(event)]``, one dict lookup, as
cheap as a hand-written table (the fold's hot path) and cheaper than ``match`` or an
``isinstance`` chain, which test the kinds one after the other on every event.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar, get_args

from tocsin.core.events import Event

H = TypeVar("H")
K = TypeVar("K", bound=Event)
P = ParamSpec("P")
R = TypeVar("R")

KINDS: tuple[type[Event], ...] = get_args(Event)
"""Every kind of event, in the order of the ``Event`` union."""


def tag_of(kind: type[Event]) -> str:
    """A kind's tag: its ``kind`` in the log (``StoredRow.kind``, ``EventRecord.kind``)."""
    tag = kind.__struct_config__.tag
    assert isinstance(tag, str)
    return tag


def by_kind(choose: Callable[[type[Event]], H]) -> dict[type[Event], H]:
    """What ``choose`` decides for each kind, keyed by the kind: look an event up by
    ``type(event)``."""
    return {kind: choose(kind) for kind in KINDS}


def by_tag(choose: Callable[[type[Event]], H]) -> dict[str, H]:
    """What ``choose`` decides for each kind, keyed by its tag: for rows as the log
    stores them, whose kind is known before (or without) decoding the event."""
    return {tag_of(kind): choose(kind) for kind in KINDS}


def handled_by(
    kind: type[K], handler: Callable[Concatenate[K, P], R]
) -> Callable[Concatenate[Any, P], R]:
    """``handler``, once mypy has checked that its first parameter takes events of
    ``kind``: what a choice returns, so a handler cannot be paired with another kind.
    Tables hold handlers whose event parameter is ``Any``: the lookup by ``type(event)``
    is what makes the event the right kind."""
    return handler
