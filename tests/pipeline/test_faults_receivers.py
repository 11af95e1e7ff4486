"""Receivers that misbehave (issue #9, faults).

- A flapping webhook receiver: time-outs, 500s, 429 with ``Retry-After``, connection
  resets and success, in turn. Every notification reaches the receiver's idempotency
  view once, none is lost, and each retry waits what the config says.
- A receiver that takes 10 s per request: another receiver's notifications are not
  delayed, and the work waiting for it stays in JetStream, not in tocsin's memory
  (RSS of a ``tocsin serve`` process while 10,000 notifications wait).

The receivers are raw HTTP/1.1 servers on 127.0.0.1 (asyncio streams), so they can do
what a real server does and a framework hides: hang without answering, or reset the
connection (``SO_LINGER`` 0, then close: an RST).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import statistics
import struct
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest

from tests.support import (
    Serve,
    Tocsin,
    free_port,
    log_count,
    publish,
    wait_until,
    webhook_config,
)
from tocsin.channels import DEFAULT_CONCURRENCY
from tocsin.core.subjects import STREAM_WORK, deliver_consumer
from tocsin.store.eventlog import db_path

# What a receiver does with one request: answer a status (with headers), hang for a
# while and then close without a word, or reset the connection.
Action = tuple[str, float | int, dict[str, str]]
Plan = Callable[[str, int], Action]


def ok() -> Action:
    return ("status", 200, {})


@dataclass
class Attempt:
    at: float  # time.time() when the request arrived
    action: Action


@dataclass
class RawReceiver:
    """An HTTP/1.1 server that records each request by its ``Idempotency-Key`` and
    answers as ``plan(key, attempt_index)`` says."""

    plan: Plan = field(default=lambda key, n: ok())
    port: int = field(default_factory=free_port)
    attempts: dict[str, list[Attempt]] = field(default_factory=dict)
    arrived: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> RawReceiver:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", self.port)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while await self._one_request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _one_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        line = await reader.readline()
        if not line:
            return False
        headers: dict[str, str] = {}
        while (header := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = header.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        now = time.time()
        key = headers.get("idempotency-key", "")
        self.arrived.append((now, msgspec.json.decode(body)))
        tries = self.attempts.setdefault(key, [])
        action = self.plan(key, len(tries))
        tries.append(Attempt(now, action))
        kind, value, extra = action
        if kind == "hang":  # no answer: the client's timeout decides
            await asyncio.sleep(float(value))
            return False
        if kind == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False
        if kind == "slow":  # answers 200, after a while
            await asyncio.sleep(float(value))
            kind, value = "status", 200
        reason = {200: "OK", 429: "Too Many Requests", 500: "Internal Server Error"}
        head = f"HTTP/1.1 {value} {reason.get(int(value), 'Status')}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in extra.items())
        head += "Content-Length: 0\r\n\r\n"
        writer.write(head.encode())
        await writer.drain()
        return True

    def successes(self) -> Counter[str]:
        """2xx answers by Idempotency-Key (what a receiver's idempotency view counts)."""
        return Counter(
            key
            for key, tries in self.attempts.items()
            for a in tries
            if a.action == ok() or a.action[0] == "slow"
        )


@pytest.fixture
async def receivers() -> AsyncIterator[list[RawReceiver]]:
    started: list[RawReceiver] = []
    yield started
    for receiver in started:
        await receiver.stop()


# -- flapping ------------------------------------------------------------------------

NOTIFICATIONS = 40
TIMEOUT = 1.0
BACKOFF = [0.3, 0.6, 1.2]
RETRY_AFTER = 1
FAILURES = [
    ("hang", TIMEOUT + 2.0, {}),  # a time-out: no answer within the receiver's timeout
    ("status", 500, {}),
    ("status", 429, {"Retry-After": str(RETRY_AFTER)}),
    ("reset", 0, {}),
]


def flapping_plan() -> tuple[Plan, dict[str, int]]:
    """The n-th notification to arrive fails ``n % 5`` times (failure modes in turn,
    starting at a different one each time), then succeeds; one success is all it
    ever gets."""
    order: dict[str, int] = {}

    def plan(key: str, attempt: int) -> Action:
        index = order.setdefault(key, len(order))
        if attempt < index % 5:
            return FAILURES[(index + attempt) % len(FAILURES)]
        return ok()

    return plan, order


def planned_delay(status_code: int | None, attempt: int) -> float:
    """The configured wait after failed attempt ``attempt`` (1-based): the backoff, or
    Retry-After for a 429."""
    if status_code == 429:
        return RETRY_AFTER
    return BACKOFF[min(attempt - 1, len(BACKOFF) - 1)]


async def test_a_flapping_receiver_gets_everything_once_with_the_configured_backoff(
    nats_url: str, data_dir: Path, receivers: list[RawReceiver]
) -> None:
    plan, order = flapping_plan()
    receiver = await RawReceiver(plan).start()
    receivers.append(receiver)
    toml = webhook_config(
        receiver.url,
        timeout=f"{TIMEOUT}s",
        max_attempts=6,
        backoff=[f"{int(b * 1000)}ms" for b in BACKOFF],
    )
    service = await Tocsin(data_dir, nats_url, toml).start()
    try:
        for i in range(NOTIFICATIONS):
            body = {"type": "flap", "severity": "error", "summary": f"flap {i}"}
            await publish(nats_url, "alerts.in.flap", {**body, "labels": {"i": str(i)}})
        await wait_until(
            lambda: service.count("delivery.succeeded") == NOTIFICATIONS,
            90,
            "every notification delivered",
        )
        routed = {e["notification_id"] for e in service.events("alert.routed")}
        assert len(routed) == NOTIFICATIONS
        # The receiver's idempotency view: each key once, and only tocsin's keys.
        view = receiver.successes()
        assert set(view) == routed
        assert set(order) == routed
        assert service.count("delivery.dead_lettered") == 0
        assert Counter(e["notification_id"] for e in service.events("delivery.succeeded")) == (
            Counter(dict.fromkeys(routed, 1))
        )
        # Each failure mode happened, and every retry waited what the config says.
        seen = Counter(
            a.action[1] if a.action[0] == "status" else a.action[0]
            for tries in receiver.attempts.values()
            for a in tries
        )
        assert min(seen["hang"], seen[500], seen[429], seen["reset"]) > 0
        # Every retry waited what the config says: from the moment tocsin logged the
        # attempt as failed (after the time-out, for a hang) to the next request's
        # arrival at the receiver. Both clocks are this machine's.
        failed = service.events("delivery.attempt_failed")
        assert len(failed) == sum(len(t) - 1 for t in receiver.attempts.values()) > 0
        gaps: list[tuple[float, float]] = []  # (expected, measured)
        for event in failed:
            planned = planned_delay(event["status_code"], event["attempt"])
            assert event["retry_in_seconds"] == pytest.approx(planned)
            assert event["status_code"] in (429, 500, None)
            tries = receiver.attempts[event["notification_id"]]
            kind, value, _ = tries[event["attempt"] - 1].action
            assert (
                (event["status_code"] == value)
                if kind == "status"
                else (event["status_code"] is None)
            ), f"logged {event} for a {kind} {value}"
            following = tries[event["attempt"]]
            gaps.append((planned, following.at - event["at"] / 1_000_000))
        early = [(e, m) for e, m in gaps if m < e - 0.05]
        late = [(e, m) for e, m in gaps if m > e + 5.0]  # a busy 2-core machine: generous
        assert not early, f"retried sooner than configured: {early}"
        assert not late, f"retried much later than configured: {late}"
        await service.assert_live_state_is_the_log()
        overshoot = [m - e for e, m in gaps]
        print(
            f"\n{NOTIFICATIONS} notifications, {len(gaps)} retries "
            f"(time-outs {seen['hang']}, 500s {seen[500]}, 429s {seen[429]}, resets "
            f"{seen['reset']}); retry later than configured by median "
            f"{statistics.median(overshoot) * 1000:.0f} ms, max {max(overshoot) * 1000:.0f} ms"
        )
    finally:
        await service.stop()


# -- slow ----------------------------------------------------------------------------

WAITING = 10_000
SLOW_SECONDS = 10.0
PROBES = 10
# Sends in the workers' hands at most: serve's own and its one child's (``[delivery]
# processes = 1``, ``in_serve`` on), each at ``[delivery] concurrency``'s default.
IN_HANDS = 2 * DEFAULT_CONCURRENCY


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


async def probe_latencies(js: Any, fast: RawReceiver, tag: str) -> list[float]:
    """Publish probes one by one; seconds from each PubAck to its arrival at ``fast``."""
    out = []
    for i in range(PROBES):
        summary = f"{tag} {i}"
        body = {"type": "probe", "severity": "critical", "summary": summary}
        await js.publish("alerts.in.probe", msgspec.json.encode({**body, "labels": {"p": summary}}))
        sent = time.time()
        arrival = await wait_until(
            lambda s=summary: next((at for at, b in fast.arrived if b["summary"] == s), None),
            30,
            f"probe {summary!r} at the fast receiver",
        )
        out.append(arrival - sent)
    return out


async def test_a_slow_receiver_delays_no_other_and_its_backlog_stays_in_jetstream(
    nats_url: str, tmp_path: Path, receivers: list[RawReceiver]
) -> None:
    slow = await RawReceiver(lambda key, n: ("slow", SLOW_SECONDS, {})).start()
    fast = await RawReceiver().start()
    receivers += [slow, fast]
    config = tmp_path / "tocsin.toml"
    config.write_text(
        f"""
[[route]]
match = {{ type = "bulk" }}
receivers = ["slow"]

[[route]]
match = {{ type = "probe" }}
receivers = ["slow", "fast"]

[receivers.slow]
channel = "webhook"
url = "{slow.url}"
timeout = "30s"

[receivers.fast]
channel = "webhook"
url = "{fast.url}"

[delivery]
processes = 1
"""
    )
    data = tmp_path / "data"
    serve = await Serve(data, nats_url, config, stderr=tmp_path / "serve.log").start()
    db = db_path(data)
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    try:
        # Fast latency while the slow receiver is merely busy with the probes.
        before = await probe_latencies(js, fast, "before")
        baseline = rss_bytes(serve.pid)

        # 10,000 notifications for the slow receiver: IN_HANDS taken, the rest waiting.
        for start in range(0, WAITING, 500):
            await asyncio.gather(
                *(
                    js.publish(
                        "alerts.in.bulk",
                        msgspec.json.encode(
                            {
                                "type": "bulk",
                                "severity": "warning",
                                "summary": f"bulk {i}",
                                "labels": {"i": str(i)},
                            }
                        ),
                        timeout=30,
                    )
                    for i in range(start, min(start + 500, WAITING))
                )
            )
        await wait_until(
            lambda: log_count(db, "alert.routed") >= WAITING + PROBES * 2,
            120,
            "the 10,000 bulk notifications routed",
        )

        async def backlog() -> Any:
            info = await js.consumer_info(STREAM_WORK, deliver_consumer("slow"))
            return info if info.num_pending >= WAITING - IN_HANDS else None

        info = await wait_until(backlog, 30, "the slow receiver's backlog in JetStream")
        waiting_rss = rss_bytes(serve.pid)
        during = await probe_latencies(js, fast, "during")
        after_probes_rss = rss_bytes(serve.pid)

        assert info.num_ack_pending <= IN_HANDS + PROBES  # the workers' concurrency
        assert len(slow.arrived) <= IN_HANDS + 2 * PROBES
        grown = max(waiting_rss, after_probes_rss) - baseline
        assert grown < 50 * 1024 * 1024, f"RSS grew by {grown / 2**20:.1f} MiB"
        # The fast receiver's latency does not follow the slow one's 10 s.
        assert max(during) < SLOW_SECONDS / 2, during
        assert statistics.median(during) <= 10 * statistics.median(before) + 0.5
        print(
            f"\nfast receiver latency before: median {statistics.median(before) * 1000:.0f} ms, "
            f"max {max(before) * 1000:.0f} ms; with {info.num_pending:,} waiting for the slow "
            f"one: median {statistics.median(during) * 1000:.0f} ms, max "
            f"{max(during) * 1000:.0f} ms. RSS {baseline / 2**20:.1f} MiB -> "
            f"{waiting_rss / 2**20:.1f} MiB with the backlog ({grown / 2**20:+.1f} MiB); "
            f"ack pending {info.num_ack_pending}"
        )
    finally:
        await nc.close()
        serve.kill()  # ours; a clean stop would wait out the slow receiver's 10 s sends
        with contextlib.suppress(Exception):
            await serve.wait()
