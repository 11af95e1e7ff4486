"""Which requests may change state when no API token is set (DESIGN.md section 7).

Without a token tocsin listens on loopback only, and anything on the operator's machine
can reach it: a web page the operator happens to visit included. A browser lets such a
page send a "simple" cross-origin request (a form post, or ``fetch`` with
``mode: "no-cors"`` and a ``text/plain`` body) without asking the server first, and
DNS rebinding lets a page talk to 127.0.0.1 under its own host name. So a mutation
without a token is accepted only with a loopback ``Host``, a loopback ``Origin`` when the
browser sent one, and a JSON body: a page can forge none of the three without the
browser first asking (and tocsin never answering) a CORS preflight.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


def is_loopback_host(host: str) -> bool:
    """``localhost`` or a loopback address (``127.0.0.0/8``, ``::1``), without a port."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_of(authority: str) -> str:
    """The host of ``host[:port]``, IPv6 in brackets included."""
    if authority.startswith("["):
        return authority[1 : authority.find("]")] if "]" in authority else authority
    return authority.rpartition(":")[0] if authority.count(":") == 1 else authority


def tokenless_mutation_refusal(
    *, host: str | None, origin: str | None, content_type: str | None, has_body: bool
) -> str | None:
    """Why a state-changing request without a token is refused, or ``None`` to accept."""
    if host is None or not is_loopback_host(_host_of(host.strip())):
        return "without an API token, changes are accepted only with a loopback Host"
    if origin is not None:
        if origin == "null":
            return "without an API token, changes are not accepted from an opaque origin"
        parts = urlsplit(origin)
        if parts.hostname is None or not is_loopback_host(parts.hostname):
            return "without an API token, changes are accepted only from a loopback Origin"
    if has_body:
        media = (content_type or "").split(";", 1)[0].strip().lower()
        if media != "application/json":
            return "without an API token, a change must be sent as application/json"
    return None
