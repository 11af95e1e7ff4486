"""Results -> the figures side by side, as text, Markdown, JSON and plots.

One table of rows drives every output, so the console, ``latest.md`` and the README
can never disagree. A row names the command that produced it. Each side ran every
workload ``runs`` times (alternated, see ``bench/suite.py``); a cell is the median of
those runs with their range (min-max), and the ratio is always tocsin's median /
Alertmanager's median, with the better direction stated (for times, below 1 is better).
A row with a target of issue #20 says whether the medians meet it.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Result = dict[str, Any]

MET = "met"
NOT_MET = "not met"
UNKNOWN = "no figure"  # a side's figure is missing, so the target cannot be judged
BELOW_FLOOR = "not met, below the floor"  # the target asks less than parts not owned take


def is_number(value: Any) -> bool:
    """A figure: an int or a float, not a bool (``exact`` is a bool, not a count)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class Figure:
    """One figure of one side over its runs: the median and the range (min-max) of the
    runs that produced it, and how many runs there were (a run that timed out has no
    figure, and the table says so instead of hiding it in the median)."""

    values: tuple[float, ...]
    runs: int

    @property
    def median(self) -> float:
        return float(statistics.median(self.values))

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)


def figure(values: Sequence[Any]) -> Figure | None:
    """The numbers among ``values`` (one per run) as a ``Figure``; ``None`` if no run
    produced this figure."""
    numbers = tuple(float(v) for v in values if is_number(v))
    return Figure(numbers, len(values)) if numbers else None


def ratio_of(ours: Figure | None, theirs: Figure | None) -> float | None:
    """tocsin's median / Alertmanager's median; ``None`` when either is missing or 0."""
    if ours is None or theirs is None or not theirs.median:
        return None
    return ours.median / theirs.median


@dataclass(frozen=True)
class Versus:
    """An issue #20 target relative to Alertmanager in the same run: tocsin's median
    ``op`` ``factor`` x Alertmanager's median (``op`` is "≥" or "≤")."""

    op: str
    factor: float

    def text(self, sizes: dict[str, Any]) -> str:
        return f"{self.op} {self.factor:.1f}x AM"

    def verdict(self, ours: Figure | None, theirs: Figure | None, sizes: dict[str, Any]) -> str:
        r = ratio_of(ours, theirs)
        if r is None:
            return UNKNOWN
        return MET if (r >= self.factor if self.op == "≥" else r <= self.factor) else NOT_MET

    def excused(self, theirs: Figure | None, floor: Figure | None) -> bool:
        """An upper bound (``≤``) lower than the floor's median: no tocsin could meet it
        on this machine, whatever its own code did (the floor is parts it does not own,
        timed alone in the same run)."""
        if self.op != "≤" or theirs is None or floor is None:
            return False
        return floor.median > self.factor * theirs.median


@dataclass(frozen=True)
class Below:
    """An absolute target of tocsin's alone: its median strictly below ``bound``."""

    bound: float
    unit: str

    def text(self, sizes: dict[str, Any]) -> str:
        return f"< {self.bound:g} {self.unit}"

    def verdict(self, ours: Figure | None, theirs: Figure | None, sizes: dict[str, Any]) -> str:
        if ours is None:
            return UNKNOWN
        return MET if ours.median < self.bound else NOT_MET


@dataclass(frozen=True)
class Exactly:
    """A count both sides must hit in every run (``expected`` names a size, e.g.
    ``fingerprints``): a correctness check, so one run off is a miss, medians aside."""

    expected: str

    def text(self, sizes: dict[str, Any]) -> str:
        return f"= {sizes[self.expected]:,} every run"

    def verdict(self, ours: Figure | None, theirs: Figure | None, sizes: dict[str, Any]) -> str:
        present = [f for f in (ours, theirs) if f is not None]
        if not present:
            return UNKNOWN
        want = sizes[self.expected]
        every = all(len(f.values) == f.runs and f.low == f.high == want for f in present)
        return MET if every else NOT_MET


Goal = Versus | Below | Exactly


@dataclass(frozen=True)
class Row:
    label: str
    unit: str
    better: str  # "higher", "lower" or "exact"
    value: Callable[[Result], Any]  # from one run of one side; None when absent
    goal: Goal | None = None
    source: str = "suite"  # which command produced it: "suite", "floor" or "replay"
    unit_in_label: bool = False
    floor: Callable[[Result], Any] | None = None  # of a "floor" run: parts not owned


def pick(*path: str) -> Callable[[Result], Any]:
    """The figure at ``path`` of one run's result, or ``None`` where a run has none."""

    def value(result: Result) -> Any:
        node: Any = result
        for key in path:
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        return node

    return value


def _events_per_second(workload: str) -> Callable[[Result], Any]:
    """tocsin: committed to the log (and routed); Alertmanager: accepted by its API."""

    def value(result: Result) -> Any:
        w = result.get(workload) or {}
        return (
            w.get("committed_per_second") if result.get("has_log") else w.get("accepted_per_second")
        )

    return value


# The goals are issue #20's targets: relative to Alertmanager's median of the same run
# (a shared machine's speed moves both sides), W4's start absolute.
ROWS = [
    Row("W1 events/s (tocsin: committed + routed; AM: accepted)", "events/s", "higher",
        _events_per_second("W1"), unit_in_label=True),
    Row("W1 accepted by broker / API", "events/s", "higher", pick("W1", "accepted_per_second")),
    Row("W1 last publish → last notification", "s", "lower",
        pick("W1", "last_publish_to_last_notification_seconds")),
    Row("W1 all {events:,} notified after the first publish", "s", "lower",
        pick("W1", "all_notified_seconds")),
    Row("W1 notifications/s end to end, until every one arrived", "/s", "higher",
        pick("W1", "notifications_per_second"), Versus("≥", 1.0), unit_in_label=True),
    Row("W1 CPU of the service, whole storm", "s", "lower", pick("W1", "cpu_seconds")),
    Row("W1 CPU of the service per event", "µs", "lower", pick("W1", "cpu_us_per_event")),
    Row("W2 events/s (tocsin: committed; AM: accepted)", "events/s", "higher",
        _events_per_second("W2"), Versus("≥", 0.5), unit_in_label=True),
    Row("W2 notifications sent (must be {fingerprints:,})", "", "exact",
        pick("W2", "notifications"), Exactly("fingerprints")),
    Row("W2 CPU of the service per event", "µs", "lower", pick("W2", "cpu_us_per_event")),
    Row("W3 latency p50", "ms", "lower", pick("W3", "p50_ms"), Versus("≤", 1.5),
        floor=pick("durable", "p50_ms")),
    Row("W3 latency p99", "ms", "lower", pick("W3", "p99_ms"), Versus("≤", 1.0),
        floor=pick("durable", "p99_ms")),
    Row("W3 floor p50: 2 JetStream hops + an fsync + the webhook POST, in a row", "ms", "lower",
        pick("p50_ms"), source="floor"),
    Row("W3 floor p99: the same four in a row", "ms", "lower", pick("p99_ms"), source="floor"),
    Row("W3 durable path p50: the same with SQLite's commit of 3 facts on aiosqlite's thread"
        " for the fsync", "ms", "lower", pick("durable", "p50_ms"), source="floor"),
    Row("W3 durable path p99: the same in a row", "ms", "lower", pick("durable", "p99_ms"),
        source="floor"),
    Row("W3 latency max", "ms", "lower", pick("W3", "max_ms")),
    Row("W3 notified (of {steady:,})", "", "exact", pick("W3", "notified"), Exactly("steady")),
    Row("W3 CPU of the service per event (warm-up included)", "µs", "lower",
        pick("W3", "cpu_us_per_event")),
    Row("W5 events/s (tocsin: committed + grouped; AM: accepted)", "events/s", "higher",
        _events_per_second("W5"), unit_in_label=True),
    Row("W5 notifications sent", "", "lower", pick("W5", "notifications")),
    Row("W5 groups notified (of {groups:,})", "", "exact", pick("W5", "groups_notified"),
        Exactly("groups")),
    Row("W5 alerts notified (of {group_events:,})", "", "exact", pick("W5", "alerts_covered"),
        Exactly("group_events")),
    Row("W5 all {groups:,} groups notified after the first publish", "s", "lower",
        pick("W5", "all_groups_notified_seconds"), Versus("≤", 1.0)),
    Row("W5 every alert notified after the first publish", "s", "lower",
        pick("W5", "all_alerts_notified_seconds")),
    Row("RSS after {storms}", "MiB", "lower", pick("resources", "rss_mib"), Versus("≤", 0.3)),
    Row("CPU after {storms} (process total)", "s", "lower", pick("resources", "cpu_seconds")),
    Row("nats-server CPU after {storms}", "s", "lower", pick("resources", "broker_cpu_seconds")),
    Row("most simultaneous webhook connections", "", "lower", pick("max_connections")),
    Row("W4 fold (decode + fold)", "events/s", "higher", pick("fold_events_per_second"),
        source="replay"),
    Row("W4 start without a snapshot", "s", "lower", pick("start_without_snapshot_seconds"),
        source="replay"),
    Row("W4 start with a snapshot", "s", "lower", pick("start_with_snapshot_seconds"),
        Below(1.0, "s"), source="replay"),
    Row("W4 start with a snapshot: the kernel's (system CPU)", "s", "lower",
        pick("start_with_snapshot_system_seconds"), source="replay"),
    Row("W4 floor: as many fresh pages first touched alone", "s", "lower",
        pick("start_pages_touched_alone_seconds"), source="replay"),
    Row("W4 start with a snapshot in a process of its own (as serve starts)", "s", "lower",
        pick("start_in_a_process_of_its_own_seconds"), source="replay"),
]  # fmt: skip


def fmt(value: Any, unit: str) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if unit in ("events/s", "/s", "") and isinstance(value, int | float):
        return f"{value:,.0f}"
    if unit == "µs":
        return f"{value:,.0f}"
    if unit == "ms":
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    if unit == "MiB":
        return f"{value:,.1f}"
    return f"{value:,.2f}"


def cell(f: Figure | None, unit: str) -> str:
    """``median (min-max)``; the median alone when every run agrees; ``k of n runs``
    when some run produced no figure."""
    if f is None:
        return "—"
    text = fmt(f.median, unit)
    low, high = fmt(f.low, unit), fmt(f.high, unit)
    if len(f.values) > 1 and low != high:
        text += f" ({low}-{high})"
    if len(f.values) < f.runs:
        text += f" [{len(f.values)} of {f.runs} runs]"
    return text


def ratio_text(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.2f}x" if value < 100 else f"{value:,.0f}x"


def runs_of(result: Result) -> list[Result]:
    """A side's runs; a results file from before ``--runs`` (or a lone replay) is one."""
    runs = result.get("runs")
    return list(runs) if isinstance(runs, list) else ([result] if result else [])


def median_tree(runs: Sequence[Result]) -> Result:
    """The runs' figures folded into one result of the same shape: numbers -> median of
    the runs that have them, flags -> true only if true in every run, nested results ->
    the same again, texts -> the first run's. Lists (W3's raw latencies, timeouts) stay
    in the runs. So every reader of a single run's result (``--baseline``, the README's
    table) reads medians from a result of several."""
    out: Result = {}
    keys = list(dict.fromkeys(key for run in runs for key in run))
    for key in keys:
        values = [run[key] for run in runs if key in run and run[key] is not None]
        if not values:
            out[key] = None
        elif all(isinstance(v, bool) for v in values):
            out[key] = all(values)
        elif all(is_number(v) for v in values):
            out[key] = statistics.median(values)
        elif all(isinstance(v, dict) for v in values):
            out[key] = median_tree(values)
        elif isinstance(values[0], str):
            out[key] = values[0]
    return out


@dataclass(frozen=True)
class Line:
    """One rendered row."""

    source: str
    label: str
    ours: str
    theirs: str
    ratio: str
    goal: str
    verdict: str  # MET, NOT_MET, UNKNOWN, or "" for a row without a target
    better: str


def lines(results: Result) -> list[Line]:
    """Every row with a value for at least one side, rendered from every run."""
    tocsin = runs_of(results["targets"].get("tocsin") or {})
    am = runs_of(results["targets"].get("alertmanager") or {})
    alone = {source: runs_of(results.get(source) or {}) for source in ("replay", "floor")}
    out = []
    sizes = _sizes(results)
    for row in ROWS:
        if row.source in alone:
            ours, theirs = figure([row.value(r) for r in alone[row.source]]), None
        else:
            ours = figure([row.value(r) for r in tocsin])
            theirs = figure([row.value(r) for r in am])
        if ours is None and theirs is None:
            continue
        label = row.label.format(**sizes)
        if row.unit and not row.unit_in_label:
            label += f", {row.unit}"
        arrow = {"higher": "↑", "lower": "↓", "exact": "="}[row.better]
        shown = ratio_of(ours, theirs) if row.better != "exact" else None
        out.append(
            Line(
                row.source,
                label,
                cell(ours, row.unit),
                cell(theirs, row.unit),
                ratio_text(shown),
                row.goal.text(sizes) if row.goal else "",
                _verdict(row, ours, theirs, sizes, alone["floor"]),
                arrow,
            )
        )
    return out


def _verdict(
    row: Row,
    ours: Figure | None,
    theirs: Figure | None,
    sizes: dict[str, Any],
    floor_runs: Sequence[Result],
) -> str:
    """The row's target met or not; not met but asking less than the floor of parts
    tocsin does not own, measured in the same run, says so (``BELOW_FLOOR``)."""
    if row.goal is None:
        return ""
    verdict = row.goal.verdict(ours, theirs, sizes)
    if verdict == NOT_MET and row.floor is not None and isinstance(row.goal, Versus):
        floor = figure([row.floor(r) for r in floor_runs])
        if row.goal.excused(theirs, floor):
            return BELOW_FLOOR
    return verdict


def missed(rendered: Sequence[Line], verdict: str = NOT_MET) -> list[str]:
    """One plain sentence per target with this ``verdict`` (not met, or without a
    figure to judge it by), for the end of the console output and of ``latest.md``."""
    return [
        f"{line.label}: tocsin {line.ours}, Alertmanager {line.theirs}, ratio {line.ratio}; "
        f"target {line.goal}: {line.verdict.upper()}"
        for line in rendered
        if line.verdict == verdict
    ]


def storms(workloads: Collection[str]) -> str:
    """The storms that ran on the storms' process ("W1+W2", "W1" or "W2"): what the
    resources figures are measured after."""
    return "+".join(w.upper() for w in ("w1", "w2") if w in workloads)


def _sizes(results: Result) -> dict[str, Any]:
    """The sizes row labels name (a results file from before W5 lacks its own)."""
    loads = results["loads"]
    return {
        "events": loads["storm_events"],
        "fingerprints": loads["duplicate_fingerprints"],
        "steady": round(loads["steady_rate"] * loads["steady_seconds"]),
        "group_events": loads.get("group_events", 0),
        "groups": loads.get("groups", 0),
        "storms": storms(results.get("workloads", ["w1", "w2"])) or "start",
    }


def _commands(results: Result) -> dict[str, str]:
    return {
        "suite": results["command"],
        "floor": f"{results['command']} (W3's floor: bench/floors.py, after the W3 sessions)",
        "replay": (results.get("replay") or {}).get("command", ""),
    }


def _runs_note(results: Result) -> str:
    """How the runs were made, in one sentence (a file from before ``--runs``: one)."""
    runs = results.get("runs", 1)
    if runs == 1:
        return "One run (--runs 1): each cell is that run's figure."
    return (
        f"Each cell is the median of {runs} runs (min-max); tocsin and Alertmanager took "
        f"turns, run by run, on each workload; the ratio is of the medians."
    )


def markdown(results: Result) -> str:
    """The README's table: figures, the targets met or not, the commands, the date and
    the machine."""
    m = results["machine"]
    head = [
        f"Measured {results['date']} on {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, "
        f"{python_of(m)}, {m['system']}; tocsin {m['tocsin']}, "
        f"Alertmanager {m['alertmanager']}, nats-server {m['nats_server']}."
        + (" **Profiled run** (py-spy attached to tocsin during W1 of its first run)."
           if results["profiled"] else ""),
        "",
        "| figure | tocsin | Alertmanager | tocsin / AM | target (issue #20) | |",
        "|---|---:|---:|---:|---|---|",
    ]  # fmt: skip
    commands = _commands(results)
    rendered = lines(results)
    body = []
    for line in rendered:
        shown = (NOT_MET, UNKNOWN, BELOW_FLOOR)
        verdict = f"**{line.verdict}**" if line.verdict in shown else line.verdict
        body.append(
            f"| {line.label} {line.better} | {line.ours} | {line.theirs} | {line.ratio} "
            f"| {line.goal} | {verdict} |"
        )
    notes = [
        "",
        "↑ higher is better, ↓ lower is better; the ratio is tocsin / Alertmanager. "
        + _runs_note(results),
        f"W1-W3, W5 and resources: `{commands['suite']}`. W2 runs on the process W1 ran on; "
        f"W3 on a fresh one, after {results['loads']['warmup_seconds']:g} s at its rate "
        "that are not counted. W1's CPU is the service's from the first publish until "
        "every outcome is recorded (tocsin serve: every process it runs).",
    ]
    grouping = results.get("grouping")
    if grouping and any(
        "W5" in run for t in results["targets"].values() for run in runs_of(t or {})
    ):
        notes.append(
            f"W5 on a fresh process of each, one route grouped by `{grouping['label']}` "
            f'(tocsin `group_by = ["labels.{grouping["label"]}"]`), group_wait '
            f"{grouping['wait']:g} s, group_interval {grouping['interval']:g} s, no repeat; "
            f"tocsin's `max_alerts = {grouping['max_alerts']}` lists every alert of a group, "
            "and alerts a body leaves out (`truncated_alerts`, AM's `truncatedAlerts`) would "
            "count as notified. Notifications = webhook requests."
        )
    if commands["replay"]:
        notes.append(f"W4 (tocsin only, a log of the size shown): `{commands['replay']}`.")
    notes.extend(_problems(results))
    for verdict, heading in (
        (NOT_MET, "Targets not met"),
        (BELOW_FLOOR, FLOOR_HEADING),
        (UNKNOWN, "Targets not judged"),
    ):
        sentences = missed(rendered, verdict)
        if sentences:
            notes.append("")
            notes.append(f"**{heading}:**" if verdict != UNKNOWN else f"{heading}:")
            notes.extend(f"- {sentence}" for sentence in sentences)
    return "\n".join(head + body + notes) + "\n"


FLOOR_HEADING = (
    "Targets not met and below the floor of parts tocsin does not own (the W3 durable path "
    "rows: two JetStream hops, SQLite's commit of a new alert's facts on aiosqlite's thread "
    "and the webhook POST, timed in a row with nothing of tocsin's, in this run)"
)


def _problems(results: Result) -> list[str]:
    """Errors, timeouts and publisher-bound figures of every run, named by run."""
    notes: list[str] = []
    sides = [(name, runs_of(result or {})) for name, result in results["targets"].items()]
    sides.append(("W4", runs_of(results.get("replay") or {})))
    for name, runs in sides:
        for number, run in enumerate(runs, 1):
            which = f"{name} run {number}" if len(runs) > 1 else name
            if run.get("skipped"):
                notes.append(f"{which}: {', '.join(run['skipped'])} skipped, over the time budget")
            if run.get("error"):
                notes.append(f"{which}: {run['error']}")
            for workload in ("W1", "W2", "W3", "W5"):
                w = run.get(workload) or {}
                for problem in w.get("timeouts", []):
                    notes.append(f"{which} {workload}: {problem}")
                if w.get("publisher_bound"):
                    notes.append(
                        f"{which} {workload}: committed as fast as the bench published "
                        f"({w['accepted_per_second']:,.0f}/s): a lower bound, not the "
                        "service's limit."
                    )
    return notes


def w1_before_after(before: Result, after: Result, before_name: str) -> str:
    """tocsin's W1 router figures of two runs side by side (issue #17: grouping must not
    grow the router's per-event cost in W1 by more than 10%). The router's cost is read
    from the committed rate (the router alone commits; its µs an event is 1e6 / rate);
    the CPU is the whole ``tocsin serve`` process's, for context. A results file from
    before W1 recorded its own CPU still has the process's CPU after the storms, shown
    when both runs ran the same storms."""

    def tocsin(results: Result) -> Result:
        return dict((results.get("targets") or {}).get("tocsin") or {})

    old, new = tocsin(before), tocsin(after)
    rows = [
        ("committed events/s", pick("W1", "committed_per_second"), "events/s"),
        ("committed, s", pick("W1", "committed_seconds"), "s"),
        ("CPU of tocsin serve in W1, s", pick("W1", "cpu_seconds"), "s"),
        ("CPU per event in W1, µs", pick("W1", "cpu_us_per_event"), "µs"),
        ("accepted by the broker, events/s", pick("W1", "accepted_per_second"), "events/s"),
    ]
    ran_before, ran_after = (storms(r.get("workloads", ["w1", "w2"])) for r in (before, after))
    if ran_before == ran_after:
        rows.append((f"CPU after {ran_after} (process), s", pick("resources", "cpu_seconds"), "s"))
    out = [
        f"W1 before ({before_name}, {before.get('date', '?')}, "
        f"tocsin {before.get('machine', {}).get('tocsin', '?')}) and after (this run, "
        f"tocsin {after.get('machine', {}).get('tocsin', '?')}):",
        f"  {'figure':<36}{'before':>12}{'after':>12}{'change':>10}",
    ]
    for label, value, unit in rows:
        a, b = _positive(value(old)), _positive(value(new))
        change = f"{(b / a - 1) * 100:+.1f}%" if a is not None and b is not None else "—"
        out.append(f"  {label:<36}{fmt(a, unit):>12}{fmt(b, unit):>12}{change:>10}")
    rate_before = _positive(pick("W1", "committed_per_second")(old))
    rate_after = _positive(pick("W1", "committed_per_second")(new))
    if rate_before is not None and rate_after is not None:
        growth = (rate_before / rate_after - 1) * 100
        verdict = "within" if growth <= 10 else "ABOVE"
        out.append(
            f"  router per event: {1e6 / rate_before:,.1f} → {1e6 / rate_after:,.1f} µs "
            f"({growth:+.1f}%), {verdict} the 10% the issue allows"
        )
    else:
        out.append("  router per event: — (a W1 committed rate is missing from a run)")
    return "\n".join(out) + "\n"


def _positive(value: Any) -> float | None:
    """``value`` if it is a positive number (a figure), else ``None``."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None


def text(results: Result) -> str:
    """The console summary: the same rows, grouped by the command that produced them,
    then every target missed, in plain words."""
    out = []
    commands = _commands(results)
    rendered = lines(results)
    width = max((len(line.label) for line in rendered), default=40) + 2
    cells = max([10, *(len(c) for line in rendered for c in (line.ours, line.theirs))]) + 2
    for source in ("suite", "floor", "replay"):
        group = [line for line in rendered if line.source == source]
        if not group:
            continue
        out.append(f"command: {commands[source]}")
        out.append(
            f"  {'figure':<{width}}{'tocsin':>{cells}}{'Alertmgr':>{cells}}{'ratio':>10}  target"
        )
        for line in group:
            loud = (NOT_MET, UNKNOWN, BELOW_FLOOR)
            verdict = line.verdict.upper() if line.verdict in loud else line.verdict
            target = f"{line.goal}: {verdict}" if line.goal else ""
            out.append(
                f"  {line.label + ' ' + line.better:<{width}}{line.ours:>{cells}}"
                f"{line.theirs:>{cells}}{line.ratio:>10}  {target}"
            )
        out.append("")
    out.append(_runs_note(results))
    missing, unjudged = missed(rendered), missed(rendered, UNKNOWN)
    floored = missed(rendered, BELOW_FLOOR)
    if missing:
        out.append(f"TARGETS NOT MET ({len(missing)}):")
        out.extend(f"  - {sentence}" for sentence in missing)
    if floored:
        out.append(f"{FLOOR_HEADING} ({len(floored)}):")
        out.extend(f"  - {sentence}" for sentence in floored)
    if not missing and not floored and any(line.verdict == MET for line in rendered):
        out.append("Every target judged in this run is met.")
    if unjudged:
        out.append(f"Targets not judged, a figure is missing ({len(unjudged)}):")
        out.extend(f"  - {sentence}" for sentence in unjudged)
    out.append("")
    return "\n".join(out)


def write_json(results: Result, directory: Path, stamp: str) -> tuple[Path, Path]:
    """``<stamp>.json`` with every run and every raw latency, and ``latest.json``
    without the latencies."""
    directory.mkdir(parents=True, exist_ok=True)
    full = directory / f"{stamp}.json"
    results = _rounded(results)
    full.write_text(json.dumps(results, indent=2) + "\n")
    lean = json.loads(json.dumps(results))
    for result in lean["targets"].values():
        for run in runs_of(result or {}):
            (run.get("W3") or {}).pop("latencies_ms", None)
    latest = directory / "latest.json"
    latest.write_text(json.dumps(lean, indent=2) + "\n")
    return full, latest


def _rounded(node: Any) -> Any:
    """Floats to 4 decimals: microseconds are noise here, and the files stay readable."""
    if isinstance(node, float):
        return round(node, 4)
    if isinstance(node, dict):
        return {key: _rounded(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_rounded(value) for value in node]
    return node


def python_of(machine: dict[str, Any]) -> str:
    """The interpreter as the table's and the console's first lines name it: the version
    and the build that ran (``machine()["interpreter"]``)."""
    return f"Python {machine['python']} ({machine['interpreter']})"


def machine() -> dict[str, Any]:
    """CPU model, cores, memory, Python and kernel of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory, 1),
        "python": platform.python_version(),
        # which build: a distribution's (PGO, LTO) or one built without them costs ~20%
        # more CPU an event (docs/performance.md, "The interpreter")
        "interpreter": os.path.realpath(sys.executable),
        "system": f"{platform.system()} {platform.release()} {platform.machine()}",
    }


COLORS = {"tocsin": "#c0392b", "alertmanager": "#2c3e50"}
NAMES = {"tocsin": "tocsin", "alertmanager": "Alertmanager"}


def plots(results: Result, docs: Path) -> list[Path]:
    """``bench-latency.png`` (W3: one CDF per run), ``bench-throughput.png`` (W1/W2) and
    ``bench-grouped.png`` (W5), the bars medians with the runs' range; none if
    matplotlib is missing (it is in the ``bench`` extra that ``make bench`` installs)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no plots")
        return []
    docs.mkdir(parents=True, exist_ok=True)
    written = []
    runs = results.get("runs", 1)
    subtitle = (
        f"{results['date']}, {results['machine']['cpu']}, {results['machine']['cores']} cores"
        + (f"; {runs} alternated runs" if runs > 1 else "")
    )
    whiskers = "; bars: median, whiskers: min-max" if runs > 1 else ""
    sides = [n for n in ("tocsin", "alertmanager") if n in results["targets"]]

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    drawn = False
    for name in sides:
        side_runs = runs_of(results["targets"][name] or {})
        p50 = figure([pick("W3", "p50_ms")(r) for r in side_runs])
        p99 = figure([pick("W3", "p99_ms")(r) for r in side_runs])
        labelled = False
        for run in side_runs:
            latencies = sorted((run.get("W3") or {}).get("latencies_ms") or [])
            if not latencies:
                continue
            n = len(latencies)
            label = None
            if not labelled and p50 is not None and p99 is not None:
                label = (
                    f"{NAMES.get(name, name)} ({len(p50.values)} runs): p50 {cell(p50, 'ms')} ms,"
                    f" p99 {cell(p99, 'ms')} ms"
                )
                labelled = True
            ax.step(
                latencies,
                [(i + 1) / n for i in range(n)],
                where="post",
                color=COLORS.get(name),
                alpha=0.75,
                linewidth=1.0,
                label=label,
            )
            drawn = True
    if drawn:
        loads = results["loads"]
        ax.set_xscale("log")
        ax.set_xlabel("publish → webhook receipt (ms, log scale)")
        ax.set_ylabel("fraction of notifications")
        ax.set_ylim(0, 1.01)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
        ax.set_title(
            f"W3: {loads['steady_rate']:.0f} distinct alerts/s for {loads['steady_seconds']:.0f} s"
            f", one line per run\n{subtitle}",
            fontsize=9,
        )
        fig.tight_layout()
        path = docs / "bench-latency.png"
        fig.savefig(path)
        written.append(path)
    plt.close(fig)

    loads = results["loads"]
    charts = [
        (
            "bench-throughput.png",
            [
                ("W1 events/s", _events_per_second("W1")),
                ("W1 notifications/s", pick("W1", "notifications_per_second")),
                ("W2 events/s", _events_per_second("W2")),
            ],
            "per second (log scale)",
            True,
            f"W1: {loads['storm_events']:,} distinct alerts; "
            f"W2: {loads['storm_events']:,} over {loads['duplicate_fingerprints']:,} fingerprints\n"
            "tocsin events/s = committed to its log; Alertmanager events/s = accepted by its API",
        ),
        (
            "bench-grouped.png",
            [
                ("all groups notified", pick("W5", "all_groups_notified_seconds")),
                ("every alert notified", pick("W5", "all_alerts_notified_seconds")),
            ],
            "seconds after the first publish",
            False,
            f"W5: {loads.get('group_events', 0):,} distinct alerts over "
            f"{loads.get('groups', 0):,} groups",
        ),
    ]
    for filename, groups, ylabel, log_scale, title in charts:
        chart = _bars(
            plt, results, sides, groups, ylabel, log_scale, f"{title}\n{subtitle}{whiskers}"
        )
        if chart is not None:
            path = docs / filename
            chart.savefig(path)
            plt.close(chart)
            written.append(path)
    return written


def _bars(
    plt: Any,
    results: Result,
    sides: Sequence[str],
    groups: Sequence[tuple[str, Callable[[Result], Any]]],
    ylabel: str,
    log_scale: bool,
    title: str,
) -> Any:
    """A figure of one bar per side and group at the median, whiskers at the runs'
    min and max; ``None`` (nothing drawn) when no run has any of these figures."""
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    width = 0.8 / max(len(sides), 1)
    drawn = False
    for t, name in enumerate(sides):
        side_runs = runs_of(results["targets"][name] or {})
        figures = [figure([value(r) for r in side_runs]) for _, value in groups]
        medians = [f.median if f else 0.0 for f in figures]
        spread = [
            [f.median - f.low if f else 0.0 for f in figures],
            [f.high - f.median if f else 0.0 for f in figures],
        ]
        xs = [g + (t - (len(sides) - 1) / 2) * width for g in range(len(groups))]
        bars = ax.bar(
            xs, medians, width, yerr=spread, capsize=4, color=COLORS.get(name),
            label=NAMES.get(name, name),
        )  # fmt: skip
        unit = "s" if not log_scale else "/s"
        ax.bar_label(bars, labels=[fmt(f.median, unit) if f else "—" for f in figures], fontsize=8)
        drawn = drawn or any(medians)
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xticks(range(len(groups)), [g for g, _ in groups])
    if log_scale:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
