"""Message text from per-receiver templates, rendered in Jinja2's sandbox.

Alert fields are untrusted input (anyone with a publisher credential writes them), so
templates run in ``SandboxedEnvironment``: no attribute access to internals, and the
values are data, never template source. ``html`` renders with autoescaping for HTML
parts. A receiver's ``templates`` table may set ``title`` and ``body``; what it leaves
out falls back to the defaults below (or to its channel's own defaults).

A receiver's template that fails while rendering, whatever it raises (Jinja2's errors,
or plain Python ones: ``{{ occurrences / suppressed_count }}`` with nothing suppressed
divides by zero, ``{{ "%d" % summary }}`` is a ``TypeError``), is replaced by the
default for that notification, so a bad template never loses a notification: raised
from a channel's send it would be retried until dead-lettered. The fallback is logged
as a warning with the receiver and the error, once per receiver, template and error.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import msgspec
from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from tocsin.channels.text import truncate
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
DEFAULTS = {"title": DEFAULT_TITLE, "body": DEFAULT_BODY}
# Distinct failures remembered per receiver, so that each is logged once (bounded: an
# error's text may carry alert values).
FAILURES_KEPT = 64

log = logging.getLogger("tocsin.channels.templates")


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
    """A receiver's compiled templates: its own over ``defaults`` (its channel's, over
    ``DEFAULTS``); ``receiver`` names it in the log when one falls back."""

    def __init__(
        self,
        overrides: Mapping[str, str] | None = None,
        *,
        defaults: Mapping[str, str] | None = None,
        receiver: str | None = None,
    ) -> None:
        fallbacks = {**DEFAULTS, **(defaults or {})}
        sources = {**fallbacks, **(overrides or {})}
        unknown = set(sources) - set(KEYS)
        if unknown:
            raise TemplateConfigError(
                f"templates.{sorted(unknown)[0]}", f"known templates: {', '.join(KEYS)}"
            )
        self._receiver = receiver
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
        # What a failing template of the receiver's own is replaced by.
        self._fallback_text = {
            key: self._text[key] if sources[key] == source else _text.from_string(source)
            for key, source in fallbacks.items()
        }
        self._fallback_html = {
            key: self._html[key] if sources[key] == source else _html.from_string(source)
            for key, source in fallbacks.items()
        }
        self._failures: set[tuple[str, str]] = set()

    def render(self, key: str, variables: Mapping[str, Any], *, html: bool = False) -> str:
        """Render ``key``; a template that fails at render time, with any error, falls
        back to the default, so a bad template never loses a notification."""
        template = (self._html if html else self._text)[key]
        try:
            return template.render(variables).strip()
        except Exception as error:  # any error at all: the default goes out instead
            fallback = (self._fallback_html if html else self._fallback_text)[key]
            if fallback is template:
                raise  # a default that fails is tocsin's bug, not the receiver's
            self._fell_back(key, error)
            return fallback.render(variables).strip()

    def _fell_back(self, key: str, error: Exception) -> None:
        """Log the fallback once per template and error (the text and HTML renderings of
        one notification fail alike, and so do the next notifications). Templates see
        only the notification's fields, no receiver secret, and the log formatter
        scrubs known secrets from every line anyway."""
        what = truncate(f"{type(error).__name__}: {error}", 300)
        if (key, what) in self._failures:
            return
        if len(self._failures) >= FAILURES_KEPT:
            self._failures.clear()
        self._failures.add((key, what))
        receiver = self._receiver or "?"
        log.warning(
            "receiver %s: templates.%s failed to render (%s); sent the default %s instead",
            receiver,
            key,
            what,
            key,
            extra={"receiver": receiver, "template": key, "error": what},
        )
