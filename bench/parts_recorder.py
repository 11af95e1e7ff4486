"""The recorder's CPU per outcome, alone: ``tocsin serve``'s work per delivered notification.

In W1 ``tocsin serve`` spends ~130 us of CPU an event, of which the router is ~64
(``parts_router.py``); most of the rest is the recorder's: pulling each outcome from
TOCSIN_OUT, decoding it, deciding its fact under the ledger's lock, folding it, the
metrics of its commit, its row (written by the log's thread) and the acks. This times
that part alone, as serve runs it.

For each run: a fresh ``nats-server`` and data dir. ``tocsin router`` (the router and
the recorder, as ``tocsin serve`` runs them, with the same ledger listeners and
metrics) routes ``--n`` distinct alerts preloaded on TOCSIN_IN, and its outbox
publishes their work items to TOCSIN_WORK. Once they are all there, each work item's
outcome, as the delivery child publishes it when its notification is delivered (the
delivery worker's own encoders, ``delivery._ADDED`` and ``_extended``, and its
Nats-Msg-Id), is published to TOCSIN_OUT, in windows of ``WINDOW`` PubAcks, as W1's
delivery child does while its notifications go out. The same process records them:
its router has nothing left to take, and its ``Recorder`` takes the ``--n`` outcomes
with the routed notifications still in its metrics (each delivery's latency is
recorded, as in W1).

The figure is that process's CPU (user + system, from ``/proc/<pid>/stat``; its log
writer thread included, which writes the rows) from the first outcome committed until
every outcome is, divided by the outcomes committed in between, so the start and the
routing before are not charged to them. CPU by thread is printed
beside it (``loop``: the event loop's; ``thread1``: the log's writer). The run checks
the log holds ``--n`` ``delivery.succeeded`` facts.

Each run is repeated ``--runs`` times (default 3); the median is the figure, the range
is printed beside it. ``--profile DIR`` py-spies the last run's recording: the collapsed stacks
(``recorder.txt``) and ``bench/profile.py``'s summary of them (``recorder-summary.txt``,
printed too).

Run: .venv/bin/python bench/parts_recorder.py [--n 20000] [--runs 3] [--profile DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec
import nats

ROOT = Path(__file__).resolve().parent.parent
# The repository, not bench/ (whose profile.py would shadow the standard library's).
sys.path[0] = str(ROOT)

from tests.support import NatsServer

from bench.parts_router import by_thread, cpu_seconds, py_spy, spread, thread_cpu
from bench.profile import RATE, summarize
from bench.router_throughput import TOCSIN, count, preload, query
from tocsin.bus.publisher import Publisher
from tocsin.core.contracts import DeliverySucceeded, Notification, WorkItem
from tocsin.core.outbound import Outbound
from tocsin.core.subjects import DELIVERED, STREAM_WORK, route_subject
from tocsin.core.times import format_us, now_us
from tocsin.pipeline.delivery import _ADDED, _extended

RECEIVER = "hook"
CONFIG = (
    '[[route]]\nmatch = {}\nreceivers = ["hook"]\n'
    '[receivers.hook]\nchannel = "webhook"\nurl = "http://127.0.0.1:9/"\n'
)
POLL = 0.05  # seconds between the bench's cheap looks at the log (indexed queries)
WINDOW = 1000  # outcomes published per batch of PubAcks
TICK = 0.01  # seconds between two windows of outcomes published at a --rate


@dataclass(frozen=True)
class Run:
    steady_us: float  # CPU per outcome from the first outcome committed to the last
    outcomes_per_second: float  # committed, from the log's own append times
    threads_us: dict[str, float]  # steady_us by thread name


def recorded(db: Path) -> int:
    """Facts recorded from TOCSIN_OUT (``out_seq`` is indexed: cheap while it runs)."""
    return int(query(db, "SELECT COUNT(*) FROM events WHERE out_seq IS NOT NULL")[0])


async def until(
    what: str, predicate: object, process: subprocess.Popen[bytes], timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(predicate):  # type: ignore[arg-type]
        if process.poll() is not None:
            raise SystemExit(f"tocsin router exited with {process.returncode} ({what})")
        if time.monotonic() > deadline:
            raise SystemExit(f"{what}: not within {timeout}s")
        await asyncio.sleep(POLL)


async def stopped(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    await asyncio.to_thread(process.wait)


async def work_items(url: str, n: int, timeout: float) -> list[WorkItem]:
    """The ``n`` work items the router's outbox published, once they are all stored."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        deadline = time.monotonic() + timeout
        while (await js.stream_info(STREAM_WORK)).state.messages < n:
            if time.monotonic() > deadline:
                raise SystemExit(f"fewer than {n} work items within {timeout}s")
            await asyncio.sleep(POLL)
        sub = await js.pull_subscribe(route_subject(RECEIVER), "bench-parts-recorder")
        items: list[WorkItem] = []
        decoder = msgspec.json.Decoder(WorkItem)
        while len(items) < n:
            for msg in await sub.fetch(min(WINDOW, n - len(items)), timeout=10):
                items.append(decoder.decode(msg.data))
                await msg.ack()
        return items
    finally:
        await nc.close()


def outcome(item: WorkItem) -> Outbound:
    """The delivery worker's outcome for ``item`` delivered at its first attempt: its
    bytes and message id as ``ReceiverWorker._outcome`` makes them."""
    notification = item.notification
    assert isinstance(notification, Notification)
    added = _ADDED[DeliverySucceeded](
        channel="webhook",
        log_seq=item.log_seq,
        trace_id=item.trace_id,
        attempts=1,
        delivered_at=format_us(now_us()),
        status_code=200,
    )
    payload = _extended(notification, added)
    return Outbound(DELIVERED, payload, f"{notification.notification_id}:delivered")


async def publish_outcomes(url: str, items: list[WorkItem], rate: float) -> None:
    """Publish the outcomes of ``items``: as fast as their PubAcks come back, or, with
    a ``rate``, that many a second, a tick's worth at a time (``TICK``)."""
    nc = await nats.connect(url)
    try:
        publisher = Publisher(nc)
        window = max(1, round(rate * TICK)) if rate else WINDOW
        started = time.monotonic()
        for start in range(0, len(items), window):
            if rate:
                await asyncio.sleep(max(0.0, started + start / rate - time.monotonic()))
            batch = [outcome(item) for item in items[start : start + window]]
            if not all(await publisher.publish(batch)):
                raise SystemExit("outcomes not stored")
        await publisher.close()
    finally:
        await nc.close()


async def one_run(n: int, rate: float, timeout: float, profile: str | None) -> Run:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        server = NatsServer(tmp / "js")
        server.start()
        config = tmp / "bench.toml"
        config.write_text(CONFIG)
        data = tmp / "data"
        db = data / "tocsin.db"
        argv = [TOCSIN, "--log-level", "warning", "router", "--data-dir", str(data),
                "--nats-url", server.url, "--config", str(config)]  # fmt: skip
        try:
            await preload(server.url, n, n)
            process = await asyncio.to_thread(subprocess.Popen, argv, stdout=subprocess.DEVNULL)
            try:
                items = await work_items(server.url, n, timeout)
                publishing = asyncio.create_task(publish_outcomes(server.url, items, rate))
                await until("the first outcome", lambda: recorded(db) > 0, process, timeout)
                cpu_first, first = cpu_seconds(process.pid), recorded(db)
                threads_first = thread_cpu(process.pid)
                spy = py_spy(process.pid, profile) if profile is not None else None
                await until("every outcome", lambda: recorded(db) >= n, process, timeout)
                cpu_last, last = cpu_seconds(process.pid), recorded(db)
                threads_last = thread_cpu(process.pid)
                await publishing
                if spy is not None:
                    spy.send_signal(signal.SIGINT)
                    await asyncio.to_thread(spy.wait)
            finally:
                await stopped(process)
            succeeded = count(db, "delivery.succeeded")
            if succeeded != n:
                raise SystemExit(f"{succeeded} delivery.succeeded facts for {n} outcomes")
            span = query(db, "SELECT MIN(ts), MAX(ts) FROM events WHERE kind='delivery.succeeded'")
        finally:
            server.stop()
    taken = max(last - first, 1)
    return Run(
        steady_us=(cpu_last - cpu_first) * 1e6 / taken,
        outcomes_per_second=n / max((span[1] - span[0]) / 1e6, 1e-6),
        threads_us={
            name: (cpu - threads_first.get(name, 0.0)) * 1e6 / taken
            for name, cpu in threads_last.items()
        },
    )


def summarized(collapsed: Path) -> str:
    """``bench/profile.py``'s summary of py-spy's stacks, kept beside them."""
    # py_spy samples at 250/s, not at the rate bench/profile.py's own profiler uses.
    summary = summarize(collapsed.read_text()).replace(f" at {RATE}/s", " at 250/s")
    collapsed.with_name("recorder-summary.txt").write_text(summary)
    return summary


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20_000, help="outcomes per run")
    parser.add_argument("--runs", type=int, default=3, help="runs; the median is the figure")
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="outcomes published a second (W1's delivery: ~5,500); 0: as fast as acked",
    )
    parser.add_argument("--timeout", type=float, default=180)
    parser.add_argument("--profile", metavar="DIR", help="py-spy the last run")
    args = parser.parse_args()
    command = shlex.join(["python", "bench/parts_recorder.py", *sys.argv[1:]])
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
    runs: list[Run] = []
    for i in range(args.runs):
        out = None
        if args.profile and i == args.runs - 1:
            out = str(Path(args.profile) / "recorder.txt")
        runs.append(await one_run(args.n, args.rate, args.timeout, out))
        if out is not None:
            print(await asyncio.to_thread(summarized, Path(out)))
        print(
            f"  run {i + 1}: {runs[-1].steady_us:6.1f} us CPU an outcome,"
            f" {runs[-1].outcomes_per_second:8,.0f}/s committed{' (profiled)' if out else ''}",
            flush=True,
        )
    paced = f" at {args.rate:,.0f}/s" if args.rate else ""
    print(
        f"recorder ({args.n:,} delivered outcomes{paced}, {args.runs} runs):"
        f" CPU {spread([r.steady_us for r in runs])} us/outcome after its first commit;"
        f" {spread([r.outcomes_per_second for r in runs])} outcomes/s committed"
    )
    print(f"    by thread (median us/outcome): {by_thread(r.threads_us for r in runs)}")
    print(f"recorder CPU per outcome: {statistics.median(r.steady_us for r in runs):.1f} µs")
    print(f"command: {command}")


if __name__ == "__main__":
    asyncio.run(main())
