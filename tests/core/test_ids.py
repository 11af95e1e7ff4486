"""Identifiers: random, unique, and the trace context that continues a trace."""

from __future__ import annotations

import re

from tocsin.core.ids import new_id, traceparent_for


def test_ids_are_20_hex_digits_and_distinct_across_pool_refills() -> None:
    ids = [new_id() for _ in range(5000)]  # several refills of the pool
    assert all(re.fullmatch(r"[0-9a-f]{20}", i) for i in ids)
    assert len(set(ids)) == len(ids)


def test_a_traceparent_continues_the_trace_with_a_fresh_span() -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    first, second = traceparent_for(trace_id), traceparent_for(trace_id)
    assert re.fullmatch(rf"00-{trace_id}-[0-9a-f]{{16}}-01", first)
    assert first != second
