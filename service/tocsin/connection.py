"""How tocsin logs in to NATS: the one place credentials and TLS become nats-py options.

Every connection tocsin opens (``serve``, ``router``, ``deliver``, ``publish``,
``retry-failed``) is made with ``connect_options(login)``, where ``login`` is the
validated ``[nats]`` section (``config.NatsLogin``). URLs are shown only through
``redact.display_url``, so a password written into ``TOCSIN_NATS_URL`` reaches no log line, no
``/readyz`` answer and no error message.
"""

from __future__ import annotations

import ssl
from typing import Any

from tocsin.config import ConfigError, NatsLogin


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
