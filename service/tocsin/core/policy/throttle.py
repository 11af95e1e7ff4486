"""Per-receiver rate limit (pure): ``max_per_minute`` notifications, never dropped.

A token bucket refilled continuously at ``max_per_minute / 60`` tokens a second, holding
at most ``burst`` tokens (default a sixth of the minute's budget, at least 1): a quiet
receiver takes a short flurry at once, and no minute sees more than the budget plus
that burst.
Work over the limit waits its turn; among waiting work, higher severity goes first,
then the oldest.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from tocsin.core.contracts import SEVERITY_RANK

T = TypeVar("T")


class TokenBucket:
    """``wait(now)`` says how long until a token is free; ``take(now)`` spends one."""

    def __init__(self, per_minute: int, burst: int | None = None) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self.rate = per_minute / 60.0
        self.capacity = float(burst if burst is not None else max(1, per_minute // 6))
        self._tokens = self.capacity
        self._at: float | None = None

    def _refill(self, now: float) -> None:
        if self._at is not None:
            self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
        self._at = now

    def wait(self, now: float) -> float:
        """Seconds until ``take`` would succeed (0 when it would now)."""
        self._refill(now)
        return 0.0 if self._tokens >= 1.0 else (1.0 - self._tokens) / self.rate

    def take(self, now: float) -> bool:
        self._refill(now)
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


@dataclass(order=True)
class _Entry(Generic[T]):
    priority: tuple[int, int]
    item: T = field(compare=False)


class PriorityLine(Generic[T]):
    """Waiting work: highest severity first, then first come, first served."""

    def __init__(self) -> None:
        self._heap: list[_Entry[T]] = []
        self._order = itertools.count()

    def push(self, severity: str, item: T) -> None:
        priority = (-SEVERITY_RANK.get(severity, 0), next(self._order))
        heapq.heappush(self._heap, _Entry(priority, item))

    def pop(self) -> T:
        return heapq.heappop(self._heap).item

    def __len__(self) -> int:
        return len(self._heap)
