"""The command line as users run it: real processes, real exit codes, real output."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support import free_port
from tocsin import contracts
from tocsin.embedded import NatsServerNotFound, find_binary

ROOT = Path(__file__).resolve().parent.parent
TOCSIN = str(Path(sys.executable).parent / "tocsin")


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("TOCSIN_", "ALERT_", "SMTP_"))
    }
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
    assert not (data / "nats.url").exists()
    assert "embedded nats-server" in err
