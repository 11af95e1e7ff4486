"""The shared HTTP client against receivers that never finish their answer (raw asyncio
servers on 127.0.0.1): a receiver's ``timeout`` bounds the whole exchange, and only the
first 64 KiB (``http.MAX_ANSWER_BYTES``) of an answer are read (DESIGN.md section 10)."""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from tests.support import make_notification, wait_until
from tocsin.channels import ChannelEnv
from tocsin.channels.webhook import WebhookChannel, WebhookConfig
from tocsin.core.policy.retry import SendResult
from tocsin.core.times import Duration

# The longest a receiver below keeps writing if its client never leaves: every loop
# ends by itself, whatever the code under test does.
RECEIVER_LIFETIME = 20.0


@dataclass
class Answering:
    """One connection's answer in progress, as the receiver sees it."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    sent: int = 0  # body bytes written so far

    def client_left(self) -> bool:
        return self.reader.at_eof() or self.writer.is_closing()

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()


@dataclass
class RawReceiver:
    """A one-route HTTP/1.1 server on asyncio streams: reads each request whole, then
    runs ``answer``; remembers every connection so a test can see how it ended."""

    answer: Callable[[Answering], Awaitable[None]]
    port: int = 0
    answers: list[Answering] = field(default_factory=list)
    handlers: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.append(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.decode("latin-1").split("\r\n"):
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            await reader.readexactly(length)
            answering = Answering(reader, writer)
            self.answers.append(answering)
            async with asyncio.timeout(RECEIVER_LIFETIME):
                await self.answer(answering)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass  # the client left, or the receiver's lifetime ran out
        finally:
            writer.close()

    def finished(self) -> bool:
        return bool(self.handlers) and all(task.done() for task in self.handlers)


@asynccontextmanager
async def raw_receiver(
    answer: Callable[[Answering], Awaitable[None]],
) -> AsyncIterator[RawReceiver]:
    receiver = RawReceiver(answer)
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0)
    receiver.port = server.sockets[0].getsockname()[1]
    try:
        yield receiver
    finally:
        server.close()
        await server.wait_closed()
        for task in receiver.handlers:
            task.cancel()
        await asyncio.gather(*receiver.handlers, return_exceptions=True)


def webhook(url: str, timeout: float) -> WebhookChannel:
    config = WebhookConfig(channel="webhook", url=url, timeout=Duration(timeout))
    return WebhookChannel("hook", config, ChannelEnv(version="test"))


async def send_within(channel: WebhookChannel, seconds: float) -> tuple[SendResult, float]:
    """The send's verdict and how long it took; a failed test if it takes ``seconds``."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        async with asyncio.timeout(seconds):
            result = await channel.send(make_notification())
    except TimeoutError:
        pytest.fail(f"the send was still running after {seconds}s")
    return result, loop.time() - started


async def trickle(answering: Answering) -> None:
    """A 200 whose body comes one byte every 200 ms, until the client leaves."""
    await answering.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1000000\r\n\r\n"
    )
    while not answering.client_left():
        await answering.write(b"x")
        answering.sent += 1
        await asyncio.sleep(0.2)


async def test_a_trickling_answer_times_out_at_the_receivers_timeout() -> None:
    # Each read gets a byte well within the 1 s timeout: only a deadline on the whole
    # exchange ends this send, before the consumer's ack_wait hands the item out again.
    async with raw_receiver(trickle) as receiver:
        hook = webhook(receiver.url, timeout=1.0)
        try:
            result, took = await send_within(hook, 5.0)
        finally:
            await hook.close()
        assert not result.ok, result
        assert result.retryable, result
        assert (result.error or "").startswith("timeout"), result.error
        assert result.status_code is None
        assert 0.95 <= took < 2.0, took
        [answering] = receiver.answers
        assert answering.sent >= 3  # it did trickle: every read was answered in time
        await wait_until(receiver.finished, timeout=5.0, what="the receiver to see the client go")


def endless(status: bytes) -> Callable[[Answering], Awaitable[None]]:
    """An answer with ``status`` whose body streams as fast as the client takes it and
    never ends: past 64 MiB the receiver stops writing but holds the connection open."""

    async def answer(answering: Answering) -> None:
        await answering.write(
            b"HTTP/1.1 " + status + b"\r\nContent-Type: text/plain\r\n"
            b"Content-Length: 1000000000000\r\n\r\n"
        )
        chunk = b"y" * 65536
        while not answering.client_left() and answering.sent < 64 * 1024 * 1024:
            await answering.write(chunk)
            answering.sent += len(chunk)
        await answering.reader.read()  # the line held open until the client leaves

    return answer


@pytest.mark.parametrize(
    ("status", "ok", "retryable"),
    [
        (b"200 OK", True, False),
        (b"503 Service Unavailable", False, True),
        (b"400 Bad", False, False),
    ],
)
async def test_an_endless_answer_is_read_up_to_the_cap_and_its_status_decides(
    status: bytes, ok: bool, retryable: bool
) -> None:
    async with raw_receiver(endless(status)) as receiver:
        hook = webhook(receiver.url, timeout=5.0)
        tracemalloc.start()
        try:
            result, _ = await send_within(hook, 4.0)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            await hook.close()
        assert (result.ok, result.retryable) == (ok, retryable), result
        assert result.status_code == int(status.split()[0])
        if not ok:
            assert result.error == f"HTTP {result.status_code}: " + "y" * 200
        # The client read at most the cap and left: the receiver saw it go while still
        # streaming, long before its 64 MiB, and the send held a bounded buffer.
        await wait_until(receiver.finished, timeout=5.0, what="the receiver to see the client go")
        [answering] = receiver.answers
        assert answering.sent < 64 * 1024 * 1024
        assert peak < 2 * 1024 * 1024, peak  # the socket's read buffer and the 64 KiB kept
