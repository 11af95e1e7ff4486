"""`tocsin serve --partitions 2` (DESIGN.md section 17): one real `tocsin serve` process
that runs a partitioner, the router of each partition as a child process, a delivery
child and the API over both logs, on a real nats-server, with a real HTTP receiver.

Each test says what it catches: an API that shows one partition (or counts one twice),
a command sent to the wrong partition or to one only, a merged raw log that loses or
repeats rows, a router child left dead or left behind."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from tests.support import (
    HttpSink,
    Serve,
    alive,
    children_of,
    log_count,
    log_events,
    metric,
    publish_many,
    wait_until,
    webhook_config,
)
from tocsin.store.eventlog import db_path, partition_dir

PARTITIONS = 2


def logs(data: Path) -> list[Path]:
    return [db_path(partition_dir(data, k)) for k in range(PARTITIONS)]


async def get(api: str, path: str, **params: Any) -> Any:
    async with httpx.AsyncClient() as client:
        response = await client.get(api + path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def post(api: str, path: str, body: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.post(api + path, json=body, timeout=40)


def count(db: Path, kind: str) -> int:
    """``log_count``, 0 while the router child is still making its file."""
    try:
        return log_count(db, kind)
    except sqlite3.OperationalError:
        return 0


def opened(data: Path) -> list[int]:
    return [count(db, "alert.opened") for db in logs(data)]


async def start(tmp_path: Path, nats_url: str, sink: HttpSink) -> tuple[Serve, Path]:
    data, config = tmp_path / "data", tmp_path / "tocsin.toml"
    config.write_text(webhook_config(sink.url) + '\n[nats]\nack_wait = "2s"\n')
    serve = Serve(data, nats_url, config, stderr=tmp_path / "serve.log", log_level="info")
    serve.args += ["--partitions", str(PARTITIONS)]
    await serve.start()
    return serve, data


async def test_one_api_answers_for_every_partition_and_commands_reach_the_right_one(
    nats_url: str, sink: HttpSink, tmp_path: Path
) -> None:
    """200 alerts spread over the two partitions' logs: the API lists all 200 once,
    its stats count 200, its raw log pages every row of both logs once (ordered by
    time, each with its partition); an ack is logged by the partition that holds the
    alert alone and read back at once; a silence is logged by both under one id and
    listed once; a re-queue asks both. Catches an API over one partition's log, a
    merge that counts twice, a command carried out by the wrong partition (404 there)
    or by one partition of two, and a cursor that loses or repeats rows."""
    serve, data = await start(tmp_path, nats_url, sink)
    try:
        await publish_many(nats_url, 200, "a", "parts")
        await wait_until(lambda: sum(opened(data)) == 200, 60, "both routers to open 200")
        assert all(count > 0 for count in opened(data)), opened(data)
        await wait_until(lambda: len(sink.requests) >= 200, 60, "200 notifications")

        async def listed() -> bool:
            return len((await get(serve.api, "/api/v1/alerts", limit=500))["alerts"]) == 200

        await wait_until(listed, 20, "the API to list the 200 alerts")
        alerts = (await get(serve.api, "/api/v1/alerts", limit=500))["alerts"]
        assert len({a["id"] for a in alerts}) == 200
        assert (await get(serve.api, "/api/v1/stats"))["total"] == 200
        # /metrics counts what every router committed (serve follows their logs).
        assert await metric(serve.api, "tocsin_events_received_total") == 200
        assert len(await get(serve.api, "/api/v2/alerts")) == 200

        # An alert of partition 1, acknowledged through the API.
        in_p1 = log_events(logs(data)[1], "alert.opened")[0]["alert_id"]
        acked = await post(serve.api, f"/api/v1/alerts/{in_p1}/ack", {"by": "ops"})
        assert acked.status_code == 200, acked.text
        assert acked.json()["status"] == "acked"
        assert [log_count(db, "alert.acked") for db in logs(data)] == [0, 1]
        missing = await post(serve.api, "/api/v1/alerts/nope/ack", {"by": "ops"})
        assert missing.status_code == 404

        silence = await post(
            serve.api,
            "/api/v1/silences",
            {"matchers": {"type": "parts"}, "ends_at": "1h", "created_by": "ops"},
        )
        assert silence.status_code == 201, silence.text
        made = [log_events(db, "silence.created") for db in logs(data)]
        assert [[s["silence_id"] for s in part] for part in made] == [[silence.json()["id"]]] * 2
        listed_silences = (await get(serve.api, "/api/v1/silences"))["silences"]
        assert [s["id"] for s in listed_silences] == [silence.json()["id"]]

        retried = await post(serve.api, "/api/v1/deliveries/retry", {})
        assert retried.status_code == 200, retried.text
        assert retried.json()["requeued"] == 0

        # The raw log, merged: every row of both files once, by time.
        seen: list[tuple[int, int]] = []
        stamps: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 97}
            if cursor is not None:
                params["cursor"] = cursor
            page = await get(serve.api, "/api/v1/events", **params)
            seen += [(e["partition"], e["seq"]) for e in page["events"]]
            stamps += [e["ts"] for e in page["events"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        rows = [log_count_all(db) for db in logs(data)]
        assert len(seen) == len(set(seen)) >= sum(rows) - 2  # the clocks may add a row since
        assert stamps == sorted(stamps)
        for k in range(PARTITIONS):
            mine = [seq for part, seq in seen if part == k]
            assert mine == list(range(1, len(mine) + 1))
        one = await get(serve.api, "/api/v1/events", partition=1, limit=5)
        assert [e["seq"] for e in one["events"]] == [1, 2, 3, 4, 5]
        async with httpx.AsyncClient() as client:
            bad = await client.get(serve.api + "/api/v1/events", params={"after_seq": 3})
        assert bad.status_code == 400
        assert bad.json()["field"] == "after_seq"

        # The dashboard: an alert's page from either partition's log.
        async with httpx.AsyncClient() as client:
            assert (await client.get(serve.api + "/")).status_code == 200
            for db in logs(data):
                opening = log_events(db, "alert.opened")[-1]
                page = await client.get(f"{serve.api}/alerts/{opening['alert_id']}")
                assert page.status_code == 200, page.text
                summary = next(a["summary"] for a in alerts if a["id"] == opening["alert_id"])
                assert summary in page.text
    finally:
        assert await serve.stop() == 0
    assert "Traceback" not in (tmp_path / "serve.log").read_text()


def partition_of_router(pid: int) -> int:
    """The partition a router child routes, from its command line (``--partition k``)."""
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    return int(argv[argv.index(b"--partition") + 1])


def log_count_all(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])


async def test_a_killed_router_is_started_again_and_serve_stops_with_its_children(
    nats_url: str, sink: HttpSink, tmp_path: Path
) -> None:
    """SIGKILL the router of partition 0 mid-stream: serve starts it again, every alert
    is routed and notified (an Idempotency-Key twice only for what was in flight);
    SIGTERM then stops serve with exit 0 and no router left. Catches a router child
    left dead (its partition would stop), one orphaned by serve's stop, and a
    partitioner that forwards a message twice or not at all across the crash."""
    serve, data = await start(tmp_path, nats_url, sink)
    await wait_until(lambda: len(children_of(serve.pid, b"router")) == 2, 30, "both routers")
    routers = children_of(serve.pid, b"router")
    try:
        total = 400
        publishing = asyncio.create_task(publish_many(nats_url, total, "k", "parts"))
        await wait_until(lambda: min(opened(data)) >= 20, 30, "both routers routing")
        victim = next(pid for pid in routers if partition_of_router(pid) == 0)
        os.kill(victim, signal.SIGKILL)
        await wait_until(
            lambda: len(children_of(serve.pid, b"router") - routers) == 1,
            30,
            "a new router of partition 0",
        )
        await publishing
        await wait_until(lambda: sum(opened(data)) == total, 60, "every alert opened")
        await wait_until(
            lambda: sum(count(db, "delivery.succeeded") for db in logs(data)) == total,
            60,
            "every notification delivered",
        )
        keys = Counter(r.headers["idempotency-key"] for r in sink.requests)
        routed = {e["notification_id"] for db in logs(data) for e in log_events(db, "alert.routed")}
        assert set(keys) == routed
        assert len(routed) == total
        now = children_of(serve.pid, b"router")
    finally:
        assert await serve.stop() == 0
    assert not any(alive(pid) for pid in now)
    said = (tmp_path / "serve.log").read_text()
    assert "router process 0" in said
    assert "2 partitions, a router child each" in said  # serve's ready line
    assert "partition 1 of 2" in said  # a router child's
    assert "killed by SIGKILL; starting it again" in said


async def test_a_reload_is_checked_by_serve_and_carried_out_by_every_child(
    nats_url: str, sink: HttpSink, tmp_path: Path
) -> None:
    """``POST /-/reload`` on serve --partitions 2: a file that adds a receiver is refused
    (400) and no router logs a load; a new receiver URL is logged by both routers
    (``config.loaded`` with trigger ``tocsin serve``) and the next alerts, whichever
    partition routes them, go to the new URL. Catches a reload answered by a process
    that writes no log (nothing would change), one that reaches one router of two, and a
    refused file that reaches the children anyway."""
    serve, data = await start(tmp_path, nats_url, sink)
    other = HttpSink()
    await other.start()
    config = tmp_path / "tocsin.toml"
    try:
        await wait_until(lambda: all(count(db, "config.loaded") for db in logs(data)), 30, "starts")
        good = config.read_text()
        config.write_text(good + '\n[receivers.extra]\nchannel = "log"\n')
        refused = await post(serve.api, "/-/reload", {})
        assert refused.status_code == 400, refused.text
        assert [count(db, "config.loaded") for db in logs(data)] == [1, 1]
        config.write_text(good.replace(sink.url, other.url))
        reloaded = await post(serve.api, "/-/reload", {})
        assert reloaded.status_code == 200, reloaded.text
        assert reloaded.json()["changed"] is True
        loads = [log_events(db, "config.loaded") for db in logs(data)]
        assert [[e["trigger"] for e in part] for part in loads] == [["start", "tocsin serve"]] * 2
        before = len(sink.requests)
        await publish_many(nats_url, 40, "r", "parts")
        await wait_until(lambda: len(other.requests) == 40, 30, "the alerts at the new URL")
        assert len(sink.requests) == before
    finally:
        assert await serve.stop() == 0
        await other.stop()
