"""tocsin.core.alertmanager: Alertmanager's ``PostableAlerts`` as section 4 events, and
tocsin's alerts and silences in API v2 shapes (DESIGN.md section 14), without NATS."""

from __future__ import annotations

import re
from typing import Any

import msgspec
import pytest

from tocsin.core import alertmanager as am
from tocsin.core import ingest
from tocsin.core.matchers import parse_all
from tocsin.core.state import Alert, AutoResolve, Silence, State
from tocsin.core.times import format_us, parse_rfc3339

NOW = parse_rfc3339("2026-12-04T12:00:00Z")
MINUTE = 60 * 1_000_000


def alert(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "labels": {"alertname": "DiskFull", "severity": "critical", "instance": "db-1"},
        "annotations": {"summary": "disk full", "description": "97% used"},
        "startsAt": "2026-12-04T11:00:00Z",
        "endsAt": format_us(NOW + 4 * MINUTE),
        "generatorURL": "http://prom/graph",
    }
    base.update(fields)
    return base


def translate(*alerts: Any) -> list[dict[str, Any]]:
    out = am.translate(msgspec.json.encode(list(alerts)), NOW)
    assert isinstance(out, list), out
    return [msgspec.json.decode(t.payload) for t in out]


def refused(*alerts: Any) -> am.Refused:
    out = am.translate(msgspec.json.encode(list(alerts)), NOW)
    assert isinstance(out, am.Refused)
    return out


def test_an_alert_becomes_a_section_4_event() -> None:
    """Catches a field of section 14's mapping taken from the wrong place."""
    (event,) = translate(alert())
    assert event == {
        "type": "DiskFull",
        "severity": "critical",
        "summary": "disk full",
        "source": "prometheus",
        "status": "firing",
        "labels": {"alertname": "DiskFull", "severity": "critical", "instance": "db-1"},
        "details": {
            "summary": "disk full",
            "description": "97% used",
            "generatorURL": "http://prom/graph",
        },
        "event_id": event["event_id"],
        "timestamp": "2026-12-04T11:00:00Z",
        "ends_at": format_us(NOW + 4 * MINUTE),
    }


@pytest.mark.parametrize(
    ("severity", "expected"),
    [("sev1", "critical"), ("ERROR", "error"), ("page", "warning"), (None, "warning")],
)
def test_severity_takes_the_aliases_and_defaults_to_warning(
    severity: str | None, expected: str
) -> None:
    """Catches an unknown or missing severity refusing the alert instead of defaulting."""
    labels = {"alertname": "X"} | ({"severity": severity} if severity else {})
    assert translate(alert(labels=labels))[0]["severity"] == expected


def test_summary_falls_back_to_description_then_alertname_and_is_cut() -> None:
    """Catches a missing summary refused, or a long one refused rather than cut."""
    assert translate(alert(annotations={"description": "d"}))[0]["summary"] == "d"
    assert translate(alert(annotations={}))[0]["summary"] == "DiskFull"
    (long,) = am.translate(msgspec.json.encode([alert(annotations={"summary": "x" * 300})]), NOW)
    judged = ingest.parse(long.payload, default_source="http", received_at=NOW)
    assert isinstance(judged, ingest.Normalized)
    assert judged.summary == "x" * 252 + "..."  # cut as section 4 says, not refused


def test_an_endsat_in_the_past_resolves_and_the_zero_time_means_unset() -> None:
    """Catches a resolve from Prometheus read as firing, and Go's zero time taken as an
    end long past."""
    (gone,) = translate(alert(endsAt=format_us(NOW - 1)))
    assert gone["status"] == "resolved"
    assert "ends_at" not in gone
    (open_,) = translate(alert(endsAt="0001-01-01T00:00:00Z"))
    assert open_["status"] == "firing"
    assert "ends_at" not in open_


def test_the_event_id_is_stable_for_a_retry_and_new_for_a_moved_end() -> None:
    """Catches ids that change on an exact retry (counted twice) or that stay the same
    when an evaluation moves ``endsAt`` (its end would never move: resolved early)."""
    first, retry = translate(alert(), alert())
    moved = translate(alert(endsAt=format_us(NOW + 5 * MINUTE)))[0]
    resolved = translate(alert(endsAt=format_us(NOW - MINUTE)))[0]
    assert first["event_id"] == retry["event_id"]
    assert len({first["event_id"], moved["event_id"], resolved["event_id"]}) == 3


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"labels": None}, "labels"),
        ({"labels": {"instance": "x"}}, "labels.alertname"),
        ({"labels": {"alertname": "_bad name"}}, "labels.alertname"),
        ({"labels": {"alertname": "X", "n": 1}}, "labels.n"),
        ({"labels": {"alertname": "X", "9bad": "v"}}, "labels.9bad"),
        ({"labels": {"alertname": "X"} | {f"l{i}": "v" for i in range(40)}}, "labels"),
        ({"annotations": ["x"]}, "annotations"),
        ({"startsAt": "2026-12-04T11:00:00"}, "startsAt"),
        ({"endsAt": "soon"}, "endsAt"),
        ({"endsAt": "2026-12-04T10:00:00Z"}, "endsAt"),
        ({"generatorURL": 3}, "generatorURL"),
    ],
)
def test_an_invalid_alert_is_refused_naming_its_index_and_field(bad: Any, field: str) -> None:
    """Catches a refusal naming tocsin's field (``type``) or no field, or the wrong index."""
    out = refused(alert(), alert(**bad))
    assert (out.index, out.field) == (1, field)
    assert out.message.startswith("alert 1: ")


def test_a_body_that_is_not_an_array_is_refused() -> None:
    for body in (b"{}", b"nope", b'"x"'):
        out = am.translate(body, NOW)
        assert isinstance(out, am.Refused)
        assert out.index is None


def test_api_matchers_become_alertmanager_strings_and_back() -> None:
    """Catches an operator flipped in either direction (a silence muting the opposite)."""
    given = [
        am.AmMatcher(name="a", value="1", is_regex=False, is_equal=True),
        am.AmMatcher(name="b", value="2", is_regex=False, is_equal=False),
        am.AmMatcher(name="c", value="x|y", is_regex=True, is_equal=True),
        am.AmMatcher(name="d", value='q"z', is_regex=True, is_equal=False),
    ]
    strings = am.matcher_strings(given)
    assert strings == ['a="1"', 'b!="2"', 'c=~"x|y"', 'd!~"q\\"z"']
    assert am.am_matchers({"matchers": strings}) == given


def test_a_match_table_silence_shows_as_equivalent_matchers() -> None:
    """Catches a v1 silence (``match`` table) shown with matchers selecting otherwise."""
    shown = am.am_matchers(
        {"severity": ["critical", "error"], "type": "disk_full", "labels": {"host": "db*"}}
    )
    assert [(m.name, m.value, m.is_regex) for m in shown] == [
        ("severity", "critical|error", True),
        ("alertname", "disk_full", False),
        ("host", "db.*", True),
    ]


def make_alert(alert_id: str, **fields: Any) -> Alert:
    base: dict[str, Any] = {
        "id": alert_id,
        "fingerprint": "fp-" + alert_id,
        "type": "DiskFull",
        "severity": "critical",
        "summary": "disk full",
        "source": "prometheus",
        "status": "firing",
        "labels": {"instance": alert_id},
        "details": {"runbook": "r", "generatorURL": "http://g", "n": 3},
        "first_seen": NOW - 10 * MINUTE,
        "last_seen": NOW - MINUTE,
        "receivers": ["hook"],
    }
    base.update(fields)
    return Alert(**base)


def a_state() -> State:
    state = State()
    state.alerts = {
        "a1": make_alert("a1"),
        "a2": make_alert("a2", inhibited_by="a3", receivers=[]),
        "a3": make_alert("a3", type="ClusterDown", receivers=["pager"]),
        "a4": make_alert("a4", status="resolved"),
    }
    state.silences = {
        "s1": Silence(
            id="s1",
            matchers={"matchers": ['instance="a1"']},
            starts_at=NOW - MINUTE,
            ends_at=NOW + MINUTE,
            created_by="ops",
            comment="",
            created_at=NOW - MINUTE,
        )
    }
    state.auto_resolve = {
        "fp-a1": AutoResolve(alert_id="a1", due=NOW + 3 * MINUTE, by="ends_at", last_event=0)
    }
    return state


def names(state: State, **chosen: Any) -> list[str]:
    found = am.gettable_alerts(state, NOW, am.AlertFilter(**chosen))
    return [view.labels["instance"] for _, view in found]


def test_open_alerts_with_their_silences_and_inhibitors() -> None:
    """Catches resolved alerts listed, a silence or inhibitor not reported, and the
    shape's fields (labels with alertname and severity, annotations as strings)."""
    state = a_state()
    views = {v.labels["instance"]: v for _, v in am.gettable_alerts(state, NOW, am.AlertFilter())}
    assert sorted(views) == ["a1", "a2", "a3"]
    a1, a2, a3 = views["a1"], views["a2"], views["a3"]
    assert (a1.status.state, a1.status.silenced_by, a1.status.inhibited_by) == (
        "suppressed",
        ["s1"],
        [],
    )
    assert (a2.status.state, a2.status.inhibited_by) == ("suppressed", ["fp-a3"])
    assert a3.status.state == "active"
    assert a1.labels == {"alertname": "DiskFull", "severity": "critical", "instance": "a1"}
    assert a1.annotations == {"summary": "disk full", "runbook": "r", "n": "3"}
    assert a1.generator_url == "http://g"
    assert a1.ends_at == format_us(NOW + 3 * MINUTE)
    assert a2.ends_at == format_us(NOW - MINUTE)


def test_the_filters_of_get_alerts() -> None:
    """Catches each of ``silenced``, ``inhibited``, ``active``, ``filter`` and
    ``receiver`` not applied, or applied as Alertmanager does not."""
    state = a_state()
    assert names(state, silenced=False) == ["a2", "a3"]
    assert names(state, inhibited=False) == ["a1", "a3"]
    assert names(state, active=False) == ["a1", "a2"]
    assert names(state, matchers=parse_all(['alertname="ClusterDown"'])) == ["a3"]
    assert names(state, matchers=parse_all(['instance=~"a[12]"'])) == ["a1", "a2"]
    assert names(state, receiver=re.compile("pag")) == []  # anchored, as Alertmanager
    assert names(state, receiver=re.compile("pag.*")) == ["a3"]


def test_groups_list_alerts_under_each_receiver_told() -> None:
    """Catches an alert listed under no receiver, or one never told listed."""
    state = a_state()
    groups = am.alert_groups(state, am.gettable_alerts(state, NOW, am.AlertFilter()))
    assert sorted((g.receiver.name, g.alerts[0].labels["instance"]) for g in groups) == [
        ("hook", "a1"),
        ("pager", "a3"),
    ]


def test_silences_by_state_and_filter() -> None:
    """Catches a deleted silence shown active, and ``amtool silence query``'s filter."""
    state = a_state()
    state.silences["s2"] = Silence(
        id="s2",
        matchers={"labels": {"instance": "a2"}},
        starts_at=NOW - 2 * MINUTE,
        ends_at=NOW + MINUTE,
        created_by="ops",
        comment="",
        created_at=NOW - 2 * MINUTE,
        deleted_at=NOW - MINUTE,
    )
    shown = am.gettable_silences(state, NOW, ())
    assert [(s.id, s.status.state) for s in shown] == [("s1", "active"), ("s2", "expired")]
    assert shown[1].ends_at == format_us(NOW - MINUTE)
    assert [s.id for s in am.gettable_silences(state, NOW, parse_all(['instance="a2"']))] == ["s2"]
