"""``make bench``'s pure parts (``bench/suite.py``, ``bench/report.py``): the order the
runs take, medians and ranges over runs, the ratio of medians, and issue #20's targets
met or not. Synthetic results, no service and no clock: these decide what the table
says, so a wrong median or a flipped comparison would misreport every figure."""

from __future__ import annotations

import itertools
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from bench import report, scale, suite, w1_timeline
from bench.log_scale import first_touch, start_in_a_process_of_its_own
from bench.suite import RUNS, parse_args, phases, run_replays, run_sides, schedule
from bench.targets import Grouping, Target
from bench.workloads import Loads, wait_for_one_bucket

from tests.support import T0, add_firing
from tocsin.store.eventlog import db_path
from tocsin.store.ledger import Ledger

LOADS = {
    "storm_events": 20_000,
    "duplicate_fingerprints": 1_000,
    "steady_rate": 200.0,
    "steady_seconds": 20.0,
    "warmup_seconds": 1.0,
    "group_events": 20_000,
    "groups": 50,
}
MACHINE = {
    "cpu": "test cpu",
    "cores": 2,
    "memory_gib": 4.0,
    "python": "3.11",
    "interpreter": "/usr/bin/python3.11",
    "system": "Linux",
    "tocsin": "0.1.0",
    "alertmanager": "0.25.0",
    "nats_server": "v2",
}


def run(
    w1_rate: float, p50: float, p99: float, rss: float, notifications: int = 1_000
) -> dict[str, Any]:
    """One run of one side, the figures the targets read."""
    return {
        "has_log": True,
        "W1": {"notifications_per_second": w1_rate, "committed_per_second": w1_rate * 2},
        "W2": {"notifications": notifications, "committed_per_second": 10_000.0},
        "W3": {"p50_ms": p50, "p99_ms": p99, "latencies_ms": [p50, p99]},
        "resources": {"rss_mib": rss},
    }


def results(tocsin: list[dict[str, Any]], am: list[dict[str, Any]]) -> dict[str, Any]:
    """A results file as ``python -m bench`` writes it: every run, beside the medians."""
    for r in am:
        r["has_log"] = False
        r["W2"]["accepted_per_second"] = 20_000.0
    return {
        "date": "2026-12-05 02:00 UTC",
        "command": "python -m bench",
        "machine": MACHINE,
        "loads": LOADS,
        "workloads": ["w1", "w2", "w3"],
        "profiled": False,
        "runs": len(tocsin),
        "targets": {
            "tocsin": {**report.median_tree(tocsin), "runs": tocsin},
            "alertmanager": {**report.median_tree(am), "runs": am},
        },
    }


def line(rendered: list[report.Line], label: str) -> report.Line:
    [found] = [entry for entry in rendered if entry.label.startswith(label)]
    return found


def test_runs_alternate_the_sides_within_each_workload() -> None:
    """Catches one side's runs bunched together (all of tocsin's, then all of
    Alertmanager's), where one noisy minute would decide one side's figures alone."""
    assert schedule(["storms", "steady"], 3, ["tocsin", "alertmanager"]) == [
        ("storms", 1, "tocsin"),
        ("storms", 1, "alertmanager"),
        ("storms", 2, "tocsin"),
        ("storms", 2, "alertmanager"),
        ("storms", 3, "tocsin"),
        ("storms", 3, "alertmanager"),
        ("steady", 1, "tocsin"),
        ("steady", 1, "alertmanager"),
        ("steady", 2, "tocsin"),
        ("steady", 2, "alertmanager"),
        ("steady", 3, "tocsin"),
        ("steady", 3, "alertmanager"),
    ]


def test_one_run_is_one_session_of_each_side() -> None:
    """Catches ``--runs 1`` running anything twice: it is the bench as it was."""
    assert schedule(["storms"], 1, ["tocsin", "alertmanager"]) == [
        ("storms", 1, "tocsin"),
        ("storms", 1, "alertmanager"),
    ]
    assert schedule(["grouped"], 2, ["tocsin"]) == [
        ("grouped", 1, "tocsin"),
        ("grouped", 2, "tocsin"),
    ]


def test_the_workloads_choose_the_sessions() -> None:
    """Catches W1 and W2 split onto two processes (W2 runs in W1's wake, and RSS is
    read after both) or W4 treated as a session of the service."""
    assert phases({"w1", "w2", "w3", "w4", "w5"}) == ["storms", "steady", "grouped"]
    assert phases({"w2", "w1"}) == ["storms"]
    assert phases({"w5", "w3"}) == ["steady", "grouped"]
    assert phases({"w4"}) == []


def test_three_runs_by_default_and_never_none() -> None:
    """Catches the default drifting from issue #20's three runs, and ``--runs 0``
    producing a table of no runs instead of an error."""
    assert RUNS == 3
    assert parse_args([]).runs == 3
    assert parse_args(["--runs", "1"]).runs == 1
    for wrong in ("0", "-2", "three"):
        with pytest.raises(SystemExit):
            parse_args(["--runs", wrong])


def test_a_figure_is_the_median_and_range_of_the_runs_that_have_it() -> None:
    """Catches a mean instead of a median (one noisy run would move it), an even
    count's median taken from one side, and a timed-out run (None) or a flag counted
    as a figure."""
    f = report.figure([10.0, 1000.0, 12.0])
    assert f is not None
    assert (f.median, f.low, f.high, f.runs) == (12.0, 10.0, 1000.0, 3)
    even = report.figure([4, 1, 3, 2])
    assert even is not None
    assert even.median == 2.5
    partial = report.figure([5.0, None, 7.0])
    assert partial is not None
    assert (partial.values, partial.runs, partial.median) == ((5.0, 7.0), 3, 6.0)
    assert report.figure([None, None]) is None
    assert report.figure([True, False]) is None


def test_a_cell_shows_the_median_the_range_and_missing_runs() -> None:
    """Catches the range dropped from the table, a range shown when every run agreed,
    and a run without the figure hidden inside the median."""
    assert report.cell(report.figure([3.0, 1.0, 2.0]), "s") == "2.00 (1.00-3.00)"
    assert report.cell(report.figure([1_000, 1_000, 1_000]), "") == "1,000"
    assert report.cell(report.figure([4.0, None, 6.0]), "s") == "5.00 (4.00-6.00) [2 of 3 runs]"
    assert report.cell(None, "s") == "—"


def test_the_ratio_is_of_the_medians() -> None:
    """Catches the ratio taken from one run (or the median of per-run ratios): here
    they differ, and only the medians' ratio is 2.0."""
    ours = report.figure([2.0, 4.0, 100.0])
    theirs = report.figure([1.0, 2.0, 3.0])
    assert report.ratio_of(ours, theirs) == 2.0
    assert report.ratio_of(ours, None) is None
    assert report.ratio_of(ours, report.figure([0.0])) is None


@pytest.mark.parametrize(
    ("goal", "ours", "theirs", "verdict"),
    [
        (report.Versus("≥", 1.0), [5_000.0], [5_000.0], report.MET),  # equal meets ≥
        (report.Versus("≥", 1.0), [4_999.0], [5_000.0], report.NOT_MET),
        (report.Versus("≥", 0.5), [2_500.0], [5_000.0], report.MET),
        (report.Versus("≤", 1.5), [1.5], [1.0], report.MET),  # equal meets ≤
        (report.Versus("≤", 1.5), [1.6], [1.0], report.NOT_MET),
        (report.Versus("≤", 0.3), [150.0], [500.0], report.MET),
        (report.Versus("≤", 0.3), [151.0], [500.0], report.NOT_MET),
        (report.Versus("≥", 1.0), [5_000.0], None, report.UNKNOWN),  # no AM: cannot tell
        (report.Below(1.0, "s"), [0.99], None, report.MET),
        (report.Below(1.0, "s"), [1.0], None, report.NOT_MET),  # "< 1 s" is strict
        (report.Below(1.0, "s"), None, None, report.UNKNOWN),
    ],
)
def test_targets_compare_medians_in_the_stated_direction(
    goal: report.Goal, ours: list[float] | None, theirs: list[float] | None, verdict: str
) -> None:
    """Catches a flipped comparison (≥ read as ≤), a bound applied to the wrong side,
    a strict bound made loose, and a missing Alertmanager figure reported as met."""
    sizes: dict[str, Any] = {}
    ours_f = report.figure(ours) if ours else None
    theirs_f = report.figure(theirs) if theirs else None
    assert goal.verdict(ours_f, theirs_f, sizes) == verdict


def test_an_exact_count_must_hold_in_every_run() -> None:
    """Catches a count checked on the median only: one run with a notification too
    many is a miss even when the median is right."""
    goal = report.Exactly("fingerprints")
    sizes = {"fingerprints": 1_000}
    right = report.figure([1_000, 1_000, 1_000])
    assert goal.verdict(right, right, sizes) == report.MET
    assert goal.verdict(report.figure([1_000, 1_001, 1_000]), right, sizes) == report.NOT_MET
    assert goal.verdict(report.figure([1_000, None, 1_000]), right, sizes) == report.NOT_MET
    assert goal.text(sizes) == "= 1,000 every run"


def test_medians_keep_the_shape_of_one_run() -> None:
    """Catches a medians result that readers of one run (``--baseline``, the README)
    cannot read: nested figures become medians, flags hold only if true in every run,
    texts are the first run's, and raw lists stay in the runs."""
    folded = report.median_tree(
        [
            {"W1": {"rate": 1.0, "exact": True, "timeouts": []}, "command": "a"},
            {"W1": {"rate": 9.0, "exact": False, "timeouts": ["x"]}, "command": "b"},
            {"W1": {"rate": 2.0, "exact": True, "timeouts": []}, "command": "c"},
        ]
    )
    assert folded == {"W1": {"rate": 2.0, "exact": False}, "command": "a"}


def test_the_table_reads_every_run_and_says_which_targets_are_met() -> None:
    """Catches the table built from one run (or from the stored medians only: the
    range would vanish) and a verdict that does not follow the medians. tocsin's W1
    median 5,000/s against Alertmanager's 4,000 meets ≥ 1.0x; its p99 median 3 ms
    against 2 ms misses ≤ 1.0x; RSS 100 against 500 MiB meets ≤ 0.3x."""
    tocsin = [run(5_000, 1.0, 3.0, 100.0), run(100, 1.2, 2.5, 90.0), run(6_000, 0.9, 4.0, 110.0)]
    am = [run(4_000, 1.0, 2.0, 500.0), run(4_500, 1.0, 2.0, 520.0), run(3_000, 1.0, 1.0, 480.0)]
    rendered = report.lines(results(tocsin, am))
    w1 = line(rendered, "W1 notifications/s")
    assert (w1.ours, w1.theirs, w1.ratio) == ("5,000 (100-6,000)", "4,000 (3,000-4,500)", "1.25x")
    assert (w1.goal, w1.verdict) == ("≥ 1.0x AM", report.MET)
    p99 = line(rendered, "W3 latency p99")
    assert (p99.ratio, p99.goal, p99.verdict) == ("1.50x", "≤ 1.0x AM", report.NOT_MET)
    p50 = line(rendered, "W3 latency p50")
    assert (p50.ratio, p50.verdict) == ("1.00x", report.MET)
    rss = line(rendered, "RSS after W1+W2")
    assert (rss.ratio, rss.verdict) == ("0.20x", report.MET)
    sent = line(rendered, "W2 notifications sent")
    assert (sent.goal, sent.verdict) == ("= 1,000 every run", report.MET)
    assert not any("25,000" in entry.goal for entry in rendered)  # the old absolute goals


def test_a_missed_target_is_printed_plainly() -> None:
    """Catches a miss visible only as a table cell: the console and latest.md end with
    the targets not met, in words."""
    tocsin = [run(1_000, 5.0, 20.0, 100.0)] * 3
    am = [run(5_000, 1.0, 5.0, 500.0)] * 3
    rendered = results(tocsin, am)
    console = report.text(rendered)
    assert "TARGETS NOT MET (3):" in console
    assert "target ≥ 1.0x AM: NOT MET" in console
    table = report.markdown(rendered)
    assert "**Targets not met:**" in table
    assert "| ≥ 1.0x AM | **not met** |" in table
    assert "median of 3 runs" in table


def test_the_table_names_the_interpreter_that_ran() -> None:
    """Catches figures that do not say which CPython build produced them: a build
    without PGO and LTO costs tocsin ~20% more CPU an event than a distribution's, so
    the version alone does not identify the runtime (docs/performance.md)."""
    rendered = results([run(1_000, 1.0, 1.0, 100.0)], [run(1_000, 1.0, 1.0, 100.0)])
    assert "Python 3.11 (/usr/bin/python3.11)" in report.markdown(rendered)
    assert report.machine()["interpreter"] == os.path.realpath(sys.executable)


def test_met_targets_say_so() -> None:
    """Catches a run that meets every target still printing a miss."""
    tocsin = [run(5_000, 1.0, 1.0, 100.0, notifications=1_000)]
    am = [run(4_000, 1.0, 2.0, 500.0)]
    rendered = results(tocsin, am)
    assert "Every target judged in this run is met." in report.text(rendered)
    assert "Targets not met" not in report.markdown(rendered)
    assert "One run (--runs 1)" in report.markdown(rendered)


def test_baseline_reads_the_medians_of_a_run_of_several(tmp_path: Path) -> None:
    """Catches ``--baseline`` broken by the runs: it reads W1's committed rate where a
    single run's result has it, which the medians keep."""
    before = results([run(1_000, 1, 1, 1), run(3_000, 1, 1, 1), run(2_000, 1, 1, 1)], [])
    after = results([run(2_000, 1, 1, 1), run(2_500, 1, 1, 1), run(2_200, 1, 1, 1)], [])
    text = report.w1_before_after(before, after, "old.json")
    assert "committed events/s" in text
    assert "4,000" in text  # the before median: 2 x 2,000
    assert "4,400" in text  # the after median: 2 x 2,200
    assert "+10.0%" in text


def test_the_files_keep_every_run(tmp_path: Path) -> None:
    """Catches the runs lost from the JSON (only medians written) and latest.json
    keeping the raw latencies the timestamped file is for."""
    rendered = results([run(1, 1, 2, 1), run(2, 3, 4, 1)], [run(1, 1, 1, 1), run(1, 1, 1, 1)])
    full, latest = report.write_json(rendered, tmp_path, "stamp")
    stored = json.loads(full.read_text())
    assert [r["W3"]["latencies_ms"] for r in stored["targets"]["tocsin"]["runs"]] == [
        [1, 2],
        [3, 4],
    ]
    assert stored["targets"]["tocsin"]["W3"]["p50_ms"] == 2.0
    lean = json.loads(latest.read_text())
    assert len(lean["targets"]["tocsin"]["runs"]) == 2
    assert all("latencies_ms" not in r["W3"] for r in lean["targets"]["tocsin"]["runs"])


async def test_no_session_starts_after_the_budget(tmp_path: Path) -> None:
    """Catches the time bound ignored: with the budget spent, no service is started
    (the maker would fail the test) and every run says what it skipped."""

    def never(directory: Path, grouping: Grouping | None) -> Target:
        raise AssertionError(f"a session started after the budget: {directory}")

    late = time.monotonic() - 1
    loads = Loads()
    sides = await run_sides(
        {"tocsin": never, "alertmanager": never}, loads, "t", None, {"w1", "w3"}, 2, tmp_path,
        False, late,
    )  # fmt: skip
    assert [r["skipped"] for r in sides["tocsin"]["runs"]] == [["storms", "steady"]] * 2
    assert [r["skipped"] for r in sides["alertmanager"]["runs"]] == [["storms", "steady"]] * 2
    replay = await run_replays(1_000, 3, late)
    assert replay["runs"] == [{"skipped": ["replay"]}] * 3


def test_a_target_without_alertmanager_is_not_judged_rather_than_missed() -> None:
    """Catches ``--no-alertmanager`` reported as targets missed (or met): a ratio
    target without Alertmanager's figure is named as not judged."""
    rendered = results([run(5_000, 1.0, 1.0, 100.0)], [])
    console = report.text(rendered)
    assert "TARGETS NOT MET" not in console
    assert "Every target judged in this run is met." in console  # W2's count, tocsin's own
    assert "Targets not judged, a figure is missing (5):" in console
    assert "target ≥ 1.0x AM: NO FIGURE" in console
    assert "**Targets not met:**" not in report.markdown(rendered)


def test_skipped_runs_show_in_the_table() -> None:
    """Catches a run left out by the time budget passing for a full set: the cell
    names how many runs made the figure, and a note names the skipped sessions."""
    tocsin = [run(5_000, 1.0, 1.0, 100.0), run(4_000, 1.0, 1.0, 100.0), {"skipped": ["storms"]}]
    am = [run(4_000, 1.0, 2.0, 500.0)] * 3
    rendered = results(tocsin, am)
    w1 = line(report.lines(rendered), "W1 notifications/s")
    assert w1.ours == "4,500 (4,000-5,000) [2 of 3 runs]"
    assert "tocsin run 3: storms skipped, over the time budget" in report.markdown(rendered)


def scale_run(router: float, end_to_end: float, **more: Any) -> dict[str, Any]:
    """One run of one partition count, the figures the scaling table reads."""
    return {
        "router_stage": {"per_second": router, "seconds": 20_000 / router},
        "W1": {"notifications_per_second": end_to_end, "timeouts": []},
        "cpu": {"routers": 2.0, "deliver": 3.0},
        **more,
    }


def scaling(sides: dict[int, list[dict[str, Any]]]) -> dict[str, Any]:
    """A results file of ``--workloads scale`` alone, as ``python -m bench`` writes it."""
    return {
        **results([], []),
        "command": "python -m bench --workloads scale --runs 3",
        "workloads": ["scale"],
        "runs": max(len(runs) for runs in sides.values()),
        "targets": {},
        "scaling": {
            "partitions": list(sides),
            "sides": {
                str(n): {**report.median_tree(runs), "runs": runs} for n, runs in sides.items()
            },
        },
    }


def test_scale_is_a_workload_of_its_own_with_partition_counts() -> None:
    """Catches ``--workloads scale`` refused (it could not be run alone), the scaling
    figure missing from the default ``make bench``, and partition counts taken as
    given: unsorted, repeated, or below one (a baseline of zero partitions)."""
    assert parse_args([]).workloads == {"w1", "w2", "w3", "w4", "w5", "scale"}
    assert parse_args(["--workloads", "scale"]).workloads == {"scale"}
    assert parse_args([]).partitions == (1, 2)
    assert parse_args([]).partitioners == 1
    assert parse_args(["--partitioners", "2"]).partitioners == 2
    assert parse_args(["--partitions", "4,1,2,2"]).partitions == (1, 2, 4)
    for wrong in ("0,2", "one", "", ","):
        with pytest.raises(SystemExit):
            parse_args(["--partitions", wrong])


def test_the_router_stage_is_every_log_from_the_first_commit_to_the_last() -> None:
    """Catches the stage's rate taken from one log (half the events with two
    partitions), its time from each log's own first commit (two partitions side by
    side would count as one after the other), and the first commit's batch counted
    although it was routed before the clock started (10% too fast on 10,000 events)."""
    stage = scale.router_stage(
        [
            scale.Span(events=10_000, first_us=1_000_000, last_us=3_000_000, first_commit=1_000),
            scale.Span(events=10_000, first_us=1_500_000, last_us=5_000_000, first_commit=500),
        ]
    )
    assert stage["events"] == 20_000
    assert stage["seconds"] == 4.0
    assert stage["per_second"] == (20_000 - 1_000) / 4.0
    assert [p["per_second"] for p in stage["partitions"]] == [9_000 / 2.0, 9_500 / 3.5]
    assert stage["partitioner_bound"] is False
    assert stage["forwarded_per_second"] is None  # no partitioner's times given
    assert scale.router_stage([scale.Span(0, 0, 0, 0)])["per_second"] is None


def test_a_router_stage_fed_no_faster_than_it_commits_is_a_lower_bound() -> None:
    """Catches the partitioner's rate reported as the routers' own: when the last
    commit follows the last forward within a tenth of the stage, the routers were
    waiting for the partitioner, and the report must say so."""
    spans = [scale.Span(10_000, 0, 4_000_000, 1)]
    assert scale.router_stage(spans, last_forward_us=3_700_000)["partitioner_bound"] is True
    lagging = scale.router_stage(spans, last_forward_us=2_000_000, first_publish_us=-500_000)
    assert lagging["partitioner_bound"] is False
    assert lagging["last_forward_to_last_commit_seconds"] == 2.0
    assert lagging["forwarded_per_second"] == 10_000 / 2.5  # every event, publish to forward
    bound = scaling({1: [scale_run(5_000, 2_000)], 2: [scale_run(9_000, 3_000)]})
    bound["scaling"]["sides"]["2"]["runs"][0]["router_stage"].update(
        partitioner_bound=True, last_forward_to_last_commit_seconds=0.05
    )
    assert "2 partitions, run 1: the routers committed as fast as `tocsin partition`" in (
        scale.markdown(bound)
    )


def test_the_scaling_table_shows_each_count_and_the_ratio_of_the_medians() -> None:
    """Catches the 2/1 ratio taken from one run (or the mean of ratios) instead of
    the medians, a count's runs mixed with the other's, and the command missing."""
    rendered = scaling(
        {
            1: [scale_run(5_000, 2_000), scale_run(4_000, 1_000), scale_run(6_000, 3_000)],
            2: [scale_run(9_000, 3_000), scale_run(8_000, 2_500), scale_run(20_000, 1_000)],
        }
    )
    [router] = [
        x for x in scale.lines(rendered) if x.label.startswith("pipeline: events committed/s")
    ]
    assert router.cells == ["5,000 (4,000-6,000)", "9,000 (8,000-20,000)"]
    assert router.ratios == ["1.80x"]
    [end] = [x for x in scale.lines(rendered) if x.label.startswith("pipeline, end to end")]
    assert end.ratios == ["1.25x"]
    assert scale.headline(rendered) == (
        "Scaling (ratio of the medians): router stage beside delivery 2/1: 1.80x; "
        "end to end 2/1: 1.25x."
    )
    rendered["scaling"]["sides"]["1"]["runs"][0]["alone"] = {"router_stage": {"per_second": 4e3}}
    rendered["scaling"]["sides"]["2"]["runs"][0]["alone"] = {"router_stage": {"per_second": 7e3}}
    assert scale.headline(rendered).startswith(
        "Scaling (ratio of the medians): routers alone 2/1: 1.75x; router stage beside"
    )
    table = scale.markdown(rendered)
    assert "| figure | 1 partition | 2 partitions | 2 / 1 |" in table
    assert "Command: `python -m bench --workloads scale --runs 3`." in table
    assert "median of 3 runs" in table


def test_a_core_per_router_is_the_partitions_over_the_routers_cpu_per_event() -> None:
    """Catches the estimate of a machine per partition taken from the shared machine's
    rate (what other work on it moves most) or left at one router's capacity whatever
    the partition count."""
    one = {"partitions": 1, "alone": {"cpu_us_per_event": {"routers": 100.0}}}
    two = {"partitions": 2, "alone": {"cpu_us_per_event": {"routers": 125.0}}}
    assert scale.core_per_router(one) == 10_000
    assert scale.core_per_router(two) == 16_000
    assert scale.core_per_router({"partitions": 2}) is None


def test_scale_alone_writes_no_empty_services_table() -> None:
    """Catches ``--workloads scale`` writing the services' table with no row (a
    header of tocsin and Alertmanager over nothing) into latest.md, and a failed
    partition count leaving the bench's exit code 0."""
    rendered = scaling({1: [scale_run(5_000, 2_000)], 2: [scale_run(9_000, 3_000)]})
    table = suite.markdown(rendered)
    assert "Alertmanager" not in table
    assert table.startswith("**Partitions: scaling.**")
    assert "Scaling (ratio of the medians)" in suite.text(rendered)
    assert not suite.failed(rendered)
    rendered["scaling"]["sides"]["2"]["error"] = "run 1: tocsin router p1 exited"
    assert suite.failed(rendered)


async def test_no_scaling_session_starts_after_the_budget(tmp_path: Path) -> None:
    """Catches the time bound ignored by the scaling runs: with the budget spent, no
    process is started (no session directory is made) and every run says so."""
    late = time.monotonic() - 1
    out = await suite.run_scaling((1, 2), 1, Loads(), "t", 2, tmp_path, False, late)
    assert os.listdir(tmp_path) == []
    assert out["partitions"] == [1, 2]
    for side in ("1", "2"):
        assert [r["skipped"] for r in out["sides"][side]["runs"]] == [["pipeline", "routers"]] * 2
    assert "1 partition, run 2: skipped, over the time budget" in scale.problems({"scaling": out})


def test_a_latency_target_below_the_floor_of_parts_not_owned_says_so() -> None:
    """W3's p50 target (≤ 1.5x Alertmanager's 0.8 ms = 1.2 ms) against a durable path of
    1.6 ms measured in the same run (two JetStream hops, SQLite's commit and the POST in
    a row): not met, and said to be below the floor, listed apart from the misses
    tocsin's own code must close. The p99 target (≤ 4 ms) above its floor (2 ms) stays a
    plain miss, and a floor that the target clears excuses nothing; nor does the bare
    chain (an fsync for the commit) when it is the only one a run has. Catches a floor
    that hides a miss tocsin could close, and a miss no code could close reported as
    tocsin's."""
    tocsin = [run(1_000, 2.5, 9.0, 100.0)] * 3
    am = [run(5_000, 0.8, 4.0, 500.0)] * 3
    measured = results(tocsin, am)
    floors = [
        {"p50_ms": 1.0, "p99_ms": 1.5, "durable": {"p50_ms": 1.6, "p99_ms": 2.0}},
        {"p50_ms": 0.9, "p99_ms": 1.6, "durable": {"p50_ms": 1.5, "p99_ms": 2.1}},
        {"p50_ms": 1.1, "durable": {"p50_ms": 1.7}},
    ]
    measured["floor"] = {**report.median_tree(floors), "runs": floors}
    rendered = report.lines(measured)
    assert line(rendered, "W3 latency p50").verdict == report.BELOW_FLOOR
    assert line(rendered, "W3 latency p99").verdict == report.NOT_MET
    floor = line(rendered, "W3 floor p50")
    assert (floor.source, floor.ours, floor.theirs) == ("floor", "1.00 (0.90-1.10)", "—")
    durable = line(rendered, "W3 durable path p50")
    assert (durable.source, durable.ours, durable.theirs) == ("floor", "1.60 (1.50-1.70)", "—")
    console = report.text(measured)
    assert "TARGETS NOT MET (2):" in console  # W1 and W3 p99
    assert "floor of parts tocsin does not own" in console
    assert "W3 latency p50" in console.split("floor of parts tocsin does not own")[1]
    table = report.markdown(measured)
    assert "| ≤ 1.5x AM | **not met, below the floor** |" in table
    bare = [{"p50_ms": 1.6, "p99_ms": 2.0}]
    measured["floor"] = {**report.median_tree(bare), "runs": bare}
    assert line(report.lines(measured), "W3 latency p50").verdict == report.NOT_MET
    cleared = [{"p50_ms": 1.0, "durable": {"p50_ms": 1.1}}]
    measured["floor"] = {**report.median_tree(cleared), "runs": cleared}
    assert line(report.lines(measured), "W3 latency p50").verdict == report.NOT_MET


def test_the_w4_floor_first_touches_as_many_pages_as_asked() -> None:
    """W4's floor (the kernel's part of a start, timed alone) faults in each of the
    pages it is given once: catches a floor that touches none (the loop's time alone,
    a floor that flatters) or a page a huge page would hide."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    seconds = first_touch(3_000)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert seconds > 0
    assert 3_000 <= faults < 3_000 + 300


async def test_w4_s_start_in_a_process_of_its_own_loads_the_log_from_its_snapshot(
    tmp_path: Path,
) -> None:
    """The start timed as ``tocsin serve`` starts (a new process, ``load_state_fast``)
    uses the snapshot and reports its own time and page faults: catches a figure taken
    from a process that folded the whole log instead (no snapshot: refused), and one
    that times nothing."""
    path = db_path(tmp_path)
    with pytest.raises(RuntimeError, match="no snapshot used"):
        start_in_a_process_of_its_own(path)  # no log at all: nothing to start from
    ledger = await Ledger.open(path, snapshot_every=0)
    ids = itertools.count()
    for n in range(20):
        async with ledger.batch() as batch:
            add_firing(
                batch, ledger.state, n, hosts=5, timestamp=T0 + n, new_id=lambda: f"id{next(ids)}"
            )
    await ledger.snapshot()
    await ledger.close()
    seconds, faults = start_in_a_process_of_its_own(path)
    assert 0 < seconds < 60
    assert faults > 0


def test_the_w1_timeline_counts_each_part_at_each_step_and_says_which_ended_last() -> None:
    """The table of ``bench/w1_timeline.py``: each part's count at every step until the
    last one, when each had its last, and how many were notified when routing ended:
    catches counts off by a step (an instant counts what fell on it) and a summary that
    names the wrong part last."""
    timeline = w1_timeline.Timeline(
        routed=[0.1, 0.2, 0.5],
        notified=[0.3, 0.5, 0.9],
        recorded=[0.4, 0.6, 1.0],
    )
    assert w1_timeline.lines(timeline, 0.5) == [
        "     s     routed   notified   recorded",
        "  0.50          3          2          1",
        "  1.00          3          3          3",
        "last routed: 0.500 s (3)",
        "last notified: 0.900 s (3)",
        "last recorded: 1.000 s (3)",
        "when the last alert was routed, 2 of 3 had been notified",
    ]


async def test_the_w1_timeline_of_a_small_storm_has_every_alert_routed_then_notified_then_recorded(
    tmp_path: Path,
) -> None:
    """A real ``tocsin serve`` and broker, 200 alerts: every one is in each of the three
    lists, and each part ends after the one before it (a notification is received after
    its alert was routed, and recorded after it was received): catches times read from
    the wrong rows or shifted between the clocks."""
    timeline = await w1_timeline.run(200, 60, tmp_path)
    assert [len(timeline.routed), len(timeline.notified), len(timeline.recorded)] == [200] * 3
    assert 0 < timeline.routed[0] <= timeline.routed[-1] < timeline.notified[-1]
    assert timeline.notified[-1] <= timeline.recorded[-1] < 60


async def test_the_w3_floor_is_the_four_parts_timed_in_a_row() -> None:
    """W3's floor is every part tocsin does not own, the webhook POST over loopback to
    the bench's receiver among them (Alertmanager pays it too), timed alone for the
    breakdown and then in a row, one alert at a time: the floor's median and 99th
    percentile are the chain's, not a sum or a maximum of the parts'. The durable path
    commits a new alert's three facts for each of its alerts, and takes at least its
    commit alone. Catches a floor that leaves the POST out (three parts), one that times
    it with no receipt, one whose p99 is again the largest part's (a bound far below
    what an alert takes), and a durable path that commits nothing."""
    from bench import floors

    n = 20
    floor = await floors.w3_floor(n=n)
    parts = floor["parts"]
    post = parts["webhook POST over loopback (write -> receipt)"]
    assert len(parts) == 4
    assert 0 < post["p50_ms"] <= post["p99_ms"] < 1000
    assert floor["parts_p50_sum_ms"] == sum(part["p50_ms"] for part in parts.values())
    assert floor["parts_p99_max_ms"] == max(part["p99_ms"] for part in parts.values())
    slowest_part = max(part["p50_ms"] for part in parts.values())
    assert slowest_part < floor["p50_ms"] <= floor["p99_ms"] < 1000
    durable = floor["durable"]
    assert durable["rows"] == 3 * (n + n)  # the commit alone, then the path in a row
    assert 0 < durable["commit_p50_ms"] <= durable["commit_p99_ms"] < 1000
    assert durable["commit_p50_ms"] < durable["p50_ms"] <= durable["p99_ms"] < 1000


def test_the_floor_figures_are_the_chains() -> None:
    """``summary`` takes the floor's p50 and p99 from the chain's samples and keeps the
    parts' sum and maximum beside them, whatever the parts say; the durable path's from
    its own chain's, its commit's from the commit's."""
    from bench.ceiling_latency import Samples
    from bench.floors import summary

    def samples(name: str, ms: list[float]) -> Samples:
        part = Samples(name)
        part.ms = ms
        return part

    hop = samples("hop", [0.2] * 99 + [0.5])
    sync = samples("fsync", [0.3] * 99 + [0.6])
    chain = samples("chain", [0.6] * 98 + [1.4, 1.9])
    out = summary([hop, sync], chain)
    assert "durable" not in out
    assert (out["p50_ms"], out["p99_ms"]) == (0.6, 1.9)
    assert (out["parts_p50_sum_ms"], out["parts_p99_max_ms"]) == (0.5, 0.6)
    assert out["parts"] == {
        "hop": {"p50_ms": 0.2, "p99_ms": 0.5},
        "fsync": {"p50_ms": 0.3, "p99_ms": 0.6},
    }
    commit = samples("commit", [0.35] * 99 + [0.9])
    path = samples("durable", [0.7] * 98 + [1.6, 2.2])
    durable = summary([hop, sync], chain, (commit, path), rows=600)["durable"]
    assert durable == {
        "commit_p50_ms": 0.35,
        "commit_p99_ms": 0.9,
        "p50_ms": 0.7,
        "p99_ms": 2.2,
        "rows": 600,
    }


def test_the_stages_of_an_event_are_the_differences_of_its_first_timestamps(
    tmp_path: Path,
) -> None:
    """``w3_phases.py --stages`` joins each event's timestamps from every process's
    file by its key, the earliest of each stage (a stage noted again later, as a retry
    would, does not count), with the publish and the receipt taken in the bench.
    Catches a phase read from another event's or a later stage's timestamp."""
    from bench import w3_phases

    ms = 1_000_000
    (tmp_path / "1.jsonl").write_text(
        "".join(
            json.dumps(record) + "\n"
            for record in (["in", "w3-0", 2 * ms], ["in", "w3-1", 9 * ms], ["work", "w3-0", 5 * ms])
        )
    )
    (tmp_path / "2.jsonl").write_text(json.dumps(["work", "w3-0", 4 * ms]) + "\n")
    collector = w3_phases.Collector()
    collector.receipts = {"w3-0": 6 * ms}
    out = w3_phases.staged(tmp_path, collector, {"w3-0": 1 * ms, "w3-1": 8 * ms})
    assert out["publish -> serve has it (JetStream hop)"] == [1.0, 1.0]
    assert out["  -> handed to the channel"] == []
    assert out["total"] == [5.0]


def test_w2_starts_clear_of_a_dedup_buckets_edge() -> None:
    """Catches a W2 storm started just before a bucket edge: tocsin notifies each
    fingerprint again in the new bucket (DESIGN.md section 4) and W2 counted 2,000
    notifications in a run that started at 11:09:59."""
    edge = 1_796_468_400.0  # 10-minute aligned
    assert edge % 600 == 0
    assert wait_for_one_bucket(edge - 1.0) == 2.0  # just past the edge
    assert wait_for_one_bucket(edge - 29.5) == 30.5
    assert wait_for_one_bucket(edge - 31.0) == 0.0  # far enough
    assert wait_for_one_bucket(edge + 0.5) == 0.0
