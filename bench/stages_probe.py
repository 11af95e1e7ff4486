"""Timestamps of a W3 event's stages inside tocsin's processes, with tracing off.

``bench/w3_phases.py --stages`` starts ``tocsin serve`` with a ``sitecustomize`` that
calls ``install()`` in every tocsin process (serve and the delivery child it starts,
which inherit ``PYTHONPATH``). ``install`` wraps, from outside, the functions a lone
event passes through and notes ``(stage, key, time.time_ns())`` in a list, written to
``$TOCSIN_STAGES/<pid>.jsonl`` when the process exits: no I/O, no span, a few µs a
stage, so tracing's own ~130 µs a span does not distort what it measures. ``key`` is
the W3 alert's summary (``w3-<n>``) found in the bytes at hand; nothing of tocsin's
code changes.

Stages, in the order an event meets them:

  in            serve: the inbound message parsed by nats-py (``Puller._on_message``)
  in_taken      serve: the router's pull hands it over (``Puller.take`` returns)
  begun         serve: the router starts deciding its batch (``Router.begin``)
  queued        serve: the batch's rows handed to the log's thread (``append_rows``)
  write_start   serve, the log's thread: the transaction starts (``_Writer.write``)
  write_end     serve, the log's thread: committed, on disk
  advanced      serve: the event loop has the commit's result (``EventLog.advance``)
  committed     serve: the router sees the commit (``Router.reached``)
  work_sent     serve: the work item's ``PUB`` queued for nats-py's flusher
  work          delivery: the work item parsed by nats-py (``Puller._on_message``)
  work_taken    delivery: its pull hands it over
  deliver       delivery: a sender starts on it (``ReceiverWorker.deliver``)
  send          delivery: checked, handed to its channel (``ReceiverWorker._send``)
  post          delivery: the POST's bytes written to the socket (``exchange``)
  published     serve: the work item's PubAck has come (``Router.reached``)

and, keyed ``-``, what a lone event may wait behind in serve: each of the recorder's
batches (``recorder_begun``) and each commit not the router's (``other_write_start``,
``other_write_end``); and, keyed ``-`` with ``<name>_start`` / ``<name>_end`` (``PERIODIC``),
the periodic work of either process: the anchor's publish, the outbox's relay and its
watermark's own batch, the consumer polls for /metrics, the delivery child's figures
sent to serve, the clock's look at what is due, a snapshot's steps on the log's thread,
the cyclic GC (``gc.callbacks``) and the metrics' scrape.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

KEY = re.compile(rb"w3-\d+")
OTHER = "-"  # the key of what is no W3 event's: the recorder's batches and commits
_records: list[tuple[str, str, int]] = []


def _note(stage: str, data: bytes | None) -> None:
    found = KEY.search(data) if data else None
    if found is not None:
        _records.append((stage, found.group().decode(), time.time_ns()))


_listened: dict[str, list[int]] = {}  # a ledger listener's name -> ns of each call


def _dump() -> None:
    directory = os.environ.get("TOCSIN_STAGES")
    if directory and _records:
        path = Path(directory) / f"{os.getpid()}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in _records))
    if directory and _listened:
        path = Path(directory) / f"{os.getpid()}.listeners.json"
        path.write_text(json.dumps(_listened))


class _TimedListeners(list):  # type: ignore[type-arg]
    """A ledger's ``listeners``, each call timed (``_listened``)."""

    def append(self, listener: Callable[..., None]) -> None:
        name = getattr(listener, "__qualname__", repr(listener))
        calls = _listened.setdefault(name, [])

        def timed(*args: Any) -> None:
            started = time.perf_counter_ns()
            listener(*args)
            calls.append(time.perf_counter_ns() - started)

        super().append(timed)


def _after(owner: Any, name: str, note: Callable[..., None]) -> None:
    """Wrap ``owner.name`` (sync) so that ``note(result, *args)`` runs after it."""
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        note(result, *args)
        return result

    setattr(owner, name, wrapped)


def _timed(owner: Any, name: str, label: str) -> None:
    """Note ``<label>_start`` and ``<label>_end`` (keyed ``OTHER``) around each call of
    ``owner.name``, sync or async."""
    import inspect

    original = getattr(owner, name)
    if inspect.iscoroutinefunction(original):

        @functools.wraps(original)
        async def waited(*args: Any, **kwargs: Any) -> Any:
            _records.append((f"{label}_start", OTHER, time.time_ns()))
            try:
                return await original(*args, **kwargs)
            finally:
                _records.append((f"{label}_end", OTHER, time.time_ns()))

        setattr(owner, name, waited)
        return

    @functools.wraps(original)
    def ran(*args: Any, **kwargs: Any) -> Any:
        _records.append((f"{label}_start", OTHER, time.time_ns()))
        try:
            return original(*args, **kwargs)
        finally:
            _records.append((f"{label}_end", OTHER, time.time_ns()))

    setattr(owner, name, ran)


def _periodic() -> None:
    """Time the periodic work of serve and the delivery child (``PERIODIC``)."""
    import gc

    from nats.js import JetStreamContext

    from tocsin.bus import anchor
    from tocsin.observability import telemetry
    from tocsin.pipeline import clock, outbox, supervisor
    from tocsin.store import ledger

    _timed(anchor.Anchor, "publish_now", "anchor")
    _timed(outbox.Outbox, "relay", "relay")
    _timed(outbox.Outbox, "write_due", "watermark")
    _timed(clock.Clock, "serve_due", "clock")
    _timed(telemetry.Metrics, "render", "scrape")
    _timed(supervisor.Link, "_send", "link")
    _timed(ledger.Ledger, "_snapshot", "snapshot")
    _timed(JetStreamContext, "consumer_info", "poll")

    def collected(phase: str, info: dict[str, int]) -> None:
        edge = "start" if phase == "start" else "end"
        _records.append((f"gc{info['generation']}_{edge}", OTHER, time.time_ns()))

    gc.callbacks.append(collected)


def install() -> None:
    from tocsin.bus import publisher, puller
    from tocsin.channels import http1
    from tocsin.pipeline import delivery, recorder, router
    from tocsin.store import eventlog, ledger

    atexit.register(_dump)
    _periodic()

    def stream_of(pulling: Any) -> str:
        return str(pulling._subject.split(".")[-2])  # $JS.API.CONSUMER.MSG.NEXT.<stream>.<c>

    arrival = {"TOCSIN_IN": "in", "TOCSIN_WORK": "work"}
    handed = {"TOCSIN_IN": "in_taken", "TOCSIN_WORK": "work_taken"}

    def arrived(_: Any, self: Any, msg: Any) -> None:
        if (stage := arrival.get(stream_of(self))) is not None:
            _note(stage, msg.data)

    _after(puller.Puller, "_on_message", arrived)

    take = puller.Puller.take

    async def taken(self: Any, *args: Any, **kwargs: Any) -> Any:
        msgs = await take(self, *args, **kwargs)
        if (stage := handed.get(stream_of(self))) is not None:
            for msg in msgs:
                _note(stage, msg.data)
        return msgs

    puller.Puller.take = taken  # type: ignore[method-assign]

    def begun(_: Any, self: Any, msgs: Any, state: Any) -> None:
        for msg in msgs:
            _note("begun", msg.data)

    _after(router.Router, "begin", begun)

    def recording(_: Any, self: Any, msgs: Any, state: Any) -> None:
        _records.append(("recorder_begun", OTHER, time.time_ns()))

    _after(recorder.Recorder, "begin", recording)

    def reached(_: Any, self: Any, pulled: Any, milestone: str) -> None:
        if milestone != "decided":
            for msg in pulled.msgs:
                _note(milestone, msg.data)

    _after(router.Router, "reached", reached)

    def routed_rows(new: Any) -> list[bytes]:
        return [row[3] for row in new.rows if row[2] == "alert.received"]

    append_rows = eventlog.EventLog.append_rows

    def queued(self: Any, new: Any, *args: Any) -> Any:
        for data in routed_rows(new):
            _note("queued", data)
        return append_rows(self, new, *args)

    eventlog.EventLog.append_rows = queued  # type: ignore[method-assign]

    def advanced(_: Any, self: Any, new: Any) -> None:
        for data in routed_rows(new):
            _note("advanced", data)

    _after(eventlog.EventLog, "advance", advanced)

    def timed_listeners(_: Any, self: Any, *args: Any, **kwargs: Any) -> None:
        self.listeners = _TimedListeners(self.listeners)

    _after(ledger.Ledger, "__init__", timed_listeners)

    if os.environ.get("TOCSIN_PROBE_NO_CHECKPOINT"):  # an experiment: no automatic checkpoint

        def no_checkpoint(_: Any, self: Any) -> None:
            self.conn.execute("PRAGMA wal_autocheckpoint=0")

        _after(eventlog._Writer, "connect", no_checkpoint)

    write = eventlog._Writer.write

    def timed_write(self: Any, new: Any) -> Any:
        started = time.time_ns()
        result = write(self, new)
        if not routed_rows(new):  # another commit (the recorder's): what a router's waits on
            _records.append(("other_write_start", OTHER, started))
            _records.append(("other_write_end", OTHER, time.time_ns()))
        for data in routed_rows(new):
            found = KEY.search(data)
            if found is not None:
                key = found.group().decode()
                _records.append(("write_start", key, started))
                _records.append(("write_end", key, time.time_ns()))
        return result

    eventlog._Writer.write = timed_write  # type: ignore[method-assign]

    write_held = getattr(eventlog._Writer, "_write_held", None)
    if write_held is not None:  # rows held for the next commit, written on their own

        def timed_write_held(self: Any) -> None:
            if not self._held:
                return
            _records.append(("other_write_start", OTHER, time.time_ns()))
            write_held(self)
            _records.append(("other_write_end", OTHER, time.time_ns()))

        eventlog._Writer._write_held = timed_write_held

    send = publisher.Publisher.send

    async def sent(self: Any, messages: Any) -> Any:
        result = await send(self, messages)
        for message in messages:
            if message.subject.startswith("tocsin.route."):
                _note("work_sent", message.payload)
        return result

    publisher.Publisher.send = sent  # type: ignore[method-assign]

    deliver = delivery.ReceiverWorker.deliver

    async def delivering(self: Any, msg: Any, *args: Any) -> None:
        _note("deliver", msg.data)
        await deliver(self, msg, *args)

    delivery.ReceiverWorker.deliver = delivering  # type: ignore[method-assign]

    send_body = delivery.ReceiverWorker._send

    async def sending(self: Any, body: Any, traceparent: str, *args: Any) -> Any:
        _note("send", body.summary.encode())
        return await send_body(self, body, traceparent, *args)

    delivery.ReceiverWorker._send = sending  # type: ignore[method-assign]

    exchange = http1._Connection.exchange

    async def posting(self: Any, request: bytes) -> Any:
        _note("post", request)  # the coroutine writes it before its first await
        return await exchange(self, request)

    http1._Connection.exchange = posting  # type: ignore[method-assign]
