"""What the HTTP layer reads and acts through, wired by ``service.run``.

The app is created before NATS answers, so the parts that need the broker (``control``,
``js``) are filled in later; a handler that needs one that is missing answers 503.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tocsin.core import events as ev
from tocsin.core.alert_index import AlertIndex
from tocsin.core.state import State
from tocsin.observability.telemetry import Metrics

if TYPE_CHECKING:
    from nats.js import JetStreamContext

    from tocsin.pipeline.control import Control
    from tocsin.store.reader import LogReader


class Readiness:
    """Why the service is not ready, or ``None`` when it is: the start-up stage, then
    whatever the running parts report (a log that refuses writes, a lost broker)."""

    def __init__(self) -> None:
        self.stage: str | None = "starting"
        self.checks: list[Callable[[], str | None]] = []

    @property
    def reason(self) -> str | None:
        if self.stage is not None:
            return self.stage
        for check in self.checks:
            problem = check()
            if problem is not None:
                return problem
        return None


class LiveFeed:
    """Wakes Server-Sent-Event streams when facts are committed. Each stream waits on
    its own event; a burst of commits wakes it once (it then reads the projection),
    so a slow browser never holds a queue of facts in memory."""

    def __init__(self) -> None:
        self._waiters: set[asyncio.Event] = set()
        self.last_seq = 0  # the last committed seq (set at start, then by each commit)
        self.closed = False

    @property
    def subscribers(self) -> int:
        return len(self._waiters)

    def close(self) -> None:
        """The service is stopping: wake every stream so it ends (and lets uvicorn stop)."""
        self.closed = True
        for waiter in self._waiters:
            waiter.set()

    def committed(self, facts: list[ev.Event], state: State) -> None:
        """A ledger listener."""
        self.last_seq = state.last_seq
        for waiter in self._waiters:
            waiter.set()

    def subscribe(self) -> asyncio.Event:
        waiter = asyncio.Event()
        self._waiters.add(waiter)
        return waiter

    def unsubscribe(self, waiter: asyncio.Event) -> None:
        self._waiters.discard(waiter)


@dataclass
class ApiContext:
    state: Callable[[], State]
    readiness: Readiness
    metrics: Metrics | None = None
    reader: LogReader | None = None
    control: Control | None = None
    js: JetStreamContext | None = None
    token: str | None = None
    protect_reads: bool = False  # bound beyond loopback: reads need the token too
    live: LiveFeed = field(default_factory=LiveFeed)
    alert_index: AlertIndex | None = None  # the ledger's, kept up to date as it folds
