"""Identifiers: unique, ordered by time, and the trace context that continues a trace."""

from __future__ import annotations

import itertools
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


def test_ids_sort_in_the_order_they_were_made() -> None:
    """The log's indexes on alert and notification ids take a new id at their end only
    if ids grow: catches random ids (each insert then lands on its own index page,
    ~15 us per event in a W1 storm)."""
    ids = [new_id() for _ in range(5000)]
    wrapped = [a for a, b in itertools.pairwise(ids) if b < a]
    assert len(wrapped) <= 1  # the 32-bit counter may wrap once within a millisecond
