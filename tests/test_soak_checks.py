"""The soak's verdict on settled notifications (``bench/soak_checks.py``), read from a
real log file written by the ledger: a ``delivery.superseded`` settles a notification
only when the log shows the later notification it names, of the same receiver and
fingerprint, delivered (DESIGN's per-fingerprint order, ``core/policy/order.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.soak_checks import (
    Limits,
    LogFacts,
    delivery_checks,
    read_log,
    unjustified_supersessions,
)

from tocsin.core import events as ev
from tocsin.store.eventlog import db_path
from tocsin.store.ledger import Ledger

T0 = 1_800_000_000 * 1_000_000
LIMITS = Limits(drain=1.0, rss_slope=1.0, twice_slack=1.0)
SETTLED_ONCE = "every routed notification delivered, dead-lettered or superseded, once"
JUSTIFIED = "every superseded notification names a later one delivered to its receiver"


def routed(nid: str, receiver: str = "hook", fingerprint: str = "fp") -> ev.AlertRouted:
    return ev.AlertRouted(
        alert_id="a1",
        fingerprint=fingerprint,
        dedup_key=f"{fingerprint}:1",
        bucket=1,
        reason="firing",
        severity="warning",
        receiver=receiver,
        notification_id=nid,
    )


def delivered(nid: str, receiver: str = "hook", fingerprint: str = "fp") -> ev.DeliverySucceeded:
    return ev.DeliverySucceeded(
        notification_id=nid,
        receiver=receiver,
        alert_id="a1",
        fingerprint=fingerprint,
        channel="webhook",
        attempts=1,
        at=T0,
    )


def dead(nid: str) -> ev.DeliveryDeadLettered:
    return ev.DeliveryDeadLettered(
        notification_id=nid,
        receiver="hook",
        alert_id="a1",
        fingerprint="fp",
        channel="webhook",
        attempts=6,
        error="500",
        status_code=500,
        at=T0,
    )


def superseded(nid: str, seq: int, by: str, by_seq: int) -> ev.DeliverySuperseded:
    return ev.DeliverySuperseded(
        notification_id=nid,
        receiver="hook",
        alert_id="a1",
        fingerprint="fp",
        channel="webhook",
        attempts=1,
        log_seq=seq,
        superseded_by=by,
        superseded_by_seq=by_seq,
        at=T0,
    )


async def logged(tmp_path: Path, facts: list[ev.Event]) -> LogFacts:
    """``facts`` committed to a log file (seq 1, 2, ...), read back as the soak does."""
    path = db_path(tmp_path)
    ledger = await Ledger.open(path, snapshot_every=0)
    async with ledger.batch() as batch:
        for fact in facts:
            batch.add(fact)
    await ledger.close()
    return read_log(path)


def verdicts(facts: LogFacts) -> dict[str, tuple[bool, str]]:
    gathered: dict[str, Any] = {
        "left": {"routed without an outcome": len(facts.unsettled)},
        "stats": {"queue": {"pending": 0, "retrying": 0, "dead": 0}},
    }
    return {c.name: (c.ok, c.detail) for c in delivery_checks(facts, gathered, LIMITS)}


async def test_a_superseded_notification_is_settled_by_a_later_delivered_one(
    tmp_path: Path,
) -> None:
    """Catches the soak counting a superseded notification as never settled (it failed
    "drained" and "delivered or dead-lettered" on every run with one): settled, counted
    and printed, and the one it names is the later delivered one."""
    facts = await logged(
        tmp_path,
        [routed("n1"), routed("n2"), delivered("n2"), superseded("n1", 1, "n2", 2)],
    )
    assert facts.unsettled == []
    ok = verdicts(facts)
    assert ok["drained: nothing pending"][0]
    assert ok[SETTLED_ONCE] == (
        True,
        "2 routed: 1 delivered, 0 dead-lettered, 1 superseded; 0 without an outcome, "
        "0 with two, 0 outcomes of nothing routed",
    )
    assert ok[JUSTIFIED][0], ok[JUSTIFIED][1]


async def test_a_superseded_fact_the_log_does_not_justify_fails_the_check(
    tmp_path: Path,
) -> None:
    """Catches accepting the kind on its word: superseded by a notification that was
    dead-lettered, routed before it, routed to another receiver or fingerprint, or
    never routed, each fails the check, named with why."""
    facts = await logged(
        tmp_path,
        [
            routed("early"),  # 1
            routed("n_dead"),  # 2: superseded by a dead letter
            routed("d"),  # 3
            dead("d"),
            routed("n_before"),  # 5: superseded by one routed before it
            routed("n_other"),  # 6: by one of another receiver
            routed("o", receiver="other"),  # 7
            delivered("o", receiver="other"),
            routed("n_nowhere"),  # 9: by one never routed
            routed("n_fp"),  # 10: by one of another fingerprint
            routed("f", fingerprint="fp2"),  # 11
            delivered("f", fingerprint="fp2"),
            delivered("early"),
            superseded("n_dead", 2, "d", 3),
            superseded("n_before", 5, "early", 1),
            superseded("n_other", 6, "o", 7),
            superseded("n_nowhere", 9, "ghost", 99),
            superseded("n_fp", 10, "f", 11),
        ],
    )
    ok, detail = verdicts(facts)[JUSTIFIED]
    assert not ok
    assert detail.startswith("5 superseded, 0 by a notification")
    assert unjustified_supersessions(facts) == {
        "n_dead": "names d, whose outcomes are ['delivery.dead_lettered']",
        "n_before": "routed at seq 5 (fact: 5), names early routed at 1 (fact: 1): not later",
        "n_other": "names o, routed to another receiver or fingerprint",
        "n_nowhere": "names ghost, never routed",
        "n_fp": "names f, routed to another receiver or fingerprint",
    }
