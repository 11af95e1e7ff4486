"""Template and header injection through every channel (issue #9, hostile input).

One alert whose every free-text field carries Jinja2 expressions and statements, CRLF
header lines, HTML and a 30,000-character label goes through a real service to all nine
channels (webhook, slack, discord, teams, pagerduty, opsgenie, email, file as text and
as JSON, log). Each rendering must keep the text inert: never evaluated, never a new
header, never a new line in a one-line format, never live HTML where HTML is rendered,
and never a failed send because a field is long.
"""

from __future__ import annotations

import base64
import email
import email.policy
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.channels.test_every_channel import RECEIVERS
from tests.channels.test_every_channel import config as every_channel
from tests.support import HttpSink, Mailbox, Tocsin, publish, wait_until

EXPRESSION = "{{ 'INJ' ~ 'ECTED' }}"  # evaluated, it would read INJECTED
STATEMENT = "{% for i in range(3) %}LOOP{% endfor %}"  # evaluated: LOOPLOOPLOOP
CRLF = "\r\nBcc: victim@evil.example\r\nX-Injected: 1\r\n\r\n"
HTML = "<script>alert(1)</script><img src=x onerror=alert(2)>"
# An RFC 2047 encoded word; decoded, it is a line break and two more header lines.
ENCODED = (
    "=?utf-8?b?" + base64.b64encode(b"x\r\nBcc: victim@evil.example\r\nX-Injected: 1").decode()
)
ENCODED += "?="
LONG = "L" * 1024  # the longest label value section 4 accepts
ALERT: dict[str, Any] = {
    "type": "injection_test",
    "severity": "critical",
    "summary": f"{ENCODED} {EXPRESSION} {STATEMENT}{CRLF}{HTML}",
    "source": f"src{CRLF}",
    "labels": {
        "host": EXPRESSION,
        "html": HTML,  # label names have a grammar; their values take any text
        "crlf": CRLF,
        "stmt": STATEMENT,
        "breaks": "a\u2028b\u2029c\x85d\x0be\x0cf\x1cg",  # str.splitlines splits on each
        "long": LONG,
    },
    "details": {"expr": EXPRESSION, "html": HTML, "crlf": CRLF, "encoded": ENCODED},
}
# The operator's own template, interpolating the hostile fields: still data.
TEMPLATES = """
[receivers.slack.templates]
title = "{{ severity | upper }} {{ summary }} {{ labels.host }}"
body = "{{ labels.stmt }} / {{ source }} / {{ details.expr }}"

[receivers.mail.templates]
title = "{{ summary }} from {{ source }} on {{ labels.host }}"

[[route]]
match = {}
receivers = ["disktext"]

[receivers.disktext]
channel = "file"
path = "PATH"
format = "text"
"""
HTTP_HEADERS = {
    "host",
    "content-type",
    "content-length",
    "user-agent",
    "accept",
    "accept-encoding",
    "idempotency-key",
    "traceparent",
    "authorization",
    "connection",
    "x-tocsin-signature",
}
EMAIL_HEADERS = {"from", "to", "subject", "x-tocsin-notification-id"}
EMAIL_HEADERS |= {"content-type", "mime-version"}


def assert_inert(text: str, where: str) -> None:
    """The hostile text was not evaluated (and is still there, as text)."""
    assert "INJECTED" not in text, f"{where}: a template expression was evaluated"
    assert "LOOPLOOP" not in text, f"{where}: a template statement was evaluated"
    assert "INJ" in text, f"{where}: the field's text is missing"


async def test_hostile_fields_stay_inert_in_every_channel(
    nats_url: str,
    sink: HttpSink,
    smtp: tuple[Mailbox, int],
    data_dir: Path,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    mailbox, smtp_port = smtp
    out = tmp_path / "notifications.jsonl"
    text_out = tmp_path / "notifications.txt"
    toml = every_channel(sink, smtp_port, out) + TEMPLATES.replace("PATH", str(text_out))
    service = await Tocsin(data_dir, nats_url, toml).start()
    try:
        await publish(nats_url, "alerts.in.inject", ALERT)
        await wait_until(
            lambda: service.count("delivery.succeeded") == len(RECEIVERS) + 1,
            30,
            "delivered to every receiver",
        )
        assert service.count("delivery.dead_lettered") == 0
        assert service.count("delivery.attempt_failed") == 0
        [received] = service.events("alert.received")
        summary = received["summary"]  # as ingested (cut to 255 characters)

        # HTTP channels: only tocsin's headers, bodies inert.
        bodies: dict[str, bytes] = {}
        for request in sink.requests:
            assert set(request.headers) <= HTTP_HEADERS, (request.path, request.headers)
            assert not any("\r" in v or "\n" in v for v in request.headers.values())
            bodies[request.path] = request.body
        assert set(bodies) == {"/hook", "/slack", "/discord", "/teams", "/v2/enqueue", "/v2/alerts"}
        for path, body in bodies.items():
            assert_inert(body.decode(), path)
        hook = msgspec.json.decode(bodies["/hook"])
        assert hook["summary"] == summary  # the webhook carries the data exactly
        assert hook["labels"]["long"] == LONG
        slack = msgspec.json.decode(bodies["/slack"])
        assert "<script>" not in bodies["/slack"].decode()  # & < > are entities in mrkdwn
        assert all(b["text"]["verbatim"] for b in slack["blocks"] if "text" in b)
        discord = msgspec.json.decode(bodies["/discord"])
        assert discord["allowed_mentions"] == {"parse": []}

        # Email: the configured recipient only, tocsin's headers only, HTML escaped.
        [(recipients, message)] = mailbox.messages
        assert recipients == ["oncall@example.org"]
        raw = message.as_bytes()
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert {name.lower() for name in parsed} <= EMAIL_HEADERS
        assert parsed["Bcc"] is None
        assert parsed["X-Injected"] is None
        subject = str(parsed["Subject"])
        assert "\r" not in subject
        assert "\n" not in subject
        assert ENCODED[2:] in subject  # the encoded word is still there, as text
        assert_inert(subject, "email subject")
        text_part = parsed.get_body(("plain",))
        html_part = parsed.get_body(("html",))
        assert text_part is not None
        assert html_part is not None
        assert_inert(text_part.get_content(), "email text")
        html = html_part.get_content()
        assert_inert(html, "email html")
        assert "<script" not in html
        assert "<img" not in html
        assert "&lt;script&gt;" in html

        # File (text and JSON lines) and log: one line per notification, inert.
        [text_line] = text_out.read_text().splitlines()
        assert_inert(text_line, "file text")
        [json_line] = out.read_text().splitlines()
        assert msgspec.json.decode(json_line)["summary"] == summary
        stdout = [line for line in capfd.readouterr().out.splitlines() if '"notification"' in line]
        [log_line] = stdout
        assert msgspec.json.decode(log_line)["notification"]["summary"] == summary
        assert_inert(log_line, "log")
    finally:
        await service.stop()
