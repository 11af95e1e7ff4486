"""Alertmanager's API v2 subset (DESIGN.md section 14): the routes Prometheus, ``amtool``
and Grafana's Alertmanager data source call, in Alertmanager's OpenAPI shapes.

Thin, as every handler: ``core.alertmanager`` translates and shapes, ingest goes to NATS
exactly as ``POST /api/v1/events`` does (so the router judges it like any event), and
silences are tocsin silences, committed as facts through ``control``.
"""

from __future__ import annotations

import asyncio
import re
from typing import Annotated, Any

from litestar import Request, Response, delete, get, post
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from msgspec import Meta, Struct

from tocsin import __version__
from tocsin.api.context import ApiContext
from tocsin.core import alertmanager as am
from tocsin.core import commands
from tocsin.core.commands import CommandError
from tocsin.core.ids import new_id
from tocsin.core.matchers import LabelMatcher, MatcherSyntaxError, parse_all
from tocsin.core.subjects import IN_PREFIX, MSG_ID
from tocsin.core.times import now_us
from tocsin.observability.tracing import trace_context_from

STARTED_AT = now_us()
"""When this process loaded the API: the ``uptime`` of ``GET /api/v2/status``."""

Filter = Annotated[list[str] | None, QueryParameter(name="filter")]


class PostableSilence(Struct, kw_only=True, rename="camel"):
    """``postableSilence``: an ``id`` replaces that silence (it ends, a new one starts)."""

    matchers: Annotated[list[am.AmMatcher], Meta(min_length=1)]
    starts_at: str
    ends_at: str
    created_by: str
    comment: str = ""
    id: str | None = None


class SilenceCreated(Struct, kw_only=True, rename={"silence_id": "silenceID"}):
    silence_id: str


def _matchers(texts: list[str] | None) -> tuple[LabelMatcher, ...]:
    try:
        return parse_all(texts or ())
    except MatcherSyntaxError as error:
        raise CommandError(400, f"bad matcher format: {error}", "filter") from error


def _receiver_pattern(text: str | None) -> re.Pattern[str] | None:
    if text is None:
        return None
    try:
        return re.compile(text)
    except re.error as error:
        raise CommandError(400, f"receiver: not a valid regex: {error}", "receiver") from error


def v2_handlers(ctx: ApiContext) -> list[Any]:
    """The ``/api/v2`` routes over ``ctx``."""

    def control() -> Any:
        if ctx.control is None:
            raise CommandError(503, "this process does not run the router (or NATS is away)")
        return ctx.control

    async def receivers() -> list[str]:
        """The receivers of the running config, as its ``config.loaded`` fact says."""
        if ctx.reader is None:
            return []
        loaded = await ctx.reader.config_as_of(ctx.state().last_seq)
        return sorted(loaded.receivers) if loaded is not None else []

    @post("/api/v2/alerts", status_code=200)
    async def post_alerts(request: Request[Any, Any, Any]) -> Response[bytes]:
        """Alertmanager's ``PostableAlerts``: each alert a section 4 event published to
        ``alerts.in.prometheus``; 200 with an empty body once JetStream stored all of
        them, 400 naming the index and field of the first invalid one (none taken)."""
        translated = am.translate(await request.body(), now_us())
        if isinstance(translated, am.Refused):
            body = {"error": translated.message, "field": translated.field}
            return Response(
                {**body, "index": translated.index},  # type: ignore[arg-type]
                status_code=400,
            )
        if ctx.js is None:
            raise CommandError(503, "not connected to NATS yet")
        js = ctx.js
        trace = trace_context_from(request.headers)
        subject = IN_PREFIX + am.SOURCE

        async def one(alert: am.Translated) -> None:
            headers = {MSG_ID: alert.event_id, **trace}
            await js.publish(subject, alert.payload, headers=headers, timeout=5.0)

        try:
            await asyncio.gather(*(one(alert) for alert in translated))
        except Exception as error:
            raise CommandError(
                503, f"NATS did not store the alerts: {type(error).__name__}"
            ) from error
        return Response(b"", status_code=200)

    @get("/api/v2/alerts", sync_to_thread=False)
    def get_alerts(
        filter_: Filter = None,
        active: FromQuery[bool] = True,
        silenced: FromQuery[bool] = True,
        inhibited: FromQuery[bool] = True,
        unprocessed: FromQuery[bool] = True,
        receiver: FromQuery[str | None] = None,
    ) -> list[am.GettableAlert]:
        """The open alerts, as ``gettableAlerts``; ``filter`` holds matchers.
        ``unprocessed`` (amtool sends it) is accepted and has nothing to select: the
        router judges every alert as it takes it, so none is ever unprocessed."""
        chosen = am.AlertFilter(
            matchers=_matchers(filter_),
            receiver=_receiver_pattern(receiver),
            active=active,
            silenced=silenced,
            inhibited=inhibited,
        )
        return [view for _, view in am.gettable_alerts(ctx.state(), now_us(), chosen)]

    @get("/api/v2/alerts/groups", sync_to_thread=False)
    def get_alert_groups(
        filter_: Filter = None,
        active: FromQuery[bool] = True,
        silenced: FromQuery[bool] = True,
        inhibited: FromQuery[bool] = True,
        receiver: FromQuery[str | None] = None,
    ) -> list[am.AlertGroup]:
        """The open alerts by notification group and receiver (``alertGroups``)."""
        chosen = am.AlertFilter(
            matchers=_matchers(filter_),
            receiver=_receiver_pattern(receiver),
            active=active,
            silenced=silenced,
            inhibited=inhibited,
        )
        state = ctx.state()
        return am.alert_groups(state, am.gettable_alerts(state, now_us(), chosen))

    @get("/api/v2/status")
    async def get_status() -> dict[str, Any]:
        return am.status(await receivers(), __version__, STARTED_AT)

    @get("/api/v2/receivers")
    async def get_receivers() -> list[am.Receiver]:
        return [am.Receiver(name=name) for name in await receivers()]

    @get("/api/v2/silences", sync_to_thread=False)
    def get_silences(filter_: Filter = None) -> list[am.GettableSilence]:
        return am.gettable_silences(ctx.state(), now_us(), _matchers(filter_))

    @get("/api/v2/silence/{silence_id:str}", sync_to_thread=False)
    def get_silence(silence_id: FromPath[str]) -> am.GettableSilence:
        silence = ctx.state().silences.get(silence_id)
        if silence is None:
            raise CommandError(404, f"no silence {silence_id!r}", "silenceID")
        return am.gettable_silence(silence, now_us())

    @post("/api/v2/silences", status_code=200)
    async def post_silence(data: JSONBody[PostableSilence]) -> SilenceCreated:
        """A tocsin silence with the matchers as Alertmanager-syntax strings. With an
        ``id`` it replaces that silence: the old one ends now and a new one starts."""
        try:
            matchers = am.matcher_strings(data.matchers)
        except MatcherSyntaxError as error:
            raise CommandError(400, f"matchers: {error}", "matchers") from error
        now = now_us()

        command = commands.CreateSilence(
            silence_id=new_id(),
            matchers=matchers,
            starts_at=data.starts_at,
            ends_at=data.ends_at,
            created_by=data.created_by,
            comment=data.comment,
            now=now,
            replaces=data.id,
        )
        await control().command(command)
        return SilenceCreated(silence_id=command.silence_id)

    @delete("/api/v2/silence/{silence_id:str}", status_code=200)
    async def delete_silence(silence_id: FromPath[str]) -> Response[bytes]:
        """Expire a silence now (``amtool silence expire``)."""
        await control().command(commands.DeleteSilence(silence_id=silence_id, at=now_us()))
        return Response(b"", status_code=200)

    return [
        post_alerts,
        get_alerts,
        get_alert_groups,
        get_status,
        get_receivers,
        get_silences,
        get_silence,
        post_silence,
        delete_silence,
    ]
