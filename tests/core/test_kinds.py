"""The dispatch by event kind: every kind is known, and every choice names every kind.

mypy is the main check (a kind missing from a choice fails ``assert_never`` under
``mypy --strict``); these tests hold the runtime half: the union is the whole
vocabulary, and a choice that forgets a kind cannot even be imported.
"""

from __future__ import annotations

from typing import assert_never

import pytest

from tocsin.core import events as ev
from tocsin.core.kinds import KINDS, by_kind, by_tag, handled_by, tag_of


def defined_kinds() -> set[type[ev.Event]]:
    """Every event class ``events.py`` defines, whether or not the union lists it."""
    return {
        value
        for value in vars(ev).values()
        if isinstance(value, type) and issubclass(value, ev._Event) and value is not ev._Event
    }


def test_the_union_lists_every_event_class_once() -> None:
    # A class left out of ``Event`` would be out of reach of every exhaustiveness check
    # (and of the log's decoder).
    assert len(KINDS) == len(set(KINDS))
    assert set(KINDS) == defined_kinds()
    tags = [tag_of(kind) for kind in KINDS]
    assert len(tags) == len(set(tags))
    assert tag_of(ev.AlertSilenced) == "alert.silenced"


def test_a_choice_is_asked_about_every_kind_once() -> None:
    asked: list[type[ev.Event]] = []

    def choose(kind: type[ev.Event]) -> str:
        asked.append(kind)
        return tag_of(kind).upper()

    table = by_kind(choose)
    assert asked == list(KINDS)
    assert table[ev.AlertRouted] == "ALERT.ROUTED"
    assert by_tag(choose)["delivery.requeued"] == "DELIVERY.REQUEUED"


def test_a_choice_that_forgets_a_kind_fails_at_import() -> None:
    # What mypy reports as an error, at run time: assert_never raises.
    def forgetful(kind: type[ev.Event]) -> int:
        if issubclass(kind, ev.AlertReceived):
            return 1
        assert_never(kind)  # type: ignore[arg-type]

    with pytest.raises(AssertionError):
        by_kind(forgetful)


def test_handled_by_returns_the_handler_itself() -> None:
    def opened(event: ev.AlertOpened, n: int) -> int:
        return n

    assert handled_by(ev.AlertOpened, opened) is opened
