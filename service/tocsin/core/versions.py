"""Config as a fact (DESIGN.md section 15): every routed fact names the config version
that decided it, so any past notification can be explained by the config of its time.

The router and the clock decide under the config they were given; ``stamped`` marks
their routed facts (``alert.routed``, ``group.notified``) with that config's version
(its ``config.loaded`` digest) as they leave the decision, in one place, rather than in
every stage that can route.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from tocsin.core import events as ev

_STAMPED: frozenset[type[ev.Event]] = frozenset({ev.AlertRouted, ev.GroupNotified})
"""The kinds of routed fact, which name the config version that decided them."""


def stamped(facts: list[ev.Event], version: str) -> list[ev.Event]:
    """``facts`` with each routed fact that names no config version given ``version``
    (one a stage already stamped keeps its own): the same list, changed in place, since
    every caller hands over the list a decision just made. The router asks once an
    event, and most events (a storm's duplicates) route nothing: a new list and a
    union ``isinstance`` per fact cost ~1 us an event of W2 (issue #20)."""
    for at, fact in enumerate(facts):
        if type(fact) in _STAMPED and fact.config_version is None:  # type: ignore[union-attr]
            facts[at] = msgspec.structs.replace(fact, config_version=version)
    return facts


def versions_of(loaded: Sequence[tuple[int, int, ev.ConfigLoaded]]) -> list[dict[str, object]]:
    """``GET /api/v1/config/versions``: each ``config.loaded`` as (seq, ts, fact), oldest
    first, as ``{"version", "seq", "ts", "trigger", "changed"}``; ``changed`` is false
    when the load kept the version before it (a restart or a reload of the same file)."""
    previous: str | None = None
    rows: list[dict[str, object]] = []
    for seq, ts, fact in loaded:
        rows.append(
            {
                "version": fact.digest,
                "seq": seq,
                "ts": ts,
                "trigger": fact.trigger,
                "changed": fact.digest != previous,
            }
        )
        previous = fact.digest
    return rows
