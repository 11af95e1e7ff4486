"""``make soak``: tocsin under mixed load and chaos for a while, then every count exact
(issue #16).

For ``--minutes`` (10 for ``make soak``) the soak publishes steady alerts, bursts,
duplicates (the same ``Nats-Msg-Id`` again, and the same ``event_id`` under a new one),
resolves and bad input, and acks alerts and makes and lifts silences through the HTTP
API. In the first half (all but the last 5 minutes, at most) it SIGKILLs ``tocsin
serve`` and restarts it, SIGKILLs its ``nats-server`` and restarts it on its store, and
fills the log's disk once (a tmpfs of its own, with a ballast file, for ~20 s after
tocsin notices). One of the two webhook receivers flaps all along (time-outs, 500, 429
with ``Retry-After``, slow bodies, a long outage). The last part has no kills, so the
RSS of one ``tocsin serve`` is measured over it.

Then the load stops, the receivers answer 200, and after a bounded drain the soak
checks: what JetStream acknowledged against the log and ``/api/v1/stats``; every routed
notification delivered, dead-lettered or superseded (by a later one its receiver
accepted, checked against the log), nothing pending; no ``Idempotency-Key``
accepted twice except where DESIGN.md invariant 4 allows (counted and printed);
``tocsin verify``; live state = fold(log); the operator's confirmed requests in the log;
RSS flat over the last part (slope below ``--rss-slope`` MiB/min), drawn to
``docs/soak-rss.png``. Exit 1 when any check fails, naming it.

Every process it starts runs on 127.0.0.1 and is stopped by its PID.

Run: .venv/bin/python -m bench.soak [--minutes 10] [--keep] ...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench import report
from bench.procs import BenchError, Child, free_port, nats_server, venv_binary
from bench.soak_checks import (
    Chaos,
    Check,
    Disruption,
    Limits,
    RssFit,
    RssSample,
    judge,
    read_log,
    rss_fit,
)
from bench.soak_load import (
    BIG_TYPE,
    BURST_TYPE,
    GROUPS,
    STEADY_TYPE,
    Operator,
    Publisher,
)
from bench.soak_receiver import CYCLE, SoakReceiver
from tocsin.core.subjects import (
    RECORDER_CONSUMER,
    ROUTER_CONSUMER,
    STREAM_IN,
    STREAM_OUT,
    STREAM_WORK,
)

ROOT = Path(__file__).resolve().parent.parent
RECEIVER_TIMEOUT = 1.0  # seconds: each receiver's `timeout` in tocsin's config
TWICE_SLACK = RECEIVER_TIMEOUT + 9.0  # a send's outcome is published well within this
BROKER_DOWN_SECONDS = 5.0
BALLAST_SECONDS = 20.0  # how long the disk stays full once tocsin has noticed
NOTICE_TIMEOUT = 60.0  # longest the soak waits for tocsin to notice a fault
READY_TIMEOUT = 120.0
SAMPLE_EVERY = 2.0  # seconds between RSS and /readyz samples
BIG_DETAILS = {f"k{j}": "x" * 500 for j in range(12)}  # ~6 KB: every fact needs new pages


def _say(line: str) -> None:
    print(line, flush=True)


@dataclass(frozen=True)
class Plan:
    """The load and the chaos, from the command line."""

    minutes: float
    rate: float  # steady firing events per second
    fingerprints: int  # of the steady load
    burst_every: float
    burst_size: int
    burst_fingerprints: int
    resolve_every: float
    bad_every: float
    ack_every: float
    silence_every: float
    silence_seconds: float
    drain: float
    rss_window_minutes: float
    rss_slope: float  # MiB/min: "flat" means a fitted slope at most this
    fs_mib: int

    @property
    def load_seconds(self) -> float:
        return self.minutes * 60

    @property
    def rss_window(self) -> float:
        """The last part of the load, with no kill in it: RSS is judged there."""
        return min(self.rss_window_minutes * 60, self.load_seconds / 2)

    @property
    def chaos_seconds(self) -> float:
        return self.load_seconds - self.rss_window


@dataclass
class Timeline:
    """What happened when (seconds since the load started), for the checks and the plot."""

    started: float = field(default_factory=time.monotonic)
    disruptions: list[Disruption] = field(default_factory=list)
    marks: list[tuple[float, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # chaos that did not go as planned
    readyz: list[tuple[float, int, str]] = field(default_factory=list)
    rss: list[RssSample] = field(default_factory=list)
    disk: dict[str, Any] = field(default_factory=dict)

    def now(self) -> float:
        return time.monotonic() - self.started

    def mark(self, what: str) -> float:
        at = self.now()
        self.marks.append((at, what))
        _say(f"  [{at:6.1f} s] {what}")
        return at


class Tocsin:
    """``tocsin serve`` on a fixed HTTP port against the soak's broker, restartable."""

    def __init__(self, work: Path, data: Path, config: Path, nats_url: str) -> None:
        self.work = work
        self.data = data
        self.config = config
        self.nats_url = nats_url
        self.http = f"127.0.0.1:{free_port()}"
        self.child: Child | None = None
        self.incarnation = 0
        self.expected_down = False  # the soak is killing or restarting it
        self.exits: list[int] = []
        binary = venv_binary("tocsin")
        if binary is None:
            raise BenchError("the tocsin entry point is missing: pip install -e . (make soak)")
        self.binary = binary

    @property
    def api(self) -> str:
        return f"http://{self.http}"

    def argv(self) -> list[str]:
        return [
            self.binary, "--log-level", "warning", "serve", "--data-dir", str(self.data),
            "--nats-url", self.nats_url, "--config", str(self.config), "--http", self.http,
        ]  # fmt: skip

    async def start(self) -> None:
        self.incarnation += 1
        log = self.work / f"tocsin-serve-{self.incarnation}.log"
        self.child = Child("tocsin serve", self.argv(), log).start()
        await wait_ready(self.api, self.child, READY_TIMEOUT)

    def kill(self) -> None:
        """SIGKILL, by PID, and reap it."""
        if self.child is not None and self.child.running():
            self.child.stop(sig=signal.SIGKILL)

    def stop(self) -> int | None:
        """SIGTERM (SIGKILL after 30 s); its exit code."""
        if self.child is None or self.child.process is None:
            return None
        self.child.stop(timeout=30)
        return self.child.process.returncode


async def wait_ready(api: str, child: Child, timeout: float) -> None:
    """Poll ``/readyz`` until 200; fail early if ``child`` dies."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as session:
        while True:
            child.check()
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(f"{api}/readyz") as answer:
                    if answer.status == 200:
                        return
            if time.monotonic() > deadline:
                raise BenchError(f"{api}/readyz did not answer 200 within {timeout:.0f} s")
            await asyncio.sleep(0.2)


async def readyz(api: str) -> tuple[int, str]:
    """(status, reason) of ``/readyz``; (0, why) when nothing answers."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as session,
            session.get(f"{api}/readyz") as answer,
        ):
            body = await answer.json(content_type=None)
            reason = body.get("reason", "") if isinstance(body, dict) else ""
            return answer.status, str(reason)
    except (aiohttp.ClientError, TimeoutError, ValueError) as error:
        return 0, type(error).__name__


class Broker:
    """The soak's own ``nats-server``: a fixed port and a store on disk, so a restart
    finds its streams and the URL tocsin knows."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.store = work / "jetstream"
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.child: Child | None = None
        self.incarnation = 0
        self.expected_down = False

    async def start(self) -> None:
        self.incarnation += 1
        log = self.work / f"nats-server-{self.incarnation}.log"
        self.child, _ = await asyncio.to_thread(nats_server, self.store, log, self.port)

    def kill(self) -> None:
        if self.child is not None and self.child.running():
            self.child.stop(sig=signal.SIGKILL)

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()


# -- the data dir's own small file system ----------------------------------------------


def mount_tmpfs(where: Path, mib: int) -> str | None:
    """Mount a ``mib`` MiB tmpfs at ``where``; ``None``, or why it could not be done."""
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return "not root: mounting a tmpfs needs root"
    if shutil.which("mount") is None:
        return "no mount command"
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={mib}m,mode=0700", "tmpfs", str(where)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return None if done.returncode == 0 else f"mount failed: {done.stderr.strip()}"


def unmount(where: Path) -> None:
    subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


def fill_up(directory: Path) -> tuple[Path, int]:
    """A ballast file taking every free byte of ``directory``'s file system; its size."""
    ballast = directory / "ballast"
    written = 0
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 4096, 1):  # megabytes, then pages, then the last bytes
            chunk = b"\0" * size
            with contextlib.suppress(OSError):
                while n := os.write(fd, chunk):
                    written += n
    finally:
        os.close(fd)
    return ballast, written


# -- the load ---------------------------------------------------------------------------


def steady_labels(n: int) -> dict[str, str]:
    return {"grp": f"g{n % GROUPS}", "n": str(n)}


async def paced(period: float, until: float, clock: Timeline, step: Callable[[int], Any]) -> None:
    """``step(i)`` every ``period`` seconds until ``until`` (seconds since the start);
    a late step is not made up for, so the count stays bounded by the time."""
    i = 0
    next_at = clock.now()
    while next_at < until:
        await step(i)
        i += 1
        next_at = max(next_at + period, clock.now())
        if next_at >= until:
            return
        await asyncio.sleep(max(0.0, next_at - clock.now()))


async def load(plan: Plan, publisher: Publisher, operator: Operator, clock: Timeline) -> None:
    """Every kind of traffic at once, until the load time is up."""
    end = plan.load_seconds
    rng = random.Random(16)

    async def steady(i: int) -> None:
        labels = steady_labels(i % plan.fingerprints)
        event_id = await publisher.firing(STEADY_TYPE, labels)
        if i % 50 == 7:  # the same message again: JetStream drops it
            await publisher.copy(STEADY_TYPE, labels, event_id)
        if i % 97 == 11:  # the same event_id under a new Nats-Msg-Id: tocsin's to drop
            await publisher.firing(
                STEADY_TYPE, labels, event_id=event_id, msg_id=f"{event_id}:again"
            )

    async def burst(i: int) -> None:
        gate = asyncio.Semaphore(64)

        async def one(j: int) -> None:
            async with gate:
                n = rng.randrange(plan.burst_fingerprints)
                severity = "critical" if j % 10 == 9 else "warning"  # escalations
                await publisher.firing(BURST_TYPE, {"n": str(n)}, severity=severity)

        if i > 0:  # the first one a period in
            await asyncio.gather(*(one(j) for j in range(plan.burst_size)))

    async def resolve(i: int) -> None:
        await publisher.resolve(STEADY_TYPE, steady_labels((i * 7) % plan.fingerprints))

    async def bad(i: int) -> None:
        await publisher.bad()

    async def ack(i: int) -> None:
        await operator.ack_one()

    async def silence(i: int) -> None:
        silence_id = await operator.silence(i % GROUPS, plan.silence_seconds)
        if silence_id is not None and i % 2:

            async def lift() -> None:
                await asyncio.sleep(plan.silence_seconds / 2)
                await operator.unsilence(silence_id)

            lifts.append(asyncio.create_task(lift()))

    lifts: list[asyncio.Task[None]] = []
    await asyncio.gather(
        paced(1 / plan.rate, end, clock, steady),
        paced(plan.burst_every, end, clock, burst),
        paced(plan.resolve_every, end, clock, resolve),
        paced(plan.bad_every, end, clock, bad),
        paced(plan.ack_every, end, clock, ack),
        paced(plan.silence_every, end, clock, silence),
    )
    await asyncio.gather(*lifts)


# -- the chaos --------------------------------------------------------------------------


async def sleep_until(clock: Timeline, at: float) -> None:
    await asyncio.sleep(max(0.0, at - clock.now()))


async def kill_tocsin(tocsin: Tocsin, clock: Timeline) -> None:
    tocsin.expected_down = True
    try:
        start = clock.mark(
            f"SIGKILL tocsin serve (pid {tocsin.child.pid if tocsin.child else '?'})"
        )
        tocsin.kill()
        await tocsin.start()
        end = clock.mark(
            f"tocsin serve restarted, ready (pid {tocsin.child.pid if tocsin.child else '?'})"
        )
        clock.disruptions.append(Disruption("tocsin killed", start, end))
    finally:
        tocsin.expected_down = False


async def kill_broker(broker: Broker, tocsin: Tocsin, clock: Timeline) -> None:
    broker.expected_down = True
    try:
        start = clock.mark(f"SIGKILL nats-server (pid {broker.child.pid if broker.child else '?'})")
        broker.kill()
        await asyncio.sleep(BROKER_DOWN_SECONDS)  # the outage itself, by design
        await broker.start()
        clock.mark("nats-server restarted on its store")
        assert tocsin.child is not None
        await wait_ready(tocsin.api, tocsin.child, READY_TIMEOUT)
        end = clock.mark("tocsin serve ready again")
        clock.disruptions.append(Disruption("broker killed", start, end))
    finally:
        broker.expected_down = False


async def fill_disk(fs: Path, tocsin: Tocsin, publisher: Publisher, clock: Timeline) -> None:
    """Fill the data dir's file system; publish big events until tocsin says the disk is
    full (bounded); keep it full ``BALLAST_SECONDS``; free it; wait until ready."""
    disk = clock.disk
    ballast, size = await asyncio.to_thread(fill_up, fs)
    disk["ballast_mib"] = round(size / 2**20, 1)
    start = clock.mark(
        f"disk full: a {disk['ballast_mib']} MiB ballast file on the data dir's tmpfs"
    )
    noticed: tuple[int, str] | None = None
    deadline = time.monotonic() + NOTICE_TIMEOUT
    big = 0
    while time.monotonic() < deadline:
        status, reason = await readyz(tocsin.api)
        if status == 503:
            noticed = (status, reason)
            break
        await asyncio.gather(
            *(
                publisher.firing(BIG_TYPE, {"n": str(big + j)}, details=BIG_DETAILS)
                for j in range(10)
            )
        )
        big += 10
    disk["big_events"] = big
    if noticed is None:
        clock.failures.append(
            f"disk fill: /readyz never answered 503 within {NOTICE_TIMEOUT:.0f} s of a full disk"
        )
    else:
        disk["readyz"] = noticed[1]
        disk["noticed_after"] = round(clock.now() - start, 1)
        clock.mark(f"tocsin noticed: /readyz {noticed[0]} {noticed[1]!r}")
        await asyncio.sleep(BALLAST_SECONDS)  # the outage itself, by design
    ballast.unlink()
    clock.mark("ballast removed")
    assert tocsin.child is not None
    await wait_ready(tocsin.api, tocsin.child, READY_TIMEOUT)
    end = clock.mark("tocsin serve ready again")
    disk["full_seconds"] = round(end - start, 1)
    clock.disruptions.append(Disruption("disk full", start, end))


async def chaos(
    plan: Plan,
    tocsin: Tocsin,
    broker: Broker,
    publisher: Publisher,
    fs: Path | None,
    clock: Timeline,
) -> None:
    """The kills and the full disk, in order, each not before its time."""
    c = plan.chaos_seconds
    steps: list[tuple[float, str]] = [(0.1, "tocsin"), (0.25, "broker"), (0.4, "disk")]
    if c >= 240:
        steps += [(0.7, "tocsin"), (0.85, "broker")]
    for fraction, what in steps:
        await sleep_until(clock, fraction * c)
        try:
            if what == "tocsin":
                await kill_tocsin(tocsin, clock)
            elif what == "broker":
                await kill_broker(broker, tocsin, clock)
            elif fs is not None:
                await fill_disk(fs, tocsin, publisher, clock)
        except BenchError as error:
            clock.failures.append(f"{what}: {error}")
            clock.mark(f"!! {what}: {error}")
    if clock.now() > c:
        clock.failures.append(
            f"the chaos ran {clock.now() - c:.0f} s into the RSS window (no kill belongs there)"
        )
    clock.mark("chaos over: the rest of the load runs without kills")


async def watch(tocsin: Tocsin, broker: Broker, clock: Timeline, stop: asyncio.Event) -> None:
    """RSS and ``/readyz`` every ``SAMPLE_EVERY`` s; a process that exits on its own is
    a failure, recorded, and started again so the soak goes on."""
    while not stop.is_set():
        child = tocsin.child
        if child is not None and child.running():
            with contextlib.suppress(OSError):
                clock.rss.append(RssSample(clock.now(), tocsin.incarnation, child.rss_mib()))
            status, reason = await readyz(tocsin.api)
            clock.readyz.append((clock.now(), status, reason))
        elif child is not None and not tocsin.expected_down:
            code = child.process.returncode if child.process else None
            clock.failures.append(f"tocsin serve exited by itself (code {code}):\n{child.tail()}")
            clock.mark(f"!! tocsin serve exited by itself (code {code}); starting it again")
            tocsin.expected_down = True
            try:
                await tocsin.start()
            except BenchError as error:
                clock.failures.append(f"tocsin serve did not start again: {error}")
            finally:
                tocsin.expected_down = False
        if broker.child is not None and not broker.child.running() and not broker.expected_down:
            clock.failures.append("nats-server exited by itself")
            clock.mark("!! nats-server exited by itself; starting it again")
            try:
                await broker.start()
            except BenchError as error:
                clock.failures.append(f"nats-server did not start again: {error}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SAMPLE_EVERY)


# -- the drain and the checks -----------------------------------------------------------


async def pending(publisher: Publisher, db: Path) -> dict[str, int]:
    """What is not settled yet: inbound messages, outcomes not recorded, work items,
    routed notifications without an outcome."""
    js = publisher.js
    router = await js.consumer_info(STREAM_IN, ROUTER_CONSUMER)
    recorder = await js.consumer_info(STREAM_OUT, RECORDER_CONSUMER)
    work = (await js.stream_info(STREAM_WORK)).state.messages
    facts = await asyncio.to_thread(read_log, db)
    return {
        "inbound not acked": router.num_pending + router.num_ack_pending,
        "outcomes not recorded": recorder.num_pending + recorder.num_ack_pending,
        "work items in TOCSIN_WORK": work,
        "routed without an outcome": len(facts.unsettled),
    }


async def drain(publisher: Publisher, db: Path, timeout: float) -> dict[str, int]:
    """Wait (at most ``timeout``) until nothing is pending; what is left."""
    deadline = time.monotonic() + timeout
    left: dict[str, int] = {}
    while time.monotonic() < deadline:
        try:
            left = await pending(publisher, db)
        except Exception as error:  # the broker or the file is briefly unavailable
            left = {f"unknown ({type(error).__name__})": 1}
        if not any(left.values()):
            return left
        await asyncio.sleep(1.0)
    return left


def run_cli(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)


async def api_alerts(api: str) -> dict[str, tuple[int, int, str]]:
    """Every alert the live API lists: id -> (occurrences, suppressed_count, status)."""
    alerts: dict[str, tuple[int, int, str]] = {}
    cursor: str | None = None
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        while True:
            params = {"limit": "500", **({"cursor": cursor} if cursor else {})}
            async with session.get(f"{api}/api/v1/alerts", params=params) as answer:
                page = await answer.json()
            for a in page["alerts"]:
                alerts[a["id"]] = (a["occurrences"], a["suppressed_count"], a["status"])
            cursor = page.get("next_cursor")
            if not cursor:
                return alerts


async def get_json(url: str) -> Any:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
        session.get(url) as answer,
    ):
        return await answer.json()


# -- the report -------------------------------------------------------------------------


def plot_rss(clock: Timeline, fit: RssFit | None, plan: Plan, path: Path, title: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _say("matplotlib is not installed (pip install -e '.[bench]'): no plot")
        return False
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=110)
    for incarnation in sorted({s.incarnation for s in clock.rss}):
        points = [s for s in clock.rss if s.incarnation == incarnation]
        ax.plot(
            [s.at / 60 for s in points], [s.mib for s in points], color="#c0392b", linewidth=1.2,
            label="RSS of tocsin serve" if incarnation == 1 else None,
        )  # fmt: skip
    for d in clock.disruptions:
        ax.axvspan(d.start / 60, d.end / 60, color="#999999", alpha=0.25, linewidth=0)
        ax.annotate(d.cause, (d.start / 60, 0.02), xycoords=("data", "axes fraction"),
                    rotation=90, fontsize=7, color="#555555")  # fmt: skip
    if fit is not None:
        mid = (fit.start + fit.end) / 2
        window = [s for s in clock.rss if fit.start <= s.at <= fit.end]
        mean = sum(s.mib for s in window) / len(window)
        slope = fit.slope_mib_per_min / 60
        ax.plot(
            [fit.start / 60, fit.end / 60],
            [mean + slope * (fit.start - mid), mean + slope * (fit.end - mid)],
            color="#2c3e50", linestyle="--",
            label=f"fit over the last {(fit.end - fit.start) / 60:.1f} min: "
            f"{fit.slope_mib_per_min:+.2f} MiB/min (flat: ≤ {plan.rss_slope})",
        )  # fmt: skip
    ax.set_xlabel("minutes since the load started (grey: kills and the full disk)")
    ax.set_ylabel("RSS (MiB)")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True


def markdown(command: str, date: str, plan: Plan, figures: dict[str, Any],
             checks: list[Check], clock: Timeline) -> str:  # fmt: skip
    """The table the README's "Reliability" section takes, pasted as is."""
    p = figures["published"]
    t = figures["twice"]
    fit = figures.get("rss")
    kills = [d.cause for d in clock.disruptions]
    failed = [c.name for c in checks if not c.ok]
    rows = [
        ("command", f"`{command}` ({date})"),
        ("load", f"{plan.minutes:g} min: {p['stored']:,} messages acknowledged by JetStream "
                 f"({p['firing_ids']:,} unique firing events, {p['repeated_event_ids']} repeated "
                 f"event_ids, {p['resolved']:,} resolves, {p['bad']} bad), {p['copies_sent']} "
                 f"same-`Nats-Msg-Id` copies ({p['copies_dropped']} dropped by JetStream)"),
        ("operator (HTTP API)", f"{figures['operator']['acks']['ok']} acks, "
                                f"{figures['operator']['silences']['ok']} silences created, "
                                f"{figures['operator']['unsilences']['ok']} lifted"),
        ("chaos", f"SIGKILL of `tocsin serve`: {kills.count('tocsin killed')}, of `nats-server`: "
                  f"{kills.count('broker killed')} ({BROKER_DOWN_SECONDS:.0f} s down each); "
                  f"full disk: {kills.count('disk full')} "
                  f"({clock.disk.get('full_seconds', '—')} s); a webhook flapping "
                  f"(time-out, 500, 429 + Retry-After, slow bodies, a 30 s outage)"),
        ("notifications", f"{figures['routed']:,} routed: {figures['delivered']:,} delivered, "
                          f"{figures['dead_lettered']:,} dead-lettered, "
                          f"{figures['superseded']:,} superseded (a later one of the "
                          "fingerprint delivered), 0 pending required; "
                          f"{figures['failed_attempts']:,} failed attempts retried"),
        ("Idempotency-Key accepted twice", f"{sum(t['allowed'].values())} allowed by invariant 4 "
                                           f"({t['allowed'] or 'none'}), "
                                           f"{len(t['unexplained'])} unexplained"),
        ("RSS, last part", "—" if fit is None else
         f"{fit['slope_mib_per_min']:+.2f} MiB/min (flat: ≤ {plan.rss_slope}), "
         f"{fit['first_mib']:.0f} → {fit['last_mib']:.0f} MiB; "
         "[plot](docs/soak-rss.png)"),
        ("checks", f"{len(checks) - len(failed)} of {len(checks)} pass"
                   + (f"; failed: {', '.join(failed)}" if failed else "")),
    ]  # fmt: skip
    lines = ["| soak | |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines) + "\n"


# -- the run ----------------------------------------------------------------------------


def write_config(path: Path, steady: SoakReceiver, flaky: SoakReceiver) -> None:
    receivers = "".join(
        f'[receivers.{r.name}]\nchannel = "webhook"\nurl = "{r.url}"\n'
        f'timeout = "{RECEIVER_TIMEOUT:g}s"\n\n'
        for r in (steady, flaky)
    )
    path.write_text(
        '[dedup]\nwindow = "1m"\n\n'
        # A short retention window: the RSS check proves memory bounded by it (with the
        # default day nothing would be let go within the run).
        '[alerts]\nkeep_resolved = "1m"\n\n'
        f'[[route]]\nmatch = {{}}\nreceivers = ["{steady.name}", "{flaky.name}"]\n\n'
        + receivers
        + '[retry]\nmax_attempts = 6\nbackoff = ["1s", "2s", "4s"]\n\n'
        '[nats]\nack_wait = "5s"\n'
    )


async def soak(plan: Plan, args: argparse.Namespace, command: str) -> int:
    work = Path(tempfile.mkdtemp(prefix="tocsin-soak-"))
    clock = Timeline()
    mounted = False
    if args.data_fs is not None:  # a small file system someone else mounted for it
        fs = Path(tempfile.mkdtemp(prefix="tocsin-soak-", dir=args.data_fs))
        _say(f"  the data dir is on the file system of --data-fs ({fs})")
    else:
        fs = work / "fs"
        why_not = mount_tmpfs(fs, plan.fs_mib)
        mounted = why_not is None
        if mounted:
            _say(f"  the data dir is on its own {plan.fs_mib} MiB tmpfs ({fs})")
        else:
            _say(f"!! no tmpfs for the data dir ({why_not}): the disk fill is skipped and "
                 "its check fails; run as root, or give --data-fs a small file system "
                 "(docs/reliability.md, 'The soak')")  # fmt: skip
            clock.failures.append(f"disk fill not done: {why_not}")
    fillable = mounted or args.data_fs is not None
    data = fs / "data"
    steady = SoakReceiver("steady", flapping=False, timeout=RECEIVER_TIMEOUT)
    flaky = SoakReceiver("flaky", flapping=True, timeout=RECEIVER_TIMEOUT)
    broker = Broker(work)
    config = work / "tocsin.toml"
    tocsin: Tocsin | None = None
    publisher: Publisher | None = None
    operator: Operator | None = None
    code = 1
    try:
        await steady.start()
        await flaky.start()
        write_config(config, steady, flaky)
        await broker.start()
        tocsin = Tocsin(work, data, config, broker.url)
        _say(f"  nats-server {broker.url} (store {broker.store}); tocsin serve on {tocsin.api}")
        _say(f"  {shlex.join(tocsin.argv())}")
        await tocsin.start()
        publisher = Publisher(broker.url, f"soak-{secrets.token_hex(3)}")
        await publisher.connect()
        operator = Operator(tocsin.api)
        await operator.start()
        clock = Timeline(failures=clock.failures)
        flaky.begin()
        _say(f"== load for {plan.minutes:g} min; chaos in the first {plan.chaos_seconds:.0f} s, "
             f"RSS judged over the last {plan.rss_window:.0f} s")  # fmt: skip
        stop = asyncio.Event()
        watcher = asyncio.create_task(watch(tocsin, broker, clock, stop))
        progress = asyncio.create_task(report_progress(publisher, clock, plan, stop))
        try:
            await asyncio.gather(
                load(plan, publisher, operator, clock),
                chaos(plan, tocsin, broker, publisher, fs if fillable else None, clock),
            )
        finally:
            stop.set()
            await asyncio.gather(watcher, progress)
        load_end = clock.mark("load over; the receivers answer 200 from now on")
        steady.steady()
        flaky.steady()
        fit = rss_fit(clock.rss, load_end - plan.rss_window, load_end)
        _say(f"== drain (at most {plan.drain:.0f} s)")
        db = data / "tocsin.db"
        left = await drain(publisher, db, plan.drain)
        clock.mark("drained" if not any(left.values()) else f"still pending: {left}")
        gathered: dict[str, Any] = {"left": left, "rss_fit": fit}
        gathered["in_last_seq"] = (await publisher.js.stream_info(STREAM_IN)).state.last_seq
        gathered["stats"] = await get_json(f"{tocsin.api}/api/v1/stats?hours=3")
        gathered["api_alerts"] = await api_alerts(tocsin.api)
        base = [tocsin.binary]
        state = await asyncio.to_thread(
            run_cli, [*base, "state", "--json", "--data-dir", str(data)]
        )
        gathered["state"] = json.loads(state.stdout) if state.returncode == 0 else {"alerts": []}
        gathered["verify"] = await asyncio.to_thread(
            run_cli, [*base, "verify", "--data-dir", str(data)]
        )
        facts = await asyncio.to_thread(read_log, db)
        await operator.close()
        await publisher.close()
        gathered["exit_code"] = tocsin.stop()
        checks, figures = judge(
            publisher.counts,
            operator,
            [steady, flaky],
            facts,
            gathered,
            Chaos(clock.started, clock.disruptions, clock.failures),
            Limits(plan.drain, plan.rss_slope, TWICE_SLACK),
        )
        figures["rss"] = None if fit is None else asdict(fit)
        figures["disk"] = clock.disk
        figures["timeline"] = clock.marks
        code = finish(plan, command, checks, figures, clock, fit, args)
    except BenchError as error:
        _say(f"!! the soak could not run: {error}")
    finally:
        for part in (operator, publisher):
            if part is not None:
                with contextlib.suppress(Exception):
                    await part.close()
        if tocsin is not None:
            tocsin.stop()
        broker.stop()
        await steady.stop()
        await flaky.stop()
        if mounted:
            unmount(fs)
        elif args.data_fs is not None:
            shutil.rmtree(fs, ignore_errors=True)
        if args.keep:
            _say(f"kept the soak's data and logs in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return code


async def report_progress(
    publisher: Publisher, clock: Timeline, plan: Plan, stop: asyncio.Event
) -> None:
    """One line a minute, so a long run shows it is alive."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 60)
        if not stop.is_set():
            c = publisher.counts
            rss = clock.rss[-1].mib if clock.rss else 0.0
            _say(f"  [{clock.now():6.1f} s] {c.stored:,} acknowledged, {c.retries} retries; "
                 f"RSS {rss:.1f} MiB")  # fmt: skip


def finish(
    plan: Plan,
    command: str,
    checks: list[Check],
    figures: dict[str, Any],
    clock: Timeline,
    fit: RssFit | None,
    args: argparse.Namespace,
) -> int:
    date = time.strftime("%Y-%m-%d %H:%M %Z")
    machine = report.machine()
    _say("")
    _say(f"== checks ({command}, {date}, {machine['cpu']}, {machine['cores']} cores)")
    for check in checks:
        _say(f"  {'ok  ' if check.ok else 'FAIL'} {check.name}: {check.detail}")
    for item in figures["twice"]["unexplained"][:10]:
        _say(f"    twice, unexplained: {item}")
    title = (
        f"tocsin serve RSS during the soak: {plan.minutes:g} min, {date}, "
        f"{machine['cpu']}, {machine['cores']} cores\n{command}"
    )
    png = args.docs / "soak-rss.png"
    if plot_rss(clock, fit, plan, png, title):
        _say(f"RSS plot: {_relative(png)} (made by: {command})")
    table = markdown(command, date, plan, figures, checks, clock)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "soak.md").write_text(table)
    result = {"date": date, "command": command, "machine": machine, "plan": asdict(plan),
              "checks": [asdict(c) for c in checks], "figures": figures}  # fmt: skip
    (args.results / "soak.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    _say("\nMarkdown for the README's Reliability section (also in bench/results/soak.md):\n")
    _say(table)
    failed = [c.name for c in checks if not c.ok]
    if failed:
        _say(f"SOAK FAILED: {len(failed)} of {len(checks)} checks: {', '.join(failed)}")
        return 1
    _say(f"soak passed: {len(checks)} checks")
    return 0


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__.split("\n")[0]
    )
    add = parser.add_argument
    add("--minutes", type=float, default=10.0, help="load duration (default %(default)s)")
    add("--rate", type=float, default=20.0, help="steady firing events/s (default %(default)s)")
    add("--fingerprints", type=int, default=200, help="steady fingerprints (default %(default)s)")
    add(
        "--burst-every",
        type=float,
        default=30.0,
        help="seconds between bursts (default %(default)s)",
    )
    add("--burst-size", type=int, default=400, help="events per burst (default %(default)s)")
    add(
        "--drain",
        type=float,
        default=240.0,
        help="longest wait for everything to settle after the load, s (default %(default)s)",
    )
    add(
        "--rss-window",
        type=float,
        default=5.0,
        help="RSS is judged over the last this many minutes, at most half the run "
        "(default %(default)s)",
    )
    add(
        "--rss-slope",
        type=float,
        default=1.0,
        help="flat = a fitted RSS slope of at most this many MiB/min (default %(default)s)",
    )
    add(
        "--fs-mib", type=int, default=256, help="size of the data dir's tmpfs (default %(default)s)"
    )
    add(
        "--data-fs",
        type=Path,
        metavar="DIR",
        help="put the data dir (and the ballast) on this small file system instead of a "
        "tmpfs the soak mounts itself (which needs root)",
    )
    add("--results", type=Path, default=ROOT / "bench" / "results")
    add("--docs", type=Path, default=ROOT / "docs", help="where the RSS plot goes")
    add("--keep", action="store_true", help="keep the data and logs (the path is printed)")
    return parser.parse_args(argv)  # fmt: skip


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    plan = Plan(
        minutes=args.minutes, rate=args.rate, fingerprints=args.fingerprints,
        burst_every=args.burst_every, burst_size=args.burst_size, burst_fingerprints=50,
        resolve_every=2.0, bad_every=10.0, ack_every=10.0, silence_every=45.0,
        silence_seconds=20.0, drain=args.drain, rss_window_minutes=args.rss_window,
        rss_slope=args.rss_slope, fs_mib=args.fs_mib,
    )  # fmt: skip
    shown = [_relative(Path(sys.executable)), "-m", "bench.soak", *(argv or sys.argv[1:])]
    command = shlex.join(shown)
    _say(f"tocsin soak: {command}")
    _say(f"  receiver cycle: {', '.join(f'{p.mode} {p.seconds:g} s' for p in CYCLE)}")
    return await soak(plan, args, command)


def run() -> None:
    """The ``python -m bench.soak`` entry point: exit 1 if any check failed."""
    try:
        code = asyncio.run(main())
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; every process the soak started was stopped", file=sys.stderr)
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    run()
