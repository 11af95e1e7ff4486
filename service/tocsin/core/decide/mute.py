"""The mute stage: news that would reach someone, held back by the first source that
claims it.

A mute source is a pure function ``(state, candidate) -> fact | None``: the fact that
records why the candidate is held back (counted for its alert, told to nobody), or
``None`` to let it go. Silences are the first source, inhibition (``inhibit``) the
second (DESIGN.md section 12); another joins as a function in its own module and one
more argument of ``mute(...)`` in ``triage.STAGES``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeAlias

from tocsin.core import events as ev
from tocsin.core.decide.candidate import PASS, STOP, Candidate, Stage

if TYPE_CHECKING:
    from tocsin.core.state import State

MuteSource: TypeAlias = Callable[["State", Candidate], ev.Event | None]


def mute(*sources: MuteSource) -> Stage:
    """A stage that asks ``sources`` in order whether the candidate is held back; the
    first to answer with a fact stops it. A resolve is never held back, and news that
    no route would deliver has nothing to hold back (the route stage counts it)."""

    def muted(state: State, candidate: Candidate) -> bool:
        if candidate.reason == "resolved":
            return PASS
        if not candidate.receivers and not candidate.groups(state):
            return PASS
        for source in sources:
            fact = source(state, candidate)
            if fact is not None:
                candidate.facts.append(fact)
                return STOP
        return PASS

    return muted
