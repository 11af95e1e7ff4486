"""A real cluster: tocsin on three nats-server nodes.

Three ``nats-server`` processes run ``deploy/nats/cluster/nats-cluster.conf`` itself, their
loopback ports and temporary stores given through the variables that file reads.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import nats
import pytest

from tests.support import free_port, nats_binary, wait_until
from tocsin import broker

ROOT = Path(__file__).resolve().parent.parent
CLUSTER_CONF = ROOT / "deploy" / "nats" / "cluster" / "nats-cluster.conf"

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
    """Three nodes on ``deploy/nats/cluster/nats-cluster.conf``, on loopback."""

    def __init__(self, root: Path) -> None:
        self.formed_after = 0.0  # seconds from start to a meta leader
        self.nodes = [
            Node(f"n{i}", store=root / f"n{i}" / "store", log=root / f"n{i}.log") for i in (1, 2, 3)
        ]

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
    connections = [await nats.connect(broker.server_urls(cluster.urls)) for _ in range(3)]
    try:

        async def start(nc: Any) -> None:
            js = nc.jetstream(timeout=5)
            await broker.ensure_streams(js, replicas=3)
            consumer = broker.deliver_consumer_config("hook", 5.0, replicas=3)
            await broker.ensure_consumer(js, broker.STREAM_WORK, consumer)

        await asyncio.wait_for(asyncio.gather(*(start(nc) for nc in connections)), 60)
        js = connections[0].jetstream()
        for stream in (broker.STREAM_IN, broker.STREAM_WORK, broker.STREAM_OUT):
            info = await js.stream_info(stream)
            assert info.config.num_replicas == 3, stream
        consumer_info = await js.consumer_info(broker.STREAM_WORK, broker.deliver_consumer("hook"))
        assert consumer_info.config.num_replicas == 3
    finally:
        for nc in connections:
            await nc.close()
