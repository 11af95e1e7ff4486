"""How tocsin writes its own log lines (the event log is ``tocsin.store.eventlog``).

JSON, one object per line, for machines: ``ts`` (RFC 3339 UTC with ``Z``), ``level``,
``msg``, ``logger``, ``trace_id`` and ``span_id`` when a span is current (or when the
call passes them), the fields a call passes with ``extra=``, and ``exc`` for a
traceback. Plain text for a human at a terminal. ``TOCSIN_LOG_FORMAT`` /
``--log-format`` choose (``auto``: text when stderr is a terminal, else JSON);
``TOCSIN_LOG_LEVEL`` / ``--log-level`` set the level.

Every line is scrubbed of known secrets and URL credentials (``redact``) as it is
formatted: the last net under whatever a caller forgot.

A small ``Formatter`` over msgspec rather than python-json-logger: the fields we want
are five lines of code, msgspec is already here and encodes faster, and one fewer
dependency is one fewer thing to audit.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal, TextIO

import msgspec
from opentelemetry import trace

from tocsin.core.times import format_us
from tocsin.observability.redact import Secrets

Format = Literal["auto", "json", "text"]
FORMATS: tuple[Format, ...] = ("auto", "json", "text")
LEVELS = ("debug", "info", "warning", "error")

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}
_encoder = msgspec.json.Encoder(enc_hook=str)


def _trace_fields(record: logging.LogRecord) -> dict[str, str]:
    """``trace_id`` / ``span_id`` given with ``extra=``, else the current span's."""
    given = record.__dict__
    if given.get("trace_id"):
        fields = {"trace_id": str(given["trace_id"])}
        if given.get("span_id"):
            fields["span_id"] = str(given["span_id"])
        return fields
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: value
        for key, value in record.__dict__.items()
        if key not in _STANDARD and key not in ("trace_id", "span_id")
    }


def _scrubbed(value: Any, secrets: Secrets) -> Any:
    """``value`` as JSON can hold it, every string in it scrubbed."""
    if isinstance(value, str):
        return secrets.scrub(value)
    if isinstance(value, int | float | bool) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _scrubbed(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrubbed(v, secrets) for v in value]
    return secrets.scrub(str(value))


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def __init__(self, secrets: Secrets | None = None) -> None:
        super().__init__()
        self._secrets = secrets or Secrets()

    def format(self, record: logging.LogRecord) -> str:
        scrub = self._secrets.scrub
        line: dict[str, Any] = {
            "ts": format_us(int(record.created * 1_000_000)),
            "level": record.levelname.lower(),
            "msg": scrub(record.getMessage()),
            "logger": record.name,
        }
        line.update(_trace_fields(record))
        for key, value in _extras(record).items():
            if key not in line:
                line[key] = _scrubbed(value, self._secrets)
        if record.exc_info:
            line["exc"] = scrub(self.formatException(record.exc_info))
        elif record.stack_info:
            line["stack"] = scrub(record.stack_info)
        return _encoder.encode(line).decode()


class TextFormatter(logging.Formatter):
    """``<ts> <LEVEL> <logger>: <msg> key=value ... trace_id=...`` for people."""

    def __init__(self, secrets: Secrets | None = None) -> None:
        super().__init__()
        self._secrets = secrets or Secrets()

    def format(self, record: logging.LogRecord) -> str:
        scrub = self._secrets.scrub
        text = (
            f"{format_us(int(record.created * 1_000_000))} {record.levelname} "
            f"{record.name}: {scrub(record.getMessage())}"
        )
        fields = {**_extras(record), **_trace_fields(record)}
        if fields:
            text += " " + " ".join(f"{key}={scrub(str(value))}" for key, value in fields.items())
        if record.exc_info:
            text += "\n" + scrub(self.formatException(record.exc_info))
        return text


def resolve_format(fmt: str, stream: TextIO) -> Literal["json", "text"]:
    """``auto`` is text at a terminal, JSON otherwise (a file, a pipe, a container)."""
    if fmt == "json":
        return "json"
    if fmt == "text":
        return "text"
    isatty = getattr(stream, "isatty", None)
    return "text" if isatty is not None and isatty() else "json"


def configure(
    level: str = "info",
    fmt: str = "auto",
    secrets: Secrets | None = None,
    stream: TextIO | None = None,
) -> logging.Handler | None:
    """Send the root logger's records to ``stream`` (stderr) in the chosen format.

    Like ``logging.basicConfig``, does nothing when the root logger already has
    handlers (an embedding application's, or pytest's); returns the handler it added.
    """
    root = logging.getLogger()
    if root.handlers:
        return None
    root.setLevel(level.upper())
    out = stream or sys.stderr
    handler = logging.StreamHandler(out)
    if resolve_format(fmt, out) == "json":
        handler.setFormatter(JsonFormatter(secrets))
    else:
        handler.setFormatter(TextFormatter(secrets))
    root.addHandler(handler)
    if root.level > logging.DEBUG:
        # httpx says "HTTP Request: POST <url>" at INFO for every send: tocsin logs the
        # outcomes itself, and a receiver's URL is often its credential.
        logging.getLogger("httpx").setLevel(logging.WARNING)
    return handler
