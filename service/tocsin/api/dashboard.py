"""The dashboard (``GET /``): server-rendered HTML over the same read models as the API."""

from __future__ import annotations

from typing import Any

from tocsin.api.context import ApiContext


def dashboard_pages(ctx: ApiContext) -> list[Any]:
    """The dashboard's route handlers."""
    return []
