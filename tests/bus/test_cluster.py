"""A real cluster: tocsin on three nats-server nodes, one of them killed mid-stream.

Three ``nats-server`` processes run the deploy config with its accounts and TLS
(``tests/bus/cluster.py``); every client here logs in as the ``tocsin`` user over TLS,
the way the compose file's processes do. Once
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
import logging
import os
import signal
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import msgspec
import nats
import pytest

from tests.bus.cluster import Cluster, Publisher, drained, tail, tocsin_env
from tests.support import TOCSIN, HttpSink, free_port, wait_until
from tocsin.bus.connection import server_urls
from tocsin.bus.streams import (
    PlacementRefusedError,
    deliver_consumer_config,
    ensure_consumer,
    ensure_streams,
)
from tocsin.core.subjects import (
    RECORDER_CONSUMER,
    ROUTER_CONSUMER,
    STREAM_IN,
    STREAM_OUT,
    STREAM_WORK,
    deliver_consumer,
)
from tocsin.store.eventlog import db_path
from tocsin.store.ledger import load_state

ALERTS = 2000
KILL_AT = ALERTS // 3  # acknowledged events before a node is killed
RESTART_AT = 2 * ALERTS // 3  # ... and before it is started again
IN_FLIGHT = 64  # concurrent publishes
WORKERS = ("w1", "w2")

pytestmark = pytest.mark.timeout(240)


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


async def test_a_placement_refused_is_asked_again_and_then_named(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    """JetStream refuses a stream it cannot place (400, err_code 10005 "no suitable
    peers for placement"): for a moment while a cluster forms (a router's R3 create was
    refused so right after the nodes agreed on a meta leader, and the router exited on
    a ``NotFoundError``: the refusal had been taken for "created meanwhile"), and for
    ever with more replicas than nodes, which is how this test provokes it: R5 on three
    nodes. The create is asked again for the setup's patience; then the error says
    which stream, how many replicas, and what to check."""
    caplog.set_level(logging.INFO, logger="tocsin.broker")
    nc = await nats.connect(server_urls(cluster.urls), **cluster.login())
    try:
        js = nc.jetstream(timeout=5)
        with pytest.raises(PlacementRefusedError) as refused:
            await ensure_streams(js, replicas=5, patience=1.5)
        assert str(refused.value).startswith(
            f"stream {STREAM_IN}: JetStream found no 5 server(s) to place its replicas on "
            "(no suitable peers for placement"
        ), refused.value
        assert "TOCSIN_NATS_REPLICAS" in str(refused.value)
        asked_again = [r.getMessage() for r in caplog.records if "asking again" in r.getMessage()]
        assert asked_again, caplog.text
        assert all(f"stream {STREAM_IN}" in line for line in asked_again), asked_again
        with pytest.raises(nats.js.errors.NotFoundError):  # nothing half-made was left
            await js.stream_info(STREAM_IN)
    finally:
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


def drill_alert(index: int) -> tuple[str, bytes]:
    """The event id and body of the ``index``-th alert, each its own fingerprint."""
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
    return event_id, body


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
                    await publisher.publish("alerts.in.drill", *drill_alert(index))

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
                return log_count(db, "delivery.succeeded") >= ALERTS and await drained(
                    js,
                    [
                        (STREAM_IN, ROUTER_CONSUMER),
                        (STREAM_WORK, deliver_consumer("hook")),
                        (STREAM_OUT, RECORDER_CONSUMER),
                    ],
                )

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
