"""Repartitioning 2 -> 3 end to end (DESIGN.md section 17), every part its own `tocsin`
process on one real nats-server, real SQLite files, a real HTTP receiver: open alerts
routed by 2 partitions, everything stopped, `tocsin repartition --from 2 --to 3`, 3
partitions started, then duplicates and resolves of the old alerts."""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path

import msgspec
import nats

from tests.pipeline.test_partitions import Command, common, publish_all
from tests.support import TOCSIN, HttpSink, log_events, wait_until, webhook_config
from tocsin.core import partition
from tocsin.core.subjects import STREAM_PART, router_consumer
from tocsin.core.times import format_us, now_us
from tocsin.store.eventlog import db_path
from tocsin.store.lock import WriterLock

FINGERPRINTS = 60


def config_text(url: str, count: int) -> str:
    return webhook_config(url) + f'\n[nats]\nack_wait = "3s"\n\n[partitions]\ncount = {count}\n'


def events(at: str, status: str = "firing") -> list[tuple[str, bytes]]:
    return [
        (
            "alerts.in.load",
            msgspec.json.encode(
                {
                    "type": "load_high",
                    "severity": "warning",
                    "summary": f"load on n{i}",
                    "status": status,
                    "labels": {"n": str(i)},
                    "timestamp": at,
                }
            ),
        )
        for i in range(FINGERPRINTS)
    ]


def logs_of(data_dir: Path, count: int, kind: str) -> list[list[dict[str, object]]]:
    return [log_events(db_path(data_dir / f"p{k}"), kind) for k in range(count)]


def flat(rows: list[list[dict[str, object]]]) -> list[dict[str, object]]:
    return [row for log in rows for row in log]


async def run_cli(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        TOCSIN,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def start(count: int, args: list[str]) -> list[Command]:
    processes = [
        *(Command("router", *args, "--partition", str(k), health=True) for k in range(count)),
        Command("deliver", *args, health=True),
        Command("partition", *args),
    ]
    for process in processes:
        await process.start()
    return processes


async def consumers(nats_url: str) -> set[str]:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        return {c.name for c in await js.consumers_info(STREAM_PART)}
    finally:
        await nc.close()


async def test_repartition_2_to_3_moves_open_alerts_with_their_dedup_state(
    nats_url: str, sink: HttpSink, tmp_path: Path
) -> None:
    """60 open alerts notified by 2 partitions; stopped; repartitioned to 3; restarted
    on 3: a duplicate of each (same bucket) notifies nobody (catches the dedup state left
    behind: 60 new "firing" notifications), and a resolve of each resolves the very
    alert it opened under 2 and sends exactly one "resolved" notification (catches the
    open alert left behind: the resolve would be ignored). Every alert lands in the
    partition its fingerprint has under 3 (catches moving by the old partition), the
    old logs are archived and still verify, every new log verifies, and the command
    refused while a router ran, naming its lock."""
    data_dir = tmp_path / "data"
    two, three = tmp_path / "two.toml", tmp_path / "three.toml"
    two.write_text(config_text(sink.url, 2))
    three.write_text(config_text(sink.url, 3))
    at = format_us(now_us())  # one dedup bucket for the whole test
    processes = await start(2, common(data_dir, nats_url, two))
    try:
        await publish_all(nats_url, events(at))
        await wait_until(lambda: len(sink.requests) >= FINGERPRINTS, 60, "every notification")

        def settled() -> bool:
            routed = flat(logs_of(data_dir, 2, "alert.routed"))
            return len(flat(logs_of(data_dir, 2, "delivery.succeeded"))) == len(routed)

        await wait_until(settled, 30, "every outcome in its partition's log")
        opened = {
            str(e["fingerprint"]): str(e["alert_id"])
            for e in flat(logs_of(data_dir, 2, "alert.opened"))
        }
        assert len(opened) == FINGERPRINTS

        args = ["--data-dir", str(data_dir), "--nats-url", nats_url, "--config", str(three)]
        code, out = await run_cli("repartition", "--from", "2", "--to", "3", *args)
        assert code == 1, out
        assert str(WriterLock(data_dir / "p0").path) in out, out
        assert "is held" in out
        for process in processes:
            assert await process.stop() == 0
        processes = []

        code, out = await run_cli("repartition", "--from", "2", "--to", "3", *args)
        assert code == 0, out
        assert f"{FINGERPRINTS} open alert(s) moved" in out
        assert {router_consumer(k) for k in range(3)} <= await consumers(nats_url)
        (archive,) = (data_dir / "repartitioned").iterdir()
        for k in range(2):
            old = db_path(archive / f"p{k}")
            assert not old.stat().st_mode & 0o222, "the old log is read-only"
            code, out = await run_cli("verify", "--data-dir", str(old.parent))
            assert code == 0, out
        moved = flat(logs_of(data_dir, 3, "alert.moved"))
        assert {str(e["fingerprint"]): str(e["alert_id"]) for e in moved} == opened

        processes = await start(3, common(data_dir, nats_url, three))
        await publish_all(nats_url, events(at))
        await wait_until(
            lambda: len(flat(logs_of(data_dir, 3, "alert.suppressed"))) >= FINGERPRINTS,
            60,
            "every duplicate judged",
        )
        await publish_all(nats_url, events(at, "resolved"))
        await wait_until(
            lambda: len(sink.requests) >= 2 * FINGERPRINTS, 60, "every resolved notification"
        )

        def resolved_settled() -> bool:
            routed = flat(logs_of(data_dir, 3, "alert.routed"))
            return len(routed) == FINGERPRINTS and len(
                flat(logs_of(data_dir, 3, "delivery.succeeded"))
            ) == len(routed)

        await wait_until(resolved_settled, 30, "every resolve delivered and recorded")
        for process in processes:
            assert await process.stop() == 0
        processes = []

        bodies = [msgspec.json.decode(r.body) for r in sink.requests]
        assert collections.Counter(b["reason"] for b in bodies) == {
            "firing": FINGERPRINTS,
            "resolved": FINGERPRINTS,
        }
        resolved_ids = collections.Counter(
            b["alert_id"] for b in bodies if b["reason"] == "resolved"
        )
        assert set(resolved_ids) == set(opened.values())
        assert set(resolved_ids.values()) == {1}
        suppressed = flat(logs_of(data_dir, 3, "alert.suppressed"))
        assert collections.Counter(e.get("cause", "duplicate") for e in suppressed) == {
            "duplicate": FINGERPRINTS
        }
        assert flat(logs_of(data_dir, 3, "alert.opened")) == []
        for k, log in enumerate(logs_of(data_dir, 3, "alert.received")):
            for e in log:
                labels = e["labels"]
                assert isinstance(labels, dict)
                assert k == partition.of_alert(str(e["fingerprint"]), "load_high", labels, count=3)
        for k in range(3):
            code, out = await run_cli("verify", "--data-dir", str(data_dir / f"p{k}"))
            assert code == 0, out
    finally:
        for process in processes:
            process.kill()
