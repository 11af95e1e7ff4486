"""The error every validation raises: config files, matchers, NATS logins.

Its message starts with the key at fault (``route[2].match.severity: ...``); the CLI
turns it into exit code 2 wherever it was raised.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration problem; the message starts with the key at fault."""
