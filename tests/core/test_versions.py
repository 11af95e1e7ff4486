"""Config as a fact, the pure part (DESIGN.md section 15): routed facts stamped with the
version that decided them, and the versions the log holds."""

from __future__ import annotations

from tocsin.core import events as ev
from tocsin.core.versions import stamped, versions_of


def routed(version: str | None = None) -> ev.AlertRouted:
    return ev.AlertRouted(
        alert_id="a1",
        fingerprint="f",
        dedup_key="d",
        bucket=1,
        reason="firing",
        severity="warning",
        receiver="ops",
        notification_id="n1",
        config_version=version,
    )


def loaded(digest: str, trigger: str) -> ev.ConfigLoaded:
    return ev.ConfigLoaded(
        digest=digest, receivers={}, routes=1, dedup_window_seconds=300, trigger=trigger
    )


def test_stamped_marks_routed_facts_only_and_keeps_a_version_already_set() -> None:
    """Catches a routed fact left without the version that decided it, a stamp that
    overwrites the one a stage set (the clock's group.notified), or one put on a fact
    that routes nothing."""
    opened = ev.AlertResolved(alert_id="a1", fingerprint="f", resolved_at=5)
    out = stamped([opened, routed(), routed("older")], "v2")
    assert out[0] == opened
    assert isinstance(out[1], ev.AlertRouted)
    assert out[1].config_version == "v2"
    assert isinstance(out[2], ev.AlertRouted)
    assert out[2].config_version == "older"


def test_stamped_changes_the_decisions_list_in_place_and_stamps_group_notifications() -> None:
    """Catches ``stamped`` going back to a new list per event (the router's ~1 us an
    event of W2, issue #20), and a kind check by exact type that misses
    ``group.notified``: the list handed over is the one returned, its facts stamped."""
    facts: list[ev.Event] = [routed()]
    notified = ev.GroupNotified(
        group_key="g",
        receiver="ops",
        notification_id="n2",
        reason="firing",
        alert_ids=["a1"],
        resolved_alert_ids=[],
        truncated=0,
        group_labels={},
        status="firing",
        alerts=[],
        due_at=5,
        fired_at=5,
    )
    facts.append(notified)
    out = stamped(facts, "v3")
    assert out is facts
    assert [f.config_version for f in out] == ["v3", "v3"]  # type: ignore[union-attr]


def test_versions_of_lists_every_load_and_says_which_changed_the_version() -> None:
    """Catches a versions list that drops restarts or cannot tell a restart (same
    version) from a change."""
    rows = versions_of(
        [
            (1, 100, loaded("v1", "start")),
            (9, 200, loaded("v1", "start")),
            (20, 300, loaded("v2", "http")),
        ]
    )
    assert [(r["version"], r["seq"], r["ts"], r["trigger"], r["changed"]) for r in rows] == [
        ("v1", 1, 100, "start", True),
        ("v1", 9, 200, "start", False),
        ("v2", 20, 300, "http", True),
    ]
