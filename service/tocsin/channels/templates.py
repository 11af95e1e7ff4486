"""Message text from per-receiver templates, rendered in Jinja2's sandbox.

Alert fields are untrusted input (anyone with a publisher credential writes them), so
templates run in ``SandboxedEnvironment``: no attribute access to internals, and the
values are data, never template source. ``html`` renders with autoescaping for HTML
parts. A receiver's ``templates`` table may set ``title`` and ``body`` (an alert's
notification, and each alert of a group where a channel renders alerts one by one) and
``group_title`` and ``group_body`` (a group notification, DESIGN.md section 11); what
it leaves out falls back to the defaults below (or to its channel's own defaults).

``title`` and ``body`` see every field of the notification plus ``alert_url``
(``context``); for an alert of a group they see the same names (``alert_context``: the
alert's fields, the group's ``notification_id`` and ``receiver``, plus ``group_key``),
so one ``title`` serves both. ``group_title`` and ``group_body`` see the group's fields
(``notification_id``, ``reason``, ``receiver``, ``group_key``, ``group_labels``,
``status``, ``truncated_alerts``), ``alerts`` (each as ``title`` sees it), ``severity``
(the group's), ``alert_count`` (listed plus truncated), ``first_summary``, and
``not_shown`` / ``and_more`` (how many alerts the message leaves out, and the text
"and N more" or ""), see ``group_context``. Kept apart from ``title``/``body`` so that
a receiver's alert templates never meet a group's variables (and fail over to the
default on every group) and the other way round.

A receiver's template that fails while rendering, whatever it raises (Jinja2's errors,
or plain Python ones: ``{{ occurrences / suppressed_count }}`` with nothing suppressed
divides by zero, ``{{ "%d" % summary }}`` is a ``TypeError``), is replaced by the
default for that notification, so a bad template never loses a notification: raised
from a channel's send it would be retried until dead-lettered. The fallback is logged
as a warning with the receiver and the error, once per receiver, template and error.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from tocsin.channels.grouped import alert_count, and_more, first_summary
from tocsin.channels.text import map_strings, truncate
from tocsin.core.contracts import AlertInGroup, GroupNotification, Notification

if TYPE_CHECKING:
    from jinja2 import Template
    from jinja2.sandbox import SandboxedEnvironment

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

# The group's headline: the email subject of DESIGN.md section 11.
DEFAULT_GROUP_TITLE = "[{{ severity | upper }}] {{ alert_count }} alerts: {{ first_summary }}"
DEFAULT_GROUP_BODY = (
    "{{ alert_count }} alerts {{ status }}{% if reason != status %} ({{ reason }}){% endif %}"
    "{% for key, value in group_labels | dictsort %}{% if loop.first %} · {% endif %}"
    "{{ key }}={{ value }}{% if not loop.last %}, {% endif %}{% endfor %}\n"
    "{% for alert in alerts %}{% if loop.first %}\n{% endif %}"
    "- [{{ alert.severity | upper }}] {{ alert.summary }} ({{ alert.reason }})"
    "{% for key, value in alert.labels | dictsort %}{% if loop.first %} · {% endif %}"
    "{{ key }}={{ value }}{% if not loop.last %}, {% endif %}{% endfor %}"
    " · alert {{ alert.alert_id }}{% if alert.alert_url %} {{ alert.alert_url }}{% endif %}\n"
    "{% endfor %}"
    "{% if and_more %}\n{{ and_more }}\n{% endif %}"
    "\nGroup {{ group_key }} · notification {{ notification_id }}"
)

KEYS = ("title", "body", "group_title", "group_body")
DEFAULTS = {
    "title": DEFAULT_TITLE,
    "body": DEFAULT_BODY,
    "group_title": DEFAULT_GROUP_TITLE,
    "group_body": DEFAULT_GROUP_BODY,
}
# Distinct failures remembered per receiver, so that each is logged once (bounded: an
# error's text may carry alert values).
FAILURES_KEPT = 64

log = logging.getLogger("tocsin.channels.templates")


class TemplateConfigError(ValueError):
    """A template does not compile; ``key`` is ``templates.<name>``."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


@functools.cache
def _environments() -> tuple[SandboxedEnvironment, SandboxedEnvironment]:
    """The text and the HTML environment, made (and Jinja2 imported) by the first
    ``Templates``: a process whose receivers render no template (generic webhooks) never
    holds Jinja2's ~20 modules (issue #20's RSS target)."""
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    text = SandboxedEnvironment(
        autoescape=False, undefined=StrictUndefined, keep_trailing_newline=False
    )
    html = SandboxedEnvironment(
        autoescape=True, undefined=StrictUndefined, keep_trailing_newline=False
    )
    return text, html


def alert_url(dashboard_url: str | None, alert_id: str) -> str | None:
    """The alert's page in the dashboard, when one is configured."""
    base = (dashboard_url or "").rstrip("/")
    return f"{base}/alerts/{alert_id}" if base else None


def context(notification: Notification, dashboard_url: str | None = None) -> dict[str, Any]:
    """The variables a template sees: every notification field, plus ``alert_url``."""
    fields: dict[str, Any] = msgspec.structs.asdict(notification)
    fields["alert_url"] = alert_url(dashboard_url, notification.alert_id)
    return fields


def alert_context(
    alert: AlertInGroup, group: GroupNotification, dashboard_url: str | None = None
) -> dict[str, Any]:
    """What ``title`` and ``body`` see for one alert of a group: the names ``context``
    gives an alert's notification (the alert's fields, the group's ``notification_id``
    and ``receiver``, ``alert_url``), plus ``group_key``. Plain dictionaries and lists, so
    that a channel's escaper (``escaped``) reaches every string."""
    fields: dict[str, Any] = msgspec.structs.asdict(alert)
    fields["notification_id"] = group.notification_id
    fields["receiver"] = group.receiver
    fields["group_key"] = group.group_key
    fields["alert_url"] = alert_url(dashboard_url, alert.alert_id)
    return fields


def group_context(group: GroupNotification, dashboard_url: str | None = None) -> dict[str, Any]:
    """What ``group_title`` and ``group_body`` see (see the module docstring): the
    group's fields, ``alerts`` (every one it lists; ``listing_first`` for fewer),
    ``severity``, ``alert_count``, ``first_summary``, ``not_shown`` and ``and_more``."""
    variables = {
        "notification_id": group.notification_id,
        "reason": group.reason,
        "receiver": group.receiver,
        "group_key": group.group_key,
        "group_labels": dict(group.group_labels),
        "status": group.status,
        "truncated_alerts": group.truncated_alerts,
        "alerts": [alert_context(alert, group, dashboard_url) for alert in group.alerts],
        "severity": group.severity,
        "alert_count": alert_count(group),
        "first_summary": first_summary(group),
    }
    return listing_first(variables, len(group.alerts))


def listing_first(variables: Mapping[str, Any], shown: int) -> dict[str, Any]:
    """``group_context``'s variables (escaped or not) for a message that lists only the
    first ``shown`` of their ``alerts``: the list cut and ``not_shown`` and
    ``and_more`` counted again. Cheap, so that a channel fitting a text to a limit
    builds (and escapes) the alerts' variables once, not once per try."""
    hidden = variables["alert_count"] - shown
    return {
        **variables,
        "alerts": variables["alerts"][:shown],
        "not_shown": hidden,
        "and_more": and_more(hidden),
    }


def escaped(variables: Mapping[str, Any], change: Callable[[str], str]) -> dict[str, Any]:
    """Template variables (``context``, ``alert_context``, ``group_context``) with
    ``change`` (a channel's escaper) applied to every string that comes from an alert:
    values at any depth and the keys of the maps in them (label names, detail keys),
    but not the variable names themselves, nor those of each of ``alerts``, nor
    ``alert_url`` (built by tocsin, and a link target rather than text)."""
    out: dict[str, Any] = {}
    for key, value in variables.items():
        if key == "alert_url":
            out[key] = value
        elif key == "alerts":
            out[key] = [escaped(alert, change) for alert in value]
        else:
            out[key] = map_strings(value, change)
    return out


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
        from jinja2 import TemplateError

        text_env, html_env = _environments()
        self._receiver = receiver
        self._text: dict[str, Template] = {}
        self._html: dict[str, Template] = {}
        for key, source in sources.items():
            try:
                self._text[key] = text_env.from_string(source)
                self._html[key] = html_env.from_string(source)
            except TemplateError as error:
                raise TemplateConfigError(
                    f"templates.{key}", f"does not compile: {error}"
                ) from error
        # What a failing template of the receiver's own is replaced by.
        self._fallback_text = {
            key: self._text[key] if sources[key] == source else text_env.from_string(source)
            for key, source in fallbacks.items()
        }
        self._fallback_html = {
            key: self._html[key] if sources[key] == source else html_env.from_string(source)
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
