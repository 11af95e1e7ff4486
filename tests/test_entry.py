"""The ``tocsin`` command's entry (``tocsin/entry.py``): a tocsin process does not
import aiohttp (~11 MiB of RSS each, pulled by nats-py for a WebSocket transport tocsin
does not use) unless its NATS URL names a WebSocket server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tocsin.entry import websocket_wanted

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("argv", "environ", "wanted"),
    [
        (["serve"], {}, False),
        (["serve", "--nats-url", "nats://127.0.0.1:4222"], {}, False),
        (["serve", "--nats-url", "tls://a:4222,nats://b:4222"], {}, False),
        (["serve", "--nats-url", "ws://127.0.0.1:8080"], {}, True),
        (["deliver", "--nats-url=nats://a:4222,WSS://b:443"], {}, True),
        (["serve"], {"TOCSIN_NATS_URL": "wss://nats.example:443"}, True),
        (["serve"], {"TOCSIN_NATS_URL": "nats://nats.example:4222"}, False),
    ],
)
def test_a_websocket_url_is_seen_wherever_it_is_given(
    argv: list[str], environ: dict[str, str], wanted: bool
) -> None:
    """Catches a WebSocket URL missed (its process could not connect: aiohttp kept out)
    or a plain one taken for one (aiohttp imported for nothing)."""
    assert websocket_wanted(argv, environ) is wanted


def imported_by_the_command(tmp_path: Path, *args: str, module: bool = False) -> bool:
    """Whether ``tocsin serve *args --help`` imported an ``aiohttp`` that is installed: a
    stand-in package on the path, so the answer does not depend on this environment's.
    ``module``: run as serve runs a child, ``python -m tocsin.entry``."""
    package = tmp_path / "aiohttp"
    package.mkdir(exist_ok=True)
    (package / "__init__.py").write_text("")
    start = (
        "runpy.run_module('tocsin.entry', run_name='__main__')"
        if module
        else "from tocsin.entry import main; main()"
    )
    code = "\n".join(
        [
            "import atexit, runpy, sys",
            "def report():",
            "    print('nats' in sys.modules, sys.modules.get('aiohttp') is not None)",
            "atexit.register(report)",
            f"sys.argv = ['tocsin', 'serve', *{list(args)!r}, '--help']",
            start,
        ]
    )
    command = [sys.executable, "-c", code]
    path = os.pathsep.join([str(tmp_path), str(ROOT / "service"), str(ROOT)])
    env = {k: v for k, v in os.environ.items() if k != "TOCSIN_NATS_URL"}
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env={**env, "PYTHONPATH": path},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    ran, imported = done.stdout.strip().splitlines()[-1].split()
    assert ran == "True"  # the command ran (and imported nats-py)
    return imported == "True"


def test_the_command_keeps_aiohttp_out_unless_its_nats_url_is_a_websocket(
    tmp_path: Path,
) -> None:
    """Catches the command importing aiohttp through nats-py when installed (the entry
    point's guard gone, or the console script pointed past it), and a WebSocket URL's
    process kept from it."""
    assert imported_by_the_command(tmp_path) is False
    assert imported_by_the_command(tmp_path, "--nats-url", "ws://127.0.0.1:1") is True


def test_serves_children_start_at_the_entry_too(tmp_path: Path) -> None:
    """Catches serve's children started past the entry (``-m tocsin.cli``): each would
    import aiohttp through nats-py again, ~11 MiB of RSS a child."""
    from tocsin.config import load
    from tocsin.service import Options, serve_child

    options = Options(data_dir=tmp_path, config=load(None, {}))
    argv = serve_child(options, "nats://127.0.0.1:4222", ["deliver"]).argv
    assert argv[:3] == [sys.executable, "-m", "tocsin.entry"]
    assert imported_by_the_command(tmp_path, module=True) is False
