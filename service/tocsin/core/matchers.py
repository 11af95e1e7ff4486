"""The ``match`` grammar of routes and silences (pure): a table whose every key must
match; ``{}`` matches everything.

``match`` keys: ``severity``, ``type``, ``source`` (a string or a list: any of) and
``labels`` (label -> string or list); a value ending in ``*`` matches by prefix.
Severity compares after normalization.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from msgspec import Struct

from tocsin.core.contracts import SEVERITY_ALIASES


@dataclass(frozen=True, slots=True)
class _Values:
    exact: frozenset[str]
    prefixes: tuple[str, ...]

    def matches(self, value: str) -> bool:
        return value in self.exact or any(value.startswith(p) for p in self.prefixes)

    def matches_some(self) -> bool:
        """Whether some value matches (not an empty list)."""
        return bool(self.exact or self.prefixes)

    def matches_every(self) -> bool:
        """Whether every value matches (``"*"``)."""
        return "" in self.prefixes


def _values(spec: StrOrList, normalize_severity: bool = False) -> _Values:
    items = [spec] if isinstance(spec, str) else list(spec)
    exact: set[str] = set()
    prefixes: list[str] = []
    for item in items:
        if item.endswith("*"):
            prefixes.append(item[:-1])
        else:
            exact.add(SEVERITY_ALIASES.get(item.lower(), item) if normalize_severity else item)
    return _Values(frozenset(exact), tuple(prefixes))


@dataclass(frozen=True, slots=True)
class Matcher:
    """A compiled ``match`` table."""

    severity: _Values | None
    type: _Values | None
    source: _Values | None
    labels: tuple[tuple[str, _Values], ...]

    @classmethod
    def compile(cls, match: Match) -> Matcher:
        return cls(
            severity=None if match.severity is None else _values(match.severity, True),
            type=None if match.type is None else _values(match.type),
            source=None if match.source is None else _values(match.source),
            labels=tuple((k, _values(v)) for k, v in (match.labels or {}).items()),
        )

    def matches(self, severity: str, type_: str, source: str, labels: Mapping[str, str]) -> bool:
        if self.severity is not None and not self.severity.matches(severity):
            return False
        if self.type is not None and not self.type.matches(type_):
            return False
        if self.source is not None and not self.source.matches(source):
            return False
        for key, values in self.labels:
            value = labels.get(key)
            if value is None or not values.matches(value):
                return False
        return True

    def matches_some_of(self, severity: str) -> bool:
        """Whether some event of ``severity`` matches: the severity key admits it and
        no other key is an empty list. (A value no valid event can carry, such as a
        type outside the type pattern, is not looked into.)"""
        if self.severity is not None and not self.severity.matches(severity):
            return False
        keys = [self.type, self.source, *(values for _, values in self.labels)]
        return all(values is None or values.matches_some() for values in keys)

    def matches_every_of(self, severity: str) -> bool:
        """Whether every event of ``severity`` matches: the severity key admits it and
        no other key narrows (absent, or ``"*"``; a label key narrows: the label must
        be there)."""
        if self.severity is not None and not self.severity.matches(severity):
            return False
        keys = (self.type, self.source)
        return not self.labels and all(v is None or v.matches_every() for v in keys)


StrOrList = str | list[str]


class Match(Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """A route's (or silence's) matcher; every key given must match; ``{}`` matches all."""

    severity: StrOrList | None = None
    type: StrOrList | None = None
    source: StrOrList | None = None
    labels: dict[str, StrOrList] | None = None
