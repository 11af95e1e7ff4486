"""The alert page's timeline (``dashboard.describe``), pure: what a fact says to a
person reading an alert's history."""

from __future__ import annotations

from typing import Any

from tocsin.api.dashboard import describe
from tocsin.core import views


def entry(kind: str, **data: Any) -> tuple[str, str]:
    """(title, detail) of a history record of ``kind`` holding ``data``."""
    described = describe(views.EventRecord(seq=1, ts="2026-11-23T12:00:00Z", kind=kind, data=data))
    return described.title, described.detail


def test_a_received_event_names_the_fields_that_were_ignored() -> None:
    """Issue #23 item 6: the typo (``lables``) shows where the missing labels are looked
    for; an event with none says nothing of it."""
    fields = {"severity": "info", "summary": "s", "subject": "alerts.in.web", "status": "firing"}
    _, detail = entry("alert.received", **fields, ignored_fields=["lables", "sevrity"])
    assert detail.endswith("fields not in the contract, ignored: lables, sevrity")
    _, plain = entry("alert.received", **fields)
    assert "ignored" not in plain
