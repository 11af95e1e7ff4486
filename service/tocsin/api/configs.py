"""The config as the HTTP API shows and reloads it (DESIGN.md sections 7 and 15):
``GET /api/v1/config`` (the running config, secrets masked, and its version),
``GET /api/v1/config/versions`` (every ``config.loaded`` the log holds, with when) and
``POST /-/reload`` (read the file again; a bad one is answered 400 with its message and
the running config stays)."""

from __future__ import annotations

from typing import Any

from litestar import get, post

from tocsin.api.context import ApiContext
from tocsin.core.commands import CommandError
from tocsin.core.times import format_us
from tocsin.core.versions import versions_of


def config_handlers(ctx: ApiContext) -> list[Any]:
    """The handlers, over ``ctx.reloader`` (the running config) and ``ctx.reader``."""

    def _reloader() -> Any:
        if ctx.reloader is None:
            raise CommandError(503, "this process does not run the router (or is starting)")
        return ctx.reloader

    @get("/api/v1/config", sync_to_thread=False)
    def running_config() -> dict[str, Any]:
        """The config the router decides under now: its version, where it was read
        from, and the document with secrets masked."""
        config = _reloader().config
        return {"version": config.digest(), "source": config.source, "config": config.shown}

    @get("/api/v1/config/versions")
    async def config_versions() -> dict[str, Any]:
        """Every config load the log holds, oldest first, with when (RFC 3339 and the
        log's ``ts``) and what loaded it."""
        if ctx.reader is None:
            raise CommandError(503, "this process does not hold the event log")
        rows = versions_of(await ctx.reader.config_versions())
        for row in rows:
            ts = row["ts"]
            assert isinstance(ts, int)
            row["at"] = format_us(ts)
        running = ctx.reloader.config.digest() if ctx.reloader is not None else None
        return {"running": running, "versions": rows}

    @post("/-/reload", status_code=200)
    async def reload() -> dict[str, Any]:
        """Read the config file again, as ``SIGHUP`` and ``tocsin reload`` do: 200 with
        the version now running, or 400 with why the file was refused."""
        reply = await _reloader().reload("http")
        if reply.error is not None:
            raise CommandError(400, reply.error)
        return {"version": reply.version, "changed": reply.changed}

    return [running_config, config_versions, reload]
