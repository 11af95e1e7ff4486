"""Repartitioning N -> M on disk (DESIGN.md section 17): the offline file work of
``tocsin repartition``, around the pure plan of ``core.repartition``.

Where the logs are: with one partition, ``<data-dir>/tocsin.db``; with N > 1, partition
k's in ``<data-dir>/p<k>/tocsin.db``. The old logs are never rewritten:

1. every old and new log's writer lock is taken (a running router holds its own: the
   command refuses, naming the lock), and each old chain is verified;
2. the new logs are written in ``<data-dir>/repartition.staging/`` (each one
   transaction: ``partition.seeded``, the silences, the ``alert.moved`` facts) and
   verified;
3. each old log (its file, and its WAL if any) moves to
   ``<data-dir>/repartitioned/<UTC time>-<N>-to-<M>/`` (``tocsin.db`` or ``p<k>/tocsin.db``),
   made read-only: ``replay``, ``state`` and ``verify --data-dir`` read it there;
4. each new log moves into its place, and the staging directory is removed.

Nothing is renamed before step 2 is done, so a failure before it leaves the old logs in
place; a leftover staging directory (an interrupted run) is refused, naming it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tocsin.core import events as ev
from tocsin.core import repartition
from tocsin.core.state import State
from tocsin.core.times import format_us
from tocsin.store import forensics, tables
from tocsin.store.chain import GENESIS
from tocsin.store.eventlog import db_path, partition_dir
from tocsin.store.lock import WriterLock
from tocsin.store.tables import NO_DELETE_TRIGGER, SCHEMA

STAGING = "repartition.staging"
ARCHIVES = "repartitioned"


class RepartitionError(RuntimeError):
    """The move was refused or failed; the message says why and what was left where."""


def log_dir(data_dir: Path, partition: int, count: int) -> Path:
    """The directory of partition ``partition``'s log when there are ``count``."""
    return data_dir if count == 1 else partition_dir(data_dir, partition)


@dataclass
class Done:
    """What ``run`` did: the archive directory, how many open alerts each new log got,
    what ``--force`` let through and what was only said."""

    archive: Path
    moved: list[int]
    forced: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    silences: int = 0


def run(
    data_dir: Path,
    *,
    from_count: int,
    to_count: int,
    key: Sequence[str],
    window_seconds: float,
    now: int,
    force: bool = False,
) -> Done:
    """Repartition the logs of ``data_dir`` from ``from_count`` partitions to
    ``to_count`` (steps in the module's docstring). Raises ``RepartitionError``."""
    if from_count == to_count:
        raise RepartitionError(f"--from and --to are both {from_count}: nothing to do")
    staging = data_dir / STAGING
    if staging.exists():
        raise RepartitionError(
            f"{staging} exists: a repartition was interrupted; see what it holds and "
            "remove it, then run again"
        )
    _refuse_strays(data_dir, from_count)
    dirs = sorted(
        {log_dir(data_dir, k, from_count) for k in range(from_count)}
        | {log_dir(data_dir, k, to_count) for k in range(to_count)}
    )
    archive = data_dir / ARCHIVES / f"{format_us(now).replace(':', '')}-{from_count}-to-{to_count}"
    with _locked(dirs):
        sources = [_source(data_dir, k, from_count, archive) for k in range(from_count)]
        blockers = repartition.blockers(sources)
        if blockers and not force:
            raise RepartitionError(
                "refused, nothing was changed (--force moves anyway): " + "; ".join(blockers)
            )
        planned = repartition.plan(
            sources,
            count=to_count,
            key=key,
            window_seconds=window_seconds,
            now=now,
            forced=blockers,
        )
        for target, facts in enumerate(planned.facts):
            written = db_path(log_dir(staging, target, to_count))
            _write(written, facts, now, planned.after_seq)
            verdict = forensics.verify(written)
            if not verdict.ok:  # a bug of this module, never the old logs': they are intact
                raise RepartitionError(
                    f"the new log {written} does not verify ({verdict.problem}); the old "
                    f"logs are untouched, {staging} holds what was written"
                )
        for k in range(from_count):
            old = db_path(log_dir(data_dir, k, from_count))
            if old.exists():
                _archive(old, db_path(log_dir(archive, k, from_count)))
        for target in range(to_count):
            new = db_path(log_dir(data_dir, target, to_count))
            new.parent.mkdir(parents=True, exist_ok=True)
            os.replace(db_path(log_dir(staging, target, to_count)), new)
        shutil.rmtree(staging)
    seeded = planned.facts[0][0]
    assert isinstance(seeded, ev.PartitionSeeded)
    return Done(
        archive=archive,
        moved=[planned.moved(t) for t in range(to_count)],
        forced=blockers,
        notes=planned.notes,
        silences=seeded.silences,
    )


def _refuse_strays(data_dir: Path, from_count: int) -> None:
    """A log the ``--from`` shape does not have (``p<k>`` for k >= N, the
    unpartitioned log beside partitions, or partitions beside it) means ``--from`` is
    wrong: its alerts would be left behind."""
    expected = {db_path(log_dir(data_dir, k, from_count)) for k in range(from_count)}
    present = {db_path(data_dir)} | set(data_dir.glob("p*/tocsin.db"))
    strays = sorted(str(p) for p in present if p.exists() and p not in expected)
    if strays:
        raise RepartitionError(
            f"--from {from_count}: these logs are not of {from_count} partition(s): "
            f"{', '.join(strays)}; is --from right?"
        )


@contextlib.contextmanager
def _locked(dirs: Sequence[Path]) -> Iterator[None]:
    """Every writer lock of ``dirs`` held, or ``RepartitionError`` naming the first
    held by another process (a router still running on that log)."""
    held: list[WriterLock] = []
    try:
        for directory in dirs:
            lock = WriterLock(directory)
            if not lock.acquire():
                owner = lock.path.read_text().strip() if lock.path.exists() else "?"
                raise RepartitionError(
                    f"{lock.path} is held (pid {owner or '?'}): a router still writes that "
                    "log; stop every router and partitioner first"
                )
            held.append(lock)
        yield
    finally:
        for lock in held:
            lock.release()


def _source(data_dir: Path, k: int, count: int, archive: Path) -> repartition.Source:
    """Old log ``k``, verified, as the plan reads it (an absent one is empty: its
    router never ran)."""
    path = db_path(log_dir(data_dir, k, count))
    partition = None if count == 1 else k
    where = str(db_path(log_dir(archive, k, count)))
    if not path.exists():
        return repartition.Source(partition, State(), 0, GENESIS.hex(), where)
    verdict = forensics.verify(path)
    if not verdict.ok:
        raise RepartitionError(
            f"{path} does not verify at seq {verdict.bad_seq}: {verdict.problem}; "
            "nothing was changed"
        )
    state, _ = forensics.state_at(path)
    with contextlib.closing(forensics.connect(path)) as conn:
        last = conn.execute(tables.LAST_ROW).fetchone()
    last_seq, head = (int(last[0]), bytes(last[1]).hex()) if last else (0, GENESIS.hex())
    return repartition.Source(partition, state, last_seq, head, where)


def _write(path: Path, facts: Sequence[ev.Event], ts: int, after_seq: int) -> None:
    """A new log holding ``facts``, appended at ``ts`` in one transaction, chained from
    the start as the writer chains (``tables.new_rows``), its first seq the one after
    ``after_seq``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute(tables.NEW_FILE)
        conn.execute("PRAGMA synchronous=FULL")  # the router turns WAL on when it opens it
        conn.executescript(SCHEMA + NO_DELETE_TRIGGER)
        rows = tables.new_rows([tables.Fact(f) for f in facts], ts, after_seq, GENESIS)
        conn.execute("BEGIN IMMEDIATE")
        for statement, params in rows.inserts():
            conn.execute(statement, params)
        conn.execute("COMMIT")


def _archive(old: Path, to: Path) -> None:
    """Move a log to ``to``, read-only: first out of WAL mode (its write-ahead file
    folded into it, the one change made to the file, none to its rows), so that it is
    one self-contained file a read-only open can read."""
    with contextlib.closing(sqlite3.connect(old, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode=DELETE")
    to.parent.mkdir(parents=True, exist_ok=True)
    os.replace(old, to)
    to.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
