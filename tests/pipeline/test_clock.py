"""The clock loop's wake-ups (``pipeline.clock``): the router tells it of every commit,
and at a steady rate every event is a commit of its own. Only a commit that makes a
timer due before the clock means to look wakes it (issue #20, W3's CPU per event).
A real ledger on a real SQLite file; the loop runs, napping until its next look."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support import wait_until
from tocsin.config import default_config
from tocsin.core.state import AutoResolve
from tocsin.core.times import now_us
from tocsin.pipeline.clock import Clock
from tocsin.store.eventlog import db_path
from tocsin.store.ledger import Ledger


@pytest.fixture
async def napping(tmp_path: Path) -> AsyncIterator[tuple[Clock, Ledger]]:
    """A clock with nothing due, napping (its next look a second away)."""
    ledger = await Ledger.open(db_path(tmp_path))
    timers = Clock(None, ledger, default_config({}))  # type: ignore[arg-type]  # never fires
    stop = asyncio.Event()
    running = asyncio.create_task(timers.run(stop))
    await wait_until(lambda: timers._looks_at is not None, what="the clock napping")
    yield timers, ledger
    stop.set()
    await running
    await ledger.close()


async def test_a_commit_that_makes_nothing_due_sooner_does_not_wake_the_clock(
    napping: tuple[Clock, Ledger],
) -> None:
    """Catches a nudge that wakes the loop on every commit (two tasks, a wait and a
    ``next_due`` each time, for nothing)."""
    timers, _ = napping
    for _ in range(100):  # a hundred commits of alerts with no timer
        timers.nudge()
    assert not timers._nudged.is_set()


async def test_a_commit_that_makes_a_timer_due_now_wakes_the_clock(
    napping: tuple[Clock, Ledger],
) -> None:
    """Catches a nudge that no longer wakes the clock when it must: a timer due now
    (here an alert's ``ends_at``) is looked at at once, not at the next nap's end."""
    timers, ledger = napping
    ledger.state.auto_resolve["fp1"] = AutoResolve(
        alert_id="a1", due=now_us(), by="ends_at", last_event=now_us()
    )
    timers.nudge()
    assert timers._nudged.is_set()
