"""Identifiers tocsin makes that are not stored facts' ids: a ``traceparent`` that
continues a trace whose span is not at hand."""

from __future__ import annotations

import random


def traceparent_for(trace_id: str) -> str:
    """A ``traceparent`` continuing ``trace_id`` with a fresh span id (for a message
    whose span is not at hand)."""
    return f"00-{trace_id}-{random.getrandbits(64) or 1:016x}-01"
