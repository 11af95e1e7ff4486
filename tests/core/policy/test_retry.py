"""tocsin.retry: which HTTP answers are retried, ``Retry-After`` parsing, and the
deliver / retry / dead-letter step with its backoff (DESIGN.md sections 5 and 10)."""

from __future__ import annotations

import email.utils
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tocsin.core.policy.retry import (
    SENT,
    SendResult,
    classify_http,
    next_step,
    parse_retry_after,
    permanent,
    retryable,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
NOW_US = (NOW - EPOCH) // timedelta(microseconds=1)
BACKOFF = [1.0, 5.0, 30.0]


def http_date(moment: datetime) -> str:
    return email.utils.format_datetime(moment, usegmt=True)


# --- classify_http ----------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_2xx_is_ok(status: int) -> None:
    result = classify_http(status, httpx.Headers())
    assert (result.ok, result.status_code) == (True, status)


@pytest.mark.parametrize("status", [408, 500, 502, 503, 504])
def test_5xx_and_408_are_retryable(status: int) -> None:
    result = classify_http(status, httpx.Headers(), "upstream down")
    assert (result.ok, result.retryable, result.status_code) == (False, True, status)
    assert result.retry_after is None
    assert f"HTTP {status}" in (result.error or "")


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422])
def test_other_4xx_are_permanent(status: int) -> None:
    result = classify_http(status, httpx.Headers(), "no such hook")
    assert (result.ok, result.retryable, result.status_code) == (False, False, status)
    assert f"HTTP {status}" in (result.error or "")


def test_429_is_retryable_with_retry_after_seconds() -> None:
    result = classify_http(429, httpx.Headers({"Retry-After": "120"}))
    assert (result.ok, result.retryable, result.status_code) == (False, True, 429)
    assert result.retry_after == 120.0


def test_429_without_retry_after_is_retryable_with_no_override() -> None:
    result = classify_http(429, httpx.Headers())
    assert (result.retryable, result.retry_after) == (True, None)


def test_429_with_retry_after_http_date_waits_until_then() -> None:
    target = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    before = time.time()
    result = classify_http(429, httpx.Headers({"Retry-After": http_date(target)}))
    after = time.time()
    assert result.retryable is True
    assert result.retry_after is not None
    slack = 0.01  # clock readings are floats; the bound is what matters, not the microsecond
    assert target.timestamp() - after - slack <= result.retry_after
    assert result.retry_after <= target.timestamp() - before + slack


def test_429_with_retry_after_date_in_the_past_retries_at_once() -> None:
    headers = httpx.Headers({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    assert classify_http(429, headers).retry_after == 0.0


# --- parse_retry_after ------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, "", "soon", "tomorrow", "12 seconds", "-5", "Monday"])
def test_retry_after_absent_or_garbage_is_none(value: str | None) -> None:
    assert parse_retry_after(value, now=NOW_US) is None


@pytest.mark.parametrize(("value", "seconds"), [("0", 0.0), ("7", 7.0), (" 120 ", 120.0)])
def test_retry_after_seconds(value: str, seconds: float) -> None:
    assert parse_retry_after(value, now=NOW_US) == seconds


def test_retry_after_http_date_is_seconds_from_now() -> None:
    assert parse_retry_after(http_date(NOW + timedelta(seconds=90)), now=NOW_US) == 90.0


def test_retry_after_http_date_in_the_past_is_zero() -> None:
    assert parse_retry_after(http_date(NOW - timedelta(minutes=5)), now=NOW_US) == 0.0


# --- next_step --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "delay"), [(1, 1.0), (2, 5.0), (3, 30.0), (4, 30.0), (7, 30.0)]
)
def test_delay_before_attempt_n_plus_1_is_backoff_n_minus_1_last_repeating(
    attempt: int, delay: float
) -> None:
    step = next_step(retryable("HTTP 503", 503), attempt, 8, BACKOFF)
    assert (step.action, step.delay) == ("retry", delay)


@pytest.mark.parametrize("attempt", [8, 9])
def test_retryable_failure_at_max_attempts_is_dead_lettered(attempt: int) -> None:
    assert next_step(retryable("timeout"), attempt, 8, BACKOFF).action == "dead_letter"


def test_single_attempt_budget_dead_letters_the_first_failure() -> None:
    assert next_step(retryable("timeout"), 1, 1, BACKOFF).action == "dead_letter"


def test_permanent_failure_is_dead_lettered_at_attempt_1() -> None:
    assert next_step(permanent("HTTP 404", 404), 1, 8, BACKOFF).action == "dead_letter"


@pytest.mark.parametrize("retry_after", [42.0, 0.0, 3600.0])
def test_retry_after_overrides_the_backoff_delay(retry_after: float) -> None:
    step = next_step(retryable("HTTP 429", 429, retry_after), 1, 8, BACKOFF)
    assert (step.action, step.delay) == ("retry", retry_after)


def test_retry_after_does_not_extend_the_attempt_budget() -> None:
    assert next_step(retryable("HTTP 429", 429, 5.0), 8, 8, BACKOFF).action == "dead_letter"


@pytest.mark.parametrize("attempt", [1, 5, 8])
def test_ok_is_delivered(attempt: int) -> None:
    assert next_step(SENT, attempt, 8, BACKOFF).action == "delivered"
    assert next_step(SendResult(ok=True, status_code=204), attempt, 8, BACKOFF).action == (
        "delivered"
    )
