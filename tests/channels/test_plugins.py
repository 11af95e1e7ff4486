"""Third-party channels: a distribution declaring a ``tocsin.channels`` entry point is
found by the registry and used like a built-in channel, from config to delivery."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.support import Tocsin, publish, wait_until
from tocsin.channels import registry
from tocsin.config import from_mapping
from tocsin.core.errors import ConfigError

PLUGIN = '''
"""A tiny channel as a team would ship it: appends each notification id to a file."""
from pathlib import Path

from tocsin.channels import ChannelConfigError, ChannelKind, ReceiverConfig
from tocsin.core.policy.retry import SENT


class MemoConfig(ReceiverConfig, kw_only=True, forbid_unknown_fields=True):
    path: str


class MemoChannel:
    kind = "memo"

    def __init__(self, name, config, env):
        if not config.path:
            raise ChannelConfigError("path", "path is empty")
        self.path = Path(config.path)

    async def send(self, notification, *, traceparent=None):
        with self.path.open("a") as out:
            out.write(notification.notification_id + " " + notification.summary + "\\n")
        return SENT

    async def close(self):
        return None


KIND = ChannelKind(name="memo", config_type=MemoConfig,
                   build=lambda name, config, env: MemoChannel(name, config, env))
'''


@pytest.fixture
def memo_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Installs ``tocsin-memo-channel`` the way pip lays out a distribution."""
    site = tmp_path / "site"
    (site / "tocsin_memo_channel").mkdir(parents=True)
    (site / "tocsin_memo_channel" / "__init__.py").write_text(PLUGIN)
    info = site / "tocsin_memo_channel-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: tocsin-memo-channel\nVersion: 1.0\n"
    )
    (info / "entry_points.txt").write_text(
        textwrap.dedent("""\
            [tocsin.channels]
            memo = tocsin_memo_channel:KIND
            """)
    )
    monkeypatch.syspath_prepend(str(site))
    return site


def test_an_installed_entry_point_joins_the_registry(memo_plugin: Path) -> None:
    kinds = registry()
    assert "memo" in kinds
    assert {"webhook", "email", "log"} <= set(kinds)


def test_plugin_config_errors_name_the_receiver_and_key(memo_plugin: Path) -> None:
    with pytest.raises(ConfigError, match=r"^receivers\.m\.path: required"):
        from_mapping({"receivers": {"m": {"channel": "memo"}}}, {})


async def test_an_alert_is_routed_to_a_plugin_channel(
    memo_plugin: Path, nats_url: str, data_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "memo.txt"
    toml = f'[receivers.memo]\nchannel = "memo"\npath = "{out}"\n'
    service = await Tocsin(data_dir, nats_url, toml).start()
    try:
        await publish(
            nats_url,
            "alerts.in.plug",
            {"type": "plugged", "severity": "info", "summary": "via a plugin"},
        )
        await wait_until(lambda: service.count("delivery.succeeded") == 1, 10, "plugin delivery")
        [line] = out.read_text().splitlines()
        [routed] = service.events("alert.routed")
        assert line == f"{routed['notification_id']} via a plugin"
        [succeeded] = service.events("delivery.succeeded")
        assert succeeded["channel"] == "memo"
        assert succeeded["receiver"] == "memo"
    finally:
        await service.stop()
