"""``file``: one line per notification appended to a local file.

``format = "text"`` (the default) writes
``<last_seen> [<SEVERITY>] <title> (<reason>, alert <alert_id>)``, where ``<title>`` is
the receiver's ``templates.title`` rendered (by default just the summary, since the
severity is already on the line); ``format = "json"`` writes the notification's fields
plus ``delivered_at`` as one JSON object.

A group notification (DESIGN.md section 11) is one line per alert it lists, each with
the group's key and the notification id: in text
``<last_seen> [<SEVERITY>] <title> (<reason>, alert <alert_id>, group <group_key>,
notification <notification_id>)``, with ``, and N more`` before the closing parenthesis
when the route cut alerts (``truncated_alerts``), ``<title>`` and ``<reason>`` the
alert's own; in JSON the alert's fields plus ``notification_id``, ``receiver``,
``group_key``, ``group_labels``, ``group_reason``, ``group_status``,
``truncated_alerts`` and ``delivered_at`` (an alert's line's fields plus the group's).
The lines of one notification are appended in one write.

One notification's line (or a group's alert's) is always exactly one line: in text,
every line or paragraph separator and control character in the (untrusted) text
becomes a space; in JSON, msgspec escapes control characters and U+0085, U+2028 and
U+2029 are written as ``\\u`` escapes, so neither ``for line in file`` nor
``str.splitlines`` can split a record.

Writes never block the event loop: each runs in ``asyncio.to_thread``. An
``asyncio.Lock`` lets one write at a time, so lines never interleave within the
process; each line is one ``write(2)`` on a file opened in append mode (``O_APPEND``,
unbuffered, so the line is flushed to the kernel by the write itself), which keeps lines
whole across processes appending to the same file too. The file is opened for each
line, so a rotated file (moved away by logrotate) is re-created on the next write. No
``fsync``: a line is durable as soon as the OS writes it back, like any log file.

The parent folders are created when the channel is built, and again at write time if
they were removed since. An unusable ``path`` is a ``ChannelConfigError`` at build time:
empty, a directory, or in a folder that cannot be created or written. At write time,
``IsADirectoryError``, ``NotADirectoryError`` and ``PermissionError`` are permanent
(someone has to fix the file system); any other ``OSError`` (disk full, quota, I/O
error) is retryable, as it may clear.
"""

from __future__ import annotations

import asyncio
import os
import re
from io import FileIO
from pathlib import Path

import msgspec

from tocsin.channels import (
    ChannelConfigError,
    ChannelEnv,
    ChannelKind,
    ReceiverConfig,
    compile_templates,
)
from tocsin.channels.grouped import and_more
from tocsin.channels.templates import alert_context, context
from tocsin.channels.text import json_one_line
from tocsin.core.contracts import AlertInGroup, Body, GroupNotification, Notification, Timestamp
from tocsin.core.policy.retry import SENT, SendResult, permanent, retryable
from tocsin.core.times import format_us, now_us

FORMATS = ("text", "json")
DEFAULT_TITLE = "{{ summary }}"

# Everything ``str.splitlines`` splits on, and every other control character.
_LINE_BREAKING = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")

_encoder = msgspec.json.Encoder()


class FileConfig(ReceiverConfig, kw_only=True, forbid_unknown_fields=True):
    path: str
    format: str = "text"


class FileRecord(Notification, kw_only=True):
    """One line of ``format = "json"``: the notification plus when it was written."""

    delivered_at: Timestamp


class FileGroupRecord(AlertInGroup, kw_only=True):
    """One line of ``format = "json"`` for an alert of a group notification: the fields
    of an alert's line (the alert's, ``notification_id``, ``receiver``) plus the
    group's."""

    notification_id: str
    receiver: str
    group_key: str
    group_labels: dict[str, str]
    group_reason: str
    group_status: str
    truncated_alerts: int
    delivered_at: Timestamp


def replace_controls_with_space(text: str) -> str:
    """``text`` with every run of line breaks and control characters (``\\x00``-``\\x1f``,
    ``\\x7f``-``\\x9f``, U+2028, U+2029) turned into one space; other spacing and the
    ends are left as they are (unlike ``text.collapse_whitespace``)."""
    return _LINE_BREAKING.sub(" ", text)


def json_line(notification: Notification, delivered_at: str) -> bytes:
    record = FileRecord(**msgspec.structs.asdict(notification), delivered_at=delivered_at)
    return json_one_line(_encoder.encode(record)) + b"\n"


def group_json_lines(group: GroupNotification, delivered_at: str) -> bytes:
    """The JSON lines of a group notification: one ``FileGroupRecord`` per listed alert."""
    return b"".join(
        json_one_line(
            _encoder.encode(
                FileGroupRecord(
                    **msgspec.structs.asdict(alert),
                    notification_id=group.notification_id,
                    receiver=group.receiver,
                    group_key=group.group_key,
                    group_labels=group.group_labels,
                    group_reason=group.reason,
                    group_status=group.status,
                    truncated_alerts=group.truncated_alerts,
                    delivered_at=delivered_at,
                )
            )
        )
        + b"\n"
        for alert in group.alerts
    )


class FileChannel:
    kind = "file"

    def __init__(self, name: str, config: FileConfig, env: ChannelEnv) -> None:
        if config.format not in FORMATS:
            raise ChannelConfigError(
                "format", f"format must be one of {', '.join(FORMATS)}, got {config.format!r}"
            )
        self._templates = compile_templates(
            config.templates, {"title": DEFAULT_TITLE}, receiver=name
        )
        if not config.path.strip():
            raise ChannelConfigError("path", "path must name a file")
        path = Path(config.path)
        if path.is_dir():
            raise ChannelConfigError("path", f"{config.path!r} is a directory, not a file")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ChannelConfigError(
                "path", f"cannot create the folder of {config.path!r}: {error}"
            ) from error
        if not os.access(path.parent, os.W_OK | os.X_OK):
            raise ChannelConfigError("path", f"the folder of {config.path!r} is not writable")
        if path.exists() and not os.access(path, os.W_OK):
            raise ChannelConfigError("path", f"{config.path!r} is not writable")
        self._path = path
        self._format = config.format
        self._dashboard_url = env.dashboard_url
        self._lock = asyncio.Lock()

    def line(self, notification: Body, delivered_at: str) -> bytes:
        """The bytes appended for ``notification``, newline included (one line per
        listed alert for a group)."""
        if isinstance(notification, GroupNotification):
            return self.group_lines(notification, delivered_at)
        if self._format == "json":
            return json_line(notification, delivered_at)
        title = self._templates.render("title", context(notification, self._dashboard_url))
        text = (
            f"{notification.last_seen} [{notification.severity.upper()}] {title}"
            f" ({notification.reason}, alert {notification.alert_id})"
        )
        return replace_controls_with_space(text).encode() + b"\n"

    def group_lines(self, group: GroupNotification, delivered_at: str) -> bytes:
        """One line per alert ``group`` lists, each naming the group and notification
        (and counting the alerts the route cut), so that every line stands alone."""
        if self._format == "json":
            return group_json_lines(group, delivered_at)
        more = and_more(group.truncated_alerts)
        tail = f", group {group.group_key}, notification {group.notification_id}"
        tail += f", {more})" if more else ")"
        lines = []
        for alert in group.alerts:
            variables = alert_context(alert, group, self._dashboard_url)
            title = self._templates.render("title", variables)
            text = (
                f"{alert.last_seen} [{alert.severity.upper()}] {title}"
                f" ({alert.reason}, alert {alert.alert_id}{tail}"
            )
            lines.append(replace_controls_with_space(text).encode() + b"\n")
        return b"".join(lines)

    def _open(self) -> FileIO:
        try:
            return open(self._path, "ab", buffering=0)
        except FileNotFoundError:  # the folder was removed since the channel was built
            self._path.parent.mkdir(parents=True, exist_ok=True)
            return open(self._path, "ab", buffering=0)

    def _append(self, data: bytes) -> None:
        with self._open() as stream:
            view = memoryview(data)
            while view:  # one write(2) in practice; a short write continues the same line
                written = stream.write(view)
                if not written:
                    raise OSError(f"no progress appending to {self._path}")
                view = view[written:]
            stream.flush()

    async def send(self, notification: Body, *, traceparent: str | None = None) -> SendResult:
        try:
            async with self._lock:  # delivered_at then follows the order of the lines
                data = self.line(notification, format_us(now_us()))
                await asyncio.to_thread(self._append, data)
        except (IsADirectoryError, NotADirectoryError, PermissionError) as error:
            return permanent(f"{self._path}: {type(error).__name__}: {error.strerror or error}")
        except OSError as error:
            return retryable(f"{self._path}: {type(error).__name__}: {error.strerror or error}")
        return SENT

    async def close(self) -> None:
        return None


def _build(name: str, config: ReceiverConfig, env: ChannelEnv) -> FileChannel:
    assert isinstance(config, FileConfig)
    return FileChannel(name, config, env)


KIND = ChannelKind(name="file", config_type=FileConfig, build=_build)
