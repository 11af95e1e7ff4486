"""email against a real SMTP server (aiosmtpd on 127.0.0.1): parts, recipients, login,
escaping, and which failures are permanent."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tests.support import Mailbox, free_port, make_notification
from tocsin.channels import ChannelConfigError, ChannelEnv, SmtpSettings
from tocsin.channels.email import EmailChannel, EmailConfig
from tocsin.core.contracts import Notification
from tocsin.core.times import Duration

# What this file's notifications differ in from tests.support.make_notification.
NOTIFICATION = {
    "fingerprint": "fp",
    "dedup_key": "fp:1",
    "receiver": "mail",
}


def notification(**fields: Any) -> Notification:
    return make_notification(**{**NOTIFICATION, **fields})


def channel(port: int, to: list[str], timeout: float = 3, **smtp: Any) -> EmailChannel:
    settings = SmtpSettings(
        host="127.0.0.1", port=port, sender="tocsin@example.org", starttls=False, **smtp
    )
    config = EmailConfig(channel="email", to=to, timeout=Duration(timeout))
    return EmailChannel(
        "mail",
        config,
        ChannelEnv(version="test", smtp=settings, dashboard_url="http://127.0.0.1:8080"),
    )


async def test_message_has_subject_text_and_escaped_html_for_every_recipient(
    smtp: tuple[Mailbox, int],
) -> None:
    mailbox, port = smtp
    mail = channel(port, ["a@example.org", "b@example.org"])
    result = await mail.send(notification(summary="<script>alert(1)</script>\r\nBcc: x@evil"))
    assert result.ok, result.error
    [(recipients, message)] = mailbox.messages
    assert recipients == ["a@example.org", "b@example.org"]
    assert message["Subject"] == "[CRITICAL] <script>alert(1)</script> Bcc: x@evil"
    assert message["Bcc"] is None
    assert message["From"] == "tocsin@example.org"
    assert message.get_content_type() == "multipart/alternative"
    text, html = (part.get_payload(decode=True).decode() for part in message.get_payload())
    assert "Occurrences: 3 (2 suppressed)" in text
    assert "http://127.0.0.1:8080/alerts/a1" in text
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    assert 'href="http://127.0.0.1:8080/alerts/a1"' in html


async def test_login_is_used_and_a_bad_password_is_permanent(smtp: tuple[Mailbox, int]) -> None:
    mailbox, port = smtp
    good = await channel(port, ["a@example.org"], username="tocsin", password="pw").send(
        notification()
    )
    assert good.ok, good.error
    bad = await channel(port, ["a@example.org"], username="tocsin", password="nope").send(
        notification()
    )
    assert not bad.ok
    assert not bad.retryable
    assert "535" in (bad.error or "")
    assert len(mailbox.messages) == 1


async def test_refused_recipient_is_permanent(smtp: tuple[Mailbox, int]) -> None:
    _, port = smtp
    result = await channel(port, ["nobody@example.org"]).send(notification())
    assert not result.ok
    assert not result.retryable
    assert "refused" in (result.error or "")


async def test_no_server_is_retryable() -> None:
    result = await channel(free_port(), ["a@example.org"]).send(notification())
    assert not result.ok
    assert result.retryable


TIMEOUT = 1.0


class Stalling:
    """An SMTP server that answers EHLO, MAIL and RCPT each just within the timeout
    (``pause`` seconds: slow, never too slow for one command) and then holds DATA until
    ``released`` is set (at teardown): a whole exchange far longer than the timeout."""

    def __init__(self, pause: float) -> None:
        self.pause = pause
        self.released = threading.Event()

    async def _stall(self, seconds: float | None) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.released.wait, seconds)

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        await self._stall(self.pause)
        session.host_name = hostname
        return responses

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        await self._stall(self.pause)
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        await self._stall(self.pause)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await self._stall(None)
        return "250 Message accepted"


@pytest.fixture
def stalling_smtp() -> Iterator[int]:
    """A real aiosmtpd server with the ``Stalling`` handler; its port."""
    handler = Stalling(pause=0.6 * TIMEOUT)
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield port
    handler.released.set()
    controller.stop()


async def test_the_timeout_bounds_the_whole_smtp_exchange(stalling_smtp: int) -> None:
    """Catches a timeout applied per SMTP command (aiosmtplib's own): each of EHLO, MAIL
    and RCPT answers within it, so the send would only fail at DATA, about three times
    the timeout in; the receiver's ``timeout`` is the whole exchange (DESIGN.md
    section 10), so the attempt fails, retryable, once it has passed."""
    mail = channel(stalling_smtp, ["a@example.org"], timeout=TIMEOUT)
    started = time.monotonic()
    result = await mail.send(notification())
    took = time.monotonic() - started
    assert not result.ok
    assert result.retryable
    assert "timeout" in (result.error or "")
    assert TIMEOUT * 0.9 <= took < TIMEOUT * 1.6, took


def test_config_errors_name_the_key() -> None:
    env = ChannelEnv(version="test", smtp=None)
    with pytest.raises(ChannelConfigError) as missing_host:
        EmailChannel("m", EmailConfig(channel="email", to=["a@example.org"]), env)
    assert missing_host.value.key == "smtp.host"
    env = ChannelEnv(version="test", smtp=SmtpSettings(host="127.0.0.1"))
    with pytest.raises(ChannelConfigError) as bad_to:
        EmailChannel("m", EmailConfig(channel="email", to=["not-an-address"]), env)
    assert bad_to.value.key == "to"
    with pytest.raises(ChannelConfigError) as bad_template:
        EmailChannel(
            "m",
            EmailConfig(channel="email", to=["a@example.org"], templates={"title": "{% if %}"}),
            env,
        )
    assert bad_template.value.key == "templates.title"
