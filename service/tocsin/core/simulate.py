"""``tocsin simulate`` (DESIGN.md section 15): what another config would have notified.

``replay`` feeds the log's received events, in order and at their times, through the
decision core under the new config, starting from an empty projection: each event
through ``triage`` at the instant the router received it, and before it every clock
timer due by then through ``clock.tick`` at its due time (groups, time intervals,
auto-resolves, silences ending), so timers behave as they did. Operator silences are
taken as they were logged (they are inputs, not decisions). Ids are made up
(``sim-…``); each simulated alert is known by the alert id the log gave the alert its
received event opened or joined, so that the two runs can be compared alert by alert.

``notified`` lists who was told what of each alert, in either run; ``compare`` is the
difference: for each alert, the notifications (receiver, reason, group) only the log
has (removed), only the simulation has (added), or both with a different set
(changed), then the totals of notifications by receiver, before and after.

A partitioned data dir's logs (DESIGN.md section 17) are each replayed apart
(``Simulation``, ids of its own), all fed before any is settled so their timers run to
the same end, then compared at once and reported as one (``combined``).

Not replayed: acks and resolves by an operator (they name the log's alert ids and
were made by someone who saw the log's notifications), heartbeats, escalation steps
an ack ended. State before ``--since`` is not rebuilt: the run starts empty.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from tocsin.core import clock
from tocsin.core import events as ev
from tocsin.core.decide.route import RoutingTable
from tocsin.core.decide.triage import triage
from tocsin.core.fold import fold
from tocsin.core.ingest import Normalized
from tocsin.core.state import State
from tocsin.core.timeintervals import TimeIntervals
from tocsin.core.times import format_us

Told = tuple[str, str, str]  # (receiver, reason, group key or "" for an ungrouped route)


@dataclass(frozen=True)
class Rules:
    """The new config, as the decision core takes it."""

    loaded: ev.ConfigLoaded  # folded first: the fold's settings (resolve timeout...)
    routing: RoutingTable
    intervals: TimeIntervals
    window_seconds: float


@dataclass
class Replayed:
    """The simulation's facts, and which log alert each simulated alert id stands for."""

    facts: list[ev.Event] = field(default_factory=list)
    alias: dict[str, str] = field(default_factory=dict)
    received: int = 0  # events fed through triage
    # each alert's first received event, by the id ``notified`` knows it by (what the
    # markdown summary says of an alert: type, severity, labels)
    about: dict[str, ev.AlertReceived] = field(default_factory=dict)
    first: int | None = None  # the first and last input's time (the window replayed)
    last: int | None = None


def _normalized(received: ev.AlertReceived) -> Normalized:
    """The inbound event as the router had it, from its logged ``alert.received``."""
    return Normalized(
        type=received.type,
        severity=received.severity,
        summary=received.summary,
        source=received.source,
        status=received.status,
        labels=received.labels,
        fingerprint=received.fingerprint,
        details=received.details,
        timestamp=received.timestamp,
        timestamp_replaced=received.timestamp_replaced,
        event_id=received.event_id,
        ignored_fields=received.ignored_fields,
        ends_at=received.ends_at,
    )


def replay(
    logged: Iterable[tuple[int, ev.Event]],
    rules: Rules,
    until: int | None = None,
    on_event: Callable[[int], None] | None = None,
) -> Replayed:
    """The facts the decision core makes under ``rules`` from the logged inputs
    (``(ts, event)`` oldest first: ``alert.received``, ``silence.created``,
    ``silence.deleted``; other kinds are ignored), then the timers due by ``until``
    (default: the last input's time). ``on_event`` is told each input's time (a
    progress bar)."""
    simulation = Simulation(rules)
    simulation.feed(logged, on_event)
    return simulation.settle(until)


class Simulation:
    """One log's replay (``replay``) in its two steps: its inputs fed in order, then
    the timers settled up to an end. Apart, so that the logs of a partitioned data dir
    can all be fed before any is settled: each then runs its timers to the same end,
    the last input of any partition, as one log holding every partition's events
    would. ``ids`` starts the ids it makes (``<ids>-<n>``): one per partition, so that
    the partitions' simulated alerts and notifications stay apart."""

    def __init__(self, rules: Rules, ids: str = "sim") -> None:
        self.rules = rules
        self.state = State()
        self.out = Replayed()
        self._counter = itertools.count(1)
        self._ids = ids
        self._seq = 0

    def _new_id(self) -> str:
        return f"{self._ids}-{next(self._counter):012d}"

    def _commit(self, facts: Iterable[ev.Event], ts: int) -> None:
        for fact in facts:
            self._seq += 1
            fold(self.state, self._seq, ts, fact)
            self.out.facts.append(fact)

    def _tick_until(self, now: int) -> None:
        rules = self.rules
        while (due := clock.next_due(self.state)) is not None and due <= now:
            facts = clock.tick(
                self.state,
                due,
                new_id=self._new_id,
                intervals=rules.intervals,
                routing=rules.routing,
            )
            if not facts:
                return  # a timer the fold left behind: nothing more to decide by now
            self._commit(facts, due)

    def feed(
        self, logged: Iterable[tuple[int, ev.Event]], on_event: Callable[[int], None] | None = None
    ) -> None:
        """Each input through the decision core at its time, the timers due before it
        first (``replay`` says which inputs)."""
        rules, out = self.rules, self.out
        last = out.last
        for ts, event in logged:
            if isinstance(event, ev.AlertReceived):
                now = event.received_at
                self._tick_until(now)
                if last is None:
                    self._commit([rules.loaded], now)
                facts = triage(
                    self.state,
                    _normalized(event),
                    subject=event.subject,
                    received_at=now,
                    routing=rules.routing,
                    window_seconds=rules.window_seconds,
                    new_id=self._new_id,
                    trace_id=None,
                )
                first = facts[0]
                if isinstance(first, ev.AlertReceived) and first.alert_id:
                    if event.alert_id:
                        out.alias.setdefault(first.alert_id, event.alert_id)
                    out.about.setdefault(out.alias.get(first.alert_id, first.alert_id), event)
                if event.alert_id:
                    out.about.setdefault(event.alert_id, event)  # an alert the run drops
                self._commit(facts, now)
                out.received += 1
            elif isinstance(event, ev.SilenceCreated | ev.SilenceDeleted):
                now = ts
                self._tick_until(now)
                if last is None:
                    self._commit([rules.loaded], now)
                self._commit([event], now)
            else:
                continue
            last = now
            if out.first is None:
                out.first = now
            if on_event is not None:
                on_event(now)
        out.last = last

    def settle(self, until: int | None = None) -> Replayed:
        """The timers due by ``until`` (default: the last input's time) run; the run."""
        end = until if until is not None else self.out.last
        if end is not None:
            self._tick_until(end)
        return self.out


def combined(runs: Sequence[Replayed]) -> Replayed:
    """The runs of a partitioned data dir's logs as one report tells of them: the
    received events summed, the window from the first input of any to the last, each
    alert's first event (the partitions' alert ids are apart). Their facts are each
    run's: ``notified`` is asked of each."""
    out = Replayed()
    for run in runs:
        out.received += run.received
        out.alias.update(run.alias)
        out.about.update(run.about)
    firsts = [run.first for run in runs if run.first is not None]
    lasts = [run.last for run in runs if run.last is not None]
    out.first, out.last = min(firsts, default=None), max(lasts, default=None)
    return out


def notified(facts: Iterable[ev.Event], alias: dict[str, str] | None = None) -> list[Notified]:
    """Who was told what of each alert: one entry per alert per notification
    (``alert.routed``: its alert; ``group.notified``: each alert it lists)."""
    alias = alias or {}
    told: list[Notified] = []
    for fact in facts:
        if isinstance(fact, ev.AlertRouted):
            told.append(
                Notified(
                    alias.get(fact.alert_id, fact.alert_id),
                    fact.fingerprint,
                    (fact.receiver, fact.reason, ""),
                    fact.notification_id,
                )
            )
        elif isinstance(fact, ev.GroupNotified):
            for alert in fact.alerts:
                told.append(
                    Notified(
                        alias.get(alert.alert_id, alert.alert_id),
                        alert.fingerprint,
                        (fact.receiver, alert.reason, fact.group_key),
                        fact.notification_id,
                    )
                )
    return told


class Notified(NamedTuple):
    """One alert in one notification (a tuple: a busy day makes a million of them, and
    a frozen dataclass's ``__init__`` is several times slower)."""

    alert: str  # the log's alert id (the simulation's, for an alert the log never had)
    fingerprint: str
    told: Told
    notification_id: str


@dataclass(frozen=True)
class Change:
    """One alert told differently: ``kind`` is added (only the simulation tells of
    it), removed (only the log did) or changed (both, differently)."""

    kind: str
    alert: str
    fingerprint: str
    added: tuple[Told, ...]
    removed: tuple[Told, ...]


@dataclass(frozen=True)
class Difference:
    changes: tuple[Change, ...]
    before: dict[str, int]  # notifications per receiver, as logged
    after: dict[str, int]  # as simulated
    same: int  # alerts told exactly as before


def compare(before: Iterable[Notified], after: Iterable[Notified]) -> Difference:
    """The difference, alert by alert, in the order the alerts were first told of.
    Each alert's notifications are kept as plain lists and compared sorted; the
    multiset difference is only taken for the alerts that differ (most are the same)."""
    was: dict[str, list[Told]] = {}
    now: dict[str, list[Told]] = {}
    fingerprints: dict[str, str] = {}
    totals: tuple[dict[str, set[str]], dict[str, set[str]]] = ({}, {})
    for side, entries, tally in ((was, before, totals[0]), (now, after, totals[1])):
        for entry in entries:
            told = side.get(entry.alert)
            if told is None:
                side[entry.alert] = [entry.told]
                fingerprints.setdefault(entry.alert, entry.fingerprint)  # first-told order
            else:
                told.append(entry.told)
            ids = tally.get(entry.told[0])
            if ids is None:
                tally[entry.told[0]] = {entry.notification_id}
            else:
                ids.add(entry.notification_id)
    changes: list[Change] = []
    same = 0
    for alert, fingerprint in fingerprints.items():
        old, new = was.get(alert, []), now.get(alert, [])
        if len(old) == len(new) and sorted(old) == sorted(new):
            same += 1
            continue
        kind = "added" if not old else "removed" if not new else "changed"
        was_told, now_told = Counter(old), Counter(new)
        changes.append(
            Change(
                kind,
                alert,
                fingerprint,
                tuple(sorted((now_told - was_told).elements())),
                tuple(sorted((was_told - now_told).elements())),
            )
        )
    return Difference(
        tuple(changes),
        {r: len(ids) for r, ids in sorted(totals[0].items())},
        {r: len(ids) for r, ids in sorted(totals[1].items())},
        same,
    )


def _told(told: Told) -> str:
    receiver, reason, group = told
    return f"{receiver} {reason}" + (f" (group {group})" if group else "")


def _covered(partitions: int | None) -> str:
    """What the report covered, after its count of received events: nothing more for
    one log; the partitions, for a partitioned data dir's logs."""
    return "" if partitions is None else f" from {partitions} partition(s)"


def report_lines(
    difference: Difference, received: int, version: str, partitions: int | None = None
) -> list[str]:
    """The text ``tocsin simulate`` prints: the changed alerts (+ added, - removed),
    then the totals by receiver, before and after. ``partitions``: how many logs of a
    partitioned data dir it covered (``None``: one log)."""
    changes = difference.changes
    by_kind = Counter(change.kind for change in changes)
    lines = [
        f"simulated {received} received event(s){_covered(partitions)} under config {version}: "
        f"{by_kind['added']} alert(s) added, {by_kind['removed']} removed, "
        f"{by_kind['changed']} changed, {difference.same} the same"
    ]
    for change in changes:
        lines.append(f"{change.kind} alert {change.alert} (fingerprint {change.fingerprint}):")
        lines.extend(f"  + {_told(told)}" for told in change.added)
        lines.extend(f"  - {_told(told)}" for told in change.removed)
    lines.append("notifications by receiver (before -> after):")
    receivers = sorted(set(difference.before) | set(difference.after))
    width = max((len(r) for r in receivers), default=0)
    for receiver in receivers:
        was, now = difference.before.get(receiver, 0), difference.after.get(receiver, 0)
        delta = f" ({now - was:+d})" if now != was else ""
        lines.append(f"  {receiver:<{width}}  {was} -> {now}{delta}")
    return lines


def _told_json(told: Told) -> dict[str, str | None]:
    receiver, reason, group = told
    return {"receiver": receiver, "reason": reason, "group_key": group or None}


def report_json(
    difference: Difference, received: int, version: str, partitions: int | None = None
) -> dict[str, object]:
    """``tocsin simulate --json``: the same, as one object (with ``partitions`` when
    it covered a partitioned data dir's logs)."""
    covered: dict[str, object] = {} if partitions is None else {"partitions": partitions}
    return {
        "version": version,
        "received": received,
        **covered,
        "same": difference.same,
        "changes": [
            {
                "kind": change.kind,
                "alert_id": change.alert,
                "fingerprint": change.fingerprint,
                "added": [_told_json(told) for told in change.added],
                "removed": [_told_json(told) for told in change.removed],
            }
            for change in difference.changes
        ],
        "before": difference.before,
        "after": difference.after,
    }


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _labels(labels: dict[str, str], width: int = 60) -> str:
    """The labels as ``k=v, ...`` (sorted), cut to ``width`` characters."""
    text = ", ".join(f"{key}={value}" for key, value in sorted(labels.items()))
    return text if len(text) <= width else text[: width - 1] + "…"


def _told_cell(told: tuple[Told, ...]) -> str:
    return "<br>".join(_cell(_told(t)) for t in told) or "nothing"


def report_markdown(
    difference: Difference,
    run: Replayed,
    version: str,
    until: int | None = None,
    limit: int = 20,
    partitions: int | None = None,
) -> list[str]:
    """``tocsin simulate --markdown``: the summary a reviewer pastes into a pull request.
    A heading, the window replayed, the counts, the notifications by receiver before ->
    after, then the first ``limit`` changed alerts (type, severity, labels; what only
    the log told, what only the simulation tells), and how many more there are."""
    changes = difference.changes
    by_kind = Counter(change.kind for change in changes)
    end = until if until is not None else run.last
    window = (
        f"{format_us(run.first)} → {format_us(end)}"
        if run.first is not None and end is not None
        else "no received events"
    )
    lines = [
        f"### tocsin simulate: config `{version}`",
        "",
        f"Replayed {run.received} received event(s){_covered(partitions)}, {window}.",
        "",
        f"**{by_kind['added']} added, {by_kind['removed']} removed, "
        f"{by_kind['changed']} changed**, {difference.same} alert(s) told the same.",
        "",
        "| Receiver | Before | After | Change |",
        "|---|---:|---:|---:|",
    ]
    for receiver in sorted(set(difference.before) | set(difference.after)):
        was, now = difference.before.get(receiver, 0), difference.after.get(receiver, 0)
        lines.append(f"| {_cell(receiver)} | {was} | {now} | {now - was:+d} |")
    if not changes:
        lines += ["", "No alert would be told differently."]
        return lines
    shown = changes[:limit]
    lines += [
        "",
        f"Changed alerts (the first {len(shown)} of {len(changes)}; before: told only by "
        "the log, after: told only under the new config):",
        "",
        "| | Type | Severity | Labels | Before | After |",
        "|---|---|---|---|---|---|",
    ]
    for change in shown:
        about = run.about.get(change.alert)
        kind, severity, labels = (
            (about.type, about.severity, _labels(about.labels))
            if about is not None
            else ("?", "?", f"fingerprint {change.fingerprint}")
        )
        lines.append(
            f"| {change.kind} | {_cell(kind)} | {severity} | {_cell(labels)} "
            f"| {_told_cell(change.removed)} | {_told_cell(change.added)} |"
        )
    if len(changes) > len(shown):
        lines += ["", f"…and {len(changes) - len(shown)} more changed alert(s) (`--json` for all)."]
    return lines


def progress_line(done: int, total: int, elapsed: float) -> str:
    """The progress bar ``tocsin simulate`` draws on a terminal: rows read of the total,
    the rate, and the time left at that rate."""
    share = done / total if total else 1.0
    filled = int(share * 20)
    rate = done / elapsed if elapsed > 0 else 0.0
    left = (total - done) / rate if rate > 0 else None
    eta = "?" if left is None else f"{int(left) // 60}:{int(left) % 60:02d}"
    return (
        f"[{'#' * filled}{'.' * (20 - filled)}] {done:,}/{total:,} events "
        f"({share:.0%}), {rate:,.0f} events/s, ETA {eta}"
    )
