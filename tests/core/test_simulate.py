"""``tocsin simulate``'s pure part (DESIGN.md section 15): the log's received events fed
through the decision core under another config, at their times, and the comparison
with what the log says happened. No NATS, no file: times are injected."""

from __future__ import annotations

from tests.core.test_fold import MINUTE, ROUTES, T0, normalized
from tests.core.test_groups import BY_SERVICE, NO_INTERVALS
from tocsin.core import events as ev
from tocsin.core.decide.route import Route, RoutingTable
from tocsin.core.ingest import Normalized
from tocsin.core.matchers import Match
from tocsin.core.simulate import (
    Replayed,
    Rules,
    Simulation,
    combined,
    compare,
    notified,
    progress_line,
    replay,
    report_json,
    report_lines,
    report_markdown,
)
from tocsin.core.times import format_us


def rules(routing: RoutingTable, version: str = "v") -> Rules:
    loaded = ev.ConfigLoaded(digest=version, receivers={}, routes=1, dedup_window_seconds=300)
    return Rules(loaded=loaded, routing=routing, intervals=NO_INTERVALS, window_seconds=300)


def received(at_minute: int, event: Normalized) -> tuple[int, ev.Event]:
    """An input as a log holds it before any decision (no alert id yet)."""
    at = T0 + at_minute * MINUTE
    return at, ev.AlertReceived(
        alert_id=None,
        fingerprint=event.fingerprint,
        dedup_key=event.fingerprint,
        type=event.type,
        severity=event.severity,
        summary=event.summary,
        source=event.source,
        status=event.status,
        labels=event.labels,
        details=event.details,
        timestamp=event.timestamp,
        received_at=at,
        subject="alerts.in.db",
    )


def as_logged(run: Replayed) -> list[tuple[int, ev.Event]]:
    """A run's facts as a log to simulate from: its received events, at their times."""
    return [(f.received_at, f) for f in run.facts if isinstance(f, ev.AlertReceived)]


INPUTS = [
    received(0, normalized(0, "critical", host="db1")),
    received(1, normalized(1, "warning", host="db2")),
    received(2, normalized(2, "critical", status="resolved", host="db1")),
]


def test_the_same_config_simulates_exactly_what_happened() -> None:
    """Catches a simulation that drifts from the decision core (a stage or a fold
    skipped, an alert not mapped to the log's): under the same config nothing differs."""
    logged = replay(INPUTS, rules(ROUTES))
    again = replay(as_logged(logged), rules(ROUTES))
    before, after = notified(logged.facts), notified(again.facts, again.alias)
    difference = compare(before, after)
    assert difference.changes == ()
    assert difference.before == difference.after == {"hook": 3, "pager": 2}
    assert difference.same == 2


def test_a_rerouted_alert_is_changed_and_totals_move_between_receivers() -> None:
    """Catches a difference that misses a re-route, names the simulation's alert id
    instead of the log's, or counts receivers wrong."""
    logged = replay(INPUTS, rules(ROUTES))
    rerouted = RoutingTable.compile(
        [
            Route(receivers=["dev"], match=Match(severity="critical")),
            Route(receivers=["hook"], match=Match()),
        ]
    )
    again = replay(as_logged(logged), rules(rerouted))
    difference = compare(notified(logged.facts), notified(again.facts, again.alias))
    (change,) = difference.changes
    opened = next(f for f in logged.facts if isinstance(f, ev.AlertOpened))
    assert change.kind == "changed"
    assert change.alert == opened.alert_id
    assert change.added == (("dev", "firing", ""), ("dev", "resolved", ""))
    assert change.removed == (("pager", "firing", ""), ("pager", "resolved", ""))
    assert difference.before == {"hook": 3, "pager": 2}  # every matching route applies
    assert difference.after == {"dev": 2, "hook": 3}


def test_grouping_is_simulated_with_the_clock_at_the_events_times() -> None:
    """Catches a simulation without the clock (a grouped route would notify nothing),
    or one that ticks at the wrong times: three alerts of two services, grouped with
    a 30 s group_wait, are two group notifications, each alert told once, in a group."""
    storm = [
        received(0, normalized(0, host="a", service="web")),
        received(0, normalized(0, host="b", service="web")),
        received(0, normalized(0, host="c", service="db")),
    ]
    logged = replay(storm, rules(ROUTES))
    again = replay(as_logged(logged), rules(BY_SERVICE), until=T0 + 10 * MINUTE)
    groups = [f for f in again.facts if isinstance(f, ev.GroupNotified)]
    assert len(groups) == 2
    assert {g.fired_at - T0 for g in groups} == {30_000_000}
    difference = compare(notified(logged.facts), notified(again.facts, again.alias))
    assert [c.kind for c in difference.changes] == ["changed"] * 3
    assert all(c.added[0][:2] == ("team", "firing") and c.added[0][2] for c in difference.changes)
    assert difference.before == {"hook": 3}
    assert difference.after == {"team": 2}


def test_an_alert_no_longer_routed_is_removed() -> None:
    """Catches removals left out: a config with no catch-all route tells nobody of the
    warning (removed) and no longer tells hook of the critical (changed)."""
    logged = replay(INPUTS, rules(ROUTES))
    only_critical = RoutingTable.compile(
        [Route(receivers=["pager"], match=Match(severity="critical"))]
    )
    again = replay(as_logged(logged), rules(only_critical))
    difference = compare(notified(logged.facts), notified(again.facts, again.alias))
    assert [(c.kind, c.removed, c.added) for c in difference.changes] == [
        ("changed", (("hook", "firing", ""), ("hook", "resolved", "")), ()),
        ("removed", (("hook", "firing", ""),), ()),
    ]


def test_markdown_says_when_nothing_changes_and_describes_alerts_the_run_drops() -> None:
    """Catches a markdown summary that prints an empty table when nothing differs, or
    that cannot say what a removed alert was (only the log told of it, so its type,
    severity and labels come from the log's received event, not the simulation's)."""
    logged = replay(INPUTS, rules(ROUTES))
    again = replay(as_logged(logged), rules(ROUTES))
    same = report_markdown(compare(notified(logged.facts), notified(again.facts)), again, "v")
    assert same[-1] == "No alert would be told differently."
    assert not any(line.startswith("| |") for line in same)

    only_critical = RoutingTable.compile(
        [Route(receivers=["pager"], match=Match(severity="critical"))]
    )
    dropped = replay(as_logged(logged), rules(only_critical))
    difference = compare(notified(logged.facts), notified(dropped.facts, dropped.alias))
    lines = report_markdown(difference, dropped, "v2", limit=5)
    assert lines[-1] == "| removed | disk_full | warning | host=db2 | hook firing | nothing |"


def test_the_progress_line_shows_rows_read_the_rate_and_the_time_left() -> None:
    """Catches a progress bar with a wrong share, rate or ETA (time is injected)."""
    assert progress_line(250_000, 1_000_000, 5.0) == (
        "[#####...............] 250,000/1,000,000 events (25%), 50,000 events/s, ETA 0:15"
    )
    assert progress_line(0, 10, 0.0).endswith("0/10 events (0%), 0 events/s, ETA ?")
    assert progress_line(0, 0, 1.0).startswith("[####################] 0/0 events (100%)")


def test_the_runs_of_partitions_are_reported_as_one() -> None:
    """``combined`` (a partitioned data dir's runs, DESIGN.md section 17): fails if the
    received events are not summed, if the window is one partition's (the first input
    of any to the last of any), or if an alert of one partition loses what the report
    says of it; the reports say how many partitions they covered, and one log's say
    nothing of partitions."""
    runs = []
    for k, inputs in enumerate(
        [
            [received(0, normalized(0, host="a")), received(5, normalized(5, host="a"))],
            [received(2, normalized(2, host="b"))],
        ]
    ):
        simulation = Simulation(rules(ROUTES), ids=f"sim-p{k}")
        simulation.feed(inputs)
        runs.append(simulation.settle())
    run = combined(runs)
    assert (run.received, run.first, run.last) == (3, T0, T0 + 5 * MINUTE)
    assert {about.labels["host"] for about in run.about.values()} == {"a", "b"}
    assert len(run.about) == 2
    assert combined([]).first is None
    difference = compare([], [])
    assert report_lines(difference, 3, "v", 2)[0].startswith(
        "simulated 3 received event(s) from 2 partition(s) under"
    )
    assert "partition" not in report_lines(difference, 3, "v")[0]
    assert report_json(difference, 3, "v", 2)["partitions"] == 2
    assert "partitions" not in report_json(difference, 3, "v")
    assert f"Replayed 3 received event(s) from 2 partition(s), {format_us(T0)}" in "\n".join(
        report_markdown(difference, run, "v", partitions=2)
    )
