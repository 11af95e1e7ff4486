"""``Emitter``: one NATS connection, reused, that never fails and never blocks its caller
past a timeout.

The connection lives on a private event loop in one daemon thread, so the same emitter
serves plain threads (``emit``) and coroutines on any loop (``emit_async``) alike, and a
call from inside a running loop cannot deadlock on it. Every event goes to the spool
first (``spool.py``), then one flush at a time publishes the spool in order, each with
``Nats-Msg-Id`` = its ``event_id``, waiting for JetStream's PubAck, and removes what was
acknowledged. A caller waits for its own event's ack until its deadline: ``True`` when
it came, ``False`` otherwise (the event stays spooled and the next emit or ``flush``
re-sends it).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import nats

from tocsin_client.event import Outbound, build
from tocsin_client.spool import DEFAULT_MAX_EVENTS, Entry, Spool

log = logging.getLogger("tocsin_client")

DEFAULT_URL = "nats://127.0.0.1:4222"
DEFAULT_TIMEOUT = 2.0
DEFAULT_FLUSH_TIMEOUT = 10.0
MSG_ID = "Nats-Msg-Id"
_REMOVE_EVERY = 64  # acked events forgotten in batches: a crash re-sends at most these
_ACKED_REMEMBERED = 10_000

T = TypeVar("T")


async def _quiet(*_: Any) -> None:
    """nats-py's callbacks: the emitter reports outages itself, once each."""


class Emitter:
    """Publishes alert events to tocsin over JetStream, spooling what NATS did not ack.

    ``url`` defaults to ``TOCSIN_NATS_URL`` (else ``nats://127.0.0.1:4222``), ``source``
    to ``TOCSIN_SOURCE`` (else ``python``; events go to ``alerts.in.<source>``), the
    spool to ``TOCSIN_SPOOL`` (else ``~/.cache/tocsin/spool.jsonl``).
    ``connect_options`` go to ``nats.connect`` as they are (``user_credentials``, ``tls``...).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        source: str | None = None,
        spool: Spool | Path | str | None = None,
        spool_max_events: int = DEFAULT_MAX_EVENTS,
        timeout: float = DEFAULT_TIMEOUT,
        connect_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.url = url or os.environ.get("TOCSIN_NATS_URL") or DEFAULT_URL
        self.source = source or os.environ.get("TOCSIN_SOURCE") or "python"
        self.spool = spool if isinstance(spool, Spool) else Spool(spool, spool_max_events)
        self.timeout = float(timeout)
        self.connect_options = dict(connect_options or {})
        self._start_lock = threading.Lock()
        self._pid = 0
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._io: concurrent.futures.ThreadPoolExecutor | None = None
        # Owned by the private loop's thread from here on:
        self._nc: Any = None
        self._flushing: asyncio.Task[None] | None = None
        self._waiters: dict[str, asyncio.Future[bool]] = {}
        self._acked: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._down = False

    # -- the caller's side --------------------------------------------------------------

    def emit(
        self,
        severity: Any,
        title: Any,
        message: Any = None,
        context: Any = None,
        *,
        timeout: float | None = None,
        **fields: Any,
    ) -> bool:
        """Publish one alert; True once JetStream acknowledged it within ``timeout``
        (default: the emitter's). Never raises: a failure is logged and returns False,
        and an event that was built stays spooled for the next emit or ``flush``."""
        try:
            deadline = time.monotonic() + self._limit(timeout)
            outbound = build(
                severity, title, message, context, fields, source=self.source, now=_now()
            )
            if not self._spool(outbound, deadline):
                return False
            future = self._submit(self._until_acked(outbound.event_id))
            try:
                return future.result(timeout=max(0.0, deadline - time.monotonic()))
            except concurrent.futures.TimeoutError:
                future.cancel()
                return False
        except Exception:
            log.exception("tocsin_client: emit failed; the alert was not confirmed")
            return False

    async def emit_async(
        self,
        severity: Any,
        title: Any,
        message: Any = None,
        context: Any = None,
        *,
        timeout: float | None = None,
        **fields: Any,
    ) -> bool:
        """``emit`` for coroutines: the caller's loop is never blocked (the spool is
        written in the emitter's I/O thread)."""
        try:
            deadline = time.monotonic() + self._limit(timeout)
            outbound = build(
                severity, title, message, context, fields, source=self.source, now=_now()
            )
            io = self._start()[1]
            spooled = asyncio.wrap_future(io.submit(self._spool, outbound, deadline))
            if not await asyncio.wait_for(spooled, max(0.0, deadline - time.monotonic())):
                return False
            acked = asyncio.wrap_future(self._submit(self._until_acked(outbound.event_id)))
            return await asyncio.wait_for(acked, max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            return False
        except Exception:
            log.exception("tocsin_client: emit failed; the alert was not confirmed")
            return False

    def flush(self, timeout: float | None = None) -> bool:
        """Re-send the spool in order now; True when it is empty afterwards. Never raises."""
        limit = DEFAULT_FLUSH_TIMEOUT if timeout is None else timeout
        try:
            future = self._submit(self._flush_all())
            try:
                return future.result(timeout=max(0.0, float(limit)))
            except concurrent.futures.TimeoutError:
                future.cancel()
                return False
        except Exception:
            log.exception("tocsin_client: flush failed")
            return False

    async def flush_async(self, timeout: float | None = None) -> bool:
        """``flush`` for coroutines."""
        limit = DEFAULT_FLUSH_TIMEOUT if timeout is None else timeout
        try:
            return await asyncio.wait_for(
                asyncio.wrap_future(self._submit(self._flush_all())), max(0.0, float(limit))
            )
        except TimeoutError:
            return False
        except Exception:
            log.exception("tocsin_client: flush failed")
            return False

    def close(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Close the connection and stop the emitter's thread (the spool stays on disk)."""
        with self._start_lock:
            self._closed = True
            loop, thread, io = self._loop, self._thread, self._io
            self._loop = self._thread = self._io = None
        if loop is None or thread is None or io is None or self._pid != os.getpid():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shut_down(), loop).result(timeout)
        except Exception:
            log.debug("tocsin_client: closing the connection failed", exc_info=True)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        if not thread.is_alive():
            loop.close()
        io.shutdown(wait=True)  # its calls end by their deadlines

    async def aclose(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """``close`` for coroutines."""
        await asyncio.to_thread(self.close, timeout)

    def __enter__(self) -> Emitter:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _limit(self, timeout: float | None) -> float:
        return max(0.0, float(self.timeout if timeout is None else timeout))

    def _spool(self, outbound: Outbound, deadline: float) -> bool:
        """Write ahead: the event is on disk before any network, so a False answer
        always means "spooled" unless the bound dropped it (logged)."""
        entry = Entry(
            event_id=outbound.event_id,
            severity=outbound.severity,
            subject=outbound.subject,
            payload=outbound.payload.decode(),
            traceparent=outbound.traceparent,
        )
        added = self.spool.add(entry, deadline)
        for dropped in added.dropped:
            log.warning(
                "tocsin_client: spool %s full: dropped %s event %s",
                self.spool.path,
                dropped.severity,
                dropped.event_id,
            )
        return added.kept and not self._closed

    def _start(self) -> tuple[asyncio.AbstractEventLoop, concurrent.futures.ThreadPoolExecutor]:
        """The private loop and I/O thread, started on first use (and again in a forked
        child, where the parent's threads do not exist)."""
        with self._start_lock:
            if self._closed:
                raise RuntimeError("the emitter is closed")
            if self._loop is None or self._io is None or self._pid != os.getpid():
                self._pid = os.getpid()
                self._nc, self._flushing, self._waiters = None, None, {}
                self._loop = asyncio.new_event_loop()
                self._loop.set_default_executor(  # name resolution, by nats-py's connect
                    concurrent.futures.ThreadPoolExecutor(1, "tocsin-client-resolver")
                )
                self._io = concurrent.futures.ThreadPoolExecutor(1, "tocsin-client-spool")
                self._thread = threading.Thread(
                    target=self._loop.run_forever, name="tocsin-client", daemon=True
                )
                self._thread.start()
            return self._loop, self._io

    def _submit(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        try:
            loop = self._start()[0]
        except Exception:
            coroutine.close()
            raise
        return asyncio.run_coroutine_threadsafe(coroutine, loop)

    # -- the private loop's side --------------------------------------------------------

    async def _until_acked(self, event_id: str) -> bool:
        if event_id in self._acked:  # a flush already running took it along
            return True
        waiter = asyncio.get_running_loop().create_future()
        self._waiters[event_id] = waiter
        try:
            self._kick()
            return bool(await waiter)
        finally:
            if self._waiters.get(event_id) is waiter:
                del self._waiters[event_id]

    async def _flush_all(self) -> bool:
        await asyncio.shield(self._kick())
        remaining = await self._in_io(self.spool.entries, time.monotonic() + self.timeout)
        return not remaining

    def _kick(self) -> asyncio.Task[None]:
        """The one flush at work, started when there is none."""
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.get_running_loop().create_task(self._flush())
        return self._flushing

    async def _flush(self) -> None:
        """Publish the spool in order until it is empty; at the first failure, stop and
        answer every waiting caller False (their events stay spooled)."""
        try:
            while True:
                entries = await self._in_io(self.spool.entries, time.monotonic() + self.timeout)
                if not entries:
                    return
                await self._publish_in_order(entries)
        except Exception as error:
            if not self._down:
                log.warning(
                    "tocsin_client: NATS at %s unreachable (%s): events are spooled in %s",
                    self.url,
                    error or type(error).__name__,
                    self.spool.path,
                )
            self._down = True
            await self._disconnect()
            for waiter in self._waiters.values():
                if not waiter.done():
                    waiter.set_result(False)

    async def _publish_in_order(self, entries: list[Entry]) -> None:
        js = await self._jetstream()
        acked: set[str] = set()
        try:
            for entry in entries:
                headers = {MSG_ID: entry.event_id}
                if entry.traceparent:
                    headers["traceparent"] = entry.traceparent
                await js.publish(
                    entry.subject, entry.payload.encode(), timeout=self.timeout, headers=headers
                )
                acked.add(entry.event_id)
                self._acknowledged(entry.event_id)
                if len(acked) >= _REMOVE_EVERY:
                    await self._in_io(self.spool.remove, acked, time.monotonic() + self.timeout)
                    acked = set()
        finally:
            if acked:
                await self._in_io(self.spool.remove, acked, time.monotonic() + self.timeout)
        if self._down:
            log.info("tocsin_client: NATS at %s reachable again", self.url)
            self._down = False

    def _acknowledged(self, event_id: str) -> None:
        self._acked[event_id] = None
        if len(self._acked) > _ACKED_REMEMBERED:
            self._acked.popitem(last=False)
        waiter = self._waiters.get(event_id)
        if waiter is not None and not waiter.done():
            waiter.set_result(True)

    async def _jetstream(self) -> Any:
        if self._nc is None or not self._nc.is_connected:
            await self._disconnect()
            options: dict[str, Any] = {
                "connect_timeout": self.timeout,
                # An outage fails fast (the spool holds the events): no reconnecting
                # behind the caller's back, and one quick retry of the first connect
                # (nats-py retries a refused connect for ever unless this is positive).
                "allow_reconnect": False,
                "max_reconnect_attempts": 1,
                "reconnect_time_wait": 0.0,
                "name": "tocsin-client",
                "error_cb": _quiet,
                "disconnected_cb": _quiet,
                "closed_cb": _quiet,
            }
            options.update(self.connect_options)
            self._nc = await nats.connect(self.url, **options)
        return self._nc.jetstream()

    async def _shut_down(self) -> None:
        """Everything the private loop holds: the flush, the connection, and the
        resolver threads of the loop's default executor."""
        if self._flushing is not None:
            self._flushing.cancel()
            with contextlib.suppress(BaseException):
                await self._flushing
        await self._disconnect()
        await asyncio.get_running_loop().shutdown_default_executor()

    async def _disconnect(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            try:
                await asyncio.wait_for(nc.close(), self.timeout)
            except Exception:
                log.debug("tocsin_client: closing the connection failed", exc_info=True)

    async def _in_io(self, function: Callable[..., T], *args: Any) -> T:
        """A spool call in the I/O thread: the loop keeps serving acks meanwhile."""
        io = self._io
        if io is None:
            raise RuntimeError("the emitter is closed")
        return await asyncio.get_running_loop().run_in_executor(io, function, *args)


def _now() -> datetime:
    return datetime.now(UTC)
