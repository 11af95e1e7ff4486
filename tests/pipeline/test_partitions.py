"""Partitions end to end (DESIGN.md section 17), every part its own `tocsin` process on
one real nats-server: 2 partitioners, the routers of 2 partitions, 1 delivery worker,
a real HTTP receiver."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import sqlite3
from pathlib import Path
from typing import Any

import msgspec
import nats

from tests.support import TOCSIN, HttpSink, free_port, log_events, wait_until, webhook_config
from tocsin.bus.anchor import anchored_head
from tocsin.core.subjects import anchor_subject, delivery_status_subject
from tocsin.core.times import format_us, now_us
from tocsin.store.eventlog import db_path

EVENTS = 2000
FINGERPRINTS = 200
PARTITIONS = 2


class Command:
    """One ``tocsin`` process, stopped (SIGTERM) or killed by its own PID."""

    def __init__(self, *args: str, fault: str | None = None, health: bool = False) -> None:
        self.port = free_port() if health else None
        self.args = [*args, *(["--health", f"127.0.0.1:{self.port}"] if health else [])]
        self.env = {k: v for k, v in os.environ.items() if k != "TOCSIN_FAULT"}
        if fault:
            self.env["TOCSIN_FAULT"] = fault
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> Command:
        self.process = await asyncio.create_subprocess_exec(
            TOCSIN,
            "--log-level",
            "warning",
            *self.args,
            env=self.env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        if self.port is not None:
            await wait_until(self._ready, 30, f"tocsin {self.args[0]} to be ready")
        return self

    async def _ready(self) -> bool:
        import httpx

        assert self.process is not None
        assert self.process.returncode is None, f"tocsin {self.args} exited at start"
        try:
            async with httpx.AsyncClient() as client:
                answer = await client.get(f"http://127.0.0.1:{self.port}/readyz")
        except httpx.HTTPError:
            return False
        return answer.status_code == 200

    async def exited(self, timeout: float = 30) -> int:
        assert self.process is not None
        return await asyncio.wait_for(self.process.wait(), timeout)

    async def stop(self) -> int:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        return await self.exited()

    def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            os.kill(self.process.pid, signal.SIGKILL)


def common(data_dir: Path, nats_url: str, config: Path) -> list[str]:
    return ["--data-dir", str(data_dir), "--nats-url", nats_url, "--config", str(config)]


def part_db(data_dir: Path, k: int) -> Path:
    return db_path(data_dir / f"p{k}")


def per_log(data_dir: Path, kind: str) -> list[list[dict[str, Any]]]:
    return [log_events(part_db(data_dir, k), kind) for k in range(PARTITIONS)]


async def publish_all(nats_url: str, messages: list[tuple[str, bytes]]) -> None:
    """Publish to TOCSIN_IN, each with its PubAck."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    try:
        for start in range(0, len(messages), 100):
            await asyncio.gather(
                *(js.publish(s, d, timeout=10) for s, d in messages[start : start + 100])
            )
    finally:
        await nc.close()


def last_seq(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return int(conn.execute("SELECT MAX(seq) FROM events").fetchone()[0])


async def anchored_seqs(nats_url: str) -> list[int]:
    """The seq of the chain head each partition anchored in NATS; none under the name
    of an unpartitioned log (catches two partitions overwriting one anchor, which
    ``verify --against-nats`` would then find wrong for one of them)."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        assert await anchored_head(js) is None
        heads = [await anchored_head(js, anchor_subject(k)) for k in range(PARTITIONS)]
        return [head.seq if head is not None else 0 for head in heads]
    finally:
        await nc.close()


async def status_answers(nats_url: str, data_dir: Path) -> list[list[str]]:
    """For one notification of each partition, what each partition's router answers a
    worker that asks (row: the notification's partition; column: the one asked)."""
    nc = await nats.connect(nats_url)
    try:
        answers = []
        for routed in per_log(data_dir, "alert.routed"):
            nid = routed[0]["notification_id"].encode()
            row = []
            for k in range(PARTITIONS):
                reply = await nc.request(delivery_status_subject(k), nid, timeout=5)
                row.append(reply.data.decode())
            answers.append(row)
        return answers
    finally:
        await nc.close()


async def test_two_partitions_count_every_event_once_in_one_log(
    nats_url: str, sink: HttpSink, tmp_path: Path
) -> None:
    """2,000 events over 200 fingerprints through 2 partitioners and 2 partition
    routers, one partitioner SIGKILLed after forwarding a batch and before acking it
    (then restarted): every fingerprint is in exactly one log with exactly its 10
    events (catches a fingerprint split over partitions, a salted hash, and a forward
    sent again without its ``Nats-Msg-Id``: the killed batch would be counted twice);
    each log records the outcomes of its own notifications and no other (catches
    recorders taking every outcome), and a worker asking about a notification is
    answered by its own partition's router (catches a shared question subject, where
    another partition would say "unknown"); each partition anchors its own chain
    head; the receiver sees no ``Idempotency-Key`` twice;
    bad input is rejected in exactly one log, on the subject it was published on
    (catches a router deciding on ``tocsin.part.<k>``); both chains verify."""
    data_dir = tmp_path / "data"
    config = tmp_path / "tocsin.toml"
    config.write_text(
        webhook_config(sink.url)
        + f"""
[nats]
ack_wait = "3s"

[partitions]
count = {PARTITIONS}
"""
    )
    args = common(data_dir, nats_url, config)
    routers = [
        Command("router", *args, "--partition", str(k), health=True) for k in range(PARTITIONS)
    ]
    deliverer = Command("deliver", *args, health=True)
    partitioners: list[Command] = []
    try:
        for process in [*routers, deliverer]:
            await process.start()
        at = format_us(now_us())  # one dedup bucket for all: one notification each
        events = [
            (
                "alerts.in.load",
                msgspec.json.encode(
                    {
                        "type": "load_high",
                        "severity": "warning",
                        "summary": f"event {i}",
                        "labels": {"n": str(i % FINGERPRINTS)},
                        "timestamp": at,
                    }
                ),
            )
            for i in range(EVENTS)
        ]
        bad = [
            ("alerts.in.broken", b"{not json"),
            ("alerts.in.loud", b'{"type": "x", "severity": "loud", "summary": "s"}'),
            ("alerts.heartbeat.nobody", b""),
        ]
        await publish_all(nats_url, [*events, *bad])

        # The first partitioner dies right after forwarding its first batch.
        crashing = Command("partition", *args, fault="partition.after_forward:1")
        await crashing.start()
        assert await crashing.exited() == -signal.SIGKILL
        partitioners = [await Command("partition", *args).start() for _ in range(2)]

        def received() -> int:
            return sum(len(events) for events in per_log(data_dir, "alert.received"))

        await wait_until(lambda: received() >= EVENTS, 90, "every event in a log")
        await wait_until(lambda: len(sink.requests) >= FINGERPRINTS, 60, "every notification")

        def settled() -> bool:
            routed = per_log(data_dir, "alert.routed")
            done = per_log(data_dir, "delivery.succeeded")
            return all(len(r) == len(d) for r, d in zip(routed, done, strict=True))

        await wait_until(settled, 30, "every outcome in its partition's log")
        assert await status_answers(nats_url, data_dir) == [
            ["delivered", "unknown"],
            ["unknown", "delivered"],
        ]
        for process in [*partitioners, *routers, deliverer]:
            assert await process.stop() == 0
        assert await anchored_seqs(nats_url) == [last_seq(part_db(data_dir, k)) for k in range(2)]

        logs = per_log(data_dir, "alert.received")
        assert received() == EVENTS
        where: dict[str, set[int]] = collections.defaultdict(set)
        counts: collections.Counter[str] = collections.Counter()
        for k, events_of_k in enumerate(logs):
            assert events_of_k, f"partition {k} got nothing"
            for e in events_of_k:
                where[e["fingerprint"]].add(k)
                counts[e["fingerprint"]] += 1
                assert (e["subject"], e["source"]) == ("alerts.in.load", "load")
        assert len(counts) == FINGERPRINTS
        assert set(counts.values()) == {EVENTS // FINGERPRINTS}
        assert all(len(partitions) == 1 for partitions in where.values())

        for routed, done in zip(
            per_log(data_dir, "alert.routed"), per_log(data_dir, "delivery.succeeded"), strict=True
        ):
            assert sorted(r["notification_id"] for r in routed) == sorted(
                d["notification_id"] for d in done
            )
        keys = collections.Counter(r.headers["idempotency-key"] for r in sink.requests)
        assert len(keys) == FINGERPRINTS
        assert set(keys.values()) == {1}

        rejected = [r for rows in per_log(data_dir, "alert.rejected") for r in rows]
        assert sorted(r["subject"] for r in rejected) == sorted(s for s, _ in bad)

        for k in range(PARTITIONS):
            verify = await asyncio.create_subprocess_exec(
                TOCSIN,
                "verify",
                "--data-dir",
                str(data_dir / f"p{k}"),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            assert await asyncio.wait_for(verify.wait(), 60) == 0, f"partition {k}'s chain"
    finally:
        for process in [*partitioners, *routers, deliverer]:
            process.kill()
