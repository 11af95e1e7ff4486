"""Groups and the clock, pure (DESIGN.md section 11): which group news joins, when a
group falls due, what its notification says, with time injected (no clock read), and
the live state equal to a rebuild after every step."""

from __future__ import annotations

import itertools

import pytest

from tests.core.test_fold import MINUTE, ROUTES, T0, Run, kinds, normalized
from tocsin.core import clock, groups
from tocsin.core import events as ev
from tocsin.core.decide.route import Route, RoutingTable
from tocsin.core.fold import fold, rebuild
from tocsin.core.matchers import Match
from tocsin.core.timeintervals import TimeIntervals, TimeIntervalSpec, compile_interval
from tocsin.core.times import Duration

SECOND = 1_000_000
NO_INTERVALS = TimeIntervals({})


def grouped(**keys: object) -> RoutingTable:
    route = Route(receivers=["team"], match=Match(), **keys)  # type: ignore[arg-type]
    return RoutingTable.compile([route])


BY_SERVICE = grouped(
    group_by=["labels.service"],
    group_wait=Duration(30),
    group_interval=Duration(300),
    repeat_interval=Duration(3600),
)


class Clocked(Run):
    """A ``Run`` with the clock: ``tick`` fires what is due at an injected instant."""

    def __init__(self) -> None:
        super().__init__()
        ids = itertools.count(1)
        self.notes = lambda: f"n{next(ids)}"

    def tick(
        self,
        at: int,
        intervals: TimeIntervals = NO_INTERVALS,
        routing: RoutingTable = ROUTES,
    ) -> list[ev.Event]:
        facts = clock.tick(self.state, at, new_id=self.notes, intervals=intervals, routing=routing)
        for fact in facts:
            seq = len(self.log) + 1
            self.log.append((seq, at, fact))
            fold(self.state, seq, at, fact)
        assert self.state == rebuild(self.log)
        return facts


def notified(facts: list[ev.Event]) -> list[ev.GroupNotified]:
    return [f for f in facts if isinstance(f, ev.GroupNotified)]


def test_defaults_keep_per_alert_routing() -> None:
    table = grouped()
    assert not table.grouped
    facts = Run().feed(normalized(0), table)
    assert kinds(facts) == ["alert.received", "alert.opened", "alert.routed"]


def test_a_storm_over_two_services_is_two_notifications_after_group_wait() -> None:
    run = Clocked()
    for host in range(10):
        facts = run.feed(normalized(0, host=f"h{host}", service=f"s{host % 2}"), BY_SERVICE)
        assert "alert.routed" not in kinds(facts)
        assert "alert.grouped" in kinds(facts)
    assert len(run.state.groups) == 2
    assert clock.next_due(run.state) == T0 + 30 * SECOND
    assert run.tick(T0 + 29 * SECOND) == []
    told = notified(run.tick(T0 + 30 * SECOND))
    assert len(told) == 2
    for note in told:
        assert note.reason == "firing"
        assert note.status == "firing"
        assert len(note.alerts) == 5
        assert note.truncated == 0
        assert {a.labels["service"] for a in note.alerts} == {note.group_labels["labels.service"]}
        assert all(a.reason == "firing" for a in note.alerts)
        assert note.due_at == T0 + 30 * SECOND
    assert clock.next_due(run.state) == T0 + 30 * SECOND + 3600 * SECOND  # the repeat


def test_a_later_alert_is_one_update_after_group_interval() -> None:
    run = Clocked()
    run.feed(normalized(0, host="a", service="api"), BY_SERVICE)
    run.tick(T0 + 30 * SECOND)
    run.feed(normalized(1, host="b", service="api"), BY_SERVICE)
    run.feed(normalized(2, host="c", service="api"), BY_SERVICE)
    due = T0 + 30 * SECOND + 300 * SECOND
    assert clock.next_due(run.state) == due
    assert run.tick(due - 1) == []
    [update] = notified(run.tick(due))
    assert update.reason == "update"
    assert [a.reason for a in update.alerts] == ["reminder", "firing", "firing"]  # oldest first


def test_resolving_every_alert_sends_resolved_and_closes_the_group() -> None:
    run = Clocked()
    run.feed(normalized(0, host="a", service="api"), BY_SERVICE)
    run.feed(normalized(0, host="b", service="api"), BY_SERVICE)
    run.tick(T0 + 30 * SECOND)
    run.feed(normalized(1, status="resolved", host="a", service="api"), BY_SERVICE)
    [partial] = notified(run.tick(T0 + 330 * SECOND))
    assert partial.reason == "update"
    assert partial.status == "firing"
    [gone] = [a for a in partial.alerts if a.labels["host"] == "a"]
    assert partial.resolved_alert_ids == [gone.alert_id]
    assert (gone.reason, gone.status) == ("resolved", "resolved")
    run.feed(normalized(6, status="resolved", host="b", service="api"), BY_SERVICE)
    [last] = notified(run.tick(T0 + 630 * SECOND))
    assert (last.reason, last.status) == ("resolved", "resolved")
    assert run.state.groups == {}
    assert clock.next_due(run.state) is None


def test_repeat_interval_reminds_with_no_new_event_until_acked() -> None:
    run = Clocked()
    run.feed(normalized(0, host="a", service="api"), BY_SERVICE)
    run.tick(T0 + 30 * SECOND)
    [reminder] = notified(run.tick(T0 + 3630 * SECOND))
    assert reminder.reason == "reminder"
    assert [a.reason for a in reminder.alerts] == ["reminder"]
    alert_id = reminder.alert_ids[0]
    fact = ev.AlertAcked(
        alert_id=alert_id, fingerprint=reminder.alerts[0].fingerprint, by="ana", at=T0
    )
    run.log.append((len(run.log) + 1, T0, fact))
    fold(run.state, len(run.log), T0, fact)
    assert clock.next_due(run.state) is None


def test_an_alert_resolved_before_the_first_notification_is_never_told() -> None:
    run = Clocked()
    run.feed(normalized(0, host="a", service="api"), BY_SERVICE)
    run.feed(normalized(0, status="resolved", host="a", service="api"), BY_SERVICE)
    assert run.state.groups == {}
    assert run.tick(T0 + 30 * SECOND) == []


def test_max_alerts_lists_the_most_severe_and_counts_the_rest() -> None:
    table = grouped(group_by=[], max_alerts=3)
    run = Clocked()
    for host in range(5):
        run.feed(normalized(0, host=f"h{host}"), table)
    run.feed(normalized(0, "critical", host="worst"), table)
    [note] = notified(run.tick(T0))
    assert note.truncated == 3
    assert len(note.alerts) == 3
    assert note.alerts[0].labels["host"] == "worst"
    assert note.group_labels == {}


def test_group_by_every_label_and_top_level_fields() -> None:
    values = groups.group_labels(
        ["..."],
        type_="t",
        source="s",
        severity="info",
        fingerprint="f",
        labels={"b": "2", "a": "1"},
    )
    assert values == {"type": "t", "labels.a": "1", "labels.b": "2"}
    values = groups.group_labels(
        ["severity", "labels.missing"],
        type_="t",
        source="s",
        severity="info",
        fingerprint="f",
        labels={},
    )
    assert values == {"severity": "info", "labels.missing": ""}


def test_group_keys_are_stable_and_bounded() -> None:
    key = groups.group_key(2, "pager", {"labels.cluster": "eu-1"})
    assert key == 'route[2]/pager/{labels.cluster="eu-1"}'
    assert groups.group_key(2, "pager", {"labels.cluster": "eu-1"}) == key
    long = groups.group_key(0, "r", {"labels.x": "v" * 1000})
    assert len(long) <= groups.MAX_KEY_CHARS
    assert long.startswith("route[0]/r/#")


@pytest.mark.parametrize(
    ("keys", "says"),
    [(["colour"], "can never match"), (["labels."], "can never match"), (["...", "type"], "alone")],
)
def test_group_by_keys_that_can_never_match_are_refused(keys: list[str], says: str) -> None:
    problem = groups.check_group_by(keys)
    assert problem is not None
    assert says in problem


def test_an_escalation_is_news_for_the_group() -> None:
    run = Clocked()
    run.feed(normalized(0, host="a", service="api"), BY_SERVICE)
    run.tick(T0 + 30 * SECOND)
    run.feed(normalized(1, "critical", host="a", service="api"), BY_SERVICE)
    [update] = notified(run.tick(T0 + 330 * SECOND))
    assert update.reason == "update"
    assert [(a.reason, a.severity) for a in update.alerts] == [("escalated", "critical")]


def test_a_muted_group_is_deferred_until_the_mute_ends_then_notified() -> None:
    # T0 is 2027-01-15T08:00:00Z; mute 08:00-09:00 UTC every day.
    import datetime as dt

    from tocsin.core.timeintervals import TimeRange

    assert dt.datetime.fromtimestamp(T0 / SECOND, dt.UTC).hour == 8
    spec = TimeIntervalSpec(times=[TimeRange(start="08:00", end="09:00")])
    intervals = TimeIntervals({"morning": (compile_interval(spec, dt.UTC, "t"),)})
    table = grouped(group_by=["labels.service"], mute_time_intervals=["morning"])
    run = Clocked()
    run.feed(normalized(0, host="a", service="api"), table)
    [deferred] = run.tick(T0 + 10 * SECOND, intervals)
    assert isinstance(deferred, ev.GroupDeferred)
    assert deferred.until == T0 + 60 * MINUTE
    assert clock.next_due(run.state) == T0 + 60 * MINUTE
    run.feed(normalized(30, status="resolved", host="a", service="api"), table)
    assert run.state.groups == {}  # fired and resolved while muted, nobody was told: nothing
    run.feed(normalized(40, host="b", service="api"), table)
    [later] = run.tick(T0 + 40 * MINUTE, intervals)
    assert isinstance(later, ev.GroupDeferred)
    [note] = notified(run.tick(T0 + 60 * MINUTE, intervals))
    assert note.alerts[0].labels["host"] == "b"


def test_an_active_interval_that_never_covers_now_defers_and_one_that_does_lets_through() -> None:
    never = TimeIntervals(
        {
            "never": (
                compile_interval(TimeIntervalSpec(years=["1999"]), __import__("datetime").UTC, "t"),
            )
        }
    )
    table = grouped(group_by=["labels.service"], active_time_intervals=["never"])
    run = Clocked()
    run.feed(normalized(0, host="a", service="api"), table)
    [deferred] = run.tick(T0, never)
    assert isinstance(deferred, ev.GroupDeferred)
    assert deferred.until == T0 + clock.RECHECK_US
    always = TimeIntervals(
        {"never": (compile_interval(TimeIntervalSpec(), __import__("datetime").UTC, "t"),)}
    )
    assert notified(run.tick(T0 + clock.RECHECK_US, always))


def test_an_operator_resolve_reaches_the_groups_the_alert_joined() -> None:
    """`POST /api/v1/alerts/{id}/resolve` (``commands.resolve``) tells the alert's groups,
    as a publisher's resolved event does, not only the receivers told directly."""
    from tocsin.core import commands

    run = Clocked()
    run.feed(normalized(0, host="a", service="api"), BY_SERVICE)
    [note] = notified(run.tick(T0 + 30 * SECOND))
    facts = commands.resolve(
        run.state, note.alert_ids[0], by="ana", comment=None, at=T0 + MINUTE, new_id=run.new_id
    )
    grouped = [f for f in facts if isinstance(f, ev.AlertGrouped)]
    assert [(f.reason, f.group_key) for f in grouped] == [("resolved", note.group_key)]
    for fact in facts:
        run.log.append((len(run.log) + 1, T0 + MINUTE, fact))
        fold(run.state, len(run.log), T0 + MINUTE, fact)
    [resolved] = notified(run.tick(T0 + 330 * SECOND))
    assert (resolved.reason, resolved.status) == ("resolved", "resolved")


def test_a_tick_with_max_listed_leaves_the_groups_beyond_it_due_for_the_next_tick() -> None:
    """``max_listed`` (the clock loop's ``FLUSH_ALERTS``): groups due together are
    notified over several ticks at the same instant, each tick's committed and
    published before the next is decided (issue #20, W5). Catches a tick that
    notifies past the budget, one that drops the groups beyond it, or one that
    notifies a group twice: the ticks together tell exactly what one tick would."""
    whole, parts = Clocked(), Clocked()
    for run in (whole, parts):
        for host in range(12):
            run.feed(normalized(0, host=f"h{host}", service=f"s{host % 4}"), BY_SERVICE)
    due = T0 + 30 * SECOND
    everything = notified(whole.tick(due, routing=BY_SERVICE))
    assert len(everything) == 4
    first = notified(
        clock.tick(
            parts.state,
            due,
            new_id=parts.notes,
            intervals=NO_INTERVALS,
            routing=BY_SERVICE,
            max_listed=5,
        )
    )
    assert [len(note.alert_ids) for note in first] == [3, 3]  # 3 < 5, then 6 >= 5: stop
    for fact in first:
        seq = len(parts.log) + 1
        parts.log.append((seq, due, fact))
        fold(parts.state, seq, due, fact)
    assert clock.next_due(parts.state) == due  # the other two are still due now
    rest = notified(parts.tick(due, routing=BY_SERVICE))
    told = [note.group_key for note in first + rest]
    assert sorted(told) == sorted(note.group_key for note in everything)
    assert len(set(told)) == 4
    assert all(note.due_at == due and note.fired_at == due for note in first + rest)
