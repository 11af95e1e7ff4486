"""W1-W3 and W5: the same loads against any ``Target``, measured at the receiver.

Every loop is bounded in count and every wait in time; a wait that runs out is a
figure (``None`` plus a line in ``timeouts``), not an exception, so one slow service
still yields a report. Times are ``perf_counter`` seconds in this process (publisher
and receiver share the clock); the service's own commit times come from its log in
wall-clock microseconds and are put on the same axis through one offset.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.receiver import Receiver
from bench.targets import Grouping, Target, Usage
from tocsin.core.decide.dedup import DEFAULT_WINDOW_SECONDS

PROGRESS_EVERY = 5.0  # seconds between progress lines while waiting


@dataclass(frozen=True)
class Loads:
    """The sizes of W1-W3 (defaults: issue #8) and W5 (issue #17)."""

    storm_events: int = 20_000
    duplicate_fingerprints: int = 1_000
    steady_rate: float = 200.0
    steady_seconds: float = 20.0
    warmup_seconds: float = 1.0  # W3 runs this long at its rate first, not counted
    timeout: float = 120.0  # the longest one workload may wait for the service
    settle: float = 3.0  # quiet time after W2 in which a second notification would show
    group_events: int = 20_000  # W5: distinct alerts, in one storm
    groups: int = 50  # W5: over this many values of the grouping label


class Budget:
    """One workload's time allowance, shared by all of its waits (so a stuck service
    costs ``timeout`` once per workload, not once per wait)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._deadline = time.monotonic() + seconds

    def left(self) -> float:
        return max(1.0, self._deadline - time.monotonic())

    def missed(self, what: str) -> str:
        return f"{what} within the workload's {self.seconds:.0f} s"


def wall_offset() -> float:
    """``time.time() - time.perf_counter()``: turns a perf_counter reading into wall time."""
    return time.time() - time.perf_counter()


async def wait_for(
    what: str, done: Callable[[], bool], target: Target, timeout: float, line: Callable[[], str]
) -> bool:
    """Poll ``done`` until true or ``timeout``; a progress line every few seconds."""
    started = time.monotonic()
    shown = started
    while not done():
        target.alive()
        now = time.monotonic()
        if now - started > timeout:
            print(f"    {what}: TIMEOUT after {timeout:.0f} s; {line()}", flush=True)
            return False
        if now - shown >= PROGRESS_EVERY:
            print(f"    {what}: {line()} ({now - started:.0f} s)", flush=True)
            shown = now
        await asyncio.sleep(0.02)
    return True


def _rate(count: float, seconds: float | None) -> float | None:
    return count / seconds if seconds and seconds > 0 else None


def _status(target: Target, receiver: Receiver, expected: int) -> Callable[[], str]:
    def line() -> str:
        log = target.progress()
        notified = f"{receiver.unique:,}/{expected:,} notified"
        return f"{notified}; {log}" if log else notified

    return line


async def storm(
    target: Target,
    receiver: Receiver,
    loads: Loads,
    keys: list[str],
    notifications: int,
    what: str,
    prefix: str,
) -> dict[str, Any]:
    """Send ``keys`` (all starting with ``prefix``) as one burst; wait for commits,
    ``notifications`` distinct notifications and (tocsin) their recorded outcomes. The
    figures of W1 and W2."""
    receiver.reset(prefix)
    target.begin()
    before = target.usage()
    offset = wall_offset()
    timeouts: list[str] = []
    budget = Budget(loads.timeout)
    sent = await target.storm(keys, budget.left())
    events = len(keys)
    print(
        f"    {what}: {sent.accepted:,} of {events:,} accepted in "
        f"{sent.last_accepted - sent.first_sent:.2f} s",
        flush=True,
    )
    if sent.error:
        timeouts.append(sent.error)
    first_wall = sent.first_sent + offset
    routed = notifications
    committed_at = await target.committed(events, routed, budget.left())
    if target.has_log and committed_at is None:
        timeouts.append(budget.missed(f"not all {events:,} events committed"))
    line = _status(target, receiver, notifications)
    complete = await wait_for(
        what, lambda: receiver.unique >= notifications, target, budget.left(), line
    )
    if not complete:
        timeouts.append(budget.missed(f"{receiver.unique:,} of {notifications:,} notified"))
    recorded_at = await target.quiesce(notifications, budget.left())
    if target.has_log and recorded_at is None:
        timeouts.append(budget.missed("not all outcomes recorded"))
    cpu = _cpu_since(target, before, events)
    publish_seconds = sent.last_accepted - sent.first_sent
    commit_seconds = committed_at - first_wall if committed_at is not None else None
    notified_seconds = receiver.last_at - sent.first_sent if complete else None
    # The last commit can only follow the last PubAck: within 10% of it, the service kept
    # up with the publisher and its figure is a lower bound, not its limit.
    kept_up = commit_seconds is not None and commit_seconds <= publish_seconds * 1.1
    return {
        "events": events,
        "publisher_bound": kept_up,
        "accepted": sent.accepted,
        "refused": sent.refused,
        "publish_seconds": publish_seconds,
        "send_seconds": sent.last_sent - sent.first_sent,
        "accepted_per_second": _rate(sent.accepted, publish_seconds),
        "committed_seconds": commit_seconds,
        "committed_per_second": _rate(events, commit_seconds),
        "notified": receiver.unique,
        "notifications": receiver.notifications,
        "all_notified_seconds": notified_seconds,
        "notifications_per_second": _rate(receiver.unique, notified_seconds),
        "last_publish_to_last_notification_seconds": (
            receiver.last_at - sent.last_accepted if complete else None
        ),
        "outcomes_recorded_seconds": (
            recorded_at - first_wall if recorded_at is not None else None
        ),
        "max_connections": receiver.phase_max_open,
        "requests": receiver.requests,
        "bad_requests": receiver.bad_requests,
        "stray_notifications": receiver.stray,
        "timeouts": timeouts,
        **cpu,
    }


def _cpu_since(target: Target, before: Usage, events: int) -> dict[str, Any]:
    """The service's CPU (and its broker's) from ``before`` until now: the workload's
    whole pipeline, per event too. tocsin's router, delivery and recorder share one
    process, so the router's own cost shows as the committed rate, not here."""
    after = target.usage()
    cpu = after.cpu_seconds - before.cpu_seconds
    broker = (
        after.broker_cpu_seconds - before.broker_cpu_seconds
        if after.broker_cpu_seconds is not None and before.broker_cpu_seconds is not None
        else None
    )
    return {
        "cpu_seconds": cpu,
        "cpu_us_per_event": cpu / events * 1e6 if events else None,
        "broker_cpu_seconds": broker,
    }


async def w1_distinct(target: Target, receiver: Receiver, loads: Loads, tag: str) -> dict[str, Any]:
    """W1: a storm of distinct alerts; every event is one notification."""
    n = loads.storm_events
    prefix = f"{tag}-w1-"
    keys = [f"{prefix}{i}" for i in range(n)]
    return await storm(target, receiver, loads, keys, n, f"W1 {target.label}", prefix)


BUCKET_MARGIN = 30.0
"""Seconds W2 keeps from a dedup bucket's edge: its storm lasts a few."""


def wait_for_one_bucket(
    now: float, window: float = DEFAULT_WINDOW_SECONDS, margin: float = BUCKET_MARGIN
) -> float:
    """Seconds to wait so that W2's storm, starting within ``margin`` seconds, stays in
    one of tocsin's dedup buckets (DESIGN.md section 4: epoch-aligned, ``window`` long):
    a storm across an edge is notified again in the new bucket, as the contract says,
    and W2 would count 2,000 notifications (a 2026-12-05 run started at 11:09:59). Zero
    when the next edge is further than ``margin``; else until just past it."""
    to_edge = window - now % window
    return 0.0 if to_edge > margin else to_edge + 1.0


async def w2_duplicates(
    target: Target, receiver: Receiver, loads: Loads, tag: str
) -> dict[str, Any]:
    """W2: a storm over few fingerprints; exactly one notification per fingerprint.
    After the last one, a quiet ``settle`` period catches any notification too many.
    It starts clear of a dedup bucket's edge (``wait_for_one_bucket``)."""
    pause = wait_for_one_bucket(time.time())
    if pause:
        print(f"    W2: {pause:.0f} s to a dedup bucket's edge; starting after it", flush=True)
        await asyncio.sleep(pause)
    n, k = loads.storm_events, loads.duplicate_fingerprints
    prefix = f"{tag}-w2-"
    keys = [f"{prefix}{i % k}" for i in range(n)]
    result = await storm(target, receiver, loads, keys, k, f"W2 {target.label}", prefix)
    await asyncio.sleep(loads.settle)
    result["notifications"] = receiver.notifications
    result["notified"] = receiver.unique
    result["expected_notifications"] = k
    result["exact"] = receiver.notifications == k and receiver.unique == k
    return result


def percentile(ordered: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending list."""
    if not ordered:
        return None
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


async def w3_steady(target: Target, receiver: Receiver, loads: Loads, tag: str) -> dict[str, Any]:
    """W3: distinct alerts at a steady rate; latency from the send to the receipt.

    The first ``warmup_seconds`` of sends are not counted: on a fresh process they pay
    for opening connections and first runs of code, which is not the steady state."""
    receiver.reset(f"{tag}-w3")
    target.begin()
    before = target.usage()  # W3's CPU, warm-up included: what a steady load costs
    count = round(loads.steady_rate * loads.steady_seconds)
    warm = round(loads.steady_rate * loads.warmup_seconds)
    keys = [f"{tag}-w3warm-{i}" for i in range(warm)] + [f"{tag}-w3-{i}" for i in range(count)]
    total = len(keys)
    sent_at: dict[str, float] = {}
    interval = 1.0 / loads.steady_rate
    started = time.perf_counter()
    shown = started
    for i, key in enumerate(keys):
        delay = started + i * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sent_at[key] = time.perf_counter()
        await target.send(key)
        if sent_at[key] - shown >= PROGRESS_EVERY:
            print(
                f"    W3 {target.label}: {i + 1:,}/{total:,} sent, {receiver.unique:,} notified",
                flush=True,
            )
            shown = sent_at[key]
    send_seconds = time.perf_counter() - started
    budget = Budget(loads.timeout)  # from the last send: the sending itself is paced
    refused = await target.settle(budget.left())
    line = _status(target, receiver, total)
    complete = await wait_for(
        f"W3 {target.label}", lambda: receiver.unique >= total, target, budget.left(), line
    )
    await target.quiesce(total, budget.left())
    in_order = [  # send order: a time series, so a stall shows
        (receiver.first_seen[key] - sent_at[key]) * 1000
        for key in keys[warm:]
        if key in receiver.first_seen
    ]
    latencies = sorted(in_order)
    return {
        "events": count,
        "rate": loads.steady_rate,
        "achieved_rate": total / send_seconds,
        "warmup_events": warm,
        "refused": refused,
        "notified": len(latencies),
        "missing": count - len(latencies),
        "p50_ms": percentile(latencies, 0.50),
        "p90_ms": percentile(latencies, 0.90),
        "p99_ms": percentile(latencies, 0.99),
        "p999_ms": percentile(latencies, 0.999),
        "max_ms": latencies[-1] if latencies else None,
        "mean_ms": sum(latencies) / len(latencies) if latencies else None,
        "max_connections": receiver.phase_max_open,
        "timeouts": [] if complete else [f"{count - len(latencies):,} never notified"],
        "latencies_ms": in_order,
        **_cpu_since(target, before, total),
    }


async def w5_grouped(
    target: Target, receiver: Receiver, loads: Loads, grouping: Grouping, tag: str
) -> dict[str, Any]:
    """W5: a storm of distinct alerts over ``loads.groups`` values of the grouping label,
    on a service configured with ``grouping``: how many notifications it takes, and how
    long until every group has been notified and every alert accounted for.

    Done when every group is notified and every alert listed (or counted as truncated);
    then a quiet ``settle`` period catches a notification too many. The figures are
    counted at the receiver, so both services are measured the same way."""
    n = loads.group_events
    expected_groups = min(loads.groups, n)
    prefix = f"{tag}-w5-"
    keys = [f"{prefix}{i}" for i in range(n)]
    labels = [{grouping.label: f"s{i % loads.groups}"} for i in range(n)]
    what = f"W5 {target.label}"
    receiver.reset(prefix)
    target.begin()
    before = target.usage()
    offset = wall_offset()
    timeouts: list[str] = []
    budget = Budget(loads.timeout)
    sent = await target.storm(keys, budget.left(), labels)
    print(
        f"    {what}: {sent.accepted:,} of {n:,} accepted in "
        f"{sent.last_accepted - sent.first_sent:.2f} s",
        flush=True,
    )
    if sent.error:
        timeouts.append(sent.error)
    first_wall = sent.first_sent + offset
    committed_at = await target.committed(n, n, budget.left())
    if target.has_log and committed_at is None:
        timeouts.append(budget.missed(f"not all {n:,} events committed and grouped"))

    def line() -> str:
        log = target.progress()
        seen = (
            f"{receiver.groups:,}/{expected_groups:,} groups, {receiver.covered:,}/{n:,} "
            f"alerts in {receiver.requests:,} notifications"
        )
        return f"{seen}; {log}" if log else seen

    complete = await wait_for(
        what,
        lambda: receiver.groups >= expected_groups and receiver.covered >= n,
        target,
        budget.left(),
        line,
    )
    if not complete:
        timeouts.append(
            budget.missed(
                f"{receiver.groups:,} of {expected_groups:,} groups and "
                f"{receiver.covered:,} of {n:,} alerts notified"
            )
        )
    all_groups_at = max(receiver.group_first_seen.values(), default=None)
    all_listed_at = max(receiver.first_seen.values(), default=None)
    await asyncio.sleep(loads.settle)
    recorded_at = await target.quiesce(receiver.requests, budget.left())
    if target.has_log and recorded_at is None:
        timeouts.append(budget.missed("not all outcomes recorded"))
    cpu = _cpu_since(target, before, n)
    publish_seconds = sent.last_accepted - sent.first_sent
    commit_seconds = committed_at - first_wall if committed_at is not None else None
    all_groups = receiver.groups >= expected_groups
    return {
        "events": n,
        "groups": expected_groups,
        "group_by": grouping.label,
        "group_wait_seconds": grouping.wait,
        "group_interval_seconds": grouping.interval,
        "max_alerts": grouping.max_alerts if target.has_log else None,
        "accepted": sent.accepted,
        "refused": sent.refused,
        "publish_seconds": publish_seconds,
        "accepted_per_second": _rate(sent.accepted, publish_seconds),
        "committed_seconds": commit_seconds,
        "committed_per_second": _rate(n, commit_seconds),
        "notifications": receiver.requests,
        "groups_notified": receiver.groups,
        "alerts_listed": receiver.unique,
        "alert_listings": receiver.notifications,
        "alerts_covered": receiver.covered,
        "truncated_alerts": receiver.truncated,
        "all_groups_notified_seconds": (
            all_groups_at - sent.first_sent if all_groups and all_groups_at else None
        ),
        "all_alerts_notified_seconds": (
            all_listed_at - sent.first_sent if complete and all_listed_at else None
        ),
        "outcomes_recorded_seconds": (
            recorded_at - first_wall if recorded_at is not None else None
        ),
        "max_connections": receiver.phase_max_open,
        "bad_requests": receiver.bad_requests,
        "stray_notifications": receiver.stray,
        "timeouts": timeouts,
        **cpu,
    }
