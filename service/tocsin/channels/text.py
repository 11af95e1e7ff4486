"""Text helpers the channels share: cut text to a provider's limit, apply an escaper to
every string of a value, fold text onto one line, keep a JSON record on one line, and
summarise details as bounded ``key: <JSON>`` lines."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

ELLIPSIS = "…"
# PagerDuty's and Opsgenie's cut mark: ASCII, as their payloads have always ended.
THREE_DOTS = "..."


def truncate(
    text: str,
    limit: int,
    *,
    ellipsis: str = ELLIPSIS,
    tidy_end: Callable[[str], str] | None = None,
) -> str:
    """``text`` in at most ``limit`` characters: unchanged when it fits, else its first
    ``limit - len(ellipsis)`` characters followed by ``ellipsis``. Characters are code
    points, as ``len`` counts them, for every channel (Teams' 28 KB is bytes, checked on
    the encoded message instead).
    ``tidy_end`` is applied to those kept characters before the ellipsis is added, so a
    provider can drop an escape the cut broke in half (Slack's ``&am``, Discord's lone
    ``\\``)."""
    if len(text) <= limit:
        return text
    kept = text[: max(limit - len(ellipsis), 0)]
    if tidy_end is not None:
        kept = tidy_end(kept)
    return kept + ellipsis


def map_strings(value: Any, change: Callable[[str], str]) -> Any:
    """``value`` with ``change`` applied to every string in it, dictionary keys included
    (untrusted alert fields are escaped before templates see them)."""
    if isinstance(value, str):
        return change(value)
    if isinstance(value, dict):
        return {
            (change(key) if isinstance(key, str) else key): map_strings(item, change)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [map_strings(item, change) for item in value]
    return value


def collapse_whitespace(text: str) -> str:
    """``text`` on one line with its spacing normalised: every run of whitespace (spaces,
    tabs, line breaks, anything ``str.isspace``) becomes one space, and both ends are
    trimmed. Compare ``file.replace_controls_with_space``, which keeps spacing as it is."""
    return " ".join(text.split())


# Raw in msgspec's JSON output, but line breaks to ``str.splitlines``: written escaped.
# (UTF-8 is self-synchronizing, so these byte sequences only ever encode these code
# points, and in JSON text they can only occur inside strings.)
_JSON_LINE_BREAKS = (
    ("\u0085".encode(), b"\\u0085"),
    ("\u2028".encode(), b"\\u2028"),
    ("\u2029".encode(), b"\\u2029"),
)


def json_one_line(data: bytes) -> bytes:
    """Encoded JSON with the line breaks JSON leaves raw escaped, so that neither
    ``for line in file`` nor ``str.splitlines`` can split the record."""
    for raw, escaped in _JSON_LINE_BREAKS:
        data = data.replace(raw, escaped)
    return data


def details_lines(
    details: dict[str, Any], *, max_keys: int, max_key_chars: int, max_value_chars: int
) -> list[str]:
    """One ``key: <JSON value>`` line per key (raw, not escaped), bounded: at most
    ``max_keys`` keys, long keys and values cut with "…", then a line counting the rest."""
    lines = []
    items = list(details.items())
    for key, value in items[:max_keys]:
        encoded = msgspec.json.encode(value, enc_hook=str).decode()
        name = truncate(str(key), max_key_chars)
        lines.append(f"{name}: {truncate(encoded, max_value_chars)}")
    if len(items) > max_keys:
        lines.append(f"{ELLIPSIS} {len(items) - max_keys} more keys")
    return lines
