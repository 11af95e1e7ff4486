"""A group notification (DESIGN.md section 11) by email (one message, to a real SMTP
server on 127.0.0.1) and as lines (``file``: real files; ``log``: the process's real
stdout): the subject ``[SEVERITY] N alerts: <first summary>``, the alerts listed in the
text and the escaped HTML, "and N more"; one line per alert, each with the group key
and the notification id. And the templates rule for groups: a receiver's group template
that fails falls back to the channel's default, logged once."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.channels.test_email import channel as email_channel
from tests.channels.test_teams_file import file_channel_at
from tests.support import Mailbox, make_group, make_group_alert
from tocsin.channels import ChannelEnv, SmtpSettings
from tocsin.channels.email import EmailChannel, EmailConfig
from tocsin.channels.log import LogChannel
from tocsin.core.contracts import GroupNotification
from tocsin.core.times import Duration


def parts(message: Any) -> tuple[str, str]:
    text, html = (part.get_payload(decode=True).decode() for part in message.get_payload())
    return text, html


async def test_email_sends_one_message_per_group_listing_its_alerts(
    smtp: tuple[Mailbox, int],
) -> None:
    """Catches a group mailed as several messages, a subject other than section 11's
    ``[SEVERITY] N alerts: <first summary>`` (N counting the truncated alerts), alerts
    missing from either part, and "and N more" missing for the truncated ones."""
    mailbox, port = smtp
    mail = email_channel(port, ["oncall@example.org"])
    result = await mail.send(make_group(3, truncated_alerts=4))
    assert result.ok, result.error

    [(recipients, message)] = mailbox.messages
    assert recipients == ["oncall@example.org"]
    assert message["Subject"] == "[CRITICAL] 7 alerts: host h0 unreachable"
    assert message["X-Tocsin-Notification-Id"] == "g-n1"
    text, html = parts(message)
    assert text.splitlines()[:5] == [
        "7 alerts firing · labels.service=api",
        "",
        "- [CRITICAL] host h0 unreachable (firing) · host=h0, service=api · alert a0"
        " http://127.0.0.1:8080/alerts/a0",
        "- [WARNING] host h1 unreachable (firing) · host=h1, service=api · alert a1"
        " http://127.0.0.1:8080/alerts/a1",
        "- [INFO] host h2 unreachable (firing) · host=h2, service=api · alert a2"
        " http://127.0.0.1:8080/alerts/a2",
    ]
    assert "and 4 more" in text
    assert "Group route-0/r/labels.service=api · notification g-n1" in text
    for index in range(3):
        assert f"host h{index} unreachable" in html
    assert "and 4 more" in html


async def test_email_group_subject_uses_the_groups_severity_and_html_is_escaped(
    smtp: tuple[Mailbox, int],
) -> None:
    """Catches a subject whose severity is not the group's (its most severe alert's),
    and alert text that reaches the HTML part as markup."""
    mailbox, port = smtp
    alerts = [
        make_group_alert(0, severity="warning", summary="<script>alert(1)</script>"),
        make_group_alert(1, severity="info"),
    ]
    result = await email_channel(port, ["oncall@example.org"]).send(make_group(alerts=alerts))
    assert result.ok, result.error
    [(_, message)] = mailbox.messages
    assert message["Subject"] == "[WARNING] 2 alerts: <script>alert(1)</script>"
    _, html = parts(message)
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


async def test_email_a_500_alert_group_is_one_message_with_every_listed_alert(
    smtp: tuple[Mailbox, int],
) -> None:
    """Catches a storm mailed as many messages or one that drops listed alerts: 500
    listed and 1000 truncated are one email counting 1500, listing the 500, and saying
    "and 1000 more"."""
    mailbox, port = smtp
    result = await email_channel(port, ["oncall@example.org"]).send(
        make_group(500, truncated_alerts=1000)
    )
    assert result.ok, result.error
    [(_, message)] = mailbox.messages
    assert message["Subject"] == "[CRITICAL] 1500 alerts: host h0 unreachable"
    text, _ = parts(message)
    assert text.count("\n- [") == 500
    assert "and 1000 more" in text


# ---------------------------------------------------------------- file and log


@pytest.mark.parametrize("fmt", ["text", "json"])
async def test_file_writes_one_line_per_alert_with_group_key_and_notification_id(
    tmp_path: Path, fmt: str
) -> None:
    """Catches a group written as one line (or none), or lines that cannot be tied to
    their group and notification: one line per listed alert, each carrying the
    group_key and notification_id (and the count of the truncated alerts)."""
    path = tmp_path / "out" / "notifications.log"
    channel = file_channel_at(path, format=fmt)
    group = make_group(3, truncated_alerts=2)
    result = await channel.send(group)
    assert result.ok, result.error

    lines = path.read_text().splitlines()
    assert len(lines) == 3
    if fmt == "text":
        assert lines == [
            f"2026-11-23T12:0{1}:0{index}.000000Z [{severity}] host h{index} unreachable"
            f" (firing, alert a{index}, group route-0/r/labels.service=api,"
            " notification g-n1, and 2 more)"
            for severity, index in [("CRITICAL", 0), ("WARNING", 1), ("INFO", 2)]
        ]
        return
    records = [msgspec.json.decode(line) for line in lines]
    assert [record["alert_id"] for record in records] == ["a0", "a1", "a2"]
    for record, alert in zip(records, group.alerts, strict=True):
        assert record["group_key"] == "route-0/r/labels.service=api"
        assert record["notification_id"] == "g-n1"
        assert record["receiver"] == "r"
        assert (record["group_reason"], record["group_status"]) == ("firing", "firing")
        assert record["group_labels"] == {"labels.service": "api"}
        assert record["truncated_alerts"] == 2
        assert record["delivered_at"].endswith("Z")
        assert record["summary"] == alert.summary
        assert record["labels"] == alert.labels


async def test_file_a_500_alert_group_is_500_whole_lines(tmp_path: Path) -> None:
    """Catches lines lost or merged for a large group (all go in one write)."""
    path = tmp_path / "notifications.jsonl"
    result = await file_channel_at(path, format="json").send(make_group(500, truncated_alerts=1000))
    assert result.ok, result.error
    records = [msgspec.json.decode(line) for line in path.read_text().splitlines()]
    assert len(records) == 500
    assert len({record["alert_id"] for record in records}) == 500
    assert {record["truncated_alerts"] for record in records} == {1000}


async def test_log_writes_one_json_line_per_alert_on_stdout(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Catches a group logged as one line (or none), or lines without the group key and
    the notification id: one JSON line on stdout per listed alert."""
    group = make_group(3, truncated_alerts=5, reason="update")
    result = await LogChannel("stdout").send(group)
    assert result.ok, result.error

    lines = capfd.readouterr().out.splitlines()
    records = [msgspec.json.decode(line) for line in lines]
    assert [record["alert"]["alert_id"] for record in records] == ["a0", "a1", "a2"]
    for record in records:
        assert record["msg"] == "group notification"
        assert record["receiver"] == "stdout"
        assert record["group_key"] == "route-0/r/labels.service=api"
        assert record["notification_id"] == "g-n1"
        assert (record["reason"], record["status"]) == ("update", "firing")
        assert record["truncated_alerts"] == 5


# ---------------------------------------------------------------- templates


def fallbacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "tocsin.channels.templates"]


async def test_a_failing_group_template_falls_back_to_the_default_logged_once(
    smtp: tuple[Mailbox, int], caplog: pytest.LogCaptureFixture
) -> None:
    """Catches a group notification lost, or a warning per send, when a receiver's
    group templates fail to render: the defaults go out instead, and the fallback is
    logged once per template and error; the receiver's alert ``title`` and ``body``
    still serve alert notifications."""
    mailbox, port = smtp
    settings = SmtpSettings(host="127.0.0.1", port=port, sender="t@example.org", starttls=False)
    templates = {
        "group_title": "{{ no_such_variable.x }}",
        "group_body": "{{ alert_count / 0 }}",
        "title": "custom {{ summary }}",
    }
    config = EmailConfig(
        channel="email", to=["o@example.org"], timeout=Duration(3), templates=templates
    )
    mail = EmailChannel("mail", config, ChannelEnv(version="test", smtp=settings))
    caplog.set_level(logging.WARNING, logger="tocsin.channels.templates")

    for _ in range(2):
        result = await mail.send(make_group(2))
        assert result.ok, result.error
    subjects = [message["Subject"] for _, message in mailbox.messages]
    assert subjects == ["[CRITICAL] 2 alerts: host h0 unreachable"] * 2
    text, _ = parts(mailbox.messages[0][1])
    assert "- [CRITICAL] host h0 unreachable" in text  # the default group_body
    logged = fallbacks(caplog)
    assert len(logged) == 2  # group_title once, group_body once (text and HTML alike)
    assert any("templates.group_title failed" in line for line in logged)
    assert any("templates.group_body failed" in line for line in logged)


async def test_group_alert_lines_use_the_receivers_alert_title(tmp_path: Path) -> None:
    """Catches per-alert lines of a group that ignore the receiver's ``title``, or give
    it other variables than an alert notification's (plus ``group_key``)."""
    path = tmp_path / "n.log"
    channel = file_channel_at(
        path, templates={"title": "{{ severity }}/{{ receiver }}/{{ notification_id }}"}
    )
    group: GroupNotification = make_group(1)
    assert (await channel.send(group)).ok
    [line] = path.read_text().splitlines()
    assert "[CRITICAL] critical/r/g-n1 (firing, alert a0" in line
