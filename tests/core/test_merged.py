"""tocsin.core.merged, pure: the partitions' projections merged into the one view an
operator sees (DESIGN.md section 17). Every field of ``State`` is accounted for; what
the views show of the merge equals what they show of one log holding every partition's
events; colliding group keys are both kept; the inputs are never changed."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from tests.core.test_fold import MINUTE, T0, Run, normalized
from tocsin.core import events as ev
from tocsin.core import views
from tocsin.core.decide.dedup import OpenAlert
from tocsin.core.decide.idempotency import ReceivedIds
from tocsin.core.events import EscalationStep
from tocsin.core.fold import rebuild
from tocsin.core.ingest import default_fingerprint
from tocsin.core.merged import merge
from tocsin.core.policy.order import open_key
from tocsin.core.state import (
    HOUR_US,
    KEEP_HOURS,
    Alert,
    AutoResolve,
    Chain,
    Counters,
    Delivery,
    Flap,
    Group,
    Heartbeat,
    HourStats,
    InhibitEnd,
    LastAlert,
    Member,
    ReceiverStats,
    Silence,
    State,
    hour_of,
)


def alert(alert_id: str, fingerprint: str, **fields: Any) -> Alert:
    return Alert(
        id=alert_id,
        fingerprint=fingerprint,
        type="disk_full",
        severity="warning",
        summary="disk full",
        source="db",
        status="firing",
        labels={},
        details={},
        first_seen=T0,
        last_seen=T0,
        **fields,
    )


def silence(silence_id: str, **fields: Any) -> Silence:
    return Silence(
        id=silence_id,
        matchers={"type": "disk_full"},
        starts_at=T0,
        ends_at=T0 + HOUR_US,
        created_by="ops",
        comment="",
        created_at=T0,
        **fields,
    )


def heartbeat(name: str) -> Heartbeat:
    return Heartbeat(
        name=name,
        every=MINUTE,
        grace=MINUTE,
        severity="critical",
        summary=f"{name} is silent",
        labels={},
        since=T0,
        configured_at=T0,
    )


def hour_stats(n: int) -> HourStats:
    """Every field of ``HourStats`` set (``n`` in each count), so a field added later
    that the merge leaves out makes the sums differ."""
    stats = HourStats(
        by_severity={"warning": n},
        by_type={"disk_full": n},
        suppressed=n,
        by_receiver={"hook": ReceiverStats(delivered=n, failed_attempts=n, dead=n, superseded=n)},
        rejected={"invalid_json": n},
        unrouted=n,
        inhibited=n,
        muted=n,
        flapping=n,
        escalations=n,
        heartbeats_missed=n,
    )
    left_out = [name for name in HourStats.__struct_fields__ if not getattr(stats, name)]
    assert not left_out, f"hour_stats sets no value for {left_out}"
    return stats


def counters(n: int) -> Counters:
    return Counters(**dict.fromkeys(Counters.__struct_fields__, n))


STEPS = (EscalationStep(after=MINUTE, receivers=("pager",)),)


def partition_0() -> State:
    """A projection with every field away from its default."""
    return State(
        last_seq=10,
        last_ts=T0 + 5 * MINUTE,
        alerts={"a1": alert("a1", "f1")},
        open_by_fingerprint={
            "f1": OpenAlert(alert_id="a1", bucket=1, routed_severity="warning", receivers=())
        },
        deliveries={
            "n1": Delivery(
                notification_id="n1", alert_id="a1", receiver="hook", reason="firing", routed_seq=3
            )
        },
        inbound_stream="2026-01-01",
        inbound_offset=100,
        counters=counters(1),
        silences={
            "s1": silence("s1"),
            "s2": silence("s2", deleted_at=T0 + MINUTE, deleted_by="ops"),
            "s3": silence("s3", expired=True),
        },
        hours={hour_of(T0): hour_stats(1)},
        last_by_severity={
            "warning": LastAlert(alert_id="a1", summary="old", ts=T0 + MINUTE),
            "critical": LastAlert(alert_id="a1", summary="newer", ts=T0 + 4 * MINUTE),
        },
        queue={"pending": 1, "delivered": 2},
        outbound_stream="2026-01-02",
        outbound_offset=7,
        groups={
            "route[0]/hook/{}": Group(
                key="route[0]/hook/{}",
                receiver="hook",
                route=0,
                labels={},
                wait=MINUTE,
                interval=MINUTE,
                repeat=None,
                max_alerts=10,
            )
        },
        auto_resolve={
            "f1": AutoResolve(alert_id="a1", due=T0 + HOUR_US, by="timeout", last_event=T0)
        },
        resolve_timeout=HOUR_US,
        dedup_window=300.0,
        received_ids=ReceivedIds(seen={b"x": T0, b"z": T0 + 4}, swept=5, at={"e1": T0}),
        published_through=9,
        keep_resolved=HOUR_US,
        next_sweep=T0 + 2 * HOUR_US,
        keep_everything=True,
        inhibitors={"r": {"v": {"a1": None}}},
        inhibit_waiting={"r": {"v": {"a0": None}}},
        inhibit_ended={"a9": InhibitEnd(at=T0, slots={"r": "w"})},
        escalations={
            "chain/a1": Chain(key="chain/a1", route=1, steps=STEPS, started_at=T0, alert_id="a1")
        },
        chains_of={"a1": ["chain/a1"]},
        flaps={"f1": Flap(changes=[T0])},
        flap_changes=4,
        flap_window=MINUTE,
        heartbeats={"backup": heartbeat("backup")},
        order_open={open_key("hook", "f1"): 1},
    )


def partition_1() -> State:
    """Another partition's: newer, its own fingerprints, copies of the same silences."""
    return State(
        last_seq=20,
        last_ts=T0 + 2 * HOUR_US,
        alerts={"b1": alert("b1", "g1")},
        open_by_fingerprint={
            "g1": OpenAlert(alert_id="b1", bucket=2, routed_severity="critical", receivers=())
        },
        deliveries={
            "m1": Delivery(
                notification_id="m1", alert_id="b1", receiver="pager", reason="firing", routed_seq=4
            )
        },
        inbound_stream="2026-01-01",
        inbound_offset=100,
        counters=counters(2),
        silences={
            "s1": silence("s1", expired=True),
            "s2": silence("s2", expired=True),  # the deleted copy wins over it
            "s3": silence("s3"),
        },
        hours={hour_of(T0): hour_stats(2), hour_of(T0) + 2: hour_stats(3)},
        last_by_severity={
            "warning": LastAlert(alert_id="b1", summary="new", ts=T0 + 2 * MINUTE),
            "critical": LastAlert(alert_id="b1", summary="older", ts=T0 + 3 * MINUTE),
        },
        queue={"pending": 3, "dead": 1},
        outbound_stream="2026-02-02",  # differs: a view has no outbound cursor
        outbound_offset=7,
        groups={},
        auto_resolve={
            "g1": AutoResolve(alert_id="b1", due=T0 + HOUR_US, by="ends_at", last_event=T0)
        },
        resolve_timeout=2 * HOUR_US,
        dedup_window=600.0,
        received_ids=ReceivedIds(seen={b"y": T0 + 2, b"x": T0 + 6}, swept=6, at={"e2": T0}),
        published_through=19,
        keep_resolved=2 * HOUR_US,
        next_sweep=T0 + HOUR_US,
        keep_everything=False,
        inhibitors={"r": {"v": {"b1": None}, "u": {"b2": None}}},
        inhibit_waiting={"q": {"v": {"b0": None}}},
        inhibit_ended={"b9": InhibitEnd(at=T0)},
        escalations={
            "chain/b1": Chain(key="chain/b1", route=1, steps=STEPS, started_at=T0, alert_id="b1")
        },
        chains_of={"b1": ["chain/b1"]},
        flaps={"g1": Flap(changes=[T0], since=T0)},
        flap_changes=5,
        flap_window=2 * MINUTE,
        heartbeats={"cron": heartbeat("cron")},
        order_open={open_key("pager", "g1"): 2, open_key("hook", "f1"): 1},
    )


def encoded(state: State) -> bytes:
    return msgspec.msgpack.encode(state)


def test_every_field_of_the_projection_is_merged_as_documented() -> None:
    """One expectation per field of ``State``: fails when a field is added that this
    test (and so ``merge``) does not account for, and when any field is merged other
    than as the module says (unions, sums, newest, latest, copies that saw the end)."""
    a, b = partition_0(), partition_1()
    m = merge([a, b])
    expected: dict[str, Any] = {
        "last_seq": 30,
        "last_ts": T0 + 2 * HOUR_US,
        "alerts": {**a.alerts, **b.alerts},
        "open_by_fingerprint": {**a.open_by_fingerprint, **b.open_by_fingerprint},
        "deliveries": {**a.deliveries, **b.deliveries},
        "inbound_stream": "2026-01-01",
        "inbound_offset": 100,
        "counters": counters(3),
        "silences": {
            "s1": b.silences["s1"],
            "s2": a.silences["s2"],
            "s3": a.silences["s3"],
        },
        "hours": {hour_of(T0): hour_stats(3), hour_of(T0) + 2: hour_stats(3)},
        "last_by_severity": {
            "warning": b.last_by_severity["warning"],
            "critical": a.last_by_severity["critical"],
        },
        "queue": {"pending": 4, "delivered": 2, "dead": 1},
        "outbound_stream": None,
        "outbound_offset": 0,
        "groups": a.groups,
        "auto_resolve": {**a.auto_resolve, **b.auto_resolve},
        "resolve_timeout": 2 * HOUR_US,
        "dedup_window": 600.0,
        "received_ids": ReceivedIds(
            seen={b"y": T0 + 2, b"z": T0 + 4, b"x": T0 + 6}, swept=6, at={"e1": T0, "e2": T0}
        ),
        "published_through": 28,
        "keep_resolved": 2 * HOUR_US,
        "next_sweep": T0 + HOUR_US,
        "keep_everything": False,
        "inhibitors": {"r": {"v": {"a1": None, "b1": None}, "u": {"b2": None}}},
        "inhibit_waiting": {"r": {"v": {"a0": None}}, "q": {"v": {"b0": None}}},
        "inhibit_ended": {**a.inhibit_ended, **b.inhibit_ended},
        "escalations": {**a.escalations, **b.escalations},
        "chains_of": {"a1": ["chain/a1"], "b1": ["chain/b1"]},
        "flaps": {**a.flaps, **b.flaps},
        "flap_changes": 5,
        "flap_window": 2 * MINUTE,
        "heartbeats": {**a.heartbeats, **b.heartbeats},
        "order_open": {open_key("hook", "f1"): 2, open_key("pager", "g1"): 2},
    }
    assert set(expected) == set(State.__struct_fields__), "a State field merge may not handle"
    wrong = {name: getattr(m, name) for name in expected if getattr(m, name) != expected[name]}
    assert not wrong
    assert list(m.received_ids.seen) == [b"y", b"z", b"x"]  # receipt order, as the fold keeps
    assert m.received_ids.repeated("anything", T0) is False


def test_merging_changes_none_of_its_inputs() -> None:
    """The API merges live projections: fails if the merge writes into a partition's
    dicts or structs (a sum added into the first partition's counters or hours, a slot
    of inhibitors extended, a chains_of list extended, a group renamed in place)."""
    a, b = partition_0(), partition_1()
    b.groups = dict(a.groups)  # a collision: b's group is renamed in the merge
    b.chains_of["route[0]/hook/{}"] = ["chain/b1"]
    a.chains_of["route[0]/hook/{}"] = ["chain/a1"]
    before = encoded(a), encoded(b)
    m = merge([a, b])
    merge([b, a])
    assert (encoded(a), encoded(b)) == before
    m.counters.received += 1
    m.hours[hour_of(T0)].by_receiver["hook"].delivered += 1
    m.chains_of["a1"].append("x")
    m.inhibitors["r"]["v"]["x"] = None
    assert (encoded(a), encoded(b)) == before


def test_no_partition_is_an_empty_projection_and_one_is_itself() -> None:
    """Fails if a single partition's merge differs from its own projection in what
    is shown (``tocsin state`` of a one-partition dir)."""
    assert encoded(merge([])) == encoded(State())
    a = partition_0()
    assert encoded(merge([a])) == encoded(a)


def test_partition_names_must_match_the_states() -> None:
    with pytest.raises(ValueError, match="2 state"):
        merge([State(), State()], partitions=[0])


def grouped_partition(alert_id: str, fingerprint: str, notification_id: str) -> State:
    """A partition with the group ``KEY`` (a ``group_by`` that spans fingerprints, no
    ``[partitions] key``), its chain, its alert, a delivery of its notification and
    the group's order count."""
    delivery = Delivery(
        notification_id=notification_id,
        alert_id=alert_id,
        receiver="hook",
        reason="firing",
        routed_seq=5,
        group_key=KEY,
        order_key=KEY,
    )
    return State(
        alerts={alert_id: alert(alert_id, fingerprint, groups=(KEY,))},
        open_by_fingerprint={
            fingerprint: OpenAlert(
                alert_id=alert_id, bucket=1, routed_severity="warning", receivers=(), groups=(KEY,)
            )
        },
        deliveries={notification_id: delivery},
        groups={
            KEY: Group(
                key=KEY,
                receiver="hook",
                route=0,
                labels={"cluster": "c1"},
                wait=MINUTE,
                interval=MINUTE,
                repeat=None,
                max_alerts=10,
                members={alert_id: Member(alert_id=alert_id)},
            )
        },
        escalations={
            CHAIN: Chain(key=CHAIN, route=0, steps=STEPS, started_at=T0, group_keys=[KEY])
        },
        chains_of={KEY: [CHAIN]},
        order_open={open_key("hook", KEY): 1},
    )


KEY = 'route[0]/hook/{cluster="c1"}'
CHAIN = 'escalation/route[0]/*/{cluster="c1"}'


def test_a_group_key_in_two_partitions_is_kept_twice_the_later_renamed() -> None:
    """Catches a merge that loses a group (one partition's overwriting the other's
    under the same key), and one that renames the group but leaves its alert, dedup
    entry, delivery, chain or order count pointing at the other partition's."""
    a = grouped_partition("a1", "f1", "n1")
    b = grouped_partition("b1", "g1", "m1")
    m = merge([a, b], partitions=[0, 3])
    renamed, chain = f"{KEY}@p3", f"{CHAIN}@p3"
    assert set(m.groups) == {KEY, renamed}
    assert m.groups[KEY] is a.groups[KEY]
    assert (m.groups[renamed].key, list(m.groups[renamed].members)) == (renamed, ["b1"])
    assert (m.alerts["a1"].groups, m.alerts["b1"].groups) == ((KEY,), (renamed,))
    assert m.open_by_fingerprint["g1"].groups == (renamed,)
    assert (m.deliveries["m1"].group_key, m.deliveries["m1"].order_key) == (renamed, renamed)
    assert m.deliveries["n1"].group_key == KEY
    assert set(m.escalations) == {CHAIN, chain}
    assert (m.escalations[chain].key, m.escalations[chain].group_keys) == (chain, [renamed])
    assert m.chains_of == {KEY: [CHAIN], renamed: [chain]}
    assert m.order_open == {open_key("hook", KEY): 1, open_key("hook", renamed): 1}
    assert views.group_list(m).groups[1].group_key == renamed
    assert b.groups[KEY].key == KEY  # b itself unchanged
    assert b.alerts["b1"].groups == (KEY,)


def test_a_silence_is_one_whichever_partition_saw_its_end() -> None:
    """Each partition holds a copy: fails if the merge shows a deleted or expired
    silence as running because a partition that had not folded the end came later."""
    running, expired = (
        silence(
            "s",
        ),
        silence("s", expired=True),
    )
    deleted = silence("s", deleted_at=T0 + MINUTE)
    for copies, shown in [
        ([running, expired], expired),
        ([expired, running], expired),
        ([deleted, expired], deleted),
        ([expired, deleted, running], deleted),
    ]:
        merged = merge([State(silences={"s": c}) for c in copies])
        assert merged.silences == {"s": shown}


def test_hourly_stats_keep_a_week_back_from_the_newest_hour() -> None:
    """As one log's fold keeps them (``State.hour``): a partition idle for over a week
    still holds hours the merged view must not count. Fails if the merge keeps them."""
    newest = hour_of(T0) + KEEP_HOURS
    old = State(hours={hour_of(T0): hour_stats(1), hour_of(T0) + 1: hour_stats(1)})
    new = State(hours={newest: hour_stats(2)})
    assert sorted(merge([old, new]).hours) == [hour_of(T0) + 1, newest]


def test_the_views_of_merged_partitions_equal_those_of_one_log() -> None:
    """Fails if any sum or union the stats and alert lists read is merged wrong: one
    log's events split by fingerprint into two partition logs (each with its own seqs,
    every fact of no fingerprint in both, as each router logs its own), rebuilt, and
    merged, show the same stats, alerts and silences as the one log."""
    run = Run()
    hosts = ["db1", "db2", "db3", "db4"]
    for minute, (host, severity) in enumerate(
        [(h, s) for h in hosts for s in ("warning", "critical", "warning")]
    ):
        run.feed(normalized(minute, severity, host=host))
    run.feed(normalized(30, status="resolved", host="db2"))
    run.feed(normalized(31, status="resolved", host="db9"))  # ignored: nothing open
    run.feed(normalized(90, "error", host="db1"))  # a reminder, in the next hour
    facts: list[ev.Event] = [
        ev.SilenceCreated(
            silence_id="s1",
            matchers={"type": "other"},
            starts_at=T0,
            ends_at=T0 + HOUR_US,
            created_by="ops",
            created_at=T0,
        )
    ]
    for _, ts, fact in run.log:  # the hook accepts every notification; the pager none
        if not isinstance(fact, ev.AlertRouted):
            continue
        about = {
            "notification_id": fact.notification_id,
            "receiver": fact.receiver,
            "alert_id": fact.alert_id,
            "fingerprint": fact.fingerprint,
            "channel": "webhook",
            "attempts": 1,
            "at": ts + 1,
        }
        facts.append(
            ev.DeliverySucceeded(**about)
            if fact.receiver == "hook"
            else ev.DeliveryDeadLettered(**about, error="500", status_code=500)
        )
    one_log = [
        *run.log,
        *((len(run.log) + i + 1, T0 + 95 * MINUTE, f) for i, f in enumerate(facts)),
    ]
    partition_of = {
        default_fingerprint("disk_full", {"host": h}): i % 2 for i, h in enumerate([*hosts, "db9"])
    }
    logs: list[list[tuple[int, int, ev.Event]]] = [[], []]
    for _, ts, fact in one_log:
        fingerprint = getattr(fact, "fingerprint", None)
        for k in [partition_of[fingerprint]] if fingerprint in partition_of else [0, 1]:
            logs[k].append((len(logs[k]) + 1, ts, fact))
    whole = rebuild(one_log)
    parts = [rebuild(log) for log in logs]
    assert all(part.alerts for part in parts)  # both partitions hold alerts
    merged = merge(parts)
    now = T0 + 100 * MINUTE
    assert views.stats(merged, 24, now) == views.stats(whole, 24, now)
    assert views.stats(merged, 24, now).total == 13
    assert views.list_alerts(merged, now=now, limit=500) == views.list_alerts(
        whole, now=now, limit=500
    )
    assert views.silence_list(merged, now) == views.silence_list(whole, now)
    assert merged.counters == whole.counters
    assert merged.queue == whole.queue
    assert merged.last_seq == sum(len(log) for log in logs)
