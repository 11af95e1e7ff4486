"""``make bench``'s scaling figure (issue #22): W1 with 1 and with 2 partitions.

Partitions (DESIGN.md section 17) spread the single writer: one router and one SQLite
log per partition. This runs W1 (20,000 distinct events, every one a notification) on
the partitioned shape, each part its own process as deploy/compose.partitions.yaml runs
them, on this machine: the bench's ``nats-server``, one ``tocsin partition``, one
``tocsin router --partition k`` per partition (logs in ``<data-dir>/p<k>``,
``[partitions] count = N``), one ``tocsin deliver``, the bench's webhook receiver.
With one partition there is nothing to partition (``tocsin partition`` refuses
``count = 1``): the one ``tocsin router`` consumes TOCSIN_IN itself, which is what
``count = 1`` means for a user, and so the baseline a second partition is measured
against.

Per partition count: the router stage's rate (the events committed to every
partition's log, from the first commit to the last, summed over the logs), the end-to-end
rate until every notification arrived, and the CPU of each process role. Every count runs
``--runs`` times, the counts taking turns run by run as the two services do in
``bench/suite.py``; a figure is the median with the runs' range, and the ratio is of the
medians (N partitions / the first count).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
from nats.js.errors import NotFoundError

from bench import report
from bench.procs import BenchError, Child, free_port, nats_server, venv_binary, wait_http_ok
from bench.targets import PUBLISH_WINDOW, LogWatch, TocsinTarget, Usage
from tocsin.core.subjects import PARTITIONER_CONSUMER, STREAM_IN, STREAM_PART
from tocsin.core.times import parse_rfc3339
from tocsin.store.eventlog import db_path, partition_dir

PARTITIONS = (1, 2)  # the counts measured (issue #22: W1 with 1 and with 2 partitions)
READY_TIMEOUT = 60.0  # seconds a process may take to be ready (imports, streams)
ROLES = ("partitioner", "routers", "deliver", "nats-server", "bench")
"""The process roles whose CPU is shown: ``bench`` is this process (publisher, receiver
and the log polls), which shares the two cores with the rest."""

Result = dict[str, Any]


def parse_partitions(value: str) -> tuple[int, ...]:
    """``--partitions 1,2`` -> (1, 2): distinct counts of at least 1, ascending; the
    first is the baseline the others' ratios divide by. ``ValueError`` naming the text
    otherwise (argparse turns it into a usage error)."""
    try:
        counts = sorted({int(part) for part in value.split(",") if part.strip()})
    except ValueError:
        counts = []
    if not counts or counts[0] < 1:
        raise ValueError(f"expected partition counts of at least 1, e.g. 1,2; got {value!r}")
    return tuple(counts)


def partitions_label(count: int) -> str:
    return f"{count} partition" + ("" if count == 1 else "s")


@dataclass(frozen=True)
class Span:
    """One partition's share of a storm: the events committed to its log, when its first
    and last commit of them were appended (wall-clock µs, the log's ``ts``, one per
    commit), and how many events its first commit held."""

    events: int
    first_us: int
    last_us: int
    first_commit: int


def _rate(events: int, first_us: int, last_us: int) -> float | None:
    return events / ((last_us - first_us) / 1e6) if events > 0 and last_us > first_us else None


def router_stage(
    spans: Sequence[Span], last_forward_us: int | None = None, first_publish_us: int | None = None
) -> Result:
    """The router stage of one storm, from its partitions' spans: the events committed
    after the first commit in any log, over the time from that commit to the last in
    any log (the partitions work side by side, so this is their summed rate), and each
    partition's own rate over its own span the same way.

    A commit's rows share one append time, so the first commit's events were routed
    before the clock starts: counting them would credit a batch (up to the router's
    1,000 events) for no time, and a partition of 10,000 events 10% too much.

    ``last_forward_us``, TOCSIN_PART's last message (the partitioner's last forward):
    when the routers' last commit follows it by less than a tenth of the stage, the
    routers committed as fast as they were fed, and the stage's rate is the
    partitioner's, a lower bound of the routers' (``partitioner_bound``). With
    ``first_publish_us`` too, the partitioners' own rate: every event, from the first
    publish to the last forward."""
    busy = [s for s in spans if s.events > 0]
    events = sum(s.events for s in spans)
    stage: Result = {
        "events": events,
        "seconds": None,
        "per_second": None,
        "partitions": [
            {
                "events": s.events,
                "per_second": _rate(s.events - s.first_commit, s.first_us, s.last_us),
            }
            for s in spans
        ],
        "last_forward_to_last_commit_seconds": None,
        "partitioner_bound": False,
        "forwarded_per_second": (
            _rate(events, first_publish_us, last_forward_us)
            if first_publish_us is not None and last_forward_us is not None
            else None
        ),
    }
    if not busy:
        return stage
    first = min(busy, key=lambda s: s.first_us)
    last_us = max(s.last_us for s in busy)
    seconds = (last_us - first.first_us) / 1e6
    stage["seconds"] = seconds
    stage["per_second"] = _rate(events - first.first_commit, first.first_us, last_us)
    if last_forward_us is not None:
        tail = (last_us - last_forward_us) / 1e6
        stage["last_forward_to_last_commit_seconds"] = tail
        stage["partitioner_bound"] = tail <= seconds * 0.1
    return stage


class PartitionedTocsin(TocsinTarget):
    """tocsin in the partitioned shape, every part its own process against the bench's
    ``nats-server``. The workloads drive it as ``TocsinTarget`` (same publisher, same
    webhook config, the same log figures summed over the partitions' logs)."""

    def __init__(
        self, workdir: Path, partitions: int, deliver: bool = True, partitioners: int = 1
    ) -> None:
        super().__init__(workdir)
        self.partitions = partitions
        self.deliver = deliver
        self.partitioners = partitioners if partitions > 1 else 0
        self.label = f"tocsin, {partitions_label(partitions)}" + ("" if deliver else ", no deliver")
        data = self._dir / "data"
        # One partition: the router's log is the data dir's own, as without [partitions].
        self.logs = (
            [db_path(data)]
            if partitions == 1
            else [db_path(partition_dir(data, k)) for k in range(partitions)]
        )
        self.watches = [LogWatch(db) for db in self.logs]
        self.roles: dict[str, list[Child]] = {"routers": [], "deliver": [], "partitioner": []}
        self.commands: list[str] = []
        self._url = ""  # the bench's nats-server, once started

    def _config(self, receiver_url: str) -> str:
        config = super()._config(receiver_url)
        if self.partitions > 1:
            config += f"\n[partitions]\ncount = {self.partitions}\n"
        return config

    def _children(self) -> list[Child]:
        return [child for children in self.roles.values() for child in children]

    async def _spawn(self, role: str, name: str, *args: str, health: bool) -> Child:
        """Start ``tocsin <args>`` on the bench's broker and data dir; with ``health``,
        wait for its /readyz."""
        binary = venv_binary("tocsin")
        if binary is None:
            raise BenchError("the tocsin entry point is missing: pip install -e . (make bench)")
        port = free_port() if health else None
        argv = [binary, "--log-level", "warning", *args]
        argv += ["--data-dir", str(self._dir / "data"), "--nats-url", self._url]
        argv += ["--config", str(self._dir / "tocsin.toml")]
        if port is not None:
            argv += ["--health", f"127.0.0.1:{port}"]
        self.commands.append(" ".join(argv))
        child = Child(name, argv, self._dir / f"{name.replace(' ', '-')}.log").start()
        self.roles[role].append(child)
        if port is not None:
            await wait_http_ok(f"http://127.0.0.1:{port}/readyz", child, READY_TIMEOUT)
        return child

    async def start(self, receiver_url: str) -> None:
        self._nats, self._url = nats_server(self._dir / "jetstream", self._dir / "nats-server.log")
        (self._dir / "tocsin.toml").write_text(self._config(receiver_url))
        if self.partitions == 1:
            await self._spawn("routers", "tocsin router", "router", health=True)
        else:  # the routers make the streams and the partitioners' consumer
            for k in range(self.partitions):
                await self._spawn(
                    "routers", f"tocsin router p{k}", "router", "--partition", str(k), health=True
                )
        if self.deliver:
            await self._spawn("deliver", "tocsin deliver", "deliver", health=True)
        self._nc = await nats.connect(self._url, pending_size=64 * 1024 * 1024)
        self._js = self._nc.jetstream(publish_async_max_pending=PUBLISH_WINDOW)
        for i in range(self.partitioners):
            partitioner = await self._spawn("partitioner", f"tocsin partition {i}", "partition",
                                            health=False)  # fmt: skip
            await self._pulling(partitioner, i + 1)
        self.command = "; ".join(self.commands)

    async def _pulling(self, partitioner: Child, waiting: int) -> None:
        """Wait until ``waiting`` pull requests wait on TOCSIN_IN's partitioner consumer,
        one per partitioner started (it serves no HTTP): the storm then measures
        forwarding, not a partitioner's start."""
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            partitioner.check()
            try:
                info = await self._js.consumer_info(STREAM_IN, PARTITIONER_CONSUMER)
                if (info.num_waiting or 0) >= waiting:
                    return
            except NotFoundError:
                pass
            if time.monotonic() > deadline:
                raise BenchError(f"tocsin partition did not pull within {READY_TIMEOUT:.0f} s")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        for watch in self.watches:
            watch.close()
        try:
            if self._nc is not None:
                await asyncio.wait_for(self._nc.close(), 10)
        except Exception as error:  # stopping anyway
            print(f"  closing the NATS connection: {error!r}")
        finally:
            # Front to back: nothing new enters a router while it stops.
            for role in ("partitioner", "routers", "deliver"):
                for child in self.roles[role]:
                    child.stop()
            if self._nats is not None:
                self._nats.stop()

    def begin(self) -> None:
        for watch in self.watches:
            watch.begin()

    def _count(self, kind: str) -> int:
        return sum(watch.count(kind) for watch in self.watches)

    def _last(self, *kinds: str) -> float:
        """The latest append of any of ``kinds`` in any log, wall-clock seconds."""
        return max(watch.last_ts.get(kind, 0) for watch in self.watches for kind in kinds) / 1e6

    async def _until(self, done: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            for watch in self.watches:
                watch.poll()
            if done():
                return True
            self.alive()
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.1)

    async def committed(self, received: int, routed: int, timeout: float) -> float | None:
        def done() -> bool:
            return self._count("alert.received") >= received and self._count(self._routed) >= routed

        return (
            self._last("alert.received", self._routed) if await self._until(done, timeout) else None
        )

    async def quiesce(self, delivered: int, timeout: float) -> float | None:
        def done() -> bool:
            return self._count("delivery.succeeded") >= delivered

        return self._last("delivery.succeeded") if await self._until(done, timeout) else None

    def progress(self) -> str:
        for watch in self.watches:
            watch.poll()
        each = ", ".join(f"{watch.count('alert.received'):,}" for watch in self.watches)
        return (
            f"logs: {self._count('alert.received'):,} received ({each}), "
            f"{self._count(self._routed):,} routed, "
            f"{self._count('delivery.succeeded'):,} delivered"
        )

    def spans(self) -> list[Span]:
        """Each partition's events since ``begin``, its first and last commit of them
        (``alert.received`` and the routed fact, appended together) and how many its
        first commit held."""
        out = []
        for watch in self.watches:
            first = watch.first_ts.get("alert.received", 0)
            last = max(watch.last_ts.get("alert.received", 0), watch.last_ts.get(self._routed, 0))
            held = watch.count_at("alert.received", first) if first else 0
            out.append(Span(watch.count("alert.received"), first, last, held))
        return out

    async def last_forward_us(self) -> int | None:
        """When the partitioner's last forward was stored (TOCSIN_PART's ``last_ts``,
        wall-clock µs of this machine); ``None`` with one partition (no partitioner)
        or when the stream does not say. nats-py's ``StreamState`` drops the times, so
        this asks the JetStream API itself."""
        if self.partitions == 1 or self._nc is None:
            return None
        answer = await self._nc.request(f"$JS.API.STREAM.INFO.{STREAM_PART}", b"", timeout=10)
        state = json.loads(answer.data).get("state") or {}
        try:
            return parse_rfc3339(state["last_ts"]) if state.get("last_seq") else None
        except (KeyError, ValueError):
            return None

    def role_cpu(self) -> dict[str, float]:
        """CPU seconds so far of each role's processes (summed), and of the broker."""
        cpu = {
            role: sum(c.cpu_seconds() for c in children) for role, children in self.roles.items()
        }
        cpu = {role: seconds for role, seconds in cpu.items() if self.roles[role]}
        if self._nats is not None:
            cpu["nats-server"] = self._nats.cpu_seconds()
        return cpu

    def usage(self) -> Usage:
        children = self._children()
        broker = self._nats.cpu_seconds() if self._nats is not None else None
        return Usage(
            sum(c.rss_mib() for c in children), sum(c.cpu_seconds() for c in children), broker
        )

    def pid(self) -> int:
        return self.roles["routers"][0].pid

    def alive(self) -> None:
        for child in [c for c in (self._nats,) if c is not None] + self._children():
            child.check()


# The scaling table's rows: a label, its unit, the better direction, the figure of a run.
ScaleRow = tuple[str, str, str, Callable[[Result], Any]]


def core_per_router(result: Result) -> float | None:
    """What the routers alone would commit with a core each (a machine per partition):
    partitions x 1,000,000 / their CPU µs per event. Their CPU per event is what a busy
    shared machine moves least; their rate here is what other work on its two cores moves
    most."""
    us = report.pick("alone", "cpu_us_per_event", "routers")(result)
    n = result.get("partitions")
    return n * 1e6 / us if report.is_number(us) and us > 0 and isinstance(n, int) else None


ROWS: list[ScaleRow] = [
    # Routers alone: no tocsin deliver, the storm until every event is committed.
    ("routers alone: events committed/s, first to last commit, all logs", "events/s", "higher",
     report.pick("alone", "router_stage", "per_second")),
    ("routers alone: partitioner(s) forwarded/s, first publish to last forward", "events/s",
     "higher", report.pick("alone", "router_stage", "forwarded_per_second")),
    ("routers alone: CPU of the router(s) per event, µs", "µs", "lower",
     report.pick("alone", "cpu_us_per_event", "routers")),
    ("routers alone, a core per router (estimate: partitions x 1e6 / router µs per event), "
     "events/s", "events/s", "higher", core_per_router),
    ("routers alone: CPU of tocsin partition per event, µs", "µs", "lower",
     report.pick("alone", "cpu_us_per_event", "partitioner")),
    ("routers alone: CPU of nats-server per event, µs", "µs", "lower",
     report.pick("alone", "cpu_us_per_event", "nats-server")),
    # The pipeline: W1 end to end, tocsin deliver beside the routers.
    ("pipeline: events committed/s, first to last commit, all logs", "events/s", "higher",
     report.pick("router_stage", "per_second")),
    ("pipeline: partitioner(s) forwarded/s, first publish to last forward", "events/s",
     "higher", report.pick("router_stage", "forwarded_per_second")),
    ("pipeline: the partitioner's last forward to the last commit, s", "s", "lower",
     report.pick("router_stage", "last_forward_to_last_commit_seconds")),
    ("pipeline: events committed + routed/s from the first publish", "events/s", "higher",
     report.pick("W1", "committed_per_second")),
    ("pipeline, end to end: notifications/s until every one arrived", "/s", "higher",
     report.pick("W1", "notifications_per_second")),
    ("pipeline: all {events:,} notified after the first publish, s", "s", "lower",
     report.pick("W1", "all_notified_seconds")),
    ("pipeline: accepted by the broker, events/s", "events/s", "higher",
     report.pick("W1", "accepted_per_second")),
    ("pipeline: CPU of tocsin partition, s", "s", "lower", report.pick("cpu", "partitioner")),
    ("pipeline: CPU of the router(s), s", "s", "lower", report.pick("cpu", "routers")),
    ("pipeline: CPU of tocsin deliver, s", "s", "lower", report.pick("cpu", "deliver")),
    ("pipeline: CPU of nats-server, s", "s", "lower", report.pick("cpu", "nats-server")),
    ("pipeline: CPU of the bench (publisher, receiver, log polls), s", "s", "lower",
     report.pick("cpu", "bench")),
    ("pipeline: CPU of the router(s) per event (outcomes recorded too), µs", "µs", "lower",
     report.pick("cpu_us_per_event", "routers")),
    ("pipeline: CPU of tocsin deliver per notification, µs", "µs", "lower",
     report.pick("cpu_us_per_event", "deliver")),
    ("pipeline: CPU of every tocsin process per event, µs", "µs", "lower",
     report.pick("W1", "cpu_us_per_event")),
]  # fmt: skip
HEADLINE = {  # the ratios the issue asks for
    "routers alone": report.pick("alone", "router_stage", "per_second"),
    "routers with a core each (estimate)": core_per_router,
    "router stage beside delivery": report.pick("router_stage", "per_second"),
    "end to end": report.pick("W1", "notifications_per_second"),
}


def _sides(results: Result) -> list[tuple[int, list[Result]]]:
    """(partition count, its runs) in the order of the counts measured."""
    scaling = results.get("scaling") or {}
    sides = scaling.get("sides") or {}
    return [
        (int(n), report.runs_of(sides.get(str(n)) or {})) for n in scaling.get("partitions", [])
    ]


@dataclass(frozen=True)
class ScaleLine:
    label: str
    cells: list[str]  # one per partition count
    ratios: list[str]  # one per count after the first: its median / the first's
    better: str


def lines(results: Result) -> list[ScaleLine]:
    """Every row with a figure for some count, each count's median (range), and the ratio
    of each count's median to the first count's."""
    sides = _sides(results)
    events = (results.get("loads") or {}).get("storm_events", 0)
    out = []
    for label, unit, better, value in ROWS:
        figures = [report.figure([value(run) for run in runs]) for _, runs in sides]
        if all(f is None for f in figures):
            continue
        base = figures[0]
        out.append(
            ScaleLine(
                label.format(events=events),
                [report.cell(f, unit) for f in figures],
                [report.ratio_text(report.ratio_of(f, base)) for f in figures[1:]],
                {"higher": "↑", "lower": "↓"}[better],
            )
        )
    return out


def headline(results: Result) -> str:
    """One sentence with the ratios the issue asks for: the router stage's (alone, and
    beside delivery) and the end to end rate's, each count over the first; a measure no
    run of the first count has is left out."""
    sides = _sides(results)
    if len(sides) < 2:
        return ""
    first = sides[0][0]
    parts = []
    for name, value in HEADLINE.items():
        base = report.figure([value(run) for run in sides[0][1]])
        if base is None:
            continue
        ratios = [
            f"{n}/{first}: "
            + report.ratio_text(report.ratio_of(report.figure([value(r) for r in runs]), base))
            for n, runs in sides[1:]
        ]
        parts.append(f"{name} {', '.join(ratios)}")
    return "Scaling (ratio of the medians): " + "; ".join(parts) + "."


def problems(results: Result) -> list[str]:
    """Errors, timeouts and skipped runs of every count, named by count and run."""
    notes = []
    for n, runs in _sides(results):
        for number, run in enumerate(runs, 1):
            which = f"{partitions_label(n)}, run {number}"
            if run.get("skipped"):
                notes.append(f"{which}: skipped, over the time budget")
            if run.get("error"):
                notes.append(f"{which}: {run['error']}")
            alone = run.get("alone") or {}
            for problem in [
                *(run.get("W1") or {}).get("timeouts", []),
                *(f"routers alone: {t}" for t in alone.get("timeouts", [])),
            ]:
                notes.append(f"{which}: {problem}")
            for what, stage in (
                ("", run.get("router_stage")),
                ("routers alone: ", alone.get("router_stage")),
            ):
                if stage and stage.get("partitioner_bound"):
                    notes.append(
                        f"{which}: {what}the routers committed as fast as `tocsin partition` "
                        f"forwarded (last commit {stage['last_forward_to_last_commit_seconds']:.2f}"
                        " s after its last forward): the router stage's figure is the "
                        "partitioner's rate, a lower bound of the routers'."
                    )
    return notes


def _runs_note(results: Result) -> str:
    runs = results.get("runs", 1)
    if runs == 1:
        return "One run (--runs 1): each cell is that run's figure."
    return (
        f"Each cell is the median of {runs} runs (min-max), the partition counts taking "
        "turns run by run; the ratio is of the medians."
    )


def markdown(results: Result) -> str:
    """The scaling table for ``latest.md`` and docs/performance.md, with the command."""
    sides = _sides(results)
    if not sides:
        return ""
    counts = [n for n, _ in sides]
    first = counts[0]
    events = results["loads"]["storm_events"]
    partitioners = (results.get("scaling") or {}).get("partitioners", 1)
    head = [
        f"**Partitions: scaling.** W1, {events:,} distinct events, on the partitioned shape "
        f"(DESIGN.md section 17), one process per part on this machine: nats-server, "
        f"{partitioners} `tocsin partition` (with 2 partitions or more), "
        "`tocsin router --partition k` per "
        "partition, `tocsin deliver`, the bench's receiver. **Routers alone**: the same "
        "without `tocsin deliver`, so that the routers, the partitioner and the broker have "
        "the two cores to themselves (the nearest this machine comes to a machine per "
        "partition). **Pipeline**: W1 end to end, `tocsin deliver` beside the routers.",
        "",
        "| figure | " + " | ".join(partitions_label(n) for n in counts) + " | "
        + " | ".join(f"{n} / {first}" for n in counts[1:]) + " |",
        "|---|" + "---:|" * (len(counts) * 2 - 1),
    ]  # fmt: skip
    body = [
        f"| {line.label} {line.better} | " + " | ".join(line.cells + line.ratios) + " |"
        for line in lines(results)
    ]
    notes = ["", headline(results), _runs_note(results), f"Command: `{results['command']}`."]
    notes.extend(f"- {problem}" for problem in problems(results))
    return "\n".join(head + body + notes) + "\n"


def text(results: Result) -> str:
    """The same table for the console."""
    sides = _sides(results)
    if not sides:
        return ""
    rendered = lines(results)
    counts = [n for n, _ in sides]
    width = max(len(line.label) for line in rendered) + 4 if rendered else 40
    cells = max([14, *(len(c) for line in rendered for c in line.cells)]) + 2
    out = [
        f"command: {results['command']} (scaling, W1)",
        f"  {'figure':<{width}}"
        + "".join(f"{partitions_label(n):>{cells}}" for n in counts)
        + "".join(f"{f'{n} / {counts[0]}':>10}" for n in counts[1:]),
    ]
    for line in rendered:
        out.append(
            f"  {line.label + ' ' + line.better:<{width}}"
            + "".join(f"{c:>{cells}}" for c in line.cells)
            + "".join(f"{r:>10}" for r in line.ratios)
        )
    out += ["", headline(results), _runs_note(results), *problems(results), ""]
    return "\n".join(out)
