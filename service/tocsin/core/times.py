"""Time formats of the contract: RFC 3339 UTC with ``Z`` out, RFC 3339 or a duration in.

Inside tocsin every instant is an ``int`` of microseconds since the epoch: cheap to
compare, exact to store, and formatted only at the edges.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_US = 1_000_000


def now_us() -> int:
    """The wall clock in microseconds since the epoch."""
    return time.time_ns() // 1000


ARRIVAL_CREDIT_US = 60 * _US
"""At most this much of an inbound batch's wait in JetStream counts in its received
time (``received_at``)."""


def received_at(now: int, waited: int, last: int) -> int:
    """When an inbound batch was received, on the ledger's clock ``now``: when JetStream
    stored its last message, ``waited`` microseconds ago by the broker's and this host's
    wall clocks. So a group's wait and the flap windows count from an event's arrival,
    not from the moment a busy router got to it: in a storm the router's backlog would
    otherwise add to every ``group_wait`` (issue #20, W5). At most ``ARRIVAL_CREDIT_US``
    before ``now`` (a broker whose clock runs behind shifts times by no more), and
    never before ``last``, the newest time already in the log: a silence, an ack or a
    config committed before the batch is decided applies to it, as it did when the
    operator saw the storm. The rows keep their append time."""
    credited = min(max(waited, 0), ARRIVAL_CREDIT_US)
    return max(last, now - credited)


def format_us(us: int) -> str:
    """``2026-11-23T12:00:00.123456Z``: the one output format for instants."""
    seconds, micros = divmod(us, _US)
    head = _HEADS.get(seconds)
    if head is None:
        head = _head(seconds)
    return f"{head}{micros:06d}Z"


_HEADS: dict[int, str] = {}
_HEADS_KEPT = 4096


def _head(seconds: int) -> str:
    """The whole-second part and its dot, kept in ``_HEADS``: the instants formatted
    together (a batch of work items, a group's alerts' first and last seen) share few
    seconds, and ``strftime`` is most of the cost (~3 us). A dict lookup, not an
    ``lru_cache`` call: a group notification formats two instants per alert, and
    that call was half of ``format_us`` (W5's flush of 20,000 alerts, issue #20). Let
    go of all at once when full: a day has more seconds than it keeps."""
    if len(_HEADS) >= _HEADS_KEPT:
        _HEADS.clear()
    head = _HEADS[seconds] = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(seconds))
    return head


_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?(?P<offset>[Zz]|[+-]\d{2}:\d{2})?$"
)


def parse_rfc3339(text: str) -> int:
    """Parse an RFC 3339 instant that carries an offset; naive times raise ``ValueError``.

    The form ``format_us`` writes, whose whole-second head was parsed before, is read
    with a dict lookup (``_SECONDS``): the recorder parses an instant per outcome, and
    the general parse costs ~3 us (issue #20)."""
    if len(text) == _FORMATTED_LENGTH and text[-1] == "Z":
        seconds = _SECONDS.get(text[:_HEAD_LENGTH])
        micros = text[_HEAD_LENGTH:-1]
        if seconds is not None and micros.isascii() and micros.isdigit():
            return seconds * _US + int(micros)
    parsed = _parsed_rfc3339(text)
    if len(text) == _FORMATTED_LENGTH and text == format_us(parsed):  # learn its head
        if len(_SECONDS) >= _HEADS_KEPT:
            _SECONDS.clear()
        _SECONDS[text[:_HEAD_LENGTH]] = parsed // _US
    return parsed


_SECONDS: dict[str, int] = {}  # a ``format_us`` head (``_head``) -> its seconds
_HEAD_LENGTH = len("2026-11-23T12:00:00.")
_FORMATTED_LENGTH = len("2026-11-23T12:00:00.123456Z")


def _parsed_rfc3339(text: str) -> int:
    """``parse_rfc3339`` of any form."""
    match = _RFC3339.match(text.strip())
    if match is None:
        raise ValueError("not RFC 3339 (like 2026-11-23T12:00:00Z)")
    if match.group("offset") is None:
        raise ValueError("timestamp has no UTC offset")
    body = text.strip()
    fraction = match.group(1)
    if fraction and len(fraction) > 7:  # Python parses at most microseconds
        body = body.replace(fraction, fraction[:7], 1)
    stamp = datetime.fromisoformat(body.replace("z", "Z").replace("t", "T"))
    if stamp.tzinfo is None:
        raise ValueError("timestamp has no UTC offset")
    delta = stamp.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * _US + delta.microseconds


def parse_duration(text: str) -> float:
    """``"90s"``, ``"15m"``, ``"2h"``, ``"7d"``, ``"250ms"`` -> seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration like 90s, 15m, 2h or 7d")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def parse_instant(text: str, now: int | None = None) -> int:
    """A command-line time: RFC 3339, or a duration back from now (``15m`` = 15 minutes ago)."""
    try:
        return (now_us() if now is None else now) - int(parse_duration(text) * _US)
    except ValueError:
        pass
    try:
        return parse_rfc3339(text)
    except ValueError as error:
        raise ValueError(
            f"{text!r} is neither RFC 3339 with an offset nor a duration like 15m"
        ) from error


class Duration(float):
    """Seconds, written in config as ``"10s"``, ``"2m"``, ``"250ms"`` (or a bare number)."""


def decode_duration(value: object) -> Duration:
    """msgspec ``dec_hook`` body for ``Duration``: errors come back with the key's path."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 10s")
    if isinstance(value, int | float):
        return Duration(value)
    if isinstance(value, str):
        return Duration(parse_duration(value))
    raise ValueError(f"expected a duration like 10s, got {value!r}")
