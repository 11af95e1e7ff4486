"""Heartbeats end to end (DESIGN.md section 13), on real parts: nats-server, a webhook
receiver on 127.0.0.1, the SQLite log, the HTTP API, the `tocsin` command, and `tocsin
serve` killed with SIGKILL. Timings are a few seconds; every wait is on a condition with
a timeout (the one sleep paces the beats: it is the workload, not a wait)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from tests.support import (
    TOCSIN,
    HttpSink,
    Serve,
    Subscriber,
    Tocsin,
    log_events,
    publish,
    wait_until,
)
from tocsin.core.times import now_us
from tocsin.store.eventlog import db_path
from tocsin.store.ledger import load_state

SECOND = 1_000_000
EVERY, GRACE = 2, 2  # seconds: beats once a second keep well inside every + grace


def config(url: str, every: int = EVERY, grace: int = GRACE) -> str:
    return f"""
[[route]]
match = {{}}
receivers = ["hook"]

[receivers.hook]
channel = "webhook"
url = "{url}"
timeout = "5s"

[heartbeats.backup]
every = "{every}s"
grace = "{grace}s"
severity = "critical"
summary = "the nightly backup has not reported"
labels = {{ team = "dba" }}
"""


def bodies(sink: HttpSink) -> list[dict[str, Any]]:
    return [request.json() for request in sink.requests]


async def beat_cli(name: str, config_file: Path, nats_url: str) -> tuple[int, str, str]:
    """``tocsin heartbeat NAME --config FILE`` (run off the event loop the service
    shares): its exit code, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        TOCSIN,
        "heartbeat",
        name,
        "--config",
        str(config_file),
        "--nats-url",
        nats_url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_beats_keep_it_quiet_silence_opens_the_alert_and_one_beat_resolves_it(
    nats_url: str, sink: HttpSink, data_dir: Path
) -> None:
    """Catches beats that do not move the deadline (an alert while they come), a
    silence that opens nothing or opens it before ``every + grace``, and a beat that
    leaves the alert open or resolves it without telling the receiver."""
    service = await Tocsin(data_dir, nats_url, config(sink.url)).start()
    try:
        async with httpx.AsyncClient(base_url=service.api) as http:
            for _ in range(6):
                assert (await http.post("/api/v1/heartbeats/backup")).status_code == 202
                await asyncio.sleep(1.0)  # the heartbeat's period
            await wait_until(lambda: service.count("heartbeat.received") == 6, 10, "6 beats")
            assert service.count("heartbeat.missed") == 0
            assert sink.requests == []

            await wait_until(lambda: len(sink.requests) == 1, 15, "the missed heartbeat")
            [missed] = service.events("heartbeat.missed")
            last_beat = service.events("heartbeat.received")[-1]["at"]
            assert missed["due_at"] == last_beat + (EVERY + GRACE) * SECOND
            assert missed["fired_at"] >= missed["due_at"]
            assert missed["last_beat"] == last_beat
            [firing] = bodies(sink)
            assert (firing["reason"], firing["type"], firing["severity"]) == (
                "firing",
                "heartbeat.missed",
                "critical",
            )
            assert firing["labels"] == {"heartbeat": "backup", "team": "dba"}
            assert firing["alert_id"] == missed["alert_id"]
            listed = (await http.get("/api/v1/heartbeats")).json()["heartbeats"]
            assert [(h["name"], h["status"], h["alert_id"]) for h in listed] == [
                ("backup", "missed", missed["alert_id"])
            ]

            assert (await http.post("/api/v1/heartbeats/backup")).status_code == 202
            await wait_until(lambda: len(sink.requests) == 2, 15, "the resolve")
            resolved = bodies(sink)[1]
            assert (resolved["reason"], resolved["status"], resolved["alert_id"]) == (
                "resolved",
                "resolved",
                missed["alert_id"],
            )
            [shown] = (await http.get("/api/v1/heartbeats")).json()["heartbeats"]
            assert (shown["status"], shown["beats"], shown["missed"]) == ("ok", 7, 1)
            assert shown["next_deadline"] is not None
            stats = (await http.get("/api/v1/stats", params={"hours": 1})).json()
            assert stats["heartbeats_missed"] == 1
        metrics = await service.metrics()
        beat_label = frozenset({("heartbeat", "backup")})
        assert metrics[("tocsin_heartbeats_missed_total", beat_label)] == 1
        assert metrics[("tocsin_heartbeats_received_total", beat_label)] == 7
        await service.assert_live_state_is_the_log()
    finally:
        await service.stop()


async def test_a_restart_does_not_reset_the_deadline(
    nats_url: str, sink: HttpSink, tmp_path: Path
) -> None:
    """Catches a deadline that a start counts afresh (a heartbeat that died with the
    service would never be missed): one beat, SIGKILL, the deadline passes while tocsin
    is down, and the restarted service misses the heartbeat at once, for the deadline
    of the beat before the kill."""
    data_dir = tmp_path / "data"
    config_file = tmp_path / "tocsin.toml"
    config_file.write_text(config(sink.url, every=3, grace=1))
    db = db_path(data_dir)
    first = await Serve(data_dir, nats_url, config_file).start()
    try:
        code, out, err = await beat_cli("backup", config_file, nats_url)
        assert code == 0, err
        assert "alerts.heartbeat.backup" in out
        await wait_until(lambda: log_events(db, "heartbeat.received") != [], 10, "the beat")
    finally:
        first.kill()
        await first.wait()
    [received] = log_events(db, "heartbeat.received")
    deadline = received["at"] + 4 * SECOND
    await wait_until(lambda: now_us() > deadline, 10, "the deadline to pass while down")

    second = await Serve(data_dir, nats_url, config_file).start()
    try:
        started = now_us()
        await wait_until(lambda: log_events(db, "heartbeat.missed") != [], 10, "the miss")
        [missed] = log_events(db, "heartbeat.missed")
        assert missed["due_at"] == deadline  # the beat before the kill, not the restart
        assert missed["fired_at"] < started + 4 * SECOND
        await wait_until(lambda: len(sink.requests) == 1, 15, "its notification")
        assert bodies(sink)[0]["labels"]["heartbeat"] == "backup"
        assert len(log_events(db, "config.loaded")) == 2
    finally:
        assert await second.stop() == 0
    assert load_state(db).heartbeats["backup"].missed_alert == missed["alert_id"]


async def test_unknown_names_are_rejected_with_a_reason_by_nats_http_and_the_cli(
    nats_url: str, sink: HttpSink, data_dir: Path
) -> None:
    """Catches a beat of a name not configured that is taken as a beat or dropped
    silently (NATS: logged as rejected and published on ``alerts.rejected``; HTTP: 404;
    the CLI with the config: exit 2, nothing sent), and a beat that is not taken as an
    alert event (its payload ignored: bytes that are no JSON are no rejection)."""
    service = await Tocsin(data_dir, nats_url, config(sink.url, every=3600)).start()
    rejected = await Subscriber().start(nats_url, "alerts.rejected")
    try:
        await publish(nats_url, "alerts.heartbeat.backup", b"not json at all")
        await publish(nats_url, "alerts.heartbeat.nightly", b"{}")
        await wait_until(lambda: len(rejected.messages) == 1, 10, "the rejection")
        [message] = rejected.json()
        assert message["subject"] == "alerts.heartbeat.nightly"
        assert "'nightly'" in message["reason"]
        [logged] = service.events("alert.rejected")
        assert (logged["code"], logged["subject"]) == ("unknown_heartbeat", message["subject"])
        await wait_until(lambda: service.count("heartbeat.received") == 1, 10, "the good beat")

        async with httpx.AsyncClient(base_url=service.api) as http:
            unknown = await http.post("/api/v1/heartbeats/nightly")
            assert unknown.status_code == 404
            assert unknown.json()["field"] == "name"
            forged = await http.post("/api/v1/heartbeats/backup", headers={"Host": "evil.example"})
            assert forged.status_code == 403  # DESIGN.md section 7's mutation rules
        config_file = data_dir / "tocsin.toml"
        code, _, err = await beat_cli("nightly", config_file, nats_url)
        assert (code, "[heartbeats.nightly]" in err) == (2, True)
        code, _, err = await beat_cli("backup", config_file, nats_url)
        assert code == 0, err
        await wait_until(lambda: service.count("heartbeat.received") == 2, 10, "the CLI's beat")
        assert service.count("alert.rejected") == 1
        await service.assert_live_state_is_the_log()
    finally:
        await rejected.close()
        await service.stop()


async def test_the_dashboard_lists_heartbeats_with_last_beat_and_next_deadline(
    nats_url: str, sink: HttpSink, data_dir: Path
) -> None:
    """Catches a dashboard that does not show a heartbeat, its last beat or its next
    deadline."""
    service = await Tocsin(data_dir, nats_url, config(sink.url, every=3600)).start()
    try:
        async with httpx.AsyncClient(base_url=service.api) as http:
            page = await http.get("/heartbeats")
            assert page.status_code == 200
            assert "backup" in page.text
            assert "no beat yet" in page.text
            await http.post("/api/v1/heartbeats/backup")
            await wait_until(lambda: service.count("heartbeat.received") == 1, 10, "the beat")
            [shown] = (await http.get("/api/v1/heartbeats")).json()["heartbeats"]
            page = await http.get("/heartbeats")
            assert shown["last_beat"][:19] in page.text
            assert shown["next_deadline"][:19] in page.text
            assert 'href="/heartbeats"' in (await http.get("/")).text
    finally:
        await service.stop()
