"""The one rule that binds the log to an incarnation of TOCSIN_IN or TOCSIN_OUT (pure:
no NATS here; the streams themselves are re-created in test_consumers, test_invariants
and test_recorder)."""

from __future__ import annotations

import pytest

from tocsin.core import events as ev
from tocsin.core.fold import fold
from tocsin.core.state import State
from tocsin.core.subjects import STREAM_IN, STREAM_OUT
from tocsin.pipeline.binding import Incarnation, binding, bound
from tocsin.store.ledger import Input

NAMES = {Input.INBOUND: STREAM_IN, Input.OUTCOMES: STREAM_OUT}


def bind(state: State, fact: ev.StreamBound | None) -> None:
    assert fact is not None
    fold(state, state.last_seq + 1, 0, fact)


@pytest.mark.parametrize("stream", list(Input))
def test_a_new_stream_is_bound_past_every_logged_position(stream: Input) -> None:
    state = State()
    first = binding(state, stream, Incarnation("t1", last_seq=0), last_position=0)
    assert first == ev.StreamBound(stream=NAMES[stream], created="t1", offset=0)
    bind(state, first)

    assert binding(state, stream, Incarnation("t1", last_seq=40), last_position=40) is None

    again = binding(state, stream, Incarnation("t2", last_seq=0), last_position=40)
    assert again == ev.StreamBound(stream=NAMES[stream], created="t2", offset=40)
    bind(state, again)
    assert bound(state, stream) == ("t2", 40)
    other = next(s for s in Input if s is not stream)
    assert bound(state, other) == (None, 0)


@pytest.mark.parametrize("stream", list(Input))
def test_the_first_binding_keeps_the_seqs_unless_they_cannot_be_the_logged_ones(
    stream: Input,
) -> None:
    """A log from before its stream was bound: the stream's seqs are taken as they are
    (offset 0), unless the stream ends below a position already logged (it was
    re-created meanwhile, and its seqs would look like redeliveries)."""
    same = binding(State(), stream, Incarnation("t1", last_seq=12), last_position=12)
    assert same == ev.StreamBound(stream=NAMES[stream], created="t1", offset=0)
    newer = binding(State(), stream, Incarnation("t2", last_seq=3), last_position=12)
    assert newer == ev.StreamBound(stream=NAMES[stream], created="t2", offset=12)
