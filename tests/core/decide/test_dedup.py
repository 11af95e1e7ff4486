"""tocsin.dedup: epoch-aligned time buckets and the open / suppress / escalate / reminder /
resolve decision of DESIGN.md section 4, and the dedup stage that turns it into facts."""

from __future__ import annotations

import msgspec
import pytest

from tests.core.decide.support import ack, apply, candidate, silence
from tests.core.test_fold import MINUTE, Run, kinds, normalized
from tocsin.core import commands
from tocsin.core import events as ev
from tocsin.core.contracts import Severity
from tocsin.core.decide.candidate import PASS, STOP
from tocsin.core.decide.dedup import Decision, OpenAlert, bucket_of, decide, dedup, rebucket
from tocsin.core.fold import rebuild
from tocsin.core.state import State

WINDOW = 600.0
SECOND = 1_000_000
# 1_800_000_000 s is a multiple of 600 s: the first instant of bucket 3_000_000.
T0 = 1_800_000_000 * SECOND
B0 = 3_000_000
SEVERITIES: list[Severity] = ["info", "warning", "error", "critical"]


def open_alert(bucket: int = B0, routed_severity: Severity = "warning") -> OpenAlert:
    return OpenAlert(
        alert_id="alert-1",
        bucket=bucket,
        routed_severity=routed_severity,
        receivers=["ops-webhook"],
    )


def firing(current: OpenAlert | None, severity: Severity = "warning", at: int = T0) -> Decision:
    return decide(
        current,
        fingerprint="fp-1",
        status="firing",
        severity=severity,
        timestamp_us=at,
        window_seconds=WINDOW,
    )


def resolved(current: OpenAlert | None, at: int = T0) -> Decision:
    return decide(
        current,
        fingerprint="fp-1",
        status="resolved",
        severity="info",
        timestamp_us=at,
        window_seconds=WINDOW,
    )


# --- buckets ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("timestamp_us", "window", "expected"),
    [
        (0, 600.0, 0),
        (T0, 600.0, B0),
        (T0 - 1, 600.0, B0 - 1),
        (T0 + 600 * SECOND - 1, 600.0, B0),
        (T0 + 600 * SECOND, 600.0, B0 + 1),
        (T0, 60.0, 30_000_000),
        (1_800_000_050 * SECOND, 90.0, 1_800_000_050 // 90),
        (1_800_000_050 * SECOND + 999_999, 90.0, 1_800_000_050 // 90),
    ],
)
def test_bucket_is_epoch_aligned_floor_of_unix_seconds_over_window(
    timestamp_us: int, window: float, expected: int
) -> None:
    assert bucket_of(timestamp_us, window) == expected


def test_dedup_key_is_fingerprint_colon_bucket() -> None:
    decision = firing(None, at=T0 + 42 * SECOND)
    assert decision.bucket == B0
    assert decision.dedup_key == f"fp-1:{B0}"


# --- firing -----------------------------------------------------------------------------


def test_first_firing_event_without_open_alert_opens() -> None:
    decision = firing(None, severity="info", at=T0 + 5 * SECOND)
    assert (decision.verdict, decision.bucket, decision.dedup_key) == ("open", B0, f"fp-1:{B0}")


@pytest.mark.parametrize("severity", ["warning", "info"])
def test_same_bucket_same_or_lower_severity_is_suppressed(severity: Severity) -> None:
    decision = firing(open_alert(routed_severity="warning"), severity, at=T0 + 300 * SECOND)
    assert (decision.verdict, decision.dedup_key) == ("suppress", f"fp-1:{B0}")


@pytest.mark.parametrize("severity", ["error", "critical"])
def test_same_bucket_higher_than_routed_severity_escalates(severity: Severity) -> None:
    decision = firing(open_alert(routed_severity="warning"), severity, at=T0 + 300 * SECOND)
    assert (decision.verdict, decision.bucket, decision.dedup_key) == (
        "escalate",
        B0,
        f"fp-1:{B0}",
    )


@pytest.mark.parametrize("routed", SEVERITIES)
@pytest.mark.parametrize("incoming", SEVERITIES)
def test_escalation_compares_with_the_routed_severity(routed: Severity, incoming: Severity) -> None:
    decision = firing(open_alert(routed_severity=routed), incoming, at=T0 + 1)
    higher = SEVERITIES.index(incoming) > SEVERITIES.index(routed)
    assert decision.verdict == ("escalate" if higher else "suppress")


@pytest.mark.parametrize("severity", ["info", "warning", "critical"])
def test_later_bucket_is_a_reminder(severity: Severity) -> None:
    decision = firing(open_alert(routed_severity="warning"), severity, at=T0 + 600 * SECOND)
    assert (decision.verdict, decision.bucket, decision.dedup_key) == (
        "reminder",
        B0 + 1,
        f"fp-1:{B0 + 1}",
    )


def test_reminder_after_several_idle_buckets_uses_the_event_bucket() -> None:
    decision = firing(open_alert(), at=T0 + 5 * 600 * SECOND + 7 * SECOND)
    assert (decision.verdict, decision.bucket) == ("reminder", B0 + 5)


def test_late_event_from_an_earlier_bucket_is_judged_against_the_current_bucket() -> None:
    decision = firing(open_alert(routed_severity="warning"), "warning", at=T0 - 900 * SECOND)
    assert (decision.verdict, decision.bucket, decision.dedup_key) == (
        "suppress",
        B0,
        f"fp-1:{B0}",
    )


def test_late_event_with_higher_severity_escalates_in_the_current_bucket() -> None:
    decision = firing(open_alert(routed_severity="warning"), "critical", at=T0 - 900 * SECOND)
    assert (decision.verdict, decision.bucket, decision.dedup_key) == (
        "escalate",
        B0,
        f"fp-1:{B0}",
    )


# --- resolved ---------------------------------------------------------------------------


def test_resolved_with_open_alert_resolves() -> None:
    assert resolved(open_alert(), at=T0 + 10 * SECOND).verdict == "resolve"


def test_resolved_in_a_later_bucket_still_resolves() -> None:
    assert resolved(open_alert(), at=T0 + 3 * 600 * SECOND).verdict == "resolve"


def test_resolved_without_open_alert_is_ignored() -> None:
    assert resolved(None).verdict == "resolve_ignored"


# --- the dedup stage: the decision as facts, and whether the candidate goes on ---------


def test_a_new_alert_is_received_opened_and_passed_on_as_firing() -> None:
    judged = candidate(normalized(0))
    assert dedup(State(), judged) is PASS
    received, opened = judged.facts
    assert isinstance(received, ev.AlertReceived)
    assert isinstance(opened, ev.AlertOpened)
    assert received.alert_id == opened.alert_id == judged.alert_id == "n1"
    assert opened.dedup_key == received.dedup_key == judged.dedup_key
    assert (judged.reason, judged.current) == ("firing", None)


def test_the_received_fact_names_the_fields_ingest_ignored() -> None:
    """Issue #23 item 6: a NATS publisher gets no answer, so the log says which of its
    fields were ignored; an event that had none logs the same bytes as before."""
    judged = candidate(msgspec.structs.replace(normalized(0), ignored_fields=("lables",)))
    dedup(State(), judged)
    received = judged.facts[0]
    assert isinstance(received, ev.AlertReceived)
    assert received.ignored_fields == ("lables",)
    assert b'"ignored_fields":["lables"]' in ev.encode(received)
    plain = candidate(normalized(0))
    dedup(State(), plain)
    assert b"ignored_fields" not in ev.encode(plain.facts[0])


def test_a_resolve_with_no_open_alert_is_recorded_and_stops() -> None:
    judged = candidate(normalized(0, status="resolved"))
    assert dedup(State(), judged) is STOP
    assert kinds(judged.facts) == ["alert.received", "alert.resolve_ignored"]
    assert judged.facts[0].alert_id is None  # type: ignore[union-attr]


def test_a_resolve_closes_the_open_alert_and_goes_on_as_resolved() -> None:
    run = Run()
    run.feed(normalized(0))
    judged = candidate(normalized(1, status="resolved"))
    assert dedup(run.state, judged) is PASS
    assert kinds(judged.facts) == ["alert.received", "alert.resolved"]
    assert judged.reason == "resolved"
    assert judged.alert_id == next(iter(run.state.alerts))


def test_an_alertmanager_resolve_ends_at_its_ends_at_and_is_its_last_sign_of_life() -> None:
    """Catches a Prometheus resolve (``timestamp`` = ``startsAt``, the same on every
    send) dated at the alert's start: its resolve time and ``last_seen`` (which a
    resolve body and Alertmanager's ``endsAt`` show) must be its ``endsAt``, never
    later than its arrival."""
    run = Run()
    run.feed(normalized(0))
    ended = msgspec.structs.replace(normalized(0, status="resolved"), ends_at=T0 + 5 * MINUTE)
    judged = candidate(ended)
    judged.received_at = T0 + 6 * MINUTE
    assert dedup(run.state, judged) is PASS
    resolved = judged.facts[1]
    assert isinstance(resolved, ev.AlertResolved)
    assert resolved.resolved_at == T0 + 5 * MINUTE
    early = candidate(ended)  # arrived before the end it names: it ended on arrival
    run2 = Run()
    run2.feed(normalized(0))
    early.received_at = T0 + 2 * MINUTE
    dedup(run2.state, early)
    assert early.facts[1].resolved_at == T0 + 2 * MINUTE  # type: ignore[union-attr]
    later = [(len(run.log) + n, T0 + 6 * MINUTE, fact) for n, fact in enumerate(judged.facts, 1)]
    (alert,) = rebuild([*run.log, *later]).alerts.values()
    assert alert.last_seen == T0 + 5 * MINUTE


def test_a_duplicate_in_a_notified_bucket_is_suppressed_and_stops() -> None:
    run = Run()
    run.feed(normalized(0))
    judged = candidate(normalized(1))
    assert dedup(run.state, judged) is STOP
    assert kinds(judged.facts) == ["alert.received", "alert.suppressed"]
    assert judged.facts[1].cause == "duplicate"  # type: ignore[union-attr]


def test_a_duplicate_in_a_silenced_bucket_is_news_firing_if_nobody_was_told() -> None:
    run = Run()
    sid = silence(run, T0, ends_at="2m", type="disk_full")
    run.feed(normalized(0))  # opened, silenced: nobody told
    apply(run, commands.delete_silence(run.state, sid, by="ana", at=T0 + MINUTE), T0 + MINUTE)
    judged = candidate(normalized(1))
    assert dedup(run.state, judged) is PASS
    assert (kinds(judged.facts), judged.reason) == (["alert.received"], "firing")


def test_a_duplicate_in_a_silenced_bucket_is_a_reminder_if_someone_was_told() -> None:
    run = Run()
    run.feed(normalized(0))  # routed to hook
    silence(run, T0, ends_at="15m", type="disk_full")
    run.feed(normalized(10))  # the next bucket's reminder, silenced
    judged = candidate(normalized(16))
    assert dedup(run.state, judged) is PASS
    assert (kinds(judged.facts), judged.reason) == (["alert.received"], "reminder")


def test_a_worse_severity_in_the_notified_bucket_escalates() -> None:
    run = Run()
    run.feed(normalized(0, "warning"))
    judged = candidate(normalized(1, "critical"))
    assert dedup(run.state, judged) is PASS
    assert (kinds(judged.facts), judged.reason) == (["alert.received"], "escalated")


def test_a_new_bucket_is_a_reminder_whatever_its_severity() -> None:
    run = Run()
    run.feed(normalized(0, "warning"))
    judged = candidate(normalized(10, "critical"))
    assert dedup(run.state, judged) is PASS
    assert (kinds(judged.facts), judged.reason) == (["alert.received"], "reminder")


def test_an_acknowledged_alert_gets_no_reminder() -> None:
    run = Run()
    run.feed(normalized(0))
    ack(run, next(iter(run.state.alerts)), T0)
    judged = candidate(normalized(10))
    assert dedup(run.state, judged) is STOP
    assert kinds(judged.facts) == ["alert.received", "alert.suppressed"]
    assert judged.facts[1].cause == "acked"  # type: ignore[union-attr]


def test_an_acknowledged_alert_still_escalates_in_a_later_bucket() -> None:
    run = Run()
    run.feed(normalized(0, "warning"))
    ack(run, next(iter(run.state.alerts)), T0)
    judged = candidate(normalized(10, "critical"))
    assert dedup(run.state, judged) is PASS
    assert (kinds(judged.facts), judged.reason) == (["alert.received"], "escalated")


# --- a change of window (issue #16 item 11) --------------------------------------------

HOUR = 3600.0


def load_config(run: Run, window: float, at: int) -> None:
    """Log ``config.loaded`` with ``window``, as the service does at each start."""
    fact = ev.ConfigLoaded(digest="d", receivers={}, routes=2, dedup_window_seconds=window)
    apply(run, [fact], at)


def verdicts(run: Run, minutes: list[int], window: float) -> list[tuple[int, str]]:
    """Feed a firing event at each minute; what became of each: a notification's
    reason, or the suppression's cause."""
    out = []
    for minute in minutes:
        facts = run.feed(normalized(minute), window=window)
        last = facts[-1]
        if isinstance(last, ev.AlertRouted):
            out.append((minute, last.reason))
        else:
            assert isinstance(last, ev.AlertSuppressed)
            out.append((minute, last.cause))
    return out


@pytest.mark.parametrize(
    ("bucket", "old", "new", "expected"),
    [
        (B0 + 1, 600.0, HOUR, B0 // 6),  # 00:10 lies in the hour that starts at 00:00
        (B0 + 5, 600.0, HOUR, B0 // 6),
        (B0 + 6, 600.0, HOUR, B0 // 6 + 1),
        (B0 // 6, HOUR, 600.0, B0),  # an hour's bucket starts with its first 10 minutes
        (B0, 600.0, 600.0, B0),
        (B0, 600.0, 900.0, (B0 * 600) // 900),
    ],
)
def test_rebucket_maps_a_bucket_to_the_new_window_by_its_start(
    bucket: int, old: float, new: float, expected: int
) -> None:
    assert rebucket(bucket, old, new) == expected


def test_a_longer_window_still_brings_a_reminder_after_its_length() -> None:
    """10m -> 1h: the alert's bucket was a 10-minute index, six times any hour index,
    so without rebucketing no later event was ever in a new bucket: no reminder, ever."""
    run = Run()
    load_config(run, 600.0, T0)
    assert verdicts(run, [0, 15], 600.0) == [(0, "firing"), (15, "reminder")]
    load_config(run, HOUR, T0 + 20 * MINUTE)
    assert verdicts(run, [25, 40, 59, 60, 61, 119, 120], HOUR) == [
        (25, "duplicate"),
        (40, "duplicate"),
        (59, "duplicate"),
        (60, "reminder"),
        (61, "duplicate"),
        (119, "duplicate"),
        (120, "reminder"),
    ]
    suppressed = run.feed(normalized(121), window=HOUR)[-1]
    assert isinstance(suppressed, ev.AlertSuppressed)
    # The documented shape: the fingerprint and the bucket under the current window.
    assert suppressed.dedup_key == f"{suppressed.fingerprint}:{bucket_of(T0, HOUR) + 2}"
    assert run.state == rebuild(run.log)


def test_a_shorter_window_brings_one_reminder_per_new_bucket_not_a_burst() -> None:
    """1h -> 10m: the alert's bucket was an hour index, far behind every 10-minute
    index, so without rebucketing the next event was a reminder at once, even inside
    the 10 minutes already notified."""
    run = Run()
    load_config(run, HOUR, T0)
    assert verdicts(run, [0], HOUR) == [(0, "firing")]
    load_config(run, 600.0, T0 + MINUTE)
    assert verdicts(run, [2, 5, 9, 10, 12, 19, 20, 25, 31], 600.0) == [
        (2, "duplicate"),
        (5, "duplicate"),
        (9, "duplicate"),
        (10, "reminder"),
        (12, "duplicate"),
        (19, "duplicate"),
        (20, "reminder"),
        (25, "duplicate"),
        (31, "reminder"),
    ]
    assert run.state == rebuild(run.log)


def test_the_same_window_loaded_again_moves_no_bucket() -> None:
    """A restart with an unchanged window (or a first config.loaded) leaves the open
    alerts' buckets as they are."""
    run = Run()
    run.feed(normalized(0))
    before = msgspec.structs.replace(next(iter(run.state.open_by_fingerprint.values())))
    load_config(run, WINDOW, T0 + MINUTE)
    load_config(run, WINDOW, T0 + 2 * MINUTE)
    assert next(iter(run.state.open_by_fingerprint.values())) == before
    assert run.state.dedup_window == WINDOW
