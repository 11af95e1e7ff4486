"""The HTTP API (DESIGN.md section 7): Litestar, msgspec in and out, OpenAPI generated
from the same types the handlers use.

Handlers are thin: reads shape the projection (and, for histories, the alert's log rows)
through ``queries``; writes go through ``control`` as facts in the log. Every error is
``{"error", "field"}`` with the status the contract names.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import re
import secrets
from typing import Annotated, Any

import msgspec
import uvicorn
from litestar import Litestar, MediaType, Request, Response, delete, get, post
from litestar.connection import ASGIConnection
from litestar.datastructures import MutableScopeHeaders
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    PermissionDeniedException,
    ValidationException,
)
from litestar.handlers import BaseRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.types import Message, Scope
from msgspec import Meta, Struct

from tocsin import __version__
from tocsin.api.amv2 import v2_handlers
from tocsin.api.configs import config_handlers
from tocsin.api.context import ApiContext
from tocsin.core import commands, ingest, views
from tocsin.core.commands import CommandError
from tocsin.core.contracts import MAX_PAYLOAD_BYTES, InboundEvent
from tocsin.core.fold import fold_alert
from tocsin.core.ids import new_id
from tocsin.core.policy.origin import tokenless_mutation_refusal
from tocsin.core.subjects import IN_PREFIX, MSG_ID, heartbeat_subject
from tocsin.core.times import now_us
from tocsin.observability.telemetry import CONTENT_TYPE
from tocsin.observability.tracing import trace_context_from
from tocsin.pipeline.control import RetryReply, RetryRequest
from tocsin.store.reader import LogReader

log = logging.getLogger("tocsin.api")

_SUBJECT_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_FIELD_IN_MESSAGE = re.compile(r"at `\$\.([A-Za-z0-9_]+)")
_MISSING_FIELD = re.compile(r"missing required field `([A-Za-z0-9_]+)`")

Name = Annotated[str, Meta(min_length=1, max_length=commands.MAX_NAME)]
Comment = Annotated[str, Meta(max_length=commands.MAX_COMMENT)]


class ActionBody(Struct, kw_only=True):
    """Who acknowledges or resolves, and why."""

    by: Name
    comment: Comment | None = None


class SilenceBody(Struct, kw_only=True):
    """A silence: ``matchers`` in the route ``match`` grammar (severity, type, source:
    a string or a list; labels: a table; ``*`` suffix = prefix; ``matchers``: a list in
    Alertmanager syntax), or that list alone; times RFC 3339, and ``ends_at`` may be a
    duration after the start (``2h``)."""

    matchers: dict[str, Any] | list[str]
    ends_at: Annotated[str, Meta(min_length=1, max_length=64)]
    created_by: Name
    starts_at: Annotated[str, Meta(max_length=64)] | None = None
    comment: Comment | None = None


class Created(Struct, kw_only=True):
    id: str


class Accepted(Struct, kw_only=True, omit_defaults=True):
    """202 to ``POST /api/v1/events``; ``ignored_fields`` (only when there are some) names
    the body's top-level fields the contract does not know: accepted, not acted on."""

    event_id: str
    ignored_fields: tuple[str, ...] = ()


class BeatAccepted(Struct, kw_only=True):
    """202 to ``POST /api/v1/heartbeats/{name}``: JetStream stored the beat on
    ``alerts.heartbeat.<name>`` under this message id."""

    heartbeat: str
    event_id: str


class ErrorBody(Struct, kw_only=True):
    error: str
    field: str | None = None


# On every response, the JSON API's included: never MIME-sniffed, never framed, no
# Referer leaking paths, not kept by browsers or proxies. A handler's own values win
# (the dashboard sets these too, with its Content-Security-Policy).
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


async def _security_headers(message: Message, scope: Scope) -> None:
    if message["type"] == "http.response.start":
        headers = MutableScopeHeaders.from_message(message)
        for name, value in SECURITY_HEADERS.items():
            if name not in headers:
                headers[name] = value


def _error(status: int, message: str, field: str | None = None, **headers: str) -> Response[Any]:
    return Response(ErrorBody(error=message, field=field), status_code=status, headers=headers)


async def _body_within(request: Request[Any, Any, Any], limit: int) -> bytes | None:
    """The body, or ``None`` once it is known to exceed ``limit`` bytes (from its
    Content-Length, else while reading: never more than ``limit`` + one chunk)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def _now() -> int:
    return now_us()


def _supplied_token(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    """The bearer token, or the password of HTTP Basic (what a browser sends after the
    dashboard's login prompt)."""
    header = connection.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        with contextlib.suppress(ValueError, binascii.Error, UnicodeDecodeError):
            return base64.b64decode(value.strip()).decode().partition(":")[2]
    return None


def probe_handlers(ctx: ApiContext) -> list[Any]:
    """``/healthz``, ``/readyz`` and ``/metrics``: public, and all that ``tocsin router``
    and ``tocsin deliver`` serve (``--health``)."""

    @get("/healthz", media_type=MediaType.TEXT, sync_to_thread=False, opt={"public": True})
    def healthz() -> str:
        """200 while the process runs."""
        return "ok\n"

    @get("/readyz", sync_to_thread=False, opt={"public": True})
    def readyz() -> Response[dict[str, Any]]:
        """200 once streams and consumers exist and projections are rebuilt; else 503."""
        reason = ctx.readiness.reason
        if reason is None:
            return Response({"ready": True}, status_code=200)
        return Response({"ready": False, "reason": reason}, status_code=503)

    @get("/metrics", sync_to_thread=False, include_in_schema=False, opt={"public": True})
    def prometheus() -> Response[bytes]:
        body = ctx.metrics.render() if ctx.metrics is not None else b""
        return Response(body, media_type=CONTENT_TYPE)

    return [healthz, readyz, prometheus]


def create_probe_app(ctx: ApiContext) -> Litestar:
    """The probes alone: no API, no dashboard, no OpenAPI document, nothing to protect."""
    return Litestar(
        route_handlers=probe_handlers(ctx),
        exception_handlers={HTTPException: _http_error, Exception: _internal_error},
        openapi_config=None,
        debug=False,
        logging_config=None,
    )


def create_app(ctx: ApiContext, extra_handlers: list[Any] | None = None) -> Litestar:
    """The app over ``ctx``; ``extra_handlers`` are the dashboard's pages."""

    def authorize(
        connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
    ) -> None:
        """Mutations need the token when one is set; on a non-loopback bind every read
        but the probes needs it too. Without a token, a mutation must come from this
        machine's own client, not from a web page (``core.policy.origin``)."""
        if handler.opt.get("public"):
            return
        mutates = connection.scope.get("method", "GET") not in ("GET", "HEAD", "OPTIONS")
        if ctx.token is None:
            if mutates:
                headers = connection.headers
                refusal = tokenless_mutation_refusal(
                    host=headers.get("host"),
                    origin=headers.get("origin"),
                    content_type=headers.get("content-type"),
                    has_body=headers.get("content-length", "0") != "0"
                    or "transfer-encoding" in headers,
                )
                if refusal is not None:
                    raise PermissionDeniedException(refusal)
            return
        if not (mutates or ctx.protect_reads):
            return
        supplied = _supplied_token(connection)
        if supplied is None or not secrets.compare_digest(supplied.encode(), ctx.token.encode()):
            raise NotAuthorizedException(
                "a valid 'Authorization: Bearer <TOCSIN_API_TOKEN>' is required",
                headers={"WWW-Authenticate": 'Bearer realm="tocsin", Basic realm="tocsin"'},
            )

    # -- alerts -----------------------------------------------------------------------

    @get("/api/v1/alerts")
    async def list_alerts(
        severity: FromQuery[str | None] = None,
        type_: Annotated[str | None, QueryParameter(name="type")] = None,
        status: FromQuery[str | None] = None,
        source: FromQuery[str | None] = None,
        q: FromQuery[str | None] = None,
        limit: FromQuery[int] = views.DEFAULT_LIMIT,
        cursor: FromQuery[str | None] = None,
    ) -> views.AlertPage:
        """Alerts, newest ``last_seen`` first, filtered, one page at a time: those in
        memory by their index, then, as the order reaches them, those resolved long
        enough ago to be let go of, read from the log file off the event loop."""
        query = views.alert_query(
            severity=severity,
            type_=type_,
            status=status,
            source=source,
            q=q,
            limit=limit,
            cursor=cursor,
        )
        state, now = ctx.state(), _now()
        alerts = views.newest_alerts(state, query, ctx.alert_index, now)
        reached = None
        if ctx.reader is not None and query.reaches_the_file():
            older = await ctx.reader.older_alerts(
                skip=state.alerts,
                before=query.before,
                want=query.limit + 1,
                passes=views.accepts(state, query, now),
            )
            alerts += older.alerts
            reached = older.reached
        return views.alert_page(ctx.state(), query, alerts, now, reached)

    async def _rows_of(alert_id: str) -> tuple[Any, list[Any]]:
        """The alert (the projection's, else folded back from the file) and its rows."""
        if ctx.reader is None:
            raise CommandError(503, "this process does not hold the event log")
        alert = ctx.state().alerts.get(alert_id)
        rows = await ctx.reader.of_alert(alert_id)
        if alert is None:
            alert = fold_alert(alert_id, ((r.seq, r.ts, r.data) for r in rows))
        if alert is None:
            raise CommandError(404, f"no alert {alert_id!r} in the log", "id")
        return alert, rows

    @get("/api/v1/alerts/{alert_id:str}")
    async def get_alert(alert_id: FromPath[str]) -> views.AlertDetail:
        """The alert and its history from the log (runs of duplicates folded)."""
        alert, rows = await _rows_of(alert_id)
        return views.alert_detail(ctx.state(), alert, rows, _now())

    @get("/api/v1/alerts/{alert_id:str}/deliveries")
    async def get_deliveries(alert_id: FromPath[str]) -> views.DeliveryList:
        """Every step of every notification of the alert: queued, attempts, outcome."""
        _, rows = await _rows_of(alert_id)
        return views.deliveries(rows)

    def _control() -> Any:
        if ctx.control is None:
            raise CommandError(503, "this process does not run the router (or NATS is away)")
        return ctx.control

    @post("/api/v1/alerts/{alert_id:str}/ack", status_code=200)
    async def ack(alert_id: FromPath[str], data: JSONBody[ActionBody]) -> views.AlertView:
        """Acknowledge: no more reminders for this alert until it resolves (an
        escalation to a higher severity still notifies)."""
        command = commands.Ack(alert_id=alert_id, by=data.by, comment=data.comment, at=_now())
        await _control().command(command)
        state = ctx.state()
        return views.alert_view(state.alerts[alert_id])

    @post("/api/v1/alerts/{alert_id:str}/resolve", status_code=200)
    async def resolve(alert_id: FromPath[str], data: JSONBody[ActionBody]) -> views.AlertView:
        """Resolve by hand; every receiver told of the alert gets a ``resolved``."""
        command = commands.Resolve(alert_id=alert_id, by=data.by, comment=data.comment, at=_now())
        await _control().command(command)
        return views.alert_view(ctx.state().alerts[alert_id])

    # -- groups -----------------------------------------------------------------------

    @get("/api/v1/groups", sync_to_thread=False)
    def list_groups(receiver: FromQuery[str | None] = None) -> views.GroupList:
        """Open notification groups (DESIGN.md section 11), the next due first: each
        with its receiver, group labels, alerts and next due time."""
        return views.group_list(ctx.state(), receiver=receiver)

    # -- heartbeats -------------------------------------------------------------------

    @get("/api/v1/heartbeats", sync_to_thread=False)
    def list_heartbeats() -> views.HeartbeatList:
        """Every configured heartbeat (DESIGN.md section 13), those missed first: its
        rule, its last beat and its next deadline."""
        return views.heartbeat_list(ctx.state())

    @post("/api/v1/heartbeats/{name:str}", status_code=202)
    async def beat(name: FromPath[str], request: Request[Any, Any, Any]) -> BeatAccepted:
        """One beat of a configured heartbeat (any body, or none, is ignored): published
        on ``alerts.heartbeat.<name>`` like any beat, 202 once JetStream stored it; 404
        for a name the configuration does not have."""
        if name not in ctx.state().heartbeats:
            raise CommandError(404, f"no heartbeat {name!r} is configured", "name")
        if ctx.js is None:
            raise CommandError(503, "not connected to NATS yet")
        event_id = new_id()
        headers = {MSG_ID: event_id, **trace_context_from(request.headers)}
        try:
            await ctx.js.publish(heartbeat_subject(name), b"", headers=headers, timeout=5.0)
        except Exception as error:
            log.warning("a beat of %s could not be published: %s", name, error)
            raise CommandError(
                503, f"NATS did not store the beat: {type(error).__name__}"
            ) from error
        return BeatAccepted(heartbeat=name, event_id=event_id)

    # -- silences ---------------------------------------------------------------------

    @get("/api/v1/silences", sync_to_thread=False)
    def list_silences() -> views.SilenceList:
        """Every silence: active and pending first, then newest first."""
        return views.silence_list(ctx.state(), _now())

    @post("/api/v1/silences", status_code=201)
    async def create_silence(data: JSONBody[SilenceBody]) -> Created:
        """Silence the alerts the matchers select while it is active."""
        command = commands.CreateSilence(
            silence_id=new_id(),
            matchers=data.matchers,
            starts_at=data.starts_at,
            ends_at=data.ends_at,
            created_by=data.created_by,
            comment=data.comment,
            now=_now(),
        )
        await _control().command(command)
        return Created(id=command.silence_id)

    @delete("/api/v1/silences/{silence_id:str}", status_code=200)
    async def delete_silence(
        silence_id: FromPath[str], by: FromQuery[str | None] = None
    ) -> Created:
        """Lift a silence before its end."""
        await _control().command(commands.DeleteSilence(silence_id=silence_id, by=by, at=_now()))
        return Created(id=silence_id)

    # -- deliveries, stats, the log ---------------------------------------------------

    @get("/api/v1/notifications/{notification_id:str}")
    async def get_notification(
        notification_id: FromPath[str],
    ) -> views.NotificationView | views.GroupNotificationView:
        """One notification exactly as sent (DESIGN.md invariant 6): its receiver,
        channel, the body it was sent with (the alert as of its routed fact; a group's
        body, DESIGN.md section 11, for a grouped route's) and its attempts. Read from
        the log file, so it answers for every notification the log holds, long after it
        was delivered."""
        if ctx.reader is None:
            raise CommandError(503, "this process does not hold the event log")
        unknown = CommandError(404, f"no notification {notification_id!r}", "notification_id")
        found = await ctx.reader.notification(notification_id)
        if found is None:
            raise unknown
        routed, config, rows = found
        view = views.notification_view(routed, rows, config.receivers if config is not None else {})
        if view is None:  # its alert's earlier rows were compacted into an archive
            raise unknown
        return view

    @post("/api/v1/deliveries/retry", status_code=200)
    async def retry_deliveries(data: JSONBody[RetryRequest | None] = None) -> RetryReply:
        """Re-queue dead-lettered notifications (same as ``tocsin retry-failed``)."""
        return await _control().retry_failed(data or RetryRequest())  # type: ignore[no-any-return]

    @get("/api/v1/stats", sync_to_thread=False)
    def stats(hours: FromQuery[int] = 24) -> views.Stats:
        """Counts over the last ``hours`` hours (hourly buckets of log time)."""
        return views.stats(ctx.state(), hours, _now())

    @get("/api/v1/events")
    async def list_events(
        after_seq: FromQuery[int] = 0,
        limit: FromQuery[int] = views.DEFAULT_EVENTS_LIMIT,
        partition: FromQuery[int | None] = None,
        cursor: FromQuery[str | None] = None,
    ) -> views.EventPage | views.MergedEventPage:
        """The raw log, ascending, a page at a time. Partitioned (``serve --partitions
        N``): one partition's log with ``partition`` (paged by ``after_seq``), else every
        partition's merged by time, each event with its partition, paged by
        ``cursor`` (``next_cursor``: a seq per partition)."""
        views.check_events_limit(limit, after_seq)
        partitions = ctx.partitions
        if partitions is not None:
            if partition is None:
                after = views.events_cursor(cursor, partitions.count, after_seq)
                page = await partitions.page(after, limit)
                return views.merged_event_page(page.rows, page.after if page.more else None)
            if not 0 <= partition < partitions.count:
                raise views.QueryError(
                    "partition", f"partition must be 0 to {partitions.count - 1}"
                )
            one = partitions.logs[partition]
            rows = await one.reader.page(after_seq, limit) if one.reader is not None else []
            return views.event_page(rows, limit, one.state.last_seq)
        if not isinstance(ctx.reader, LogReader):
            raise CommandError(503, "this process does not hold the event log")
        rows = await ctx.reader.page(after_seq, limit)
        return views.event_page(rows, limit, ctx.state().last_seq)

    @post("/api/v1/events", status_code=202, request_max_body_size=None)
    async def ingest_event(request: Request[Any, Any, Any]) -> Response[Any]:
        """Ingest one alert event (the body of ``alerts.in.<source>``) for clients that
        cannot speak NATS; 202 once JetStream has stored it. The body is read only up to
        the contract's limit: a larger one is refused as the contract says (413, counted),
        not by the server's generic body limit."""
        media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media != "application/json":
            return _refused(415, "the body must be application/json", "unsupported_media_type")
        payload = await _body_within(request, MAX_PAYLOAD_BYTES)
        if payload is None:
            declared = request.headers.get("content-length", "")
            size = f"{declared} bytes" if declared.isdigit() else "larger"
            return _refused(
                413,
                f"payload is {size}; the limit is {MAX_PAYLOAD_BYTES}",
                "payload_too_large",
            )
        parsed = ingest.parse(payload, default_source="http", received_at=_now())
        if isinstance(parsed, ingest.Rejection):
            return _refused(parsed.http_status, parsed.message, parsed.code, parsed.field)
        if ctx.js is None:
            return _error(503, "not connected to NATS yet")
        event_id = parsed.event_id or new_id()
        token = parsed.source if _SUBJECT_TOKEN.match(parsed.source) else "http"
        headers = {MSG_ID: event_id, **trace_context_from(request.headers)}
        try:
            await ctx.js.publish(IN_PREFIX + token, payload, headers=headers, timeout=5.0)
        except Exception as error:
            log.warning("HTTP ingest could not publish: %s", error)
            return _error(503, f"NATS did not store the event: {type(error).__name__}")
        accepted = Accepted(event_id=event_id, ignored_fields=parsed.ignored_fields)
        return Response(accepted, status_code=202)

    def _refused(status: int, message: str, code: str, field: str | None = None) -> Response[Any]:
        if ctx.metrics is not None:
            ctx.metrics.http_refused.add(1, {"reason": code})
        return _error(status, message, field)

    # -- the contract itself ----------------------------------------------------------

    @get("/openapi.json", sync_to_thread=False, include_in_schema=False, opt={"public": True})
    def openapi(request: Request[Any, Any, Any]) -> dict[str, Any]:
        return openapi_document(request.app)

    handlers: list[Any] = [
        *probe_handlers(ctx),
        list_alerts,
        get_alert,
        get_deliveries,
        ack,
        resolve,
        list_groups,
        list_heartbeats,
        beat,
        list_silences,
        create_silence,
        delete_silence,
        get_notification,
        retry_deliveries,
        stats,
        list_events,
        ingest_event,
        openapi,
        *v2_handlers(ctx),
        *config_handlers(ctx),
        *(extra_handlers or []),
    ]
    return Litestar(
        route_handlers=handlers,
        guards=[authorize],
        before_send=[_security_headers],
        exception_handlers={
            CommandError: _command_error,
            views.QueryError: _query_error,
            ValidationException: _validation_error,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
        openapi_config=OpenAPIConfig(
            title="tocsin",
            version=__version__,
            path="/schema",
            description="Event-sourced alerting over NATS JetStream (DESIGN.md section 7).",
        ),
        request_max_body_size=1024 * 1024,
        debug=False,
        logging_config=None,
    )


def _command_error(request: Request[Any, Any, Any], error: CommandError) -> Response[Any]:
    return _error(error.status, str(error), error.field)


def _query_error(request: Request[Any, Any, Any], error: views.QueryError) -> Response[Any]:
    return _error(400, str(error), error.field)


def _validation_error(request: Request[Any, Any, Any], error: ValidationException) -> Response[Any]:
    """Litestar's own validation (query parameters, JSON bodies) in the contract's
    shape: 400 for a malformed request or parameter, 422 for a body field."""
    details = error.extra if isinstance(error.extra, list) else []
    first = details[0] if details and isinstance(details[0], dict) else {}
    message = str(first.get("message") or error.detail)
    field = first.get("key") or None
    match = _FIELD_IN_MESSAGE.search(message) or _MISSING_FIELD.search(message)
    if match:
        field = match.group(1)
    lowered = message.lower()
    if "malformed" in lowered or "expected `object`" in lowered:
        return _error(400, message, None)  # not a JSON object at all
    if first.get("source") == "body" or field == "data":
        return _error(422, message, None if field == "data" else field)
    return _error(400, f"{field}: {message}" if field else message, field)


def _http_error(request: Request[Any, Any, Any], error: HTTPException) -> Response[Any]:
    return _error(error.status_code, str(error.detail), None, **(error.headers or {}))


def _internal_error(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    log.exception("%s %s failed", request.method, request.url.path, exc_info=error)
    return _error(500, f"internal error: {type(error).__name__}")


def openapi_document(app: Litestar) -> dict[str, Any]:
    """Litestar's OpenAPI document, with the ingest body described by the contract's own
    ``InboundEvent`` type (the handler reads raw bytes so that 413/415/400/422 follow
    DESIGN.md section 10 exactly, so Litestar cannot infer it)."""
    document: dict[str, Any] = app.openapi_schema.to_schema()
    (inbound,), components = msgspec.json.schema_components(
        [InboundEvent], ref_template="#/components/schemas/{name}"
    )
    document.setdefault("components", {}).setdefault("schemas", {}).update(components)
    operation = document["paths"]["/api/v1/events"]["post"]
    operation["requestBody"] = {
        "required": True,
        "content": {"application/json": {"schema": inbound}},
    }
    return document


class EmbeddedServer(uvicorn.Server):
    """uvicorn inside tocsin's own event loop; tocsin owns the signal handlers."""

    def capture_signals(self) -> Any:
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
