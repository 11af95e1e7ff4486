"""Which incarnation of each input stream the log consumes: ``stream.bound`` facts.

The log records each input message's position with the facts it caused, and a message
at or below the last position logged is taken for a redelivery (DESIGN.md invariant
4). A stream deleted and re-created (by an operator, or by tocsin finding it gone)
starts its seqs again at 1: were they logged as they are, new alerts (``TOCSIN_IN``,
the router's input) and new outcomes (``TOCSIN_OUT``, the recorder's) would be taken
for redeliveries of old ones and skipped, silently. So the log records which
incarnation of each stream it consumes (the stream's creation time) with an offset:
positions are ``offset + seq``, and a new incarnation's offset is past every position
logged before it. The same rule binds both streams.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from nats.js import JetStreamContext

from tocsin.core import events as ev
from tocsin.core.state import State
from tocsin.core.subjects import STREAM_IN, STREAM_OUT
from tocsin.store.ledger import Input, Ledger

log = logging.getLogger("tocsin.binding")

STREAMS = {Input.INBOUND: STREAM_IN, Input.OUTCOMES: STREAM_OUT}
"""The stream each input is read from."""


@dataclass(frozen=True)
class Incarnation:
    """One incarnation of a stream, as JetStream describes it now."""

    created: str  # its creation time, as ``stream.bound`` records it
    last_seq: int  # the seq of the last message it stored


def bound(state: State, stream: Input) -> tuple[str | None, int]:
    """The incarnation of ``stream`` the log consumes (``None`` before any is bound),
    and the offset its positions are logged with."""
    if stream is Input.INBOUND:
        return state.inbound_stream, state.inbound_offset
    return state.outbound_stream, state.outbound_offset


def binding(
    state: State, stream: Input, now: Incarnation, last_position: int, name: str | None = None
) -> ev.StreamBound | None:
    """The fact that binds the log to incarnation ``now`` of ``stream``, or ``None``
    when the log consumes it already. A new incarnation's positions begin past
    ``last_position``, the highest the log holds. The first binding of a stream (a new
    log, or one from before the stream was bound) keeps the offset 0, the stream's seqs
    as they are, unless they end below a position already logged: that stream cannot
    be the one those positions came from. ``name``: the stream read for ``stream``
    when it is not the usual one (a partition's router reads TOCSIN_PART)."""
    was, offset = bound(state, stream)
    if was == now.created:
        return None
    if was is not None or now.last_seq + offset < last_position:
        offset = last_position
    return ev.StreamBound(stream=name or STREAMS[stream], created=now.created, offset=offset)


async def incarnation(js: JetStreamContext, stream: Input, name: str | None = None) -> Incarnation:
    """The incarnation of ``stream`` (read from ``name``, by default its usual stream)
    JetStream has now."""
    info = await js.stream_info(name or STREAMS[stream])
    created = info.created.isoformat() if info.created else ""
    return Incarnation(created, int(info.state.last_seq or 0))


async def bind_stream(
    js: JetStreamContext, ledger: Ledger, stream: Input, name: str | None = None
) -> bool:
    """Record which incarnation of ``stream`` the log consumes, unless it already does:
    at start, before the stream's processor runs, and when the processor re-created
    its stream. ``True`` when a new binding was recorded. ``name``: as ``binding``'s."""
    now = await incarnation(js, stream, name)
    async with ledger.batch() as batch:
        was = bound(ledger.state, stream)[0]
        fact = binding(ledger.state, stream, now, ledger.last_position(stream), name)
        if fact is not None:
            batch.add(fact)
    if fact is None:
        return False
    told(fact, was)
    return True


def told(fact: ev.StreamBound, was: str | None) -> None:
    """Log a binding: a warning when it replaces another (the stream was re-created)."""
    if was is None:
        log.info("consuming %s created %s", fact.stream, fact.created)
        return
    log.warning(
        "%s was re-created (was %s, now %s); its seqs are logged from %d on",
        fact.stream,
        was,
        fact.created,
        fact.offset + 1,
    )
