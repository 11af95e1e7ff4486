"""The local spool: events not yet acknowledged by JetStream, one JSON line each, in order.

Every event is written here before it is published and removed once its PubAck came
back, so an outage (or a crash mid-publish) loses nothing; a re-send carries the
original ``event_id``, which the service dedups for 24 h, so it duplicates nothing.

Bounded: past ``max_events`` the oldest of the least severe events goes (the oldest info
first, then warnings, then errors); a critical is never dropped, so criticals alone may
take the spool past its bound. Threads and processes share one file safely: every change
happens under an exclusive ``flock`` on ``<spool>.lock`` (and a thread lock, since a
process may hold several emitters), taken with a deadline so no caller waits past it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec

from tocsin_client.event import SEVERITIES

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: threads of one process only
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("tocsin_client")

DEFAULT_MAX_EVENTS = 1000
_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}
_thread_locks: dict[Path, threading.Lock] = {}
_thread_locks_guard = threading.Lock()
# A forked child starts with fresh thread locks: one held by a parent's thread at the
# fork would stay held in the child for ever (the file lock is the child's own anyway).
os.register_at_fork(after_in_child=_thread_locks.clear)


class SpoolBusy(Exception):
    """The spool's lock was not free before the deadline."""


class Entry(msgspec.Struct, frozen=True):
    """One spooled event: everything a re-send needs, the payload verbatim."""

    event_id: str
    severity: str
    subject: str
    payload: str  # the event's JSON, as sent
    traceparent: str | None = None


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Entry)


@dataclass(frozen=True)
class Added:
    """What ``Spool.add`` did: whether the new event is kept, and what it pushed out."""

    kept: bool
    dropped: tuple[Entry, ...] = ()


def default_path() -> Path:
    """``TOCSIN_SPOOL``, else ``~/.cache/tocsin/spool.jsonl``."""
    configured = os.environ.get("TOCSIN_SPOOL")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "tocsin" / "spool.jsonl"


def choose_drops(entries: list[Entry], max_events: int) -> list[Entry]:
    """Which of ``entries`` (oldest first) to drop to get back to ``max_events``: the
    oldest of the least severe each time, never a critical (pure)."""
    excess = len(entries) - max_events
    if excess <= 0:
        return []
    candidates = [
        (rank, position, entry)
        for position, entry in enumerate(entries)
        if (rank := _RANK.get(entry.severity, 0)) < _RANK["critical"]
    ]
    candidates.sort(key=lambda item: (item[0], item[1]))
    return [entry for _, _, entry in candidates[:excess]]


class Spool:
    """The spool file at ``path``, bounded to ``max_events`` (criticals excepted)."""

    def __init__(self, path: Path | str | None = None, max_events: int = DEFAULT_MAX_EVENTS):
        self.path = Path(path).expanduser() if path is not None else default_path()
        self.max_events = max(1, int(max_events))
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        self._key = self.path.resolve()

    def add(self, entry: Entry, deadline: float) -> Added:
        """Append ``entry``, dropping what the bound says (maybe ``entry`` itself)."""
        with self._locked(deadline):
            entries = self._read()
            entries.append(entry)
            drops = choose_drops(entries, self.max_events)
            if not drops:
                with self.path.open("ab") as out:
                    out.write(_encoder.encode(entry) + b"\n")
                return Added(kept=True)
            dropped_ids = {id(drop) for drop in drops}
            self._write(e for e in entries if id(e) not in dropped_ids)
            return Added(kept=id(entry) not in dropped_ids, dropped=tuple(drops))

    def entries(self, deadline: float) -> list[Entry]:
        """Every spooled event, oldest first."""
        with self._locked(deadline):
            return self._read()

    def remove(self, event_ids: set[str], deadline: float) -> None:
        """Forget the events whose PubAck came back."""
        if not event_ids:
            return
        with self._locked(deadline):
            entries = self._read()
            kept = [entry for entry in entries if entry.event_id not in event_ids]
            if len(kept) != len(entries):
                self._write(kept)

    def _read(self) -> list[Entry]:
        try:
            lines = self.path.read_bytes().splitlines()
        except FileNotFoundError:
            return []
        entries = []
        for line in lines:
            if not line.strip():
                continue
            try:
                entries.append(_decoder.decode(line))
            except msgspec.DecodeError:  # a line cut by a crash: nothing to re-send
                log.warning("tocsin_client: skipping an unreadable line in %s", self.path)
        return entries

    def _write(self, entries: Iterable[Entry]) -> None:
        """Replace the file at once (a crash leaves the old one or the new one)."""
        temporary = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        with temporary.open("wb") as out:
            out.writelines(_encoder.encode(entry) + b"\n" for entry in entries)
        os.replace(temporary, self.path)

    @contextlib.contextmanager
    def _locked(self, deadline: float) -> Iterator[None]:
        """Both locks, or ``SpoolBusy`` at ``deadline`` (polled, never an unbounded wait)."""
        with _thread_locks_guard:
            thread_lock = _thread_locks.setdefault(self._key, threading.Lock())
        if not thread_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise SpoolBusy(str(self.path))
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if fcntl is None:  # pragma: no cover
                yield
                return
            with self._lock_path.open("a") as handle:
                while True:
                    try:
                        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() >= deadline:
                            raise SpoolBusy(str(self.path)) from None
                        time.sleep(0.002)
                try:
                    yield
                finally:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        finally:
            thread_lock.release()
