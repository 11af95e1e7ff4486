"""The HTTP plumbing every HTTP channel shares: one pooled keep-alive client per
receiver, and exceptions turned into retry verdicts (never raised).

Requests go straight over aiohttp's connection pool (``JsonPoster``). Measured on this
machine by ``bench/ceiling_delivery.py``, CPU per POST: aiohttp alone ~70-150 us;
httpx's own ``AsyncClient`` over httpcore 1.1-3.0 ms (its pool scans every connection on
every request); httpx over ``httpx-aiohttp``'s transport ~530 us; and an
``httpx.Request`` built from ready parts over aiohttp (tocsin before #20) still ~45 us
more than aiohttp alone. A receiver needs none of httpx's machinery (auth and redirect
layers, a cookie jar, header and URL merging per request).

httpx itself is imported only for a URL that needs percent-encoding (``_yarl_url``):
importing it costs ~5 MiB in every process that does (its package imports its command
line client, and with it rich, click and pygments), and the delivery children
(``tocsin serve``'s, issue #20's RSS target) need it for nothing else.

A receiver's ``timeout`` is one deadline for the whole exchange (DESIGN.md section 10):
waiting for a connection, connecting, sending, and the whole answer. A per-read timeout
alone lets a receiver that trickles a byte a second keep a send alive past the
consumer's ack_wait, and then JetStream hands the same item to a second worker.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import ssl
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
import certifi
import msgspec
import yarl

from tocsin.channels import ChannelConfigError, ChannelEnv, ReceiverConfig, compile_templates
from tocsin.channels.templates import Templates
from tocsin.core.contracts import Body, GroupNotification, Notification
from tocsin.core.policy.retry import SendResult, classify_http, retryable
from tocsin.observability.redact import mask_secret

MAX_CONNECTIONS_PER_RECEIVER = 32
# What is read of an answer: enough for any error message; the rest is discarded (the
# connection is then closed, not reused), so a receiver that streams forever costs a
# bounded buffer. The status code decides the verdict either way.
MAX_ANSWER_BYTES = 64 * 1024

_encoder = msgspec.json.Encoder()


def check_url(url: str, example: str = "https://...") -> str:
    """``url`` if it is http(s) with a host; else a config error on ``url`` that does not
    echo it (for Slack and Discord the URL is the credential)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ChannelConfigError("url", f"url must be an http:// or https:// URL ({example})")
    return url


def mask_in_error(result: SendResult, secret: str) -> SendResult:
    """``result`` with ``secret`` masked in its error text (``redact.mask_secret``): a
    provider may echo the body or a header, and the excerpt ``JsonPoster.post`` keeps,
    cut at 200 characters, may end inside the secret."""
    error = result.error
    if error is None or not secret:
        return result
    masked = mask_secret(error, secret, cut=True)
    return result if masked == error else msgspec.structs.replace(result, error=masked)


class PayloadChannel:
    """A channel whose provider takes one JSON body per notification at one URL, made by
    ``payload(notification, templates, dashboard_url)``, or for a group notification by
    ``group_payload(group, templates, dashboard_url)`` (Slack's and Discord's incoming
    webhooks): the receiver's templates, a ``JsonPoster``, and the send. Subclasses set
    ``kind`` and pass the receiver's name, the checked URL and their two payloads."""

    kind: str

    def __init__(
        self,
        name: str,
        url: str,
        config: ReceiverConfig,
        env: ChannelEnv,
        payload: Callable[[Notification, Templates, str | None], dict[str, Any]],
        group_payload: Callable[[GroupNotification, Templates, str | None], dict[str, Any]],
    ) -> None:
        self._url = url
        self._payload = payload
        self._group_payload = group_payload
        self._templates = compile_templates(config.templates, receiver=name)
        self._dashboard_url = env.dashboard_url
        self._poster = JsonPoster(env.version, config.timeout)

    async def send(self, notification: Body, *, traceparent: str | None = None) -> SendResult:
        if isinstance(notification, GroupNotification):
            made = self._group_payload(notification, self._templates, self._dashboard_url)
        else:
            made = self._payload(notification, self._templates, self._dashboard_url)
        return await self._poster.post(self._url, _encoder.encode(made), traceparent)

    async def close(self) -> None:
        await self._poster.close()


class JsonPoster:
    """POSTs JSON bodies for one receiver: pooled keep-alive connections (at most
    ``MAX_CONNECTIONS_PER_RECEIVER``), tocsin's ``User-Agent``, the receiver's fixed
    headers, and ``traceparent`` when traced. Redirects are not followed (a 3xx is a
    permanent failure), no cookies are kept, environment proxies are not used.
    ``timeout`` bounds each ``post`` as a whole, the answer included; of each answer at
    most ``MAX_ANSWER_BYTES`` are read.

    Straight over aiohttp: the headers are merged once here, the URL parsed once, and no
    request or response object of another library is built. Measured by
    ``bench/parts_delivery.py`` (the webhook end to end), httpx's ``Request`` and
    ``Response`` around aiohttp's cost ~45 us of CPU per notification. The session is
    made on first use, inside the event loop."""

    def __init__(
        self, version: str, timeout: float, headers: Mapping[str, str] | None = None
    ) -> None:
        self._headers = {
            "Accept": "*/*",  # what httpx sent before, which a receiver's own headers override
            "Accept-Encoding": "gzip, deflate",
            **(headers or {}),
            "Content-Type": "application/json",
            "User-Agent": f"tocsin/{version}",
        }
        self._timeout = timeout
        # One deadline for the whole exchange is ``asyncio.timeout`` in ``post``;
        # aiohttp's own total timeout is left off (it would only race it).
        self._client_timeout = aiohttp.ClientTimeout(total=None)
        self._ssl = ssl_context()
        self._session: aiohttp.ClientSession | None = None
        self._urls: dict[str, yarl.URL] = {}

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=MAX_CONNECTIONS_PER_RECEIVER, ssl=self._ssl, keepalive_timeout=5.0
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=self._client_timeout,
                skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent"),
            )
        return self._session

    async def post(
        self,
        url: str,
        body: bytes,
        traceparent: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> SendResult:
        """POST and classify; transport failures are retryable, never exceptions."""
        merged = {**self._headers, **headers} if headers else self._headers.copy()
        if traceparent:
            merged["traceparent"] = traceparent
        deadline = asyncio.timeout(self._timeout)
        try:
            async with (
                deadline,
                self._session_now().post(
                    _parsed(self._urls, url, _yarl_url),
                    data=body,
                    headers=merged,
                    allow_redirects=False,
                ) as answer,
            ):
                answer_body = await _read_at_most(answer.content, MAX_ANSWER_BYTES)
                status, answer_headers = answer.status, answer.headers
                charset = answer.charset
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            if deadline.expired():
                return retryable(f"timeout: no whole answer within {self._timeout:g}s")
            return retryable(describe(error))
        excerpt = ""
        if not 200 <= status < 300:  # a success's body is never decoded
            excerpt = _text(answer_body, charset)[:200]
        return classify_http(status, answer_headers, excerpt)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _text(body: bytes, charset: str | None) -> str:
    """An answer's body as text: its declared charset, else UTF-8, never failing."""
    try:
        return body.decode(charset or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        return body.decode("utf-8", errors="replace")


async def _read_at_most(content: aiohttp.StreamReader, limit: int) -> bytes:
    """The answer's first ``limit`` bytes, or all of it when shorter. Leaving the
    response's context with bytes unread closes the connection instead of pooling it."""
    first = await content.read(limit)
    if len(first) >= limit or content.at_eof():
        return first
    chunks = [first]
    size = len(first)
    while size < limit:
        chunk = await content.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


URLS_KEPT = 64  # one receiver posts to one URL, or a few; bounded anyway

T = TypeVar("T")


def _parsed(cache: dict[str, T], text: str, parse: Callable[[str], T]) -> T:
    """``parse(text)``, remembered in ``cache`` (at most ``URLS_KEPT`` entries): parsing
    a URL on every request costs more than the lookup."""
    found = cache.get(text)
    if found is None:
        if len(cache) >= URLS_KEPT:
            cache.clear()
        found = cache[text] = parse(text)
    return found


# A URL httpx would send as it is: ASCII, each character one a URL may hold unencoded
# or a percent-escape. httpx then changes only what yarl changes too (the host's case,
# a default port), but for dot segments in the path, which it removes.
_ENCODED_URL = re.compile(r"(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})*")
_DOT_SEGMENT = re.compile(r"(?:^|/)\.\.?(?:/|$)")


def _yarl_url(text: str) -> yarl.URL:
    """``text`` percent-encoded as httpx encodes a URL (what a channel's quoting of its
    path relies on: ``%2F`` stays ``%2F``), then taken as it is. A URL already so
    encoded (every configured receiver's URL, in practice) is taken as it is without
    httpx (see the module's docstring for why it is not imported up front)."""
    if _ENCODED_URL.fullmatch(text) and not _DOT_SEGMENT.search(urlsplit(text).path):
        return yarl.URL(text, encoded=True)
    import httpx

    return yarl.URL(str(httpx.URL(text)), encoded=True)


@functools.cache
def ssl_context() -> ssl.SSLContext:
    """The roots a receiver's certificate is checked against, as httpx chose them (its
    ``create_ssl_context``, which tocsin used before): the file ``SSL_CERT_FILE`` or
    the directory ``SSL_CERT_DIR`` names, else certifi's bundle. Made once and shared
    by every receiver's pool: each context holds its own copy of ~150 roots."""
    if os.environ.get("SSL_CERT_FILE"):
        return ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    if os.environ.get("SSL_CERT_DIR"):
        return ssl.create_default_context(capath=os.environ["SSL_CERT_DIR"])
    return ssl.create_default_context(cafile=certifi.where())


def describe(error: BaseException) -> str:
    """What went wrong, from the root cause: aiohttp reports a refused connection as a
    ``ClientConnectorError`` (an ``OSError`` too), so its type alone would mislead."""
    cause = error.__cause__ or error
    text = str(cause) or type(cause).__name__
    if isinstance(cause, aiohttp.ClientConnectorError | ConnectionError):
        return f"connection error: {text}"
    if isinstance(cause, TimeoutError | aiohttp.ServerTimeoutError):
        return f"timeout: {text}"
    return f"connection error: {type(cause).__name__}: {text}"
