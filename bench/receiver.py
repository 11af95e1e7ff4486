"""The webhook receiver both services notify: raw asyncio HTTP/1.1 with keep-alive.

Why not uvicorn (as the tests use): the receiver shares two cores with the service being
measured, so it must cost as little CPU per request as possible, and it has to see
connections, not requests, to count how many a service holds open at once. A protocol
object per TCP connection gives both: the receipt time is taken the moment a request's
last byte arrives, and the open-connection count moves in ``connection_made`` /
``connection_lost``.

What a request means is the caller's business: ``keys_of(body)`` returns what one request
carries (``Received``): the keys of the alerts it lists (one for tocsin's per-alert
notification, one per alert of a group body or of Alertmanager's payload), and for a
group, its key and how many alerts the body left out. The receiver keeps the first
receipt time of every alert key and of every group.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import NamedTuple

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
BAD = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
MAX_HEAD = 64 * 1024


class Received(NamedTuple):
    """What one webhook request notifies."""

    keys: list[str]  # the alerts it lists (the bench's ``fp`` label of each)
    group: str | None = None  # the group's key, for a group notification
    truncated: int = 0  # alerts of the group the body counts but does not list


KeysOf = Callable[[bytes], Received]


class Receiver:
    """Counts notifications and connections; ``reset`` starts a new workload."""

    def __init__(self, keys_of: KeysOf) -> None:
        self._keys_of = keys_of
        self._server: asyncio.Server | None = None
        self.port = 0
        self.open = 0  # TCP connections open now
        self.max_open = 0  # the most open at once since the receiver started
        self.connections = 0  # TCP connections accepted since the receiver started
        self._transports: set[asyncio.Transport] = set()
        self.reset()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def reset(self, prefix: str = "") -> None:
        """Forget notifications and count only keys starting with ``prefix`` (a late
        notification of the previous workload is ``stray``, not one of this one's); the
        per-workload connection peak restarts from now."""
        self.prefix = prefix
        self.stray = 0
        self.first_seen: dict[str, float] = {}  # key -> perf_counter() of first receipt
        self.notifications = 0  # every notification, duplicates included
        self.requests = 0
        self.bad_requests = 0
        self.last_at = 0.0  # perf_counter() of the latest notification
        self.phase_max_open = self.open
        self.group_first_seen: dict[str, float] = {}  # group key -> first receipt
        self.group_truncated: dict[str, int] = {}  # group key -> its latest body's count
        self.truncated = 0  # alerts left out, summed over every group notification

    @property
    def unique(self) -> int:
        return len(self.first_seen)

    @property
    def groups(self) -> int:
        """Distinct groups notified."""
        return len(self.group_first_seen)

    @property
    def covered(self) -> int:
        """Distinct alerts listed, plus the alerts each group's latest notification
        counted without listing them: every alert some notification accounted for
        (an upper bound when a body truncated: its unlisted alerts may have been listed
        by an earlier one)."""
        return len(self.first_seen) + sum(self.group_truncated.values())

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), "127.0.0.1", 0, backlog=4096
        )
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for transport in list(self._transports):
                transport.close()
            await self._server.wait_closed()
            self._server = None

    def _opened(self, transport: asyncio.Transport) -> None:
        self._transports.add(transport)
        self.open += 1
        self.connections += 1
        self.max_open = max(self.max_open, self.open)
        self.phase_max_open = max(self.phase_max_open, self.open)

    def _closed(self, transport: asyncio.Transport) -> None:
        self._transports.discard(transport)
        self.open -= 1

    def _received(self, body: bytes, at: float) -> bool:
        """Record one request's notifications; ``False`` if its body made no sense."""
        self.requests += 1
        try:
            keys, group, truncated = self._keys_of(body)
        except ValueError:
            self.bad_requests += 1
            return False
        ours = False
        for key in keys:
            if not key.startswith(self.prefix):
                self.stray += 1
                continue
            ours = True
            self.first_seen.setdefault(key, at)
            self.notifications += 1
            self.last_at = at
        if group is not None and (ours or (not keys and truncated)):
            self.group_first_seen.setdefault(group, at)
            self.group_truncated[group] = truncated
            self.truncated += truncated
        return True


class _Connection(asyncio.Protocol):
    """One keep-alive connection: parses pipelined requests out of the byte stream."""

    def __init__(self, receiver: Receiver) -> None:
        self._receiver = receiver
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._receiver._opened(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        assert self._transport is not None
        self._receiver._closed(self._transport)

    def data_received(self, data: bytes) -> None:
        at = time.perf_counter()
        self._buffer += data
        while self._transport is not None and not self._transport.is_closing():
            parsed = _parse(self._buffer)
            if parsed is None:
                if len(self._buffer) > MAX_HEAD and b"\r\n\r\n" not in self._buffer:
                    self._answer(BAD, close=True)
                return
            body, used, close = parsed
            del self._buffer[:used]
            if body is None:
                self._answer(BAD, close=True)
                return
            self._answer(OK if self._receiver._received(body, at) else BAD, close=close)

    def _answer(self, response: bytes, close: bool) -> None:
        assert self._transport is not None
        self._transport.write(response)
        if close or response is BAD:
            self._transport.close()


def _parse(buffer: bytearray) -> tuple[bytes | None, int, bool] | None:
    """One complete request at the start of ``buffer``: (body, bytes used, close after).
    ``None`` while incomplete; a ``None`` body for a request this receiver refuses."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = bytes(buffer[:end]).split(b"\r\n")
    version = lines[0].rsplit(b" ", 1)[-1]
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    close = version == b"HTTP/1.0" or headers.get(b"connection", b"").lower() == b"close"
    start = end + 4
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        return _chunked(buffer, start, close)
    try:
        length = int(headers.get(b"content-length", b"0"))
    except ValueError:
        return None, start, True
    if len(buffer) < start + length:
        return None
    return bytes(buffer[start : start + length]), start + length, close


def _chunked(buffer: bytearray, at: int, close: bool) -> tuple[bytes | None, int, bool] | None:
    """A chunked body from ``at`` (no trailers expected); ``None`` while incomplete."""
    body = bytearray()
    while True:
        eol = buffer.find(b"\r\n", at)
        if eol < 0:
            return None
        try:
            size = int(bytes(buffer[at:eol]).split(b";")[0], 16)
        except ValueError:
            return None, len(buffer), True
        at = eol + 2
        if size == 0:
            if len(buffer) < at + 2:
                return None
            return bytes(body), at + 2, close
        if len(buffer) < at + size + 2:
            return None
        body += buffer[at : at + size]
        at += size + 2
