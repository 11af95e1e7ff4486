"""``make bench``: tocsin and Prometheus Alertmanager under the same loads (issues #8, #20).

  W1  a storm of distinct alerts (20,000, as fast as the protocol allows)
  W2  a storm of duplicates (20,000 over 1,000 fingerprints: 1,000 notifications)
  W3  steady load (200 distinct alerts/s for 20 s, on a fresh process): latency
      from the send to the webhook's receipt
  W4  replay: fold rate and start time on a log of a million events (tocsin only)
  W5  a storm of 20,000 distinct alerts over 50 groups (by label ``service``,
      group_wait 1s, group_interval 5s, on a fresh process): notifications sent,
      groups and alerts notified, and the time until every group was notified
  and RSS, CPU and the most simultaneous webhook connections of each service.
  scale  W1 with 1 and with 2 partitions (issue #22, ``bench/scale.py``): tocsin in the
      partitioned shape, each part its own process; the router stage's rate, the end to
      end rate and the CPU of each role, and the ratio 2/1 (``--partitions 1,2``)
  ``--workloads w1,w5`` runs only those; ``--baseline OLD.json`` prints W1's router
  figures before (OLD) and after (this run) side by side.

Every workload runs ``--runs`` times (3), the sides taking turns (tocsin, Alertmanager,
tocsin, ...; ``schedule``), each session on fresh processes; a figure is the median of
its runs with their range, and issue #20's targets compare the medians.

Both services run as users run them, each in its own process on 127.0.0.1: ``tocsin
serve`` against a real ``nats-server``, Alertmanager from Debian's package (installed
with apt-get when missing; without it the suite runs tocsin alone and says so). Both
notify a webhook receiver in this process. Figures go to the console, to
``bench/results/`` (JSON and Markdown) and to ``docs/bench-*.png``.

Run: .venv/bin/python -m bench [--workloads w1,w5] [--runs 3] [--events N] [--profile DIR] ...
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import functools
import json
import resource
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import report, scale
from bench.procs import BenchError, Child, venv_binary, version_of
from bench.profile import Profiler
from bench.receiver import Receiver
from bench.targets import (
    AlertmanagerTarget,
    Grouping,
    Target,
    TocsinTarget,
    alertmanager_binary,
)
from bench.workloads import (
    Budget,
    Loads,
    w1_distinct,
    w2_duplicates,
    w3_steady,
    w5_grouped,
    wall_offset,
)

ROOT = Path(__file__).resolve().parent.parent
REPLAY_TIMEOUT = 600.0  # W4 on a million events takes 1-3 minutes on a 2-core VM
WORKLOADS = ("w1", "w2", "w3", "w4", "w5", "scale")
TOCSIN_ALONE = {"w4", "scale"}  # workloads with nothing of Alertmanager's to compare
RUNS = 3  # of each workload (issue #20): the median of 3 is not decided by one noisy run
BUDGET_MINUTES = 60.0  # after this, no new session starts: the bench fits CI's 90 minutes
LATE = "the --budget-minutes is spent"
GROUPING = Grouping()  # W5's, the same for both services (issue #17)
MakeTarget = Callable[[Path, Grouping | None], Target]  # a fresh one in this directory


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _say(line: str) -> None:
    print(line, flush=True)


def _parts(rss: dict[str, float]) -> str:
    """`` (serve 110.5 + deliver 53.3)``: the RSS process by process, when more than one."""
    if len(rss) < 2:
        return ""
    return " (" + " + ".join(f"{name} {mib:.1f}" for name, mib in rss.items()) + ")"


def _brief(workload: str, label: str, w: dict[str, Any], has_log: bool) -> str:
    """One line per workload as it finishes."""

    def num(key: str, unit: str, spec: str = ",.0f") -> str:
        value = w.get(key)
        return f"{value:{spec}} {unit}" if isinstance(value, int | float) else f"— {unit}"

    if workload == "W3":
        return (
            f"  W3 {label}: p50 {num('p50_ms', 'ms', '.2f')}, p99 {num('p99_ms', 'ms', '.2f')}, "
            f"max {num('max_ms', 'ms', '.1f')}; {w['notified']:,}/{w['events']:,} notified"
        )
    rate = num("committed_per_second" if has_log else "accepted_per_second", "events/s")
    line = f"  {workload} {label}: {rate} {'committed' if has_log else 'accepted'}; "
    if workload == "W5":
        return line + (
            f"{w['notifications']:,} notifications for {w['groups_notified']:,}/{w['groups']:,} "
            f"groups and {w['alerts_covered']:,}/{w['events']:,} alerts; every group notified "
            f"{num('all_groups_notified_seconds', 's', '.2f')} after the first publish"
        )
    if workload == "W2":
        exact = "yes" if w["exact"] else "NO"
        expected = w["expected_notifications"]
        return line + f"{w['notifications']:,} notifications (exactly {expected:,}: {exact})"
    return line + (
        f"{w['notifications']:,} notifications, the last "
        f"{num('last_publish_to_last_notification_seconds', 's', '.2f')} after the last publish; "
        f"CPU {num('cpu_seconds', 's', '.1f')} ({num('cpu_us_per_event', 'µs', ',.0f')} an event)"
    )


async def _session(
    target: Target, result: dict[str, Any], body: Callable[[Target, Receiver], Awaitable[None]]
) -> None:
    """Start a receiver and the service, run ``body``, stop both (by PID, always); an
    error is recorded in ``result`` and the suite goes on."""
    receiver = Receiver(target.keys_of)
    try:
        await receiver.start()
        _say(f"== {target.label}: starting (webhook receiver on {receiver.url})")
        await target.start(receiver.url)
        result["command"] = getattr(target, "command", "")
        await body(target, receiver)
    except BenchError as error:
        result.setdefault("errors", []).append(str(error))
        _say(f"!! {target.label}: {error}")
    except Exception as error:  # report it, then run the rest
        result.setdefault("errors", []).append(f"{type(error).__name__}: {error}")
        _say(f"!! {target.label} failed:\n{traceback.format_exc()}")
    finally:
        result["max_connections"] = max(result.get("max_connections", 0), receiver.max_open)
        result["connections_accepted"] = result.get("connections_accepted", 0) + (
            receiver.connections
        )
        await target.stop()
        await receiver.stop()


PHASES = ("storms", "steady", "grouped")  # each on a fresh process of the service
SIDES = ("tocsin", "alertmanager")


def phases(workloads: Collection[str]) -> list[str]:
    """The sessions the selected workloads need, in order: W1 then W2 (then resources)
    on one process of the service; W3 on a fresh one, so that its latency is the steady
    state's and not the storms' aftermath (Alertmanager re-evaluates each of their
    21,000 groups every second until they time out); W5 on another fresh one,
    configured to group. W4 is not a session of the service (``run_replay``)."""
    wanted = {"storms": {"w1", "w2"}, "steady": {"w3"}, "grouped": {"w5"}}
    return [phase for phase in PHASES if wanted[phase] & set(workloads)]


def schedule(phases: Sequence[str], runs: int, sides: Sequence[str]) -> list[tuple[str, int, str]]:
    """(phase, run, side) in the order they run: phase by phase, and within a phase the
    sides take turns run by run (tocsin, AM, tocsin, AM, ...), so a noisy minute on a
    shared machine falls on both sides' runs of one workload, not on one side's figures
    alone. Runs count from 1."""
    return [(phase, run, side) for phase in phases for run in range(1, runs + 1) for side in sides]


async def run_phase(
    phase: str,
    target: Target,
    receiver: Receiver,
    loads: Loads,
    tag: str,
    profiler: Profiler | None,
    workloads: set[str],
    result: dict[str, Any],
) -> None:
    """One session's workloads on ``target`` (started), their figures into ``result``
    (one run of one side). ``profiler`` samples the service during W1."""
    label = target.label
    if phase == "storms":
        if "w1" in workloads:
            _say(f"== {label}: W1, a storm of {loads.storm_events:,} distinct alerts")
            if profiler is not None:
                profiler.start(target.pid())
            try:
                result["W1"] = await w1_distinct(target, receiver, loads, tag)
            finally:
                if profiler is not None:
                    summary = profiler.stop()
                    result["profile"] = {"raw": str(profiler.raw), "summary": str(profiler.summary)}
                    _say(f"  profile of tocsin serve during W1 ({profiler.raw}):")
                    _say("\n".join(f"    {line}" for line in summary.splitlines()[:40]))
            _say(_brief("W1", label, result["W1"], target.has_log))
        if "w2" in workloads:
            _say(
                f"== {label}: W2, {loads.storm_events:,} events over "
                f"{loads.duplicate_fingerprints:,} fingerprints"
            )
            result["W2"] = await w2_duplicates(target, receiver, loads, tag)
            _say(_brief("W2", label, result["W2"], target.has_log))
        # Whatever bench/procs.py measures of the service: for tocsin serve, every process.
        result["resources"] = asdict(target.usage())
        _say(
            f"  {label} after {report.storms(workloads)}: "
            f"RSS {result['resources']['rss_mib']:.1f} MiB, "
            f"CPU {result['resources']['cpu_seconds']:.1f} s"
            + _parts(result["resources"].get("rss_parts_mib", {}))
        )
    elif phase == "steady":
        _say(
            f"== {label}: W3 on a fresh process, {loads.steady_rate:.0f} distinct "
            f"alerts/s for {loads.steady_seconds:.0f} s after {loads.warmup_seconds:.0f} s "
            "of warm-up"
        )
        result["W3"] = await w3_steady(target, receiver, loads, tag)
        _say(_brief("W3", label, result["W3"], target.has_log))
    else:
        g = GROUPING
        _say(
            f"== {label}: W5 on a fresh process, {loads.group_events:,} distinct alerts "
            f"over {loads.groups:,} groups (by {g.label}, group_wait {g.wait:g} s, "
            f"group_interval {g.interval:g} s)"
        )
        result["W5"] = await w5_grouped(target, receiver, loads, g, tag)
        _say(_brief("W5", label, result["W5"], target.has_log))


async def run_sides(
    makers: dict[str, MakeTarget],
    loads: Loads,
    tag: str,
    profiler: Profiler | None,
    workloads: set[str],
    runs: int,
    work: Path,
    keep: bool,
    deadline: float,
) -> dict[str, dict[str, Any]]:
    """Every session of ``schedule``, each on fresh processes of its side; per side the
    figures of every run (``runs``) and their medians (``report.median_tree``). A
    session due after ``deadline`` (``time.monotonic``) is skipped and named in its
    run's ``skipped``: the table then shows fewer runs, and the bench ends in time."""
    results: dict[str, list[dict[str, Any]]] = {side: [{} for _ in range(runs)] for side in makers}
    order = schedule(phases(workloads), runs, [side for side in SIDES if side in makers])
    for step, (phase, run, side) in enumerate(order, 1):
        result = results[side][run - 1]
        if time.monotonic() > deadline:
            _say(f"!! {step}/{len(order)}: {phase}, run {run} of {runs}, {side}: skipped ({LATE})")
            result.setdefault("skipped", []).append(phase)
            continue
        directory = work / f"{side}-{phase}-{run}"
        target = makers[side](directory, GROUPING if phase == "grouped" else None)
        _say(f"-- {step}/{len(order)}: {phase}, run {run} of {runs}, {target.label}")
        result["has_log"] = target.has_log
        harness_cpu, started = _cpu_self(), time.monotonic()
        profile = profiler if (phase, run, side) == ("storms", 1, "tocsin") else None

        body = functools.partial(
            run_phase, phase, loads=loads, tag=f"{tag}r{run}", profiler=profile,
            workloads=workloads, result=result,
        )  # fmt: skip
        await _session(target, result, body)
        result["harness_cpu_seconds"] = result.get("harness_cpu_seconds", 0.0) + (
            _cpu_self() - harness_cpu
        )
        result["wall_seconds"] = result.get("wall_seconds", 0.0) + time.monotonic() - started
        if not keep:
            shutil.rmtree(directory, ignore_errors=True)
    out: dict[str, dict[str, Any]] = {}
    for side, side_runs in results.items():
        for result in side_runs:
            if result.get("errors"):
                result["error"] = "; ".join(result["errors"])
        out[side] = {**report.median_tree(side_runs), "runs": side_runs}
        errors = _per_run(side_runs)
        if errors:
            out[side]["error"] = errors
        else:
            out[side].pop("error", None)
    return out


async def scale_w1(
    target: Target, receiver: Receiver, loads: Loads, tag: str, result: dict[str, Any]
) -> None:
    """W1 on one partitioned tocsin (``scale.PartitionedTocsin``, started): W1's figures,
    the router stage summed over the partitions' logs and the CPU of every role, this
    process's (the publisher and the receiver) among them, into ``result``."""
    assert isinstance(target, scale.PartitionedTocsin)
    _say(f"== {target.label}: W1, a storm of {loads.storm_events:,} distinct alerts")
    before, harness = target.role_cpu(), _cpu_self()
    result["W1"] = await w1_distinct(target, receiver, loads, tag)
    after = target.role_cpu()
    result["cpu"] = {role: after[role] - before.get(role, 0.0) for role in after}
    result["cpu"]["bench"] = _cpu_self() - harness
    result["cpu_us_per_event"] = {
        role: seconds / loads.storm_events * 1e6 for role, seconds in result["cpu"].items()
    }
    spans, w1 = target.spans(), result["W1"]
    committed = w1.get("committed_seconds")
    first_publish = (  # the storm's first publish on the log's clock (wall µs)
        round(max(s.last_us for s in spans) - committed * 1e6) if committed else None
    )
    result["router_stage"] = stage = scale.router_stage(
        spans, await target.last_forward_us(), first_publish
    )
    rate, each = stage["per_second"], [p["per_second"] for p in stage["partitions"]]
    _say(_brief("W1", target.label, result["W1"], has_log=True))
    _say(
        f"  router stage: {rate or 0:,.0f} events/s over every log (each: "
        + ", ".join(f"{r or 0:,.0f}" for r in each)
        + "); CPU s: "
        + ", ".join(f"{role} {seconds:.1f}" for role, seconds in result["cpu"].items())
    )


async def scale_routers_alone(
    target: Target, receiver: Receiver, loads: Loads, tag: str, result: dict[str, Any]
) -> None:
    """W1's storm on a partitioned tocsin started without ``tocsin deliver``, until every
    event is committed: the router stage with nothing of delivery's on the cores (nothing
    is notified, so the receiver waits for nothing). Its figures go to ``result["alone"]``."""
    assert isinstance(target, scale.PartitionedTocsin)
    n = loads.storm_events
    _say(f"== {target.label}: W1's storm of {n:,} distinct alerts, until committed")
    alone: dict[str, Any] = {"timeouts": []}
    result["alone"] = alone
    target.begin()
    before, harness = target.role_cpu(), _cpu_self()
    budget = Budget(loads.timeout)
    offset = wall_offset()
    sent = await target.storm([f"{tag}-w1-{i}" for i in range(n)], budget.left())
    if sent.error:
        alone["timeouts"].append(sent.error)
    if await target.committed(n, n, budget.left()) is None:
        alone["timeouts"].append(budget.missed(f"not all {n:,} events committed"))
    after = target.role_cpu()
    alone["cpu"] = {role: after[role] - before.get(role, 0.0) for role in after}
    alone["cpu"]["bench"] = _cpu_self() - harness
    alone["cpu_us_per_event"] = {role: s / n * 1e6 for role, s in alone["cpu"].items()}
    alone["router_stage"] = stage = scale.router_stage(
        target.spans(), await target.last_forward_us(), round((sent.first_sent + offset) * 1e6)
    )
    each = ", ".join(f"{p['per_second'] or 0:,.0f}" for p in stage["partitions"])
    _say(
        f"  routers alone: {stage['per_second'] or 0:,.0f} events/s over every log (each: "
        f"{each}); CPU s: "
        + ", ".join(f"{role} {seconds:.1f}" for role, seconds in alone["cpu"].items())
    )


SCALE_PHASES = {  # session -> what runs in it (each on fresh processes)
    "pipeline": scale_w1,  # W1 end to end, tocsin deliver beside the routers
    "routers": scale_routers_alone,  # the storm until committed, no tocsin deliver
}


async def run_scaling(
    counts: Sequence[int],
    partitioners: int,
    loads: Loads,
    tag: str,
    runs: int,
    work: Path,
    keep: bool,
    deadline: float,
) -> dict[str, Any]:
    """W1 on tocsin partitioned ``counts`` ways (issue #22), ``runs`` times, the counts
    taking turns run by run (``schedule``) on fresh processes each; per count every run
    and the medians, keyed by the count as text (JSON's keys). Past ``deadline`` a run
    is skipped and named, as in ``run_sides``."""
    sides = [str(n) for n in counts]
    results: dict[str, list[dict[str, Any]]] = {side: [{} for _ in range(runs)] for side in sides}
    order = schedule(list(SCALE_PHASES), runs, sides)
    for step, (phase, run, side) in enumerate(order, 1):
        result = results[side][run - 1]
        result["partitions"] = int(side)
        label = scale.partitions_label(int(side))
        if time.monotonic() > deadline:
            _say(f"!! {step}/{len(order)}: {phase}, run {run} of {runs}, {label}: skipped ({LATE})")
            result.setdefault("skipped", []).append(phase)
            continue
        directory = work / f"scale-{phase}-p{side}-{run}"
        target = scale.PartitionedTocsin(
            directory, int(side), deliver=phase == "pipeline", partitioners=partitioners
        )
        _say(f"-- {step}/{len(order)}: {phase}, run {run} of {runs}, {target.label}")
        started = time.monotonic()
        body = functools.partial(
            SCALE_PHASES[phase], loads=loads, tag=f"{tag}s{phase[0]}{side}r{run}", result=result
        )
        await _session(target, result, body)
        result["wall_seconds"] = result.get("wall_seconds", 0.0) + time.monotonic() - started
        if not keep:
            shutil.rmtree(directory, ignore_errors=True)
    out: dict[str, Any] = {"partitions": list(counts), "partitioners": partitioners, "sides": {}}
    for side, side_runs in results.items():
        for result in side_runs:
            if result.get("errors"):
                result["error"] = "; ".join(result["errors"])
        out["sides"][side] = {**report.median_tree(side_runs), "runs": side_runs}
        errors = _per_run(side_runs)
        if errors:
            out["sides"][side]["error"] = errors
        else:
            out["sides"][side].pop("error", None)
    return out


def _per_run(runs: Sequence[dict[str, Any]]) -> str:
    """The runs' errors in one line, each named by its run (empty when none failed)."""
    return "; ".join(
        f"run {number}: {run['error']}" if len(runs) > 1 else str(run["error"])
        for number, run in enumerate(runs, 1)
        if run.get("error")
    )


async def runs_alone(
    name: str,
    skipped: str,
    runs: int,
    deadline: float,
    once: Callable[[int], Awaitable[dict[str, Any]]],
) -> list[dict[str, Any]]:
    """``once(run)`` ``runs`` times, one after another (tocsin's alone: nothing to
    alternate with); a run due after ``deadline`` is skipped, as in ``run_sides``, and
    recorded as such (``skipped``: what it would have measured)."""
    measured: list[dict[str, Any]] = []
    for run in range(1, runs + 1):
        if time.monotonic() > deadline:
            _say(f"!! {name}, run {run} of {runs}: skipped ({LATE})")
            measured.append({"skipped": [skipped]})
            continue
        measured.append(await once(run))
    return measured


async def run_floors(runs: int, deadline: float) -> dict[str, Any]:
    """W3's floor (``bench/floors.py``) ``runs`` times, after the W3 sessions: the
    hops no alert can skip, timed alone and then in a row, and the durable path (the
    same with SQLite's commit of the facts), with nothing of tocsin's running, on this
    machine in the same run as W3."""
    from bench.floors import w3_floor  # brings in nats and the tests' server helper

    async def once(run: int) -> dict[str, Any]:
        _say(
            "-- W3's floor (two JetStream hops, an fsync and the webhook POST, each alone,"
            " then in a row; then the same with SQLite's commit for the fsync),"
            f" run {run} of {runs}"
        )
        try:
            floor = await w3_floor()
        except Exception as error:  # a figure missing, not the run lost
            _say(f"!! W3's floor: {type(error).__name__}: {error}")
            return {"error": f"{type(error).__name__}: {error}"}
        durable = floor["durable"]
        _say(
            f"  W3's floor, in a row: p50 {floor['p50_ms']:.2f} ms, p99 {floor['p99_ms']:.2f} ms;"
            f" the durable path: p50 {durable['p50_ms']:.2f} ms, p99 {durable['p99_ms']:.2f} ms"
        )
        return floor

    measured = await runs_alone("W3's floor", "floor", runs, deadline, once)
    return {**report.median_tree(measured), "runs": measured}


async def run_replays(events: int, runs: int, deadline: float) -> dict[str, Any]:
    """W4 ``runs`` times, one after another (tocsin's alone: nothing to alternate with);
    the figures of every run and their medians. A run due after ``deadline`` is skipped,
    as in ``run_sides``."""

    async def once(run: int) -> dict[str, Any]:
        _say(f"-- W4, run {run} of {runs}")
        r = await run_replay(events, timeout=REPLAY_TIMEOUT)
        if "error" in r:
            _say(f"!! W4: {r['error']}")
        else:
            _say(
                f"  W4: fold {r['fold_events_per_second']:,} events/s; start "
                f"{r['start_without_snapshot_seconds']} s without a snapshot, "
                f"{r['start_with_snapshot_seconds']} s with one ({r['events']:,} events)"
            )
        return r

    replays = await runs_alone("W4", "replay", runs, deadline, once)
    out = {**report.median_tree(replays), "runs": replays}
    errors = _per_run(replays)
    if errors:
        out["error"] = errors
    else:
        out.pop("error", None)
    return out


async def run_replay(events: int, timeout: float) -> dict[str, Any]:
    """W4 through ``bench/log_scale.py --replay-only`` in its own process (a million
    events need ~1 GB on disk and a fold's worth of memory; none of it stays here)."""
    shown = f"{_relative(sys.executable)} bench/log_scale.py --events {events} --replay-only"
    _say(f"== tocsin: W4, fold and start on a log of {events:,} events ({shown})")
    with tempfile.TemporaryDirectory(prefix="tocsin-bench-w4-") as tmp:
        out = Path(tmp) / "replay.json"
        argv = [sys.executable, str(ROOT / "bench" / "log_scale.py"), "--events", str(events),
                "--replay-only", "--out", str(out)]  # fmt: skip
        child = Child("bench/log_scale.py", argv, None, cwd=ROOT).start()
        try:
            # A thread waits; cancelling the run stops the child, which ends the wait.
            code = await asyncio.to_thread(child.wait, timeout)
        except subprocess.TimeoutExpired:
            return {"command": shown, "error": f"not done within {timeout:.0f} s"}
        finally:
            child.stop()
        if code != 0 or not out.exists():
            return {"command": shown, "error": f"exited with code {code}"}
        result: dict[str, Any] = json.loads(out.read_text())
        result["command"] = shown
        return result


def _relative(path: str) -> str:
    try:
        return str(Path(path).relative_to(ROOT))
    except ValueError:
        return path


def _workloads(value: str) -> set[str]:
    """``w1,w5`` -> {"w1", "w5"}; an unknown name is an error naming the known ones."""
    chosen = {name.strip().lower() for name in value.split(",") if name.strip()}
    unknown = chosen - set(WORKLOADS)
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"expected some of {','.join(WORKLOADS)}, got {value!r}")
    return chosen


def _partitions(value: str) -> tuple[int, ...]:
    try:
        return scale.parse_partitions(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {value!r}")
    return number


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    defaults = Loads()
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--runs",
        type=_positive_int,
        default=RUNS,
        help="runs of each workload, the sides alternating; medians and ranges "
        "(default %(default)s; 1: one run of each)",
    )
    parser.add_argument(
        "--budget-minutes",
        type=float,
        default=BUDGET_MINUTES,
        help="start no session after this many minutes; the runs left out are named "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--events",
        type=int,
        default=defaults.storm_events,
        help="events per storm, W1 and W2 (default %(default)s)",
    )
    parser.add_argument(
        "--fingerprints",
        type=int,
        default=defaults.duplicate_fingerprints,
        help="distinct fingerprints of W2 (default %(default)s)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=defaults.steady_rate,
        help="W3 alerts per second (default %(default)s)",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=defaults.steady_seconds,
        help="W3 duration (default %(default)s)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=defaults.warmup_seconds,
        help="W3 runs this long at its rate first, not counted (default %(default)s)",
    )
    parser.add_argument(
        "--group-events",
        type=int,
        default=defaults.group_events,
        help="W5 distinct alerts (default %(default)s)",
    )
    parser.add_argument(
        "--groups",
        type=int,
        default=defaults.groups,
        help="W5 groups: values of the label service (default %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=defaults.timeout,
        help="longest any one wait may take, seconds (default %(default)s)",
    )
    parser.add_argument(
        "--replay-events",
        type=int,
        default=1_000_000,
        help="W4 log size; 0 skips W4 (default %(default)s)",
    )
    parser.add_argument(
        "--workloads",
        type=_workloads,
        default=set(WORKLOADS),
        metavar="W,...",
        help=f"which to run, comma-separated (default all: {','.join(WORKLOADS)})",
    )
    parser.add_argument(
        "--partitions",
        type=_partitions,
        default=scale.PARTITIONS,
        metavar="N,...",
        help="the partition counts the scale workload compares, the first the baseline "
        f"(default {','.join(map(str, scale.PARTITIONS))})",
    )
    parser.add_argument(
        "--partitioners",
        type=_positive_int,
        default=1,
        metavar="K",
        help="`tocsin partition` processes in the scale workload (default %(default)s)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="JSON",
        help="a results file of an earlier run (the before): print W1's router figures "
        "before and after this run, and the change",
    )
    parser.add_argument("--no-alertmanager", action="store_true", help="tocsin only")
    parser.add_argument(
        "--no-install",
        action="store_true",
        help="do not apt-get install Alertmanager when it is missing",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="sample tocsin with py-spy during W1; raw stacks + summary to DIR",
    )
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs", help="where the plots go")
    parser.add_argument(
        "--keep", action="store_true", help="keep the services' data and logs (the path is printed)"
    )
    return parser.parse_args(argv)


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM ends the run like Ctrl-C: the finally blocks stop every child by PID.
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    loads = Loads(
        storm_events=args.events,
        duplicate_fingerprints=args.fingerprints,
        steady_rate=args.rate,
        steady_seconds=args.seconds,
        warmup_seconds=args.warmup,
        timeout=args.timeout,
        group_events=args.group_events,
        groups=args.groups,
    )
    workloads: set[str] = args.workloads
    baseline = _baseline(args.baseline) if args.baseline else None
    command = shlex.join([_relative(sys.executable), "-m", "bench", *(argv or sys.argv[1:])])
    started = time.monotonic()
    deadline = started + args.budget_minutes * 60
    machine = report.machine()
    nats_binary = venv_binary("nats-server") or "nats-server"
    machine["nats_server"] = version_of([nats_binary, "--version"]).removeprefix("nats-server: ")
    machine["tocsin"] = _tocsin_version()
    machine["alertmanager"] = "not run"
    _compile_tocsin()
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "command": command,
        "machine": machine,
        "loads": asdict(loads),
        "workloads": sorted(workloads),
        "grouping": asdict(GROUPING),
        "profiled": args.profile is not None,
        "runs": args.runs,
        "targets": {},
    }
    _say(f"tocsin bench: {command}")
    _say(f"  {machine['cpu']}, {machine['cores']} cores, {report.python_of(machine)}")
    tag = secrets.token_hex(3)
    work = Path(tempfile.mkdtemp(prefix="tocsin-bench-"))
    try:
        makers: dict[str, MakeTarget] = {"tocsin": TocsinTarget}
        if args.no_alertmanager or not workloads - TOCSIN_ALONE:
            why = "--no-alertmanager" if args.no_alertmanager else "W4 and scale are tocsin's alone"
            _say(f"== Alertmanager: skipped ({why})")
        else:
            try:
                binary = alertmanager_binary(install=not args.no_install)
                version = version_of([binary, "--version"])
                machine["alertmanager"] = version.removeprefix("alertmanager, version ").split()[0]
            except BenchError as error:
                _say(f"!! Alertmanager cannot run, so the figures are tocsin's alone: {error}")
                results["targets"]["alertmanager"] = {"error": str(error)}
            else:
                makers["alertmanager"] = AlertmanagerTarget
        if phases(workloads):
            profiler = Profiler(args.profile, "tocsin-serve-w1") if args.profile else None
            results["targets"].update(
                await run_sides(
                    makers, loads, tag, profiler, workloads, args.runs, work, args.keep, deadline
                )
            )
        if "scale" in workloads:
            results["scaling"] = await run_scaling(
                args.partitions,
                args.partitioners,
                loads,
                tag,
                args.runs,
                work,
                args.keep,
                deadline,
            )
        if "w3" in workloads and "tocsin" in makers:
            results["floor"] = await run_floors(args.runs, deadline)
        if args.replay_events > 0 and "w4" in workloads:
            results["replay"] = await run_replays(args.replay_events, args.runs, deadline)
    finally:
        if args.keep:
            _say(f"kept the services' data and logs in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    results["wall_seconds"] = round(time.monotonic() - started, 1)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    full, latest = report.write_json(results, args.results, stamp)
    table = markdown(results)
    (args.results / "latest.md").write_text(table)
    plots = report.plots(results, args.docs)
    _say("")
    _say(text(results))
    _say("Markdown for the README (also in bench/results/latest.md):\n")
    _say(table)
    _say(f"results: {_relative(str(full))}, {_relative(str(latest))}")
    if plots:
        _say(f"plots: {', '.join(_relative(str(p)) for p in plots)}")
    if baseline is not None:
        _say("")
        _say(report.w1_before_after(baseline, results, _relative(str(args.baseline))))
    _say(f"done in {results['wall_seconds']:.0f} s")
    return 1 if failed(results) else 0


def failed(results: dict[str, Any]) -> bool:
    """Whether a tocsin run failed: of the services' sessions, or of a partition count."""
    tocsin = results["targets"].get("tocsin") or {}
    sides = (results.get("scaling") or {}).get("sides") or {}
    return bool(tocsin.get("error")) or any(side.get("error") for side in sides.values())


def markdown(results: dict[str, Any]) -> str:
    """``latest.md``: the services' table when any of its workloads ran (not for
    ``--workloads scale`` alone, which would leave it empty), then the scaling table."""
    parts = [report.markdown(results)] if report.lines(results) else []
    if results.get("scaling"):
        parts.append(scale.markdown(results))
    return "\n".join(parts)


def text(results: dict[str, Any]) -> str:
    """The console's summary, in the same parts as ``markdown``."""
    parts = [report.text(results)] if report.lines(results) else []
    if results.get("scaling"):
        parts.append(scale.text(results))
    return "\n".join(parts)


def _baseline(path: Path) -> dict[str, Any]:
    """The earlier run ``--baseline`` names, read before this run starts (so a wrong
    path fails in a second, not after ten minutes)."""
    try:
        baseline: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise SystemExit(f"--baseline {path}: {error}") from None
    if not isinstance(baseline, dict) or "targets" not in baseline:
        raise SystemExit(f"--baseline {path}: not a results file of python -m bench")
    return baseline


def _compile_tocsin() -> None:
    """Compile tocsin's modules to bytecode before its processes start, as pip does when
    it installs tocsin (the Docker image's wheel too). A checkout installed editable, on
    a machine that sets ``PYTHONDONTWRITEBYTECODE`` (this one does), has none, so every
    tocsin process compiled its own modules at each start: ~1.5 MiB of RSS a process in
    the RSS figure (issue #20: 149.2 / 150.2 MiB after W1 + W2 without, 146.2 / 147.8
    with, alternated) that an installed tocsin does not hold. Up-to-date modules are
    left as they are; the modules compiled are those this Python imports as ``tocsin``
    (another tree's, with ``PYTHONPATH``)."""
    import tocsin

    root = Path(tocsin.__file__).parent
    if not compileall.compile_dir(root, quiet=1):
        _say(f"!! tocsin's modules in {root} could not all be compiled: its processes compile them")


def _tocsin_version() -> str:
    from tocsin import __version__

    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=10, check=False,
        ).stdout.strip()  # fmt: skip
    except OSError:
        commit = ""
    return f"{__version__} ({commit})" if commit else __version__


def run() -> None:
    """The ``python -m bench`` entry point: exit 1 if tocsin's run failed."""
    try:
        code = asyncio.run(main())
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; every process the bench started was stopped", file=sys.stderr)
        code = 130
    sys.exit(code)
