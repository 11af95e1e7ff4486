"""tocsin.core.matchers: Alertmanager's matcher syntax (DESIGN.md section 12) next to
the ``match`` table, route ``continue``, and the same selector for silences."""

from __future__ import annotations

import pytest

from tocsin.core.decide.route import Route, RoutingTable
from tocsin.core.decide.silences import MatchersError, parse_matchers
from tocsin.core.matchers import (
    LabelMatcher,
    Match,
    Matcher,
    MatcherSyntaxError,
    parse_all,
)
from tocsin.core.matchers import parse_matchers as parse_am


def selects(matchers: list[str], *, labels: dict[str, str] | None = None, **alert: str) -> bool:
    matcher = Matcher.compile(Match(), matchers)
    return matcher.matches(
        alert.get("severity", "warning"),
        alert.get("type", "disk_full"),
        alert.get("source", "storage"),
        labels or {},
    )


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ('a="b"', [("a", "=", "b")]),
        ('a = "b"', [("a", "=", "b")]),
        ("a=b", [("a", "=", "b")]),
        ('a!="b"', [("a", "!=", "b")]),
        ('a=~"b|c"', [("a", "=~", "b|c")]),
        ('a!~"b.*"', [("a", "!~", "b.*")]),
        ('{a="1", b=~"2|3"}', [("a", "=", "1"), ("b", "=~", "2|3")]),
        ('a="1",b="2"', [("a", "=", "1"), ("b", "=", "2")]),
        (r'a="say \"hi\"\\n"', [("a", "=", 'say "hi"\\n')]),
        ('a="x,y}"', [("a", "=", "x,y}")]),
        ('a=""', [("a", "=", "")]),
        ('labels.with-dash="v"', [("labels.with-dash", "=", "v")]),
    ],
)
def test_alertmanager_syntax_parses(text: str, parsed: list[tuple[str, str, str]]) -> None:
    assert [(m.name, m.op, m.value) for m in parse_am(text)] == parsed


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "no matcher"),
        ('="b"', "expected a label name"),
        ("a", "expected one of"),
        ('a~"b"', "expected one of"),
        ('a="b', "without its closing quote"),
        ('a="b\\q"', "unknown escape"),
        ('a=~"("', "not a valid regex"),
        ('{a="b"', "closing one"),
        ('a="b" c="d"', "expected a comma"),
    ],
)
def test_bad_syntax_is_refused_saying_why(text: str, says: str) -> None:
    with pytest.raises(MatcherSyntaxError, match=says):
        parse_am(text)


def test_a_matcher_prints_back_to_itself() -> None:
    for text in ['a="plain"', r'a=~"quo\"te\\\\d+"', 'a!="new\\nline"']:
        (matcher,) = parse_am(text)
        assert parse_am(str(matcher)) == (matcher,)


def test_regexes_are_anchored_at_both_ends() -> None:
    assert selects(['service=~"api"'], labels={"service": "api"})
    assert not selects(['service=~"api"'], labels={"service": "api-gateway"})
    assert not selects(['service=~"api"'], labels={"service": "my-api"})
    assert selects(['service=~"api.*"'], labels={"service": "api-gateway"})
    assert selects(['service=~"a|b"'], labels={"service": "b"})
    assert not selects(['service=~"a|b"'], labels={"service": "ab"})


def test_negative_matchers() -> None:
    assert selects(['service!="canary"'], labels={"service": "api"})
    assert not selects(['service!="canary"'], labels={"service": "canary"})
    assert selects(['service!~"canary|test"'], labels={"service": "api"})
    assert not selects(['service!~"canary|test"'], labels={"service": "test"})


def test_an_absent_label_reads_as_empty_as_in_alertmanager() -> None:
    assert selects(['team=""'])
    assert not selects(['team=""'], labels={"team": "db"})
    assert selects(['team!="db"'])  # absent is not "db"
    assert not selects(['team="db"'])
    assert selects(['team=~"db|"'])
    assert not selects(['team!~".*"'])


def test_alertname_severity_and_source_are_matched_unless_labels_set_them() -> None:
    assert selects(['alertname="disk_full"'], type="disk_full")
    assert not selects(['alertname="disk_full"'], type="cpu_hot")
    assert selects(['severity=~"critical|error"'], severity="error")
    assert not selects(['severity=~"critical|error"'], severity="warning")
    assert selects(['source="storage"'], source="storage")
    assert selects(['alertname="from_label"'], type="t", labels={"alertname": "from_label"})
    assert not selects(['alertname="t"'], type="t", labels={"alertname": "from_label"})


def test_every_matcher_must_match_and_the_table_too() -> None:
    both = Matcher.compile(Match(severity="critical"), ['service="api"'])
    assert both.matches("critical", "t", "s", {"service": "api"})
    assert not both.matches("warning", "t", "s", {"service": "api"})
    assert not both.matches("critical", "t", "s", {"service": "db"})
    assert not selects(['a="1"', 'b="2"'], labels={"a": "1"})
    assert selects(['a="1"', 'b="2"'], labels={"a": "1", "b": "2"})


def test_matchers_inside_a_match_table_count_too() -> None:
    inside = Matcher.compile(Match(matchers=['service="api"']))
    assert inside.matches("info", "t", "s", {"service": "api"})
    assert not inside.matches("info", "t", "s", {"service": "db"})


def table(*routes: Route) -> RoutingTable:
    return RoutingTable.compile(list(routes))


def test_continue_false_stops_after_the_route_that_matched() -> None:
    routes = table(
        Route(receivers=["pager"], matchers=['severity="critical"'], continue_=False),
        Route(receivers=["chat"]),
    )
    assert routes.receivers_for("critical", "t", "s", {}) == ["pager"]
    assert routes.receivers_for("warning", "t", "s", {}) == ["chat"]
    assert routes.matching("critical", "t", "s", {}) == [0]


def test_continue_defaults_to_true_every_matching_route_applies() -> None:
    routes = table(Route(receivers=["pager"]), Route(receivers=["chat"]))
    assert routes.receivers_for("info", "t", "s", {}) == ["pager", "chat"]


def test_a_route_that_does_not_match_does_not_stop_others() -> None:
    routes = table(
        Route(receivers=["db"], matchers=['team="db"'], continue_=False),
        Route(receivers=["rest"]),
    )
    assert routes.receivers_for("info", "t", "s", {"team": "web"}) == ["rest"]
    assert routes.receivers_for("info", "t", "s", {"team": "db"}) == ["db"]


def test_silence_matchers_may_be_a_list_in_alertmanager_syntax() -> None:
    match = parse_matchers(['service="api"', 'env!="dev"'])
    assert match.matchers == ['service="api"', 'env!="dev"']
    assert len(parse_all(match.matchers)) == 2


def test_silence_matchers_that_all_match_empty_are_refused() -> None:
    with pytest.raises(MatchersError, match="empty string"):
        parse_matchers(['service=~".*"'])
    with pytest.raises(MatchersError, match="empty string"):
        parse_matchers({"matchers": ['service!="x"']})
    assert parse_matchers({"severity": "critical", "matchers": ['a=~".*"']}).severity


def test_silence_matchers_with_bad_syntax_are_refused() -> None:
    with pytest.raises(MatchersError, match="valid regex"):
        parse_matchers(['a=~"("'])


def test_a_regex_matcher_matches_whole_values_only() -> None:
    (a,) = parse_am('x=~"1+"')
    assert isinstance(a, LabelMatcher)
    assert a.matches_value("111")
    assert not a.matches_value("12")
