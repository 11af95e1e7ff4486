"""Candidates for the stage tests, decided against states made by the real triage and
fold (``tests.core.test_fold.Run``), so a stage is tested on projections the log can
really hold."""

from __future__ import annotations

import itertools

from tests.core.test_fold import ROUTES, WINDOW, Run
from tocsin.core import commands
from tocsin.core import events as ev
from tocsin.core.decide.candidate import Candidate
from tocsin.core.decide.dedup import dedup
from tocsin.core.decide.route import RoutingTable
from tocsin.core.fold import fold
from tocsin.core.ingest import Normalized


def candidate(event: Normalized, routing: RoutingTable = ROUTES) -> Candidate:
    """A fresh candidate for ``event``, received at its timestamp; ids ``n1``, ``n2``..."""
    ids = itertools.count(1)
    return Candidate(
        event=event,
        subject="alerts.in.db",
        received_at=event.timestamp,
        routing=routing,
        window_seconds=WINDOW,
        new_id=lambda: f"n{next(ids)}",
        trace_id="t",
    )


def after_dedup(run: Run, event: Normalized, routing: RoutingTable = ROUTES) -> Candidate:
    """A candidate the dedup stage passed on (what every later stage receives)."""
    judged = candidate(event, routing)
    assert dedup(run.state, judged), ev.kind_of(judged.facts[-1])
    return judged


def apply(run: Run, facts: list[ev.Event], at: int) -> None:
    """Log and fold a command's facts into ``run``."""
    for fact in facts:
        seq = len(run.log) + 1
        run.log.append((seq, at, fact))
        fold(run.state, seq, at, fact)


def silence(run: Run, at: int, ends_at: str = "30m", **matchers: object) -> str:
    """Create a silence from ``at`` until ``ends_at`` in ``run``; its id."""
    facts = commands.create_silence(
        run.state,
        matchers=matchers,
        starts_at=None,
        ends_at=ends_at,
        created_by="ana",
        comment="maintenance",
        now=at,
        new_id=run.new_id,
    )
    apply(run, facts, at)
    created = facts[0]
    assert isinstance(created, ev.SilenceCreated)
    return created.silence_id


def ack(run: Run, alert_id: str, at: int) -> None:
    apply(run, commands.ack(run.state, alert_id, by="ana", comment=None, at=at), at)
