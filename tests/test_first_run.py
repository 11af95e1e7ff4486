"""The first hour of a new user, as `make run` gives it: `tocsin serve` with embedded
NATS in a data dir, stopped with Ctrl-C and started again."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support import free_port

TOCSIN = str(Path(sys.executable).parent / "tocsin")


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("TOCSIN_", "ALERT_", "SMTP_"))}


@contextmanager
def serving(data: Path, http: str) -> Iterator[subprocess.Popen[str]]:
    """``tocsin serve`` in a process group of its own, as a shell runs a foreground job,
    ready when this yields; killed (with its group) if the test left it running."""
    server = subprocess.Popen(
        [TOCSIN, "serve", "--data-dir", str(data), "--http", http],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
        start_new_session=True,
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
        yield server
    finally:
        if server.poll() is None:  # the test failed with it running: leave nothing behind
            os.killpg(server.pid, signal.SIGKILL)
            _, err = server.communicate(timeout=30)
            for pid in re.findall(r"embedded nats-server \(pid (\d+)\)", err):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)  # in a session of its own


def ctrl_c(server: subprocess.Popen[str]) -> tuple[str, str]:
    """What a terminal does on Ctrl-C: SIGINT to every process of the foreground group."""
    os.killpg(server.pid, signal.SIGINT)
    return server.communicate(timeout=30)


def test_ctrl_c_stops_everything_in_order_and_exits_0(tmp_path: Path) -> None:
    data = tmp_path / "data"
    http = f"127.0.0.1:{free_port()}"
    with serving(data, http) as server:
        url = (data / "nats.url").read_text().strip()
        port = int(url.rpartition(":")[2])
        _, err = ctrl_c(server)
    assert server.returncode == 0, err
    ready = next(line for line in err.splitlines() if " ready; " in line)
    assert f"dashboard: http://{http}/" in ready  # where to look, and where to publish
    assert f"NATS: {url}" in ready
    assert "event loop: uvloop)" in ready  # the default, uvloop being a dependency
    assert "CRITICAL" not in err
    assert "ConnectionReconnectingError" not in err
    troubles = [
        line
        for line in err.splitlines()
        if '"level":"warning"' in line or '"level":"error"' in line
    ]
    assert troubles == [], "an orderly stop warns of nothing"
    assert '"msg":"stopping: ' in err
    try:  # the embedded server stopped with it
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        listening = True
    except OSError:
        listening = False
    assert not listening, "the embedded nats-server outlived tocsin"


def test_a_quick_restart_comes_back_on_the_same_nats_url(tmp_path: Path) -> None:
    """Three stop/start cycles in a row: publishers configured with the URL of the first
    start keep finding the server (connections of the last run in TIME-WAIT included)."""
    data = tmp_path / "data"
    http = f"127.0.0.1:{free_port()}"
    urls = []
    for _ in range(3):
        with serving(data, http) as server:
            urls.append((data / "nats.url").read_text().strip())
            _, err = ctrl_c(server)
        assert server.returncode == 0, err
        assert (data / "nats.url").read_text().strip() == urls[-1]
    assert len(set(urls)) == 1, urls


def test_a_second_serve_in_the_same_dir_is_refused_and_leaves_the_first_untouched(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    http = f"127.0.0.1:{free_port()}"
    with serving(data, http) as first:
        url = (data / "nats.url").read_text()
        log_before = (data / "nats-server.log").read_text()
        second = subprocess.run(
            [TOCSIN, "serve", "--data-dir", str(data), "--http", f"127.0.0.1:{free_port()}"],
            capture_output=True,
            text=True,
            timeout=30,
            env=clean_env(),
        )
        assert second.returncode == 2, second.stderr
        assert "another tocsin already writes the log" in second.stderr
        assert (data / "nats.url").read_text() == url
        assert (data / "nats-server.log").read_text() == log_before, "a second nats-server ran"
        assert httpx.get(f"http://{http}/readyz", timeout=5).status_code == 200
        event = ["--type", "t", "--severity", "info", "--summary", "still here"]
        published = subprocess.run(
            [TOCSIN, "publish", "--data-dir", str(data), *event],
            capture_output=True,
            text=True,
            timeout=30,
            env=clean_env(),
        )
        assert published.returncode == 0, published.stderr
        _, err = ctrl_c(first)
    assert first.returncode == 0, err


def test_an_http_port_in_use_is_refused_naming_it_and_nothing_is_started(tmp_path: Path) -> None:
    """DESIGN section 6 knows exit codes 0, 1 and 2: uvicorn's own 3 came out before."""
    data = tmp_path / "data"
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        http = f"127.0.0.1:{taken.getsockname()[1]}"
        result = subprocess.run(
            [TOCSIN, "serve", "--data-dir", str(data), "--http", http],
            capture_output=True,
            text=True,
            timeout=30,
            env=clean_env(),
        )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"tocsin: TOCSIN_HTTP: cannot listen on {http}")
    assert not data.exists()  # no log, no nats-server, no nats.url
