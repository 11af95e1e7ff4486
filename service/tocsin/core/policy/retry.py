"""Retry decisions (pure): classify a send's outcome, then deliver, retry or dead-letter.

One place for the classifier (Alertmanager's ``Retrier`` lesson): timeouts, connection
errors, 5xx, 408 and 429 are retryable, and 429's ``Retry-After`` sets the next delay;
other 4xx and invalid receiver configuration are permanent (DESIGN.md section 5).
"""

from __future__ import annotations

import email.utils
from collections.abc import Mapping, Sequence
from typing import Literal

from msgspec import Struct

from tocsin.core.times import now_us


class SendResult(Struct, frozen=True, kw_only=True):
    """What one attempt to send produced."""

    ok: bool
    retryable: bool = False
    error: str | None = None
    status_code: int | None = None
    retry_after: float | None = None


SENT = SendResult(ok=True)


def retryable(
    error: str, status_code: int | None = None, retry_after: float | None = None
) -> SendResult:
    return SendResult(
        ok=False, retryable=True, error=error, status_code=status_code, retry_after=retry_after
    )


def permanent(error: str, status_code: int | None = None) -> SendResult:
    return SendResult(ok=False, retryable=False, error=error, status_code=status_code)


def classify_http(status: int, headers: Mapping[str, str], body_excerpt: str = "") -> SendResult:
    """The verdict on an HTTP answer."""
    if 200 <= status < 300:
        return SendResult(ok=True, status_code=status)
    detail = f"HTTP {status}" + (f": {body_excerpt[:200]}" if body_excerpt else "")
    if status == 429:
        return retryable(detail, status, parse_retry_after(headers.get("retry-after")))
    if status == 408 or status >= 500:
        return retryable(detail, status)
    return permanent(detail, status)


def parse_retry_after(value: str | None, now: int | None = None) -> float | None:
    """``Retry-After`` as seconds or an HTTP date; ``None`` when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    seconds = when.timestamp() - (now_us() if now is None else now) / 1_000_000
    return max(0.0, seconds)


class Step(Struct, frozen=True, kw_only=True):
    """What a delivery worker does after an attempt."""

    action: Literal["delivered", "retry", "dead_letter"]
    delay: float = 0.0


def next_step(
    result: SendResult, attempt: int, max_attempts: int, backoff: Sequence[float]
) -> Step:
    """Attempt ``attempt`` (1-based) produced ``result``: what now?

    The delay before attempt n+1 is ``backoff[n-1]``, the last entry repeating;
    ``Retry-After`` overrides it.
    """
    if result.ok:
        return Step(action="delivered")
    if not result.retryable or attempt >= max_attempts:
        return Step(action="dead_letter")
    delay = backoff[min(attempt - 1, len(backoff) - 1)] if backoff else 0.0
    if result.retry_after is not None:
        delay = result.retry_after
    return Step(action="retry", delay=delay)
