"""The HTTP plumbing every HTTP channel shares: one pooled keep-alive client per
receiver, and exceptions turned into retry verdicts (never raised).

Requests go over ``http1``'s keep-alive pool (``JsonPoster``): a POST is its bytes
written once and its answer parsed by llhttp. Measured on this machine by
``bench/ceiling_delivery.py``, CPU per POST: aiohttp's ``ClientSession`` ~70-150 us
(what tocsin used before, issue #20); httpx's own ``AsyncClient`` over httpcore 1.1-3.0
ms (its pool scans every connection on every request); httpx over ``httpx-aiohttp``'s
transport ~530 us. A receiver needs none of their machinery (auth and redirect layers,
a cookie jar, header and URL merging per request, response objects).

httpx itself is imported only for a URL that needs percent-encoding (``httpx_encoded``):
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
import zlib
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar
from urllib.parse import urlsplit

import certifi
import msgspec

from tocsin.channels import (
    DEFAULT_CONCURRENCY,
    ChannelConfigError,
    ChannelEnv,
    ReceiverConfig,
    compile_templates,
    http1,
)
from tocsin.channels.templates import Templates
from tocsin.core.contracts import Body, GroupNotification, Notification
from tocsin.core.policy.retry import SendResult, classify_http, retryable
from tocsin.observability.redact import mask_secret
from tocsin.observability.tracing import TRACEPARENT

# What is read of an answer: enough for any error message; the rest is discarded (the
# connection is then closed, not reused), so a receiver that streams forever costs a
# bounded buffer. The status code decides the verdict either way.
MAX_ANSWER_BYTES = 64 * 1024
# A pooled connection idle this long is closed rather than reused: shorter than the
# keep-alive of common servers (uvicorn's 5 s, nginx's 75 s), so a request rarely meets
# a connection its server is closing (a failed attempt, retried after the backoff).
KEEPALIVE_SECONDS = 4.0

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
        self._poster = JsonPoster(env.version, config.timeout, connections=env.connections)

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
    ``connections`` to each origin, ``ChannelEnv.connections``), tocsin's ``User-Agent``, the
    receiver's fixed headers, and ``traceparent`` when traced. Redirects are not
    followed (a 3xx is a permanent failure), no cookies are kept, environment proxies
    are not used. ``timeout`` bounds each ``post`` as a whole, the answer included; of
    each answer at most ``MAX_ANSWER_BYTES`` are read.

    Over ``http1``'s pool: the fixed headers are encoded once here, each URL's request
    line and ``Host`` once, so a POST is one write of bytes joined and one parse of
    the answer. A header that cannot be sent (a line break in a value) is refused here,
    naming it, not at the first send."""

    def __init__(
        self,
        version: str,
        timeout: float,
        headers: Mapping[str, str] | None = None,
        connections: int = DEFAULT_CONCURRENCY,
    ) -> None:
        self._connections = connections
        fixed = _merged(
            {"Accept": "*/*", "Accept-Encoding": "gzip, deflate"},  # httpx's, before
            headers or {},
            {"Content-Type": "application/json", "User-Agent": f"tocsin/{version}"},
        )
        self._fixed = fixed
        self._fixed_names = {name.lower() for name in fixed}
        self._fixed_lines = http1.header_lines(fixed)
        self._starts: dict[str, bytes] = {}  # see ``_head_lines``
        self._timeout = timeout
        self._deadlines = http1.Deadlines(timeout)
        self._origins: dict[str, http1.Origin] = {}
        self._pools: dict[tuple[str, str, int], http1.Pool] = {}

    def _pool(self, origin: http1.Origin) -> http1.Pool:
        pool = self._pools.get(origin.key)
        if pool is None:
            pool = self._pools[origin.key] = http1.Pool(
                origin,
                self._connections,
                KEEPALIVE_SECONDS,
                MAX_ANSWER_BYTES,
                # made by the first https receiver: its ~150 roots are ~2.6 MiB of a
                # process's RSS, held for nothing where every receiver is http://
                ssl_context() if origin.tls else None,
            )
        return pool

    def _head_lines(self, traceparent: str | None, headers: Mapping[str, str] | None) -> bytes:
        """The head's header lines: the fixed ones, then this request's (``headers``
        replacing a fixed one of the same name, in any case), then ``traceparent``.

        A request's headers are a channel's few names (a webhook's ``Idempotency-Key``
        on every POST): a name once checked to be a token that neither is nor replaces
        a fixed one, nor ``traceparent``, is remembered with its line's start
        (``_starts``), so each POST checks only its values (~2 us a POST, issue #20);
        any other name takes the general way below, which says the same."""
        lines = [self._fixed_lines]
        for name, value in headers.items() if headers else ():
            start = self._starts.get(name)
            if start is None:
                return self._merged_lines(traceparent, headers)
            lines.append(start + http1.header_value(name, value) + b"\r\n")
        if traceparent:
            lines.append(b"traceparent: " + http1.header_value(TRACEPARENT, traceparent) + b"\r\n")
        return b"".join(lines) if len(lines) > 1 else self._fixed_lines

    def _merged_lines(self, traceparent: str | None, headers: Mapping[str, str] | None) -> bytes:
        """``_head_lines`` for any names, the remembered ones learnt here."""
        extra = dict(headers) if headers else {}
        if traceparent:
            extra[TRACEPARENT] = traceparent
        if not extra:
            return self._fixed_lines
        if self._fixed_names.isdisjoint(name.lower() for name in extra):
            lines = http1.header_lines(extra)  # checks every name and value
            for name in headers or ():
                if len(self._starts) < NAMES_KEPT and name.lower() != TRACEPARENT:
                    self._starts[name] = name.encode() + b": "
            return self._fixed_lines + lines
        return http1.header_lines(_merged(self._fixed, extra))

    async def post(
        self,
        url: str,
        body: bytes,
        traceparent: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> SendResult:
        """POST and classify; transport failures are retryable, never exceptions."""
        origin = _parsed(self._origins, url, _origin)
        request = b"".join(
            (
                origin.start,
                self._head_lines(traceparent, headers),
                b"Content-Length: %d\r\n\r\n" % len(body),
                body,
            )
        )
        deadline = self._deadlines.start()
        try:
            answer = await self._pool(origin).post(request)
        except BaseException as error:
            expired = deadline.end()  # as ``async with asyncio.timeout``: cut, or not
            if isinstance(error, asyncio.CancelledError) and not (expired and deadline.ours):
                raise  # cancelled from outside: the worker stops
            if not isinstance(error, OSError | asyncio.CancelledError):
                raise
            if expired:
                return retryable(f"timeout: no whole answer within {self._timeout:g}s")
            return retryable(describe(error))
        deadline.end()
        if 200 <= answer.status < 300:
            # A success's headers and body are never decoded (``http1.Answer``): only a
            # failure's verdict reads them (``Retry-After``, the excerpt's charset).
            return classify_http(answer.status, _NO_HEADERS)
        excerpt = _text(_decoded(answer), _charset(answer.headers))[:200]
        return classify_http(answer.status, answer.headers, excerpt)

    async def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()


_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


def _merged(*layers: Mapping[str, str]) -> dict[str, str]:
    """``layers`` as one set of headers, a later layer's header replacing an earlier
    one of the same name in any case (HTTP's names are case-insensitive: both would
    be sent otherwise)."""
    merged: dict[str, tuple[str, str]] = {}
    for layer in layers:
        merged.update((name.lower(), (name, value)) for name, value in layer.items())
    return dict(merged.values())


def _charset(headers: Mapping[str, str]) -> str | None:
    """The ``charset`` parameter of an answer's ``Content-Type``, if it names one."""
    found = _CHARSET.search(headers.get("content-type", ""))
    return found.group(1).strip("\"'") if found else None


_CHARSET = re.compile(r";\s*charset\s*=\s*([^;\s]+)", re.IGNORECASE)


def _decoded(answer: http1.Answer) -> bytes:
    """An answer's body as sent before its ``Content-Encoding`` (gzip or deflate, which
    ``Accept-Encoding`` offers); as it came when it names neither or does not inflate
    (it may be cut at ``MAX_ANSWER_BYTES``: what inflates of it is kept)."""
    coding = answer.headers.get("content-encoding", "").strip().lower()
    if coding not in ("gzip", "x-gzip", "deflate") or not answer.body:
        return answer.body
    # 47: a gzip or zlib header, either; deflate sent raw, without one, is -15.
    for wbits in (47, -15):
        try:
            return zlib.decompressobj(wbits).decompress(answer.body, MAX_ANSWER_BYTES)
        except zlib.error:
            continue
    return answer.body


def _text(body: bytes, charset: str | None) -> str:
    """An answer's body as text: its declared charset, else UTF-8, never failing."""
    try:
        return body.decode(charset or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        return body.decode("utf-8", errors="replace")


URLS_KEPT = 64  # one receiver posts to one URL, or a few; bounded anyway
NAMES_KEPT = 64  # header names a poster remembers as checked (``_head_lines``)

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
# or a percent-escape. httpx changes such a URL only for dot segments in its path, which
# it removes (the host's case and a default port do not change what is sent).
_ENCODED_URL = re.compile(r"(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})*")
_DOT_SEGMENT = re.compile(r"(?:^|/)\.\.?(?:/|$)")


def httpx_encoded(text: str) -> str:
    """``text`` percent-encoded as httpx encodes a URL (what a channel's quoting of its
    path relies on: ``%2F`` stays ``%2F``). A URL already so encoded (every configured
    receiver's URL, in practice) is taken as it is without httpx (see the module's
    docstring for why it is not imported up front)."""
    if _ENCODED_URL.fullmatch(text) and not _DOT_SEGMENT.search(urlsplit(text).path):
        return text
    import httpx

    return str(httpx.URL(text))


def _origin(text: str) -> http1.Origin:
    """Where a POST to ``text`` goes, and its request line, as httpx would send it."""
    return http1.Origin(urlsplit(httpx_encoded(text)))


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
    """What went wrong, from the root cause, named as a connection error or a
    timeout (a refused connection is an ``OSError`` whose text names the address)."""
    cause = error.__cause__ or error
    text = str(cause) or type(cause).__name__
    if isinstance(cause, ConnectionError):
        return f"connection error: {text}"
    if isinstance(cause, TimeoutError):
        return f"timeout: {text}"
    return f"connection error: {type(cause).__name__}: {text}"
