"""Litestar application: msgspec in and out, OpenAPI generated from the same types."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import uvicorn
from litestar import Litestar, MediaType, Response, get
from litestar.openapi import OpenAPIConfig
from litestar.params import FromQuery, QueryParameter

from tocsin import __version__
from tocsin.api import queries
from tocsin.projections import State
from tocsin.telemetry import CONTENT_TYPE, Metrics


class Readiness:
    """Why the service is not ready, or ``None`` when it is: the start-up stage, then
    whatever the running parts report (a log that refuses writes, a lost broker)."""

    def __init__(self) -> None:
        self.stage: str | None = "starting"
        self.checks: list[Callable[[], str | None]] = []

    @property
    def reason(self) -> str | None:
        if self.stage is not None:
            return self.stage
        for check in self.checks:
            problem = check()
            if problem is not None:
                return problem
        return None


def _error(status: int, message: str, field: str | None = None) -> Response[dict[str, Any]]:
    return Response({"error": message, "field": field}, status_code=status)


def create_app(
    state: Callable[[], State], readiness: Readiness, metrics: Metrics | None = None
) -> Litestar:
    """The app; ``state`` returns the live projection (it is replaced on a rebuild)."""

    @get("/healthz", media_type=MediaType.TEXT, sync_to_thread=False)
    def healthz() -> str:
        return "ok\n"

    @get("/readyz", sync_to_thread=False)
    def readyz() -> Response[dict[str, Any]]:
        reason = readiness.reason
        if reason is None:
            return Response({"ready": True}, status_code=200)
        return Response({"ready": False, "reason": reason}, status_code=503)

    @get("/metrics", sync_to_thread=False, include_in_schema=False)
    def prometheus() -> Response[bytes]:
        body = metrics.render() if metrics is not None else b""
        return Response(body, media_type=CONTENT_TYPE)

    @get("/api/v1/alerts", sync_to_thread=False)
    def list_alerts(
        severity: FromQuery[str | None] = None,
        type_: Annotated[str | None, QueryParameter(name="type")] = None,
        status: FromQuery[str | None] = None,
        source: FromQuery[str | None] = None,
        q: FromQuery[str | None] = None,
        limit: FromQuery[int] = queries.DEFAULT_LIMIT,
        cursor: FromQuery[str | None] = None,
    ) -> Response[Any]:
        try:
            page = queries.list_alerts(
                state(),
                severity=severity,
                type_=type_,
                status=status,
                source=source,
                q=q,
                limit=limit,
                cursor=cursor,
            )
        except queries.QueryError as error:
            return _error(400, str(error), error.field)
        return Response(page)

    return Litestar(
        route_handlers=[healthz, readyz, prometheus, list_alerts],
        openapi_config=OpenAPIConfig(title="tocsin", version=__version__, path="/schema"),
        debug=False,
        logging_config=None,
    )


class EmbeddedServer(uvicorn.Server):
    """uvicorn inside tocsin's own event loop; tocsin owns the signal handlers."""

    def capture_signals(self) -> Any:
        import contextlib

        return contextlib.nullcontext()


def http_server(app: Litestar, host: str, port: int) -> EmbeddedServer:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        log_config=None,  # uvicorn's records go through tocsin's handler (logs.py)
        lifespan="on",
        access_log=False,
    )
    return EmbeddedServer(config)
