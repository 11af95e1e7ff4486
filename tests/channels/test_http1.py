"""The HTTP/1.1 client every HTTP channel posts through (``channels/http1.py`` under
``http.JsonPoster``), against raw HTTP/1.1 servers on 127.0.0.1 that answer as a test
scripts them: keep-alive reuse, the connection limit, a keep-alive the server ended, the
answer's framings and encodings, and the request's head.

Each scenario runs on both event loops tocsin runs on (asyncio's and uvloop's, the
default in every tocsin process: their transports differ), each in a loop of its own."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvloop

from tests.support import make_notification, wait_until
from tocsin.channels import ChannelConfigError, ChannelEnv, http, http1
from tocsin.channels.http import JsonPoster
from tocsin.channels.http1 import HeaderError
from tocsin.channels.webhook import WebhookChannel, WebhookConfig
from tocsin.config import from_mapping
from tocsin.core.policy.retry import SendResult
from tocsin.core.times import Duration
from tocsin.service import build_channels

LOOPS: dict[str, Callable[[Coroutine[Any, Any, None]], None]] = {
    "asyncio": asyncio.run,
    "uvloop": uvloop.run,
}

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@dataclass
class Request:
    """One request as the server read it: its connection's number, head and body."""

    connection: int
    head: dict[str, str]
    line: str
    body: bytes
    names: list[str]  # every header's name, in order, in lower case


# What the server does with a request: the bytes to answer (None: close without one).
Script = Callable[[Request], Awaitable[bytes | None]]


@dataclass
class ScriptedServer:
    """An HTTP/1.1 server on asyncio streams that reads requests one after another on
    each connection and answers each as ``script`` says (closing the connection after
    an answer that says ``Connection: close``); it counts connections open at
    once and remembers every request."""

    script: Script
    port: int = 0
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    open_now: int = 0
    most_open: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            while True:
                try:
                    raw = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return  # the client closed the connection
                line, *lines = raw.decode("latin-1").split("\r\n")
                head = {}
                for header in lines:
                    if header:
                        name, _, value = header.partition(":")
                        head[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(head.get("content-length", "0")))
                names = [h.partition(":")[0].strip().lower() for h in lines if h]
                request = Request(number, head, line, body, names)
                self.requests.append(request)
                answer = await self.script(request)
                if answer is None:
                    return
                writer.write(answer)
                await writer.drain()
                if b"connection: close" in answer.lower():
                    return
        except ConnectionError:
            return
        finally:
            self.open_now -= 1
            writer.close()


async def serving(script: Script) -> tuple[ScriptedServer, asyncio.Server]:
    server = ScriptedServer(script)
    listening = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    server.port = listening.sockets[0].getsockname()[1]
    return server, listening


async def answer_ok(request: Request) -> bytes:
    return OK


def each_loop(scenario: Callable[[], Coroutine[Any, Any, None]]) -> Any:
    """``scenario`` as a test run once on each event loop."""

    @pytest.mark.parametrize("loop", sorted(LOOPS))
    def test(loop: str) -> None:
        LOOPS[loop](asyncio.wait_for(scenario(), 30))

    test.__doc__ = scenario.__doc__
    return test


async def _keep_alive() -> None:
    """Catches a client that opens a connection per request (or never reuses one):
    five posts one after another reach the server on one connection."""
    server, listening = await serving(answer_ok)
    poster = JsonPoster("test", 5.0)
    try:
        results = [await poster.post(server.url, b"{}") for _ in range(5)]
    finally:
        await poster.close()
        listening.close()
    assert [r.error for r in results] == [None] * 5
    assert server.connections == 1
    assert len(server.requests) == 5


test_requests_one_after_another_share_one_connection = each_loop(_keep_alive)


async def _no_tls_for_http() -> None:
    """Catches a TLS context made for receivers that are all http:// (certifi's ~150
    roots, ~2.6 MiB of every delivery child's RSS): posts to a plain URL make none,
    and an https receiver's pool still gets the one shared context."""
    server, listening = await serving(answer_ok)
    http.ssl_context.cache_clear()
    poster = JsonPoster("test", 5.0)
    try:
        results = [await poster.post(server.url, b"{}") for _ in range(2)]
        assert http.ssl_context.cache_info().currsize == 0
        tls_pool = poster._pool(http._origin("https://hooks.example.com/x"))
        assert tls_pool._tls is http.ssl_context()
    finally:
        await poster.close()
        listening.close()
        http.ssl_context.cache_clear()
    assert [r.error for r in results] == [None] * 2


test_plain_http_receivers_make_no_tls_context = each_loop(_no_tls_for_http)


# a pool's limit below ``[delivery] concurrency``'s default: a channel that ignored the
# one it was given would open more
LIMIT = 12


async def _limit() -> None:
    """Catches a pool without its limit, or a webhook channel built as serve builds it
    (``build_channels``) not given ``[delivery] concurrency`` for its connections: 2 x
    the limit sends at once open at most that many (the server holds every answer until
    that many requests wait, so an unbounded pool would have them all open at once),
    and every send is answered."""
    limit = LIMIT
    waiting: list[asyncio.Future[None]] = []

    async def hold_until_full(request: Request) -> bytes:
        gate = asyncio.get_running_loop().create_future()
        waiting.append(gate)
        if len(waiting) >= limit:
            for held in waiting:
                if not held.done():
                    held.set_result(None)
        await gate
        return OK

    server, listening = await serving(hold_until_full)
    config = from_mapping(
        {
            "receivers": {"hook": {"channel": "webhook", "url": server.url}},
            "delivery": {"concurrency": limit},
        },
        {},
    )
    channel = build_channels(config, ["hook"], None, config.delivery.concurrency)["hook"]

    async def post_and_release_the_rest() -> SendResult:
        result = await channel.send(make_notification())
        # The second wave is smaller than the limit: answer whatever still waits.
        for held in waiting:
            if not held.done():
                held.set_result(None)
        return result

    try:
        results = await asyncio.gather(*(post_and_release_the_rest() for _ in range(2 * limit)))
    finally:
        await channel.close()
        listening.close()
    assert [r.error for r in results] == [None] * (2 * limit)
    assert server.most_open == limit
    assert server.connections == limit  # the second wave reused the first's connections


test_a_receiver_gets_at_most_the_limit_of_connections = each_loop(_limit)


async def _line() -> None:
    """Catches the pool's line losing a place: past the limit, a POST waits its turn,
    one cancelled while waiting gives its place up (it is never sent), and the rest are
    all answered over at most ``connections`` connections."""
    limit = LIMIT
    held: list[asyncio.Future[None]] = []

    async def hold(request: Request) -> bytes:
        gate = asyncio.get_running_loop().create_future()
        held.append(gate)
        await gate
        return OK

    server, listening = await serving(hold)
    poster = JsonPoster("test", 10.0, connections=limit)
    try:
        first = [asyncio.create_task(poster.post(server.url, b"{}")) for _ in range(limit)]
        await wait_until(lambda: len(held) == limit, what="the limit's requests held")
        given_up = asyncio.create_task(poster.post(server.url, b'"given up"'))
        waiting = asyncio.create_task(poster.post(server.url, b'"waiting"'))
        await asyncio.wait([given_up, waiting], timeout=0)  # both in line now
        given_up.cancel()
        with pytest.raises(asyncio.CancelledError):
            await given_up
        for gate in held:
            gate.set_result(None)
        results = await asyncio.gather(*first)
        await wait_until(lambda: len(held) == limit + 1, what="the one still waiting sent")
        held[-1].set_result(None)
        last = await waiting
    finally:
        await poster.close()
        listening.close()
    assert [r.error for r in [*results, last]] == [None] * (limit + 1)
    assert [r.body for r in server.requests].count(b'"given up"') == 0
    assert server.requests[-1].body == b'"waiting"'
    assert server.most_open == limit


test_a_post_waits_in_line_past_the_limit_and_a_cancelled_one_leaves_it = each_loop(_line)


async def _deadlines() -> None:
    """Catches the shared deadline timers (``http1.Deadlines``, issue #20) cutting a
    POST before its ``timeout``, not cutting it at all, taking a cancellation from
    outside for a timeout (the worker must stop), or cancelling a POST's task after its
    answer came in time."""
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def never(request: Request) -> bytes:
        await loop.create_future()
        return OK

    silent, silent_listening = await serving(never)
    server, listening = await serving(answer_ok)
    seconds = 0.2
    poster = JsonPoster("test", seconds)
    try:
        cut = await asyncio.gather(*(poster.post(silent.url, b"{}") for _ in range(5)))
        ended = loop.time()
        outside = asyncio.create_task(poster.post(silent.url, b"{}"))
        await wait_until(lambda: len(silent.requests) == 6, what="the sixth request under way")
        outside.cancel()
        with pytest.raises(asyncio.CancelledError):
            await outside
        answered = await poster.post(server.url, b"{}")
        # Past the latest time its deadline could have cut it (timers run in order):
        after = loop.create_future()
        loop.call_later(seconds + 2 * http1.GRAIN, after.set_result, None)
        await after  # a cancellation from the deadline would be raised here
    finally:
        await poster.close()
        listening.close()
        silent_listening.close()
    for result in cut:
        assert (result.error or "").startswith("timeout: no whole answer within 0.2s")
        assert result.retryable
    assert ended - started >= seconds
    assert answered.error is None


test_a_posts_deadline_cuts_it_no_sooner_than_its_timeout = each_loop(_deadlines)


async def _stale() -> None:
    """Catches a request sent twice in one attempt (the receiver would see an attempt
    the log does not, sooner than the backoff says) and a connection reused after its
    server closed it: the server answers the first request and closes the connection
    at the second without a byte of answer; that post is one retryable failure, and
    the next goes on a new connection and is delivered."""

    async def close_at_second_on_first(request: Request) -> bytes | None:
        if request.connection == 1 and len(server.requests) == 2:
            return None
        return OK

    server, listening = await serving(close_at_second_on_first)
    poster = JsonPoster("test", 5.0)
    try:
        first = await poster.post(server.url, b'{"n": 1}')
        second = await poster.post(server.url, b'{"n": 2}')
        third = await poster.post(server.url, b'{"n": 3}')
    finally:
        await poster.close()
        listening.close()
    assert (first.error, third.error) == (None, None)
    assert second.retryable
    assert second.error is not None
    assert second.error.startswith("connection error: server disconnected")
    assert [(r.connection, r.body) for r in server.requests] == [
        (1, b'{"n": 1}'),
        (1, b'{"n": 2}'),
        (2, b'{"n": 3}'),
    ]


test_a_request_whose_connection_ends_unanswered_is_one_failed_attempt = each_loop(_stale)


async def _fresh_disconnect() -> None:
    """Catches a client that loops on a server that closes every new connection, or
    calls that a success: one request, a retryable connection error."""

    async def never_answer(request: Request) -> None:
        return None

    server, listening = await serving(never_answer)
    poster = JsonPoster("test", 5.0)
    try:
        result = await poster.post(server.url, b"{}")
    finally:
        await poster.close()
        listening.close()
    assert result.retryable
    assert result.error is not None
    assert result.error.startswith("connection error: server disconnected")
    assert len(server.requests) == 1


test_a_new_connection_closed_without_an_answer_is_a_retryable_error = each_loop(_fresh_disconnect)


async def _framings() -> None:
    """Catches an answer's body misread in one of HTTP/1.1's framings or encodings: a
    chunked 503, a gzip-encoded 500, and a 400 whose length is its connection's end
    each give their status's verdict with their text in the error."""
    chunked = (
        b"HTTP/1.1 429 Too Many Requests\r\nTransfer-Encoding: chunked\r\n"
        b"Retry-After: 7\r\n\r\n5\r\nbusy \r\n5\r\nhere!\r\n0\r\n\r\n"
    )
    zipped = gzip.compress(b"database is down")
    gzipped = (
        b"HTTP/1.1 500 Internal Server Error\r\nContent-Encoding: gzip\r\n"
        b"Content-Length: %d\r\n\r\n" % len(zipped) + zipped
    )
    until_close = (
        b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n"
        b"Content-Type: text/plain; charset=latin-1\r\n\r\nno such r\xf4le"
    )
    answers = [chunked, gzipped, until_close]

    async def in_turn(request: Request) -> bytes | None:
        return answers[len(server.requests) - 1]

    server, listening = await serving(in_turn)
    poster = JsonPoster("test", 5.0)
    try:
        results = [await poster.post(server.url, b"{}") for _ in answers]
    finally:
        await poster.close()
        listening.close()
    busy, down, bad = results
    assert (busy.status_code, busy.retryable, busy.retry_after) == (429, True, 7.0)
    assert busy.error is not None
    assert "busy here!" in busy.error
    assert (down.status_code, down.retryable) == (500, True)
    assert down.error is not None
    assert "database is down" in down.error
    assert (bad.status_code, bad.retryable) == (400, False)
    assert bad.error is not None
    assert "no such rôle" in bad.error


test_chunked_gzipped_and_close_delimited_answers_are_read = each_loop(_framings)


async def _head() -> None:
    """Catches a request head that differs from the one the channels promise: the
    request line with the URL's path and query, ``Host`` with its port, tocsin's
    ``User-Agent`` (a receiver's header of the same name in another case does not add
    a second), ``Authorization`` from the URL's user info, the body's length, the
    receiver's fixed headers and the per-request ones."""
    server, listening = await serving(answer_ok)
    url = server.url.replace("http://", "http://ops%40example:s%3Acret@") + "?a=%2F"
    poster = JsonPoster("9.9", 5.0, {"X-Team": "db", "user-agent": "not me"})
    try:
        result = await poster.post(url, b'{"a": 1}', "00-abc-def-01", {"Idempotency-Key": "n1"})
    finally:
        await poster.close()
        listening.close()
    assert result.error is None
    (request,) = server.requests
    assert request.line == "POST /hook?a=%2F HTTP/1.1"
    assert request.head["host"] == f"127.0.0.1:{server.port}"
    assert request.head["user-agent"] == "tocsin/9.9"
    assert sorted(request.names) == sorted(set(request.names))  # no header twice
    expected = base64.b64encode(b"ops@example:s:cret").decode()
    assert request.head["authorization"] == f"Basic {expected}"
    assert request.head["content-length"] == "8"
    assert request.head["content-type"] == "application/json"
    assert request.head["x-team"] == "db"
    assert request.head["traceparent"] == "00-abc-def-01"
    assert request.head["idempotency-key"] == "n1"
    assert request.body == b'{"a": 1}'


test_the_request_head_is_the_one_the_channels_promise = each_loop(_head)


def test_a_posts_head_is_the_same_once_its_header_names_are_remembered() -> None:
    """``JsonPoster`` remembers a request header's name once checked (issue #20: a
    webhook sends ``Idempotency-Key`` with every POST), so later POSTs check only the
    values. Catches the remembered way writing other lines than the general one: a
    name that replaces a fixed header (in any case) or is ``traceparent`` must never
    be remembered, and a value with a line break must still be refused, naming the
    header, on a remembered name."""
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    cases: list[tuple[str | None, dict[str, str] | None]] = [
        (tp, {"Idempotency-Key": "n1"}),
        (None, {"Idempotency-Key": "n2"}),
        (tp, None),
        (None, None),
        (tp, {"Idempotency-Key": "n3", "X-Extra": "1"}),
        (tp, {"x-team": "ops"}),  # replaces the fixed X-Team
        (tp, {"USER-AGENT": "me"}),  # replaces a fixed header tocsin sets
        (tp, {"Traceparent": "00-1-2-01"}),  # beside the given traceparent
        (None, {"traceparent": "00-1-2-01"}),
        (tp, {"traceparent": "00-1-2-01", "Idempotency-Key": "n4"}),
    ]
    fixed = {"X-Team": "db"}
    warm = JsonPoster("9.9", 5.0, fixed)
    for _ in range(2):  # the second time round, every name that may be is remembered
        for traceparent, headers in cases:
            general = JsonPoster("9.9", 5.0, fixed)._merged_lines(traceparent, headers)
            assert warm._head_lines(traceparent, headers) == general, (traceparent, headers)
    assert set(warm._starts) == {"Idempotency-Key", "X-Extra"}
    with pytest.raises(HeaderError) as refused:
        warm._head_lines(tp, {"Idempotency-Key": "n5\r\nX-Admin: yes"})
    assert "Idempotency-Key" in str(refused.value)
    with pytest.raises(HeaderError):
        warm._head_lines("00-1-2-01\r\nX-Admin: yes", {"Idempotency-Key": "n6"})
    with pytest.raises(HeaderError):
        JsonPoster("9.9", 5.0)._head_lines(tp, {"Bad Name": "x"})


def test_an_answers_headers_decoded_when_asked_are_those_it_had() -> None:
    """An answer keeps its headers as parsed and decodes them when a failed send asks
    (issue #20). Catches the late decoding changing what it says: names in lower case,
    a repeated header's last value, values as latin-1, decoded once."""
    answer = http1.Answer(
        503,
        [(b"Retry-After", b"7"), (b"X-A", b"1"), (b"x-a", b"2"), (b"X-Name", b"caf\xe9")],
        b"busy",
    )
    assert answer.headers == {"retry-after": "7", "x-a": "2", "x-name": "café"}
    assert answer.headers is answer.headers


def test_a_successful_answers_headers_are_never_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Catches a success's answer having its headers decoded after all, ~0.5 us a POST
    that nothing reads (``http.JsonPoster.post``; issue #20): a 200's are never asked
    for, while a 429's still are, its ``Retry-After`` being the next attempt's delay."""
    asked: list[int] = []
    decode = http1.Answer.headers.fget
    assert decode is not None

    def counted(answer: http1.Answer) -> dict[str, str]:
        asked.append(answer.status)
        return decode(answer)

    monkeypatch.setattr(http1.Answer, "headers", property(counted))

    async def script(request: Request) -> bytes:
        if request.body == b"{}":
            return b"HTTP/1.1 200 OK\r\nX-Seen: 1\r\nContent-Length: 2\r\n\r\nok"
        return b"HTTP/1.1 429 Too Many\r\nRetry-After: 7\r\nContent-Length: 4\r\n\r\nslow"

    async def scenario() -> tuple[SendResult, SendResult]:
        server, listening = await serving(script)
        poster = JsonPoster("test", 5.0)
        try:
            return await poster.post(server.url, b"{}"), await poster.post(server.url, b"[]")
        finally:
            await poster.close()
            listening.close()

    ok, busy = uvloop.run(scenario())
    assert ok == SendResult(ok=True, status_code=200)
    assert busy.retry_after == 7.0
    assert busy.error == "HTTP 429: slow"
    assert asked
    assert set(asked) == {429}


def test_a_loop_is_looked_up_once_while_it_runs_and_again_on_the_next() -> None:
    """Catches ``http1.running_loop`` looking the running loop up on every request (a
    ``getpid`` system call each, issue #20) and handing back a loop that no longer
    runs: one ``Deadlines`` used on two loops in turn (as a channel outliving a test's
    loop would be) looks each loop up once however many requests start, and its timer
    cuts a request on the second loop (a timer left on the first would never fire)."""
    deadlines = http1.Deadlines(0.05)
    lookups: list[asyncio.AbstractEventLoop] = []
    look_up = asyncio.get_running_loop

    def counted() -> asyncio.AbstractEventLoop:
        loop = look_up()
        lookups.append(loop)
        return loop

    async def cut() -> bool:
        deadline = deadlines.start()
        with contextlib.suppress(asyncio.CancelledError):
            await look_up().create_future()  # until the deadline cuts it
        return deadline.end()

    async def requests() -> tuple[asyncio.AbstractEventLoop, list[bool]]:
        for _ in range(3):
            deadlines.start().end()
        return look_up(), [await cut()]

    asyncio.get_running_loop = counted  # type: ignore[assignment]
    try:
        first, first_cut = asyncio.run(asyncio.wait_for(requests(), 10))
        second, second_cut = uvloop.run(asyncio.wait_for(requests(), 10))
    finally:
        asyncio.get_running_loop = look_up
    assert first_cut == second_cut == [True]
    assert lookups.count(first) == lookups.count(second) == 1


def test_a_header_with_a_line_break_is_refused_when_the_receiver_is_built() -> None:
    """Catches a header value that would end the head early and smuggle another header
    (or a request) into every send: the webhook is refused at build time, naming the
    key ``headers``, and the value is not echoed."""
    config = WebhookConfig(
        channel="webhook",
        url="http://127.0.0.1:9/hook",
        headers={"X-Team": "db\r\nX-Admin: yes"},
    )
    with pytest.raises(ChannelConfigError) as refused:
        WebhookChannel("hook", config, ChannelEnv(version="test"))
    assert refused.value.key == "headers"
    assert "X-Team" in str(refused.value)
    assert "X-Admin" not in str(refused.value)


async def _webhook_end_to_end() -> None:
    """Catches the webhook channel and the client disagreeing on a send's verdict: a
    notification posted to a receiver that answers 200 is delivered."""
    server, listening = await serving(answer_ok)
    config = WebhookConfig(channel="webhook", url=server.url, timeout=Duration(5.0))
    channel = WebhookChannel("hook", config, ChannelEnv(version="test"))
    try:
        result = await channel.send(make_notification())
    finally:
        await channel.close()
        listening.close()
    assert result.error is None
    assert result.status_code == 200
    assert server.requests[0].head["idempotency-key"]


test_a_webhook_send_through_the_client_is_delivered = each_loop(_webhook_end_to_end)
