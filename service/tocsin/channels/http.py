"""The HTTP plumbing every HTTP channel shares: one pooled keep-alive client per
receiver, and exceptions turned into retry verdicts (never raised).

The client is httpx over aiohttp's transport (``httpx-aiohttp``): httpcore's own pool
scans every connection on every request, which measured 1.1-3.0 ms of CPU per request
at 4-32 connections on this kind of machine; the aiohttp transport took ~0.56 ms flat.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from tocsin.channels import ChannelConfigError
from tocsin.retry import SendResult, classify_http, retryable

MAX_CONNECTIONS_PER_RECEIVER = 32


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


class JsonPoster:
    """POSTs JSON bodies for one receiver: pooled keep-alive connections, tocsin's
    ``User-Agent``, the receiver's fixed headers, and ``traceparent`` when traced."""

    def __init__(
        self, version: str, timeout: float, headers: Mapping[str, str] | None = None
    ) -> None:
        self._headers = {
            **(headers or {}),
            "Content-Type": "application/json",
            "User-Agent": f"tocsin/{version}",
        }
        self._client = pooled_client(timeout)

    async def post(
        self,
        url: str,
        body: bytes,
        traceparent: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> SendResult:
        merged = {**self._headers, **(headers or {})}
        if traceparent:
            merged["traceparent"] = traceparent
        return await post(self._client, url, body, merged)

    async def close(self) -> None:
        await self._client.aclose()


def pooled_client(timeout: float) -> httpx.AsyncClient:
    """A client whose connections to one receiver are bounded and kept alive."""
    limits = httpx.Limits(
        max_connections=MAX_CONNECTIONS_PER_RECEIVER,
        max_keepalive_connections=MAX_CONNECTIONS_PER_RECEIVER,
    )
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout),
        transport=AiohttpTransport(limits=limits),
        follow_redirects=False,
    )


def describe(error: BaseException) -> str:
    """What went wrong, from the root cause: the aiohttp transport reports a refused
    connection as ``ConnectTimeout``, so its type alone would mislead."""
    cause = error.__cause__ or error
    text = str(cause) or type(cause).__name__
    if isinstance(cause, aiohttp.ClientConnectorError | ConnectionError):
        return f"connection error: {text}"
    if isinstance(cause, TimeoutError | httpx.TimeoutException | aiohttp.ServerTimeoutError):
        return f"timeout: {text}"
    return f"connection error: {type(cause).__name__}: {text}"


async def post(
    client: httpx.AsyncClient, url: str, body: bytes, headers: Mapping[str, str]
) -> SendResult:
    """POST and classify; transport failures are retryable, never exceptions."""
    try:
        response = await client.post(url, content=body, headers=dict(headers))
    except (httpx.TransportError, aiohttp.ClientError, OSError, TimeoutError) as error:
        return retryable(describe(error))
    excerpt = "" if response.is_success else response.text[:200]
    return classify_http(response.status_code, response.headers, excerpt)
