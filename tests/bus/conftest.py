"""The ``cluster`` fixture: three nats-server nodes (``tests/bus/cluster.py``)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.bus.cluster import Cluster
from tests.support import wait_until


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
