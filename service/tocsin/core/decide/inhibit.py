"""Inhibition (pure): an open alert matching a rule's ``source`` holds back the news of
alerts matching its ``target`` that share its values for every ``equal`` key
(DESIGN.md section 12).

The cost of asking does not grow with the number of open alerts: the projection keeps
an index of the open source alerts of each rule by their ``equal`` values
(``State.inhibitors``), so a candidate costs one source match and one target match per
rule and a dictionary lookup for each target match.

Which rules an alert is a source of is decided here, from the config, and logged
(``inhibit.source``) whenever it changes: the fold keeps the index from that fact and
from ``alert.resolved`` alone, so a rebuild never matches rules again (events record
outcomes, and a later config or matcher change cannot rewrite an old log's index).
Likewise ``alert.inhibited`` names, besides the alert and the rule that holds it back,
every rule whose target the alert matches with its values (``waits_on``): it stays held
back while one of those slots has an inhibitor other than itself, which the fold and
the clock check with lookups, without the rules. When the last inhibitor of such a slot
goes (it resolved, or no longer matches the rule's source), the fold marks the slot
ended and the clock notifies the targets left with no inhibitor (``inhibit.released``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec
from msgspec import Struct

from tocsin.core import events as ev
from tocsin.core.decide.candidate import PASS, Candidate
from tocsin.core.groups import LABEL_PREFIX, group_labels
from tocsin.core.matchers import Match, Matcher

if TYPE_CHECKING:
    from tocsin.core.state import State

EQUAL_KEYS = ("type", "source", "severity")
"""The top-level fields ``equal`` may name, besides ``labels.<name>``."""


class InhibitRule(Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """One ``[[inhibit]]`` as written (DESIGN.md section 12); ``name`` defaults to
    ``inhibit[<index>]`` (the config fills it in)."""

    name: str | None = None
    source: Match = Match()
    source_matchers: list[str] = []
    target: Match = Match()
    target_matchers: list[str] = []
    equal: list[str] = []


def check_equal(keys: Sequence[str]) -> str | None:
    """What is wrong with an ``equal`` list (``None``: nothing): each key is one of
    ``type``, ``source``, ``severity`` or ``labels.<name>``, given once."""
    for key in keys:
        if key in EQUAL_KEYS or (key.startswith(LABEL_PREFIX) and len(key) > len(LABEL_PREFIX)):
            continue
        return f"{key!r} is not one of {', '.join(EQUAL_KEYS)}, labels.<name>"
    if len(set(keys)) != len(keys):
        return "a key is given twice"
    return None


@dataclass(frozen=True, slots=True)
class CompiledRule:
    name: str
    source: Matcher
    target: Matcher
    equal: tuple[str, ...]

    def values(self, severity: str, type_: str, source: str, labels: Mapping[str, str]) -> str:
        """The alert's values for the rule's ``equal`` keys, as one string (a label the
        alert lacks counts as the empty string, as in Alertmanager)."""
        values = group_labels(
            self.equal,
            type_=type_,
            source=source,
            severity=severity,
            fingerprint="",
            labels=labels,
        )
        return msgspec.json.encode(values).decode()


@dataclass(frozen=True, slots=True)
class Inhibition:
    """Why an alert is held back: the ``rule``, the alert that inhibits it (the oldest
    inhibitor of the slot), and every slot it waits on (rule -> its equal values)."""

    rule: str
    inhibited_by: str
    waits_on: dict[str, str]


@dataclass(frozen=True)
class Inhibitions:
    """The config's inhibit rules, compiled, in config order."""

    rules: tuple[CompiledRule, ...] = ()

    @classmethod
    def compile(cls, rules: Sequence[InhibitRule]) -> Inhibitions:
        return cls(
            tuple(
                CompiledRule(
                    name=rule.name or f"inhibit[{index}]",
                    source=Matcher.compile(rule.source, rule.source_matchers),
                    target=Matcher.compile(rule.target, rule.target_matchers),
                    equal=tuple(rule.equal),
                )
                for index, rule in enumerate(rules)
            )
        )

    def sources_of(
        self, severity: str, type_: str, source: str, labels: Mapping[str, str]
    ) -> dict[str, str]:
        """Rule -> the alert's equal values, for each rule whose source it matches."""
        return {
            rule.name: rule.values(severity, type_, source, labels)
            for rule in self.rules
            if rule.source.matches(severity, type_, source, labels)
        }

    def inhibition(
        self,
        state: State,
        alert_id: str,
        *,
        severity: str,
        type_: str,
        source: str,
        labels: Mapping[str, str],
    ) -> Inhibition | None:
        """Whether an open alert inhibits ``alert_id`` with these fields: the first rule
        (config order) whose target it matches and whose slot for its values holds an
        alert other than itself. One lookup per rule whose target matches."""
        waits_on: dict[str, str] = {}
        found: tuple[str, str] | None = None
        for rule in self.rules:
            if not rule.target.matches(severity, type_, source, labels):
                continue
            values = waits_on[rule.name] = rule.values(severity, type_, source, labels)
            if found is None:
                inhibitor = first_other(state, rule.name, values, alert_id)
                if inhibitor is not None:
                    found = (rule.name, inhibitor)
        if found is None:
            return None
        return Inhibition(rule=found[0], inhibited_by=found[1], waits_on=waits_on)


NO_INHIBITIONS = Inhibitions()


def _slot(state: State, rule: str, values: str) -> Iterator[str]:
    slots = state.inhibitors.get(rule)
    return iter(()) if slots is None else iter(slots.get(values, ()))


def first_other(state: State, rule: str, values: str, alert_id: str) -> str | None:
    """The oldest open alert of ``rule``'s slot for ``values`` that is not ``alert_id``
    (an alert never inhibits itself): at most two steps into the slot."""
    return next((a for a in _slot(state, rule, values) if a != alert_id), None)


def still_inhibited(state: State, alert_id: str, waits_on: Mapping[str, str]) -> str | None:
    """An alert that inhibits ``alert_id`` through one of the slots it waits on, if any
    is left: the clock's check before it releases it (no rule is matched again)."""
    for rule, values in waits_on.items():
        inhibitor = first_other(state, rule, values, alert_id)
        if inhibitor is not None:
            return inhibitor
    return None


def inhibited(state: State, candidate: Candidate) -> ev.AlertInhibited | None:
    """A mute source (after silences): news of an alert that an open alert inhibits is
    held back (``alert.inhibited``), its bucket left unspent like a silenced one's."""
    rules = candidate.routing.inhibitions
    if not rules.rules:
        return None
    event = candidate.event
    found = rules.inhibition(
        state,
        candidate.alert_id,
        severity=event.severity,
        type_=event.type,
        source=event.source,
        labels=event.labels,
    )
    if found is None:
        return None
    return ev.AlertInhibited(
        alert_id=candidate.alert_id,
        fingerprint=event.fingerprint,
        dedup_key=candidate.dedup_key,
        rule=found.rule,
        inhibited_by=found.inhibited_by,
        waits_on=found.waits_on,
        trace_id=candidate.trace_id,
    )


def inhibitors(state: State, candidate: Candidate) -> bool:
    """Record which rules a firing event's open alert is a source of, when that
    changed (``inhibit.source``): every firing event counted for an alert, news or
    not, since a duplicate may change its severity or source. A resolve needs no fact:
    the fold takes a resolved alert out of the index."""
    rules = candidate.routing.inhibitions
    event = candidate.event
    if not rules.rules or not candidate.alert_id or event.status != "firing":
        return PASS
    now = rules.sources_of(event.severity, event.type, event.source, event.labels)
    current = candidate.current
    before = current.inhibits if current is not None else {}
    if now != before:
        candidate.facts.append(
            ev.InhibitSource(
                alert_id=candidate.alert_id,
                fingerprint=event.fingerprint,
                rules=now,
                trace_id=candidate.trace_id,
            )
        )
    return PASS
