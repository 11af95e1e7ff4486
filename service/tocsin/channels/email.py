"""``email``: one message per notification over SMTP (aiosmtplib), text and HTML parts.

Subject and text come from the receiver's templates (default subject
``[SEVERITY] summary``); the HTML part renders the same body with autoescaping, since
alert fields are untrusted. Server settings come from ``[smtp]`` (or ``SMTP_*``):
STARTTLS (default), implicit TLS (``tls = true``), optional login. A refused recipient,
a failed login or another 5xx reply is permanent; a connection failure, a timeout or a
4xx reply is retryable.

The receiver's ``timeout`` bounds the whole exchange (DESIGN.md section 10), not each
SMTP command: aiosmtplib's own ``timeout`` applies per command, so a server that answers
every command just in time (connect, EHLO, STARTTLS, login, MAIL, RCPT, DATA) could hold
one send for many times the timeout, past the consumer's ack_wait, and JetStream would
then hand the same item to a second worker.

A group notification (DESIGN.md section 11) is one message too: subject from
``group_title`` (default ``[SEVERITY] N alerts: <first summary>``, the group's severity,
N counting the truncated alerts), text and HTML parts from ``group_body`` listing the
alerts: every listed one, unless the text would pass ``MAX_GROUP_BODY_CHARS``; then the
first that fit, and "and N more" for the rest.
"""

from __future__ import annotations

import asyncio
from email.message import EmailMessage
from html import escape

from tocsin.channels import (
    ChannelConfigError,
    ChannelEnv,
    ChannelKind,
    ReceiverConfig,
    SmtpSettings,
    compile_templates,
)
from tocsin.channels.grouped import fit_rendered, in_order
from tocsin.channels.templates import Templates, context, group_context, listing_first
from tocsin.channels.text import collapse_whitespace
from tocsin.core.contracts import Body, GroupNotification, Notification
from tocsin.core.policy.retry import SENT, SendResult, permanent, retryable

_COLOURS = {"critical": "#b3261e", "error": "#d9480f", "warning": "#b08800", "info": "#1c64b8"}
# A group's text part at most (1 MB of text before encoding): far below the 10 MB and
# more that mail servers commonly accept, and more than any inbox reader will scroll.
MAX_GROUP_BODY_CHARS = 1_000_000
SUBJECT_CHARS = 250


class EmailConfig(ReceiverConfig, kw_only=True, forbid_unknown_fields=True):
    to: list[str]


def _message(sender: str, to: list[str], title: str, notification_id: str) -> EmailMessage:
    """A message with its headers: the subject is ``title`` on one line, with no
    encoded words, so untrusted text cannot add headers."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(to)
    subject = collapse_whitespace(title)[:SUBJECT_CHARS]
    # The email module decodes RFC 2047 encoded words ("=?utf-8?b?...?=") in a value it
    # is given and, without the fix for CVE-2024-6923, writes what they decode to, line
    # breaks included, into the header block: untrusted text could add headers. A word
    # joiner after "=" keeps such text literal (and looks the same).
    message["Subject"] = subject.replace("=?", "=\N{WORD JOINER}?")
    message["X-Tocsin-Notification-Id"] = notification_id
    return message


def _add_html(message: EmailMessage, severity: str, html_body: str, link: str | None) -> None:
    """The HTML part: the subject as a heading in the severity's colour, the (escaped)
    body, and a button to the dashboard when there is a link."""
    colour = _COLOURS.get(severity, "#444")
    button = f'<p><a href="{escape(link)}">Open in tocsin</a></p>' if link else ""
    message.add_alternative(
        '<!doctype html><html><body style="font-family:sans-serif">'
        f'<h2 style="color:{colour}">{escape(message["Subject"])}</h2>'
        f'<pre style="white-space:pre-wrap;font-family:inherit">{html_body}</pre>'
        f"{button}</body></html>",
        subtype="html",
    )


def render(
    notification: Notification,
    sender: str,
    to: list[str],
    templates: Templates | None = None,
    dashboard_url: str | None = None,
) -> EmailMessage:
    """The message for a notification: subject from the title template (one line, no
    encoded words, so untrusted text cannot add headers), a text part and an escaped
    HTML part."""
    templates = templates or Templates()
    variables = context(notification, dashboard_url)
    title = templates.render("title", variables)
    message = _message(sender, to, title, notification.notification_id)
    text = templates.render("body", variables)
    link = variables["alert_url"]
    message.set_content(text + (f"\n\n{link}" if link else ""))
    html_body = templates.render("body", variables, html=True)
    _add_html(message, notification.severity, html_body, link)
    return message


def render_group(
    group: GroupNotification,
    sender: str,
    to: list[str],
    templates: Templates | None = None,
    dashboard_url: str | None = None,
) -> EmailMessage:
    """The one message for a group notification: subject from ``group_title``, a text
    and an escaped HTML part from ``group_body`` listing the alerts (each linked to the
    dashboard when one is configured), the same alerts in both parts."""
    templates = templates or Templates()
    group = in_order(group)
    variables = group_context(group, dashboard_url)
    message = _message(
        sender, to, templates.render("group_title", variables), group.notification_id
    )
    text, shown = fit_rendered(
        lambda count: templates.render("group_body", listing_first(variables, count)),
        len(group.alerts),
        MAX_GROUP_BODY_CHARS,
    )
    message.set_content(text[:MAX_GROUP_BODY_CHARS])
    html_body = templates.render("group_body", listing_first(variables, shown), html=True)
    _add_html(message, group.severity, html_body, None)
    return message


class EmailChannel:
    kind = "email"

    def __init__(self, name: str, config: EmailConfig, env: ChannelEnv) -> None:
        smtp = env.smtp
        if smtp is None or not smtp.host:
            raise ChannelConfigError(
                "smtp.host", "an email receiver needs [smtp] host (or SMTP_HOST)"
            )
        if not config.to or any("@" not in address for address in config.to):
            raise ChannelConfigError("to", "to must list one or more email addresses")
        self._templates = compile_templates(config.templates, receiver=name)
        self._to = list(config.to)
        self._smtp: SmtpSettings = smtp
        self._timeout = config.timeout
        self._dashboard = env.dashboard_url

    async def send(self, notification: Body, *, traceparent: str | None = None) -> SendResult:
        # Here, not at the top: a process without an email receiver (serve's delivery
        # children, most of all) never holds the SMTP client (issue #20's RSS target).
        import aiosmtplib

        smtp = self._smtp
        if isinstance(notification, GroupNotification):
            message = render_group(
                notification, smtp.sender, self._to, self._templates, self._dashboard
            )
        else:
            message = render(notification, smtp.sender, self._to, self._templates, self._dashboard)
        try:
            async with asyncio.timeout(self._timeout):  # the whole exchange, not per command
                await aiosmtplib.send(
                    message,
                    hostname=smtp.host,
                    port=smtp.port,
                    username=smtp.username,
                    password=smtp.password,
                    start_tls=smtp.starttls and not smtp.use_tls,
                    use_tls=smtp.use_tls,
                    timeout=self._timeout,
                )
        except aiosmtplib.SMTPRecipientsRefused as error:
            return permanent(f"recipients refused: {error}")
        except aiosmtplib.SMTPResponseException as error:
            if 400 <= error.code < 500:
                return retryable(f"SMTP {error.code}: {error.message}")
            return permanent(f"SMTP {error.code}: {error.message}")
        except TimeoutError as error:  # aiosmtplib's per-command timeouts are ours too
            return retryable(
                f"SMTP: no complete exchange within the timeout of {self._timeout:g}s"
                f" ({type(error).__name__})"
            )
        except (aiosmtplib.SMTPException, OSError) as error:
            return retryable(f"SMTP: {type(error).__name__}: {error}")
        return SENT

    async def close(self) -> None:
        return None


def _build(name: str, config: ReceiverConfig, env: ChannelEnv) -> EmailChannel:
    assert isinstance(config, EmailConfig)
    return EmailChannel(name, config, env)


KIND = ChannelKind(name="email", config_type=EmailConfig, build=_build)
