"""``event_id`` as a 24 h idempotency key (DESIGN.md section 4, issue #16 item 14): the
stage that stops a repeat, and the remembered ids, forgotten as log time passes. Times
are injected: each event is received (and logged) at its own timestamp."""

from __future__ import annotations

import msgspec

from tests.core.decide.support import candidate
from tests.core.test_fold import MINUTE, T0, Run, kinds, normalized, routed
from tocsin.core import events as ev
from tocsin.core.decide.candidate import PASS, STOP
from tocsin.core.decide.idempotency import KEEP_US, ReceivedIds, digest, idempotency
from tocsin.core.fold import rebuild
from tocsin.core.ingest import Normalized
from tocsin.core.state import hour_of

HOUR_MINUTES = 60
DAY_MINUTES = 24 * HOUR_MINUTES


def with_id(event: Normalized, event_id: str | None) -> Normalized:
    return msgspec.structs.replace(event, event_id=event_id)


def test_a_repeated_event_id_is_recorded_and_suppressed_for_no_alert() -> None:
    """Sent again 15 minutes later (past JetStream's 2-minute window, in a new bucket):
    without the key it was a reminder, notified and counted as an occurrence."""
    run = Run()
    run.feed(with_id(normalized(0), "e1"))
    [alert] = run.state.alerts.values()
    facts = run.feed(with_id(normalized(15), "e1"))
    assert kinds(facts) == ["alert.received", "alert.suppressed"]
    received, suppressed = facts
    assert isinstance(received, ev.AlertReceived)
    assert isinstance(suppressed, ev.AlertSuppressed)
    assert (received.alert_id, received.event_id) == (None, "e1")
    assert (suppressed.cause, suppressed.alert_id) == ("duplicate_event", "")
    assert (
        suppressed.dedup_key == received.dedup_key == f"{alert.fingerprint}:{T0 // 600_000_000 + 1}"
    )
    assert (alert.occurrences, alert.suppressed_count, alert.last_seen) == (1, 0, T0)
    stats = run.state.hours[hour_of(T0 + 15 * MINUTE)]
    assert (stats.by_severity, stats.suppressed) == ({"warning": 2}, 1)
    assert (run.state.counters.received, run.state.counters.suppressed) == (2, 1)
    assert run.state == rebuild(run.log)


def test_the_stage_stops_a_repeat_and_passes_anything_else() -> None:
    """Another id, or none (nothing to recognise a repeat by), goes on to dedup."""
    run = Run()
    run.feed(with_id(normalized(0), "e1"))
    repeat = candidate(with_id(normalized(3), "e1"))
    assert idempotency(run.state, repeat) is STOP
    assert kinds(repeat.facts) == ["alert.received", "alert.suppressed"]
    for other in (with_id(normalized(3), "e2"), with_id(normalized(3), None)):
        judged = candidate(other)
        assert idempotency(run.state, judged) is PASS
        assert judged.facts == []


def test_an_id_is_remembered_24_hours_after_its_latest_event() -> None:
    """Exactly 24 h after it is still a repeat; a microsecond more and it counts again.
    A repeat renews the 24 h: an event retried for days is news once."""
    run = Run()
    run.feed(with_id(normalized(0), "e1"))
    assert kinds(run.feed(with_id(normalized(DAY_MINUTES), "e1")))[-1] == "alert.suppressed"
    later = with_id(normalized(2 * DAY_MINUTES), "e1")
    assert kinds(run.feed(later))[-1] == "alert.suppressed"  # renewed at 24 h
    counted = msgspec.structs.replace(later, timestamp=later.timestamp + KEEP_US + 1)
    assert routed(run.feed(counted)) == [("reminder", "hook")]
    [alert] = run.state.alerts.values()
    assert alert.occurrences == 2
    assert run.state == rebuild(run.log)


def test_a_repeated_resolve_is_ignored_and_leaves_a_later_alert_open() -> None:
    """A resolve sent again after the fingerprint fired anew: without the key it closed
    the new alert, which was never resolved."""
    run = Run()
    run.feed(with_id(normalized(0), "f1"))
    run.feed(with_id(normalized(1, status="resolved"), "r1"))
    run.feed(with_id(normalized(5), "f2"))
    [reopened] = [a for a in run.state.alerts.values() if a.status == "firing"]
    facts = run.feed(with_id(normalized(8, status="resolved"), "r1"))
    assert kinds(facts) == ["alert.received", "alert.resolve_ignored"]
    ignored = facts[1]
    assert isinstance(ignored, ev.AlertResolveIgnored)
    assert (ignored.cause, ignored.alert_id) == ("duplicate_event", None)
    assert run.state.open_by_fingerprint[reopened.fingerprint].alert_id == reopened.id
    assert reopened.status == "firing"
    assert run.state.counters.suppressed == 0  # a resolve is not a firing event held back
    assert run.state == rebuild(run.log)


def test_a_repeat_inside_the_notified_bucket_is_a_repeat_not_a_duplicate() -> None:
    """The same event again at once: not counted as an occurrence of its alert (dedup
    alone would have, suppressing it as a ``duplicate``)."""
    run = Run()
    run.feed(with_id(normalized(0), "e1"))
    facts = run.feed(with_id(normalized(0), "e1"))
    assert isinstance(facts[-1], ev.AlertSuppressed)
    assert facts[-1].cause == "duplicate_event"
    [alert] = run.state.alerts.values()
    assert (alert.occurrences, alert.suppressed_count) == (1, 0)


def test_ids_are_forgotten_by_log_time_so_memory_stays_bounded() -> None:
    """An event an hour for 3 days: the projection holds the ids of the last 25 hours
    at most, not all 72 (without forgetting it grew with every event for ever)."""
    run = Run()
    for hour in range(72):
        run.feed(with_id(normalized(hour * HOUR_MINUTES), f"e{hour}"))
        assert len(run.state.received_ids.seen) <= 26
    seen = run.state.received_ids.seen
    assert digest("e71") in seen
    assert digest("e40") not in seen
    assert run.state == rebuild(run.log)


def test_forgetting_keeps_an_id_received_again_since() -> None:
    """An hour is dropped whole, but an id it held that came again later is kept: its
    latest receipt moved it behind the ids received before it."""
    ids = ReceivedIds()
    hour = KEEP_US // 24
    ids.remember("a", T0, T0)
    ids.remember("b", T0, T0)
    ids.remember("a", T0 + 20 * hour, T0 + 20 * hour)
    ids.remember("c", T0 + 26 * hour, T0 + 26 * hour)  # the sweep drops T0's hour
    assert list(ids.seen) == [digest("a"), digest("c")]
    assert ids.repeated("a", T0 + 26 * hour)
    assert not ids.repeated("b", T0 + 26 * hour)


def test_an_id_costs_a_digest_whatever_its_length_and_stays_exact() -> None:
    """Catches the raw id kept as the key (a publisher's 1,000-character
    ``Nats-Msg-Id`` cost 1 KB for a day, ``alert.received`` after
    ``alert.received``): every id is remembered by 16 bytes, and ids that differ in
    one character, or only in a lone surrogate, stay apart."""
    ids = ReceivedIds()
    long_ids = ["x" * 1000 + "a", "x" * 1000 + "b", "\ud800", "\udc00", "é", "e\u0301"]
    for n, event_id in enumerate(long_ids):
        ids.remember(event_id, T0 + n, T0 + n)
    assert {len(key) for key in ids.seen} == {16}
    assert len(ids.seen) == len(long_ids)
    assert all(ids.repeated(event_id, T0 + 10) for event_id in long_ids)
    assert not ids.repeated("x" * 1000 + "c", T0 + 10)
