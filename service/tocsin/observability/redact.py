"""Secrets never leave in what tocsin writes: logs, metrics, audit messages, the log's
events, the API (the Observability issue, #7).

Two nets, because a secret can reach text two ways:
- Known secrets: every credential the configuration holds (webhook secrets and custom
  auth headers, Slack/Discord/Teams webhook URLs, PagerDuty routing keys, Opsgenie API
  keys, the SMTP password, the API token) is collected by ``secrets_of`` and masked
  wherever it appears verbatim, e.g. in a receiver's error answer that echoes the body.
- URLs: any URL in a text is shown by ``display_url``: no userinfo, query values masked,
  the path of a provider whose webhook path is the credential masked, token-like path
  segments masked. That covers URLs that are not in the config (a NATS URL with a
  password, a redirect target).

Pure functions and one small registry; applied where text is made (delivery errors) and
again where it is written (the log formatters), so one forgotten call site leaks nothing.

Two marks, each promised where it shows, and both defined here only:
- ``MASK``, ``[redacted]``: what stands in a text where a secret was found and taken out
  (README "Secrets stay out"; the log, ``/readyz`` and NATS tests assert it).
- ``HIDDEN``, ``***``: what a value known to be a secret prints as in place of itself,
  with no text around it to search: ``Secret`` (``Secret('***')``, asserted by the
  config tests) and the receiver configs' ``repr``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import msgspec

MASK = "[redacted]"
HIDDEN = "***"
# Shorter values are not masked: they would eat ordinary words out of every log line,
# and a secret of three characters protects nothing anyway.
MIN_SECRET_CHARS = 4
# A path segment this long with both letters and digits reads as a token, not a word.
TOKEN_SEGMENT_CHARS = 16

# Providers whose incoming-webhook path *is* the credential.
_SECRET_PATH_HOSTS = (
    "hooks.slack.com",
    "discord.com",
    "discordapp.com",
    "webhook.office.com",
    "logic.azure.com",
    "environment.api.powerplatform.com",
)
_SECRET_KEYS = re.compile(r"secret|token|password|passwd|key|auth|signature|cookie|credential")
_SECRET_FIELDS = ("secret", "routing_key", "api_key", "password", "token")
# A URL in running text; trailing punctuation belongs to the sentence, not the URL.
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>`]*[^\s'\"<>`.,;:!?)\]}]")
_TOKENISH = re.compile(r"^(?=.*[0-9])(?=.*[a-zA-Z])[A-Za-z0-9_\-.~%+=]+$")
# A NATS server list (TOCSIN_NATS_URL naming a cluster): comma-separated URLs.
_NATS_SERVER = re.compile(r"^(nats|tls|ws|wss)://", re.I)


def _host_has_secret_path(host: str) -> bool:
    host = host.lower()
    return any(host == h or host.endswith("." + h) for h in _SECRET_PATH_HOSTS)


def _tokenish(segment: str) -> bool:
    return len(segment) >= TOKEN_SEGMENT_CHARS and _TOKENISH.match(segment) is not None


def display_url(url: str) -> str:
    """``url`` safe to show: scheme, host and port kept; userinfo dropped; every query
    value, a secret-path provider's path and token-like path segments masked. A NATS
    server list is shown server by server."""
    servers = url.split(",")
    if len(servers) > 1 and all(_NATS_SERVER.match(server.strip()) for server in servers):
        return ",".join(display_url(server.strip()) for server in servers)
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return MASK
    if not parts.scheme or not parts.netloc:
        return url
    netloc = ("[" + host + "]" if ":" in host else host) + port
    if parts.username or parts.password:
        netloc = f"{MASK}@{netloc}"
    if _host_has_secret_path(host) and parts.path not in ("", "/"):
        path = "/" + MASK
    else:
        path = "/".join(MASK if _tokenish(s) else s for s in parts.path.split("/"))
    query = "&".join(f"{key}={MASK}" for key, _ in parse_qsl(parts.query, keep_blank_values=True))
    return f"{parts.scheme}://{netloc}{path}" + (f"?{query}" if query else "")


def mask_secret(text: str, secret: str, *, cut: bool = False) -> str:
    """``text`` with ``secret`` replaced by ``MASK`` wherever it stands whole. ``cut``: the
    text may have been cut short (a receiver's answer is kept to 200 characters), so a
    beginning of ``secret`` at its very end is masked too (see ``_mask_cut_start``)."""
    if not secret:
        return text
    text = text.replace(secret, MASK)
    return _mask_cut_start(text, secret) if cut else text


def _mask_cut_start(text: str, secret: str) -> str:
    """``text`` with the longest beginning of ``secret`` that ends it, if at least
    ``MIN_SECRET_CHARS`` long, replaced by ``MASK``: fewer characters reveal next to
    nothing, and masking them would eat ordinary text."""
    for size in range(len(secret) - 1, MIN_SECRET_CHARS - 1, -1):
        if text.endswith(secret[:size]):
            return text[:-size] + MASK
    return text


def url_secrets(url: str, path_is_secret: bool) -> list[str]:
    """The parts of ``url`` that are credentials: userinfo password, query values,
    token-like path segments, and the whole path when ``path_is_secret`` (the URL of a
    webhook receiver, or of a provider whose webhook path is the credential)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        return [url]
    found: list[str] = []
    if parts.password:
        found.append(parts.password)
    found.extend(value for _, value in parse_qsl(parts.query, keep_blank_values=True))
    found.extend(s for s in parts.path.split("/") if _tokenish(s))
    if (path_is_secret or _host_has_secret_path(host)) and parts.path not in ("", "/"):
        tail = parts.path + (f"?{parts.query}" if parts.query else "")
        found.append(tail)
        found.append(url)
    return found


def nats_url_secrets(url: str) -> list[str]:
    """Credentials written into a NATS URL or comma-separated server list: each server's
    password, or its user name when it stands alone (``nats://TOKEN@host``, a token)."""
    found: list[str] = []
    for server in url.split(","):
        try:
            parts = urlsplit(server.strip())
        except ValueError:
            found.append(server.strip())
            continue
        if parts.password:
            found.append(parts.password)
        elif parts.username:
            found.append(parts.username)
    return found


# Channels whose ``url`` is where the credential lives (the URL is the only thing that
# lets anyone post there). PagerDuty's and Opsgenie's URLs are public API endpoints.
_URL_IS_CREDENTIAL = ("webhook", "slack", "discord", "teams")


def secrets_of(
    receivers: Mapping[str, Any], smtp_password: str | None, environ: Mapping[str, str]
) -> list[str]:
    """Every credential in a configuration: receivers' secret fields, secret-looking
    custom headers, credential parts of their URLs, the SMTP password, the API token."""
    found: list[str] = []
    for receiver in receivers.values():
        fields = msgspec.structs.asdict(receiver) if isinstance(receiver, msgspec.Struct) else {}
        channel = str(fields.get("channel", ""))
        for name in _SECRET_FIELDS:
            value = fields.get(name)
            if isinstance(value, str):
                found.append(value)
        headers = fields.get("headers")
        if isinstance(headers, Mapping):
            for header, value in headers.items():
                if isinstance(value, str) and _SECRET_KEYS.search(str(header).lower()):
                    found.append(value)
                    # "Bearer xyz" leaks "xyz" alone too.
                    found.extend(value.split()[1:])
        url = fields.get("url")
        if isinstance(url, str):
            found.extend(url_secrets(url, channel in _URL_IS_CREDENTIAL))
    if smtp_password:
        found.append(smtp_password)
    token = environ.get("TOCSIN_API_TOKEN")
    if token:
        found.append(token)
    return found


class Secrets:
    """Known secret strings, masked in any text by ``scrub``. Grows as services start
    (a process may run several, as the tests do); never shrinks: masking a retired
    secret costs nothing."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self.add(values)

    def add(self, values: Iterable[str]) -> None:
        fresh = {v for v in values if len(v) >= MIN_SECRET_CHARS} - self._values
        if not fresh:
            return
        self._values |= fresh
        # Longest first, so a URL is masked whole before its parts are.
        ordered = sorted(self._values, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(v) for v in ordered))

    def scrub(self, text: str, cut: bool = False) -> str:
        """``text`` with URLs shown safely and every known secret masked. ``cut``: the
        text may have been cut short (a receiver's answer is kept to 200 characters),
        so a secret's beginning at its very end is masked too. (One pattern for all the
        secrets, longest first, rather than ``mask_secret`` for each: one pass, and a URL
        is masked whole before its parts are.)"""
        if "://" in text:
            text = _URL.sub(lambda m: display_url(m.group(0)), text)
        if self._pattern is not None:
            text = self._pattern.sub(MASK, text)
        if cut:
            for value in self._values:
                text = _mask_cut_start(text, value)
        return text

    def __contains__(self, value: str) -> bool:
        return value in self._values


class Secret:
    """A credential from the config or the environment. It prints as ``HIDDEN`` (``***``:
    repr, str, f-strings, logs), so it cannot leak by being shown; ``reveal()`` is for
    the connect."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({HIDDEN!r})"

    def __str__(self) -> str:
        return HIDDEN

    def __format__(self, spec: str) -> str:
        return HIDDEN

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def masked_tree(value: Any, secrets: Secrets, key: str = "") -> Any:
    """A parsed config document fit to show (``config.loaded``, ``GET /api/v1/config``):
    a value under a secret-looking key is ``HIDDEN``, and every other text has its URLs
    shown safely and the configuration's known ``secrets`` masked, so that a credential
    written in the file itself, or one ``${VAR}`` expanded into a URL, never shows."""
    if isinstance(value, Mapping):
        return {str(k): masked_tree(v, secrets, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [masked_tree(v, secrets, key) for v in value]
    if isinstance(value, str):
        if _SECRET_KEYS.search(key.lower()) and key.lower() not in _NOT_SECRET_KEYS:
            return HIDDEN
        return secrets.scrub(value)
    if isinstance(value, int | float | bool) or value is None:
        return value
    return str(value)  # TOML dates and times


# Config keys that look secret to ``_SECRET_KEYS`` and are not: what they hold is shown.
_NOT_SECRET_KEYS = ("group_key", "dedup_key", "keys")
