"""The two services under load, behind one interface the workloads drive.

``TocsinTarget`` runs ``tocsin serve`` (the venv's entry point, its own process) against
a real ``nats-server`` and publishes with JetStream PubAcks, pipelined. Its progress is
read from the log itself (read-only SQLite): a figure of "committed" is a row on disk.

``AlertmanagerTarget`` runs Debian's ``prometheus-alertmanager`` on loopback, configured
to notify the same kind of receiver about every alert on its own (``group_by: ['...']``),
and is fed through its HTTP API in batches of 100, the way Prometheus feeds it.
Alertmanager has no durable commit, so it has no "committed" figure: ``committed``
returns ``None`` and the workloads report what it accepted.

Given a ``Grouping`` (W5), both are configured to group alerts the same way instead:
one notification per value of one label, with the same wait and interval.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import msgspec
import nats

from bench.procs import BenchError, Child, free_port, nats_server, venv_binary, wait_http_ok
from bench.receiver import Received

ALERT_TYPE = "bench_alert"
SUBJECT = "alerts.in.bench"
PUBLISH_WINDOW = 4000  # W3's publish_async calls in flight at most (nats-py's default)
AM_BATCH = 100  # alerts per POST /api/v2/alerts, as Prometheus sends them
AM_POSTS_IN_FLIGHT = 8


@dataclass(frozen=True, slots=True)
class Grouping:
    """W5's grouping, the same for both services: alerts that share ``label``'s value
    are one group, first notified ``wait`` seconds after its first alert, then at most
    once per ``interval`` seconds with what changed."""

    label: str = "service"
    wait: float = 1.0
    interval: float = 5.0
    max_alerts: int = 1000  # tocsin's route lists this many; above a group's size, none cut


@dataclass(frozen=True, slots=True)
class Storm:
    """What the publisher saw of one burst (``perf_counter`` seconds)."""

    first_sent: float
    last_sent: float
    last_accepted: float  # the last PubAck / HTTP 200 (or the moment the storm gave up)
    accepted: int
    refused: int
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    rss_mib: float
    cpu_seconds: float
    broker_cpu_seconds: float | None  # nats-server, for tocsin; None for Alertmanager
    rss_parts_mib: dict[str, float] = field(default_factory=dict)  # rss_mib per process


class Target(Protocol):
    """What the workloads need from a service under test."""

    name: str
    label: str
    has_log: bool

    def keys_of(self, body: bytes) -> Received:
        """The alert keys (label ``fp``) one webhook request notifies, and its group."""
        ...

    async def start(self, receiver_url: str) -> None: ...

    async def stop(self) -> None: ...

    async def storm(
        self, keys: Sequence[str], timeout: float, labels: Sequence[dict[str, str]] = ()
    ) -> Storm:
        """Send one firing alert per key as fast as the protocol allows; ``labels[i]``,
        when given, are more labels of the i-th."""
        ...

    async def send(self, key: str) -> None:
        """Hand one alert to the service without waiting for its acceptance."""
        ...

    async def settle(self, timeout: float) -> int:
        """Wait for every ``send`` to be accepted; the number refused or lost."""
        ...

    def begin(self) -> None:
        """A workload starts: count the service's progress from here."""
        ...

    async def committed(self, received: int, routed: int, timeout: float) -> float | None:
        """Wall-clock time of the commit that completed ``received`` events and
        ``routed`` routed facts (``alert.grouped`` when grouped) since ``begin``;
        ``None`` if n/a or not in time."""
        ...

    async def quiesce(self, delivered: int, timeout: float) -> float | None:
        """Wait until ``delivered`` outcomes since ``begin`` are recorded; wall-clock
        time of the last one, ``None`` if n/a or not in time."""
        ...

    def progress(self) -> str:
        """One short line on what the service has done since ``begin``."""
        ...

    def usage(self) -> Usage: ...

    def pid(self) -> int: ...

    def alive(self) -> None:
        """Raise ``BenchError`` if a process of the target has exited."""
        ...


class _Labels(msgspec.Struct):
    labels: dict[str, str]


class _AmPayload(msgspec.Struct):
    alerts: list[_Labels]
    group_key: str = msgspec.field(default="", name="groupKey")
    truncated_alerts: int = msgspec.field(default=0, name="truncatedAlerts")


class _TocsinGroup(msgspec.Struct):
    """tocsin's group body (DESIGN.md section 11), the fields the bench counts."""

    group_key: str
    alerts: list[_Labels]
    truncated_alerts: int = 0


_tocsin_body = msgspec.json.Decoder(_Labels)
_tocsin_group_body = msgspec.json.Decoder(_TocsinGroup)
_am_body = msgspec.json.Decoder(_AmPayload)


def _fp(labels: dict[str, str]) -> str:
    try:
        return labels["fp"]
    except KeyError:
        raise ValueError("a notification without the bench's fp label") from None


def _event(key: str, labels: dict[str, str] | None = None) -> bytes:
    return msgspec.json.encode(
        {
            "type": ALERT_TYPE,
            "severity": "warning",
            "summary": f"bench alert {key}",
            "labels": {"fp": key, **(labels or {})},
        }
    )


def _seconds(value: float) -> str:
    """A duration both configs read: ``1s``, ``5s``, ``0.5s`` is written ``500ms``."""
    return f"{value:g}s" if value == int(value) else f"{round(value * 1000)}ms"


@dataclass
class LogWatch:
    """Counts the log's rows by kind since ``begin``, reading only rows it has not seen.

    Read-only and incremental (``seq > last seen``, the primary key), so polling costs
    the service nothing but a shared lock for a few milliseconds.
    """

    db: Path
    seen_seq: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    last_ts: dict[str, int] = field(default_factory=dict)  # kind -> latest append time, µs
    first_ts: dict[str, int] = field(default_factory=dict)  # kind -> earliest since begin, µs
    _begun_seq: int = 0  # the log's last seq at ``begin``
    _conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection | None:
        if self._conn is None and self.db.exists():
            self._conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        return self._conn

    def begin(self) -> None:
        """Forget what was counted; count from the log's current end."""
        self.poll()
        self._begun_seq = self.seen_seq
        self.counts.clear()
        self.last_ts.clear()
        self.first_ts.clear()

    def poll(self) -> None:
        conn = self._connection()
        if conn is None:
            return
        try:
            rows = conn.execute(
                "SELECT kind, COUNT(*), MIN(ts), MAX(ts), MAX(seq) FROM events WHERE seq > ? "
                "GROUP BY kind",
                (self.seen_seq,),
            ).fetchall()
        except sqlite3.OperationalError:  # the file exists before its schema does
            return
        for kind, count, first, ts, seq in rows:
            self.counts[kind] = self.counts.get(kind, 0) + count
            self.first_ts[kind] = min(self.first_ts.get(kind, first), first)
            self.last_ts[kind] = max(self.last_ts.get(kind, 0), ts)
            self.seen_seq = max(self.seen_seq, seq)

    def count(self, kind: str) -> int:
        return self.counts.get(kind, 0)

    def count_at(self, kind: str, ts: int) -> int:
        """Rows of ``kind`` appended at ``ts``: one commit's (a batch shares its time)."""
        conn = self._connection()
        if conn is None:
            return 0
        row = conn.execute(
            "SELECT COUNT(*) FROM events WHERE kind = ? AND ts = ? AND seq > ?",
            (kind, ts, self._begun_seq),
        ).fetchone()
        return int(row[0])

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


async def _poll_until(done: Any, child: Child, timeout: float, every: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while not done():
        child.check()
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(every)
    return True


class TocsinTarget:
    """``tocsin serve`` in its own process, against its own ``nats-server``."""

    name = "tocsin"
    label = "tocsin"
    has_log = True

    def __init__(self, workdir: Path, grouping: Grouping | None = None) -> None:
        self._dir = workdir
        self._dir.mkdir(parents=True, exist_ok=True)
        self.grouping = grouping
        # A grouped route's routed fact per alert is alert.grouped (group.notified later).
        self._routed = "alert.grouped" if grouping else "alert.routed"
        self.http = f"127.0.0.1:{free_port()}"
        self._nats: Child | None = None
        self._tocsin: Child | None = None
        self._nc: Any = None
        self._js: Any = None
        self._pending: list[asyncio.Future[Any]] = []
        self.watch = LogWatch(self._dir / "data" / "tocsin.db")
        self.command = ""

    def keys_of(self, body: bytes) -> Received:
        if self.grouping is None:
            return Received([_fp(_tocsin_body.decode(body).labels)])
        group = _tocsin_group_body.decode(body)
        keys = [_fp(alert.labels) for alert in group.alerts]
        return Received(keys, group.group_key, group.truncated_alerts)

    def _config(self, receiver_url: str) -> str:
        """One route to one webhook: every alert on its own, or W5's groups."""
        route = '[[route]]\nmatch = {}\nreceivers = ["hook"]\n'
        g = self.grouping
        if g is not None:
            route += (
                f'group_by = ["labels.{g.label}"]\ngroup_wait = "{_seconds(g.wait)}"\n'
                f'group_interval = "{_seconds(g.interval)}"\nmax_alerts = {g.max_alerts}\n'
            )
        return route + f'\n[receivers.hook]\nchannel = "webhook"\nurl = "{receiver_url}"\n'

    async def start(self, receiver_url: str) -> None:
        self._nats, url = nats_server(self._dir / "jetstream", self._dir / "nats-server.log")
        config = self._dir / "tocsin.toml"
        config.write_text(self._config(receiver_url))
        binary = venv_binary("tocsin")
        if binary is None:
            raise BenchError("the tocsin entry point is missing: pip install -e . (make bench)")
        argv = [
            binary,
            "--log-level",
            "warning",
            "serve",
            "--data-dir",
            str(self._dir / "data"),
            "--nats-url",
            url,
            "--config",
            str(config),
            "--http",
            self.http,
        ]
        self.command = " ".join(argv)
        self._tocsin = Child("tocsin serve", argv, self._dir / "tocsin.log").start()
        await wait_http_ok(f"http://{self.http}/readyz", self._tocsin, 60)
        self._nc = await nats.connect(url, pending_size=64 * 1024 * 1024)
        self._js = self._nc.jetstream(publish_async_max_pending=PUBLISH_WINDOW)

    async def stop(self) -> None:
        self.watch.close()
        try:
            if self._nc is not None:
                await asyncio.wait_for(self._nc.close(), 10)
        except Exception as error:  # stopping anyway
            print(f"  closing the NATS connection: {error!r}")
        finally:
            for child in (self._tocsin, self._nats):
                if child is not None:
                    child.stop()

    async def storm(
        self, keys: Sequence[str], timeout: float, labels: Sequence[dict[str, str]] = ()
    ) -> Storm:
        """Every event a JetStream publish whose reply subject receives its PubAck, all
        in flight at once and the acks counted by one subscription. nats-py's
        ``publish_async`` does the same with a future per message and tops out near
        20,000/s on this kind of machine, below what the service is meant to reach;
        this way the publisher is not what W1 measures. The loop lets the event loop
        turn every ``AM_BATCH`` events, as Alertmanager's first POST of that many
        leaves at once: otherwise nats-py writes nothing until 2 MB are pending
        (~5,000 events, 0.05-0.12 s after the first publish, which W5 counts from),
        and tocsin's storm began that much after Alertmanager's."""
        # encoded before the clock starts
        payloads = [_event(key, labels[i] if labels else None) for i, key in enumerate(keys)]
        total = len(payloads)
        accepted = refused = 0
        last_ack = 0.0
        all_acked = asyncio.Event()

        async def on_ack(msg: Any) -> None:
            nonlocal accepted, refused, last_ack
            status = (msg.headers or {}).get("Status")  # 503: no stream for the subject
            if status or b'"error"' in msg.data:
                refused += 1
            else:
                accepted += 1
            last_ack = time.perf_counter()
            if accepted + refused >= total:
                all_acked.set()

        inbox = self._nc.new_inbox()
        subscription = await self._nc.subscribe(inbox + ".*", cb=on_ack)
        error = None
        first = time.perf_counter()
        try:
            for i, payload in enumerate(payloads):
                await self._nc.publish(SUBJECT, payload, reply=f"{inbox}.{i}")
                if i % AM_BATCH == AM_BATCH - 1:
                    await asyncio.sleep(0)  # nats-py's flusher writes what is pending
            last_sent = time.perf_counter()
            await asyncio.wait_for(all_acked.wait(), timeout)
        except TimeoutError:
            last_sent = time.perf_counter()
            error = f"{total - accepted - refused:,} PubAcks missing after {timeout:.0f} s"
        finally:
            await subscription.unsubscribe()
        unanswered = total - accepted - refused
        return Storm(first, last_sent, last_ack or first, accepted, refused + unanswered, error)

    async def send(self, key: str) -> None:
        self._pending.append(await self._js.publish_async(SUBJECT, _event(key), wait_stall=5))

    async def settle(self, timeout: float) -> int:
        pending, self._pending = self._pending, []
        return (await _gather_acks(pending, timeout))[1]

    def begin(self) -> None:
        self.watch.begin()

    async def committed(self, received: int, routed: int, timeout: float) -> float | None:
        watch = self.watch
        assert self._tocsin is not None

        def done() -> bool:
            watch.poll()
            return watch.count("alert.received") >= received and watch.count(self._routed) >= routed

        if not await _poll_until(done, self._tocsin, timeout):
            return None
        return max(watch.last_ts.get("alert.received", 0), watch.last_ts.get(self._routed, 0)) / 1e6

    async def quiesce(self, delivered: int, timeout: float) -> float | None:
        watch = self.watch
        assert self._tocsin is not None

        def done() -> bool:
            watch.poll()
            return watch.count("delivery.succeeded") >= delivered

        if not await _poll_until(done, self._tocsin, timeout):
            return None
        return watch.last_ts.get("delivery.succeeded", 0) / 1e6

    def progress(self) -> str:
        self.watch.poll()
        count = self.watch.count
        grouped = f"{count('group.notified'):,} groups notified, " if self.grouping else ""
        return (
            f"log: {count('alert.received'):,} received, {count(self._routed):,} routed, "
            f"{grouped}{count('delivery.succeeded'):,} delivered"
        )

    def usage(self) -> Usage:
        assert self._tocsin is not None
        assert self._nats is not None
        return Usage(
            self._tocsin.rss_mib(),
            self._tocsin.cpu_seconds(),
            self._nats.cpu_seconds(),
            self._tocsin.rss_parts_mib(),
        )

    def pid(self) -> int:
        assert self._tocsin is not None
        return self._tocsin.pid

    def alive(self) -> None:
        for child in (self._nats, self._tocsin):
            if child is not None:
                child.check()


async def _gather_acks(futures: Sequence[asyncio.Future[Any]], timeout: float) -> tuple[int, int]:
    """(accepted, refused or unanswered) for publish futures, waiting at most ``timeout``."""
    if not futures:
        return 0, 0
    done, not_done = await asyncio.wait(futures, timeout=timeout)
    for future in not_done:
        future.cancel()
    accepted = sum(1 for f in done if not f.cancelled() and f.exception() is None)
    return accepted, len(futures) - accepted


AM_CONFIG = """\
route:
  receiver: bench
  group_by: [{group_by}]
  group_wait: {group_wait}
  group_interval: {group_interval}
  repeat_interval: {repeat_interval}
receivers:
  - name: bench
    webhook_configs:
      - url: {url}
        send_resolved: false
"""


def alertmanager_binary(install: bool) -> str:
    """Debian's Alertmanager, installed with apt-get when missing and ``install``."""
    for name in ("prometheus-alertmanager", "alertmanager"):
        found = shutil.which(name)
        if found:
            return found
    if not install:
        raise BenchError("prometheus-alertmanager is not installed (and --no-install was given)")
    apt = shutil.which("apt-get")
    if apt is None:
        raise BenchError("prometheus-alertmanager is not installed and there is no apt-get")
    prefix: list[str] = []
    if os.geteuid() != 0:
        sudo = shutil.which("sudo")
        if sudo is None:
            raise BenchError("prometheus-alertmanager is not installed; installing needs root")
        prefix = [sudo, "-n"]
    install_cmd = [*prefix, apt, "install", "-y", "-q", "prometheus-alertmanager"]
    print(f"  installing Alertmanager: {' '.join(install_cmd)}", flush=True)
    done = _run(install_cmd)
    if done.returncode != 0:  # stale package lists: refresh them once and retry
        _run([*prefix, apt, "update", "-q"])
        done = _run(install_cmd)
    if done.returncode != 0:
        raise BenchError(f"{' '.join(install_cmd)} failed: {done.stderr.strip()[-500:]}")
    found = shutil.which("prometheus-alertmanager")
    if found is None:
        raise BenchError("apt-get did not install prometheus-alertmanager")
    return found


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        return subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=600, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise BenchError(f"{' '.join(argv)} failed: {error}") from error


class AlertmanagerTarget:
    """Prometheus Alertmanager on loopback, no cluster, a temp store."""

    name = "alertmanager"
    label = "Alertmanager"
    has_log = False

    def __init__(
        self, workdir: Path, grouping: Grouping | None = None, install: bool = True
    ) -> None:
        self._dir = workdir
        self._dir.mkdir(parents=True, exist_ok=True)
        self.grouping = grouping
        self._install = install
        self.address = f"127.0.0.1:{free_port()}"
        self._child: Child | None = None
        self._session: aiohttp.ClientSession | None = None
        self._pending: list[asyncio.Task[int]] = []
        self.command = ""

    @property
    def _alerts_url(self) -> str:
        return f"http://{self.address}/api/v2/alerts"

    def keys_of(self, body: bytes) -> Received:
        payload = _am_body.decode(body)
        keys = [_fp(alert.labels) for alert in payload.alerts]
        if self.grouping is None:
            return Received(keys)
        return Received(keys, payload.group_key, payload.truncated_alerts)

    def _config(self, receiver_url: str) -> str:
        """Every alert its own group at once (W1-W3), or W5's groups; a repeat
        interval no workload reaches either way."""
        g = self.grouping
        if g is None:
            return AM_CONFIG.format(
                url=receiver_url,
                group_by="'...'",
                group_wait="0s",
                group_interval="1s",
                repeat_interval="10m",
            )
        return AM_CONFIG.format(
            url=receiver_url,
            group_by=f"'{g.label}'",
            group_wait=_seconds(g.wait),
            group_interval=_seconds(g.interval),
            repeat_interval="24h",
        )

    async def start(self, receiver_url: str) -> None:
        binary = alertmanager_binary(self._install)
        config = self._dir / "alertmanager.yml"
        config.write_text(self._config(receiver_url))
        argv = [
            binary,
            f"--config.file={config}",
            f"--storage.path={self._dir / 'data'}",
            f"--web.listen-address={self.address}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ]
        self.command = " ".join(argv)
        self._child = Child("alertmanager", argv, self._dir / "alertmanager.log").start()
        await wait_http_ok(f"http://{self.address}/-/ready", self._child, 60)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=AM_POSTS_IN_FLIGHT * 4),
            timeout=aiohttp.ClientTimeout(total=30),
        )

    async def stop(self) -> None:
        try:
            for task in self._pending:
                task.cancel()
            if self._session is not None:
                await self._session.close()
        finally:
            if self._child is not None:
                self._child.stop()

    async def _post(self, body: bytes, alerts: int) -> int:
        """POST one batch; the number of alerts Alertmanager accepted (0 on refusal)."""
        assert self._session is not None
        try:
            async with self._session.post(
                self._alerts_url, data=body, headers={"Content-Type": "application/json"}
            ) as answer:
                await answer.read()
                return alerts if answer.status == 200 else 0
        except (aiohttp.ClientError, TimeoutError):
            return 0

    @staticmethod
    def _batch(keys: Sequence[str], labels: Sequence[dict[str, str]] = ()) -> bytes:
        return msgspec.json.encode(
            [
                {
                    "labels": {
                        "alertname": ALERT_TYPE,
                        "severity": "warning",
                        "fp": key,
                        **(labels[i] if labels else {}),
                    },
                    "annotations": {"summary": f"bench alert {key}"},
                }
                for i, key in enumerate(keys)
            ]
        )

    async def storm(
        self, keys: Sequence[str], timeout: float, labels: Sequence[dict[str, str]] = ()
    ) -> Storm:
        batches = [
            (
                self._batch(keys[i : i + AM_BATCH], labels[i : i + AM_BATCH]),
                len(keys[i : i + AM_BATCH]),
            )
            for i in range(0, len(keys), AM_BATCH)
        ]
        gate = asyncio.Semaphore(AM_POSTS_IN_FLIGHT)
        last_sent = 0.0

        async def post(body: bytes, alerts: int) -> int:
            nonlocal last_sent
            async with gate:
                last_sent = time.perf_counter()
                return await self._post(body, alerts)

        first = time.perf_counter()
        tasks = [asyncio.create_task(post(body, n)) for body, n in batches]
        done, not_done = await asyncio.wait(tasks, timeout=timeout)
        for task in not_done:
            task.cancel()
        accepted = sum(t.result() for t in done if not t.cancelled() and t.exception() is None)
        error = f"{len(not_done)} POSTs unanswered after {timeout:.0f} s" if not_done else None
        return Storm(first, last_sent, time.perf_counter(), accepted, len(keys) - accepted, error)

    async def send(self, key: str) -> None:
        self._pending.append(asyncio.create_task(self._post(self._batch([key]), 1)))

    async def settle(self, timeout: float) -> int:
        pending, self._pending = self._pending, []
        if not pending:
            return 0
        done, not_done = await asyncio.wait(pending, timeout=timeout)
        for task in not_done:
            task.cancel()
        accepted = sum(t.result() for t in done if not t.cancelled() and t.exception() is None)
        return len(pending) - accepted

    def begin(self) -> None:
        return None

    async def committed(self, received: int, routed: int, timeout: float) -> float | None:
        return None

    async def quiesce(self, delivered: int, timeout: float) -> float | None:
        return None

    def progress(self) -> str:
        return ""

    def usage(self) -> Usage:
        assert self._child is not None
        return Usage(self._child.rss_mib(), self._child.cpu_seconds(), None)

    def pid(self) -> int:
        assert self._child is not None
        return self._child.pid

    def alive(self) -> None:
        if self._child is not None:
            self._child.check()
