"""Heartbeats, pure (DESIGN.md section 13): beats, deadlines, the missed alert and its
resolve, with every instant injected and the live state equal to a rebuild after each
step."""

from __future__ import annotations

from tests.core.decide.support import apply, silence
from tests.core.test_fold import ROUTES, T0, kinds
from tests.core.test_groups import Clocked, grouped, notified
from tocsin.core import clock, commands, heartbeats, views
from tocsin.core import events as ev
from tocsin.core.decide.route import RoutingTable
from tocsin.core.fold import rebuild
from tocsin.core.subjects import heartbeat_subject
from tocsin.core.times import Duration, format_us

SECOND = 1_000_000
EVERY, GRACE = 60, 10  # seconds
BACKUP = ev.HeartbeatRule(
    every_seconds=EVERY,
    grace_seconds=GRACE,
    severity="critical",
    summary="the nightly backup has not reported",
    labels={"team": "dba"},
)


def configure(
    run: Clocked, at: int, resolve_timeout: float | None = None, **rules: ev.HeartbeatRule
) -> None:
    """A ``config.loaded`` with ``rules`` (the service logs one at every start)."""
    fact = ev.ConfigLoaded(
        digest="d",
        receivers={},
        routes=2,
        dedup_window_seconds=600.0,
        resolve_timeout_seconds=resolve_timeout,
        heartbeats=rules,
    )
    apply(run, [fact], at)
    assert run.state == rebuild(run.log)


def beat(run: Clocked, name: str, at: int, routing: RoutingTable = ROUTES) -> list[ev.Event]:
    facts = heartbeats.beat(
        run.state,
        name,
        subject=heartbeat_subject(name),
        received_at=at,
        raw=b"",
        routing=routing,
        new_id=run.notes,
        trace_id=None,
    )
    apply(run, facts, at)
    assert run.state == rebuild(run.log)
    return facts


def routed(facts: list[ev.Event]) -> list[tuple[str, str]]:
    return sorted((f.reason, f.receiver) for f in facts if isinstance(f, ev.AlertRouted))


def missed_run() -> tuple[Clocked, ev.HeartbeatMissed, list[ev.Event]]:
    """A heartbeat configured at T0 that never beat, ticked at its deadline."""
    run = Clocked()
    configure(run, T0, backup=BACKUP)
    facts = run.tick(T0 + (EVERY + GRACE) * SECOND)
    missed = facts[0]
    assert isinstance(missed, ev.HeartbeatMissed)
    return run, missed, facts


def test_beats_within_every_plus_grace_keep_it_quiet() -> None:
    """Catches a deadline counted from the configuration rather than the last beat, or
    a grace left out: each beat moves the deadline to ``every + grace`` after it."""
    run = Clocked()
    configure(run, T0, backup=BACKUP)
    assert clock.next_due(run.state) == T0 + (EVERY + GRACE) * SECOND
    for n in range(1, 6):
        at = T0 + n * 50 * SECOND
        assert run.tick(at) == []
        assert kinds(beat(run, "backup", at)) == ["heartbeat.received"]
        assert clock.next_due(run.state) == at + (EVERY + GRACE) * SECOND
    assert run.tick(T0 + 250 * SECOND + (EVERY + GRACE) * SECOND - 1) == []
    assert run.state.heartbeats["backup"].beats == 5


def test_no_beat_opens_a_heartbeat_missed_alert_routed_like_any_alert() -> None:
    """Catches a missed deadline that opens nothing, opens an alert without the
    heartbeat's label or configured fields, or is not routed by the routing table
    (critical: the pager route and the catch-all)."""
    run, missed, facts = missed_run()
    assert kinds(facts) == [
        "heartbeat.missed",
        "alert.received",
        "alert.opened",
        "alert.routed",
        "alert.routed",
    ]
    assert (missed.name, missed.due_at, missed.fired_at, missed.last_beat) == (
        "backup",
        T0 + 70 * SECOND,
        T0 + 70 * SECOND,
        None,
    )
    assert routed(facts) == [("firing", "hook"), ("firing", "pager")]
    alert = run.state.alerts[missed.alert_id]
    assert (alert.type, alert.severity, alert.summary, alert.source) == (
        "heartbeat.missed",
        "critical",
        "the nightly backup has not reported",
        "heartbeat",
    )
    assert alert.labels == {"heartbeat": "backup", "team": "dba"}
    assert alert.fingerprint == missed.fingerprint
    assert alert.details["last_beat"] is None


def test_while_its_alert_is_open_a_heartbeat_misses_once() -> None:
    """Catches a clock that opens (or counts) the missed heartbeat again at every tick
    while nobody beats."""
    run, _, _ = missed_run()
    assert clock.next_due(run.state) is None
    assert run.tick(T0 + 3600 * SECOND) == []
    assert run.state.heartbeats["backup"].missed == 1
    [shown] = views.heartbeat_list(run.state).heartbeats
    assert (shown.status, shown.next_deadline) == ("missed", None)


def test_the_next_beat_resolves_the_alert_routed_as_a_resolve() -> None:
    """Catches a beat that leaves the missed alert open, or resolves it without telling
    the receivers that were told it fired; the deadline then counts from the beat."""
    run, missed, _ = missed_run()
    at = T0 + 100 * SECOND
    facts = beat(run, "backup", at)
    assert kinds(facts)[:3] == ["heartbeat.received", "alert.received", "alert.resolved"]
    received = facts[0]
    assert isinstance(received, ev.HeartbeatReceived)
    assert (received.alert_id, received.fingerprint) == (missed.alert_id, missed.fingerprint)
    assert routed(facts) == [("resolved", "hook"), ("resolved", "pager")]
    assert run.state.alerts[missed.alert_id].status == "resolved"
    assert clock.next_due(run.state) == at + (EVERY + GRACE) * SECOND
    assert kinds(beat(run, "backup", at + SECOND)) == ["heartbeat.received"]  # nothing open
    again = run.tick(at + SECOND + (EVERY + GRACE) * SECOND)
    assert kinds(again)[:3] == ["heartbeat.missed", "alert.received", "alert.opened"]
    assert isinstance(again[0], ev.HeartbeatMissed)
    assert again[0].alert_id != missed.alert_id  # a new alert
    assert again[0].last_beat == at + SECOND


def test_a_restart_does_not_reset_the_deadline() -> None:
    """Catches a start (which logs ``config.loaded`` again) that restarts the count from
    the new start: a heartbeat silent since before the restart would never miss."""
    run = Clocked()
    configure(run, T0, backup=BACKUP)
    beat(run, "backup", T0 + 20 * SECOND)
    configure(run, T0 + 50 * SECOND, backup=BACKUP)  # a restart
    assert clock.next_due(run.state) == T0 + 90 * SECOND
    configure(run, T0 + 60 * SECOND, backup=BACKUP, other=BACKUP)  # one more configured
    assert run.state.heartbeats["other"].since == T0 + 60 * SECOND
    assert kinds(run.tick(T0 + 90 * SECOND))[0] == "heartbeat.missed"
    configure(run, T0 + 95 * SECOND, backup=BACKUP)  # "other" dropped from the config
    assert "other" not in run.state.heartbeats
    assert clock.next_due(run.state) is None  # backup's alert is open


def test_a_changed_rule_moves_the_deadline_from_the_same_last_beat() -> None:
    """Catches a new ``every`` that applies only from the next beat on."""
    run = Clocked()
    configure(run, T0, backup=BACKUP)
    beat(run, "backup", T0 + 10 * SECOND)
    longer = ev.HeartbeatRule(every_seconds=600, grace_seconds=0, summary="s")
    configure(run, T0 + 20 * SECOND, backup=longer)
    assert clock.next_due(run.state) == T0 + 610 * SECOND


def test_an_unknown_name_is_rejected_with_a_reason() -> None:
    """Catches a beat of a name the config lacks that is dropped silently or counted
    as a beat: it is rejected like bad input, with its reason and raw bytes."""
    run = Clocked()
    configure(run, T0, backup=BACKUP)
    [rejected] = heartbeats.beat(
        run.state,
        "nightly",
        subject="alerts.heartbeat.nightly",
        received_at=T0,
        raw=b"anything",
        routing=ROUTES,
        new_id=run.notes,
        trace_id="t",
    )
    assert isinstance(rejected, ev.AlertRejected)
    assert rejected.code == "unknown_heartbeat"
    assert "'nightly'" in rejected.reason
    assert "backup" in rejected.reason  # the names it knows
    assert (rejected.subject, rejected.raw, rejected.trace_id) == (
        "alerts.heartbeat.nightly",
        "anything",
        "t",
    )


def test_resolve_timeout_never_resolves_a_missed_heartbeat() -> None:
    """Catches ``[alerts] resolve_timeout`` closing the missed alert minutes later,
    which would page again and again while the heartbeat stays silent."""
    run = Clocked()
    configure(run, T0, resolve_timeout=30.0, backup=BACKUP)
    run.tick(T0 + 70 * SECOND)
    assert run.state.auto_resolve == {}
    assert clock.next_due(run.state) is None


def test_an_alert_resolved_by_hand_misses_again_a_period_later() -> None:
    """Catches a heartbeat that, once its alert was resolved by an operator with no beat
    since, never misses again (or misses again at once)."""
    run, missed, _ = missed_run()
    resolve_at = T0 + 80 * SECOND
    apply(
        run,
        commands.resolve(
            run.state, missed.alert_id, by="ana", comment=None, at=resolve_at, new_id=run.notes
        ),
        resolve_at,
    )
    assert clock.next_due(run.state) == missed.fired_at + (EVERY + GRACE) * SECOND
    assert kinds(run.tick(missed.fired_at + 70 * SECOND))[0] == "heartbeat.missed"


def test_a_missed_heartbeat_joins_a_group_and_is_silenced_like_any_alert() -> None:
    """Catches the missed alert taking a path of its own: a grouped route gathers it
    into a group notification, and a silence on its labels holds it back."""
    run = Clocked()
    by_team = grouped(group_by=["labels.team"], group_wait=Duration(5))
    configure(run, T0, backup=BACKUP)
    facts = run.tick(T0 + 70 * SECOND, routing=by_team)
    assert kinds(facts)[-2:] == ["group.opened", "alert.grouped"]
    [note] = notified(run.tick(T0 + 75 * SECOND, routing=by_team))
    assert note.group_labels == {"labels.team": "dba"}
    assert [a.type for a in note.alerts] == ["heartbeat.missed"]

    quiet = Clocked()
    configure(quiet, T0, backup=BACKUP)
    silence(quiet, T0, ends_at="1h", labels={"heartbeat": "backup"})
    assert kinds(quiet.tick(T0 + 70 * SECOND))[-1] == "alert.silenced"


def test_stats_count_missed_heartbeats() -> None:
    """Catches a missed deadline that the stats do not show."""
    run, _, _ = missed_run()
    assert views.stats(run.state, 1, T0 + 70 * SECOND).heartbeats_missed == 1
    assert views.stats(run.state, 1, T0 + 3 * 3600 * SECOND).heartbeats_missed == 0


def test_the_heartbeat_list_shows_last_beat_and_next_deadline() -> None:
    """Catches a list that does not say when each heartbeat beat and falls due."""
    run = Clocked()
    configure(run, T0, backup=BACKUP, other=BACKUP)
    beat(run, "backup", T0 + 5 * SECOND)
    shown = {h.name: h for h in views.heartbeat_list(run.state).heartbeats}
    assert shown["other"].status == "waiting"
    assert shown["other"].last_beat is None
    assert shown["backup"].status == "ok"
    assert shown["backup"].last_beat == format_us(T0 + 5 * SECOND)
    assert shown["backup"].next_deadline == format_us(T0 + 75 * SECOND)
    assert [h.name for h in views.heartbeat_list(run.state).heartbeats] == ["other", "backup"]
    assert shown["backup"].labels == {"heartbeat": "backup", "team": "dba"}
