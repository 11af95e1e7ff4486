"""Repartitioning, pure (``core.repartition``): which open alerts move where, with what
dedup state, and what refuses the move. Old logs are made by the real triage and fold
(``tests.core.test_fold.Run``); the new ones are folded from the planned facts and then
judged by the same triage, so "still suppressed" and "still resolves" are the router's
own decisions."""

from __future__ import annotations

from msgspec.structs import replace

from tests.core.decide.support import ack, apply, silence
from tests.core.test_fold import MINUTE, T0, WINDOW, Run, kinds, normalized, routed
from tocsin.core import commands, partition, repartition
from tocsin.core import events as ev
from tocsin.core.decide.route import Route, RoutingTable
from tocsin.core.fold import fold_alert, rebuild
from tocsin.core.matchers import Match
from tocsin.core.times import Duration

HOSTS = [f"db{i}" for i in range(12)]


def settle(run: Run, at: int) -> None:
    """Every notification of ``run`` delivered (so no delivery stands in the way)."""
    for notification_id, delivery in list(run.state.deliveries.items()):
        if delivery.status == "pending":
            alert = run.state.alerts[delivery.alert_id]
            apply(
                run,
                [
                    ev.DeliverySucceeded(
                        notification_id=notification_id,
                        receiver=delivery.receiver,
                        alert_id=delivery.alert_id,
                        fingerprint=alert.fingerprint,
                        channel="webhook",
                        attempts=1,
                        at=at,
                    )
                ],
                at,
            )


def two_partitions() -> list[Run]:
    """The logs of 2 partitions: one alert per host, each in its partition's log; the
    last host resolved (resolved alerts stay behind)."""
    runs = [Run(), Run()]
    for host in HOSTS:
        event = normalized(0, host=host)
        runs[partition.of_alert(event.fingerprint, event.type, event.labels, count=2)].feed(event)
    last = normalized(1, status="resolved", host=HOSTS[-1])
    runs[partition.of_alert(last.fingerprint, last.type, last.labels, count=2)].feed(last)
    for run in runs:
        settle(run, T0 + 2 * MINUTE)
    return runs


def sources(runs: list[Run]) -> list[repartition.Source]:
    return [
        repartition.Source(
            partition=k, state=run.state, last_seq=len(run.log), head="00", archive=f"a/p{k}"
        )
        for k, run in enumerate(runs)
    ]


def new_logs(planned: repartition.Plan) -> list[Run]:
    """Each new log as the router of its partition finds it: the planned facts folded."""
    out = []
    for facts in planned.facts:
        run = Run()
        run.state = rebuild((seq, T0 + 3 * MINUTE, f) for seq, f in enumerate(facts, 1))
        run.log = [(seq, T0 + 3 * MINUTE, f) for seq, f in enumerate(facts, 1)]
        out.append(run)
    return out


def make_plan(runs: list[Run], count: int = 3) -> repartition.Plan:
    return repartition.plan(
        sources(runs), count=count, key=(), window_seconds=WINDOW, now=T0 + 3 * MINUTE
    )


def test_each_open_alert_moves_to_the_partition_of_its_fingerprint_under_m() -> None:
    """2 -> 3: every open alert is in exactly one new log, the one ``of_alert`` gives
    under 3 (the partitioners' choice for its events), the resolved one in none (catches
    an alert moved by its old partition, copied to every log, or a resolved one
    reopened); every new log starts with ``partition.seeded`` naming its sources."""
    runs = two_partitions()
    planned = make_plan(runs)
    assert planned.blockers == []
    moved: dict[str, int] = {}
    for target, facts in enumerate(planned.facts):
        seeded = facts[0]
        assert isinstance(seeded, ev.PartitionSeeded)
        assert (seeded.partition, seeded.count, seeded.from_count) == (target, 3, 2)
        assert [s.archive for s in seeded.sources] == ["a/p0", "a/p1"]
        assert seeded.alerts == planned.moved(target)
        for fact in facts[1:]:
            assert isinstance(fact, ev.AlertMoved)
            assert fact.fingerprint not in moved
            moved[fact.fingerprint] = target
            assert target == partition.of_alert(fact.fingerprint, fact.type, fact.labels, count=3)
    opened = {
        a.fingerprint for run in runs for a in run.state.alerts.values() if a.status == "firing"
    }
    assert set(moved) == opened
    assert len(opened) == len(HOSTS) - 1
    assert len({target for target in moved.values()}) == 3, "12 hosts spread over 3"


def test_in_its_new_partition_a_duplicate_is_suppressed_and_a_resolve_resolves() -> None:
    """The router's own triage on the new logs: a duplicate of a moved alert in its
    bucket is suppressed (catches the dedup state left behind: it would open a new alert
    and notify again), a worse severity escalates, a resolve resolves the moved alert
    and tells the receiver told of it (catches ``notified`` lost: a resolve nobody hears)
    and the next bucket reminds. Each new log's live state equals a rebuild of it."""
    runs = two_partitions()
    logs = new_logs(make_plan(runs))
    for host in HOSTS[:-1]:
        event = normalized(4, host=host)
        log = logs[partition.of_alert(event.fingerprint, event.type, event.labels, count=3)]
        moved_id = log.state.open_by_fingerprint[event.fingerprint].alert_id
        assert kinds(log.feed(event)) == ["alert.received", "alert.suppressed"], host
        resolved = log.feed(normalized(5, status="resolved", host=host))
        assert kinds(resolved)[:2] == ["alert.received", "alert.resolved"]
        assert isinstance(resolved[1], ev.AlertResolved)
        assert resolved[1].alert_id == moved_id
        assert routed(resolved) == [("resolved", "hook")]
    for log in logs:
        assert log.state == rebuild(log.log)
        assert log.state.open_by_fingerprint == {}  # every moved alert resolved above


def test_reminders_escalation_acks_and_timers_move_with_the_alert() -> None:
    """1 -> 2 (the unpartitioned log): an acked alert stays acked (no reminder in the
    next bucket: catches the ack left behind), an escalation is judged against the
    severity already routed (critical again is a duplicate, catches ``routed_severity``
    lost), an unacked alert reminds in the next bucket (catches a bucket moved forward),
    and an ``ends_at`` timer moves with its alert."""
    run = Run()
    quiet, loud, timed = (normalized(0, host=h) for h in ("q1", "l1", "t1"))
    for event in (quiet, loud):
        run.feed(event)
    run.feed(normalized(1, "critical", host="l1"))
    run.feed(replace(timed, ends_at=T0 + 60 * MINUTE))
    ack(run, run.state.open_by_fingerprint[quiet.fingerprint].alert_id, T0 + 2 * MINUTE)
    settle(run, T0 + 2 * MINUTE)
    source = repartition.Source(partition=None, state=run.state, last_seq=1, head="00", archive="a")
    planned = repartition.plan(
        [source], count=2, key=(), window_seconds=WINDOW, now=T0 + 3 * MINUTE
    )
    assert [f[0].partition for f in planned.facts if isinstance(f[0], ev.PartitionSeeded)] == [
        0,
        1,
    ]
    logs = new_logs(planned)

    def log_of(fingerprint: str) -> Run:
        (found,) = [log for log in logs if fingerprint in log.state.open_by_fingerprint]
        return found

    assert kinds(log_of(loud.fingerprint).feed(normalized(4, "critical", host="l1"))) == [
        "alert.received",
        "alert.suppressed",
    ]
    assert kinds(log_of(quiet.fingerprint).feed(normalized(11, host="q1")))[-1] == (
        "alert.suppressed"
    )
    assert routed(log_of(loud.fingerprint).feed(normalized(12, host="l1"))) == [
        ("reminder", "hook")
    ]
    timer = log_of(timed.fingerprint).state.auto_resolve[timed.fingerprint]
    assert (timer.due, timer.by) == (T0 + 60 * MINUTE, "ends_at")


def test_a_longer_window_counts_the_moved_bucket_in_it() -> None:
    """Buckets are counted in the new config's window (``partition.seeded`` says which):
    10m -> 1h puts a moved alert's bucket in the hour it started (catches a 10-minute
    bucket index read as an hour's: no reminder for ever)."""
    runs = two_partitions()
    planned = repartition.plan(
        sources(runs), count=1, key=(), window_seconds=3600.0, now=T0 + 3 * MINUTE
    )
    (facts,) = planned.facts
    seeded, moved = facts[0], facts[1]
    assert isinstance(seeded, ev.PartitionSeeded)
    assert seeded.partition is None
    assert seeded.dedup_window_seconds == 3600.0
    assert isinstance(moved, ev.AlertMoved)
    assert moved.bucket == T0 // (3600 * 1_000_000)
    assert rebuild((s, T0, f) for s, f in enumerate(facts, 1)).dedup_window == 3600.0


def test_silences_still_to_come_are_copied_to_every_partition_once() -> None:
    """Silences mute per partition, so each new log gets every silence still to come,
    once even when several old logs had it (catches silences left behind, or a deleted
    or ended one brought back)."""
    runs = two_partitions()
    kept = silence(runs[0], T0, ends_at="2h", labels={"host": "db1"})
    silence(runs[1], T0, ends_at="1m", labels={"host": "db2"})  # over by the time of the move
    gone = silence(runs[1], T0, ends_at="2h", labels={"host": "db3"})
    apply(runs[1], commands.delete_silence(runs[1].state, gone, by="ana", at=T0), T0)
    runs[1].state.silences[kept] = runs[0].state.silences[kept]  # both logs knew it
    for facts in make_plan(runs).facts:
        copies = [f for f in facts if isinstance(f, ev.SilenceCreated)]
        assert [c.silence_id for c in copies] == [kept]


def test_what_would_be_lost_refuses_and_is_counted() -> None:
    """Pending deliveries, an open alert in a notification group: each a blocker naming
    how many (catches a move that silently drops outcomes or groups); a dead letter is
    only noted (it stays in the archived log); nothing at all when everything is
    settled."""
    runs = two_partitions()
    assert repartition.blockers(sources(runs)) == []
    assert repartition.notes(sources(runs)) == []
    pending = Run()
    pending.feed(normalized(0, host="x1"))
    pending.feed(normalized(0, host="x2"))
    (blocker,) = repartition.blockers(sources([pending]))
    assert blocker.startswith("2 delivery(ies) pending or retrying")

    grouped = Run()
    by_host = RoutingTable.compile(
        [
            Route(
                receivers=["hook"],
                match=Match(),
                group_by=["labels.cluster"],
                group_wait=Duration(30.0),
            )
        ]
    )
    grouped.feed(normalized(0, host="g1", cluster="c1"), routing=by_host)
    assert any(
        "1 open alert(s) in notification groups" in b
        for b in repartition.blockers(sources([grouped]))
    )

    dead = Run()
    dead.feed(normalized(0, host="d1"))
    ((notification_id, delivery),) = dead.state.deliveries.items()
    apply(
        dead,
        [
            ev.DeliveryDeadLettered(
                notification_id=notification_id,
                receiver=delivery.receiver,
                alert_id=delivery.alert_id,
                fingerprint=dead.state.alerts[delivery.alert_id].fingerprint,
                channel="webhook",
                attempts=8,
                error="410 Gone",
                status_code=410,
                at=T0,
            )
        ],
        T0,
    )
    assert repartition.blockers(sources([dead])) == []
    (note,) = repartition.notes(sources([dead]))
    assert note.startswith("1 dead letter(s) stay in the archived logs")


def test_new_logs_count_on_from_the_highest_old_seq() -> None:
    """Receivers keep per fingerprint the routed seq of the last notification they
    accepted and drop older ones (``core/policy/order.py``): each new log starts after
    the highest seq of every old log, and says so (catches a new log counting from 1,
    whose resolves the workers would call superseded and never send)."""
    runs = two_partitions()
    planned = make_plan(runs)
    highest = max(len(run.log) for run in runs)
    assert planned.after_seq == highest
    for facts in planned.facts:
        seeded = facts[0]
        assert isinstance(seeded, ev.PartitionSeeded)
        assert seeded.after_seq == highest


def test_a_moved_alert_folds_from_its_own_rows_once_let_go() -> None:
    """The API shows an alert the projection let go of by folding its own rows
    (``fold_alert``): in a repartitioned log they start with ``alert.moved``, which is
    its opening there (catches the moved alert answered as unknown once resolved)."""
    logs = new_logs(make_plan(two_partitions()))
    log = next(log for log in logs if log.state.open_by_fingerprint)
    fingerprint, current = next(iter(log.state.open_by_fingerprint.items()))
    host = log.state.alerts[current.alert_id].labels["host"]
    log.feed(normalized(5, status="resolved", host=host))
    rows = [
        (seq, ts, ev.encode(fact))
        for seq, ts, fact in log.log
        if getattr(fact, "alert_id", None) == current.alert_id
    ]
    alert = fold_alert(current.alert_id, rows)
    assert alert is not None
    assert (alert.fingerprint, alert.status, alert.occurrences) == (fingerprint, "resolved", 1)
