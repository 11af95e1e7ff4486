"""Session fixtures: one real nats-server (JetStream, temp store) for the whole run,
with the streams reset before each test that uses it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from aiosmtpd.controller import Controller
from nats.js.errors import NotFoundError

from tests.support import HttpSink, Mailbox, NatsServer, Rig, authenticate, free_port
from tocsin.bus.streams import ensure_streams
from tocsin.core.subjects import (
    DELIVERED_SEQ_BUCKET,
    STREAM_ANCHOR,
    STREAM_IN,
    STREAM_OUT,
    STREAM_PART,
    STREAM_WORK,
)
from tocsin.store.eventlog import db_path
from tocsin.store.ledger import Ledger


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path_factory.mktemp("jetstream"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def nats_url(nats_server: NatsServer) -> AsyncIterator[str]:
    """The session server's URL, with tocsin's streams (and its key-value bucket)
    deleted so each test starts clean."""
    if nats_server.process is None or nats_server.process.poll() is not None:
        nats_server.start()
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    for name in (
        STREAM_IN,
        STREAM_WORK,
        STREAM_OUT,
        STREAM_ANCHOR,
        STREAM_PART,
        f"KV_{DELIVERED_SEQ_BUCKET}",
    ):
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(name)
    await nc.close()
    return nats_server.url


@pytest.fixture
async def sink() -> AsyncIterator[HttpSink]:
    receiver = HttpSink()
    await receiver.start()
    yield receiver
    await receiver.stop()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 that keeps what it receives."""
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(
        mailbox, hostname="127.0.0.1", port=port, authenticator=authenticate, auth_require_tls=False
    )
    controller.start()
    yield mailbox, port
    controller.stop()


@pytest.fixture
async def rig(nats_url: str, tmp_path: Path) -> AsyncIterator[Rig]:
    """A router wired to real NATS and a real log in ``tmp_path``, driven by hand."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_streams(js)
    ledger = await Ledger.open(db_path(tmp_path), busy_timeout_ms=100)
    made = Rig(nc, js, ledger)
    await made.puller.start()
    yield made
    await made.puller.stop()
    await ledger.close()
    await nc.close()
