"""What every channel needs to send a group notification (DESIGN.md section 11) as one
message: its alerts in order, the leading ones that fit a provider's limit, the count of
the rest ("and N more"), and a stable key of bounded length made from the group key.

A channel lists the alerts the body lists, most severe first, then oldest, and stops at
the first one that does not fit its provider's limit (a count of blocks, embeds,
characters or bytes), so what is shown is always a prefix of that order and never
skips a severe alert to fit a milder one. Everything not shown, the body's own
``truncated_alerts`` (the route's ``max_alerts``) plus what the channel had to leave
out, is counted in one "and N more" text.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

import msgspec

from tocsin.core.contracts import SEVERITY_RANK, AlertInGroup, GroupNotification

T = TypeVar("T")

# What separates a long key's readable head from its digest in ``short_key``.
KEY_DIGEST_MARK = "~"


def _rank(alert: AlertInGroup) -> tuple[int, str]:
    return (-SEVERITY_RANK.get(alert.severity, 0), alert.first_seen)


def in_order(group: GroupNotification) -> GroupNotification:
    """``group`` with its alerts most severe first, then oldest (section 11's order,
    which the router already keeps; a body out of order is sorted, stably, so that
    "the first alert" means the same in every channel)."""
    ranks = [_rank(alert) for alert in group.alerts]
    if all(earlier <= later for earlier, later in itertools.pairwise(ranks)):
        return group
    return msgspec.structs.replace(group, alerts=sorted(group.alerts, key=_rank))


def alert_count(group: GroupNotification) -> int:
    """How many alerts the group has: those listed plus those the route cut."""
    return len(group.alerts) + group.truncated_alerts


def not_shown(group: GroupNotification, shown: int) -> int:
    """The alerts of ``group`` a message that lists its first ``shown`` does not show."""
    return alert_count(group) - shown


def and_more(count: int) -> str:
    """The text that counts the alerts a message does not show ("and 497 more"), or ""
    when it shows them all."""
    return f"and {count} more" if count > 0 else ""


def first_summary(group: GroupNotification) -> str:
    """The summary of the group's first (most severe, oldest) alert, "" when it lists
    none."""
    return group.alerts[0].summary if group.alerts else ""


def latest_seen(group: GroupNotification) -> str | None:
    """The newest ``last_seen`` among the listed alerts (RFC 3339 UTC strings of one
    format, so they order as text), or None when none is listed."""
    return max((alert.last_seen for alert in group.alerts), default=None)


def first_source(group: GroupNotification, default: str = "tocsin") -> str:
    """The source of the group's first alert (the one its summary names), else
    ``default``."""
    return group.alerts[0].source if group.alerts else default


def fit(
    items: Iterable[T],
    cost: Callable[[T], int],
    budget: int,
    *,
    max_items: int | None = None,
) -> list[T]:
    """The leading ``items`` whose costs add up to at most ``budget``, at most
    ``max_items`` of them; stops at the first that does not fit (order is meaning).
    ``items`` is consumed lazily, so a costly rendering is done only for what is tried."""
    kept: list[T] = []
    for item in items:
        if max_items is not None and len(kept) >= max_items:
            break
        size = cost(item)
        if size > budget:
            break
        kept.append(item)
        budget -= size
    return kept


def fit_rendered(render: Callable[[int], str], count: int, limit: int) -> tuple[str, int]:
    """The rendering of the most alerts, of ``count``, whose text is at most ``limit``
    characters, and how many that is: ``render(n)`` renders a text listing the first
    ``n`` (and counting the rest). With none fitting, the rendering of 0 (which the
    caller then cuts). A binary search whose first two tries bracket the share of the
    alerts that the whole text's length says should fit: renderings cost in proportion
    to the alerts they list, and lines of one group are alike."""
    text = render(count)
    if len(text) <= limit:
        return text, count
    best, best_text = 0, ""
    low, high = 1, count - 1
    guess = max(1, count * limit // len(text))
    tries = [guess, guess + guess // 5 + 1]
    while low <= high:
        middle = tries.pop(0) if tries else (low + high) // 2
        if not low <= middle <= high:
            continue
        candidate = render(middle)
        if len(candidate) <= limit:
            best, best_text = middle, candidate
            low = middle + 1
        else:
            high = middle - 1
    return (best_text if best else render(0)), best


def short_key(key: str, limit: int) -> str:
    """``key`` when it has at most ``limit`` characters, else its head and the SHA-256
    of the whole key (``<head>~<64 hex digits>``) in exactly ``limit``: stable across
    restarts and processes, distinct for distinct keys, and still readable. ``limit``
    must leave room for the digest (PagerDuty's 255 and Opsgenie's 512 do)."""
    if len(key) <= limit:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()
    room = limit - len(digest) - len(KEY_DIGEST_MARK)
    if room < 0:
        raise ValueError(f"a key limit of {limit} leaves no room for a SHA-256 digest")
    return key[:room] + KEY_DIGEST_MARK + digest


def pairs_text(labels: dict[str, str], *, skip: Sequence[str] = ()) -> str:
    """``key=value`` per entry, sorted by key, joined by ", "; ``skip`` names keys left
    out (an alert's labels that the group's labels already show)."""
    return ", ".join(f"{key}={value}" for key, value in sorted(labels.items()) if key not in skip)


def shared_labels(group: GroupNotification) -> list[str]:
    """The label names the group is keyed by (``labels.<name>`` in ``group_labels``):
    every alert of the group has the same value for them, so a per-alert line can leave
    them out."""
    prefix = "labels."
    return [key.removeprefix(prefix) for key in group.group_labels if key.startswith(prefix)]
