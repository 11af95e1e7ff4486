"""W3C trace context carried in NATS headers: every message is traced, and tocsin starts
a trace when the publisher sent none (DESIGN.md section 10)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")


def trace_id_from(headers: Mapping[str, str] | None) -> str | None:
    """The trace id of a valid ``traceparent`` header, if any."""
    if not headers:
        return None
    value = headers.get("traceparent") or headers.get("Traceparent")
    if not value:
        return None
    match = _TRACEPARENT.match(value.strip().lower())
    if match is None or match.group(1) == "0" * 32:
        return None
    return match.group(1)


def new_trace_id() -> str:
    return os.urandom(16).hex()


def traceparent_for(trace_id: str) -> str:
    """A ``traceparent`` continuing ``trace_id`` with a fresh span id."""
    return f"00-{trace_id}-{os.urandom(8).hex()}-01"
