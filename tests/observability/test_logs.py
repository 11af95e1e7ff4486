"""tocsin's own log lines (issue #7): JSON objects for machines with ``ts``, ``level``,
``msg``, ``logger``, ``trace_id``/``span_id`` and the event's fields; text for people;
chosen by ``TOCSIN_LOG_FORMAT`` / ``--log-format``; scrubbed of secrets."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import re
import signal
import sys
from pathlib import Path

import httpx
import msgspec
from opentelemetry.sdk.trace import TracerProvider

from tests.support import free_port, wait_until
from tocsin.observability import logs
from tocsin.observability.redact import Secrets
from tocsin.observability.tracing import Tracing, activated

TOCSIN = str(Path(sys.executable).parent / "tocsin")
RFC3339_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")


def record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    logger = logging.getLogger("tocsin.test")
    made = logger.makeRecord(logger.name, logging.WARNING, __file__, 1, msg, args, None)
    made.__dict__.update(extra)
    return made


def test_json_line_carries_the_fields_and_the_current_span() -> None:
    formatter = logs.JsonFormatter()
    tracing = Tracing(TracerProvider(shutdown_on_exit=False))
    span = tracing.start("work", None)
    with activated(span, str):
        line = formatter.format(
            record("dead-lettered %s", "n1", notification_id="n1", receiver="hook", attempt=3)
        )
    parsed = msgspec.json.decode(line)
    context = span.get_span_context()
    assert parsed == {
        "ts": parsed["ts"],
        "level": "warning",
        "msg": "dead-lettered n1",
        "logger": "tocsin.test",
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "notification_id": "n1",
        "receiver": "hook",
        "attempt": 3,
    }
    assert RFC3339_Z.match(parsed["ts"]), parsed["ts"]
    assert "\n" not in line


def test_json_line_outside_a_span_takes_the_trace_it_is_given_and_the_exception() -> None:
    formatter = logs.JsonFormatter()
    try:
        raise ValueError("boom")
    except ValueError:
        failing = record("it failed", trace_id="ab" * 16)
        failing.exc_info = sys.exc_info()
    parsed = msgspec.json.decode(formatter.format(failing))
    assert parsed["trace_id"] == "ab" * 16
    assert "span_id" not in parsed
    assert "ValueError: boom" in parsed["exc"]
    untraced = msgspec.json.decode(formatter.format(record("plain")))
    assert "trace_id" not in untraced
    assert "span_id" not in untraced


def test_lines_are_scrubbed_of_secrets_in_both_formats() -> None:
    secrets = Secrets(["sk-live-0123456789"])
    leaky = record(
        "POST %s failed: %s",
        "https://hooks.slack.com/services/T0/B0/XYZsecretXYZ",
        "echo sk-live-0123456789",
        url="http://user:hunter2hunter2@127.0.0.1:9/x?token=abc123def",
        nested={"key": "sk-live-0123456789"},
    )
    for formatter in (logs.JsonFormatter(secrets), logs.TextFormatter(secrets)):
        line = formatter.format(leaky)
        for secret in ("XYZsecretXYZ", "sk-live-0123456789", "hunter2hunter2", "abc123def"):
            assert secret not in line, (type(formatter).__name__, line)
        assert "hooks.slack.com" in line
        assert "[redacted]" in line


def test_auto_is_text_at_a_terminal_and_json_elsewhere() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert logs.resolve_format("auto", Terminal()) == "text"
    assert logs.resolve_format("auto", io.StringIO()) == "json"
    assert logs.resolve_format("json", Terminal()) == "json"
    assert logs.resolve_format("text", io.StringIO()) == "text"


async def _serve_lines(tmp_path: Path, env: dict[str, str], *args: str) -> list[str]:
    """Start ``tocsin serve`` against an unreachable NATS (so it logs and waits), read
    its stderr once /readyz answers, stop it; its stderr lines."""
    http = f"127.0.0.1:{free_port()}"
    dead = f"nats://127.0.0.1:{free_port()}"
    process = await asyncio.create_subprocess_exec(
        TOCSIN,
        *args,
        "serve",
        "--data-dir",
        str(tmp_path),
        "--nats-url",
        dead,
        "--http",
        http,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **env},
    )
    try:

        async def answered() -> bool:
            try:
                async with httpx.AsyncClient() as client:
                    return (await client.get(f"http://{http}/readyz")).status_code == 503
            except httpx.HTTPError:
                return False

        await wait_until(answered, 20, "/readyz to answer")
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    assert process.stderr is not None
    return (await process.stderr.read()).decode().splitlines()


async def test_a_service_writes_json_lines_to_a_pipe_and_text_when_asked(tmp_path: Path) -> None:
    lines = await _serve_lines(tmp_path / "a", {"TOCSIN_LOG_FORMAT": "auto"})
    parsed = [msgspec.json.decode(line) for line in lines]  # every line is one object
    assert any(p["msg"].startswith("connecting to NATS at") for p in parsed), lines
    for p in parsed:
        assert {"ts", "level", "msg", "logger"} <= set(p)
        assert RFC3339_Z.match(p["ts"])
    text = await _serve_lines(tmp_path / "b", {}, "--log-format", "text")
    assert any(" INFO tocsin.service: connecting to NATS at" in line for line in text), text
    assert not any(line.startswith("{") for line in text)
    quiet = await _serve_lines(tmp_path / "c", {"TOCSIN_LOG_LEVEL": "warning"})
    assert not any('"level":"info"' in line for line in quiet), quiet
