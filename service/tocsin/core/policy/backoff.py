"""How long to wait before asking again (pure): doubling delays up to a ceiling.

Every "the broker or the disk is away, try again" loop in tocsin waits by this one
rule, so they all behave alike: start small (a blip costs little), double each time
(a long outage costs few attempts), never wait longer than the ceiling (recovery is
noticed soon). Delivery retries are a different thing: their delays are the receiver's
configured ``backoff`` list (``tocsin.core.policy.retry``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Backoff:
    """The next delay, in seconds: ``first``, then doubled each call, at most ``ceiling``."""

    first: float
    ceiling: float
    _next: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < self.first <= self.ceiling:
            raise ValueError(
                f"backoff: need 0 < first <= ceiling, got {self.first}, {self.ceiling}"
            )
        self._next = self.first

    def next(self) -> float:
        """The delay to wait now; the one after it is twice as long, up to the ceiling."""
        delay = self._next
        self._next = min(delay * 2, self.ceiling)
        return delay
