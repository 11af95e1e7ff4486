"""Input positions: the ledger records which input message caused each fact, in the same
transaction, and answers "what is my last position" and "what did these positions
cause", which is how a redelivered message is recognised (DESIGN.md invariant 4)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tocsin.core import events as ev
from tocsin.store.eventlog import LogWriteError, db_path
from tocsin.store.ledger import Input, Ledger


def ignored(name: str) -> ev.AlertResolveIgnored:
    return ev.AlertResolveIgnored(fingerprint=name)


async def test_facts_are_found_by_the_position_that_caused_them(tmp_path: Path) -> None:
    ledger = await Ledger.open(db_path(tmp_path))
    async with ledger.batch() as batch:
        first = batch.add_caused([ignored("a"), ignored("b")], Input.INBOUND, 7)
        second = batch.add_caused([ignored("c")], Input.INBOUND, 9)
    assert (list(first), list(second)) == ([1, 2], [3])
    found = await ledger.facts_caused_by(Input.INBOUND, [7, 8, 9])
    assert {p: [row.event for row in rows] for p, rows in found.items()} == {
        7: [ignored("a"), ignored("b")],
        9: [ignored("c")],
    }
    assert [row.seq for row in found[7]] == [1, 2]
    assert ledger.last_position(Input.INBOUND) == 9
    await ledger.close()


async def test_each_input_has_positions_of_its_own(tmp_path: Path) -> None:
    ledger = await Ledger.open(db_path(tmp_path))
    async with ledger.batch() as batch:
        batch.add_caused([ignored("in")], Input.INBOUND, 3)
        batch.add_caused([ignored("out")], Input.OUTCOMES, 5)
        batch.add(ignored("by nobody"))
    assert ledger.last_position(Input.INBOUND) == 3
    assert ledger.last_position(Input.OUTCOMES) == 5
    assert await ledger.facts_caused_by(Input.INBOUND, [5]) == {}
    [row] = (await ledger.facts_caused_by(Input.OUTCOMES, [3, 5]))[5]
    assert row.event == ignored("out")
    await ledger.close()


async def test_a_position_still_committing_is_the_last_and_its_facts_are_waited_for(
    tmp_path: Path,
) -> None:
    """Pipelined: a message redelivered while the batch of its first delivery commits
    must be recognised, not decided twice."""
    ledger = await Ledger.open(db_path(tmp_path))
    async with ledger.deciding() as batch:
        batch.add_caused([ignored("a")], Input.INBOUND, 4)
    assert ledger.last_position(Input.INBOUND) == 4  # decided, perhaps not committed yet
    found = await ledger.facts_caused_by(Input.INBOUND, [4])
    assert batch.commit is not None
    assert batch.commit.done()
    assert [row.event for row in found[4]] == [ignored("a")]
    await ledger.close()


async def test_positions_whose_commit_failed_are_not_the_last(tmp_path: Path) -> None:
    path = db_path(tmp_path)
    ledger = await Ledger.open(path, busy_timeout_ms=100)
    async with ledger.batch() as batch:
        batch.add_caused([ignored("a")], Input.INBOUND, 1)
    blocker = sqlite3.connect(path)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        async with ledger.deciding() as failing:
            failing.add_caused([ignored("b")], Input.INBOUND, 2)
        assert ledger.last_position(Input.INBOUND) == 2
        with pytest.raises(LogWriteError):
            await ledger.committed(failing)
    finally:
        blocker.rollback()
        blocker.close()
    assert ledger.last_position(Input.INBOUND) == 1  # as the log has it: 2 is decided again
    assert await ledger.facts_caused_by(Input.INBOUND, [2]) == {}
    await ledger.close()


async def test_the_last_positions_are_the_logs_after_a_restart(tmp_path: Path) -> None:
    path = db_path(tmp_path)
    ledger = await Ledger.open(path)
    async with ledger.batch() as batch:
        batch.add_caused([ignored("a")], Input.INBOUND, 12)
        batch.add_caused([ignored("b")], Input.OUTCOMES, 30)
    await ledger.close()
    reopened = await Ledger.open(path)
    assert reopened.last_position(Input.INBOUND) == 12
    assert reopened.last_position(Input.OUTCOMES) == 30
    assert reopened.state.last_seq == 2
    await reopened.close()
