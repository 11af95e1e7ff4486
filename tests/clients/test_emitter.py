"""tocsin-client against real parts: a nats-server with JetStream (the session's, or one of
the test's own that it stops and starts), a real tocsin in this process, spool files in
the test's tmp directory. The library must never raise, never block past its timeout,
lose nothing across an outage and duplicate nothing after it."""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest

import tocsin_client
from tests.support import HttpSink, NatsServer, Tocsin, free_port, wait_until, webhook_config
from tocsin.bus.streams import ensure_streams
from tocsin.core.subjects import MSG_ID, STREAM_IN
from tocsin_client import (
    AlertDispatcher,
    AlertEmitter,
    AlertEmitterConfig,
    Emitter,
    NoopAlertDispatcher,
    Spool,
    ThresholdSignal,
    TocsinDispatcher,
)

CLIENT = Path(__file__).resolve().parents[2] / "clients" / "python"
SLACK = 0.5  # what a loaded 2-core machine may add to a bounded wait


async def stored(url: str) -> list[tuple[dict[str, Any], dict[str, str]]]:
    """Every message in TOCSIN_IN, in stream order: (body, headers)."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        state = (await js.stream_info(STREAM_IN)).state
        out = []
        for seq in range(state.first_seq, state.last_seq + 1) if state.messages else ():
            message = await js.get_msg(STREAM_IN, seq)
            out.append((msgspec.json.decode(message.data), dict(message.headers or {})))
        return out
    finally:
        await nc.close()


async def streams(url: str) -> None:
    nc = await nats.connect(url)
    try:
        await ensure_streams(nc.jetstream())
    finally:
        await nc.close()


@pytest.fixture
async def up(nats_url: str) -> str:
    """The session's nats-server with tocsin's streams, as ``tocsin serve`` makes them."""
    await streams(nats_url)
    return nats_url


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server of this test's own, to stop and start (not the session's)."""
    server = NatsServer(tmp_path / "jetstream")
    yield server
    server.stop()


@pytest.fixture
async def emitter(up: str, tmp_path: Path) -> AsyncIterator[Emitter]:
    made = Emitter(up, spool=tmp_path / "spool.jsonl", source="billing")
    yield made
    await made.aclose()


def emitter_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("tocsin-client")}


async def test_an_emit_is_stored_with_its_event_id_and_acked(emitter: Emitter, up: str) -> None:
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    ok = await emitter.emit_async(
        "critical",
        "payments down",
        "502 from the card processor",
        {"region": "eu"},
        labels={"team": "pay"},
        traceparent=tp,
    )
    assert ok is True
    [(body, headers)] = await stored(up)
    assert headers[MSG_ID] == body["event_id"]
    assert headers["traceparent"] == tp
    assert body["severity"] == "critical"
    assert body["summary"] == "payments down"
    assert body["details"] == {"message": "502 from the card processor", "region": "eu"}
    assert body["labels"] == {"team": "pay"}
    assert emitter.spool.entries(time.monotonic() + 1) == []  # acked, so forgotten


async def test_with_nats_down_it_returns_false_in_time_spools_and_leaves_no_thread(
    own_nats: NatsServer, tmp_path: Path
) -> None:
    """Catches an emit that raises, hangs, or loses the event while NATS is down, and a
    thread per call: the emitter has its threads, and none outlives ``close``."""
    before = emitter_threads()
    emitter = Emitter(own_nats.url, spool=tmp_path / "spool.jsonl", timeout=1.0)
    results = []
    for n in range(5):
        started = time.monotonic()
        results.append(await asyncio.to_thread(emitter.emit, "error", f"outage {n}", "m"))
        assert time.monotonic() - started < 1.0 + SLACK
    assert results == [False] * 5
    spooled = emitter.spool.entries(time.monotonic() + 1)
    assert [msgspec.json.decode(e.payload)["summary"] for e in spooled] == [
        f"outage {n}" for n in range(5)
    ]
    assert len(emitter_threads() - before) <= 3  # the loop, the spool's I/O, a resolver
    await emitter.aclose()
    await wait_until(lambda: not (emitter_threads() - before), 5, "the emitter's threads to end")


async def test_a_server_that_never_answers_does_not_hold_the_caller(tmp_path: Path) -> None:
    """A listener that accepts and says nothing (a hung broker, a black hole): the
    connect would wait for ever; the caller gets False at its timeout."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"nats://127.0.0.1:{silent.getsockname()[1]}"
        emitter = Emitter(url, spool=tmp_path / "spool.jsonl")
        started = time.monotonic()
        ok = await asyncio.to_thread(emitter.emit, "critical", "t", timeout=0.5)
        assert ok is False
        assert time.monotonic() - started < 0.5 + SLACK
        started = time.monotonic()
        assert await emitter.emit_async("critical", "t2", timeout=0.5) is False
        assert time.monotonic() - started < 0.5 + SLACK
        assert len(emitter.spool.entries(time.monotonic() + 1)) == 2
        await emitter.aclose()


async def test_after_an_outage_flush_delivers_each_event_once_in_order(
    own_nats: NatsServer, tmp_path: Path
) -> None:
    """The outage loses nothing (every spooled event reaches tocsin, in order, with its
    original event_id) and duplicates nothing: events re-sent after their ack was lost
    (put back in the spool) are counted once by a real tocsin."""
    own_nats.start()
    await streams(own_nats.url)
    own_nats.stop()
    emitter = Emitter(own_nats.url, spool=tmp_path / "spool.jsonl", timeout=1.0)
    for n, severity in enumerate(["critical", "info", "warning"]):
        assert await emitter.emit_async(severity, f"during outage {n}") is False
    spooled = emitter.spool.entries(time.monotonic() + 1)
    own_nats.start()
    service = await Tocsin(tmp_path / "data", own_nats.url).start()
    try:
        assert await emitter.flush_async() is True
        assert emitter.spool.entries(time.monotonic() + 1) == []
        for entry in spooled:  # as if the acks had been lost before the spool forgot them
            emitter.spool.add(entry, time.monotonic() + 1)
        assert await emitter.emit_async("info", "after the outage") is True  # flushes first
        # The router reads the stream in order: once the last event is in, any duplicate
        # of the three before it would be in too.
        await wait_until(lambda: service.count("alert.received") >= 4, 10, "4 received")
        received = service.events("alert.received")
    finally:
        await service.stop()
        await emitter.aclose()
    ids = [entry.event_id for entry in spooled]
    assert [e["event_id"] for e in received[:3]] == ids
    assert [e["summary"] for e in received] == [
        "during outage 0",
        "during outage 1",
        "during outage 2",
        "after the outage",
    ]


async def test_the_next_successful_emit_sends_the_spool_first(
    own_nats: NatsServer, tmp_path: Path
) -> None:
    own_nats.start()
    await streams(own_nats.url)
    own_nats.stop()
    emitter = Emitter(own_nats.url, spool=tmp_path / "spool.jsonl", timeout=1.0)
    assert await emitter.emit_async("warning", "first") is False
    own_nats.start()
    try:
        assert await emitter.emit_async("warning", "second") is True
        assert [body["summary"] for body, _ in await stored(own_nats.url)] == ["first", "second"]
    finally:
        await emitter.aclose()


async def test_a_full_spool_drops_the_oldest_info_first_and_never_a_critical(
    tmp_path: Path,
) -> None:
    dead = f"nats://127.0.0.1:{free_port()}"
    emitter = Emitter(dead, spool=tmp_path / "spool.jsonl", spool_max_events=3, timeout=1.0)
    try:
        for severity, title in [
            ("info", "i1"),
            ("critical", "c1"),
            ("info", "i2"),
            ("warning", "w1"),
            ("critical", "c2"),
            ("critical", "c3"),
            ("critical", "c4"),
        ]:
            assert await emitter.emit_async(severity, title) is False
        kept = [
            msgspec.json.decode(e.payload)["summary"]
            for e in emitter.spool.entries(time.monotonic() + 1)
        ]
    finally:
        await emitter.aclose()
    # i1 went at i2's arrival... no: at w1's (4 > 3); i2 at c2's; w1 at c3's; then only
    # criticals are left and none is dropped, past the bound.
    assert kept == ["c1", "c2", "c3", "c4"]


class Unstringable:
    def __str__(self) -> str:
        raise RuntimeError("no text for you")


async def test_bad_arguments_never_raise(
    emitter: Emitter, caplog: pytest.LogCaptureFixture
) -> None:
    """What cannot even be made text is logged and answered False; what is merely odd
    is bent and sent (True)."""
    with caplog.at_level(logging.ERROR, "tocsin_client"):
        assert await asyncio.to_thread(emitter.emit, "info", Unstringable()) is False
        assert await asyncio.to_thread(emitter.emit, "info", "t", timeout="soon") is False
        assert await emitter.emit_async("info", "t", None, {"x": Unstringable()}) is False
        assert await emitter.emit_async(None, None, None, ["not", "a", "dict"]) is True
        assert await emitter.emit_async(object(), 42, b"bytes", labels=["x"]) is True
    assert sum("emit failed" in r.message for r in caplog.records) == 3
    assert not NoopAlertDispatcher().send_alert(Unstringable(), severity="x")


async def test_twenty_threads_share_one_emitter(emitter: Emitter, up: str) -> None:
    results: list[bool] = []
    lock = threading.Lock()

    def send(n: int) -> None:
        ok = emitter.emit("warning", f"thread {n}", "m")
        with lock:
            results.append(ok)

    def run_all() -> None:
        threads = [threading.Thread(target=send, args=(n,)) for n in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)

    await asyncio.to_thread(run_all)
    assert results == [True] * 20
    bodies = [body for body, _ in await stored(up)]
    assert sorted(b["summary"] for b in bodies) == sorted(f"thread {n}" for n in range(20))
    assert len({b["event_id"] for b in bodies}) == 20


async def test_from_inside_a_running_event_loop(up: str, tmp_path: Path, monkeypatch: Any) -> None:
    """The sync call works from a coroutine (it cannot deadlock: the connection has its
    own loop), and the async one lets the caller's loop run while it waits."""
    monkeypatch.setenv("TOCSIN_NATS_URL", up)
    monkeypatch.setenv("TOCSIN_SPOOL", str(tmp_path / "spool.jsonl"))
    monkeypatch.setattr(tocsin_client, "_default", None)
    try:
        assert tocsin_client.emit_alert("error", "from a coroutine", "m") is True
        emitter = tocsin_client.default_emitter()
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        # The ticker never waits, so the emitter's threads get the GIL only at the
        # interpreter's switch interval (5 ms): the emits' hand-offs and their publishes
        # outlasted the default 2 s once in a full run on a loaded machine. This test is
        # about the caller's loop running meanwhile, not about the timeout.
        emitter.timeout = 10.0
        beating = asyncio.create_task(ticker())
        results = await asyncio.gather(*(emitter.emit_async("info", f"a{n}") for n in range(10)))
        beating.cancel()
        assert results == [True] * 10
        assert ticks > 10  # the caller's loop kept running meanwhile
        assert tocsin_client.flush() is True
    finally:
        default = tocsin_client._default
        if default is not None:
            await default.aclose()
    assert len(await stored(up)) == 11


async def test_threshold_near_then_breach_is_one_alert_escalated(
    nats_url: str, tmp_path: Path, sink: HttpSink
) -> None:
    """One signal near, then past its threshold: a warning then a critical of one alert
    (routed firing, then escalated), not two alerts; a third alert of the run is not
    sent (max_per_run=2)."""
    service = await Tocsin(tmp_path / "data", nats_url, webhook_config(sink.url)).start()
    emitter = Emitter(nats_url, spool=tmp_path / "spool.jsonl")
    alerts = AlertEmitter(emitter, AlertEmitterConfig(max_per_run=2))
    signal = ThresholdSignal(
        metric="exposure", value=92.0, threshold=100.0, run_id="run-1", entity_id="acct-7"
    )
    try:
        assert await asyncio.to_thread(alerts.emit_near_threshold, signal) is True
        breach = ThresholdSignal(
            metric="exposure", value=104.0, threshold=100.0, run_id="run-1", entity_id="acct-7"
        )
        assert await asyncio.to_thread(alerts.emit_breach, breach, "trading halted") is True
        other = ThresholdSignal(metric="latency", value=9, threshold=10, run_id="run-1")
        assert await asyncio.to_thread(alerts.emit_near_threshold, other) is False
        await wait_until(lambda: service.count("alert.routed") == 2, 10, "two routed")
        received = service.events("alert.received")
        routed = service.events("alert.routed")
    finally:
        await service.stop()
        await emitter.aclose()
    assert [e["type"] for e in received] == ["threshold.near", "threshold.breach"]
    assert [e["severity"] for e in received] == ["warning", "critical"]
    assert received[0]["alert_id"] == received[1]["alert_id"]
    assert received[1]["details"] == {
        "metric": "exposure",
        "value": 104.0,
        "threshold": 100.0,
        "ratio": 1.04,
        "run_id": "run-1",
        "entity_id": "acct-7",
        "action_taken": "trading halted",
    }
    assert received[0]["labels"] == {"metric": "exposure", "entity_id": "acct-7"}
    assert [e["reason"] for e in routed] == ["firing", "escalated"]
    assert service.count("alert.opened") == 1


async def test_the_dispatchers(emitter: Emitter, up: str) -> None:
    tocsin = TocsinDispatcher(emitter)
    noop = NoopAlertDispatcher()
    assert isinstance(tocsin, AlertDispatcher)
    assert isinstance(noop, AlertDispatcher)
    assert noop.send_alert({"title": "x"}, severity="critical") is False
    event = {
        "title": "queue stuck",
        "message": "no progress for 5 min",
        "context": {"q": "a"},
        "type": "queue_stuck",
        "labels": {"queue": "a"},
        "attempt": 3,
    }
    assert (
        await asyncio.to_thread(tocsin.send_alert, event, severity="critical", channel="pager")
        is True
    )
    assert await asyncio.to_thread(tocsin.send_alert, "plain title", severity="warn") is True
    [(first, _), (second, _)] = await stored(up)  # the no-op sent nothing
    assert first["type"] == "queue_stuck"
    assert first["summary"] == "queue stuck"
    assert first["labels"] == {"queue": "a", "channel": "pager"}
    assert first["details"] == {"message": "no progress for 5 min", "q": "a", "attempt": 3}
    assert (second["summary"], second["severity"]) == ("plain title", "warning")


def test_processes_share_one_spool_without_losing_a_line(tmp_path: Path) -> None:
    """Two processes and their threads append to one spool at once (the file lock):
    every event is there once, every line whole."""
    path = tmp_path / "spool.jsonl"
    script = (
        "import sys, threading, time\n"
        "from tocsin_client.spool import Entry, Spool\n"
        "spool = Spool(sys.argv[1], max_events=10_000)\n"
        "def add(t):\n"
        "    for n in range(25):\n"
        "        e = Entry(f'{sys.argv[2]}-{t}-{n}', 'info', 'alerts.in.x', '{}')\n"
        "        spool.add(e, time.monotonic() + 30)\n"
        "ts = [threading.Thread(target=add, args=(t,)) for t in range(4)]\n"
        "[t.start() for t in ts]; [t.join() for t in ts]\n"
    )
    env = {"PYTHONPATH": str(CLIENT / "src")}
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(path), name], env=env)
        for name in ("a", "b")
    ]
    assert [p.wait(60) for p in procs] == [0, 0]
    ids = [e.event_id for e in Spool(path).entries(time.monotonic() + 5)]
    assert len(ids) == 200
    assert len(set(ids)) == 200


def test_the_client_imports_nothing_of_the_service() -> None:
    """It installs alone: importing it (and using it) pulls in no ``tocsin`` module."""
    code = (
        "import sys, tocsin_client\n"
        "tocsin_client.Emitter('nats://127.0.0.1:1', spool='/dev/null/x')\n"
        "bad = sorted(m for m in sys.modules if m == 'tocsin' or m.startswith('tocsin.'))\n"
        "assert not bad, bad\n"
    )
    env = {"PYTHONPATH": str(CLIENT / "src")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_package_builds_with_its_two_dependencies_and_its_types(tmp_path: Path) -> None:
    """``pip install ./clients/python`` works: a wheel builds (pip fetches the build
    backend from PyPI, as ``make test`` does for the service), holds ``py.typed`` and
    depends on nats-py and msgspec only."""
    import shutil
    import zipfile

    source = tmp_path / "source"  # setuptools builds in the tree: not in the repository's
    shutil.copytree(CLIENT, source, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "-w",
            str(tmp_path),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    [wheel] = tmp_path.glob("tocsin_client-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        [metadata] = [n for n in names if n.endswith("METADATA")]
        requires = [
            line.split(":", 1)[1].strip()
            for line in archive.read(metadata).decode().splitlines()
            if line.startswith("Requires-Dist:")
        ]
    assert "tocsin_client/py.typed" in names
    assert sorted(requires) == ["msgspec>=0.18", "nats-py>=2.9"]
    assert not [n for n in names if n.startswith("tocsin/")]
