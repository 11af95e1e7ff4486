"""`tocsin serve` with its delivery workers in child processes (``[delivery] processes``):
real `tocsin serve` processes, their real children, a real webhook receiver.

Each test says what it catches: a child that is not started again, a Ctrl-C that
leaves children behind or loses their last outcomes, children orphaned by a killed
parent, a reload the children never hear of, figures measured in a child that never
reach /metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from tests.support import (
    HttpSink,
    Serve,
    alive,
    children_of,
    log_count,
    log_events,
    metric,
    publish_many,
    wait_until,
    webhook_config,
)
from tocsin.channels import DEFAULT_CONCURRENCY
from tocsin.store.eventlog import db_path

# Delivery by the child alone: each test below but one is about what the children do,
# which serve's own workers (``in_serve``, on by default) would otherwise cover for.
CHILDREN = "\n[delivery]\nprocesses = 1\nin_serve = false\n"
# A crash leaves sends unacked: short waits bring them back in seconds.
SHORT_ACK_WAIT = '\n[nats]\nack_wait = "2s"\n'


def delivery_children(pid: int) -> set[int]:
    """The live ``tocsin ... deliver`` children of ``pid``, from /proc."""
    return children_of(pid, b"deliver")


async def shows(api: str, name: str, expected: float) -> bool:
    return await metric(api, name) == expected


async def test_a_killed_child_is_started_again_and_every_notification_arrives(
    nats_url: str, sink: HttpSink, tmp_path: Path
) -> None:
    """Catches a supervisor that lets a dead child stay dead (delivery would stop until
    serve restarts), one that does not say which child died and how, and sends repeated
    beyond DESIGN §2.4 (only those in flight when the child died, at most its
    concurrency, may go twice)."""
    data, config = tmp_path / "data", tmp_path / "tocsin.toml"
    config.write_text(webhook_config(sink.url, timeout="1s") + SHORT_ACK_WAIT + CHILDREN)
    log_file = tmp_path / "serve.log"
    serve = await Serve(data, nats_url, config, stderr=log_file, log_level="info").start()
    try:
        first = await wait_until(lambda: delivery_children(serve.pid), 20, "the child")
        assert len(first) == 1
        total = 300
        publishing = asyncio.create_task(publish_many(nats_url, total, "k"))
        await wait_until(lambda: len(sink.requests) >= 20, 30, "the child delivering")
        os.kill(next(iter(first)), signal.SIGKILL)
        again = await wait_until(
            lambda: delivery_children(serve.pid) - first, 20, "a new child in its place"
        )
        assert len(again) == 1
        await publishing
        db = db_path(data)
        await wait_until(
            lambda: log_count(db, "delivery.succeeded") == total, 60, "every notification"
        )
        routed = {e["notification_id"] for e in log_events(db, "alert.routed")}
        keys = Counter(r.headers["idempotency-key"] for r in sink.requests)
        assert set(keys) == routed
        twice = [key for key, n in keys.items() if n > 1]
        assert len(twice) <= DEFAULT_CONCURRENCY, f"{len(twice)} sent twice: more than in flight"
        assert await metric(serve.api, "tocsin_delivery_process_restarts_total") == 1
        assert await metric(serve.api, "tocsin_delivery_processes") == 1
    finally:
        assert await serve.stop() == 0
    said = log_file.read_text()
    assert "killed by SIGKILL; starting it again" in said
    assert "Traceback" not in said


async def test_one_ctrl_c_stops_serve_and_its_children_in_order(
    nats_url: str, sink: HttpSink, tmp_path: Path
) -> None:
    """SIGINT to serve's process group (a terminal's Ctrl-C) while sends are in flight:
    exit 0, no traceback, no child left, and every send the receiver answered is in
    the log. Catches children that die with the terminal's signal instead of draining,
    children left running, and a recorder stopped before the children's last outcomes
    (it must stop after them, or the log misses what the receiver got)."""
    data, config = tmp_path / "data", tmp_path / "tocsin.toml"
    config.write_text(webhook_config(sink.url) + CHILDREN)
    sink.delay = 0.3  # sends in flight when the signal comes
    log_file = tmp_path / "serve.log"
    serve = Serve(data, nats_url, config, stderr=log_file, log_level="info", own_group=True)
    serve.env.pop("TOCSIN_EVENT_LOOP", None)  # the default loop, whatever this shell says
    await serve.start()
    children = await wait_until(lambda: delivery_children(serve.pid), 20, "the child")
    await publish_many(nats_url, 60, "c")
    await wait_until(lambda: len(sink.requests) >= 10, 30, "sends under way")
    os.killpg(serve.pid, signal.SIGINT)
    assert await serve.wait() == 0
    for pid in children:
        await wait_until(lambda pid=pid: not alive(pid), 10, f"child {pid} to exit")
    answered = {r.headers["idempotency-key"] for r in sink.requests}
    logged = {e["notification_id"] for e in log_events(db_path(data), "delivery.succeeded")}
    assert answered == logged
    said = log_file.read_text()
    assert "Traceback" not in said
    assert "KeyboardInterrupt" not in said
    # The default loop is uvloop, in the children too: a child started with an argument
    # uvloop refuses (process_group) would never have started at all.
    assert ready_loops(said) == ["uvloop", "uvloop"]


# serve beside its one child (``in_serve`` on by default); what a stopped child had
# pulled comes back after a short ack wait
BESIDE = SHORT_ACK_WAIT + "\n[delivery]\nprocesses = 1\n"


@contextlib.asynccontextmanager
async def beside_a_stopped_child(
    nats_url: str, tmp_path: Path, url: str
) -> AsyncIterator[tuple[Path, Path, str]]:
    """``tocsin serve`` with one delivery child and ``in_serve`` on (the default),
    webhooks to ``url``, whose child is stopped (SIGSTOP: alive, pulling and sending
    nothing) while the block runs, so only serve's own workers deliver; yields the data
    dir, the config file and serve's API. Then the child is killed (what it had pulled
    was sent by serve meanwhile and must not go again), its replacement waited for, and
    serve stopped: exit 0, no traceback in its log, whose ready line said where delivery
    runs."""
    data, config = tmp_path / "data", tmp_path / "tocsin.toml"
    config.write_text(webhook_config(url) + BESIDE)
    log_file = tmp_path / "serve.log"
    serve = await Serve(data, nats_url, config, stderr=log_file, log_level="info").start()
    try:
        (child,) = await wait_until(lambda: delivery_children(serve.pid), 20, "the child")
        os.kill(child, signal.SIGSTOP)
        try:
            yield data, config, serve.api
        finally:
            os.kill(child, signal.SIGKILL)
        await wait_until(
            lambda: delivery_children(serve.pid) - {child}, 20, "a new child in its place"
        )
    finally:
        assert await serve.stop() == 0
    said = log_file.read_text()
    assert "Traceback" not in said
    assert "delivery in 1 child process(es) and in this one;" in said  # the ready line


async def test_serve_delivers_beside_its_child_by_default(
    nats_url: str, sink: HttpSink, tmp_path: Path
) -> None:
    """With its child stopped, every notification still arrives, sent by serve's own
    workers (``[delivery] in_serve``, on by default): catches serve leaving delivery to
    the children alone, whose backlog then waits on one core while serve's idles
    (issue #20). What the stopped child had pulled comes back to serve after the ack
    wait and is sent once the router says it was not."""
    async with beside_a_stopped_child(nats_url, tmp_path, sink.url) as (data, _, _):
        total = 20
        await publish_many(nats_url, total, "beside")
        db = db_path(data)
        await wait_until(
            lambda: log_count(db, "delivery.succeeded") == total, 30, "every notification"
        )
        routed = {e["notification_id"] for e in log_events(db, "alert.routed")}
        assert {r.headers["idempotency-key"] for r in sink.requests} == routed


async def test_a_reload_reaches_serves_own_workers_beside_its_child(
    nats_url: str, sink: HttpSink, tmp_path: Path
) -> None:
    """``POST /-/reload`` with a new receiver URL while the child is stopped, so only
    serve's own workers can send: the next notification goes to the new URL. Catches a
    reload told to the children only once serve delivers beside them (serve's workers
    would keep the old URL until restarted). The stopped child never confirms the
    reload: the answer comes after its patience, and the log says so."""
    other = HttpSink()
    await other.start()
    try:
        async with beside_a_stopped_child(nats_url, tmp_path, sink.url) as (_, config, api):
            config.write_text(webhook_config(other.url) + BESIDE)
            async with httpx.AsyncClient(timeout=30) as client:
                answer = await client.post(f"{api}/-/reload")
            assert answer.status_code == 200, answer.text
            await publish_many(nats_url, 1, "after")
            await wait_until(lambda: len(other.requests) == 1, 20, "sent to the new URL")
            assert sink.requests == []
        assert "did not confirm the reload" in (tmp_path / "serve.log").read_text()
    finally:
        await other.stop()


def ready_loops(said: str) -> list[str]:
    """The event loop each process's ready line names (serve's and each child's)."""
    return [
        line.rsplit("event loop: ", 1)[1].split(")", 1)[0]
        for line in said.splitlines()
        if " ready; " in line
    ]


async def test_the_children_run_on_the_event_loop_serve_was_told_to(
    nats_url: str, sink: HttpSink, tmp_path: Path
) -> None:
    """``TOCSIN_EVENT_LOOP=asyncio`` turns uvloop off in serve and in every child it
    starts. Catches a setting that stops at serve's own process (the children would
    run on the default loop: a measurement of asyncio that measured a mix)."""
    data, config = tmp_path / "data", tmp_path / "tocsin.toml"
    config.write_text(webhook_config(sink.url) + CHILDREN)
    log_file = tmp_path / "serve.log"
    serve = Serve(data, nats_url, config, stderr=log_file, log_level="info")
    serve.env["TOCSIN_EVENT_LOOP"] = "asyncio"
    await serve.start()
    try:
        await wait_until(
            lambda: len(ready_loops(log_file.read_text())) == 2, 20, "the child's ready line"
        )
        await publish_many(nats_url, 1, "loop")
        await wait_until(lambda: len(sink.requests) == 1, 20, "the child delivering")
    finally:
        assert await serve.stop() == 0
    assert ready_loops(log_file.read_text()) == ["asyncio", "asyncio"]


async def test_children_of_a_killed_serve_exit(
    nats_url: str, sink: HttpSink, tmp_path: Path
) -> None:
    """Catches children orphaned by a SIGKILLed serve (nothing would ever stop them:
    they would keep taking work with nobody recording it, and hold the old config)."""
    data, config = tmp_path / "data", tmp_path / "tocsin.toml"
    config.write_text(webhook_config(sink.url) + "\n[delivery]\nprocesses = 2\n")
    serve = await Serve(data, nats_url, config).start()
    children = await wait_until(
        lambda: len(delivery_children(serve.pid)) == 2 and delivery_children(serve.pid),
        20,
        "two children",
    )
    serve.kill()
    assert await serve.wait() == -signal.SIGKILL
    for pid in children:
        await wait_until(lambda pid=pid: not alive(pid), 10, f"child {pid} to exit")


async def test_a_reload_reaches_the_children_and_their_figures_reach_metrics(
    nats_url: str, sink: HttpSink, tmp_path: Path
) -> None:
    """``POST /-/reload`` with a new receiver URL: the next notification goes to the new
    URL. Catches a reload that swaps the settings of workers in serve's own process
    only (there are none: the children would keep the old URL until restarted). And
    the send durations the child measures show in serve's /metrics: catches figures
    kept in the child, where nobody scrapes them."""
    other = HttpSink()
    await other.start()
    try:
        data, config = tmp_path / "data", tmp_path / "tocsin.toml"
        config.write_text(webhook_config(sink.url) + CHILDREN)
        serve = await Serve(data, nats_url, config).start()
        try:
            await wait_until(lambda: delivery_children(serve.pid), 20, "the child")
            await publish_many(nats_url, 1, "before")
            await wait_until(lambda: len(sink.requests) == 1, 20, "the first notification")
            config.write_text(webhook_config(other.url) + CHILDREN)
            async with httpx.AsyncClient() as client:
                answer = await client.post(f"{serve.api}/-/reload")
            assert answer.status_code == 200, answer.text
            await publish_many(nats_url, 1, "after")
            await wait_until(lambda: len(other.requests) == 1, 20, "sent to the new URL")
            assert len(sink.requests) == 1
            sends = "tocsin_send_duration_seconds_count"
            await wait_until(lambda: shows(serve.api, sends, 2), 10, "both sends in /metrics")
        finally:
            assert await serve.stop() == 0
    finally:
        await other.stop()


def test_a_delivery_child_does_not_load_the_web_stack() -> None:
    """Catches a top-level import of the API in service.py: every delivery child
    (``tocsin deliver`` without ``--health``) would then carry the web framework and
    its server, ~10 MiB of RSS each against issue #20's RSS target, for nothing."""
    import subprocess
    import sys

    probe = (
        "import sys, tocsin.cli, tocsin.service\n"
        "print(sorted(m for m in ('litestar', 'uvicorn') if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    assert loaded == "[]"
