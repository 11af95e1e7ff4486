"""``email``: a plain-text message per notification over SMTP (aiosmtplib).

Server settings come from ``[smtp]`` (or ``SMTP_*`` in the environment); a refused
recipient or a bad address is permanent, a connection failure or a 4xx reply retryable.
"""

from __future__ import annotations

from email.message import EmailMessage

import aiosmtplib

from tocsin.channels import (
    ChannelConfigError,
    ChannelEnv,
    ChannelKind,
    ReceiverConfig,
    SmtpSettings,
)
from tocsin.contracts import Notification
from tocsin.retry import SENT, SendResult, permanent, retryable


class EmailConfig(ReceiverConfig, kw_only=True, forbid_unknown_fields=True):
    to: list[str]


def render(notification: Notification, sender: str, to: list[str]) -> EmailMessage:
    """The message for a notification: subject ``[SEVERITY] summary``."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(to)
    summary = " ".join(notification.summary.split())
    message["Subject"] = f"[{notification.severity.upper()}] {summary}"
    message["X-Tocsin-Notification-Id"] = notification.notification_id
    labels = "\n".join(f"  {key} = {value}" for key, value in sorted(notification.labels.items()))
    message.set_content(
        f"{notification.summary}\n\n"
        f"reason:      {notification.reason}\n"
        f"status:      {notification.status}\n"
        f"severity:    {notification.severity}\n"
        f"type:        {notification.type}\n"
        f"source:      {notification.source}\n"
        f"alert:       {notification.alert_id}\n"
        f"fingerprint: {notification.fingerprint}\n"
        f"first seen:  {notification.first_seen}\n"
        f"last seen:   {notification.last_seen}\n"
        f"occurrences: {notification.occurrences} ({notification.suppressed_count} suppressed)\n"
        f"labels:\n{labels or '  (none)'}\n"
    )
    return message


class EmailChannel:
    kind = "email"

    def __init__(self, name: str, config: EmailConfig, smtp: SmtpSettings | None) -> None:
        if smtp is None or not smtp.host:
            raise ChannelConfigError(
                "smtp.host", "an email receiver needs [smtp] host (or SMTP_HOST)"
            )
        if not config.to or any("@" not in address for address in config.to):
            raise ChannelConfigError("to", "to must list one or more email addresses")
        self._to = list(config.to)
        self._smtp = smtp
        self._timeout = config.timeout

    async def send(
        self, notification: Notification, *, traceparent: str | None = None
    ) -> SendResult:
        smtp = self._smtp
        message = render(notification, smtp.sender, self._to)
        try:
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
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            return retryable(f"SMTP: {type(error).__name__}: {error}")
        return SENT

    async def close(self) -> None:
        return None


def _build(name: str, config: ReceiverConfig, env: ChannelEnv) -> EmailChannel:
    assert isinstance(config, EmailConfig)
    return EmailChannel(name, config, env.smtp)


KIND = ChannelKind(name="email", config_type=EmailConfig, build=_build)
