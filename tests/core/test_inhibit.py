"""Inhibition, pure (DESIGN.md section 12): which alerts an open alert holds back, by
rule and ``equal`` values; self-inhibition, resolves, the cost of asking, the release
when the last inhibitor goes (by event, API or clock), groups and silences; with time
injected and the live state equal to a rebuild after every step."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec

from tests.core.test_fold import MINUTE, T0
from tests.core.test_groups import SECOND, Clocked
from tocsin.core import clock, commands, views
from tocsin.core import events as ev
from tocsin.core.decide.inhibit import InhibitRule, check_equal
from tocsin.core.decide.route import Route, RoutingTable
from tocsin.core.fold import fold, rebuild
from tocsin.core.ingest import Normalized, default_fingerprint
from tocsin.core.matchers import Match
from tocsin.core.state import State
from tocsin.core.times import Duration

CLUSTER_DOWN = InhibitRule(
    name="cluster-down-mutes-its-pods",
    source=Match(type="cluster_unreachable"),
    target=Match(severity=["warning", "error"]),
    equal=["labels.cluster"],
)
EVERYONE = Route(receivers=["hook"])
TABLE = RoutingTable.compile([EVERYONE], [CLUSTER_DOWN])


def event(
    at_second: int,
    type_: str,
    severity: str = "warning",
    status: str = "firing",
    **labels: str,
) -> Normalized:
    return Normalized(
        type=type_,
        severity=severity,
        summary=f"{type_} {labels}",
        source="k8s",  # type: ignore[arg-type]
        status=status,
        labels=labels,
        fingerprint=default_fingerprint(type_, labels),  # type: ignore[arg-type]
        details={},
        timestamp=T0 + at_second * SECOND,
        timestamp_replaced=False,
        event_id=None,
    )


def down(at: int, cluster: str, status: str = "firing") -> Normalized:
    return event(at, "cluster_unreachable", "critical", status, cluster=cluster)


def pod(at: int, cluster: str, name: str = "p1", status: str = "firing") -> Normalized:
    return event(at, "pod_not_ready", "warning", status, cluster=cluster, pod=name)


class Inhibiting(Clocked):
    """A ``Clocked`` run whose state must equal a rebuild of its log after each event."""

    def feed(  # type: ignore[override]
        self, e: Normalized, routing: RoutingTable = TABLE, window: float = 600.0
    ) -> list[ev.Event]:
        facts = super().feed(e, routing, window)
        assert self.state == rebuild(self.log)
        return facts

    def tick(self, at: int, routing: RoutingTable = TABLE) -> list[ev.Event]:  # type: ignore[override]
        return super().tick(at, routing=routing)

    def command(self, facts: list[ev.Event], at: int) -> list[ev.Event]:
        for fact in facts:
            seq = len(self.log) + 1
            self.log.append((seq, at, fact))
            fold(self.state, seq, at, fact)
        assert self.state == rebuild(self.log)
        return facts

    def alert_of(self, e: Normalized) -> str:
        return self.state.open_by_fingerprint[e.fingerprint].alert_id


def of(facts: list[ev.Event], kind: type[Any]) -> list[Any]:
    return [f for f in facts if isinstance(f, kind)]


def routed(facts: list[ev.Event]) -> list[tuple[str, str]]:
    return [(f.alert_id, f.reason) for f in of(facts, ev.AlertRouted)]


def test_a_cluster_down_holds_back_the_warnings_of_its_cluster_not_of_another() -> None:
    """Catches inhibition that ignores ``equal`` (B muted too) or does not mute at all."""
    run = Inhibiting()
    source = run.feed(down(0, "A"))
    [joined] = of(source, ev.InhibitSource)
    assert joined.rules == {"cluster-down-mutes-its-pods": '{"labels.cluster":"A"}'}
    assert routed(source)  # the inhibitor itself is told
    inhibitor = run.alert_of(down(0, "A"))

    held = run.feed(pod(1, "A"))
    [inhibited] = of(held, ev.AlertInhibited)
    assert (inhibited.rule, inhibited.inhibited_by) == ("cluster-down-mutes-its-pods", inhibitor)
    assert routed(held) == []
    assert routed(run.feed(pod(2, "B"))) == [(run.alert_of(pod(2, "B")), "firing")]

    target = run.state.alerts[run.alert_of(pod(1, "A"))]
    assert target.suppressed_count == 1
    assert views.shown_status(run.state, target, T0) == "inhibited"
    assert views.alert_view(target).inhibited_by == inhibitor
    stats = views.stats(run.state, 1, T0)
    assert (stats.inhibited, stats.suppressed) == (1, 1)
    page = views.list_alerts(run.state, status="inhibited", now=T0)
    assert [a.id for a in page.alerts] == [target.id]


def test_every_event_of_an_inhibited_alert_is_held_back_its_bucket_unspent() -> None:
    """Catches a spent bucket: a duplicate after the inhibitor resolved would be
    suppressed as a duplicate and nobody would ever hear of the warning."""
    run = Inhibiting()
    run.feed(down(0, "A"))
    run.feed(pod(1, "A"))
    assert of(run.feed(pod(2, "A")), ev.AlertInhibited)
    run.feed(down(3, "A", "resolved"))
    # Before the clock releases it, its own next event is news: routed as firing.
    warning = run.alert_of(pod(1, "A"))
    assert routed(run.feed(pod(4, "A"))) == [(warning, "firing")]
    released = run.tick(T0 + 4 * SECOND)
    assert of(released, ev.InhibitReleased)[0].alert_ids == []  # it was no longer held
    assert routed(released) == []


def test_an_alert_never_inhibits_itself() -> None:
    """Catches self-inhibition: one critical per cluster would mute its own pages."""
    rule = InhibitRule(
        source=Match(severity="critical"), target=Match(severity="critical"), equal=["type"]
    )
    table = RoutingTable.compile([EVERYONE], [rule])
    run = Inhibiting()
    first = run.feed(down(0, "A"), table)
    assert of(first, ev.InhibitSource)[0].rules == {"inhibit[0]": '{"type":"cluster_unreachable"}'}
    assert len(routed(first)) == 1
    assert of(run.feed(down(1, "A"), table), ev.AlertInhibited) == []
    # Another alert of the same type is held back by the first (Alertmanager's rule).
    [held] = of(run.feed(down(2, "B"), table), ev.AlertInhibited)
    assert held.inhibited_by == run.alert_of(down(0, "A"))


def test_resolves_are_never_inhibited() -> None:
    """Catches a resolve muted while its inhibitor fires: a receiver told of the warning
    before the cluster went down would never hear it ended."""
    run = Inhibiting()
    run.feed(pod(0, "A"))
    told = run.alert_of(pod(0, "A"))
    run.feed(down(1, "A"))
    resolved = run.feed(pod(2, "A", status="resolved"))
    assert of(resolved, ev.AlertInhibited) == []
    assert routed(resolved) == [(told, "resolved")]


def test_equal_keys_compare_type_source_severity_and_labels_missing_as_empty() -> None:
    """Catches ``equal`` read from the wrong field, and a missing label that never
    equals (Alertmanager counts it as the empty value)."""
    rule = InhibitRule(
        source_matchers=['alertname="cluster_unreachable"'],
        target_matchers=['severity=~"warning|error"'],
        equal=["source", "labels.zone"],
    )
    table = RoutingTable.compile([EVERYONE], [rule])
    run = Inhibiting()
    run.feed(down(0, "A"), table)  # no zone label: ""
    assert of(run.feed(pod(1, "B"), table), ev.AlertInhibited)  # same source, zone ""
    other_zone = event(2, "pod_not_ready", cluster="A", zone="z1")
    assert of(run.feed(other_zone, table), ev.AlertInhibited) == []
    assert check_equal(["severity", "labels.x"]) is None
    assert check_equal(["fingerprint"]) is not None
    assert check_equal(["labels."]) is not None
    assert check_equal(["type", "type"]) is not None


def test_resolving_the_last_inhibitor_releases_the_targets_still_firing_once() -> None:
    """Catches a target never told (no release), told twice (released at every tick or
    by each inhibitor), or a release while another inhibitor of it still fires."""
    run = Inhibiting()
    run.feed(down(0, "A"))
    second = event(1, "cluster_unreachable", "critical", cluster="A", probe="2")
    run.feed(second)
    run.feed(pod(2, "A", "p1"))
    run.feed(pod(3, "A", "p2"))
    run.feed(pod(4, "A", "p3"))
    run.feed(pod(5, "A", "p3", status="resolved"))  # resolved while held: nobody told
    warnings = [run.alert_of(pod(2, "A", "p1")), run.alert_of(pod(3, "A", "p2"))]
    assert clock.next_due(run.state) is None

    run.feed(down(10, "A", "resolved"))
    assert clock.next_due(run.state) is None  # the other inhibitor still fires
    last = run.alert_of(second)
    run.feed(msgspec.structs.replace(second, status="resolved", timestamp=T0 + 11 * SECOND))
    assert clock.next_due(run.state) == T0 + 11 * SECOND  # due at once
    released = run.tick(T0 + 11 * SECOND)
    [fact] = of(released, ev.InhibitReleased)
    assert (fact.alert_id, fact.alert_ids) == (last, warnings)
    assert sorted(routed(released)) == sorted((w, "firing") for w in warnings)
    assert clock.next_due(run.state) is None
    assert run.tick(T0 + 12 * SECOND) == []
    for warning in warnings:
        assert run.state.alerts[warning].inhibited_by is None
    # Their bucket is spent now: the next event in it is a duplicate.
    again = run.feed(pod(13, "A", "p1"))
    assert [ev.kind_of(f) for f in again] == ["alert.received", "alert.suppressed"]


def test_a_release_by_the_api_and_by_the_clock_notifies_too() -> None:
    """Catches a release that only a publisher's resolve triggers."""
    run = Inhibiting()
    run.feed(down(0, "A"))
    run.feed(pod(1, "A"))
    inhibitor = run.alert_of(down(0, "A"))
    ids = iter(f"api{n}" for n in range(10))
    run.command(
        commands.resolve(
            run.state,
            inhibitor,
            by="ops",
            comment=None,
            at=T0 + 2 * SECOND,
            new_id=lambda: next(ids),
        ),
        T0 + 2 * SECOND,
    )
    assert routed(run.tick(T0 + 3 * SECOND)) == [(run.alert_of(pod(1, "A")), "firing")]

    ending = msgspec.structs.replace(down(10, "B"), ends_at=T0 + 20 * SECOND)
    run.feed(ending)
    run.feed(pod(11, "B"))
    resolved = run.tick(T0 + 20 * SECOND)
    assert of(resolved, ev.AlertResolved)[0].by == "ends_at"
    assert routed(run.tick(T0 + 20 * SECOND)) == [(run.alert_of(pod(11, "B")), "firing")]


def test_an_inhibitor_that_stops_matching_the_source_releases_its_targets() -> None:
    """Catches an index that keeps an alert whose later event no longer matches the
    rule's source (a duplicate changed its severity)."""
    rule = InhibitRule(
        source=Match(severity="critical"),
        target=Match(severity="warning"),
        equal=["labels.cluster"],
    )
    table = RoutingTable.compile([EVERYONE], [rule])
    run = Inhibiting()
    run.feed(event(0, "node_down", "critical", cluster="A"), table)
    run.feed(pod(1, "A"), table)
    calmer = run.feed(event(2, "node_down", "error", cluster="A"), table)
    assert of(calmer, ev.InhibitSource)[0].rules == {}
    released = run.tick(T0 + 2 * SECOND)
    assert routed(released) == [(run.alert_of(pod(1, "A")), "firing")]


def test_an_acknowledged_target_is_released_without_a_page() -> None:
    """Catches a page for an alert an operator already acknowledged."""
    run = Inhibiting()
    run.feed(down(0, "A"))
    run.feed(pod(1, "A"))
    warning = run.alert_of(pod(1, "A"))
    run.command(
        commands.ack(run.state, warning, by="ops", comment=None, at=T0 + 2 * SECOND),
        T0 + 2 * SECOND,
    )
    run.feed(down(3, "A", "resolved"))
    released = run.tick(T0 + 3 * SECOND)
    assert of(released, ev.InhibitReleased)[0].alert_ids == [warning]
    assert routed(released) == []


class Counting(dict[str, Any]):
    """A dict that counts the reads of its keys and every walk over it."""

    reads = 0

    def get(self, key: str, default: Any = None) -> Any:
        Counting.reads += 1
        return super().get(key, default)

    def __getitem__(self, key: str) -> Any:
        Counting.reads += 1
        return super().__getitem__(key)

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("walked over the index")

    def values(self) -> Any:
        raise AssertionError("walked over the index")

    def items(self) -> Any:
        raise AssertionError("walked over the index")


def _reads_to_decide(open_sources: int) -> int:
    state = State()
    slots: dict[str, dict[str, None]] = {
        f'{{"labels.cluster":"c{n}"}}': {f"src{n}": None} for n in range(open_sources)
    }
    slots['{"labels.cluster":"A"}'] = {"srcA": None}
    state.inhibitors = Counting({CLUSTER_DOWN.name: Counting(slots)})  # type: ignore[dict-item]
    Counting.reads = 0
    found = TABLE.inhibitions.inhibition(
        state,
        "target",
        severity="warning",
        type_="pod_not_ready",
        source="k8s",
        labels={"cluster": "A"},
    )
    assert found is not None
    assert found.inhibited_by == "srcA"
    return Counting.reads


def test_asking_costs_lookups_that_do_not_grow_with_the_open_alerts() -> None:
    """Catches a scan of the open alerts (or of a rule's slots) per event: the reads of
    the index are the same for 10 and 10,000 open inhibitors, and nothing walks it."""
    assert _reads_to_decide(10) == _reads_to_decide(10_000) == 2


def test_an_inhibited_alert_leaves_the_group_it_was_never_told_in() -> None:
    """Catches a group notification listing an alert the cluster outage inhibits:
    warnings that joined during group_wait before the inhibitor came."""
    grouped = Route(receivers=["team"], group_by=["labels.cluster"], group_wait=Duration(30))
    table = RoutingTable.compile([grouped], [CLUSTER_DOWN])
    run = Inhibiting()
    run.feed(pod(0, "A", "p1"), table)
    run.feed(pod(1, "A", "p2"), table)
    run.feed(down(2, "A"), table)
    held = run.feed(pod(3, "A", "p3"), table)  # news after the inhibitor: never joins
    assert of(held, ev.AlertGrouped) == []
    first = run.tick(T0 + 30 * SECOND, routing=table)  # p1 and p2 leave first
    assert sorted(f.alert_id for f in of(first, ev.AlertInhibited)) == sorted(
        [run.alert_of(pod(0, "A", "p1")), run.alert_of(pod(1, "A", "p2"))]
    )
    [note] = of(run.tick(T0 + 30 * SECOND, routing=table), ev.GroupNotified)
    inhibitor = run.alert_of(down(2, "A"))
    assert note.alert_ids == [inhibitor]

    run.feed(down(40, "A", "resolved"), table)
    released = run.tick(T0 + 40 * SECOND, routing=table)
    assert len(of(released, ev.InhibitReleased)[0].alert_ids) == 3
    assert {f.reason for f in of(released, ev.AlertGrouped)} == {"firing"}
    told = run.tick(T0 + 40 * SECOND + 5 * MINUTE, routing=table)
    [update] = of(told, ev.GroupNotified)
    assert len(update.alert_ids) == 4  # the three warnings and the resolved inhibitor
    assert update.resolved_alert_ids == [inhibitor]


def test_a_silence_that_ends_while_an_inhibitor_fires_hands_the_alert_over() -> None:
    """Catches a page when a silence ends over an alert an inhibitor still holds back,
    and an alert lost between the two (never released when the inhibitor resolves)."""
    run = Inhibiting()
    ids = iter(f"s{n}" for n in range(10))
    run.command(
        commands.create_silence(
            run.state,
            matchers={"labels": {"cluster": "A"}, "type": "pod_not_ready"},
            starts_at=None,
            ends_at="10s",
            created_by="ops",
            comment=None,
            now=T0,
            new_id=lambda: next(ids),
        ),
        T0,
    )
    run.feed(down(1, "A"))
    assert of(run.feed(pod(2, "A")), ev.AlertSilenced)
    ended = run.tick(T0 + 10 * SECOND)
    assert of(ended, ev.SilenceExpired)[0].alert_ids == []
    [handed] = of(ended, ev.AlertInhibited)
    assert handed.fired_at == T0 + 10 * SECOND
    assert views.stats(run.state, 1, T0).inhibited == 0  # the clock's finding: no event
    assert routed(ended) == []
    run.feed(down(20, "A", "resolved"))
    assert routed(run.tick(T0 + 20 * SECOND)) == [(run.alert_of(pod(2, "A")), "firing")]
