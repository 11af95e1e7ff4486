"""docs/publishing.md's examples, run: each is a file under clients/examples/, shown whole
in the page (so the page cannot drift from what runs), and those whose toolchain this
machine has (Python, Node.js, bash with curl) publish to a real nats-server or a real
tocsin here, once with it up (stored, with Nats-Msg-Id and traceparent) and once with
it unreachable (exit 1, saying the alert was not stored). Go has no toolchain here;
Maven Central and crates.io are out of this machine's reach, so the Java and Rust
examples are checked against their libraries' documentation only (the page says so)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import msgspec
import nats
import pytest

from tests.support import Tocsin, free_port, wait_until
from tocsin.bus.streams import ensure_streams
from tocsin.core.subjects import MSG_ID, STREAM_IN

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "clients" / "examples"
PAGE = ROOT / "docs" / "publishing.md"
CACHE = ROOT / ".cache" / "examples"  # ignored by git: installed dependencies, kept
TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-01$")
SHOWN = [
    "python/emit.py",
    "python/publish_nats.py",
    "node/publish.mjs",
    "node/package.json",
    "go/main.go",
    "java/src/main/java/example/Publish.java",
    "rust/src/main.rs",
    "rust/Cargo.toml",
    "shell/publish.sh",
    "shell/raw.sh",
    "shell/curl.sh",
]


def dead_url() -> str:
    return f"nats://127.0.0.1:{free_port()}"


async def with_streams(url: str) -> None:
    nc = await nats.connect(url)
    try:
        await ensure_streams(nc.jetstream())
    finally:
        await nc.close()


async def last_stored(url: str, count: int = 1) -> list[tuple[dict[str, object], dict[str, str]]]:
    """The last ``count`` messages of TOCSIN_IN: (body, headers)."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        last = (await js.stream_info(STREAM_IN)).state.last_seq
        out = []
        for seq in range(last - count + 1, last + 1):
            message = await js.get_msg(STREAM_IN, seq)
            out.append((msgspec.json.decode(message.data), dict(message.headers or {})))
        return out
    finally:
        await nc.close()


async def run(
    *command: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[int, str, str]:
    def go() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=cwd,
            env={**os.environ, **(env or {})},
        )

    done = await asyncio.to_thread(go)
    return done.returncode, done.stdout, done.stderr


def assert_published(body: dict[str, object], headers: dict[str, str]) -> None:
    assert headers[MSG_ID] == body["event_id"]
    assert TRACEPARENT.match(headers["traceparent"]), headers


@pytest.mark.parametrize("name", SHOWN)
def test_the_page_shows_each_example_whole(name: str) -> None:
    """Catches an example edited without the page (or the page without the example)."""
    assert (EXAMPLES / name).read_text().strip() in PAGE.read_text(), name


async def test_python_plain_nats_py(nats_url: str) -> None:
    await with_streams(nats_url)
    code, out, err = await run(
        sys.executable, str(EXAMPLES / "python" / "publish_nats.py"), env={"NATS_URL": nats_url}
    )
    assert code == 0, err
    [(body, headers)] = await last_stored(nats_url)
    assert_published(body, headers)
    assert out.startswith(f"stored {body['event_id']}: stream TOCSIN_IN seq ")
    code, _, err = await run(
        sys.executable, str(EXAMPLES / "python" / "publish_nats.py"), env={"NATS_URL": dead_url()}
    )
    assert code == 1
    assert "not stored" in err


async def test_python_with_the_library(nats_url: str, tmp_path: Path) -> None:
    await with_streams(nats_url)
    env = {
        "TOCSIN_NATS_URL": nats_url,
        "TOCSIN_SPOOL": str(tmp_path / "spool.jsonl"),
        "PYTHONPATH": str(ROOT / "clients" / "python" / "src"),  # as `make test` installs it
    }
    code, out, err = await run(sys.executable, str(EXAMPLES / "python" / "emit.py"), env=env)
    assert code == 0, err
    assert out == "stored\n"
    [(alert, _), (breach, _)] = await last_stored(nats_url, 2)
    assert alert["summary"] == "card processor returned 502"
    assert breach["type"] == "threshold.breach"
    env["TOCSIN_NATS_URL"] = dead_url()
    code, out, err = await run(sys.executable, str(EXAMPLES / "python" / "emit.py"), env=env)
    assert (code, out) == (0, "spooled\n"), err  # never fails its caller


def node_project() -> Path:
    """The Node example with its locked dependencies installed (``npm ci`` from the npm
    registry), once per lock file: later runs reuse ``.cache/examples/node``."""
    source = EXAMPLES / "node"
    target = CACHE / "node"
    lock = (source / "package-lock.json").read_bytes()
    stamp = target / ".installed"
    digest = hashlib.sha256(lock + (source / "package.json").read_bytes()).hexdigest()
    target.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "package-lock.json", "publish.mjs"):
        shutil.copy2(source / name, target / name)
    if not stamp.exists() or stamp.read_text() != digest:
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=target,
            check=True,
            capture_output=True,
            timeout=300,
        )
        stamp.write_text(digest)
    return target


async def test_node(nats_url: str) -> None:
    project = await asyncio.to_thread(node_project)
    await with_streams(nats_url)
    code, out, err = await run("node", "publish.mjs", env={"NATS_URL": nats_url}, cwd=project)
    assert code == 0, err
    [(body, headers)] = await last_stored(nats_url)
    assert_published(body, headers)
    assert out.startswith(f"stored {body['event_id']}: stream TOCSIN_IN seq ")
    code, _, err = await run("node", "publish.mjs", env={"NATS_URL": dead_url()}, cwd=project)
    assert code == 1
    assert "not stored" in err


async def test_shell_raw_protocol(nats_url: str) -> None:
    where = urlparse(nats_url)
    env = {"NATS_HOST": str(where.hostname), "NATS_PORT": str(where.port)}
    script = str(EXAMPLES / "shell" / "raw.sh")
    code, _, err = await run("bash", script, env=env)  # no stream yet: no PubAck
    assert code == 1
    assert "no stream takes alerts.in.shell" in err
    await with_streams(nats_url)
    code, out, err = await run("bash", script, env=env)
    assert code == 0, err
    [(body, headers)] = await last_stored(nats_url)
    assert_published(body, headers)
    assert body["summary"] == "nightly backup failed"
    assert out.startswith(f'stored {body["event_id"]}: {{"stream":"TOCSIN_IN"')
    code, _, err = await run("bash", script, env={**env, "NATS_PORT": str(free_port())})
    assert code == 1
    assert "unreachable" in err


async def test_shell_tocsin_publish(nats_url: str) -> None:
    await with_streams(nats_url)
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    env = {"NATS_URL": nats_url, "PATH": path}
    code, out, err = await run("bash", str(EXAMPLES / "shell" / "publish.sh"), env=env)
    assert code == 0, err
    [(body, headers)] = await last_stored(nats_url)
    assert headers[MSG_ID] == body["event_id"]
    assert body["details"] == {"exit_code": 2}
    assert out.startswith(f"published {body['event_id']} to alerts.in.shell")
    code, _, err = await run(
        "bash", str(EXAMPLES / "shell" / "publish.sh"), env={**env, "NATS_URL": dead_url()}
    )
    assert code == 1
    assert "not stored" in err


async def test_shell_curl(nats_url: str, tmp_path: Path) -> None:
    service = await Tocsin(tmp_path / "data", nats_url).start()
    try:
        code, out, err = await run(
            "bash", str(EXAMPLES / "shell" / "curl.sh"), env={"TOCSIN": service.api}
        )
        assert code == 0, err
        answer = msgspec.json.decode(out.removeprefix("stored: "))
        await wait_until(lambda: service.count("alert.received") == 1, 10, "received")
        [received] = service.events("alert.received")
    finally:
        await service.stop()
    assert received["event_id"] == answer["event_id"]
    assert received["summary"] == "nightly backup failed"
    unreachable = f"http://127.0.0.1:{free_port()}"
    code, _, err = await run(
        "bash", str(EXAMPLES / "shell" / "curl.sh"), env={"TOCSIN": unreachable}
    )
    assert code == 1
    assert "not stored" in err
