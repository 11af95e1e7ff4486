"""Identifiers: unique, ordered by time, and the trace context that continues a trace."""

from __future__ import annotations

import os
import re

from tocsin.core.ids import IdSource, new_id, traceparent_for


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
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_a_process_never_repeats_an_id_however_fast_or_whatever_its_clock_does() -> None:
    """Catches a counter that wraps within a millisecond (20,000 ids in one) and a
    clock stepping back (NTP) making an id already given."""
    source = IdSource(tag=7)
    now = 1_800_000_000_000
    ids = [source.next(now) for _ in range(20_000)]
    ids += [source.next(now - 5_000) for _ in range(100)]  # the clock stepped back 5 s
    ids += [source.next(now + 1) for _ in range(100)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)


def test_two_processes_ids_differ_even_in_the_same_millisecond() -> None:
    """Catches ids unique only within a process: partition routers and delivery workers
    make ids at the same time, and an equal notification id would be dropped by
    JetStream's duplicate window. Two tags give disjoint ids at every instant; a forked
    child draws a new tag."""
    now = 1_800_000_000_000
    first, second = IdSource(tag=1), IdSource(tag=2)
    assert not {first.next(now) for _ in range(5000)} & {second.next(now) for _ in range(5000)}
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its first id, then exit at once
        os.write(write, new_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    mine = new_id()
    os.close(read)
    os.close(write)

    def tag(made: str) -> int:
        return (int(made, 16) >> 14) & 0xFFFFFF

    assert tag(child) != tag(mine)  # equal by chance once in 16.7 million runs
