"""Everything tocsin says to NATS: subjects, streams, consumers, pulling, publishing.

One place for each name (DESIGN.md section 3). The pull path avoids nats-py's per-fetch
machinery: one persistent inbox subscription is fed by raw ``CONSUMER.MSG.NEXT`` batch
requests and acks are plain publishes, which measured ~6x faster than ``fetch()``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import BadRequestError, NotFoundError, ServiceUnavailableError

from tocsin.redact import display_url

log = logging.getLogger("tocsin.broker")

IN_PREFIX = "alerts.in."
IN_SUBJECTS = "alerts.in.>"
DELIVERED = "alerts.delivered"
DELIVERY_FAILED = "alerts.delivery_failed"
REJECTED = "alerts.rejected"
ROUTE_PREFIX = "tocsin.route."
ATTEMPTS_PREFIX = "tocsin.attempts."
CONTROL_PREFIX = "tocsin.control."
DELIVERY_STATUS = CONTROL_PREFIX + "delivery-status"  # request: notification id; reply: status
# (the reply values are listed in tocsin/status.py)
RETRY_FAILED = CONTROL_PREFIX + "retry-failed"  # request: control.RetryRequest; reply: RetryReply

STREAM_IN = "TOCSIN_IN"
STREAM_WORK = "TOCSIN_WORK"
STREAM_OUT = "TOCSIN_OUT"

ROUTER_CONSUMER = "router"
RECORDER_CONSUMER = "recorder"

MSG_ID = "Nats-Msg-Id"
ACK = b"+ACK"
TERM = b"+TERM"
PROGRESS = b"+WPI"

DAY = 86400.0
SETUP_PATIENCE = 60.0  # seconds to keep asking JetStream to create streams and consumers


# JetStream's own word that a replicated stream or consumer has a new leader: core NATS
# messages published in the stream's account (nats-server ``server/jetstream_api.go``
# ``JSAdvisoryStreamLeaderElectedPre`` + ".<stream>", ``JSAdvisoryConsumerLeaderElectedPre``
# + ".<stream>.<consumer>"). A new leader may not know what the old one delivered.
STREAM_LEADER_ELECTED_PREFIX = "$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED."
CONSUMER_LEADER_ELECTED_PREFIX = "$JS.EVENT.ADVISORY.CONSUMER.LEADER_ELECTED."


def route_subject(receiver: str) -> str:
    return ROUTE_PREFIX + receiver


def attempts_subject(receiver: str) -> str:
    return ATTEMPTS_PREFIX + receiver


def deliver_consumer(receiver: str) -> str:
    return f"deliver-{receiver}"


def leader_elected_subjects(stream: str, consumer: str) -> list[str]:
    """The advisories announcing a new leader for ``stream`` or its ``consumer``."""
    return [
        STREAM_LEADER_ELECTED_PREFIX + stream,
        f"{CONSUMER_LEADER_ELECTED_PREFIX}{stream}.{consumer}",
    ]


def source_of(subject: str) -> str:
    """``alerts.in.<source>`` -> ``<source>`` (the third token)."""
    parts = subject.split(".")
    return parts[2] if len(parts) > 2 and parts[2] else "unknown"


def stream_configs(replicas: int = 1) -> list[js_api.StreamConfig]:
    """The three streams, each kept in ``replicas`` copies (3 on a three-node cluster).
    Inbound uses interest retention with discard-new: a message leaves only once the
    router acked it, and a full stream refuses publishers instead of silently dropping
    (critical alerts are never discarded by limits)."""
    return [
        js_api.StreamConfig(
            name=STREAM_IN,
            subjects=[IN_SUBJECTS],
            retention=js_api.RetentionPolicy.INTEREST,
            discard=js_api.DiscardPolicy.NEW,
            storage=js_api.StorageType.FILE,
            max_bytes=1 << 30,
            duplicate_window=120.0,
            num_replicas=replicas,
        ),
        js_api.StreamConfig(
            name=STREAM_WORK,
            subjects=[ROUTE_PREFIX + ">"],
            retention=js_api.RetentionPolicy.WORK_QUEUE,
            discard=js_api.DiscardPolicy.NEW,
            storage=js_api.StorageType.FILE,
            duplicate_window=120.0,
            num_replicas=replicas,
        ),
        js_api.StreamConfig(
            name=STREAM_OUT,
            subjects=[DELIVERED, DELIVERY_FAILED, REJECTED, ATTEMPTS_PREFIX + ">"],
            retention=js_api.RetentionPolicy.LIMITS,
            storage=js_api.StorageType.FILE,
            max_age=30 * DAY,
            duplicate_window=120.0,
            num_replicas=replicas,
        ),
    ]


def router_consumer_config(ack_wait: float = 30.0, replicas: int = 1) -> js_api.ConsumerConfig:
    return js_api.ConsumerConfig(
        durable_name=ROUTER_CONSUMER,
        filter_subject=IN_SUBJECTS,
        ack_policy=js_api.AckPolicy.EXPLICIT,
        ack_wait=ack_wait,
        max_ack_pending=20_000,
        max_deliver=-1,
        max_waiting=16,
        num_replicas=replicas,
    )


def recorder_consumer_config(ack_wait: float = 30.0, replicas: int = 1) -> js_api.ConsumerConfig:
    return js_api.ConsumerConfig(
        durable_name=RECORDER_CONSUMER,
        filter_subjects=[DELIVERED, DELIVERY_FAILED, ATTEMPTS_PREFIX + ">"],
        ack_policy=js_api.AckPolicy.EXPLICIT,
        ack_wait=ack_wait,
        max_ack_pending=20_000,
        max_deliver=-1,
        max_waiting=16,
        num_replicas=replicas,
    )


def deliver_consumer_config(
    receiver: str, send_timeout: float, ack_wait: float = 30.0, replicas: int = 1
) -> js_api.ConsumerConfig:
    """Pending work waits in the stream, not in a worker's memory; ``ack_wait`` outlasts
    a send (longer holds send +WPI). Attempts are counted by tocsin, not capped here."""
    return js_api.ConsumerConfig(
        durable_name=deliver_consumer(receiver),
        filter_subject=route_subject(receiver),
        ack_policy=js_api.AckPolicy.EXPLICIT,
        ack_wait=max(ack_wait, send_timeout + 5.0),
        max_ack_pending=10_000,
        max_deliver=-1,
        max_waiting=64,
        num_replicas=replicas,
    )


def server_urls(url: str) -> list[str]:
    """``nats://a:4222,nats://b:4222`` -> each URL: a cluster named by several seeds, so
    that a client starts even while one of them is down (NATS's usual comma list)."""
    return [part.strip() for part in url.split(",") if part.strip()]


async def connect(url: str, name: str, login: dict[str, Any] | None = None) -> NATS:
    """A connection that reconnects forever and logs what happens to it. ``url`` may
    list several servers, comma-separated; the client also learns the rest of a cluster
    from the server it reaches, and fails over to them. ``login`` is
    ``connection.connect_options(...)``: credentials and TLS."""
    shown = display_url(url)

    async def on_disconnect() -> None:
        log.warning("disconnected from NATS at %s", shown)

    async def on_reconnect() -> None:
        log.info("reconnected to NATS at %s", shown)

    async def on_error(error: Exception) -> None:
        log.warning("NATS error: %s", error)

    return await nats.connect(
        server_urls(url),
        **(login or {}),
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        connect_timeout=5,
        allow_reconnect=True,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
        error_cb=on_error,
        pending_size=64 * 1024 * 1024,
    )


async def ensure_streams(
    js: JetStreamContext, replicas: int = 1, patience: float = SETUP_PATIENCE
) -> None:
    """Create the streams, or update them to this version's config (JetStream moves an
    existing stream to a new replica count). Safe when several tocsin processes start
    at once: whoever loses the race to create finds the stream, and updates it only if
    its config differs."""
    for config in stream_configs(replicas):
        await _until_answered(
            functools.partial(_ensure_stream, js, config), f"stream {config.name}", patience
        )


async def ensure_consumer(
    js: JetStreamContext,
    stream: str,
    config: js_api.ConsumerConfig,
    patience: float = SETUP_PATIENCE,
) -> None:
    """Create the durable consumer, or update it (creating one that exists with the same
    config is a no-op)."""

    async def create() -> None:
        await js.add_consumer(stream, config)

    await _until_answered(create, f"consumer {config.durable_name} of {stream}", patience)


async def _ensure_stream(js: JetStreamContext, config: js_api.StreamConfig) -> None:
    name = config.name or ""
    try:
        info = await js.stream_info(name)
    except NotFoundError:
        try:
            await js.add_stream(config)
            log.info("created stream %s (%s replica(s))", name, config.num_replicas or 1)
            return
        except BadRequestError:
            log.info("stream %s was created meanwhile", name)
            info = await js.stream_info(name)
    if not _covers(info.config, config):
        await js.update_stream(config)
        log.info("updated stream %s to this version's config", name)


def _covers(existing: js_api.StreamConfig, wanted: js_api.StreamConfig) -> bool:
    """Every field tocsin sets has the value it wants (the server fills in the rest)."""
    have = existing.as_dict()
    return all(have.get(key) == value for key, value in wanted.as_dict().items())


async def _until_answered(step: Callable[[], Awaitable[None]], what: str, patience: float) -> None:
    """Run ``step`` again while JetStream gives no answer in time or says it is busy.

    On a cluster, a stream or consumer that several processes create at once can leave
    requests unanswered while its Raft group forms (measured: every one of three
    concurrent starts timed out), and a leader election does the same for seconds.
    Every step is idempotent, so asking again is safe."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    delay = 0.25
    while True:
        try:
            await step()
            return
        except (NatsTimeout, ServiceUnavailableError) as error:
            if loop.time() + delay > deadline:
                raise
            log.info(
                "%s: JetStream did not answer (%s); asking again in %.2fs",
                what,
                type(error).__name__,
                delay,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


@dataclass(frozen=True, slots=True)
class Outbound:
    """A message to publish to a stream and see acknowledged (PubAck)."""

    subject: str
    payload: bytes
    msg_id: str
    headers: dict[str, str] | None = None


class _PubAck(msgspec.Struct):
    """What JetStream answers a publish: the stream and seq, or an error."""

    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    error: dict[str, object] | None = None


_puback_decoder = msgspec.json.Decoder(_PubAck)


class Publisher:
    """Publishes to JetStream and collects the PubAcks on one wildcard inbox.

    ``js.publish`` makes a request per message (a future, a timer, a JSON parse into a
    dataclass): ~30 us each, most of the router's publishing cost. Here a batch is plain
    publishes whose reply subjects are tokens under one subscription, and one deadline
    covers the batch. The subscription is made on first use; nats-py restores it after
    a reconnect.
    """

    def __init__(self, nc: NATS) -> None:
        self._nc = nc
        self._prefix = nc.new_inbox() + "."
        self._waiting: dict[str, asyncio.Future[bool]] = {}
        self._next = 0
        self._sub: Subscription | None = None
        self._starting: asyncio.Lock = asyncio.Lock()

    async def _ensure_subscribed(self) -> None:
        if self._sub is None:
            async with self._starting:
                if self._sub is None:
                    self._sub = await self._nc.subscribe(self._prefix + "*", cb=self._on_ack)

    async def _on_ack(self, msg: Msg) -> None:
        waiting = self._waiting.pop(msg.subject[len(self._prefix) :], None)
        if waiting is None or waiting.done():
            return  # answered after its deadline
        if not msg.data:  # a status message: 503 no responders (no stream for the subject)
            status = (msg.headers or {}).get("Status", "?")
            log.warning("publish not stored: status %s", status)
            waiting.set_result(False)
            return
        try:
            ack = _puback_decoder.decode(msg.data)
        except msgspec.DecodeError:
            waiting.set_result(False)
            return
        if ack.error is not None:
            log.warning("publish not stored: %s", ack.error.get("description", ack.error))
        waiting.set_result(ack.error is None and ack.seq > 0)

    async def publish(self, messages: Sequence[Outbound], timeout: float = 5.0) -> list[bool]:
        """Publish ``messages``; ``True`` for each message JetStream stored (or
        recognised as a duplicate of one it stored) within ``timeout`` seconds."""
        if not messages:
            return []
        await self._ensure_subscribed()
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[bool]] = []
        tokens: list[str] = []
        for message in messages:
            self._next += 1
            token = str(self._next)
            future: asyncio.Future[bool] = loop.create_future()
            self._waiting[token] = future
            futures.append(future)
            tokens.append(token)
            headers = {MSG_ID: message.msg_id, **(message.headers or {})}
            try:
                await self._nc.publish(
                    message.subject, message.payload, reply=self._prefix + token, headers=headers
                )
            except Exception as error:  # closed or draining: the rest would fail alike
                log.warning("publish to %s failed: %s", message.subject, error)
                future.set_result(False)
                break
        if futures:
            await asyncio.wait(futures, timeout=timeout)
        results = [f.done() and not f.cancelled() and f.result() for f in futures]
        for token in tokens:
            self._waiting.pop(token, None)
        results += [False] * (len(messages) - len(results))
        if not all(results):
            log.warning(
                "%d of %d publishes not stored (refused, or no PubAck within %.1fs)",
                results.count(False),
                len(results),
                timeout,
            )
        return results

    async def close(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):  # closing anyway
                await self._sub.unsubscribe()
            self._sub = None


def _ack_tokens(msg: Msg) -> tuple[str, str, str]:
    """(times delivered, stream seq, stored at in ns) from a JetStream message's reply subject:
    ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>`` or the
    newer form with domain and account hash after ``ACK``. nats-py's ``msg.metadata``
    builds a dataclass and a datetime for the same numbers (~10 us a message)."""
    tokens = (msg.reply or "").split(".")
    if len(tokens) == 9:
        return tokens[4], tokens[5], tokens[7]
    if len(tokens) >= 11:
        return tokens[6], tokens[7], tokens[9]
    raise ValueError(f"not a JetStream message (reply subject {msg.reply!r})")


def stream_seq(msg: Msg) -> int:
    return int(_ack_tokens(msg)[1])


def delivery_count(msg: Msg) -> int:
    return int(_ack_tokens(msg)[0])


def stored_at(msg: Msg) -> float:
    """When the stream stored ``msg``: Unix time in seconds."""
    return int(_ack_tokens(msg)[2]) / 1e9


class Puller:
    """A pull consumer read through one persistent inbox.

    One ``MSG.NEXT`` request is outstanding at a time; it is renewed the moment it is
    filled or ends (status 408/409/404). With ``prefetch`` it is renewed as soon as it is
    filled, so the server streams the next batch while the caller works on this one;
    without, the next request waits for the next ``take`` and asks only for what the
    caller has room for (delivery workers keep pending work in the stream).
    """

    def __init__(
        self,
        nc: NATS,
        stream: str,
        consumer: str,
        batch: int,
        *,
        prefetch: bool,
        expires: float = 5.0,
    ) -> None:
        self._nc = nc
        self._subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._batch = batch
        self._expires = expires
        self._prefetch = prefetch
        self._inbox = nc.new_inbox()
        self._queue: collections.deque[Msg] = collections.deque()
        self._arrived = asyncio.Event()
        self._credit = 0
        self._requested_at = 0.0
        self._sub: Subscription | None = None

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(self._inbox, cb=self._on_message)

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):  # closing anyway
                await self._sub.unsubscribe()
            self._sub = None

    async def _on_message(self, msg: Msg) -> None:
        self._queue.append(msg)
        self._arrived.set()

    async def _request(self, size: int) -> None:
        payload = msgspec.json.encode({"batch": size, "expires": int(self._expires * 1e9)})
        self._credit = size
        self._requested_at = time.monotonic()
        await self._nc.publish(self._subject, payload, reply=self._inbox)

    async def take(self, limit: int | None = None, wait: float = 1.0) -> list[Msg]:
        """Messages that arrived (at most ``limit``), waiting up to ``wait`` seconds for
        the first. Status messages are consumed here and never returned."""
        size = min(self._batch, limit) if limit else self._batch
        if size <= 0:
            return []
        stale = time.monotonic() - self._requested_at > self._expires + 2.0
        if self._credit <= 0 or (stale and not self._queue):
            await self._request(size)
        if not self._queue:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), wait)
            except TimeoutError:
                return []
        out: list[Msg] = []
        while self._queue and len(out) < size:
            msg = self._queue.popleft()
            if not msg.data and msg.headers and "Status" in msg.headers:
                if msg.headers["Status"] != "100":
                    self._credit = 0
                continue
            self._credit -= 1
            out.append(msg)
        if self._prefetch and self._credit <= 0:
            await self._request(size)
        return out


async def ack_all(nc: NATS, msgs: Sequence[Msg], body: bytes = ACK) -> None:
    """Acknowledge (or TERM / progress) messages with plain publishes."""
    for msg in msgs:
        if msg.reply:
            await nc.publish(msg.reply, body)


async def nak(nc: NATS, msg: Msg, delay: float) -> None:
    """Redeliver ``msg`` after ``delay`` seconds (JetStream's ``-NAK {"delay"}``)."""
    if msg.reply:
        body = b"-NAK " + msgspec.json.encode({"delay": int(max(0.0, delay) * 1e9)})
        await nc.publish(msg.reply, body)
