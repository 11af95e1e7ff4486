"""Results -> the figures side by side, as text, Markdown, JSON and two plots.

One table of rows drives every output, so the console, ``latest.md`` and the README
can never disagree. A row names the command that produced it; the ratio is always
tocsin / Alertmanager, with the better direction stated (for times, below 1 is better).
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Result = dict[str, Any]


@dataclass(frozen=True)
class Row:
    label: str
    unit: str
    better: str  # "higher", "lower" or "exact"
    value: Callable[[Result], Any]  # from one target's results; None when absent
    goal: str = ""
    source: str = "suite"  # which command produced it: "suite" or "replay"
    unit_in_label: bool = False


def _get(*path: str) -> Callable[[Result], Any]:
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


ROWS = [
    Row("W1 events/s (tocsin: committed + routed; AM: accepted)", "events/s", "higher",
        _events_per_second("W1"), "≥ 25,000", unit_in_label=True),
    Row("W1 accepted by broker / API", "events/s", "higher", _get("W1", "accepted_per_second")),
    Row("W1 last publish → last notification", "s", "lower",
        _get("W1", "last_publish_to_last_notification_seconds")),
    Row("W1 all {events:,} notified after the first publish", "s", "lower",
        _get("W1", "all_notified_seconds")),
    Row("W1 notifications/s end to end", "/s", "higher", _get("W1", "notifications_per_second"),
        unit_in_label=True),
    Row("W1 CPU of the service, whole storm", "s", "lower", _get("W1", "cpu_seconds")),
    Row("W1 CPU of the service per event", "µs", "lower", _get("W1", "cpu_us_per_event")),
    Row("W2 events/s (tocsin: committed; AM: accepted)", "events/s", "higher",
        _events_per_second("W2"), "≥ 40,000", unit_in_label=True),
    Row("W2 notifications sent (must be {fingerprints:,})", "", "exact",
        _get("W2", "notifications"), "= {fingerprints:,}"),
    Row("W3 latency p50", "ms", "lower", _get("W3", "p50_ms"), "≤ 2"),
    Row("W3 latency p99", "ms", "lower", _get("W3", "p99_ms"), "≤ 5"),
    Row("W3 latency max", "ms", "lower", _get("W3", "max_ms")),
    Row("W3 notified (of {steady:,})", "", "exact", _get("W3", "notified")),
    Row("W5 events/s (tocsin: committed + grouped; AM: accepted)", "events/s", "higher",
        _events_per_second("W5"), unit_in_label=True),
    Row("W5 notifications sent", "", "lower", _get("W5", "notifications")),
    Row("W5 groups notified (of {groups:,})", "", "exact", _get("W5", "groups_notified"),
        "= {groups:,}"),
    Row("W5 alerts notified (of {group_events:,})", "", "exact", _get("W5", "alerts_covered"),
        "= {group_events:,}"),
    Row("W5 all {groups:,} groups notified after the first publish", "s", "lower",
        _get("W5", "all_groups_notified_seconds")),
    Row("W5 every alert notified after the first publish", "s", "lower",
        _get("W5", "all_alerts_notified_seconds")),
    Row("RSS after {storms}", "MiB", "lower", _get("resources", "rss_mib"), "≤ 150"),
    Row("CPU after {storms} (process total)", "s", "lower", _get("resources", "cpu_seconds")),
    Row("nats-server CPU after {storms}", "s", "lower", _get("resources", "broker_cpu_seconds")),
    Row("most simultaneous webhook connections", "", "lower", _get("max_connections"), "≤ 32"),
    Row("W4 fold (decode + fold)", "events/s", "higher", _get("fold_events_per_second"),
        source="replay"),
    Row("W4 start without a snapshot", "s", "lower", _get("start_without_snapshot_seconds"),
        source="replay"),
    Row("W4 start with a snapshot", "s", "lower", _get("start_with_snapshot_seconds"),
        source="replay"),
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


def ratio(ours: Any, theirs: Any) -> str:
    if not isinstance(ours, int | float) or not isinstance(theirs, int | float) or not theirs:
        return "—"
    return f"{ours / theirs:,.2f}x" if ours / theirs < 100 else f"{ours / theirs:,.0f}x"


@dataclass(frozen=True)
class Line:
    """One rendered row."""

    source: str
    label: str
    ours: str
    theirs: str
    ratio: str
    goal: str
    better: str


def lines(results: Result) -> list[Line]:
    """Every row with a value for at least one side, rendered."""
    tocsin = results["targets"].get("tocsin") or {}
    am = results["targets"].get("alertmanager") or {}
    replay = results.get("replay") or {}
    out = []
    sizes = _sizes(results)
    for row in ROWS:
        if row.source == "replay":
            ours, theirs = row.value(replay), None
        else:
            ours, theirs = row.value(tocsin), row.value(am)
        if ours is None and theirs is None:
            continue
        label = row.label.format(**sizes)
        if row.unit and not row.unit_in_label:
            label += f", {row.unit}"
        arrow = {"higher": "↑", "lower": "↓", "exact": "="}[row.better]
        out.append(
            Line(
                row.source,
                label,
                fmt(ours, row.unit),
                fmt(theirs, row.unit),
                ratio(ours, theirs) if row.better != "exact" else "—",
                row.goal.format(**sizes),
                arrow,
            )
        )
    return out


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
    return {"suite": results["command"], "replay": (results.get("replay") or {}).get("command", "")}


def markdown(results: Result) -> str:
    """The README's table: figures, the commands, the date and the machine."""
    m = results["machine"]
    head = [
        f"Measured {results['date']} on {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, "
        f"Python {m['python']}, {m['system']}; tocsin {m['tocsin']}, "
        f"Alertmanager {m['alertmanager']}, nats-server {m['nats_server']}."
        + (" **Profiled run** (py-spy attached to tocsin during W1)." if results["profiled"]
           else ""),
        "",
        "| figure | tocsin | Alertmanager | tocsin / AM | goal |",
        "|---|---:|---:|---:|---|",
    ]  # fmt: skip
    commands = _commands(results)
    body = []
    for line in lines(results):
        body.append(
            f"| {line.label} {line.better} | {line.ours} | {line.theirs} | {line.ratio} "
            f"| {line.goal} |"
        )
    notes = [
        "",
        "↑ higher is better, ↓ lower is better; the ratio is tocsin / Alertmanager.",
        f"W1-W3, W5 and resources: `{commands['suite']}`. W2 runs on the process W1 ran on; "
        f"W3 on a fresh one, after {results['loads']['warmup_seconds']:g} s at its rate "
        "that are not counted. W1's CPU is the service process's from the first publish "
        "until every outcome is recorded (tocsin serve: router, delivery and recorder).",
    ]
    grouping = results.get("grouping")
    if grouping and any("W5" in t for t in results["targets"].values()):
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
    for name, result in results["targets"].items():
        if result.get("error"):
            notes.append(f"{name}: {result['error']}")
        for workload in ("W1", "W2", "W3", "W5"):
            w = result.get(workload) or {}
            for problem in w.get("timeouts", []):
                notes.append(f"{name} {workload}: {problem}")
            if w.get("publisher_bound"):
                notes.append(
                    f"{name} {workload}: committed as fast as the bench published "
                    f"({w['accepted_per_second']:,.0f}/s): a lower bound, not the service's limit."
                )
    return "\n".join(head + body + notes) + "\n"


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
        ("committed events/s", _get("W1", "committed_per_second"), "events/s"),
        ("committed, s", _get("W1", "committed_seconds"), "s"),
        ("CPU of tocsin serve in W1, s", _get("W1", "cpu_seconds"), "s"),
        ("CPU per event in W1, µs", _get("W1", "cpu_us_per_event"), "µs"),
        ("accepted by the broker, events/s", _get("W1", "accepted_per_second"), "events/s"),
    ]
    ran_before, ran_after = (storms(r.get("workloads", ["w1", "w2"])) for r in (before, after))
    if ran_before == ran_after:
        rows.append((f"CPU after {ran_after} (process), s", _get("resources", "cpu_seconds"), "s"))
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
    rate_before = _positive(_get("W1", "committed_per_second")(old))
    rate_after = _positive(_get("W1", "committed_per_second")(new))
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
    """The console summary: the same rows, grouped by the command that produced them."""
    out = []
    commands = _commands(results)
    rendered = lines(results)
    width = max((len(line.label) for line in rendered), default=40) + 2
    for source in ("suite", "replay"):
        group = [line for line in rendered if line.source == source]
        if not group:
            continue
        out.append(f"command: {commands[source]}")
        out.append(f"  {'figure':<{width}}{'tocsin':>12}{'Alertmgr':>12}{'ratio':>10}  goal")
        for line in group:
            out.append(
                f"  {line.label + ' ' + line.better:<{width}}{line.ours:>12}{line.theirs:>12}"
                f"{line.ratio:>10}  {line.goal}"
            )
        out.append("")
    return "\n".join(out)


def write_json(results: Result, directory: Path, stamp: str) -> tuple[Path, Path]:
    """``<stamp>.json`` with every raw latency, and ``latest.json`` without them."""
    directory.mkdir(parents=True, exist_ok=True)
    full = directory / f"{stamp}.json"
    results = _rounded(results)
    full.write_text(json.dumps(results, indent=2) + "\n")
    lean = json.loads(json.dumps(results))
    for result in lean["targets"].values():
        (result.get("W3") or {}).pop("latencies_ms", None)
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
        "system": f"{platform.system()} {platform.release()} {platform.machine()}",
    }


def plots(results: Result, docs: Path) -> list[Path]:
    """``bench-latency.png`` (W3 CDF) and ``bench-throughput.png`` (W1/W2); none if
    matplotlib is missing (it is in the ``bench`` extra that ``make bench`` installs)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no plots")
        return []
    docs.mkdir(parents=True, exist_ok=True)
    colors = {"tocsin": "#c0392b", "alertmanager": "#2c3e50"}
    names = {"tocsin": "tocsin", "alertmanager": "Alertmanager"}
    written = []
    subtitle = (
        f"{results['date']}, {results['machine']['cpu']}, {results['machine']['cores']} cores"
    )

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    drawn = False
    for name, result in results["targets"].items():
        latencies = sorted((result.get("W3") or {}).get("latencies_ms") or [])
        if not latencies:
            continue
        n = len(latencies)
        w3 = result["W3"]
        ax.step(
            latencies,
            [(i + 1) / n for i in range(n)],
            where="post",
            color=colors.get(name),
            label=f"{names.get(name, name)}: p50 {w3['p50_ms']:.2f} ms, p99 {w3['p99_ms']:.2f} ms,"
            f" max {w3['max_ms']:.1f} ms",
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
            f"\n{subtitle}",
            fontsize=10,
        )
        fig.tight_layout()
        path = docs / "bench-latency.png"
        fig.savefig(path)
        written.append(path)
    plt.close(fig)

    groups = [
        ("W1 events/s", _events_per_second("W1")),
        ("W1 notifications/s", _get("W1", "notifications_per_second")),
        ("W2 events/s", _events_per_second("W2")),
    ]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    targets = [n for n in ("tocsin", "alertmanager") if n in results["targets"]]
    width = 0.8 / max(len(targets), 1)
    drawn = False
    for t, name in enumerate(targets):
        values = [value(results["targets"][name]) or 0 for _, value in groups]
        xs = [g + (t - (len(targets) - 1) / 2) * width for g in range(len(groups))]
        bars = ax.bar(xs, values, width, color=colors.get(name), label=names.get(name, name))
        ax.bar_label(bars, labels=[f"{v:,.0f}" if v else "—" for v in values], fontsize=8)
        drawn = drawn or any(values)
    if drawn:
        ax.set_xticks(range(len(groups)), [g for g, _ in groups])
        ax.set_yscale("log")
        ax.set_ylabel("per second (log scale)")
        ax.legend(fontsize=8)
        loads = results["loads"]
        ax.set_title(
            f"W1: {loads['storm_events']:,} distinct alerts; "
            f"W2: {loads['storm_events']:,} over {loads['duplicate_fingerprints']:,} fingerprints\n"
            "tocsin events/s = committed to its log; Alertmanager events/s = accepted by its API"
            f"\n{subtitle}",
            fontsize=9,
        )
        fig.tight_layout()
        path = docs / "bench-throughput.png"
        fig.savefig(path)
        written.append(path)
    plt.close(fig)
    return written
