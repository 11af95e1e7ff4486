"""The command line as users run it: real processes, real exit codes, real output."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
import nats
import pytest

from tests.support import HttpSink, free_port, publish, wait_until, webhook_config
from tocsin import cli
from tocsin.bus.embedded import NatsServerNotFound, find_binary
from tocsin.bus.streams import ensure_streams
from tocsin.core import contracts
from tocsin.core.subjects import ROUTER_CONSUMER, STREAM_IN, STREAM_WORK, deliver_consumer

ROOT = Path(__file__).resolve().parent.parent
TOCSIN = str(Path(sys.executable).parent / "tocsin")


def clean_env() -> dict[str, str]:
    """This process's environment without tocsin's own variables."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("TOCSIN_", "ALERT_", "SMTP_"))}


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    clean = clean_env()
    return subprocess.run(
        [TOCSIN, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**clean, **(env or {})},
    )


def test_committed_schemas_match_the_wire_types() -> None:
    """schemas/ is generated from contracts.py; a stale file fails here."""
    generated = contracts.json_schemas()
    committed = {p.name: p.read_bytes() for p in (ROOT / "schemas").glob("*.json")}
    assert committed == generated, "schemas/ is stale: run `make schemas`"


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("[retry]\nmax_attempts = 0\n", "retry.max_attempts"),
        ("[dedup]\nwindow = 'soon'\n", "dedup.window"),
        ("[receivers.hook]\nchannel = 'webhook'\n", "receivers.hook.url"),
        ("[receivers.hook]\nchannel = 'webhook'\nurl = 'ftp://x'\n", "receivers.hook.url"),
        ("[[route]]\nreceivers = ['nobody']\n", "route[0].receivers"),
        ("[receivers.m]\nchannel = 'email'\nto = ['a@example.org']\n", "receivers.m.smtp.host"),
    ],
)
def test_bad_config_exits_2_naming_the_key(tmp_path: Path, toml: str, key: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(toml)
    result = run(
        "serve",
        "--config",
        str(config),
        "--data-dir",
        str(tmp_path / "d"),
        "--nats-url",
        "nats://127.0.0.1:1",
    )
    assert result.returncode == 2, result.stderr
    assert key in result.stderr


def test_bad_usage_exits_2() -> None:
    result = run("publish", "--type", "t")
    assert result.returncode == 2
    assert "--severity" in result.stderr


@pytest.mark.parametrize(
    ("setting", "loop"),
    [(None, "uvloop"), ("auto", "uvloop"), ("asyncio", "asyncio"), ("uvloop", "uvloop")],
)
def test_every_command_runs_on_the_loop_tocsin_event_loop_chooses(
    setting: str | None, loop: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``cli.run`` is where every tocsin process (serve's children included) starts its
    loop. Catches a default that is not uvloop although it is installed (a dependency:
    the CPU it saves is docs/performance.md's "The event loop"), and a switch that
    cannot turn it off."""
    if setting is None:
        monkeypatch.delenv("TOCSIN_EVENT_LOOP", raising=False)
    else:
        monkeypatch.setenv("TOCSIN_EVENT_LOOP", setting)

    async def running_loop() -> str:
        return type(asyncio.get_running_loop()).__module__.partition(".")[0]

    assert cli.run(running_loop()) == loop


def test_every_command_runs_with_tocsins_collector_thresholds() -> None:
    """``cli.run`` sets the cyclic collector's thresholds for every tocsin process
    (``cli.GC_THRESHOLDS``). Catches a process left at Python's 700, where the
    collector scans each batch's short-lived objects ~80 times more often (W2 ~8%
    slower under serve: docs/performance.md, "The garbage collector")."""
    before = gc.get_threshold()

    async def thresholds() -> tuple[int, ...]:
        return gc.get_threshold()

    try:
        gc.set_threshold(700, 10, 10)
        assert cli.run(thresholds()) == cli.GC_THRESHOLDS
        assert cli.GC_THRESHOLDS[0] > 700
    finally:
        gc.set_threshold(*before)


def test_a_bad_event_loop_exits_2_naming_it(tmp_path: Path) -> None:
    """Catches a typo in ``TOCSIN_EVENT_LOOP`` quietly running the default loop."""
    result = run(
        "publish",
        "--type",
        "t",
        "--severity",
        "info",
        "--summary",
        "s",
        "--nats-url",
        f"nats://127.0.0.1:{free_port()}",
        "--data-dir",
        str(tmp_path),
        env={"TOCSIN_EVENT_LOOP": "trio"},
    )
    assert result.returncode == 2, result.stderr
    assert "TOCSIN_EVENT_LOOP: 'trio': the event loop is one of auto, asyncio, uvloop" in (
        result.stderr
    )
    assert "never awaited" not in result.stderr


def test_publish_without_a_server_says_so_and_exits_1(tmp_path: Path) -> None:
    port = free_port()
    result = run(
        "publish",
        "--type",
        "t",
        "--severity",
        "info",
        "--summary",
        "s",
        "--nats-url",
        f"nats://127.0.0.1:{port}",
        "--data-dir",
        str(tmp_path),
    )
    assert result.returncode == 1
    assert "cannot reach NATS" in result.stderr


def test_missing_nats_server_binary_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(NatsServerNotFound, match="--nats-url"):
        find_binary()


def test_serve_with_embedded_nats_then_publish_through_the_data_dir(tmp_path: Path) -> None:
    """The `make run` path: no config, no NATS URL. serve starts nats-server itself and
    writes its URL to the data dir, where `tocsin publish` finds it; with nothing
    configured the notification is printed by the log receiver."""
    data = tmp_path / "data"
    http = f"127.0.0.1:{free_port()}"
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("TOCSIN_", "ALERT_", "SMTP_"))
    }
    server = subprocess.Popen(
        [TOCSIN, "serve", "--data-dir", str(data), "--http", http],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, server.communicate()[1]
            try:
                if httpx.get(f"http://{http}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "serve did not become ready"
            time.sleep(0.05)
        assert (data / "nats.url").read_text().startswith("nats://127.0.0.1:")
        published = run(
            "publish",
            "--data-dir",
            str(data),
            "--type",
            "disk_full",
            "--severity",
            "critical",
            "--summary",
            "disk full",
            "--label",
            "host=db1",
        )
        assert published.returncode == 0, published.stderr
        assert "alerts.in.cli" in published.stdout
        deadline = time.monotonic() + 15
        while True:
            alerts = httpx.get(f"http://{http}/api/v1/alerts").json()["alerts"]
            if alerts and alerts[0]["last_delivery_status"] == "delivered":
                break
            assert time.monotonic() < deadline, f"not delivered: {alerts}"
            time.sleep(0.05)
        assert alerts[0]["receivers"] == ["log"]
    finally:
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=30)
    assert server.returncode == 0, err
    assert '"msg":"notification"' in out
    assert "disk full" in out
    assert (data / "nats.url").read_text().startswith("nats://127.0.0.1:")  # for the restart
    assert "embedded nats-server" in err


async def pulling(js: Any, workers: int) -> bool:
    """The router and ``workers`` delivery workers of receiver ``hook`` are up: each
    holds a pull request open."""
    try:
        inbound = await js.consumer_info(STREAM_IN, ROUTER_CONSUMER)
        work = await js.consumer_info(STREAM_WORK, deliver_consumer("hook"))
    except nats.js.errors.NotFoundError:
        return False
    return bool(inbound.num_waiting) and (work.num_waiting or 0) >= workers


async def test_router_and_deliver_as_separate_processes(
    nats_url: str, sink: HttpSink, tmp_path: Path
) -> None:
    """The scale-out shape: `tocsin router` owns the log, two `tocsin deliver` workers
    share the receiver's consumer, and each notification is sent once."""
    config = tmp_path / "tocsin.toml"
    config.write_text(webhook_config(sink.url))
    data = tmp_path / "data"
    common = ["--data-dir", str(data), "--nats-url", nats_url, "--config", str(config)]
    processes = [
        await asyncio.create_subprocess_exec(TOCSIN, role, *common, stderr=asyncio.subprocess.PIPE)
        for role in ("router", "deliver", "deliver")
    ]
    try:
        nc = await nats.connect(nats_url)
        js = nc.jetstream()

        await wait_until(lambda: pulling(js, 2), 30, "the router and two workers pulling")
        await nc.close()
        for i in range(20):
            await publish(
                nats_url,
                "alerts.in.apart",
                {
                    "type": "apart",
                    "severity": "error",
                    "summary": f"event {i}",
                    "labels": {"n": str(i)},
                },
            )
        await wait_until(lambda: len(sink.requests) == 20, 30, "20 notifications")
        db = data / "tocsin.db"

        def recorded() -> bool:
            with contextlib.closing(sqlite3.connect(db)) as conn:
                query = "SELECT COUNT(*) FROM events WHERE kind = 'delivery.succeeded'"
                return int(conn.execute(query).fetchone()[0]) == 20

        await wait_until(recorded, 30, "20 outcomes recorded by the router")
        keys = [r.headers["idempotency-key"] for r in sink.requests]
        assert len(set(keys)) == 20
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        codes = [await asyncio.wait_for(p.wait(), 30) for p in processes]
        logs = [(await p.stderr.read()).decode() for p in processes if p.stderr]
    assert codes == [0, 0, 0], logs


# Run as `python -c`: `tocsin` itself, with the modules it held written out at its exit.
MODULES_AT_EXIT = """
import atexit, pathlib, sys
from tocsin import cli
atexit.register(lambda: pathlib.Path(sys.argv[1]).write_text("\\n".join(sorted(sys.modules))))
sys.exit(cli.main(sys.argv[2:]))
"""

# What only the log's process, a templated receiver or a trace exporter needs
# (issue #20's RSS target: ~5 MiB of serve's delivery child).
NOT_FOR_DELIVERY = (
    "tocsin.store.ledger",
    "tocsin.store.eventlog",
    "tocsin.store.forensics",
    "tocsin.store.compaction",
    "tocsin.pipeline.router",
    "tocsin.pipeline.recorder",
    "tocsin.pipeline.outbox",
    "tocsin.core.amimport",
    "sqlite3",
    "aiosqlite",
    "jinja2",
    "opentelemetry.sdk",
    "opentelemetry.exporter",
    "aiosmtplib",
)


async def test_a_delivery_worker_holds_no_module_of_the_log_templates_or_telemetry_sdk(
    nats_url: str, sink: HttpSink, tmp_path: Path
) -> None:
    """Catches a delivery worker (`tocsin deliver`, as serve's children run it) that
    imports the router's, recorder's or store's modules, Jinja2 for a receiver without
    templates, the OpenTelemetry SDK with no exporter and nothing counted, or the SMTP
    client with no email receiver: each import is memory held in every child for
    nothing. The worker delivers a notification first, so its send path is imported
    too."""
    config = tmp_path / "tocsin.toml"
    config.write_text(webhook_config(sink.url))
    data, modules = tmp_path / "data", tmp_path / "modules.txt"
    common = ["--data-dir", str(data), "--nats-url", nats_url, "--config", str(config)]
    env = {k: v for k, v in clean_env().items() if not k.startswith("OTEL_")}
    router = await asyncio.create_subprocess_exec(
        TOCSIN, "router", *common, stderr=asyncio.subprocess.PIPE, env=env
    )
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        MODULES_AT_EXIT,
        str(modules),
        "deliver",
        *common,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        nc = await nats.connect(nats_url)
        js = nc.jetstream()

        await wait_until(lambda: pulling(js, 1), 30, "the router and the worker pulling")
        await nc.close()
        alert = {"type": "lean", "severity": "error", "summary": "one", "labels": {"n": "1"}}
        await publish(nats_url, "alerts.in.lean", alert)
        await wait_until(lambda: len(sink.requests) == 1, 30, "the notification")
    finally:
        for process in (router, worker):
            process.send_signal(signal.SIGTERM)
        codes = [await asyncio.wait_for(p.wait(), 30) for p in (router, worker)]
        logs = [(await p.stderr.read()).decode() for p in (router, worker) if p.stderr]
    assert codes == [0, 0], logs
    held = set(modules.read_text().split())
    assert {"tocsin.pipeline.delivery", "tocsin.channels.webhook"} <= held  # it ran
    assert [m for m in held if m.startswith(NOT_FOR_DELIVERY)] == []


async def test_readyz_says_why_until_nats_answers(tmp_path: Path) -> None:
    """Ready only once streams and consumers exist: with NATS unreachable, /readyz is
    503 with the reason, and the process still stops cleanly on SIGTERM."""
    http = f"127.0.0.1:{free_port()}"
    dead = f"nats://127.0.0.1:{free_port()}"
    process = await asyncio.create_subprocess_exec(
        TOCSIN,
        "serve",
        "--data-dir",
        str(tmp_path),
        "--nats-url",
        dead,
        "--http",
        http,
        stderr=asyncio.subprocess.PIPE,
    )
    try:

        async def answered() -> httpx.Response | None:
            try:
                async with httpx.AsyncClient() as client:
                    return await client.get(f"http://{http}/readyz")
            except httpx.HTTPError:
                return None

        response = await wait_until(answered, 20, "/readyz to answer")
        assert response.status_code == 503
        assert response.json() == {"ready": False, "reason": f"connecting to NATS at {dead}"}
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0


async def _cli(*args: str) -> tuple[int, str, str]:
    """Run ``tocsin`` without blocking the event loop the in-process service runs on."""
    process = await asyncio.create_subprocess_exec(
        TOCSIN,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=clean_env(),
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_retry_failed_asks_the_running_service_to_requeue(
    data_dir: Path, nats_url: str, sink: HttpSink
) -> None:
    from tests.support import Tocsin, script

    sink.responder = script(400, 200)  # permanent failure first: dead-lettered at once
    svc = await Tocsin(data_dir, nats_url, webhook_config(sink.url)).start()
    try:
        await publish(nats_url, "alerts.in.cli", {"type": "t", "severity": "error", "summary": "s"})
        await wait_until(lambda: svc.count("delivery.dead_lettered") == 1, 10, "a dead letter")
        common = ("--nats-url", nats_url, "--data-dir", str(data_dir))
        code, out, err = await _cli("retry-failed", "--receiver", "hook", *common)
        assert code == 0, err
        assert "re-queued 1 dead-lettered notification(s) for receiver hook" in out
        await wait_until(lambda: svc.count("delivery.succeeded") == 1, 10, "the redelivery")
        assert svc.events("delivery.requeued")[0]["by"] == "tocsin retry-failed"
        code, out, err = await _cli("retry-failed", "--since", "1h", *common)
        assert code == 0, err
        assert "re-queued 0" in out
        code, _, err = await _cli("retry-failed", "--since", "yesterday-ish", *common)
        assert code == 2
        assert "--since" in err
        code, out, err = await _cli("retry-failed", "--receiver", "nope", *common)
        assert code == 2, (out, err)  # a typo is bad usage, not "0 re-queued"
        assert "receiver 'nope' is not configured" in err
        assert "configured: hook" in err
    finally:
        await svc.stop()


async def test_retry_failed_with_no_service_running_says_so_and_exits_1(
    nats_url: str, tmp_path: Path
) -> None:
    code, _, err = await _cli("retry-failed", "--nats-url", nats_url, "--data-dir", str(tmp_path))
    assert code == 1
    assert "no tocsin service answered" in err


def test_serve_refuses_to_open_the_api_to_the_network_without_a_token(tmp_path: Path) -> None:
    result = run(
        "serve",
        "--http",
        f"0.0.0.0:{free_port()}",
        "--nats-url",
        f"nats://127.0.0.1:{free_port()}",
        "--data-dir",
        str(tmp_path),
    )
    assert result.returncode == 2
    assert "TOCSIN_API_TOKEN" in result.stderr


async def test_a_server_list_reaches_the_live_server_when_the_first_is_down(
    nats_url: str, tmp_path: Path
) -> None:
    """TOCSIN_NATS_URL may name a cluster's seeds, comma-separated: one of them being
    down does not stop a command (here the first, and it has no server behind it)."""
    dead = f"nats://127.0.0.1:{free_port()}"
    nc = await nats.connect(nats_url)
    await ensure_streams(nc.jetstream())
    await nc.close()
    for _ in range(3):  # nats-py picks the order at random: try a few times
        code, out, err = await _cli(
            "publish",
            "--type",
            "t",
            "--severity",
            "info",
            "--summary",
            "s",
            "--data-dir",
            str(tmp_path),
            "--nats-url",
            f"{dead}, {nats_url}",
        )
        assert code == 0, err
        assert "stream TOCSIN_IN" in out


async def test_router_and_deliver_serve_probes_with_health(
    nats_url: str, sink: HttpSink, tmp_path: Path
) -> None:
    """`--health HOST:PORT` (env TOCSIN_HEALTH) gives the separate processes the probes a
    container platform needs: /healthz while the process runs, /readyz once its streams
    and consumers exist (503 with the reason before), /metrics; and nothing of the API."""
    config = tmp_path / "tocsin.toml"
    config.write_text(webhook_config(sink.url))
    common = ["--data-dir", str(tmp_path / "data"), "--config", str(config)]
    router, deliver, stranded = (f"127.0.0.1:{free_port()}" for _ in range(3))
    dead = f"nats://127.0.0.1:{free_port()}"
    processes = [
        await asyncio.create_subprocess_exec(
            TOCSIN, "router", *common, "--nats-url", nats_url, "--health", router, env=clean_env()
        ),
        await asyncio.create_subprocess_exec(
            TOCSIN,
            "deliver",
            *common,
            "--nats-url",
            nats_url,
            env={**clean_env(), "TOCSIN_HEALTH": deliver},
        ),
        await asyncio.create_subprocess_exec(
            TOCSIN,
            "deliver",
            "--data-dir",
            str(tmp_path / "elsewhere"),
            "--nats-url",
            dead,
            "--health",
            stranded,
            env=clean_env(),
        ),
    ]
    try:
        async with httpx.AsyncClient() as client:

            async def answer(address: str, path: str) -> httpx.Response | None:
                try:
                    return await client.get(f"http://{address}{path}")
                except httpx.HTTPError:
                    return None

            async def ready(address: str) -> bool:
                response = await answer(address, "/readyz")
                return response is not None and response.status_code == 200

            for address in (router, deliver):
                await wait_until(lambda a=address: ready(a), 30, f"{address}/readyz")
                assert (await client.get(f"http://{address}/readyz")).json() == {"ready": True}
                healthz = await client.get(f"http://{address}/healthz")
                assert (healthz.status_code, healthz.text) == (200, "ok\n")
                metrics = await client.get(f"http://{address}/metrics")
                assert metrics.status_code == 200
                assert metrics.headers["content-type"].startswith("text/plain")
                for path in ("/api/v1/alerts", "/openapi.json", "/"):
                    assert (await client.get(f"http://{address}{path}")).status_code == 404
            metrics = await client.get(f"http://{router}/metrics")
            assert "tocsin_log_last_seq" in metrics.text  # the router's log, observed

            waiting = await wait_until(lambda: answer(stranded, "/readyz"), 30, "stranded")
            assert waiting.status_code == 503
            assert waiting.json() == {"ready": False, "reason": f"connecting to NATS at {dead}"}
            healthz = await client.get(f"http://{stranded}/healthz")
            assert healthz.status_code == 200
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        codes = [await asyncio.wait_for(p.wait(), 30) for p in processes]
    assert codes == [0, 0, 0]


def test_a_bad_health_address_exits_2_naming_it(tmp_path: Path) -> None:
    result = run("deliver", "--data-dir", str(tmp_path), "--health", "8080")
    assert result.returncode == 2
    assert "TOCSIN_HEALTH: '8080' is not host:port" in result.stderr


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--severity", "urgent"], "--severity"),
        (["--severity", "info", "--label", "9lives=x"], "--label"),
        (["--severity", "info", "--details", "[1, 2]"], "--details"),
        (["--severity", "info", "--details", "{not json"], "--details"),
        (["--severity", "info", "--timestamp", "2026-01-01T00:00:00"], "--timestamp"),
        (["--severity", "info", "--type", "a b"], "--type"),
        (["--severity", "info", "--fingerprint", "f" * 129], "--fingerprint"),
        (["--severity", "info", "--event-id", "e" * 257], "--event-id"),
        (["--severity", "info", "--summary", ""], "--summary"),
    ],
)
def test_publish_refuses_what_the_service_would_reject_before_connecting(
    tmp_path: Path, flags: list[str], named: str
) -> None:
    """Checked with the service's own ingest rules: exit 2 naming the flag, instead of
    "published" for an event the router then rejects (no server is reachable here: the
    refusal comes first)."""
    dead = f"nats://127.0.0.1:{free_port()}"
    result = run("publish", "--type", "t", "--summary", "s", *flags, "--nats-url", dead)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"tocsin: {named}"), result.stderr


def test_publish_warns_of_fields_the_service_would_ignore(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue #23 item 6: the service accepts a field it does not know and ignores it, so
    ``publish`` says so on stderr before sending. No flag of today adds such a field
    (``--ends-at`` adds a known one), so the check ``publish`` runs on the body it
    built is called here on one that has a typo."""
    body = {"type": "t", "severity": "info", "summary": "s", "lables": {"a": "b"}}
    cli._check_publish(msgspec.json.encode(body), "cli")
    assert capsys.readouterr().err == (
        "tocsin: warning: the service will ignore field(s) it does not know: lables\n"
    )
    body = {"type": "t", "severity": "info", "summary": "s", "ends_at": "2026-12-04T11:00:00Z"}
    cli._check_publish(msgspec.json.encode(body), "cli")
    assert capsys.readouterr().err == ""


async def test_publish_sends_every_field_of_the_contract(nats_url: str, tmp_path: Path) -> None:
    nc = await nats.connect(nats_url)
    try:
        await ensure_streams(nc.jetstream())
        seen = await nc.subscribe("alerts.in.k8s")  # what reaches the stream reaches us
        published = await asyncio.to_thread(
            run,
            "publish",
            *("--type", "KubePodCrashLooping", "--severity", "sev2", "--summary", "crash"),
            *("--label", "pod=api-1", "--source", "k8s", "--fingerprint", "fp-1"),
            *("--details", '{"restarts": 5}', "--timestamp", "2026-12-04T10:00:00+01:00"),
            *("--ends-at", "2026-12-04T11:00:00Z", "--event-id", "ev-42", "--resolved"),
            *("--nats-url", nats_url, "--data-dir", str(tmp_path)),
        )
        assert published.returncode == 0, published.stderr
        assert "warning" not in published.stderr  # every field it sends is known
        message = await seen.next_msg(timeout=10)
    finally:
        await nc.close()
    assert message.subject == "alerts.in.k8s"
    assert message.headers is not None
    assert message.headers["Nats-Msg-Id"] == "ev-42"
    assert msgspec.json.decode(message.data) == {
        "type": "KubePodCrashLooping",
        "severity": "sev2",
        "summary": "crash",
        "source": "k8s",
        "status": "resolved",
        "labels": {"pod": "api-1"},
        "event_id": "ev-42",
        "fingerprint": "fp-1",
        "timestamp": "2026-12-04T10:00:00+01:00",
        "ends_at": "2026-12-04T11:00:00Z",
        "details": {"restarts": 5},
    }


def test_serve_help_says_what_happens_without_a_nats_url() -> None:
    wide = {"COLUMNS": "400"}  # argparse wraps at the terminal's width
    serve = run("serve", "--help", env=wide).stdout
    router = run("router", "--help", env=wide).stdout
    assert "default: none, and tocsin starts an embedded nats-server" in serve
    assert "embedded nats-server" not in router
    assert "default: <data-dir>/nats.url, then nats://127.0.0.1:4222" in router


def test_config_check_prints_what_the_file_says_and_warns_of_unrouted_severities(
    tmp_path: Path,
) -> None:
    good = tmp_path / "tocsin.toml"
    good.write_text(
        '[[route]]\nmatch = { severity = ["critical"] }\nreceivers = ["hook"]\n\n'
        '[[route]]\nmatch = { type = "disk*", severity = "warning" }\nreceivers = ["hook"]\n\n'
        '[receivers.hook]\nchannel = "webhook"\nurl = "http://127.0.0.1:9/x"\nsecret = "s3cret"\n'
    )
    checked = run("config", "check", str(good))
    assert checked.returncode == 0, checked.stderr
    assert '  route[0] match {"severity":["critical"]} -> hook' in checked.stdout
    assert "  hook: webhook" in checked.stdout
    assert "s3cret" not in checked.stdout + checked.stderr
    warned = [line for line in checked.stderr.splitlines() if "no route delivers" in line]
    assert [line.split()[5] for line in warned] == ["error", "info"]  # warning: sometimes

    catch_all = tmp_path / "all.toml"
    catch_all.write_text(
        '[[route]]\nmatch = {}\nreceivers = ["out"]\n[receivers.out]\nchannel = "log"\n'
    )
    quiet = run("config", "check", "--config", str(catch_all))
    assert quiet.returncode == 0, quiet.stderr
    assert "match {} (everything) -> out" in quiet.stdout
    assert "no route delivers" not in quiet.stderr

    bad = tmp_path / "bad.toml"
    bad.write_text('[[route]]\nreceivers = ["nope"]\n')
    refused = run("config", "check", str(bad))
    assert refused.returncode == 2
    assert refused.stderr.startswith("tocsin: route[0].receivers:")


def test_config_check_shows_escalation_steps_and_flapping(tmp_path: Path) -> None:
    """`tocsin config check` says whom a route escalates to and when, and what
    ``[flapping]`` holds (DESIGN.md section 13). Catches both left out of the check."""
    escalating = tmp_path / "escalating.toml"
    escalating.write_text(
        '[flapping]\nchanges = 4\nwindow = "1h"\n\n'
        '[[route]]\nreceivers = ["pager"]\n'
        'escalate = [{ after = "5m", receivers = ["lead"] },'
        ' { after = "30m", receivers = ["lead", "head"] }]\n\n'
        '[receivers.pager]\nchannel = "log"\n'
        '[receivers.lead]\nchannel = "log"\n'
        '[receivers.head]\nchannel = "log"\n'
    )
    checked = run("config", "check", str(escalating))
    assert checked.returncode == 0, checked.stderr
    assert (
        "    escalates when unacknowledged: after 300s lead; after 1800s lead, head"
        in checked.stdout
    )
    assert "flapping: 4 changes within 3600s" in checked.stdout


def test_config_check_shows_a_grouped_route_and_its_timings(tmp_path: Path) -> None:
    """`tocsin config check` names what a grouped, time-muted route does (DESIGN.md
    sections 11, 12, 15), and Alertmanager matchers with continue."""
    grouped = tmp_path / "grouped.toml"
    grouped.write_text(
        "[time_intervals.nights]\n"
        'times = [{ start = "22:00", end = "24:00" }]\n\n'
        "[[route]]\n"
        "matchers = ['severity=~\"critical|error\"']\n"
        'receivers = ["out"]\n'
        'group_by = ["labels.cluster"]\n'
        'group_wait = "30s"\n'
        'group_interval = "5m"\n'
        'repeat_interval = "4h"\n'
        'mute_time_intervals = ["nights"]\n'
        "continue = false\n\n"
        '[receivers.out]\nchannel = "log"\n'
    )
    checked = run("config", "check", str(grouped))
    assert checked.returncode == 0, checked.stderr
    assert (
        '  route[0] match {} matchers ["severity=~\\"critical|error\\""] -> out (continue = false)'
        in checked.stdout
    )
    assert (
        '    grouped: group_by ["labels.cluster"]; group_wait 30s; group_interval 300s;'
        " repeat_interval 14400s; max_alerts 100; muted in nights" in checked.stdout
    )


def test_config_check_shows_the_version_inhibit_rules_intervals_and_heartbeats(
    tmp_path: Path,
) -> None:
    """`tocsin config check` names the version a reload of the file would log (DESIGN.md
    section 15), its inhibit rules, time intervals and heartbeats. Catches them left out
    of the check, and a version that is not the one the service logs."""
    from tocsin import config as config_module

    path = tmp_path / "full.toml"
    path.write_text(
        "[time_intervals.nights]\n"
        'times = [{ start = "22:00", end = "24:00" }]\n\n'
        '[[inhibit]]\nname = "node-down"\nsource_matchers = [\'type="node_down"\']\n'
        'target_matchers = [\'severity="warning"\']\nequal = ["labels.host"]\n\n'
        '[heartbeats.backup]\nevery = "1h"\ngrace = "5m"\n\n'
        '[[route]]\nreceivers = ["out"]\n[receivers.out]\nchannel = "log"\n'
    )
    checked = run("config", "check", str(path))
    assert checked.returncode == 0, checked.stderr
    version = config_module.load(path, {}).digest()
    assert f"config OK: {path} (version {version})" in checked.stdout
    assert "inhibit node-down: a firing source mutes its targets with equal labels.host" in (
        checked.stdout
    )
    assert "time intervals: nights" in checked.stdout
    assert "heartbeat backup: every 3600s + 300s grace" in checked.stdout


def test_config_check_warns_of_groups_that_may_span_partitions(tmp_path: Path) -> None:
    """With partitions, a grouped route whose group_by does not cover the partition key
    would notify one of its groups once per partition: `config check` says which."""
    path = tmp_path / "parts.toml"
    routes = (
        '[[route]]\nreceivers = ["out"]\ngroup_by = ["labels.cluster"]\ngroup_wait = "30s"\n\n'
        '[[route]]\nreceivers = ["out"]\ngroup_by = ["labels.team"]\ngroup_wait = "30s"\n\n'
        '[receivers.out]\nchannel = "log"\n'
    )
    path.write_text('[partitions]\ncount = 2\nkey = ["labels.cluster"]\n\n' + routes)
    checked = run("config", "check", str(path))
    assert checked.returncode == 0, checked.stderr
    assert "partitions: 2, by labels.cluster" in checked.stdout
    assert "route[1] groups by labels.team" in checked.stderr
    assert "route[0]" not in checked.stderr
    path.write_text(routes)
    assert "partition" not in run("config", "check", str(path)).stderr


def test_partitioned_config_refuses_a_router_without_its_partition(tmp_path: Path) -> None:
    """With [partitions] count > 1, a router without --partition would consume TOCSIN_IN
    beside the partitioners, and `tocsin partition` has nothing to do with count = 1:
    both refused (exit 2) naming the key, before connecting anywhere."""
    config = tmp_path / "parts.toml"
    config.write_text("[partitions]\ncount = 2\n")
    args = ["--data-dir", str(tmp_path / "data"), "--nats-url", "nats://127.0.0.1:1"]
    router = run("router", *args, "--config", str(config))
    assert router.returncode == 2, router.stderr
    assert "partitions.count: is 2: run `tocsin router --partition K`" in router.stderr
    wrong = run("router", *args, "--config", str(config), "--partition", "2")
    assert wrong.returncode == 2, wrong.stderr
    assert "--partition: 2 is not a partition" in wrong.stderr
    single = tmp_path / "single.toml"
    single.write_text("")
    partition = run("partition", *args, "--config", str(single))
    assert partition.returncode == 2, partition.stderr
    assert "partitions.count: is 1" in partition.stderr


def test_router_takes_its_partition_from_the_environment_or_its_pod_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``TOCSIN_PARTITION`` is ``--partition``'s default, and ``ordinal`` is the number
    the host name ends in (a StatefulSet pod's name: deploy/k8s/partitions/router.yaml
    runs every router from one template so): each reaches the partition check, which
    names the partition it got (catches the variable ignored, or ``ordinal`` read as
    anything but the host name's ordinal). A host name without one is bad usage."""
    config = tmp_path / "parts.toml"
    config.write_text("[partitions]\ncount = 2\n")
    args = ["--data-dir", str(tmp_path / "data"), "--nats-url", "nats://127.0.0.1:1"]
    by_env = run("router", *args, "--config", str(config), env={"TOCSIN_PARTITION": "7"})
    assert by_env.returncode == 2, by_env.stderr
    assert "--partition: 7 is not a partition" in by_env.stderr

    monkeypatch.setattr(cli.socket, "gethostname", lambda: "tocsin-router-5")
    assert cli.main(["router", *args, "--config", str(config), "--partition", "ordinal"]) == 2
    assert "--partition: 5 is not a partition" in capsys.readouterr().err
    monkeypatch.setattr(cli.socket, "gethostname", lambda: "laptop")
    with pytest.raises(SystemExit) as stopped:
        cli.main(["router", *args, "--config", str(config), "--partition", "ordinal"])
    assert stopped.value.code == 2
    assert "host name 'laptop' does not end in -<number>" in capsys.readouterr().err


def test_repartition_refuses_a_config_that_is_not_of_the_new_count(tmp_path: Path) -> None:
    """The config decides where each alert goes (its count and key): one whose count is
    not ``--to`` is bad usage, exit 2 naming the key, before any file or NATS is
    touched (catches alerts moved under another count than the routers will run with);
    so is a count beyond the limit."""
    config = tmp_path / "parts.toml"
    config.write_text("[partitions]\ncount = 2\n")
    args = ["--data-dir", str(tmp_path / "data"), "--nats-url", "nats://127.0.0.1:1"]
    wrong = run("repartition", "--from", "2", "--to", "3", *args, "--config", str(config))
    assert wrong.returncode == 2, wrong.stderr
    assert "partitions.count: is 2" in wrong.stderr
    assert "not --to 3" in wrong.stderr
    beyond = run("repartition", "--from", "0", "--to", "2", *args, "--config", str(config))
    assert beyond.returncode == 2, beyond.stderr
    assert "--from: 0: a partition count is 1 to 64" in beyond.stderr
    assert not (tmp_path / "data").exists()
