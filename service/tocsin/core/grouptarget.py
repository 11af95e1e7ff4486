"""One group an alert's news joins (pure data, imported by the decision stages and
the routing table alike, so it sits apart from both)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tocsin.core.groups import Grouping


@dataclass(frozen=True, slots=True)
class GroupTarget:
    """A grouped route's receiver and ``group_by`` values for one alert."""

    key: str
    receiver: str
    route: int
    labels: dict[str, str]
    grouping: Grouping | None  # None: a resolve's group, known from the state
