"""Where W3's latency goes, phase by phase, from tocsin's own spans.

Runs ``tocsin serve`` against a fresh nats-server with trace export (OTLP/HTTP) to a
collector in this process, sends distinct alerts at W3's rate, and matches each
event's router span and delivery span (one trace) with its publish and its receipt
at the webhook (also in this process, wall clock):

  publish -> route start       the event waiting in JetStream for the router's pull
  route span                   triage, the commit (queued behind earlier commits),
                               the work item's publish and PubAck, the ack
  route end -> deliver start   the work item waiting for a delivery worker's pull
  deliver start -> receipt     the webhook POST until the receiver has it

Recording spans costs ~130 us each. With ``--stages`` tracing is off and the same run
is split finer by timestamps taken inside both tocsin processes
(``bench/stages_probe.py``: a few us a stage), from the publish to the POST's bytes on
the socket and the webhook's receipt.

Run: .venv/bin/python bench/w3_phases.py [--seconds 8] [--rate 200] [--stages]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nats
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import free_port

BIN = Path(sys.executable).parent

# The route span's own events (router.Decided.mark) split it further.
MILESTONES = ("decided", "committed", "published")
ROUTE_PARTS = (
    "  decide + the batch ahead",
    "  commit (queued)",
    "  work item publish + PubAck",
    "  ack",
)
PHASES = ("publish -> route start", "route span", *ROUTE_PARTS, "route end -> deliver start")
PHASES += ("deliver start -> receipt", "total")

# With --stages: (phase, from stage, to stage); "sent" and "receipt" are this process's.
STAGES = (
    ("publish -> serve has it (JetStream hop)", "sent", "in"),
    ("  -> the router's pull returns it", "in", "in_taken"),
    ("  -> the router begins its batch", "in_taken", "begun"),
    ("  -> decided, rows queued to the log", "begun", "queued"),
    ("  -> the log's thread starts the commit", "queued", "write_start"),
    ("  the commit (thread)", "write_start", "write_end"),
    ("  -> the event loop has its result", "write_end", "advanced"),
    ("  -> the router sees it committed", "advanced", "committed"),
    ("  -> work item PUB queued", "committed", "work_sent"),
    ("work item queued -> delivery has it (hop)", "work_sent", "work"),
    ("  -> the worker's pull returns it", "work", "work_taken"),
    ("  -> a sender starts on it", "work_taken", "deliver"),
    ("  -> handed to the channel", "deliver", "send"),
    ("  -> the POST's bytes written", "send", "post"),
    ("POST written -> the webhook's handler has it", "post", "receipt"),
    ("serve: pull returned -> work item queued", "in_taken", "work_sent"),
    ("serve: rows queued -> on disk", "queued", "write_end"),
    ("serve: on disk -> work item queued", "write_end", "work_sent"),
    ("delivery: arrival -> POST written", "work", "post"),
    ("the router: PubAck after the PUB queued", "work_sent", "published"),
    ("total", "sent", "receipt"),
)


class Collector:
    """OTLP/HTTP traces and webhook receipts, both on one local aiohttp app."""

    def __init__(self) -> None:
        self.route: dict[str, tuple[int, int]] = {}  # trace id -> (start, end) ns
        self.milestones: dict[str, dict[str, int]] = {}  # trace id -> event name -> ns
        self.deliver: dict[str, tuple[int, int]] = {}
        self.receipts: dict[str, int] = {}  # summary -> ns
        self.expected = 0
        self.all_received = asyncio.Event()

    async def traces(self, request: web.Request) -> web.Response:
        export = ExportTraceServiceRequest()
        export.ParseFromString(await request.read())
        for resource in export.resource_spans:
            for scope in resource.scope_spans:
                for span in scope.spans:
                    times = (span.start_time_unix_nano, span.end_time_unix_nano)
                    if span.name == "route":
                        self.route[span.trace_id.hex()] = times
                        self.milestones[span.trace_id.hex()] = {
                            event.name: event.time_unix_nano for event in span.events
                        }
                    elif span.name.startswith("deliver"):
                        self.deliver[span.trace_id.hex()] = times
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def hook(self, request: web.Request) -> web.Response:
        now = time.time_ns()
        self.receipts.setdefault((await request.json())["summary"], now)
        if self.expected and len(self.receipts) >= self.expected:
            self.all_received.set()
        return web.Response(text="ok")


async def run(
    seconds: float, rate: float, stages: bool = False, tail: float = 0.0
) -> dict[str, list[float]]:
    """One W3 run in a directory of its own (the broker's store, the log, the probe's
    files), removed when the run's figures are read."""
    tmp = Path(tempfile.mkdtemp(prefix="tocsin-w3-"))
    try:
        return await _run_in(tmp, seconds, rate, stages, tail)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


async def _run_in(
    tmp: Path, seconds: float, rate: float, stages: bool, tail: float
) -> dict[str, list[float]]:
    nats_port, api_port, port = free_port(), free_port(), free_port()
    collector = Collector()
    app = web.Application()
    app.router.add_post("/v1/traces", collector.traces)
    app.router.add_post("/hook", collector.hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    config = tmp / "tocsin.toml"
    config.write_text(
        '[[route]]\nmatch = {}\nreceivers = ["hook"]\n\n[receivers.hook]\n'
        f'channel = "webhook"\nurl = "http://127.0.0.1:{port}/hook"\n'
    )
    server = await asyncio.create_subprocess_exec(
        *[str(BIN / "nats-server"), "-js", "-a", "127.0.0.1", "-p", str(nats_port)],
        *["-sd", str(tmp / "jetstream")],
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    if stages:  # tracing off; every tocsin process runs the probe (see stages_probe)
        probe = tmp / "probe"
        probe.mkdir()
        (probe / "sitecustomize.py").write_text(
            "import bench.stages_probe\nbench.stages_probe.install()\n"
        )
        path = os.pathsep.join([str(probe), str(ROOT), os.environ.get("PYTHONPATH", "")])
        env = {**os.environ, "PYTHONPATH": path, "TOCSIN_STAGES": str(probe)}
    else:
        env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"}
        env["OTEL_BSP_SCHEDULE_DELAY"] = "200"
    tocsin = await asyncio.create_subprocess_exec(
        *[str(BIN / "tocsin"), "--log-level", "warning", "serve", "--data-dir", str(tmp / "data")],
        *["--nats-url", f"nats://127.0.0.1:{nats_port}", "--config", str(config)],
        *["--http", f"127.0.0.1:{api_port}"],
        env=env,
    )
    sent: dict[str, int] = {}
    try:
        nc = await connect(f"nats://127.0.0.1:{nats_port}", 30)
        js = nc.jetstream()
        await ready(js, 30)
        started, count = time.perf_counter(), round(seconds * rate)
        for i in range(count):
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            key = f"w3-{i}"
            body = {"type": "w3", "severity": "error", "summary": key, "labels": {"i": str(i)}}
            sent[key] = time.time_ns()
            await js.publish("alerts.in.bench", json.dumps(body).encode())
        collector.expected = count
        with contextlib.suppress(TimeoutError):  # what arrived is reported
            await asyncio.wait_for(collector.all_received.wait(), 30)
        await nc.close()
    finally:
        tocsin.terminate()
        await asyncio.wait_for(tocsin.wait(), 30)  # flushes its spans to us meanwhile
        server.terminate()
        await asyncio.wait_for(server.wait(), 10)
        await runner.cleanup()
    if stages:
        if tail:
            print(tail_report(tmp / "probe", collector, sent, tail))
        return staged(tmp / "probe", collector, sent)
    return phases(collector, sent)


def staged(probe: Path, collector: Collector, sent: dict[str, int]) -> dict[str, list[float]]:
    """Each event's stages (the earliest time each was noted, in any process's file),
    its publish and its receipt here: the ``STAGES`` differences in ms."""
    seen: dict[str, dict[str, int]] = {}
    for path in probe.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            stage, key, ns = json.loads(line)
            times = seen.setdefault(key, {})
            times[stage] = min(ns, times.get(stage, ns))
    out: dict[str, list[float]] = {name: [] for name, _, _ in STAGES}
    for key, at in sent.items():
        times = {**seen.get(key, {}), "sent": at}
        if key in collector.receipts:
            times["receipt"] = collector.receipts[key]
        for name, earlier, later in STAGES:
            if earlier in times and later in times:
                out[name].append((times[later] - times[earlier]) / 1e6)
    return out


# The chain of stages an event passes through, in order, and the process each runs in.
CHAIN = [(name, earlier, later) for name, earlier, later in STAGES[:15]]
SERVE_STAGES = {"in", "in_taken", "begun", "queued", "write_start", "write_end", "advanced"}
SERVE_STAGES |= {"committed", "work_sent"}


def _intervals(records: list[tuple[str, str, int]]) -> dict[str, list[tuple[int, int]]]:
    """``<label>_start`` / ``<label>_end`` records (keyed ``-``) as (start, end) per label;
    ``recorder_begun`` as an instant."""
    opened: dict[str, list[int]] = {}
    out: dict[str, list[tuple[int, int]]] = {}
    for stage, key, ns in sorted(records, key=lambda r: r[2]):
        if key != "-":
            continue
        if stage == "recorder_begun":
            out.setdefault("recorder_begun", []).append((ns, ns))
        elif stage.endswith("_start"):
            opened.setdefault(stage[: -len("_start")], []).append(ns)
        elif stage.endswith("_end"):
            label = stage[: -len("_end")]
            if opened.get(label):
                out.setdefault(label, []).append((opened[label].pop(), ns))
    return out


def tail_report(probe: Path, collector: Collector, sent: dict[str, int], fraction: float) -> str:
    """What the slowest ``fraction`` of events (publish -> receipt) waited behind: the
    stage that ran longest past its own median in each, and which periodic work of the
    process it ran in overlapped that stage, against how often the same work overlaps
    the same stage of any event (the base rate)."""
    seen: dict[str, dict[str, int]] = {}
    others: dict[str, dict[str, list[tuple[int, int]]]] = {}  # process -> label -> spans
    for path in probe.glob("*.jsonl"):
        records = [tuple(json.loads(line)) for line in path.read_text().splitlines()]
        process = "serve" if any(r[0] == "in" for r in records) else "delivery"
        for stage, key, ns in records:
            if key != "-":
                times = seen.setdefault(key, {})
                times[stage] = min(ns, times.get(stage, ns))
        for label, spans in _intervals(records).items():  # type: ignore[arg-type]
            others.setdefault(process, {})[label] = spans
    events: dict[str, dict[str, int]] = {}
    for key, at in sent.items():
        times = {**seen.get(key, {}), "sent": at}
        if key in collector.receipts:
            times["receipt"] = collector.receipts[key]
        if all(s in times for _, a, b in CHAIN for s in (a, b)):
            events[key] = times
    if not events:
        return "tail: no event has every stage"
    durations = {name: sorted(t[b] - t[a] for t in events.values()) for name, a, b in CHAIN}
    medians = {name: d[len(d) // 2] for name, d in durations.items()}
    by_total = sorted(events, key=lambda k: events[k]["receipt"] - events[k]["sent"])
    slow = by_total[-max(1, int(len(by_total) * fraction)) :]

    def overlapping(process: str, start: int, end: int) -> set[str]:
        hit = set()
        for label, spans in others.get(process, {}).items():
            i = bisect.bisect_left(spans, (start - 50_000_000, 0))  # spans < 50 ms long
            for s, e in spans[i:]:
                if s > end:
                    break
                if e >= start:
                    hit.add(label)
                    break
        return hit

    def worst(times: dict[str, int]) -> tuple[str, str, str, int]:
        name, a, b = max(CHAIN, key=lambda c: times[c[2]] - times[c[1]] - medians[c[0]])
        return name, a, b, times[b] - times[a] - medians[name]

    lines = [f"the slowest {len(slow)} of {len(events)} events (publish -> receipt):"]
    totals = [(events[k]["receipt"] - events[k]["sent"]) / 1e6 for k in slow]
    lines.append(f"  their total {totals[0]:.2f}-{totals[-1]:.2f} ms")
    dominant: dict[str, list[int]] = {}
    hits: dict[str, dict[str, int]] = {}
    for key in slow:
        name, a, b, excess = worst(events[key])
        dominant.setdefault(name, []).append(excess)
        process = "serve" if b in SERVE_STAGES else "delivery"
        for label in overlapping(process, events[key][a], events[key][b]):
            hits.setdefault(name, {}).setdefault(label, 0)
            hits[name][label] += 1
    for name, excesses in sorted(dominant.items(), key=lambda kv: -sum(kv[1])):
        excesses.sort()
        _, a, b = next(c for c in CHAIN if c[0] == name)
        process = "serve" if b in SERVE_STAGES else "delivery"
        base: dict[str, int] = {}
        for times in events.values():
            for label in overlapping(process, times[a], times[b]):
                base[label] = base.get(label, 0) + 1
        lines.append(
            f"  {len(excesses):4d} most past its median in {name.strip()!r}"
            f" (p50 {medians[name] / 1e6:.3f} ms): excess median"
            f" {excesses[len(excesses) // 2] / 1e6:.2f} ms, max {excesses[-1] / 1e6:.2f}"
        )
        for label, count in sorted(hits.get(name, {}).items(), key=lambda kv: -kv[1]):
            lines.append(
                f"         overlapped by {process}'s {label}: {count} of {len(excesses)}"
                f" ({100 * count / len(excesses):.0f}%; any event's same stage:"
                f" {100 * base.get(label, 0) / len(events):.1f}%)"
            )
    return "\n".join(lines)


async def connect(url: str, patience: float) -> nats.NATS:
    deadline = time.monotonic() + patience
    while True:
        try:
            return await nats.connect(url)
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def ready(js: nats.js.JetStreamContext, patience: float) -> None:
    """tocsin has made its streams (and a second more for its consumers)."""
    deadline = time.monotonic() + patience
    while True:
        try:
            await js.stream_info("TOCSIN_IN")
            await asyncio.sleep(1.0)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def phases(collector: Collector, sent: dict[str, int]) -> dict[str, list[float]]:
    """Route spans in start order are the events in publish order (one publisher, one
    router, a steady rate): that pairs each trace with its event."""
    routes = sorted(collector.route.items(), key=lambda item: item[1][0])
    keys = sorted(sent, key=sent.__getitem__)
    out: dict[str, list[float]] = {name: [] for name in PHASES}
    for (trace, (route_start, route_end)), key in zip(routes, keys, strict=False):
        if trace not in collector.deliver or key not in collector.receipts:
            continue
        deliver_start, _ = collector.deliver[trace]
        receipt = collector.receipts[key]
        marks = collector.milestones.get(trace, {})
        if not all(m in marks for m in MILESTONES):
            continue
        edges = [route_start, *(marks[m] for m in MILESTONES), route_end]
        for name, ns in zip(
            PHASES,
            (
                route_start - sent[key],
                route_end - route_start,
                *(later - earlier for earlier, later in itertools.pairwise(edges)),
                deliver_start - route_end,
                receipt - deliver_start,
                receipt - sent[key],
            ),
            strict=True,
        ):
            out[name].append(ns / 1e6)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument(
        "--stages", action="store_true", help="tracing off; timestamps inside tocsin instead"
    )
    parser.add_argument(
        "--tail",
        type=float,
        default=0.0,
        help="with --stages: what the slowest FRACTION of events waited behind (e.g. 0.05)",
    )
    args = parser.parse_args()
    result = asyncio.run(run(args.seconds, args.rate, args.stages, args.tail))
    print(f"{len(result['total'])} events {'staged' if args.stages else 'traced'}; ms:")
    for name, values in result.items():
        values.sort()
        if values:
            p50, p90 = values[len(values) // 2], values[int(len(values) * 0.9)]
            p99 = values[int(len(values) * 0.99)]
            print(
                f"  {name:44s} p50 {p50:7.3f}  p90 {p90:7.3f}  p99 {p99:7.2f}"
                f"  max {values[-1]:7.2f}"
            )
    print("command: .venv/bin/python bench/w3_phases.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
