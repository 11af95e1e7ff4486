"""Routes -> receivers (pure). Every matching route applies, in config order.

``match`` keys: ``severity``, ``type``, ``source`` (a string or a list: any of) and
``labels`` (label -> string or list); a value ending in ``*`` matches by prefix; every
key given must match; ``{}`` matches everything. Severity compares after normalization.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from msgspec import Struct

from tocsin.core.matchers import Match, Matcher


@dataclass(frozen=True)
class RoutingTable:
    routes: tuple[tuple[Matcher, tuple[str, ...]], ...]

    @classmethod
    def compile(cls, routes: Sequence[Route]) -> RoutingTable:
        return cls(tuple((Matcher.compile(r.match), tuple(r.receivers)) for r in routes))

    def receivers_for(
        self, severity: str, type_: str, source: str, labels: Mapping[str, str]
    ) -> list[str]:
        """Receivers of every matching route, each once, in first-match order."""
        out: dict[str, None] = {}
        for matcher, receivers in self.routes:
            if matcher.matches(severity, type_, source, labels):
                out.update(dict.fromkeys(receivers))
        return list(out)


class Route(Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    receivers: list[str]
    match: Match = Match()
