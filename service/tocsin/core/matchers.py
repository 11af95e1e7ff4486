"""What selects alerts, for routes, silences and inhibit rules (pure): one module, so
every place that picks alerts picks them the same way (DESIGN.md sections 8 and 12).

Two grammars, and both may be given (then both must match):

- the ``match`` table: keys ``severity``, ``type``, ``source`` (a string or a list:
  any of) and ``labels`` (label -> string or list); a value ending in ``*`` matches by
  prefix; severity compares after normalization; ``{}`` matches everything;
- ``matchers``: Alertmanager's syntax, ``name="value"`` with ``=``, ``!=``, ``=~``,
  ``!~`` (regexes anchored at both ends), matched against the alert's labels plus
  ``alertname`` (its type), ``severity`` and ``source`` where the labels do not set
  them; a label the alert lacks reads as the empty string, as in Alertmanager.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from msgspec import Struct

from tocsin.core.contracts import LABEL_NAME_PATTERN, SEVERITY_ALIASES

Op = Literal["=", "!=", "=~", "!~"]

ALERTNAME = "alertname"
"""The name Alertmanager gives an alert's type; ``matchers`` read ``type`` under it."""


class MatcherSyntaxError(ValueError):
    """A ``matchers`` entry is not Alertmanager matcher syntax; the message says where."""


@dataclass(frozen=True, slots=True)
class LabelMatcher:
    """One Alertmanager matcher: ``name op "value"``."""

    name: str
    op: Op
    value: str
    pattern: re.Pattern[str] | None = None

    def matches_value(self, value: str) -> bool:
        """Whether a label value (``""`` when absent) satisfies this matcher."""
        if self.pattern is not None:
            found = self.pattern.fullmatch(value) is not None
            return found if self.op == "=~" else not found
        return (value == self.value) if self.op == "=" else (value != self.value)

    def __str__(self) -> str:
        """The matcher in Alertmanager syntax, value quoted (it parses back to itself)."""
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'{self.name}{self.op}"{escaped}"'


_NAME = re.compile(LABEL_NAME_PATTERN.strip("^$"))
_OP = re.compile(r"\s*(=~|!~|!=|=)\s*")
_UNQUOTED = re.compile(r"[^,}\s\"]*")
_ESCAPES = {"n": "\n", "\\": "\\", '"': '"'}


def parse_matchers(text: str) -> tuple[LabelMatcher, ...]:
    """The matchers one string holds: one matcher, or several separated by commas,
    optionally inside braces (``{a="1", b=~"2|3"}``), as Alertmanager's parser takes
    them. Values are quoted (``\\"``, ``\\\\`` and ``\\n`` escaped) or bare words.
    Raises ``MatcherSyntaxError``."""
    body = text.strip()
    if body.startswith("{"):
        if not body.endswith("}"):
            raise MatcherSyntaxError(f"{text!r}: an opening brace without its closing one")
        body = body[1:-1]
    out: list[LabelMatcher] = []
    at = _skip_space(body, 0)
    while at < len(body):
        matcher, at = _one(body, at, text)
        out.append(matcher)
        at = _skip_space(body, at)
        if at < len(body):
            if body[at] != ",":
                raise MatcherSyntaxError(f"{text!r}: expected a comma at {body[at:]!r}")
            at = _skip_space(body, at + 1)
    if not out:
        raise MatcherSyntaxError(f"{text!r}: no matcher")
    return tuple(out)


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at].isspace():
        at += 1
    return at


def _one(body: str, at: int, text: str) -> tuple[LabelMatcher, int]:
    name = _NAME.match(body, at)
    if name is None:
        raise MatcherSyntaxError(f"{text!r}: expected a label name at {body[at:]!r}")
    op = _OP.match(body, name.end())
    if op is None:
        raise MatcherSyntaxError(f"{text!r}: expected one of = != =~ !~ after {name.group()!r}")
    at = op.end()
    if at < len(body) and body[at] == '"':
        value, at = _quoted(body, at + 1, text)
    else:
        bare = _UNQUOTED.match(body, at)
        assert bare is not None  # the pattern matches the empty string
        value, at = bare.group(), bare.end()
    return compile_matcher(name.group(), op.group(1), value, text), at  # type: ignore[arg-type]


def _quoted(body: str, at: int, text: str) -> tuple[str, int]:
    chars: list[str] = []
    while at < len(body):
        char = body[at]
        if char == '"':
            return "".join(chars), at + 1
        if char == "\\":
            escaped = _ESCAPES.get(body[at + 1 : at + 2])
            if escaped is None:
                raise MatcherSyntaxError(f"{text!r}: unknown escape at {body[at : at + 2]!r}")
            chars.append(escaped)
            at += 2
            continue
        chars.append(char)
        at += 1
    raise MatcherSyntaxError(f"{text!r}: a quoted value without its closing quote")


def compile_matcher(name: str, op: Op, value: str, text: str | None = None) -> LabelMatcher:
    """One matcher from its parts (the regex compiled, anchored at both ends);
    ``MatcherSyntaxError`` for a regex Python cannot compile."""
    pattern = None
    if op in ("=~", "!~"):
        try:
            pattern = re.compile(f"(?:{value})")
        except re.error as error:
            where = repr(text) if text is not None else f"{name}{op}{value!r}"
            raise MatcherSyntaxError(f"{where}: not a valid regex: {error}") from error
    return LabelMatcher(name, op, value, pattern)


def parse_all(texts: Iterable[str]) -> tuple[LabelMatcher, ...]:
    """Every matcher of a ``matchers`` list."""
    return tuple(m for text in texts for m in parse_matchers(text))


def label_view(
    severity: str, type_: str, source: str, labels: Mapping[str, str]
) -> Mapping[str, str]:
    """What ``matchers`` are matched against: the labels, plus ``alertname``,
    ``severity`` and ``source`` where the labels do not set them."""
    view = {ALERTNAME: type_, "severity": severity, "source": source}
    view.update(labels)
    return view


def all_match(matchers: Sequence[LabelMatcher], view: Mapping[str, str]) -> bool:
    return all(m.matches_value(view.get(m.name, "")) for m in matchers)


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
    matchers: tuple[LabelMatcher, ...] = ()

    @classmethod
    def compile(cls, match: Match, matchers: Iterable[str] = ()) -> Matcher:
        """A ``match`` table and ``matchers`` (both must match); ``MatcherSyntaxError``
        for a ``matchers`` entry that does not parse."""
        return cls(
            severity=None if match.severity is None else _values(match.severity, True),
            type=None if match.type is None else _values(match.type),
            source=None if match.source is None else _values(match.source),
            labels=tuple((k, _values(v)) for k, v in (match.labels or {}).items()),
            matchers=parse_all([*(match.matchers or ()), *matchers]),
        )

    def matches(self, severity: str, type_: str, source: str, labels: Mapping[str, str]) -> bool:
        if self.matchers and not all_match(
            self.matchers, label_view(severity, type_, source, labels)
        ):
            return False
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
        if not all(m.matches_value(severity) for m in self._on_severity()):
            return False
        keys = [self.type, self.source, *(values for _, values in self.labels)]
        return all(values is None or values.matches_some() for values in keys)

    def matches_every_of(self, severity: str) -> bool:
        """Whether every event of ``severity`` matches: the severity key admits it and
        no other key narrows (absent, or ``"*"``; a label key narrows: the label must
        be there)."""
        if self.severity is not None and not self.severity.matches(severity):
            return False
        if any(m.name != "severity" or not m.matches_value(severity) for m in self.matchers):
            return False
        keys = (self.type, self.source)
        return not self.labels and all(v is None or v.matches_every() for v in keys)

    def _on_severity(self) -> tuple[LabelMatcher, ...]:
        return tuple(m for m in self.matchers if m.name == "severity")


StrOrList = str | list[str]


class Match(Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """A route's (or silence's) matcher; every key given must match; ``{}`` matches all.
    ``matchers`` (Alertmanager syntax) lets a silence carry them in its one table."""

    severity: StrOrList | None = None
    type: StrOrList | None = None
    source: StrOrList | None = None
    labels: dict[str, StrOrList] | None = None
    matchers: list[str] | None = None
