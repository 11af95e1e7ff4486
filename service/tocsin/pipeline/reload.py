"""Reloading the config while the service runs (DESIGN.md section 15).

``SIGHUP``, ``POST /-/reload`` and ``tocsin reload`` (over ``tocsin.control.reload``)
end in ``Reloader.reload``: the file is read and checked exactly as at start (a bad
one is refused with its message and the running config stays); a good one is logged as
``config.loaded`` and swapped into the router and the clock in the same batch, under the
ledger's lock, so every fact decided after it was decided under it and names its
version, and none is decided half under each.

What a reload changes: routes, grouping, inhibit rules, time intervals, the dedup
window, escalation and flapping settings the fold takes from ``config.loaded``, and an
existing receiver's settings (its URL, credentials, headers, templates,
``max_per_minute``: its worker in this process sends through a channel built anew, the
old one closed once its sends in flight are done). What it does not: the set of
receivers, a receiver's channel kind or ``timeout`` (each receiver has a worker and a
JetStream consumer whose ack wait follows its timeout, made at start), NATS, the log,
the HTTP address. A reload that would need those is refused naming the receiver,
rather than half applied: restart for those. ``tocsin serve``'s delivery children
(``pipeline/supervisor.py``) are told after a good reload and read the file again
themselves (``WorkerReloader``, the same checks); ``tocsin deliver`` processes started
apart have no reload: restart them for a receiver's new settings.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
from nats.aio.client import Client as NATS

from tocsin import config as config_module
from tocsin.channels import Channel
from tocsin.config import Config
from tocsin.core import events as ev
from tocsin.core.errors import ConfigError
from tocsin.core.subjects import RELOAD
from tocsin.observability.redact import Secrets, secrets_of
from tocsin.pipeline.delivery import ReceiverWorker

if TYPE_CHECKING:  # the log's side only: a delivery child's reloads never touch the store
    from tocsin.store.ledger import Ledger

log = logging.getLogger("tocsin.reload")


class ReloadRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Body of ``tocsin.control.reload``: the data dir the caller means (a service
    answers only for its own log)."""

    data_dir: str


class ReloadReply(msgspec.Struct, kw_only=True):
    """The version now running (``changed``: it differs from the one before), or
    ``error``: why the file was refused."""

    version: str | None = None
    changed: bool = False
    error: str | None = None


def loaded_fact(config: Config, trigger: str) -> ev.ConfigLoaded:
    """The ``config.loaded`` of ``config``: its version (digest), what the fold takes
    from it, and the document with secrets masked."""
    return ev.ConfigLoaded(
        digest=config.digest(),
        receivers={name: r.channel for name, r in config.receivers.items()},
        routes=len(config.routes),
        dedup_window_seconds=config.dedup_window,
        resolve_timeout_seconds=config.alerts.resolve_timeout,
        keep_resolved_seconds=float(config.alerts.keep_resolved),
        flapping_changes=None if config.flapping is None else config.flapping.changes,
        flapping_window_seconds=(
            None if config.flapping is None else float(config.flapping.window)
        ),
        heartbeats=config.heartbeats,
        config=config.shown,
        trigger=trigger,
    )


class Reconfigurable(Protocol):
    """What takes a new config under the ledger's lock (the router, the clock)."""

    def reconfigure(self, config: Config) -> None: ...


class Reloader:
    """Reads the service's config file again on demand, refusing a bad one."""

    def __init__(
        self,
        ledger: Ledger,
        running: Config,
        parts: list[Reconfigurable],
        data_dir: Path,
        *,
        workers: dict[str, ReceiverWorker] | None = None,
        build_channel: Callable[[Config, str], Channel] | None = None,
        secrets: Secrets | None = None,
        load: Callable[[str | None], Config] | None = None,
    ) -> None:
        """``parts`` each have ``reconfigure(config)``; ``workers`` are this process's
        delivery workers, by receiver, given a channel from ``build_channel`` when their
        receiver's settings change (whose credentials join ``secrets`` first); ``load``
        reads the file again (by default as ``tocsin serve`` did: the config's
        ``source`` path, or the environment's defaults when it was started without
        one)."""
        self._ledger = ledger
        self.config = running
        self._parts = parts
        self._data_dir = data_dir
        self._workers = workers if workers is not None else {}  # filled in after this
        self._build_channel = build_channel
        self._secrets = secrets or Secrets()
        self._load = load or config_module.load
        self._lock = asyncio.Lock()
        self._then: list[Callable[[], Awaitable[None]]] = []

    def also(self, part: Reconfigurable) -> None:
        """Reconfigure ``part`` too from the next reload on (one made after this)."""
        self._parts.append(part)

    def then(self, tell: Callable[[], Awaitable[None]]) -> None:
        """Await ``tell()`` after each good reload (``tocsin serve`` tells its delivery
        children, which read the file again)."""
        self._then.append(tell)

    @property
    def path(self) -> str | None:
        return file_of(self.config)

    async def reload(self, trigger: str) -> ReloadReply:
        """Load, check, log and swap; a refusal is the reply's ``error`` (nothing is
        logged then, and the running config stays)."""
        async with self._lock:  # two reloads at once: one after the other
            try:
                fresh = await asyncio.to_thread(self._load, self.path)
                changed = _changed_receivers(self.config, fresh)
                self._secrets.add(
                    secrets_of(fresh.receivers, fresh.smtp.password if fresh.smtp else None, {})
                )
                channels = {
                    name: self._build_channel(fresh, name)
                    for name in changed
                    if name in self._workers and self._build_channel is not None
                }
            except ConfigError as error:
                log.warning("reload (%s) refused; the running config stays: %s", trigger, error)
                return ReloadReply(error=str(error))
            before = self.config.digest()
            async with self._ledger.batch() as batch:
                batch.add(loaded_fact(fresh, trigger))
                for part in self._parts:
                    part.reconfigure(fresh)
                for name, channel in channels.items():
                    self._workers[name].reconfigure(channel, fresh.receivers[name].max_per_minute)
                self.config = fresh
            version = fresh.digest()
            for tell in self._then:
                await tell()
            log.info(
                "config reloaded (%s) from %s: version %s%s",
                trigger,
                fresh.source,
                version,
                "" if version != before else " (unchanged)",
            )
            return ReloadReply(version=version, changed=version != before)

    async def answer(self, nc: NATS) -> None:
        """Serve ``tocsin.control.reload`` for ``tocsin reload``."""
        await answer_reloads(nc, self._data_dir, self.reload)


async def answer_reloads(
    nc: NATS, data_dir: Path, reload: Callable[[str], Awaitable[ReloadReply]]
) -> None:
    """Serve ``tocsin.control.reload`` (``tocsin reload``) for the service of
    ``data_dir``; a request for another data dir is another service's: no answer."""

    async def reply(msg: Any) -> None:
        try:
            request = msgspec.json.decode(msg.data, type=ReloadRequest)
        except msgspec.DecodeError as error:
            await msg.respond(msgspec.json.encode(ReloadReply(error=f"bad request: {error}")))
            return
        if not _same_dir(request.data_dir, data_dir):
            return  # another service's log: stay silent
        await msg.respond(msgspec.json.encode(await reload("nats")))

    await nc.subscribe(RELOAD, cb=reply)


class ChildrenReloader:
    """``tocsin serve --partitions N``'s reload (SIGHUP, ``POST /-/reload``, ``tocsin
    reload``): the routers of the partitions, its children, write the logs, so each
    reads the file again and logs its own ``config.loaded``. This process checks the
    file first, so that a file they would refuse leaves every child as it was; then it
    tells each child (``tell``: the routers' supervisor, then the delivery children's)
    and waits for their word."""

    def __init__(
        self,
        config: Config,
        tell: Sequence[Callable[[], Awaitable[None]]],
        load: Callable[[str | None], Config] = config_module.load,
    ) -> None:
        self.config = config
        self._tell = tell
        self._load = load
        self._lock = asyncio.Lock()

    async def reload(self, trigger: str) -> ReloadReply:
        async with self._lock:
            try:
                fresh = await asyncio.to_thread(self._load, file_of(self.config))
                _changed_receivers(self.config, fresh)  # refuses what a restart must do
            except ConfigError as error:
                log.warning("reload (%s) refused; the running config stays: %s", trigger, error)
                return ReloadReply(error=str(error))
            before = self.config.digest()
            for tell in self._tell:
                await tell()
            self.config = fresh
            version = fresh.digest()
            log.info(
                "config reloaded (%s) from %s by every child: version %s%s",
                trigger,
                fresh.source,
                version,
                "" if version != before else " (unchanged)",
            )
            return ReloadReply(version=version, changed=version != before)


def file_of(config: Config) -> str | None:
    """The file ``config`` was read from, to read again; None when it came from the
    environment (read again from it) or was given inline (nothing to read)."""
    source = config.source
    return source if source not in ("defaults", "environment", "inline") else None


class WorkerReloader:
    """A reload where only delivery workers run (a ``tocsin serve`` delivery child, told
    by its parent): the file read again and checked as ``Reloader`` does, and the
    receivers whose settings changed given a channel built anew. Nothing is logged
    here: the parent, which writes the log, logged its ``config.loaded``."""

    def __init__(
        self,
        running: Config,
        workers: dict[str, ReceiverWorker],
        build_channel: Callable[[Config, str], Channel],
        secrets: Secrets,
        load: Callable[[str | None], Config] | None = None,
    ) -> None:
        self.config = running
        self._workers = workers
        self._build_channel = build_channel
        self._secrets = secrets
        self._load = load or config_module.load
        self._lock = asyncio.Lock()

    async def reload(self) -> None:
        """Load, check and swap the changed receivers' channels; a refusal is logged and
        the running settings stay."""
        async with self._lock:
            try:
                fresh = await asyncio.to_thread(self._load, file_of(self.config))
                changed = _changed_receivers(self.config, fresh)
                self._secrets.add(
                    secrets_of(fresh.receivers, fresh.smtp.password if fresh.smtp else None, {})
                )
                channels = {
                    name: self._build_channel(fresh, name)
                    for name in changed
                    if name in self._workers
                }
            except ConfigError as error:
                log.warning("reload refused; the running receivers stay: %s", error)
                return
            for name, channel in channels.items():
                self._workers[name].reconfigure(channel, fresh.receivers[name].max_per_minute)
            self.config = fresh
            log.info(
                "receivers reloaded from %s: %s",
                fresh.source,
                ", ".join(channels) or "none changed",
            )


def _changed_receivers(running: Config, fresh: Config) -> list[str]:
    """The receivers whose settings ``fresh`` changes; a ``ConfigError`` for a change
    that would need a worker made, stopped or its consumer changed (a restart)."""
    added = sorted(set(fresh.receivers) - set(running.receivers))
    removed = sorted(set(running.receivers) - set(fresh.receivers))
    if added or removed:
        what = "; ".join(
            part
            for part in (
                f"added {', '.join(added)}" if added else "",
                f"removed {', '.join(removed)}" if removed else "",
            )
            if part
        )
        raise ConfigError(f"receivers: {what}: adding or removing a receiver needs a restart")
    changed: list[str] = []
    for name, receiver in sorted(fresh.receivers.items()):
        before = running.receivers[name]
        if receiver == before:
            continue
        for key in ("channel", "timeout"):
            if getattr(receiver, key) != getattr(before, key):
                raise ConfigError(f"receivers.{name}.{key}: changing it needs a restart")
        changed.append(name)
    return changed


def _same_dir(asked: str, mine: Path) -> bool:
    try:
        return Path(asked).resolve() == mine.resolve()
    except OSError:
        return False
