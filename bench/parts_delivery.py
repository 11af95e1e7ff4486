"""Delivery's CPU per notification, end to end, through tocsin's own worker.

``ceiling_delivery.py`` times the parts alone; this times them assembled as ``tocsin
serve`` runs them: a ``ReceiverWorker`` of the webhook channel (the service's code, with
its metrics, non-recording spans, secrets and order record) pulls ``--n`` work items from
TOCSIN_WORK, POSTs each to a receiver on 127.0.0.1, publishes each outcome and waits for
its PubAck, then acks the item. The work items are published before the clock starts.

What is counted is the CPU of this process only (``getrusage``: user and system) while the worker
runs: the receiver (``bench/receiver.py``) and nats-server run in their own processes,
and wall time is shown but not the figure (the machine is shared). The run ends when
the consumer has nothing pending and nothing waiting for an ack, and the outcomes in
TOCSIN_OUT are checked to number ``--n``. ``--runs`` runs, each on a fresh receiver
name; the median is the figure. ``--profile`` adds cProfile's top functions of one run
(profiling inflates every figure: read it for the shares, not the total).

Run: .venv/bin/python bench/parts_delivery.py [--n 20000] [--runs 3] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import resource
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import msgspec
import nats
from nats.js import JetStreamContext

ROOT = Path(__file__).resolve().parent.parent
# The repository, not bench/ (whose profile.py would shadow the standard library's).
sys.path[0] = str(ROOT)

import cProfile
import pstats

from tests.support import NatsServer

from tocsin import __version__
from tocsin.bus.publisher import Publisher
from tocsin.bus.streams import deliver_consumer_config, ensure_consumer, ensure_streams
from tocsin.channels import ChannelEnv
from tocsin.channels.webhook import KIND as WEBHOOK
from tocsin.channels.webhook import WebhookConfig
from tocsin.cli import run as run_on_chosen_loop
from tocsin.config import RetrySection
from tocsin.core.contracts import Notification, WorkItem
from tocsin.core.ids import traceparent_for
from tocsin.core.outbound import Outbound
from tocsin.core.subjects import STREAM_OUT, STREAM_WORK, deliver_consumer, route_subject
from tocsin.observability.redact import Secrets
from tocsin.observability.telemetry import Metrics
from tocsin.observability.tracing import Tracing
from tocsin.pipeline.delivery import ReceiverWorker

TARGET_US = 120.0
CONCURRENCY = 32  # [delivery] concurrency's default
RAISE = False  # --raise-order
RECEIVER_SCRIPT = ROOT / "bench" / "ceiling_delivery.py"  # its --serve-receiver


def work_item(receiver: str, i: int, raise_order: bool = False) -> Outbound:
    """The ``i``-th work item for ``receiver``: a distinct alert's firing, traced, as the
    router's outbox publishes it (nothing older of its fingerprint open, so it does not
    raise the order record, ``order.must_raise``; ``raise_order``: as if it did)."""
    trace_id = f"{i + 1:032x}"
    notification = Notification(
        notification_id=f"01JD{receiver[-2:]:0>2}{i:020d}",
        reason="firing",
        alert_id=f"01JE{i:022d}",
        fingerprint=f"{i:016x}",
        dedup_key=f"bench:{i}",
        type="bench_alert",
        severity="critical",
        status="firing",
        summary=f"bench event {i}",
        source="bench",
        labels={"fp": str(i)},
        details={},
        first_seen="2026-01-01T00:00:00.000000Z",
        last_seen="2026-01-01T00:00:00.000000Z",
        occurrences=1,
        suppressed_count=0,
        receiver=receiver,
    )
    item = WorkItem(
        notification=notification, log_seq=i + 1, trace_id=trace_id, raise_order=raise_order
    )
    return Outbound(
        route_subject(receiver),
        msgspec.json.encode(item),
        notification.notification_id,
        headers={"traceparent": traceparent_for(trace_id)},
    )


def by_package(profile: cProfile.Profile, n: int) -> str:
    """Where the profiled run's time went, by package (own time of its functions), in
    us per notification: the shares are what to read (profiling inflates them all)."""
    shares: dict[str, float] = {}
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    for (file, _, function), (_, _, own, _, _) in stats.items():
        if "site-packages/" in file:
            package = file.split("site-packages/")[1].split("/")[0]
        elif "/tocsin/" in file:
            package = "tocsin." + file.split("/tocsin/")[1].split("/")[0].removesuffix(".py")
        elif "asyncio" in file:
            package = "asyncio"
        elif file == "~":
            package = "builtins: " + function.split(" of ")[0].strip("{}<>'")
        else:
            package = "stdlib: " + Path(file).stem
        shares[package] = shares.get(package, 0.0) + own
    total = sum(shares.values())
    lines = [f"  profiled: {total * 1e6 / n:.0f} us a notification, by package (own time):"]
    for package, own in sorted(shares.items(), key=lambda kv: -kv[1])[:20]:
        lines.append(f"    {package:<48} {own * 1e6 / n:7.1f} us {own / total:6.1%}")
    return "\n".join(lines)


async def settled(js: JetStreamContext, receiver: str, patience: float) -> None:
    """Until the receiver's consumer holds nothing pending or unacked (polled: a few
    dozen requests per run, nothing next to ``--n`` deliveries)."""
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        info = await js.consumer_info(STREAM_WORK, deliver_consumer(receiver))
        if not info.num_pending and not info.num_ack_pending and info.delivered.stream_seq:
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"delivery to {receiver} did not settle within {patience:.0f}s")


async def one_run(
    nc: nats.NATS, url: str, n: int, run: int, profile: cProfile.Profile | None
) -> tuple[float, float, float]:
    """CPU seconds (user, system) and wall seconds of delivering ``n`` items to a fresh
    receiver."""
    js = nc.jetstream()
    receiver = f"hook{run:02d}"
    await ensure_consumer(js, STREAM_WORK, deliver_consumer_config(receiver, 10.0))
    publisher = Publisher(nc)
    for start in range(0, n, 1000):
        batch = [work_item(receiver, i, RAISE) for i in range(start, min(n, start + 1000))]
        if not all(await publisher.publish(batch)):
            raise RuntimeError("work items not stored")
    out_before = (await js.stream_info(STREAM_OUT)).state.messages
    config = WebhookConfig(channel="webhook", url=url)
    channel = WEBHOOK.build(receiver, config, ChannelEnv(version=__version__))
    worker = ReceiverWorker(
        nc,
        publisher,
        receiver,
        channel,
        RetrySection(),
        CONCURRENCY,
        progress_every=10.0,
        metrics=Metrics(),
        tracing=Tracing(),
        secrets=Secrets(),
        ack_wait=30.0,
    )
    stop = asyncio.Event()
    if profile is not None:
        profile.enable()
    usage, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    running = asyncio.create_task(worker.run(stop))
    await settled(js, receiver, 600.0)
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_SELF)
    user, system = after.ru_utime - usage.ru_utime, after.ru_stime - usage.ru_stime
    if profile is not None:
        profile.disable()
    stop.set()
    await running
    await publisher.close()
    outcomes = (await js.stream_info(STREAM_OUT)).state.messages - out_before
    if outcomes != n:
        raise RuntimeError(f"{outcomes} outcomes stored for {n} work items")
    return user, system, wall


async def main(args: argparse.Namespace) -> None:
    global RAISE
    RAISE = args.raise_order
    command = shlex.join([".venv/bin/python", "bench/parts_delivery.py", *sys.argv[1:]])
    print(f"delivery per notification, n={args.n:,}, concurrency {CONCURRENCY}: {command}")
    print("every item raises the order record" if RAISE else "no item raises the order record")
    print(f"event loop: {type(asyncio.get_running_loop()).__module__.split('.')[0]}")
    with tempfile.TemporaryDirectory() as tmp:
        port_file = Path(tmp) / "port"
        receiver = await asyncio.create_subprocess_exec(
            sys.executable, str(RECEIVER_SCRIPT), "--serve-receiver", str(port_file)
        )
        server = NatsServer(Path(tmp) / "js")
        server.start()
        try:
            deadline = time.monotonic() + 10
            while not port_file.exists() or not port_file.read_text():
                if time.monotonic() > deadline or receiver.returncode is not None:
                    raise RuntimeError("the receiver did not start")
                await asyncio.sleep(0.02)
            url = f"http://127.0.0.1:{int(port_file.read_text())}/hook"
            nc = await nats.connect(server.url)
            try:
                await ensure_streams(nc.jetstream())
                figures = []
                for run in range(args.runs):
                    profile = cProfile.Profile() if args.profile and run == 0 else None
                    user, system, wall = await one_run(nc, url, args.n, run, profile)
                    figures.append((user + system) * 1e6 / args.n)
                    print(
                        f"  run {run + 1}: {figures[-1]:6.1f} us CPU each"
                        f" (user {user * 1e6 / args.n:.1f}, system {system * 1e6 / args.n:.1f}),"
                        f" {args.n / wall:8,.0f}/s{' (profiled)' if profile else ''}",
                        flush=True,
                    )
                    if profile is not None:
                        print(by_package(profile, args.n))
                        text = io.StringIO()
                        stats = pstats.Stats(profile, stream=text).sort_stats("tottime")
                        stats.print_stats(args.top)
                        print(text.getvalue())
            finally:
                await nc.close()
        finally:
            server.stop()
            receiver.terminate()
            await asyncio.wait_for(receiver.wait(), 10)
    counted = figures[1:] if args.profile and len(figures) > 1 else figures
    median = statistics.median(counted)
    spread = f" (runs: {', '.join(f'{f:.1f}' for f in counted)})"
    print(f"delivery CPU per notification: {median:.1f} µs (target <= {TARGET_US:.0f}){spread}")
    print(f"command: {command}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20_000, help="work items per run")
    parser.add_argument("--runs", type=int, default=3, help="runs; the median is the figure")
    parser.add_argument("--profile", action="store_true", help="cProfile the first run")
    parser.add_argument(
        "--raise-order",
        action="store_true",
        help="every item raises the order record (as when an older one of its key is open)",
    )
    parser.add_argument("--top", type=int, default=40, help="functions the profile lists")
    # The worker runs in this process: on the loop TOCSIN_EVENT_LOOP chooses, as in tocsin.
    run_on_chosen_loop(main(parser.parse_args()))
