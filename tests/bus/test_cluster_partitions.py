"""Partitions on a real three-node cluster (issue #22; DESIGN.md sections 9 and 17),
through the three failures a cluster lives with: a router, a partitioner and the NATS
node leading ``TOCSIN_PART`` each SIGKILLed mid-stream, and started again.

The cluster is ``tests/bus/cluster.py``'s (the deploy config, accounts and TLS, R3
streams by ``TOCSIN_NATS_REPLICAS=3``). On it, every part its own ``tocsin`` process
given all three nodes as seeds: 2 partitioners, the routers of 3 partitions (each its
log in ``<data-dir>/p<k>``), 2 delivery workers, and a real HTTP receiver. 6,000 events
over 600 fingerprints (10 each, in one dedup bucket: one notification each) are
published at about 600 a second, each retried under its ``Nats-Msg-Id`` until
JetStream acknowledges it, so the set of acknowledged events is exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, defaultdict
from functools import partial
from pathlib import Path

import httpx
import msgspec
import nats
import pytest

from tests.bus.cluster import Cluster, Publisher, Role, drained
from tests.support import TOCSIN, HttpSink, log_count, log_events, wait_until, webhook_config
from tocsin.bus.connection import server_urls
from tocsin.core.subjects import (
    PARTITIONER_CONSUMER,
    STREAM_IN,
    STREAM_OUT,
    STREAM_PART,
    STREAM_WORK,
    deliver_consumer,
    recorder_consumer,
    router_consumer,
)
from tocsin.core.times import format_us, now_us
from tocsin.store.eventlog import db_path
from tocsin.store.ledger import load_state

EVENTS = 6000
FINGERPRINTS = 600
PARTITIONS = 3
RATE = 600  # events published a second
IN_FLIGHT = 64  # publishes awaiting their PubAck at once
ROUTER_KILLED_AT = EVENTS // 6  # acknowledged events before the router of p1 is killed
PARTITIONER_KILLED_AT = EVENTS // 3  # ... before a partitioner is
NODE_KILLED_AT = EVENTS // 2  # ... before TOCSIN_PART's leader node is
NODE_RESTARTED_AT = 5 * EVENTS // 6  # ... and before that node starts again

pytestmark = pytest.mark.timeout(240)

# Each worker stamps its requests with its own name, so the receiver tells who sent what.
CONFIG = """headers = { "X-Tocsin-Worker" = "${TOCSIN_WORKER}" }

[nats]
ack_wait = "5s"

[partitions]
count = 3
"""


def part_db(data_dir: Path, k: int) -> Path:
    return db_path(data_dir / f"p{k}")


def event(index: int, at: str) -> tuple[str, bytes]:
    """The ``index``-th event: its id, and its body (fingerprint ``index % 600``)."""
    event_id = f"part-{index:05d}"
    body = {
        "type": "load_high",
        "severity": "warning",
        "summary": f"event {index}",
        "labels": {"n": str(index % FINGERPRINTS)},
        "timestamp": at,
        "event_id": event_id,
    }
    return event_id, msgspec.json.encode(body)


async def publish_paced(publisher: Publisher) -> float:
    """Publish every event at ``RATE`` a second, at most ``IN_FLIGHT`` unacknowledged;
    the seconds it took. The sleeps shape the load; nothing waits on them."""
    at = format_us(now_us())  # one dedup bucket for all: one notification a fingerprint
    limit = asyncio.Semaphore(IN_FLIGHT)
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def one(index: int) -> None:
        try:
            await publisher.publish("alerts.in.load", *event(index, at))
        finally:
            limit.release()

    sent = []
    for index in range(EVENTS):
        await asyncio.sleep(max(0.0, started + index / RATE - loop.time()))
        await limit.acquire()
        sent.append(asyncio.create_task(one(index)))
    await asyncio.gather(*sent)
    return loop.time() - started


PARTITIONED_CONSUMERS = [
    (STREAM_IN, PARTITIONER_CONSUMER),
    (STREAM_WORK, deliver_consumer("hook")),
    *((STREAM_PART, router_consumer(k)) for k in range(PARTITIONS)),
    *((STREAM_OUT, recorder_consumer(k)) for k in range(PARTITIONS)),
]
"""Every durable consumer of the partitioned shape."""


async def test_partitions_survive_a_router_a_partitioner_and_the_part_leader_killed(
    tmp_path: Path, cluster: Cluster, sink: HttpSink
) -> None:
    """Each fingerprint's 10 events are in exactly one partition's log, once each, and
    make one alert of 10 occurrences there (catches a fingerprint split over partitions,
    a forward sent again under a new ``Nats-Msg-Id`` by the restarted partitioner or
    after the failover, and a redelivery to the restarted router counted again); one
    notification a fingerprint, routed and recorded delivered in its own partition's log
    only, and received once at the webhook: no ``Idempotency-Key`` twice (catches an
    outbox re-publish after the router's restart, or an outcome lost in the failover,
    sending again); both shared workers delivered; each of the three chains verifies."""
    data = tmp_path / "data"
    config = tmp_path / "tocsin.toml"
    config.write_text(webhook_config(sink.url) + CONFIG)
    login = cluster.tocsin_login()
    common = ["--config", str(config), "--nats-url", cluster.urls]

    def role(name: str, *args: str, health: bool = True) -> Role:
        return Role(name, [*args, *common], login, tmp_path / f"{name}.log", health)

    routers = [
        role(f"p{k}", "router", "--data-dir", str(data), "--partition", str(k))
        for k in range(PARTITIONS)
    ]
    workers = [role(w, "deliver", "--data-dir", str(tmp_path / w)) for w in ("w1", "w2")]
    partitioners = [
        role(f"part{i}", "partition", "--data-dir", str(data), health=False) for i in (1, 2)
    ]
    roles = [*routers, *workers, *partitioners]
    started = time.monotonic()
    nc = None
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            for process in roles:
                await process.start()
            for process in roles:
                await wait_until(partial(process.ready, client), 60, f"{process.name} ready")
            ready_in = time.monotonic() - started

            nc = await nats.connect(
                server_urls(cluster.urls),
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                **cluster.login(),
            )
            js = nc.jetstream(timeout=5)
            part = await js.stream_info(STREAM_PART)
            assert part.config.num_replicas == 3
            assert part.cluster is not None
            assert len(part.cluster.replicas or []) == 2

            publisher = Publisher(js)
            publishing = asyncio.create_task(publish_paced(publisher))
            try:
                await asyncio.wait_for(publisher.reached(ROUTER_KILLED_AT), 60)
                assert await routers[1].kill() < 0
                await routers[1].start()
                await wait_until(partial(routers[1].ready, client), 60, "p1 ready again")

                await asyncio.wait_for(publisher.reached(PARTITIONER_KILLED_AT), 60)
                assert await partitioners[0].kill() < 0
                await partitioners[0].start()

                await asyncio.wait_for(publisher.reached(NODE_KILLED_AT), 60)
                leader = (await js.stream_info(STREAM_PART)).cluster
                assert leader is not None
                assert leader.leader is not None
                victim = cluster.node(leader.leader)
                cluster.kill(victim)

                async def new_leader() -> bool:
                    with contextlib.suppress(Exception):
                        info = (await js.stream_info(STREAM_PART)).cluster
                        return info is not None and info.leader not in (None, victim.name)
                    return False

                await wait_until(new_leader, 60, f"{STREAM_PART} to elect a new leader")
                await asyncio.wait_for(publisher.reached(NODE_RESTARTED_AT), 90)
                cluster.start(victim)
                published_in = await asyncio.wait_for(publishing, 120)
            finally:
                if not publishing.done():
                    publishing.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await publishing
            assert len(publisher.acked) == EVENTS

            await wait_until(lambda: cluster.healthy(client, victim), 90, f"{victim.name} current")

            def counts(kind: str) -> list[int]:
                return [log_count(part_db(data, k), kind) for k in range(PARTITIONS)]

            async def settled() -> bool:
                assert all(process.alive() for process in roles)
                routed = counts("alert.routed")
                return (
                    sum(counts("alert.received")) >= EVENTS
                    and sum(routed) >= FINGERPRINTS
                    and counts("delivery.succeeded") == routed
                    and await drained(js, PARTITIONED_CONSUMERS)
                )

            await wait_until(settled, 120, "every event routed, delivered and recorded")
            settled_in = time.monotonic() - started
    finally:
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()
        codes = {process.name: await process.stop() for process in roles if process.process}
    assert set(codes.values()) == {0}, codes

    # Each fingerprint in one partition's log, each acknowledged event there once.
    received = [log_events(part_db(data, k), "alert.received") for k in range(PARTITIONS)]
    where: dict[str, set[int]] = defaultdict(set)
    for k, rows in enumerate(received):
        assert rows, f"partition {k} got nothing"
        for row in rows:
            where[row["fingerprint"]].add(k)
    assert len(where) == FINGERPRINTS
    split = {f: sorted(p) for f, p in where.items() if len(p) > 1}
    assert not split, f"{len(split)} fingerprints in several partitions: {list(split.items())[:5]}"
    event_ids = Counter(row["event_id"] for rows in received for row in rows)
    assert set(event_ids) == set(publisher.acked)
    assert set(event_ids.values()) == {1}, [e for e, n in event_ids.items() if n > 1][:5]
    per_fingerprint = Counter(row["fingerprint"] for rows in received for row in rows)
    assert set(per_fingerprint.values()) == {EVENTS // FINGERPRINTS}
    for k in range(PARTITIONS):
        alerts = load_state(part_db(data, k)).alerts.values()
        assert {a.fingerprint for a in alerts} == {f for f, p in where.items() if k in p}
        assert {a.occurrences for a in alerts} == {EVENTS // FINGERPRINTS}

    # One notification a fingerprint, in its partition's log, its outcome there alone.
    routed_ids: set[str] = set()
    for k in range(PARTITIONS):
        routed = log_events(part_db(data, k), "alert.routed")
        assert all(where[r["fingerprint"]] == {k} for r in routed)
        done = Counter(
            d["notification_id"] for d in log_events(part_db(data, k), "delivery.succeeded")
        )
        assert Counter(r["notification_id"] for r in routed) == done
        assert set(done.values()) == {1}
        routed_ids |= set(done)
    assert len(routed_ids) == FINGERPRINTS

    # The receiver: every notification once, every fingerprint once, from both workers.
    keys = Counter(request.headers["idempotency-key"] for request in sink.requests)
    assert set(keys) == routed_ids
    assert set(keys.values()) == {1}, [k for k, n in keys.items() if n > 1][:5]
    fingerprints = Counter(request.json()["fingerprint"] for request in sink.requests)
    assert len(fingerprints) == FINGERPRINTS
    assert set(fingerprints.values()) == {1}
    by_worker = Counter(request.headers["x-tocsin-worker"] for request in sink.requests)
    assert set(by_worker) == {"w1", "w2"}, by_worker

    verify = await asyncio.create_subprocess_exec(
        TOCSIN,
        "verify",
        "--data-dir",
        str(data),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, errors = await asyncio.wait_for(verify.communicate(), 60)
    assert verify.returncode == 0, errors.decode()
    assert [line.split(":")[1].strip() for line in out.decode().splitlines()] == [
        f"partition {k}" for k in range(PARTITIONS)
    ]
    print(
        f"\ncluster formed {cluster.formed_after:.1f}s, then: tocsin ready {ready_in:.1f}s, "
        f"{EVENTS} published in {published_in:.1f}s ({victim.name} killed as {STREAM_PART}'s "
        f"leader; {publisher.retries} publish retries, {publisher.duplicates} deduplicated), "
        f"settled {settled_in:.1f}s; by partition {[len(r) for r in received]}, "
        f"by worker {dict(by_worker)}"
    )
