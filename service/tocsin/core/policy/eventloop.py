"""Which event loop a tocsin process runs on (pure: ``cli.run`` carries it out).

Every tocsin process, ``serve`` and the children it starts (``tocsin deliver``,
``tocsin router --partition k``) alike, runs its coroutines through ``cli.run``, which
asks this module. ``TOCSIN_EVENT_LOOP`` chooses: ``uvloop`` (libuv's loop, less CPU
per message: docs/performance.md, "The event loop"), ``asyncio`` (the standard
library's, for measuring one against the other, or for a platform uvloop does not
build on), or ``auto``, the default: uvloop when it is installed, else asyncio. The
children inherit the variable, so one setting holds for the whole service.
"""

from __future__ import annotations

from typing import Literal

from tocsin.core.errors import ConfigError

EVENT_LOOP_KEY = "TOCSIN_EVENT_LOOP"
Loop = Literal["asyncio", "uvloop"]
SETTINGS = ("auto", "asyncio", "uvloop")


def choose_loop(setting: str | None, uvloop_installed: bool) -> Loop:
    """The loop for ``TOCSIN_EVENT_LOOP`` = ``setting`` (unset or empty: ``auto``).

    ``auto`` takes uvloop only when it is installed, so a tocsin installed without it
    still starts; ``uvloop`` asked for by name and missing is refused (ConfigError,
    exit 2) rather than quietly measured or run on the other loop."""
    wanted = (setting or "auto").strip().lower()
    if wanted not in SETTINGS:
        raise ConfigError(
            f"{EVENT_LOOP_KEY}: {setting!r}: the event loop is one of {', '.join(SETTINGS)}"
        )
    if wanted == "asyncio":
        return "asyncio"
    if uvloop_installed:
        return "uvloop"
    if wanted == "uvloop":
        raise ConfigError(
            f"{EVENT_LOOP_KEY}: uvloop is not installed (pip install uvloop), "
            "or set it to asyncio or auto"
        )
    return "asyncio"
