"""The Alertmanager translation's pure parts (core/amimport.py): negation into
disjoint alternatives, durations, the flattened tree's guards and stops."""

from __future__ import annotations

import itertools

import pytest

from tocsin.core.amimport import TranslationError, duration, flatten, negate, translate
from tocsin.core.matchers import all_match, parse_matchers


def test_negation_is_exact_and_its_alternatives_disjoint() -> None:
    """Catches a negation that lets through what the conjunction matches, misses what
    it does not, or whose alternatives overlap (an alert would join two groups)."""
    conj = parse_matchers('a="1", b=~"x|y", c!="z"')
    alternatives = negate(conj)
    for a, b, c in itertools.product(["1", "2", ""], ["x", "w"], ["z", "q"]):
        view = {"a": a, "b": b, "c": c}
        hits = sum(all_match(alt, view) for alt in alternatives)
        assert hits == (0 if all_match(conj, view) else 1), view


def test_durations_tocsin_cannot_read_become_seconds() -> None:
    """Catches Alertmanager durations (compound, weeks, years) passed through unread."""
    assert duration("5m", "k") == "5m"
    assert duration("1h30m", "k") == "5400s"
    assert duration("1w", "k") == "604800s"
    with pytest.raises(TranslationError, match="k"):
        duration("soon", "k")


def test_a_parent_falls_back_only_when_no_child_matched() -> None:
    """Catches a fallback entry without the negation of a continuing child (it would
    add the parent's receiver although a child matched) and stops put where the tree
    does not stop everywhere."""
    entries, _ = flatten(
        {
            "receiver": "root",
            "routes": [
                {
                    "matchers": ['team="db"'],
                    "receiver": "db",
                    "routes": [{"matchers": ['sev="page"'], "receiver": "pager", "continue": True}],
                },
                {"matchers": ['team="web"'], "receiver": "web", "continue": True},
            ],
        }
    )
    shown = [(e.receiver, [[str(m) for m in alt] for alt in e.cond], e.stop) for e in entries]
    assert shown == [
        ("pager", [['team="db"', 'sev="page"']], False),
        ("db", [['team="db"', 'sev!="page"']], True),
        # db matched through its continuing child alone: nothing stopped the list, so
        # what follows db in the tree (which Alertmanager skips) carries not-db
        ("web", [['team!="db"', 'team="web"']], False),
        ("root", [['team!="db"', 'team!="web"']], True),
    ]


def test_the_root_needs_a_receiver_and_no_matchers() -> None:
    """Catches a config Alertmanager itself refuses being translated into nonsense."""
    with pytest.raises(TranslationError, match="receiver"):
        translate({"route": {}})
    with pytest.raises(TranslationError, match="matchers"):
        translate({"route": {"receiver": "r", "matchers": ['a="1"']}})
