"""A real three-node NATS cluster for the cluster tests, and what they run on it.

Three ``nats-server`` processes run ``deploy/nats/cluster/nats-cluster.conf`` itself, their
loopback ports and temporary stores given through the variables that file reads, with
the roles of ``accounts.conf`` (passwords made per test) and TLS for clients and for the
routes between the nodes (certificates made per test). Every client logs in as the
``tocsin`` user over TLS, the way the compose file's processes do.

Shared by ``test_cluster.py`` (one router, a node killed) and
``test_cluster_partitions.py`` (partitions, a router, a partitioner and a node killed);
the ``cluster`` fixture is in this folder's ``conftest.py``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from tests.natsauth import Certs, password
from tests.support import TOCSIN, free_port, nats_binary
from tocsin.bus.connection import connect_options
from tocsin.config import load_nats_login
from tocsin.core.subjects import MSG_ID

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_CONF = ROOT / "deploy" / "nats" / "cluster" / "nats-cluster.conf"


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


def tocsin_env(worker: str, health: str, login: dict[str, str]) -> dict[str, str]:
    """A tocsin process's environment on the cluster: none of this machine's ``TOCSIN_``
    settings, the cluster's login, R3 streams, its worker name and health address."""
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


class Publisher:
    """JetStream publishes that are retried, with the same ``Nats-Msg-Id``, until acked:
    through a failover the set of acknowledged events is exact."""

    def __init__(self, js: Any) -> None:
        self._js = js
        self.acked: dict[str, int] = {}  # event id -> TOCSIN_IN seq
        self.duplicates = 0  # acks that said "already stored": a retry met JetStream's dedup
        self.retries = 0
        self.progress = asyncio.Condition()

    async def publish(
        self, subject: str, event_id: str, body: bytes, patience: float = 90.0
    ) -> None:
        deadline = time.monotonic() + patience
        while True:
            try:
                ack = await self._js.publish(subject, body, timeout=2.0, headers={MSG_ID: event_id})
            except Exception as error:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{event_id} never acknowledged: {error!r}") from error
                self.retries += 1
                await asyncio.sleep(0.2)  # a retry's back-off, not a wait for a condition
                continue
            async with self.progress:
                self.duplicates += bool(ack.duplicate)
                self.acked[event_id] = int(ack.seq)
                self.progress.notify_all()
            return

    async def reached(self, count: int) -> None:
        async with self.progress:
            await self.progress.wait_for(lambda: len(self.acked) >= count)


class Role:
    """One ``tocsin`` process on the cluster (a router, a partitioner, a delivery
    worker), its stderr appended to ``log``; killed (SIGKILL) or stopped (SIGTERM) by
    its own PID, and started again as it was."""

    def __init__(
        self, name: str, args: list[str], login: dict[str, str], log: Path, health: bool = True
    ) -> None:
        self.name = name
        self.args = args
        self.health = f"127.0.0.1:{free_port()}" if health else ""
        self.env = tocsin_env(name, self.health, login)
        self.log = log
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> Role:
        with self.log.open("ab") as stderr:  # the child keeps its own copy of the file
            self.process = await asyncio.create_subprocess_exec(
                TOCSIN, *self.args, env=self.env, stdout=asyncio.subprocess.DEVNULL, stderr=stderr
            )
        return self

    def alive(self) -> bool:
        """True while it runs; an assertion naming it, with its last lines, once it exited."""
        assert self.process is not None
        code = self.process.returncode
        assert code is None, f"{self.name} exited {code}:\n{tail(self.log)}"
        return True

    async def ready(self, client: httpx.AsyncClient) -> bool:
        """Its ``/readyz`` says 200 (a role without a health address: running)."""
        if not self.alive() or not self.health:
            return True
        try:
            return (await client.get(f"http://{self.health}/readyz")).status_code == 200
        except httpx.HTTPError:
            return False

    async def kill(self) -> int:
        """SIGKILL: no drain, no ack, no flush; its exit code once it is gone."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        return await asyncio.wait_for(self.process.wait(), 10)

    async def stop(self) -> int:
        """SIGTERM and its exit code (SIGKILL after 30 s, and that code)."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.process.wait(), 30)
        except TimeoutError:
            os.kill(self.process.pid, signal.SIGKILL)
            return await self.process.wait()


async def drained(js: Any, consumers: list[tuple[str, str]]) -> bool:
    """No message waits or is in flight on any of ``consumers`` ((stream, consumer)
    pairs): no redelivery can come after what a test counts then."""
    for stream, consumer in consumers:
        try:
            info = await js.consumer_info(stream, consumer, timeout=2)
        except Exception:  # a leader being elected: ask again
            return False
        if info.num_pending or info.num_ack_pending:
            return False
    return True
