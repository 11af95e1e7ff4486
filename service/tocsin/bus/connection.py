"""How tocsin logs in to NATS: the one place credentials and TLS become nats-py options.

Every connection tocsin opens (``serve``, ``router``, ``deliver``, ``publish``,
``retry-failed``) is made with ``connect_options(login)``, where ``login`` is the
validated ``[nats]`` section (``config.NatsLogin``). URLs are shown only through
``redact.display_url``, so a password written into ``TOCSIN_NATS_URL`` reaches no log line, no
``/readyz`` answer and no error message.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client as NATS

from tocsin.bus import wire
from tocsin.core.errors import ConfigError
from tocsin.observability.redact import Secret, display_url

log = logging.getLogger("tocsin.broker")


def tls_context(login: NatsLogin) -> ssl.SSLContext | None:
    """The client TLS context, or ``None`` when nothing about TLS is configured (nats-py
    then uses the system's trust store if the server asks for TLS). With ``tls_ca`` only
    that CA is trusted; ``tls_cert`` + ``tls_key`` are the client certificate."""
    if not login.tls:
        return None
    try:
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=str(login.tls_ca) if login.tls_ca else None
        )
    except (ssl.SSLError, OSError) as error:
        raise ConfigError(f"nats.tls_ca: not a PEM CA certificate: {error}") from error
    if login.tls_cert is not None and login.tls_key is not None:
        try:
            context.load_cert_chain(login.tls_cert, login.tls_key)
        except (ssl.SSLError, OSError) as error:
            raise ConfigError(
                f"nats.tls_cert: cannot load the client certificate with nats.tls_key: {error}"
            ) from error
    if not login.tls_verify_hostname:
        context.check_hostname = False  # the chain is still verified
    return context


def connect_options(login: NatsLogin) -> dict[str, Any]:
    """Keyword arguments for ``nats.connect`` that authenticate as ``login`` says."""
    options: dict[str, Any] = {}
    if login.user is not None and login.password is not None:
        options["user"] = login.user
        options["password"] = login.password.reveal()
    elif login.token is not None:
        options["token"] = login.token.reveal()
    elif login.nkey_seed is not None:
        options["nkeys_seed"] = str(login.nkey_seed)
    elif login.creds is not None:
        options["user_credentials"] = str(login.creds)
    context = tls_context(login)
    if context is not None:
        options["tls"] = context
    return options


def server_urls(url: str) -> list[str]:
    """``nats://a:4222,nats://b:4222`` -> each URL: a cluster named by several seeds, so
    that a client starts even while one of them is down (NATS's usual comma list)."""
    return [part.strip() for part in url.split(",") if part.strip()]


async def connect(url: str, name: str, login: dict[str, Any] | None = None) -> NATS:
    """A connection that reconnects forever and logs what happens to it. ``url`` may
    list several servers, comma-separated; the client also learns the rest of a cluster
    from the server it reaches, and fails over to them. ``login`` is
    ``connection.connect_options(...)``: credentials and TLS."""
    shown = display_url(url)
    client: list[NATS] = []  # set once connected: the callbacks ask it why it disconnected

    async def on_disconnect() -> None:
        if client and (client[0].is_draining or client[0].is_closed):
            log.info("closed the connection to NATS at %s", shown)  # our own stop
            return
        log.warning("disconnected from NATS at %s", shown)

    async def on_reconnect() -> None:
        log.info("reconnected to NATS at %s", shown)

    async def on_error(error: Exception) -> None:
        log.warning("NATS error: %s", error)

    nc = await nats.connect(
        server_urls(url),
        **(login or {}),
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        connect_timeout=5,
        allow_reconnect=True,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
        error_cb=on_error,
        pending_size=64 * 1024 * 1024,
    )
    client.append(nc)
    wire.parse_quickly(nc)
    return nc


@dataclass(frozen=True)
class NatsLogin:
    """How every tocsin connection logs in to NATS (``[nats]`` + ``TOCSIN_NATS_*``),
    validated: at most one way to authenticate, files that exist, a client certificate
    with its key. ``tocsin.connection.connect_options`` turns it into nats-py's options."""

    user: str | None = None
    password: Secret | None = None
    token: Secret | None = None
    nkey_seed: Path | None = None
    creds: Path | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_verify_hostname: bool = True

    @property
    def method(self) -> str:
        """How it authenticates: ``user``, ``token``, ``nkey``, ``creds`` or ``none``."""
        if self.user is not None:
            return "user"
        if self.token is not None:
            return "token"
        if self.nkey_seed is not None:
            return "nkey"
        if self.creds is not None:
            return "creds"
        return "none"

    @property
    def tls(self) -> bool:
        """Whether any TLS setting differs from nats-py's defaults."""
        return bool(self.tls_ca or self.tls_cert or not self.tls_verify_hostname)
