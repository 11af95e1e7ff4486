"""``tocsin serve``'s children: started, watched, started again, stopped.

With ``[delivery] processes`` above 0, ``tocsin serve`` keeps the router, the recorder,
the clock and the API in its own process and runs its delivery workers as that many
``tocsin deliver`` children (the same parts the split deployment runs, on the same
config file and NATS server), so the two halves use two cores. How many, and how long
to wait before starting a dead one again, are ``core.policy.processes``'s decisions;
this module only carries them out, without blocking the event loop (asyncio
subprocesses and streams). ``tocsin serve --partitions N`` (DESIGN.md section 17) also
runs the router of each partition as a child, ``tocsin router --partition k``: the same
supervision, a command per slot.

Each child gets one end of a socket pair (``TOCSIN_SUPERVISOR_FD``), the *link*:

- the child reads it: ``reload`` lines (the parent reloaded its config: the child
  reloads its receivers' settings from the same file and answers ``reloaded``, which
  the parent waits for before its reload is done, so a notification routed after a
  reload is sent with the new settings), and end of file, which means
  the parent is gone (even SIGKILLed: the kernel closes its end), so the child stops
  in order instead of being orphaned;
- the child writes its ``WorkerFigures`` to it every second and when it stops: what a
  worker measures that the log does not hold, which the parent adds to its /metrics.

A child runs in a session (so a process group) of its own: a Ctrl-C in the terminal
reaches ``tocsin serve`` alone, which stops its intake first, then tells the children to stop
(SIGTERM: they finish their sends in flight and exit), then the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import msgspec

from tocsin.core.policy.processes import Restarts
from tocsin.observability.telemetry import Metrics, WorkerFigures

log = logging.getLogger("tocsin.supervisor")

LINK_FD = "TOCSIN_SUPERVISOR_FD"  # the child's end of its link, by file descriptor
RELOAD = b"reload"  # parent to child: reload your receivers from the config file
RELOADED = b"reloaded"  # child to parent: done
RELOAD_PATIENCE = 10.0  # seconds a reload waits for each child to say it is done
FIGURES_EVERY = 1.0  # seconds between a child's figures (they are totals: none is owed)
STOP_PATIENCE = 30.0  # seconds a child has to drain and exit once told, then SIGKILL
LINE_LIMIT = 1 << 20  # the longest line either end reads (figures of many receivers)


@dataclass(frozen=True)
class ChildCommand:
    """How to start one child: its argv and its environment (where the NATS
    URL goes, not on a command line ``ps`` shows)."""

    argv: list[str]
    env: Mapping[str, str]


def describe_exit(returncode: int) -> str:
    """A process's end as a log line says it: its exit code, or the signal that ended
    it (asyncio gives that as a negative code)."""
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-returncode).name}"
        return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


@dataclass
class _Slot:
    """One of the places a child runs in; a dead child is replaced in its slot, by the
    slot's command."""

    index: int
    command: ChildCommand
    restarts: Restarts = field(default_factory=Restarts)
    process: asyncio.subprocess.Process | None = None
    link: asyncio.StreamWriter | None = None
    reloaded: asyncio.Event = field(default_factory=asyncio.Event)


class Supervisor:
    """Runs a child of each of ``commands`` until ``stop``, each started again when it
    ends before that (logged, with its exit code or signal, and counted in
    ``tocsin_<role>_process_restarts``), after the delay ``Restarts`` decides.
    ``role`` names the children in logs and metrics: ``delivery`` or ``router``."""

    def __init__(
        self,
        commands: Sequence[ChildCommand],
        metrics: Metrics,
        patience: float = STOP_PATIENCE,
        role: str = "delivery",
    ) -> None:
        self._slots = [_Slot(index, command) for index, command in enumerate(commands)]
        self._metrics = metrics
        self._patience = patience
        self.role = role
        self._restarts = metrics.process_restarts(role)
        metrics.observe(
            f"tocsin_{role}_processes",
            f"{role} child processes of tocsin serve running now",
            lambda: float(len(self.pids)),
        )

    @property
    def pids(self) -> list[int]:
        """The children running now."""
        return [
            slot.process.pid
            for slot in self._slots
            if slot.process is not None and slot.process.returncode is None
        ]

    async def run(self, stop: asyncio.Event) -> None:
        """Keep every slot's child running until ``stop``; then stop them all at once
        and return once each has exited."""
        await asyncio.gather(*(self._keep(slot, stop) for slot in self._slots))

    async def reload(self) -> None:
        """Tell every running child that the config file was reloaded, and wait (at most
        ``RELOAD_PATIENCE``) until each has said it reloaded."""
        told = []
        for slot in self._slots:
            if slot.link is not None and not slot.link.is_closing():
                slot.reloaded.clear()
                with contextlib.suppress(ConnectionError):
                    slot.link.write(RELOAD + b"\n")
                    await slot.link.drain()
                    told.append(slot)
        if not told:
            return
        waits = [asyncio.ensure_future(slot.reloaded.wait()) for slot in told]
        _, late = await asyncio.wait(waits, timeout=RELOAD_PATIENCE)
        for wait in late:
            wait.cancel()
        for slot in told:
            if not slot.reloaded.is_set():
                log.warning(
                    "%s process %d did not confirm the reload within %.0f s",
                    self.role,
                    slot.index,
                    RELOAD_PATIENCE,
                )

    async def _keep(self, slot: _Slot, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            started = loop.time()
            pid, returncode = await self._run_once(slot, stop)
            if stop.is_set():
                log.info(
                    "%s process %d (pid %d) stopped: %s",
                    self.role,
                    slot.index,
                    pid,
                    describe_exit(returncode),
                )
                return
            delay = slot.restarts.after_exit(loop.time() - started)
            log.error(
                "%s process %d (pid %d) %s; starting it again in %.1f s",
                self.role,
                slot.index,
                pid,
                describe_exit(returncode),
                delay,
            )
            self._restarts.add(1, {"slot": str(slot.index)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    async def _run_once(self, slot: _Slot, stop: asyncio.Event) -> tuple[int, int]:
        """Start the slot's child, serve its link, and return (pid, returncode) once it
        has exited: by itself, or told to when ``stop`` is set."""
        mine, theirs = socket.socketpair()
        try:
            process = await asyncio.create_subprocess_exec(
                *slot.command.argv,
                env={**slot.command.env, LINK_FD: str(theirs.fileno())},
                pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
                # A terminal's Ctrl-C is for serve, which stops it in order. A session
                # of its own, not process_group=0: uvloop's subprocesses refuse that
                # argument, and a new session is a new process group on both loops.
                start_new_session=True,
            )
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()  # the child's copy is its own: its exit closes the link
        name = f"{self.role}-{slot.index}:{process.pid}"
        log.info("%s process %d started (pid %d)", self.role, slot.index, process.pid)
        reader, slot.link = await asyncio.open_connection(sock=mine, limit=LINE_LIMIT)
        slot.process = process
        listening = asyncio.create_task(self._listen(reader, name, slot), name=f"link {name}")
        exited = asyncio.create_task(process.wait())
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait([exited, stopping], return_when=asyncio.FIRST_COMPLETED)
            if not exited.done():
                await self._stop_child(slot.index, process, exited)
            returncode = await exited
            # The child's last figures are on the link before its end of file.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(listening), 5)
        finally:
            stopping.cancel()
            listening.cancel()
            slot.link.close()
            slot.link = None
            self._metrics.forget(name)
        return process.pid, returncode

    async def _stop_child(
        self, index: int, process: asyncio.subprocess.Process, exited: asyncio.Task[int]
    ) -> None:
        """SIGTERM: the child stops pulling, finishes its sends and exits; one that has
        not within ``patience`` is SIGKILLed (its unacked work comes back to another)."""
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        done, _ = await asyncio.wait([exited], timeout=self._patience)
        if done:
            return
        log.error(
            "%s process %d (pid %d) did not stop within %.0f s; killing it",
            self.role,
            index,
            process.pid,
            self._patience,
        )
        with contextlib.suppress(ProcessLookupError):
            process.kill()

    async def _listen(self, reader: asyncio.StreamReader, name: str, slot: _Slot) -> None:
        """The child's figures, each line its totals so far, into this /metrics; and its
        word that it reloaded. The link ends with the child: a child that dies with our
        words unread (a reload told to a child that then fails to read its config) resets
        it, which ends the listening, not the supervisor (its exit is ``_keep``'s to
        log and answer)."""
        decoder = msgspec.json.Decoder(WorkerFigures)
        try:
            while line := await reader.readline():
                if line.strip() == RELOADED:
                    slot.reloaded.set()
                    continue
                try:
                    figures = decoder.decode(line)
                except msgspec.DecodeError as error:
                    log.warning("%s process sent what is not its figures: %s", name, error)
                    continue
                self._metrics.merge(name, figures)
        except (OSError, ValueError) as error:  # reset; or a line past LINE_LIMIT
            log.warning("the link to %s process %s ended: %s", self.role, name, error)


def link_fd(environ: Mapping[str, str]) -> int | None:
    """The link's file descriptor when this process is a supervised child, else None."""
    value = environ.get(LINK_FD, "")
    return int(value) if value.isdigit() else None


class Link:
    """The child's end of the link: sends ``metrics.figures()`` every ``every`` seconds
    and once more when ``run`` is stopped (after the workers have drained: it is a late
    part); calls ``reload`` on each ``reload`` line; calls ``parent_gone`` at end of
    file (the parent stopped or was killed)."""

    def __init__(
        self,
        fd: int,
        metrics: Metrics,
        parent_gone: Callable[[], None],
        reload: Callable[[], Awaitable[object]],
        every: float = FIGURES_EVERY,
    ) -> None:
        self._fd = fd
        self._metrics = metrics
        self._parent_gone = parent_gone
        self._reload = reload
        self._every = every
        self._encoder = msgspec.json.Encoder()

    async def run(self, stop: asyncio.Event) -> None:
        sock = socket.socket(fileno=self._fd)
        reader, writer = await asyncio.open_connection(sock=sock, limit=LINE_LIMIT)
        listening = asyncio.create_task(self._listen(reader, writer), name="link")
        try:
            while not stop.is_set():
                await self._send(writer)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._every)
            await self._send(writer)  # the last sends' figures
        finally:
            listening.cancel()
            writer.close()

    async def _send(self, writer: asyncio.StreamWriter) -> None:
        if writer.is_closing():
            return
        with contextlib.suppress(ConnectionError):
            writer.write(self._encoder.encode(self._metrics.figures()) + b"\n")
            await writer.drain()

    async def _listen(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while line := await reader.readline():
                if line.strip() == RELOAD:
                    try:
                        await self._reload()
                    except Exception:
                        log.exception("reload asked by tocsin serve failed")
                    if not writer.is_closing():  # done, well or not: the parent waits
                        writer.write(RELOADED + b"\n")
                        await writer.drain()
        log.warning("the tocsin serve that started this process is gone: stopping")
        self._parent_gone()
