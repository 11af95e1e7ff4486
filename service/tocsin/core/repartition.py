"""Repartitioning N -> M (DESIGN.md section 17), pure: from the projections of the old
logs, the facts each new log starts with, and what stands in the way.

The old logs are never rewritten: each new log starts with ``partition.seeded`` (where
it came from), then a ``silence.created`` copy of every silence still to come (silences
are config-like: each partition mutes its own alerts, so each gets every one), then one
``alert.moved`` per open alert whose identity ``core.partition.of_alert`` assigns to it
under M and ``[partitions] key``. An open alert carries its dedup state (bucket, routed
severity, receivers told, ack, silence, inhibitor slots, end timer), so that in its new
partition a duplicate is still suppressed and a resolve still resolves it. Each new
log's seqs start above every old log's (``Plan.after_seq``): receivers are told of a
fingerprint in routed-seq order (``core/policy/order.py``), and a notification routed
after the move must not look older than one routed before it.

What does not move, and is refused unless forced (``Plan.blockers``, each saying how
many): deliveries not settled (pending or retrying: their outcomes would be recorded by
no log), open alerts in notification groups (groups are per partition; the alert moves,
its group does not: its resolve then reaches its ungrouped receivers only), running
escalation chains (they stop), open ``heartbeat.missed`` alerts (the beat that resolves
one reaches the heartbeat's partition, which would not know it) and alerts held back by
an inhibitor (they arrive not inhibited). What does not move and only needs saying
(``Plan.notes``): dead letters (they stay in the archived logs: redrive them first), the
flapping history (it starts again), resolved alerts and stats (they stay in the archived
logs, which ``replay``, ``state`` and ``verify`` read as any log).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from tocsin.core import events as ev
from tocsin.core import partition
from tocsin.core.decide.dedup import DEFAULT_WINDOW_SECONDS, OpenAlert, rebucket
from tocsin.core.state import SETTLED, Alert, State


@dataclass(frozen=True, slots=True)
class Source:
    """An old log: its partition (``None``: the unpartitioned log), its projection, its
    chain head (``last_seq``, hex hash) and where it will be archived."""

    partition: int | None
    state: State
    last_seq: int
    head: str
    archive: str


@dataclass(frozen=True, slots=True)
class Plan:
    """The facts each new log starts with (index: the new partition, 0 for the one
    unpartitioned log), what refuses the move unless forced, and what is only said."""

    facts: list[list[ev.Event]]
    after_seq: int = 0  # each new log's first row is the one after it (``partition.seeded``)
    blockers: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def moved(self, target: int) -> int:
        """How many open alerts move into new partition ``target``."""
        return sum(isinstance(e, ev.AlertMoved) for e in self.facts[target])


def target_of(alert: Alert, *, count: int, key: Sequence[str]) -> int:
    """The new partition of an open alert: the one its events go to under ``count``."""
    return partition.of_alert(alert.fingerprint, alert.type, alert.labels, count=count, key=key)


def plan(
    sources: Sequence[Source],
    *,
    count: int,
    key: Sequence[str],
    window_seconds: float,
    now: int,
    forced: Sequence[str] = (),
) -> Plan:
    """What the ``count`` new logs start with, from the old logs ``sources``, the
    buckets in the dedup window ``window_seconds`` of the config they will run with,
    silences ending before ``now`` left behind. ``forced``: the blockers ``--force``
    let through, recorded in each ``partition.seeded``."""
    silences = _silences(sources, now)
    moved: list[list[ev.AlertMoved]] = [[] for _ in range(count)]
    for source in sources:
        old_window = source.state.dedup_window or DEFAULT_WINDOW_SECONDS
        for fingerprint, current in source.state.open_by_fingerprint.items():
            alert = source.state.alerts.get(current.alert_id)
            if alert is None:
                continue
            bucket = rebucket(current.bucket, old_window, window_seconds)
            target = target_of(alert, count=count, key=key)
            moved[target].append(_moved(source, fingerprint, alert, current, bucket))
    after_seq = max((s.last_seq for s in sources), default=0)
    facts: list[list[ev.Event]] = []
    for target, alerts in enumerate(moved):
        alerts.sort(key=lambda e: (e.first_seen, e.alert_id))
        seeded = ev.PartitionSeeded(
            partition=None if count == 1 else target,
            count=count,
            from_count=len(sources),
            key=list(key),
            sources=[
                ev.SeededFrom(
                    partition=s.partition, last_seq=s.last_seq, head=s.head, archive=s.archive
                )
                for s in sources
            ],
            dedup_window_seconds=window_seconds,
            alerts=len(alerts),
            silences=len(silences),
            forced=list(forced),
            after_seq=after_seq,
        )
        facts.append([seeded, *silences, *alerts])
    return Plan(facts=facts, after_seq=after_seq, blockers=blockers(sources), notes=notes(sources))


def _moved(
    source: Source, fingerprint: str, alert: Alert, current: OpenAlert, bucket: int
) -> ev.AlertMoved:
    timer = source.state.auto_resolve.get(fingerprint)
    if timer is not None and timer.alert_id != alert.id:
        timer = None
    return ev.AlertMoved(
        alert_id=alert.id,
        fingerprint=fingerprint,
        from_partition=source.partition,
        type=alert.type,
        severity=alert.severity,
        summary=alert.summary,
        source=alert.source,
        labels=alert.labels,
        details=alert.details,
        first_seen=alert.first_seen,
        last_seen=alert.last_seen,
        occurrences=alert.occurrences,
        suppressed_count=alert.suppressed_count,
        receivers=alert.receivers,
        unrouted=alert.unrouted,
        acked_by=alert.acked_by,
        acked_at=alert.acked_at,
        ack_comment=alert.ack_comment,
        bucket=bucket,
        routed_severity=current.routed_severity,
        notified=current.receivers,
        silenced=current.silenced,
        silenced_by=current.silenced_by,
        inhibits=dict(current.inhibits),
        resolve_due=None if timer is None else timer.due,
        resolve_by=None if timer is None else timer.by,
        last_event=None if timer is None else timer.last_event,
        trace_id=alert.trace_id,
    )


def _silences(sources: Sequence[Source], now: int) -> list[ev.SilenceCreated]:
    """Every silence of any old log that still silences or will (not deleted, not
    ended by ``now``), once each, oldest first."""
    found: dict[str, ev.SilenceCreated] = {}
    for source in sources:
        for silence in source.state.silences.values():
            if silence.deleted_at is not None or silence.expired or silence.ends_at <= now:
                continue
            found.setdefault(
                silence.id,
                ev.SilenceCreated(
                    silence_id=silence.id,
                    matchers=silence.matchers,
                    starts_at=silence.starts_at,
                    ends_at=silence.ends_at,
                    created_by=silence.created_by,
                    created_at=silence.created_at,
                    comment=silence.comment,
                ),
            )
    return sorted(found.values(), key=lambda e: (e.created_at, e.silence_id))


def blockers(sources: Sequence[Source]) -> list[str]:
    """What would be lost or go wrong if the logs were repartitioned now, each with its
    count and its remedy: the command refuses unless ``--force``."""
    unsettled = grouped = chains = missed = inhibited = 0
    for source in sources:
        state = source.state
        unsettled += sum(d.status not in SETTLED for d in state.deliveries.values())
        grouped += sum(
            any(key in state.groups for key in current.groups)
            for current in state.open_by_fingerprint.values()
        )
        chains += len(state.escalations)
        open_ids = {current.alert_id for current in state.open_by_fingerprint.values()}
        missed += sum(h.missed_alert in open_ids for h in state.heartbeats.values())
        inhibited += sum(
            current.inhibited_by is not None for current in state.open_by_fingerprint.values()
        )
    out = []
    if unsettled:
        out.append(
            f"{unsettled} delivery(ies) pending or retrying: their outcomes would reach no "
            "log; start the routers and delivery workers until `tocsin state` shows none"
        )
    if grouped:
        out.append(
            f"{grouped} open alert(s) in notification groups: groups do not move (the "
            "alert does; its resolve then reaches its ungrouped receivers only)"
        )
    if chains:
        out.append(f"{chains} escalation chain(s) running: they stop")
    if missed:
        out.append(
            f"{missed} open heartbeat.missed alert(s): the beat that resolves one would "
            "not find it in its new partition; resolve them first"
        )
    if inhibited:
        out.append(f"{inhibited} alert(s) held back by an inhibitor: they move uninhibited")
    return out


def notes(sources: Sequence[Source]) -> list[str]:
    """What stays behind in the archived logs, said but not refused."""
    dead = sum(d.status == "dead" for source in sources for d in source.state.deliveries.values())
    out = []
    if dead:
        out.append(
            f"{dead} dead letter(s) stay in the archived logs: `tocsin retry-failed` cannot "
            "reach them there"
        )
    return out
