"""Which event loop a tocsin process runs on (``TOCSIN_EVENT_LOOP``)."""

from __future__ import annotations

import pytest

from tocsin.core.errors import ConfigError
from tocsin.core.policy.eventloop import EVENT_LOOP_KEY, choose_loop


@pytest.mark.parametrize("setting", [None, "", "auto", " AUTO "])
def test_auto_takes_uvloop_when_installed_and_asyncio_otherwise(setting: str | None) -> None:
    """Catches a default that ignores uvloop when it is there (the CPU it saves is the
    reason it is a dependency), or one that refuses to start without it."""
    assert choose_loop(setting, uvloop_installed=True) == "uvloop"
    assert choose_loop(setting, uvloop_installed=False) == "asyncio"


def test_asyncio_by_name_wins_over_an_installed_uvloop() -> None:
    """Catches a switch that cannot turn uvloop off (to measure one loop against the
    other, or to rule the loop out when something misbehaves)."""
    assert choose_loop("asyncio", uvloop_installed=True) == "asyncio"
    assert choose_loop("Asyncio", uvloop_installed=False) == "asyncio"


def test_uvloop_by_name_is_taken_or_refused_naming_the_key() -> None:
    """Catches uvloop asked for by name and missing being run on asyncio in silence
    (a measurement of uvloop that measured asyncio)."""
    assert choose_loop("uvloop", uvloop_installed=True) == "uvloop"
    with pytest.raises(ConfigError, match=rf"^{EVENT_LOOP_KEY}: uvloop is not installed"):
        choose_loop("uvloop", uvloop_installed=False)


@pytest.mark.parametrize("setting", ["trio", "uv", "0", "asyncio,uvloop"])
def test_anything_else_is_refused_naming_the_key_and_the_choices(setting: str) -> None:
    """Catches a typo quietly falling back to a default loop."""
    with pytest.raises(ConfigError, match=rf"^{EVENT_LOOP_KEY}: .*auto, asyncio, uvloop"):
        choose_loop(setting, uvloop_installed=True)
