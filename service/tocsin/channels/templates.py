"""Message text from per-receiver templates, rendered in Jinja2's sandbox.

Alert fields are untrusted input (anyone with a publisher credential writes them), so
templates run in ``SandboxedEnvironment``: no attribute access to internals, and the
values are data, never template source. ``html`` renders with autoescaping for HTML
parts. A receiver's ``templates`` table may set ``title`` and ``body``; what it leaves
out falls back to the defaults below.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from tocsin.core.contracts import Notification

DEFAULT_TITLE = "[{{ severity | upper }}] {{ summary }}"
DEFAULT_BODY = (
    "{{ summary }}\n"
    '{% if reason == "resolved" %}Resolved.{% else %}Reason: {{ reason }}{% endif %}\n'
    "Severity: {{ severity }} · Type: {{ type }} · Source: {{ source }}\n"
    "Occurrences: {{ occurrences }} ({{ suppressed_count }} suppressed)"
    " · First seen: {{ first_seen }} · Last seen: {{ last_seen }}\n"
    "{% for key, value in labels | dictsort %}{{ key }}={{ value }}"
    "{% if not loop.last %}, {% endif %}{% endfor %}\n"
    "Alert {{ alert_id }} · fingerprint {{ fingerprint }}"
)

KEYS = ("title", "body")


class TemplateConfigError(ValueError):
    """A template does not compile; ``key`` is ``templates.<name>``."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


_text = SandboxedEnvironment(
    autoescape=False, undefined=StrictUndefined, keep_trailing_newline=False
)
_html = SandboxedEnvironment(
    autoescape=True, undefined=StrictUndefined, keep_trailing_newline=False
)


def context(notification: Notification, dashboard_url: str | None = None) -> dict[str, Any]:
    """The variables a template sees: every notification field, plus ``alert_url``."""
    fields: dict[str, Any] = msgspec.structs.asdict(notification)
    base = (dashboard_url or "").rstrip("/")
    fields["alert_url"] = f"{base}/alerts/{notification.alert_id}" if base else None
    return fields


class Templates:
    """A receiver's compiled templates."""

    def __init__(self, overrides: Mapping[str, str] | None = None) -> None:
        sources = {"title": DEFAULT_TITLE, "body": DEFAULT_BODY, **(overrides or {})}
        unknown = set(sources) - set(KEYS)
        if unknown:
            raise TemplateConfigError(
                f"templates.{sorted(unknown)[0]}", f"known templates: {', '.join(KEYS)}"
            )
        self._text = {}
        self._html = {}
        for key, source in sources.items():
            try:
                self._text[key] = _text.from_string(source)
                self._html[key] = _html.from_string(source)
            except TemplateError as error:
                raise TemplateConfigError(
                    f"templates.{key}", f"does not compile: {error}"
                ) from error

    def render(self, key: str, variables: Mapping[str, Any], *, html: bool = False) -> str:
        """Render ``key``; a template that fails at render time falls back to the default,
        so a bad template never loses a notification."""
        template = (self._html if html else self._text)[key]
        try:
            return template.render(variables).strip()
        except TemplateError:
            fallback = {"title": DEFAULT_TITLE, "body": DEFAULT_BODY}[key]
            return (_html if html else _text).from_string(fallback).render(variables).strip()
