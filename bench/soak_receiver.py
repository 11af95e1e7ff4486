"""The webhook receivers of the soak (``bench/soak.py``): one that always answers 200,
and one that flaps through the ways a real endpoint fails, on a fixed schedule.

The flapping one cycles through ``CYCLE``: no answer at all (tocsin's ``timeout``
fires), 500, 429 with ``Retry-After``, slow bodies (half of them finish well inside the
timeout, half never do) and a long 500 outage that outlasts tocsin's retries, so some
notifications are dead-lettered. Between the bad phases it answers 200.

Both keep a ledger by ``Idempotency-Key``: every request, and every time the receiver
*accepted* a notification, meaning it wrote a complete 2xx answer. Only accepted
notifications count as "received" for DESIGN.md invariant 4: a request answered 500 or
left hanging was not taken, so tocsin sending it again is a retry, not a duplicate.
The receiver never completes a 2xx answer late (a slow body is either done in a fifth
of the timeout or never finished), so "accepted" is something tocsin saw as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from dataclasses import dataclass, field

from aiohttp import web

IDEMPOTENCY_KEY = "Idempotency-Key"
RETRY_AFTER_SECONDS = 2


@dataclass(frozen=True, slots=True)
class Phase:
    mode: str  # ok | timeout | error | throttle | slow | outage
    seconds: float


CYCLE: tuple[Phase, ...] = (
    Phase("ok", 10),
    Phase("timeout", 10),
    Phase("ok", 10),
    Phase("error", 10),
    Phase("ok", 10),
    Phase("throttle", 10),
    Phase("ok", 10),
    Phase("slow", 10),
    Phase("ok", 10),
    Phase("outage", 30),  # longer than tocsin's whole retry schedule: dead letters
)
CYCLE_SECONDS = sum(phase.seconds for phase in CYCLE)


def mode_at(elapsed: float) -> str:
    """The flapping receiver's mode ``elapsed`` seconds after it started."""
    at = elapsed % CYCLE_SECONDS
    for phase in CYCLE:
        if at < phase.seconds:
            return phase.mode
        at -= phase.seconds
    return "ok"


@dataclass
class Ledger:
    """What one receiver saw, by ``Idempotency-Key`` (times are ``time.monotonic()``)."""

    accepted: dict[str, list[float]] = field(default_factory=dict)
    requests: int = 0
    answers: dict[str, int] = field(default_factory=dict)  # mode -> requests answered so

    def twice(self) -> dict[str, list[float]]:
        """Keys accepted more than once, with the times of each acceptance."""
        return {key: times for key, times in self.accepted.items() if len(times) > 1}


class SoakReceiver:
    """A webhook on 127.0.0.1; ``flapping`` selects the schedule above, ``steady()``
    ends it (the drain after the load)."""

    def __init__(self, name: str, flapping: bool, timeout: float) -> None:
        self.name = name
        self.flapping = flapping
        self.timeout = timeout
        self.ledger = Ledger()
        self.port = 0
        self._started = time.monotonic()
        self._steady = not flapping
        self._runner: web.AppRunner | None = None
        self._slow_toggle = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def mode(self) -> str:
        if self._steady:
            return "ok"
        return mode_at(time.monotonic() - self._started)

    def begin(self) -> None:
        """The schedule starts now (with the load)."""
        self._started = time.monotonic()

    def steady(self) -> None:
        """Answer 200 from now on."""
        self._steady = True

    async def start(self) -> None:
        app = web.Application(client_max_size=1 << 20)
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = int(sock.getsockname()[1])
        await web.SockSite(self._runner, sock, shutdown_timeout=1).start()
        self._started = time.monotonic()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        key = request.headers.get(IDEMPOTENCY_KEY, "")
        await request.read()
        self.ledger.requests += 1
        mode = self.mode()
        self._count(mode)
        if mode == "timeout":
            # No answer until long after tocsin gave up; then a refusal nobody reads.
            await asyncio.sleep(self.timeout * 3)
            return web.Response(status=503)
        if mode in ("error", "outage"):
            return web.Response(status=500, text="soak: failing on purpose")
        if mode == "throttle":
            return web.Response(status=429, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        if mode == "slow":
            self._slow_toggle += 1
            if self._slow_toggle % 2:
                return await self._dribble(request, key, self.timeout / 5, finish=True)
            return await self._dribble(request, key, self.timeout * 3, finish=False)
        return await self._accept(request, key)

    async def _accept(self, request: web.Request, key: str) -> web.StreamResponse:
        answer = web.StreamResponse(status=200)
        answer.content_length = 0
        with contextlib.suppress(ConnectionError):
            await answer.prepare(request)
            await answer.write_eof()
            self._accepted(key)
        return answer

    async def _dribble(
        self, request: web.Request, key: str, seconds: float, finish: bool
    ) -> web.StreamResponse:
        """A 200 whose 20-byte body comes one byte at a time over ``seconds``; unless
        ``finish``, the last byte never comes (the answer cannot complete)."""
        body = b"soak: a slow body..\n"
        answer = web.StreamResponse(status=200)
        answer.content_length = len(body)
        with contextlib.suppress(ConnectionError):
            await answer.prepare(request)
            for byte in body[:-1]:
                await answer.write(bytes([byte]))
                await asyncio.sleep(seconds / len(body))
            if not finish:
                if request.transport is not None:
                    request.transport.abort()
                return answer
            await answer.write(body[-1:])
            await answer.write_eof()
            self._accepted(key)
        return answer

    def _count(self, what: str) -> None:
        self.ledger.answers[what] = self.ledger.answers.get(what, 0) + 1

    def _accepted(self, key: str) -> None:
        self.ledger.accepted.setdefault(key, []).append(time.monotonic())
        self._count("accepted")
