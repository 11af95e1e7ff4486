"""Config as a fact (DESIGN.md section 15) end to end, on real parts: nats-server,
webhook receivers on 127.0.0.1, the SQLite log, `tocsin serve` in this process and as
a process (for SIGHUP and `tocsin reload`). Every wait is on a condition."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.support import (
    HttpSink,
    Serve,
    Tocsin,
    event,
    log_events,
    publish,
    wait_until,
)
from tocsin.store.eventlog import db_path

TOCSIN = str(Path(sys.executable).parent / "tocsin")


def two_hooks(ops: str, dev: str, disk_full_to: str, extra: str = "") -> str:
    """Receivers ``ops`` and ``dev`` (the same in every version: a reload keeps its
    receivers); ``disk_full`` alerts go to ``disk_full_to``, everything else to ops."""
    return f"""
[[route]]
match = {{ type = "disk_full" }}
receivers = ["{disk_full_to}"]
continue = false

[[route]]
match = {{}}
receivers = ["ops"]
{extra}
[receivers.ops]
channel = "webhook"
url = "{ops}"
secret = "ops-secret-value"
timeout = "5s"

[receivers.dev]
channel = "webhook"
url = "{dev}"
timeout = "5s"
"""


@pytest.fixture
async def dev_sink() -> AsyncIterator[HttpSink]:
    receiver = HttpSink()
    await receiver.start()
    yield receiver
    await receiver.stop()


async def test_post_reload_swaps_routing_logs_the_version_and_refuses_a_bad_file(
    nats_url: str, sink: HttpSink, dev_sink: HttpSink, data_dir: Path
) -> None:
    """Catches a reload that is logged but not applied (the next alert would still go
    to ops), one whose routed facts (an operator's resolve too) name the old version or
    none, a config.loaded that carries a secret, an alert page that does not name the
    routing config, and a bad file that is applied, logged or not answered 400 (the
    running config must stay: the next alert still goes to dev)."""
    service = await Tocsin(data_dir, nats_url, two_hooks(sink.url, dev_sink.url, "ops")).start()
    config_file = data_dir / "tocsin.toml"
    try:
        async with httpx.AsyncClient(base_url=service.api) as client:
            first = (await client.get("/api/v1/config")).json()
            await publish(nats_url, "alerts.in.t", event(labels={"host": "a"}))
            await wait_until(lambda: len(sink.requests) == 1, 20, "the first alert at ops")
            config_file.write_text(two_hooks(sink.url, dev_sink.url, "dev"))
            answer = await client.post("/-/reload")
            assert answer.status_code == 200, answer.text
            second = answer.json()["version"]
            assert second != first["version"]
            assert answer.json()["changed"] is True
            await publish(nats_url, "alerts.in.t", event(labels={"host": "b"}))
            await wait_until(lambda: len(dev_sink.requests) == 1, 20, "the next alert at dev")
            assert len(sink.requests) == 1, "routed under the old config after the reload"

            routed = log_events(service.db, "alert.routed")
            assert [(r["receiver"], r["config_version"]) for r in routed] == [
                ("ops", first["version"]),
                ("dev", second),
            ]
            resolved = await client.post(
                f"/api/v1/alerts/{routed[1]['alert_id']}/resolve", json={"by": "op"}
            )
            assert resolved.status_code == 200, resolved.text
            by_operator = log_events(service.db, "alert.routed")[2]
            assert (by_operator["reason"], by_operator["config_version"]) == ("resolved", second)
            page = (await client.get(f"/alerts/{routed[1]['alert_id']}")).text
            assert f"config {second}" in page, "the alert page names the routing config"
            loaded = log_events(service.db, "config.loaded")
            assert [(c["digest"], c.get("trigger")) for c in loaded] == [
                (first["version"], "start"),
                (second, "http"),
            ]
            assert loaded[1]["config"]["route"][0]["receivers"] == ["dev"]
            assert loaded[1]["config"]["receivers"]["ops"]["secret"] == "***"
            assert "ops-secret-value" not in service.db.read_bytes().decode("latin-1")

            config_file.write_text(two_hooks(sink.url, dev_sink.url, "nobody"))
            refused = await client.post("/-/reload")
            assert refused.status_code == 400
            assert "nobody" in refused.json()["error"]
            running = (await client.get("/api/v1/config")).json()
            assert running["version"] == second
            assert running["config"]["receivers"]["ops"]["secret"] == "***"
            assert len(log_events(service.db, "config.loaded")) == 2, "a refused file logged"
            await publish(nats_url, "alerts.in.t", event(labels={"host": "c"}))
            await wait_until(lambda: len(dev_sink.requests) == 3, 20, "still routed to dev")

            versions = (await client.get("/api/v1/config/versions")).json()
            assert versions["running"] == second
            assert [(v["version"], v["trigger"]) for v in versions["versions"]] == [
                (first["version"], "start"),
                (second, "http"),
            ]
            assert all(v["at"].endswith("Z") for v in versions["versions"])
        await service.assert_live_state_is_the_log()
    finally:
        await service.stop()


async def test_a_receivers_new_settings_take_effect_and_a_restart_only_change_is_refused(
    nats_url: str, sink: HttpSink, dev_sink: HttpSink, data_dir: Path
) -> None:
    """Catches a reload that keeps sending through a receiver's old channel (the alert
    after it would reach the old URL), and one that half applies what needs a restart
    (a new receiver has no worker; a timeout is the consumer's ack wait): refused,
    naming it, nothing logged."""
    moved = HttpSink()
    await moved.start()
    service = await Tocsin(data_dir, nats_url, two_hooks(sink.url, dev_sink.url, "ops")).start()
    config_file = data_dir / "tocsin.toml"
    try:
        async with httpx.AsyncClient(base_url=service.api) as client:
            await publish(nats_url, "alerts.in.t", event(labels={"host": "a"}))
            await wait_until(lambda: len(sink.requests) == 1, 20, "the first alert at ops")
            config_file.write_text(two_hooks(moved.url, dev_sink.url, "ops"))
            answer = await client.post("/-/reload")
            assert answer.status_code == 200, answer.text
            await publish(nats_url, "alerts.in.t", event(labels={"host": "b"}))
            await wait_until(lambda: len(moved.requests) == 1, 20, "ops at its new URL")
            assert len(sink.requests) == 1, "sent through the replaced channel"

            refusals = {
                'timeout = "7s"': "receivers.ops.timeout",
                '[receivers.extra]\nchannel = "log"': "added extra",
            }
            for change, named in refusals.items():
                text = two_hooks(moved.url, dev_sink.url, "ops")
                if change.startswith("timeout"):
                    text = text.replace('timeout = "5s"', change, 1)
                else:
                    text += change + "\n"
                config_file.write_text(text)
                refused = await client.post("/-/reload")
                assert refused.status_code == 400
                assert named in refused.json()["error"]
            assert len(log_events(service.db, "config.loaded")) == 2
    finally:
        await service.stop()
        await moved.stop()


async def test_sighup_and_tocsin_reload_reload_the_running_service(
    nats_url: str, sink: HttpSink, dev_sink: HttpSink, tmp_path: Path
) -> None:
    """Catches SIGHUP not handled (the process would die: SIGHUP's default) or not
    reloading, and `tocsin reload` not asking the service or not exiting 2 with the
    message when the file is bad."""
    data_dir, config_file = tmp_path / "data", tmp_path / "tocsin.toml"
    config_file.write_text(two_hooks(sink.url, dev_sink.url, "ops"))
    serve = await Serve(
        data_dir, nats_url, config_file, stderr=tmp_path / "serve.log", log_level="info"
    ).start()
    db = db_path(data_dir)
    try:
        assert serve.process is not None
        assert serve.process.returncode is None
        config_file.write_text(two_hooks(sink.url, dev_sink.url, "dev"))
        os.kill(serve.pid, signal.SIGHUP)
        await wait_until(lambda: len(log_events(db, "config.loaded")) == 2, 20, "SIGHUP's load")
        assert log_events(db, "config.loaded")[1]["trigger"] == "SIGHUP"
        await publish(nats_url, "alerts.in.t", event(labels={"host": "a"}))
        await wait_until(lambda: len(dev_sink.requests) == 1, 20, "routed under SIGHUP's config")

        config_file.write_text(two_hooks(sink.url, dev_sink.url, "ops", extra="[[nonsense"))
        args = ["reload", "--data-dir", str(data_dir), "--nats-url", nats_url]
        bad = await asyncio.create_subprocess_exec(
            TOCSIN, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await asyncio.wait_for(bad.communicate(), 30)
        assert bad.returncode == 2, (out, err)
        assert b"reload refused" in err
        assert len(log_events(db, "config.loaded")) == 2

        config_file.write_text(two_hooks(sink.url, dev_sink.url, "ops"))
        good = await asyncio.create_subprocess_exec(
            TOCSIN, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await asyncio.wait_for(good.communicate(), 30)
        assert good.returncode == 0, (out, err)
        loaded = log_events(db, "config.loaded")
        assert [c["trigger"] for c in loaded] == ["start", "SIGHUP", "nats"]
        assert loaded[2]["digest"] == loaded[0]["digest"]
        assert loaded[2]["digest"].encode() in out
    finally:
        assert await serve.stop() == 0


async def run_tocsin(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        TOCSIN, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_simulate_reads_the_live_log_and_shows_what_a_new_config_changes(
    nats_url: str, sink: HttpSink, dev_sink: HttpSink, data_dir: Path, tmp_path: Path
) -> None:
    """Catches a simulate that cannot read the log while the service runs, that does
    not decide under NEW (nothing would differ), or whose totals are wrong: two
    disk_full alerts and one other went to ops; under a config sending disk_full to
    dev, the two are changed (ops -> dev) and the other is the same."""
    service = await Tocsin(data_dir, nats_url, two_hooks(sink.url, dev_sink.url, "ops")).start()
    new = tmp_path / "new.toml"
    new.write_text(two_hooks(sink.url, dev_sink.url, "dev"))
    try:
        await publish(nats_url, "alerts.in.t", event(labels={"host": "a"}))
        await publish(nats_url, "alerts.in.t", event(labels={"host": "b"}))
        await publish(nats_url, "alerts.in.t", event(type="cpu_hot", labels={"host": "c"}))
        await wait_until(lambda: len(sink.requests) == 3, 20, "three alerts at ops")
        common = ["--data-dir", str(data_dir), "--config", str(new)]
        code, out, err = await run_tocsin("simulate", *common)
        assert code == 0, err
        assert "2 changed, 1 the same" in out
        assert out.count("  + dev firing") == 2
        assert out.count("  - ops firing") == 2
        assert "ops  3 -> 1 (-2)" in out
        assert "dev  0 -> 2 (+2)" in out

        code, out, err = await run_tocsin("simulate", *common, "--json")
        assert code == 0, err
        report = json.loads(out)
        routed = {r["alert_id"] for r in log_events(service.db, "alert.routed")}
        assert {c["alert_id"] for c in report["changes"]} < routed, "named by the log's ids"
        assert (report["before"], report["after"]) == ({"ops": 3}, {"dev": 2, "ops": 1})

        code, _, err = await run_tocsin("simulate", "--data-dir", str(data_dir))
        assert code == 2
        assert "--config" in err
    finally:
        await service.stop()
