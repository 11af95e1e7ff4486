"""What the HTTP layer reads and acts through, wired by ``service.run``.

The app is created before NATS answers, so the parts that need the broker (``control``,
``js``) are filled in later; a handler that needs one that is missing answers 503.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tocsin.core import events as ev
from tocsin.core import views
from tocsin.core.alert_index import AlertIndex
from tocsin.core.state import State
from tocsin.observability.telemetry import Metrics

if TYPE_CHECKING:
    from nats.js import JetStreamContext

    from tocsin.pipeline.control import Control
    from tocsin.pipeline.partition_control import PartitionControl
    from tocsin.pipeline.reload import ChildrenReloader, Reloader
    from tocsin.store.partitioned import PartitionedLog
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


NOTABLE_KEPT = 1000  # news the feed remembers for streams that have not sent it yet


class LiveFeed:
    """Wakes Server-Sent-Event streams when facts are committed. Each stream waits on
    its own event; a burst of commits wakes it once (it then reads the projection),
    so a slow browser never holds a queue of facts in memory.

    It also remembers, for all streams together, the last ``NOTABLE_KEPT`` alerts that
    were news to an operator (``views.notable`` for the ``notify`` severities), each
    with the seq it was committed up to: a stream tells its page of those past the seq
    it last sent. More news than that within one second of a stream's sends is lost to
    that stream (its page still lists the alerts)."""

    def __init__(self, notify: Collection[str] = views.DEFAULT_NOTIFY) -> None:
        self._waiters: set[asyncio.Event] = set()
        self.last_seq = 0  # the last committed seq (set at start, then by each commit)
        self.closed = False
        self.notify = tuple(notify)
        self._notable: deque[tuple[int, str]] = deque(maxlen=NOTABLE_KEPT)

    @property
    def subscribers(self) -> int:
        return len(self._waiters)

    def close(self) -> None:
        """The service is stopping: wake every stream so it ends (and lets uvicorn stop)."""
        self.closed = True
        for waiter in self._waiters:
            waiter.set()

    def committed(self, facts: list[ev.Event], state: State, seq: int | None = None) -> None:
        """A ledger listener. ``seq``: the last seq a reader of the file sees now (the
        projection's, unless told; it may be ahead while the next batch commits)."""
        self.last_seq = state.last_seq if seq is None else seq
        for alert_id in views.notable(facts, self.notify):
            self._notable.append((self.last_seq, alert_id))
        for waiter in self._waiters:
            waiter.set()

    def notable_after(self, seq: int) -> list[str]:
        """The alerts that were news in the commits past ``seq``, oldest first."""
        news: list[str] = []
        for upto, alert_id in reversed(self._notable):  # ascending seqs: newest last
            if upto <= seq:
                break
            news.append(alert_id)
        news.reverse()
        return news

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
    reader: LogReader | PartitionedLog | None = None
    control: Control | PartitionControl | None = None
    js: JetStreamContext | None = None
    token: str | None = None
    protect_reads: bool = False  # bound beyond loopback: reads need the token too
    live: LiveFeed = field(default_factory=LiveFeed)
    alert_index: AlertIndex | None = None  # the ledger's, kept up to date as it folds
    reloader: Reloader | ChildrenReloader | None = None  # the running config, its reload (§15)
    partitions: PartitionedLog | None = None  # serve --partitions N: the logs, as one
