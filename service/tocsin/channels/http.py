"""The HTTP plumbing every HTTP channel shares: one pooled keep-alive client per
receiver, and exceptions turned into retry verdicts (never raised)."""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from tocsin.retry import SendResult, classify_http, retryable

MAX_CONNECTIONS_PER_RECEIVER = 32


def pooled_client(timeout: float) -> httpx.AsyncClient:
    """A client whose connections to one receiver are bounded and kept alive."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout),
        limits=httpx.Limits(
            max_connections=MAX_CONNECTIONS_PER_RECEIVER,
            max_keepalive_connections=MAX_CONNECTIONS_PER_RECEIVER,
        ),
        follow_redirects=False,
    )


async def post(
    client: httpx.AsyncClient, url: str, body: bytes, headers: Mapping[str, str]
) -> SendResult:
    """POST and classify; transport failures are retryable, never exceptions."""
    try:
        response = await client.post(url, content=body, headers=dict(headers))
    except httpx.TimeoutException as error:
        return retryable(f"timeout: {type(error).__name__}")
    except httpx.TransportError as error:
        return retryable(f"connection error: {type(error).__name__}: {error}")
    excerpt = "" if response.is_success else response.text[:200]
    return classify_http(response.status_code, response.headers, excerpt)
