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
"""

from __future__ import annotations

import asyncio
from email.message import EmailMessage
from html import escape

import aiosmtplib

from tocsin.channels import (
    ChannelConfigError,
    ChannelEnv,
    ChannelKind,
    ReceiverConfig,
    SmtpSettings,
    compile_templates,
)
from tocsin.channels.templates import Templates, context
from tocsin.channels.text import collapse_whitespace
from tocsin.core.contracts import Notification
from tocsin.core.policy.retry import SENT, SendResult, permanent, retryable

_COLOURS = {"critical": "#b3261e", "error": "#d9480f", "warning": "#b08800", "info": "#1c64b8"}


class EmailConfig(ReceiverConfig, kw_only=True, forbid_unknown_fields=True):
    to: list[str]


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
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(to)
    subject = collapse_whitespace(templates.render("title", variables))[:250]
    # The email module decodes RFC 2047 encoded words ("=?utf-8?b?...?=") in a value it
    # is given and, without the fix for CVE-2024-6923, writes what they decode to, line
    # breaks included, into the header block: untrusted text could add headers. A word
    # joiner after "=" keeps such text literal (and looks the same).
    message["Subject"] = subject.replace("=?", "=\N{WORD JOINER}?")
    message["X-Tocsin-Notification-Id"] = notification.notification_id
    text = templates.render("body", variables)
    link = variables["alert_url"]
    message.set_content(text + (f"\n\n{link}" if link else ""))
    colour = _COLOURS.get(notification.severity, "#444")
    html_body = templates.render("body", variables, html=True)
    button = f'<p><a href="{escape(link)}">Open in tocsin</a></p>' if link else ""
    message.add_alternative(
        '<!doctype html><html><body style="font-family:sans-serif">'
        f'<h2 style="color:{colour}">{escape(message["Subject"])}</h2>'
        f'<pre style="white-space:pre-wrap;font-family:inherit">{html_body}</pre>'
        f"{button}</body></html>",
        subtype="html",
    )
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

    async def send(
        self, notification: Notification, *, traceparent: str | None = None
    ) -> SendResult:
        smtp = self._smtp
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
