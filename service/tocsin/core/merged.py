"""One view of a partitioned data dir (DESIGN.md section 17): the projections of the
partitions' logs merged into the one ``State`` an operator sees (``tocsin state``, the
API and the dashboard across partitions), pure.

Each partition decides for its own fingerprints, so most of a projection is a union:
alerts, the dedup index, deliveries, end timers, flaps, inhibitor slots, escalation
chains, heartbeats (each lives in one partition: ``config.for_partition``). What every
partition holds a copy of is merged by identity: a silence is created in every
partition with the same id, and the copy that saw its end (deleted, then expired) wins.
Counts are sums: counters, the queue, the hourly stats. ``last_by_severity`` is the
latest by time, ``last_ts`` the greatest.

Group keys and group chain keys are made of a route and label values, not of a
fingerprint: two partitions can each hold a group with the same key when a ``group_by``
spans fingerprints and no ``[partitions] key`` keeps such alerts together. Neither is
lost: the later partition's is renamed ``<key>@p<k>`` (and so is every reference to it
in that partition: its alerts' and dedup entries' groups, its deliveries, its chains,
its order counts).

The merged state is a view, never decided on: it shares the members it does not change
with its inputs, which it never changes (an API may merge live projections). Read it,
and merge again after the partitions fold more.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

import msgspec

from tocsin.core.policy.order import open_key
from tocsin.core.state import KEEP_HOURS, Counters, HourStats, Silence, State

S = TypeVar("S", bound=msgspec.Struct)


def merge(states: Sequence[State], partitions: Sequence[int] | None = None) -> State:
    """The one projection of the partitions whose projections are ``states``, in
    partition order; ``partitions`` names them (default ``0..len-1``: the ``k`` of a
    renamed group's ``@p<k>``).

    ``last_seq`` is the sum of the partitions' last seqs: no single log's seq, but it
    grows whenever any partition's does, so a reader can tell the view moved on
    (``published_through``, the outbox watermark, is summed alike: it equals
    ``last_seq`` when every partition published everything). Settings logged by
    ``config.loaded`` (dedup window, resolve timeout, ``keep_resolved``, flapping) are
    the newest partition's (greatest ``last_ts``); stream cursors are kept when every
    partition has the same, else none (a view consumes nothing)."""
    names = list(range(len(states))) if partitions is None else list(partitions)
    if len(names) != len(states):
        raise ValueError(f"{len(states)} state(s) but {len(names)} partition name(s)")
    merged = State()
    if not states:
        return merged
    newest = max(states, key=lambda s: s.last_ts)
    merged.resolve_timeout = newest.resolve_timeout
    merged.dedup_window = newest.dedup_window
    merged.keep_resolved = newest.keep_resolved
    merged.flap_changes = newest.flap_changes
    merged.flap_window = newest.flap_window
    merged.inbound_stream, merged.inbound_offset = _shared(
        [(s.inbound_stream, s.inbound_offset) for s in states], (None, 0)
    )
    merged.outbound_stream, merged.outbound_offset = _shared(
        [(s.outbound_stream, s.outbound_offset) for s in states], (None, 0)
    )
    merged.last_seq = sum(s.last_seq for s in states)
    merged.published_through = sum(s.published_through for s in states)
    merged.last_ts = max(s.last_ts for s in states)
    merged.next_sweep = min(s.next_sweep for s in states)
    merged.keep_everything = all(s.keep_everything for s in states)
    merged.counters = _summed(Counters, [s.counters for s in states])
    merged.hours = _hours(states)
    merged.received_ids.seen = _receipts([s.received_ids.seen for s in states])
    merged.received_ids.swept = max(s.received_ids.swept for s in states)
    for name, given in zip(names, states, strict=True):
        state = _renamed(given, merged, name)
        merged.alerts.update(state.alerts)
        merged.open_by_fingerprint.update(state.open_by_fingerprint)
        merged.deliveries.update(state.deliveries)
        merged.groups.update(state.groups)
        merged.auto_resolve.update(state.auto_resolve)
        merged.flaps.update(state.flaps)
        merged.escalations.update(state.escalations)
        merged.inhibit_ended.update(state.inhibit_ended)
        merged.heartbeats.update(state.heartbeats)
        merged.received_ids.at.update(state.received_ids.at)
        _add_counts(merged.queue, state.queue)
        _add_counts(merged.order_open, state.order_open)
        for owner, chains in state.chains_of.items():
            merged.chains_of[owner] = [*merged.chains_of.get(owner, ()), *chains]
        _add_slots(merged.inhibitors, state.inhibitors)
        _add_slots(merged.inhibit_waiting, state.inhibit_waiting)
        for silence_id, silence in state.silences.items():
            held = merged.silences.get(silence_id)
            if held is None or _seen_ending(silence) > _seen_ending(held):
                merged.silences[silence_id] = silence
        for severity, last in state.last_by_severity.items():
            latest = merged.last_by_severity.get(severity)
            if latest is None or last.ts > latest.ts:
                merged.last_by_severity[severity] = last
    return merged


def _shared(values: list[Any], otherwise: Any) -> Any:
    """The value every partition has, or ``otherwise`` when they differ."""
    return values[0] if all(v == values[0] for v in values) else otherwise


def _seen_ending(silence: Silence) -> tuple[bool, bool]:
    """How far a copy of a silence has seen it end: a deleted copy over an expired one
    over one still running (a partition may not have folded the end yet)."""
    return (silence.deleted_at is not None, silence.expired)


def _add_counts(into: dict[str, int], counts: Mapping[str, int]) -> None:
    for key, n in counts.items():
        into[key] = into.get(key, 0) + n


def _add_slots(
    into: dict[str, dict[str, dict[str, None]]],
    slots: Mapping[str, Mapping[str, Mapping[str, None]]],
) -> None:
    """An inhibitor index (rule -> equal values -> alert ids) into a new one: partitions
    may share a slot (an inhibit rule's ``equal`` labels span fingerprints); its alerts
    are listed partition after partition, each partition's oldest first."""
    for rule, by_values in slots.items():
        merged_rule = into.setdefault(rule, {})
        for values, alert_ids in by_values.items():
            merged_rule.setdefault(values, {}).update(alert_ids)


def _summed(kind: type[S], parts: Iterable[S]) -> S:
    """A new ``kind`` holding the sums of ``parts``, field by field: an int is added, a
    dict's values are added key by key (ints, or structs summed the same way). Any
    other field is a new kind of fact this merge does not know how to add: refused,
    so a stats field added later is summed or loudly not, never silently dropped."""
    total = kind()
    for part in parts:
        _add_struct(total, part)
    return total


def _add_struct(total: msgspec.Struct, part: msgspec.Struct) -> None:
    for name in type(part).__struct_fields__:
        value = getattr(part, name)
        if isinstance(value, bool) or not isinstance(value, int | dict):
            raise TypeError(f"{type(part).__name__}.{name}: cannot sum {type(value).__name__}")
        if isinstance(value, int):
            setattr(total, name, getattr(total, name) + value)
            continue
        sums: dict[Any, Any] = getattr(total, name)
        for key, n in value.items():
            if isinstance(n, msgspec.Struct):
                if key not in sums:
                    sums[key] = type(n)()
                _add_struct(sums[key], n)
            else:
                sums[key] = sums.get(key, 0) + n


def _hours(states: Sequence[State]) -> dict[int, HourStats]:
    """The hourly stats summed hour by hour, kept as one log's fold keeps them: a week
    back from the newest hour (``State.hour``)."""
    hours: dict[int, HourStats] = {}
    for hour in sorted({h for s in states for h in s.hours}):
        hours[hour] = _summed(HourStats, [s.hours[hour] for s in states if hour in s.hours])
    if hours:
        newest = max(hours)
        for old in [h for h in hours if h <= newest - KEEP_HOURS]:
            del hours[old]
    return hours


def _receipts(seens: Sequence[Mapping[bytes, int]]) -> dict[bytes, int]:
    """The event ids received, in receipt order as ``ReceivedIds`` keeps them (each
    partition's already is): merged by time, an id seen in two partitions at its
    latest receipt."""
    seen: dict[bytes, int] = {}
    for key, at in heapq.merge(*(m.items() for m in seens), key=lambda kv: kv[1]):
        seen.pop(key, None)
        seen[key] = at
    return seen


def _renamed(state: State, merged: State, name: int) -> State:
    """``state`` with its group keys and chain keys that ``merged`` already holds
    renamed ``<key>@p<name>`` everywhere it names them: a copy of what changes, the
    state itself when nothing collides."""
    groups = {key: f"{key}@p{name}" for key in state.groups if key in merged.groups}
    chains = {key: f"{key}@p{name}" for key in state.escalations if key in merged.escalations}
    if not groups and not chains:
        return state
    replace = msgspec.structs.replace

    def group(key: str) -> str:
        return groups.get(key, key)

    def chain(key: str) -> str:
        return chains.get(key, key)

    alerts = {
        alert_id: replace(alert, groups=tuple(map(group, alert.groups)))
        if groups.keys() & set(alert.groups)
        else alert
        for alert_id, alert in state.alerts.items()
    }
    dedup = {
        fingerprint: replace(current, groups=tuple(map(group, current.groups)))
        if groups.keys() & set(current.groups)
        else current
        for fingerprint, current in state.open_by_fingerprint.items()
    }
    deliveries = {
        notification_id: replace(
            delivery, group_key=group(delivery.group_key), order_key=group(delivery.order_key)
        )
        if delivery.group_key is not None
        and (delivery.group_key in groups or delivery.order_key in groups)
        else delivery
        for notification_id, delivery in state.deliveries.items()
    }
    order_keys = {
        open_key(g.receiver, key): open_key(g.receiver, new)
        for key, new in groups.items()
        for g in [state.groups[key]]
    }
    escalations = {
        chain(key): replace(c, key=chain(key), group_keys=[group(k) for k in c.group_keys])
        if key in chains or groups.keys() & set(c.group_keys)
        else c
        for key, c in state.escalations.items()
    }
    return replace(
        state,
        alerts=alerts,
        open_by_fingerprint=dedup,
        deliveries=deliveries,
        groups={
            group(key): replace(g, key=groups[key]) if key in groups else g
            for key, g in state.groups.items()
        },
        escalations=escalations,
        chains_of={
            group(owner): [chain(k) for k in keys] for owner, keys in state.chains_of.items()
        },
        order_open={order_keys.get(key, key): n for key, n in state.order_open.items()},
    )
