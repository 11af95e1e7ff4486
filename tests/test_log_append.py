"""How the log writes a batch: one job on the writer's thread per transaction, a few
multi-row INSERTs per batch; the rows come out as if inserted one by one."""

from __future__ import annotations

from pathlib import Path

from tocsin import events as ev
from tocsin import forensics
from tocsin.log import EventLog, Fact, _insert_sizes


def test_a_batch_is_inserted_in_a_few_statements_of_cached_shapes() -> None:
    for rows in (0, 1, 3, 255, 256, 257, 1000, 2000, 5001):
        sizes = _insert_sizes(rows)
        assert sum(sizes) == rows
        assert len(set(sizes)) <= 9  # 256 and the powers of two below it
        assert len(sizes) <= rows // 256 + 8


async def test_a_large_batch_is_chained_and_found_row_by_row(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    log = await EventLog.open(path)
    facts = [Fact(ev.AlertResolveIgnored(fingerprint=f"f{i}"), in_seq=i + 1) for i in range(601)]
    assert await log.append(facts, ts=1) == list(range(1, 602))
    assert await log.append(facts[:3], ts=2) == [602, 603, 604]
    assert (log.last_seq, log.max_in_seq) == (604, 601)
    found = await log.facts_of_inbound(range(1, 602))
    assert len(found) == 601
    assert [found[i][0].event for i in (1, 301, 601)] == [facts[i].event for i in (0, 300, 600)]
    assert [row.seq for row in found[1]] == [1, 602]  # the same in_seq twice: both rows
    await log.close()
    assert forensics.verify(path).ok
