"""Silences (pure): which active silence, if any, covers an alert at an instant.

A silence's ``matchers`` use the route ``match`` grammar (DESIGN.md section 8), or a
list of Alertmanager matchers (section 12), kept as the table's ``matchers`` key; so
one matcher implementation serves routes and silences alike. ``silenced`` is the mute
source the decision stages consult (see ``mute``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

import msgspec

from tocsin.core import events as ev
from tocsin.core.decide.candidate import Candidate
from tocsin.core.matchers import Match, Matcher, MatcherSyntaxError, parse_all
from tocsin.core.state import Silence, State


class MatchersError(ValueError):
    """The matchers are not a route ``match`` table."""


def parse_matchers(raw: Any) -> Match:
    """``raw`` as a ``match`` table (a list is Alertmanager matchers: the table's
    ``matchers``), or ``MatchersError`` saying what is wrong."""
    if isinstance(raw, list):
        raw = {"matchers": raw}
    try:
        match = msgspec.convert(raw, Match)
        parsed = parse_all(match.matchers or ())
    except (msgspec.ValidationError, MatcherSyntaxError) as error:
        raise MatchersError(str(error)) from error
    if parsed and all(m.matches_value("") for m in parsed) and not _keys_of(match):
        # Alertmanager's rule too: matchers that all match the empty string select
        # every alert, so a silence made of them would mute everything.
        raise MatchersError("at least one matcher must not match the empty string")
    return match


def _keys_of(match: Match) -> list[str]:
    """The ``match`` table keys given, other than ``matchers``."""
    return [k for k in ("severity", "type", "source", "labels") if getattr(match, k)]


@lru_cache(maxsize=4096)
def _compiled(encoded: bytes) -> Matcher:
    return Matcher.compile(msgspec.json.decode(encoded, type=Match))


def matcher_of(silence: Silence) -> Matcher:
    return _compiled(msgspec.json.encode(silence.matchers))


def covering(
    silences: Iterable[Silence],
    at: int,
    *,
    severity: str,
    type_: str,
    source: str,
    labels: Mapping[str, str],
) -> Silence | None:
    """The first silence active at ``at`` whose matchers match, if any."""
    for silence in silences:
        if silence.active_at(at) and matcher_of(silence).matches(severity, type_, source, labels):
            return silence
    return None


def silenced(state: State, candidate: Candidate) -> ev.AlertSilenced | None:
    """A mute source: an active silence matching the event when it was received holds
    it back (``alert.silenced``), and its bucket stays unspent so that the alert's next
    event after the silence is news."""
    event = candidate.event
    silence = covering(
        state.silences.values(),
        candidate.received_at,
        severity=event.severity,
        type_=event.type,
        source=event.source,
        labels=event.labels,
    )
    if silence is None:
        return None
    return ev.AlertSilenced(
        alert_id=candidate.alert_id,
        fingerprint=event.fingerprint,
        dedup_key=candidate.dedup_key,
        silence_id=silence.id,
        trace_id=candidate.trace_id,
    )
