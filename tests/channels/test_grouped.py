"""channels/grouped.py, the helpers every channel uses for a group notification (pure:
no receiver): the order of the alerts, fitting a prefix of them to a budget, the
"and N more" count, and short keys from long group keys. And the variables the group
templates see (channels/templates.py)."""

from __future__ import annotations

from collections.abc import Iterator

import msgspec
import pytest

from tests.support import make_group, make_group_alert
from tocsin.channels.grouped import (
    alert_count,
    and_more,
    fit,
    fit_rendered,
    in_order,
    not_shown,
    short_key,
)
from tocsin.channels.templates import Templates, escaped, group_context, listing_first


def test_in_order_puts_the_most_severe_then_the_oldest_first() -> None:
    """Catches a channel whose "first alert" (subject, summary, first section) is not
    the most severe one when a body comes out of order; an ordered body is kept as is."""
    alerts = [
        make_group_alert(2, severity="warning"),
        make_group_alert(1, severity="critical"),
        make_group_alert(0, severity="warning"),
        make_group_alert(3, severity="critical"),
    ]
    group = make_group(alerts=alerts)
    assert [alert.alert_id for alert in in_order(group).alerts] == ["a1", "a3", "a0", "a2"]
    ordered = make_group(6)
    assert in_order(ordered) is ordered


def test_counts_and_the_and_more_text() -> None:
    """Catches "and N more" that forgets the route's truncated alerts, or that shows
    when nothing is left out."""
    group = make_group(3, truncated_alerts=10)
    assert alert_count(group) == 13
    assert not_shown(group, 2) == 11
    assert and_more(11) == "and 11 more"
    assert and_more(0) == ""


def test_fit_keeps_the_leading_items_that_fit_and_stops_at_the_first_that_does_not() -> None:
    """Catches a fit that skips a big item to show a smaller later one (the order is
    severity: a milder alert must never take a severer one's place), that passes the
    budget or the item cap, or that builds items past the one that did not fit."""
    built: list[int] = []

    def items() -> Iterator[int]:
        for size in [3, 4, 9, 1, 1]:
            built.append(size)
            yield size

    assert fit(items(), lambda size: size, 10) == [3, 4]
    assert built == [3, 4, 9]  # lazily: nothing after the misfit is made
    assert fit([1, 1, 1, 1], lambda size: size, 10, max_items=3) == [1, 1, 1]
    assert fit([11], lambda size: size, 10) == []


@pytest.mark.parametrize("limit", [0, 5, 37, 100, 1000, 5000])
def test_fit_rendered_finds_the_most_alerts_whose_text_fits(limit: int) -> None:
    """Catches a cut text that lists fewer alerts than fit, or whose text passes the
    limit; lines of unequal length, so a proportional guess alone is not enough."""
    lines = [f"alert {index} " + "x" * (index % 7) * 5 for index in range(200)]

    def render(count: int) -> str:
        return "\n".join(lines[:count]) + f"\nand {200 - count} more"

    text, shown = fit_rendered(render, 200, limit)
    assert text == render(shown)
    fitting = [count for count in range(201) if len(render(count)) <= limit]
    assert shown == (max(fitting) if fitting else 0)


def test_short_key_keeps_short_keys_and_hashes_long_ones_to_the_limit() -> None:
    """Catches a dedup key or alias over its provider's limit, one that changes between
    calls (a resolve that misses its trigger), or two groups that share one because
    their keys differ only past the limit."""
    assert short_key("route-0/pager/labels.service=api", 255) == "route-0/pager/labels.service=api"
    long = "route-0/pager/" + "v" * 400
    key = short_key(long, 255)
    assert len(key) == 255
    assert key == short_key(long, 255)
    assert key.startswith("route-0/pager/vvv")
    assert short_key(long + "x", 255) != key
    assert len(short_key(long * 3, 512)) == 512


def test_group_template_variables() -> None:
    """Catches group templates that do not see the documented variables, and an
    escaper that rewrites variable names (Discord escapes ``_``) instead of values."""
    group = make_group(3, truncated_alerts=2)
    variables = group_context(group, "http://dash")
    assert {
        "notification_id",
        "reason",
        "receiver",
        "group_key",
        "group_labels",
        "status",
        "truncated_alerts",
        "alerts",
        "severity",
        "alert_count",
        "first_summary",
        "not_shown",
        "and_more",
    } == set(variables)
    assert (variables["alert_count"], variables["not_shown"]) == (5, 2)
    first = variables["alerts"][0]
    assert first["alert_url"] == "http://dash/alerts/a0"
    assert (first["notification_id"], first["receiver"], first["group_key"]) == (
        "g-n1",
        "r",
        group.group_key,
    )
    shorter = listing_first(variables, 1)
    assert (len(shorter["alerts"]), shorter["not_shown"], shorter["and_more"]) == (
        1,
        4,
        "and 4 more",
    )

    loud = escaped(variables, str.upper)
    assert set(loud) == set(variables)
    assert set(loud["alerts"][0]) == set(first)
    assert loud["alerts"][0]["summary"] == "HOST H0 UNREACHABLE"
    assert loud["alerts"][0]["labels"] == {"SERVICE": "API", "HOST": "H0"}
    assert loud["alerts"][0]["alert_url"] == "http://dash/alerts/a0"  # built by tocsin

    rendered = Templates().render("group_title", variables)
    assert rendered == "[CRITICAL] 5 alerts: host h0 unreachable"


def test_the_default_group_templates_render_an_empty_group() -> None:
    """Catches a default that raises (a default that fails is not caught by the
    fallback) when every alert of a group was cut by the route."""
    group = msgspec.structs.replace(make_group(0), truncated_alerts=3)
    variables = group_context(group)
    assert Templates().render("group_title", variables) == "[INFO] 3 alerts:"
    assert "and 3 more" in Templates().render("group_body", variables)
