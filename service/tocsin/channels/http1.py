"""HTTP/1.1 POSTs over pooled keep-alive connections: the one thing every HTTP channel
asks of a client, at the cost of the exchange itself.

Why not a general client (issue #20): delivery's budget is 120 us of CPU a notification
end to end, and aiohttp's ``ClientSession.post`` alone costs ~70-90 us of it (request
and response objects, multidicts, a tracing hook, a cookie jar consulted, a timer per
read), httpx's own client 1-3 ms. A receiver needs none of that: one method, one URL,
fixed headers, the status and at most 64 KiB of the answer. What is hard to get right,
parsing the answer (chunked, keep-alive, malformed), is llhttp's, Node's parser, through
``httptools`` (the one uvicorn runs on); what is here is the connection pool, the
request's bytes and the protocol glue, measured by ``bench/ceiling_delivery.py`` and
``bench/parts_delivery.py``.

What it does, as ``JsonPoster`` documents for the channels: at most ``limit``
connections per origin (a send waits for one), a connection idle longer than
``idle_seconds`` closed instead of reused, one that its server closed while idle never
reused, TLS with the context given, redirects never followed, no cookies, no proxies.
A request is sent once: one whose connection ends before its answer is an error (a
delivery attempt, which the retry policy retries after its backoff; a resend here
would be a second attempt the receiver sees and the log does not). An answer's body is kept up to
``max_body`` bytes; a longer one is cut there and its connection closed.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import re
import ssl
from collections.abc import Mapping
from typing import cast
from urllib.parse import SplitResult, unquote

import httptools

# A header's name is an RFC 9110 token; its value has no CR, LF or NUL (a value that did
# would end the header early and smuggle another, or a second request).
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(rb"[\r\n\0]")


class HeaderError(ValueError):
    """A header that cannot be sent as it is (a name that is not a token, a value with
    CR, LF or NUL)."""


def header_lines(headers: Mapping[str, str]) -> bytes:
    """``headers`` as the lines of a request's head, each ending in CRLF; ``HeaderError``
    naming the header when one cannot be sent."""
    lines = []
    for name, value in headers.items():
        raw_name = name.encode("utf-8")
        if not _TOKEN.fullmatch(raw_name):
            raise HeaderError(f"header name {name!r} is not a token")
        lines.append(raw_name + b": " + header_value(name, value) + b"\r\n")
    return b"".join(lines)


def header_value(name: str, value: str) -> bytes:
    """``value`` of header ``name`` as sent; ``HeaderError`` naming the header when it
    holds CR, LF or NUL (``header_lines`` checks the same)."""
    raw = value.encode("utf-8")
    if _BAD_VALUE.search(raw):
        raise HeaderError(f"header {name!r} has a line break or NUL in its value")
    return raw


class Origin:
    """Where a URL's requests go and what their heads start with: the scheme, host and
    port to connect to, and the request line and ``Host`` (and ``Authorization`` from
    the URL's user info) as bytes, made once per URL."""

    __slots__ = ("host", "key", "port", "start", "tls")

    def __init__(self, parts: SplitResult) -> None:
        host = parts.hostname or ""
        self.tls = parts.scheme == "https"
        self.port = parts.port or (443 if self.tls else 80)
        self.host = host
        self.key = (parts.scheme, host, self.port)
        shown = f"[{host}]" if ":" in host else host
        if parts.port is not None and parts.port != (443 if self.tls else 80):
            shown = f"{shown}:{parts.port}"
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        start = f"POST {target} HTTP/1.1\r\nHost: {shown}\r\n".encode()
        if parts.username is not None:
            user_info = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            token = base64.b64encode(user_info.encode("utf-8")).decode("ascii")
            start += f"Authorization: Basic {token}\r\n".encode("ascii")
        self.start = start


class Answer:
    """A receiver's answer: its status, its headers (names in lower case; a repeated
    header's last value), and its body's first ``max_body`` bytes.

    The headers are kept as the parser gave them and decoded when first asked for:
    only a failed send reads them (``Retry-After``, the charset and coding of the
    error's excerpt), and a success's were ~0.3 us a header to decode (issue #20)."""

    __slots__ = ("_decoded", "_raw", "body", "status")

    def __init__(self, status: int, raw_headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status = status
        self._raw = raw_headers
        self._decoded: dict[str, str] | None = None
        self.body = body

    @property
    def headers(self) -> dict[str, str]:
        if self._decoded is None:
            self._decoded = {
                name.decode("latin-1").lower(): value.decode("latin-1") for name, value in self._raw
            }
        return self._decoded


class Disconnected(ConnectionError):
    """The server closed the connection before its answer was complete."""


def running_loop(cached: asyncio.AbstractEventLoop | None) -> asyncio.AbstractEventLoop:
    """The running event loop: ``cached`` while it runs, else looked up. On Python 3.11
    each ``asyncio.get_running_loop`` (and ``asyncio.current_task()``) costs a
    ``getpid`` system call (~0.2 us; its check for a fork), and a notification made
    eight (issue #20); one thread runs one loop at a time, so a loop that is running
    is the caller's."""
    if cached is not None and cached.is_running():
        return cached
    return asyncio.get_running_loop()


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request at a time, its answer parsed as it
    arrives (``httptools`` calls the ``on_*`` methods from ``feed_data``)."""

    def __init__(self, max_body: int) -> None:
        self._max_body = max_body
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # its transport's
        self._waiter: asyncio.Future[Answer] | None = None
        self._headers: list[tuple[bytes, bytes]] = []  # as parsed (``Answer``)
        self._name = ""
        self._chunks: list[bytes] = []
        self._size = 0
        self.closed = False
        self.reusable = False
        self.idle_since = 0.0

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not ``asyncio.Transport`` subclasses, but are ones.
        self._transport = cast(asyncio.Transport, transport)
        self._loop = asyncio.get_running_loop()

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            self.close()  # bytes nobody asked for: the connection is not to be trusted
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._fail(Disconnected(f"malformed answer: {error}"))
            self.close()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        status = self._parser.get_status_code() if self._headers_done else 0
        if status and self._chunks_open:
            # An answer without a length ends when the connection does.
            self._finish(status)
        else:
            self._fail(
                Disconnected("server disconnected" + (f": {exc}" if exc is not None else ""))
            )

    # httptools callbacks

    _headers_done = False
    _chunks_open = False

    def on_message_begin(self) -> None:
        self._headers = []
        self._chunks = []
        self._size = 0
        self._headers_done = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            return  # an interim answer: the real one follows on the same connection
        self._headers_done = True
        self._chunks_open = True

    def on_body(self, body: bytes) -> None:
        room = self._max_body - self._size
        if room <= 0:
            return
        part = body[:room]
        self._chunks.append(part)
        self._size += len(part)
        if self._size >= self._max_body:  # cut here; the rest is not read
            self._finish(self._parser.get_status_code(), keep=False)
            self.close()

    def on_message_complete(self) -> None:
        if not self._headers_done:
            return  # the end of an interim answer
        self._finish(self._parser.get_status_code(), keep=self._parser.should_keep_alive())

    # the request

    def _finish(self, status: int, keep: bool = False) -> None:
        self._chunks_open = False
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        self.reusable = keep and not self.closed
        waiter.set_result(Answer(status, self._headers, b"".join(self._chunks)))

    def _fail(self, error: Exception) -> None:
        self._chunks_open = False
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(error)

    async def exchange(self, request: bytes) -> Answer:
        """Send ``request`` and wait for its whole answer."""
        assert self._transport is not None
        assert self._loop is not None
        self.reusable = False
        self._headers_done = False
        waiter: asyncio.Future[Answer] = self._loop.create_future()
        self._waiter = waiter
        self._transport.write(request)
        try:
            return await waiter
        finally:
            self._waiter = None

    def close(self) -> None:
        self.reusable = False
        if self._transport is not None and not self.closed:
            self.closed = True
            self._transport.close()


GRAIN = 0.01
"""Seconds within which deadlines started share one timer (``Deadlines``): how late,
at most, a request is cut past its own deadline."""


class Deadline:
    """One request's deadline (``Deadlines.start``): it cancels the request's task when
    it passes, as ``asyncio.timeout`` does, and ``end`` says whether it did."""

    __slots__ = ("_batch", "_cancelling", "_task", "expired", "ours")

    def __init__(self, task: asyncio.Task[object], batch: set[Deadline]) -> None:
        self._task = task
        self._batch = batch
        self._cancelling = task.cancelling()
        self.expired = False
        self.ours = False  # the task's cancellation is this deadline's alone

    def expire(self) -> None:
        self.expired = True
        self._task.cancel()

    def end(self) -> bool:
        """The request is over: ``True`` when its deadline had passed (the cancellation
        taken back, as ``asyncio.timeout`` leaves it; ``ours`` says whether nothing
        else cancelled the task meanwhile)."""
        self._batch.discard(self)
        if self.expired:
            self.ours = self._task.uncancel() <= self._cancelling
        return self.expired


class Deadlines:
    """``asyncio.timeout`` of ``seconds`` for many requests, one timer for all those
    started within ``GRAIN`` seconds: each is cut no sooner than its own deadline and
    at most ``GRAIN`` later. ``asyncio.timeout``'s timer, made and cancelled for every
    POST, cost ~3 us of a notification's CPU (issue #20); this costs a set's add and
    discard."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._batch: set[Deadline] = set()
        self._joins_until = 0.0  # loop time: a deadline started before it joins _batch
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> Deadline:
        """The current task's deadline, ``seconds`` from now; ``end`` it when done."""
        loop = self._loop = running_loop(self._loop)
        now = loop.time()
        if now >= self._joins_until:
            self._batch = set()
            self._joins_until = now + GRAIN
            loop.call_at(self._joins_until + self.seconds, _expire, self._batch)
        task = asyncio.current_task(loop)
        assert task is not None, "a deadline is for a task's request"
        deadline = Deadline(task, self._batch)
        self._batch.add(deadline)
        return deadline


def _expire(batch: set[Deadline]) -> None:
    """Every request of ``batch`` still under way is past its deadline."""
    for deadline in list(batch):
        deadline.expire()


class Pool:
    """Keep-alive connections to one origin, at most ``limit`` at once: a request past
    them waits in line for one (``_line``, first come first served). Not an
    ``asyncio.Semaphore``, whose every acquire scans its waiters with a generator."""

    def __init__(
        self,
        origin: Origin,
        limit: int,
        idle_seconds: float,
        max_body: int,
        tls: ssl.SSLContext | None,  # None: ``origin`` is not https
    ) -> None:
        self._origin = origin
        self._free = limit  # requests that may start without waiting
        self._line: collections.deque[asyncio.Future[None]] = collections.deque()
        self._idle: list[_Connection] = []
        self._idle_seconds = idle_seconds
        self._max_body = max_body
        self._tls = tls
        self._open: set[_Connection] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        origin = self._origin
        connection = _Connection(self._max_body)
        await loop.create_connection(
            lambda: connection,
            origin.host,
            origin.port,
            ssl=self._tls if origin.tls else None,
            server_hostname=origin.host if origin.tls else None,
        )
        self._open.add(connection)
        return connection

    def _reused(self, now: float) -> _Connection | None:
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed and now - connection.idle_since < self._idle_seconds:
                return connection
            connection.close()
            self._open.discard(connection)
        return None

    async def post(self, request: bytes) -> Answer:
        """``request`` on an idle connection or a new one; the answer, or an
        ``OSError`` (``Disconnected`` included) when there is none."""
        if self._free > 0 and not self._line:
            self._free -= 1
        else:
            await self._wait_in_line()
        try:
            loop = self._loop = running_loop(self._loop)
            connection = self._reused(loop.time())
            if connection is None:
                connection = await self._connect()
            try:
                answer = await connection.exchange(request)
            except BaseException:
                connection.close()
                self._open.discard(connection)
                raise
            if connection.reusable:
                connection.idle_since = loop.time()
                self._idle.append(connection)
            else:
                connection.close()
                self._open.discard(connection)
            return answer
        finally:
            self._release()

    async def _wait_in_line(self) -> None:
        """Until a finished request hands this one its place (``_release``)."""
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._line.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._release()  # handed a place, then cancelled: the next one's
            else:
                with contextlib.suppress(ValueError):
                    self._line.remove(turn)
            raise

    def _release(self) -> None:
        """A request is over: its place goes to the first one waiting, if any."""
        while self._line:
            turn = self._line.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self._free += 1

    def close(self) -> None:
        for connection in self._open:
            connection.close()
        self._open.clear()
        self._idle.clear()
