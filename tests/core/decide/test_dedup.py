"""tocsin.dedup: epoch-aligned time buckets and the open / suppress / escalate / reminder /
resolve decision of DESIGN.md section 4."""

from __future__ import annotations

import pytest

from tocsin.core.contracts import Severity
from tocsin.core.decide.dedup import Decision, OpenAlert, bucket_of, decide

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
