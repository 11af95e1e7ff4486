"""A receiver's template that raises while rendering, with any error, never loses the
notification: the channel sends its default text and logs the fallback once, naming the
receiver and the error. Real channels against real local receivers."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.support import HttpSink, Mailbox, make_notification
from tocsin.channels import ChannelEnv, SmtpSettings
from tocsin.channels.email import EmailChannel, EmailConfig
from tocsin.channels.file import FileChannel, FileConfig
from tocsin.channels.slack import SlackChannel, SlackConfig
from tocsin.core.times import Duration

# Plain Python errors, not Jinja2's: nothing suppressed divides by zero; "%d" of a string.
DIVIDES_BY_ZERO = "{{ occurrences / suppressed_count }} occurrences per suppressed one"
FORMATS_A_STRING = '{{ "%d" % summary }}'
LOGGER = "tocsin.channels.templates"


def fallbacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == LOGGER and record.levelno == logging.WARNING
    ]


async def test_email_with_raising_templates_is_sent_with_the_defaults_and_logged_once(
    smtp: tuple[Mailbox, int], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    mailbox, port = smtp
    config = EmailConfig(
        channel="email",
        to=["oncall@example.org"],
        timeout=Duration(3),
        templates={"title": FORMATS_A_STRING, "body": DIVIDES_BY_ZERO},
    )
    settings = SmtpSettings(host="127.0.0.1", port=port, sender="t@example.org", starttls=False)
    mail = EmailChannel("oncall-mail", config, ChannelEnv(version="test", smtp=settings))

    for nid in ("n1", "n2"):  # the same failures again: no second log line
        result = await mail.send(make_notification(notification_id=nid, suppressed_count=0))
        assert result.ok, result.error

    assert len(mailbox.messages) == 2
    for _, message in mailbox.messages:
        assert message["Subject"] == "[CRITICAL] disk full on db1"
        text, html = (part.get_payload(decode=True).decode() for part in message.get_payload())
        assert text.splitlines()[:2] == ["disk full on db1", "Reason: firing"]
        assert "Occurrences: 3 (0 suppressed)" in text
        assert "Occurrences: 3 (0 suppressed)" in html
        assert "per suppressed one" not in text + html
    assert fallbacks(caplog) == [
        "receiver oncall-mail: templates.title failed to render (TypeError: %d format: a"
        " real number is required, not str); sent the default title instead",
        "receiver oncall-mail: templates.body failed to render (ZeroDivisionError: division"
        " by zero); sent the default body instead",
    ]
    [title, _] = [r for r in caplog.records if r.name == LOGGER]
    assert (title.receiver, title.template) == ("oncall-mail", "title")  # type: ignore[attr-defined]


async def test_slack_with_a_raising_body_posts_the_default_body(
    sink: HttpSink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    config = SlackConfig(channel="slack", url=sink.url, templates={"body": DIVIDES_BY_ZERO})
    slack = SlackChannel("team-slack", config, ChannelEnv(version="test"))
    try:
        result = await slack.send(make_notification(suppressed_count=0))
    finally:
        await slack.close()
    assert result.ok, result.error
    [request] = sink.requests
    assert "Occurrences: 3 (0 suppressed)" in request.body.decode()
    assert fallbacks(caplog) == [
        "receiver team-slack: templates.body failed to render (ZeroDivisionError: division"
        " by zero); sent the default body instead"
    ]


@pytest.mark.parametrize(
    ("template", "error"),
    [
        (FORMATS_A_STRING, "TypeError: %d format: a real number is required, not str"),
        ("{{ no_such_field }}", "UndefinedError: 'no_such_field' is undefined"),
    ],
)
async def test_the_file_channel_falls_back_to_its_own_default_title(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, template: str, error: str
) -> None:
    # The file line already shows the severity: its default title is the summary alone.
    caplog.set_level(logging.WARNING, logger=LOGGER)
    out = tmp_path / "alerts.log"
    config = FileConfig(channel="file", path=str(out), templates={"title": template})
    disk = FileChannel("disk", config, ChannelEnv(version="test"))
    result = await disk.send(make_notification())
    assert result.ok, result.error
    assert out.read_text() == (
        "2026-11-23T12:01:00.000000Z [CRITICAL] disk full on db1 (firing, alert a1)\n"
    )
    assert fallbacks(caplog) == [
        f"receiver disk: templates.title failed to render ({error}); sent the default title instead"
    ]
