"""A real cluster: tocsin on three nats-server nodes, one of them killed mid-stream.

Three ``nats-server`` processes run ``deploy/nats/cluster/nats-cluster.conf`` itself, their
loopback ports and temporary stores given through the variables that file reads, with
the roles of ``accounts.conf`` (passwords made per test) and TLS for clients and for the
routes between the nodes (certificates made per test). Every client here logs in as the
``tocsin`` user over TLS, the way the compose file's processes do. Once
they have a JetStream meta leader, one ``tocsin router`` (which creates the streams, R3 by
``TOCSIN_NATS_REPLICAS=3``) and two ``tocsin deliver`` workers start as processes, each
given all three nodes as seeds. The test publishes 2,000 distinct alerts through
JetStream; a third of the way through it kills (SIGKILL) the node leading ``TOCSIN_IN``,
keeps publishing on the other two, and then restarts the node on its own store.

A publish that times out or fails during the failover is sent again with the same
``Nats-Msg-Id`` until JetStream acknowledges it, so the set of acknowledged events is
exact. What must hold once everything is acknowledged everywhere:

- nothing lost, nothing counted twice: the log holds one ``alert.received`` per
  acknowledged event id (and no other), and the alerts' occurrences add up to that number;
- each notification delivered once: one ``delivery.succeeded`` per routed notification,
  and the webhook saw each ``Idempotency-Key`` exactly once;
- by exactly one of the two workers, and both did work: each worker stamps its requests
  with a header from its own environment (``X-Tocsin-Worker: ${TOCSIN_WORKER}`` in the
  receiver's ``headers``);
- the streams and the durable consumers were three-way replicated, and the log verifies.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import msgspec
import nats
import pytest

from tests.natsauth import Certs, password
from tests.support import HttpSink, free_port, nats_binary, wait_until
from tocsin.bus.connection import connect_options, server_urls
from tocsin.bus.streams import deliver_consumer_config, ensure_consumer, ensure_streams
from tocsin.config import load_nats_login
from tocsin.core.subjects import (
    MSG_ID,
    RECORDER_CONSUMER,
    ROUTER_CONSUMER,
    STREAM_IN,
    STREAM_OUT,
    STREAM_WORK,
    deliver_consumer,
)
from tocsin.store.eventlog import db_path
from tocsin.store.ledger import load_state

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_CONF = ROOT / "deploy" / "nats" / "cluster" / "nats-cluster.conf"
TOCSIN = str(Path(sys.executable).parent / "tocsin")

ALERTS = 2000
KILL_AT = ALERTS // 3  # acknowledged events before a node is killed
RESTART_AT = 2 * ALERTS // 3  # ... and before it is started again
IN_FLIGHT = 64  # concurrent publishes
WORKERS = ("w1", "w2")

pytestmark = pytest.mark.timeout(240)


@dataclass
class Node:
    """One nats-server of the cluster: its config's variables and its process."""

    name: str
    store: Path
    log: Path
    port: int = field(default_factory=free_port)
    cluster_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    _log_file: BinaryIO | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def monitor(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


class Cluster:
    """Three nodes on ``deploy/nats/cluster/nats-cluster.conf``, on loopback, with its
    accounts and TLS (clients and routes)."""

    def __init__(self, root: Path) -> None:
        self.formed_after = 0.0  # seconds from start to a meta leader
        self.nodes = [
            Node(f"n{i}", store=root / f"n{i}" / "store", log=root / f"n{i}.log") for i in (1, 2, 3)
        ]
        self.certs = Certs.make(root / "certs")
        self.passwords = {user: password() for user in ("tocsin", "publisher", "auditor")}

    def login(self) -> dict[str, Any]:
        """nats-py's options for the ``tocsin`` user, built the way tocsin builds them."""
        return connect_options(load_nats_login(None, self.tocsin_login()))

    def tocsin_login(self) -> dict[str, str]:
        """What a tocsin process is given to log in (compose gives its processes the same)."""
        return {
            "TOCSIN_NATS_USER": "tocsin",
            "TOCSIN_NATS_PASSWORD": self.passwords["tocsin"],
            "TOCSIN_NATS_TLS_CA": str(self.certs.ca),
        }

    @property
    def urls(self) -> str:
        return ",".join(node.url for node in self.nodes)

    def node(self, name: str) -> Node:
        (found,) = (node for node in self.nodes if node.name == name)
        return found

    def environment(self, node: Node) -> dict[str, str]:
        """The variables the deploy config reads (compose sets them for its containers)."""
        routes = ", ".join(f"nats://127.0.0.1:{n.cluster_port}" for n in self.nodes)
        return {
            **os.environ,
            "NATS_SERVER_NAME": node.name,
            "NATS_STORE_DIR": str(node.store),
            "NATS_LISTEN": f"127.0.0.1:{node.port}",
            "NATS_HTTP": f"127.0.0.1:{node.http_port}",
            "NATS_CLUSTER_LISTEN": f"127.0.0.1:{node.cluster_port}",
            "NATS_ROUTES": f"[{routes}]",
            "NATS_TLS_CERT": str(self.certs.server_cert),
            "NATS_TLS_KEY": str(self.certs.server_key),
            "NATS_TLS_CA": str(self.certs.ca),
            "TOCSIN_NATS_PASSWORD": self.passwords["tocsin"],
            "TOCSIN_PUBLISHER_PASSWORD": self.passwords["publisher"],
            "TOCSIN_AUDITOR_PASSWORD": self.passwords["auditor"],
        }

    def start(self, node: Node) -> None:
        node.store.mkdir(parents=True, exist_ok=True)
        node._log_file = node.log.open("ab")
        node.process = subprocess.Popen(
            [nats_binary(), "-c", str(CLUSTER_CONF)],
            env=self.environment(node),
            stdout=node._log_file,
            stderr=subprocess.STDOUT,
        )

    def kill(self, node: Node) -> None:
        """SIGKILL: no lame duck, no leadership hand-over, no flush."""
        assert node.process is not None
        os.kill(node.process.pid, signal.SIGKILL)
        node.process.wait(10)
        if node._log_file is not None:
            node._log_file.close()

    def stop_all(self) -> None:
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                os.kill(node.process.pid, signal.SIGKILL)
                node.process.wait(10)
            if node._log_file is not None:
                node._log_file.close()

    def logs(self) -> str:
        return "\n".join(
            f"--- {n.name} (last lines) ---\n"
            + "\n".join(n.log.read_text(errors="replace").splitlines()[-15:])
            for n in self.nodes
            if n.log.exists()
        )

    async def healthy(self, client: httpx.AsyncClient, node: Node) -> bool:
        """The node's own verdict: up, in contact with the meta leader, its copies current."""
        assert node.process is not None
        assert node.process.poll() is None, f"{node.name} exited:\n{self.logs()}"
        try:
            return (await client.get(f"{node.monitor}/healthz")).status_code == 200
        except httpx.HTTPError:
            return False

    async def formed(self, client: httpx.AsyncClient) -> bool:
        """Every node healthy and agreeing on one meta leader of a three-node group."""
        leaders = set()
        for node in self.nodes:
            if not await self.healthy(client, node):
                return False
            meta = (await client.get(f"{node.monitor}/jsz")).json().get("meta_cluster", {})
            if meta.get("cluster_size") != 3 or not meta.get("leader"):
                return False
            leaders.add(meta["leader"])
        return len(leaders) == 1


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    """Three nodes with a JetStream meta leader they agree on."""
    nodes = Cluster(tmp_path / "nats")
    started = time.monotonic()
    try:
        for node in nodes.nodes:
            nodes.start(node)
        async with httpx.AsyncClient(timeout=5) as client:
            await wait_until(lambda: nodes.formed(client), 60, "the cluster and its meta leader")
        nodes.formed_after = time.monotonic() - started
        yield nodes
    finally:
        nodes.stop_all()


async def test_processes_starting_together_create_streams_and_consumers_once(
    cluster: Cluster,
) -> None:
    """Router and workers start at once and each ensures the same R3 streams and consumers.
    On a cluster, concurrent creates of one stream lose answers while its Raft group forms
    (every one of three processes timed out, and exited 1, before ``ensure_streams`` asked
    again on a timeout and stopped updating a stream that already has its config)."""
    connections = [
        await nats.connect(server_urls(cluster.urls), **cluster.login()) for _ in range(3)
    ]
    try:

        async def start(nc: Any) -> None:
            js = nc.jetstream(timeout=5)
            await ensure_streams(js, replicas=3)
            consumer = deliver_consumer_config("hook", 5.0, replicas=3)
            await ensure_consumer(js, STREAM_WORK, consumer)

        await asyncio.wait_for(asyncio.gather(*(start(nc) for nc in connections)), 60)
        js = connections[0].jetstream()
        for stream in (STREAM_IN, STREAM_WORK, STREAM_OUT):
            info = await js.stream_info(stream)
            assert info.config.num_replicas == 3, stream
        consumer_info = await js.consumer_info(STREAM_WORK, deliver_consumer("hook"))
        assert consumer_info.config.num_replicas == 3
    finally:
        for nc in connections:
            await nc.close()


CONFIG = """
[nats]
ack_wait = "10s"

[retry]
max_attempts = 5
backoff = ["200ms", "500ms"]

[[route]]
match = {}
receivers = ["hook"]

[receivers.hook]
channel = "webhook"
url = "SINK_URL"
timeout = "5s"
headers = { "X-Tocsin-Worker" = "${TOCSIN_WORKER}" }
"""


def tocsin_env(worker: str, health: str, login: dict[str, str]) -> dict[str, str]:
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("TOCSIN_", "ALERT_", "SMTP_"))
    }
    return {
        **clean,
        **login,
        "TOCSIN_NATS_REPLICAS": "3",
        "TOCSIN_WORKER": worker,
        "TOCSIN_HEALTH": health,
    }


def tail(path: Path, lines: int = 20) -> str:
    if not path.exists():
        return "(no output)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def log_rows(db: Path, kind: str) -> list[dict[str, Any]]:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        rows = conn.execute("SELECT data FROM events WHERE kind = ? ORDER BY seq", (kind,))
        return [msgspec.json.decode(row[0]) for row in rows]


def log_in_seqs(db: Path, kind: str) -> list[int]:
    """The TOCSIN_IN positions the router recorded with each fact of ``kind``."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        rows = conn.execute("SELECT in_seq FROM events WHERE kind = ? ORDER BY seq", (kind,))
        return [int(row[0]) for row in rows]


def log_count(db: Path, kind: str) -> int:
    if not db.exists():
        return 0
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        query = "SELECT COUNT(*) FROM events WHERE kind = ?"
        return int(conn.execute(query, (kind,)).fetchone()[0])


class Publisher:
    """JetStream publishes that are retried, with the same ``Nats-Msg-Id``, until acked."""

    def __init__(self, js: Any) -> None:
        self._js = js
        self.acked: dict[str, int] = {}  # event id -> TOCSIN_IN seq
        self.duplicates = 0  # acks that said "already stored": a retry met JetStream's dedup
        self.retries = 0
        self.progress = asyncio.Condition()

    async def publish(self, index: int, patience: float = 90.0) -> None:
        event_id = f"cluster-{index:05d}"
        body = msgspec.json.encode(
            {
                "type": "node_failure_drill",
                "severity": "error",
                "summary": f"alert {index}",
                "labels": {"n": str(index)},
                "event_id": event_id,
            }
        )
        deadline = time.monotonic() + patience
        while True:
            try:
                ack = await self._js.publish(
                    "alerts.in.drill", body, timeout=2.0, headers={MSG_ID: event_id}
                )
            except Exception as error:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{event_id} never acknowledged: {error!r}") from error
                self.retries += 1
                await asyncio.sleep(0.2)
                continue
            async with self.progress:
                self.duplicates += bool(ack.duplicate)
                self.acked[event_id] = int(ack.seq)
                self.progress.notify_all()
            return

    async def reached(self, count: int) -> None:
        async with self.progress:
            await self.progress.wait_for(lambda: len(self.acked) >= count)


async def test_a_node_killed_mid_stream_loses_and_repeats_nothing(
    tmp_path: Path, cluster: Cluster, sink: HttpSink
) -> None:
    config = tmp_path / "tocsin.toml"
    data = tmp_path / "data"
    db = db_path(data)
    processes: dict[str, asyncio.subprocess.Process] = {}
    health = {role: f"127.0.0.1:{free_port()}" for role in ("router", *WORKERS)}
    started = time.monotonic()
    nc = None
    outputs = contextlib.ExitStack()  # the processes' stderr files
    try:
        config.write_text(CONFIG.replace("SINK_URL", sink.url))
        async with httpx.AsyncClient(timeout=5) as client:
            common = ["--config", str(config), "--nats-url", cluster.urls]
            for role, command, data_dir in (
                ("router", "router", data),
                ("w1", "deliver", tmp_path / "w1"),
                ("w2", "deliver", tmp_path / "w2"),
            ):
                processes[role] = await asyncio.create_subprocess_exec(
                    TOCSIN,
                    command,
                    "--data-dir",
                    str(data_dir),
                    *common,
                    env=tocsin_env(role, health[role], cluster.tocsin_login()),
                    stderr=outputs.enter_context((tmp_path / f"{role}.log").open("ab")),
                )

            async def ready(role: str) -> bool:
                process = processes[role]
                if process.returncode is not None:
                    raise AssertionError(f"{role} exited:\n{tail(tmp_path / f'{role}.log')}")
                try:
                    return (await client.get(f"http://{health[role]}/readyz")).status_code == 200
                except httpx.HTTPError:
                    return False

            for role in processes:
                await wait_until(lambda r=role: ready(r), 60, f"{role} /readyz")

            nc = await nats.connect(
                server_urls(cluster.urls),
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                **cluster.login(),
            )
            js = nc.jetstream(timeout=5)

            # Created by tocsin itself, three-way replicated: streams and durable consumers.
            for stream in (STREAM_IN, STREAM_WORK, STREAM_OUT):
                info = await js.stream_info(stream)
                assert info.config.num_replicas == 3, stream
                assert info.cluster is not None
                assert len(info.cluster.replicas or []) == 2, f"{stream}: {info.cluster}"
            for stream, consumer in (
                (STREAM_IN, ROUTER_CONSUMER),
                (STREAM_OUT, RECORDER_CONSUMER),
                (STREAM_WORK, deliver_consumer("hook")),
            ):
                consumer_info = await js.consumer_info(stream, consumer)
                assert consumer_info.config.num_replicas == 3, consumer
                assert consumer_info.cluster is not None
                assert len(consumer_info.cluster.replicas or []) == 2, consumer
            ready_in = time.monotonic() - started

            publisher = Publisher(js)
            limit = asyncio.Semaphore(IN_FLIGHT)

            async def publish(index: int) -> None:
                async with limit:
                    await publisher.publish(index)

            publishing = asyncio.gather(*(publish(i) for i in range(ALERTS)))
            try:
                await asyncio.wait_for(publisher.reached(KILL_AT), 60)
                victim = cluster.node((await js.stream_info(STREAM_IN)).cluster.leader)
                cluster.kill(victim)
                killed_at = len(publisher.acked)

                async def new_leader() -> bool:
                    with contextlib.suppress(Exception):
                        info = await js.stream_info(STREAM_IN)
                        return info.cluster.leader not in (None, victim.name)
                    return False

                await wait_until(new_leader, 60, f"{STREAM_IN} to elect a new leader")
                await asyncio.wait_for(publisher.reached(RESTART_AT), 90)
                cluster.start(victim)
                await asyncio.wait_for(publishing, 120)
            finally:
                if not publishing.done():
                    publishing.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await publishing
            published_in = time.monotonic() - started
            assert len(publisher.acked) == ALERTS

            # The restarted node catches up from the other two: its copies become current.
            await wait_until(lambda: cluster.healthy(client, victim), 90, f"{victim.name} current")

            # Everything acknowledged everywhere: no message is waiting or in flight, so no
            # redelivery can come after the counts below.
            async def settled() -> bool:
                if log_count(db, "delivery.succeeded") < ALERTS:
                    return False
                for stream, consumer in (
                    (STREAM_IN, ROUTER_CONSUMER),
                    (STREAM_WORK, deliver_consumer("hook")),
                    (STREAM_OUT, RECORDER_CONSUMER),
                ):
                    try:
                        info = await js.consumer_info(stream, consumer, timeout=2)
                    except Exception:  # a leader being elected: ask again
                        return False
                    if info.num_pending or info.num_ack_pending:
                        return False
                return True

            await wait_until(settled, 120, "every event routed, delivered and recorded")
            settled_in = time.monotonic() - started

        # Nothing lost, nothing counted twice.
        received = Counter(row["event_id"] for row in log_rows(db, "alert.received"))
        assert set(received) == set(publisher.acked)
        assert max(received.values()) == 1, [k for k, n in received.items() if n > 1][:5]
        # ... and it consumed exactly the stream positions JetStream acknowledged.
        positions = log_in_seqs(db, "alert.received")
        assert sorted(positions) == sorted(publisher.acked.values())
        state = load_state(db)
        assert len(state.alerts) == ALERTS
        assert sum(alert.occurrences for alert in state.alerts.values()) == ALERTS

        # Each notification delivered once, by one of the two workers; both worked.
        routed = {row["notification_id"] for row in log_rows(db, "alert.routed")}
        assert len(routed) == ALERTS
        succeeded = Counter(row["notification_id"] for row in log_rows(db, "delivery.succeeded"))
        assert set(succeeded) == routed
        assert max(succeeded.values()) == 1
        keys = Counter(request.headers["idempotency-key"] for request in sink.requests)
        assert max(keys.values()) == 1, [k for k, n in keys.items() if n > 1][:5]
        assert set(keys) == routed
        by_worker = Counter(request.headers["x-tocsin-worker"] for request in sink.requests)
        assert set(by_worker) == set(WORKERS), by_worker
        assert min(by_worker.values()) > 0, by_worker
    finally:
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()
        for process in processes.values():
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        for role, process in processes.items():
            try:
                codes[role] = await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                os.kill(process.pid, signal.SIGKILL)
                codes[role] = await process.wait()
        outputs.close()
    assert codes == {"router": 0, "w1": 0, "w2": 0}, "\n".join(
        f"--- {role} ---\n{tail(tmp_path / f'{role}.log')}" for role in processes
    )

    verify = await asyncio.create_subprocess_exec(
        TOCSIN, "verify", "--data-dir", str(data), stderr=asyncio.subprocess.PIPE
    )
    _, verify_errors = await asyncio.wait_for(verify.communicate(), 60)
    assert verify.returncode == 0, verify_errors.decode()
    print(
        f"\ncluster formed {cluster.formed_after:.1f}s, then: tocsin ready {ready_in:.1f}s, "
        f"{ALERTS} published {published_in:.1f}s (node {victim.name} killed after "
        f"{killed_at} acks; {publisher.retries} publish retries, {publisher.duplicates} "
        f"deduplicated), settled {settled_in:.1f}s; by worker {dict(by_worker)}"
    )
