"""``tocsin config import-alertmanager`` and ``tocsin route-test``, proved against the
real ``amtool`` (DESIGN.md section 14): for Alertmanager's own example and test configs
and a tree of ours, ``route-test`` on the translation names the receivers ``amtool
config routes test`` names on the original, for a few hundred generated label sets.
``amtool`` comes from Debian's ``prometheus-alertmanager`` (tests/system-packages.sh)."""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tocsin import cli, config
from tocsin.core.matchers import parse_matchers

DATA = Path(__file__).parent / "data" / "alertmanager"
UPSTREAM = DATA / "upstream"
AMTOOL = "/usr/bin/amtool"
GOOD = UPSTREAM / "config" / "testdata" / "conf.good.yml"
ALL_CONFIGS = sorted(str(p.relative_to(DATA)) for p in DATA.rglob("*.yml"))
LABEL_SETS = 80  # per config with a route tree; amtool is a process per label set (~20 ms)
LABEL_SETS_ROOT_ONLY = 8  # a tree of one node sends everything to its receiver

REFUSED = {
    # Alertmanager's own verdict on each file of its config/testdata/ it refuses, from
    # its config/config_test.go (the version the files come from, 0.34): the message
    # its loader gives. Every other file there and in doc/examples/ loads.
    "conf.mattermost-both-webhook-url-and-file.yml": "at most one of mattermost_webhook_url"
    " & mattermost_webhook_url_file must be configured",
    "conf.mattermost-valid-receiver-both-webhook-url-and-file.yml": "at most one of"
    " mattermost_webhook_url & mattermost_webhook_url_file must be configured",
    "conf.mattermost-no-webhook-url.yml": "missing webhook_url or webhook_url_file on"
    " mattermost_config",
    "conf.nil-match_re-route.yml": 'invalid regexp value for "invalid_label"',
    "conf.nil-source_match_re-inhibition.yml": 'invalid regexp value for "invalid_source_label"',
    "conf.nil-target_match_re-inhibition.yml": 'invalid regexp value for "invalid_target_label"',
    "conf.opsgenie-both-file-and-apikey.yml": "at most one of opsgenie_api_key &"
    " opsgenie_api_key_file must be configured",
    # Alertmanager: "field teams not found in type opsgenie.plain" (its YAML is strict;
    # the import lists unknown fields instead of refusing them). The file's route also
    # names a receiver it never defines, which Alertmanager would refuse next.
    "conf.opsgenie-default-apikey-old-team.yml": 'undefined receiver "escalation-Y-opsgenie"'
    " used in route",
    "conf.opsgenie-no-apikey.yml": "no global OpsGenie API Key set either inline or in a file",
    "conf.rocketchat-both-token-and-tokenfile.yml": "at most one of rocketchat_token &"
    " rocketchat_token_file must be configured",
    "conf.rocketchat-both-tokenid-and-tokenidfile.yml": "at most one of rocketchat_token_id &"
    " rocketchat_token_id_file must be configured",
    "conf.rocketchat-no-token.yml": "no global Rocketchat Token set either inline or in a file",
    "conf.slack-both-file-and-token.yml": "at most one of slack_app_token &"
    " slack_app_token_file must be configured",
    "conf.slack-both-file-and-url.yml": "at most one of slack_api_url & slack_api_url_file"
    " must be configured",
    "conf.slack-both-url-and-token.yml": "at most one of slack_app_token/slack_app_token_file"
    " & slack_api_url/slack_api_url_file must be configured",
    "conf.slack-update-message-and-webhook.yml": "update_message can only be used with bot"
    " tokens. api_url must be set to https://slack.com/api/chat.postMessage",
    "conf.slack-no-api-url-or-token.yml": "no Slack API URL nor App token set either inline"
    " or in a file",
    "conf.smtp-both-password-and-file.yml": "at most one of smtp_auth_password &"
    " smtp_auth_password_file must be configured",
    "conf.sns-invalid.yml": "must provide either a Target ARN, Topic ARN, or Phone Number"
    " for SNS config",
    "conf.telegram-both-bot-token-and-file.yml": "at most one of telegram_bot_token &"
    " telegram_bot_token_file must be configured",
    "conf.telegram-valid-receiver-both-bot-token-and-file.yml": "at most one of"
    " telegram_bot_token & telegram_bot_token_file must be configured",
    "conf.telegram-no-bot-token.yml": "missing bot_token or bot_token_file on telegram_config",
    "conf.victorops-both-file-and-apikey.yml": "at most one of victorops_api_key &"
    " victorops_api_key_file must be configured",
    "conf.victorops-no-apikey.yml": "no global VictorOps API Key set",
    "conf.wechat-both-file-and-secret.yml": "at most one of wechat_api_secret &"
    " wechat_api_secret_file must be configured",
    "conf.wechat-no-api-secret.yml": "no global Wechat Api Secret set either inline or in a file",
}


def _vocabulary(node: object, out: dict[str, set[str]]) -> None:
    """Every label name and value the config's matchers mention, plus near misses, so
    the generated label sets reach every route and just miss it too."""
    if isinstance(node, dict):
        for key in ("match", "match_re", "source_match", "target_match"):
            for name, value in (node.get(key) or {}).items():
                out.setdefault(str(name), set()).update({str(value), str(value) + "x"})
        for text in node.get("matchers") or []:
            for matcher in parse_matchers(str(text)):
                values = matcher.value.replace(".*", "1").split("|")
                out.setdefault(matcher.name, set()).update([*values, matcher.value + "x"])
        for value in node.values():
            _vocabulary(value, out)
    elif isinstance(node, list):
        for value in node:
            _vocabulary(value, out)


def _label_sets(original: dict[str, Any], seed: int) -> list[dict[str, str]]:
    """Deterministic label sets: always an alertname and a severity (tocsin reads a
    missing severity as warning, Alertmanager as empty), each other label present or
    absent at random."""
    vocabulary: dict[str, set[str]] = {}
    _vocabulary(original.get("route"), vocabulary)
    vocabulary.setdefault("severity", set()).update({"critical", "warning", "info"})
    rng = random.Random(seed)
    sets = []
    count = LABEL_SETS if (original.get("route") or {}).get("routes") else LABEL_SETS_ROOT_ONLY
    for _ in range(count):
        labels = {"alertname": rng.choice(["A", "B"])}
        for name, values in sorted(vocabulary.items()):
            if name == "severity" or rng.random() < 0.6:
                labels[name] = rng.choice(sorted(values))
        sets.append(labels)
    return sets


def _routing_only(original: dict[str, Any]) -> dict[str, Any]:
    """The file as Alertmanager routes it, for Debian's amtool (0.25), which refuses
    fields newer than itself: who is told depends on the route tree, the receivers'
    names and the time intervals only, not on integrations, ``global``, templates or a
    route's ``labels`` (rendered for templates)."""

    def tree(node: dict[str, Any]) -> dict[str, Any]:
        out = {key: value for key, value in node.items() if key != "labels"}
        if out.get("routes"):
            out["routes"] = [tree(child) for child in out["routes"]]
        return out

    kept = ("inhibit_rules", "time_intervals", "mute_time_intervals")
    return {
        "route": tree(original["route"]),
        "receivers": [{"name": r["name"]} for r in original.get("receivers") or []],
        **{key: original[key] for key in kept if original.get(key)},
    }


def _amtool(path: Path, labels: dict[str, str]) -> set[str]:
    done = subprocess.run(
        [AMTOOL, "config", "routes", "test", f"--config.file={path}"]
        + [f"{k}={v}" for k, v in labels.items()],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return set(done.stdout.strip().split(","))


def _translate(path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    assert cli.main(["config", "import-alertmanager", str(path)]) == cli.EXIT_OK
    out = tmp_path / (path.stem + ".toml")
    out.write_text(capsys.readouterr().out)
    assert cli.main(["config", "check", str(out)]) == cli.EXIT_OK
    capsys.readouterr()
    return out


def _route_test(
    translated: Path, labels: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> list[str]:
    argv = ["route-test", "--config", str(translated), "--json"]
    for name, value in labels.items():
        argv += ["--label", f"{name}={value}"]
    assert cli.main(argv) == cli.EXIT_OK
    answer = json.loads(capsys.readouterr().out)
    receivers: list[str] = answer["receivers"]
    return receivers


def test_the_refusals_name_files_that_exist() -> None:
    """Catches a verdict table that no longer matches the files (a renamed file would
    be translated and compared as if Alertmanager loaded it, not refused)."""
    assert set(REFUSED) <= {Path(name).name for name in ALL_CONFIGS}
    assert len(ALL_CONFIGS) == 49  # 2 doc/examples, 46 config/testdata, nested.yml


@pytest.mark.parametrize("name", ALL_CONFIGS)
def test_the_import_agrees_with_alertmanager_on_every_configuration(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every file of Alertmanager's doc/examples/ and config/testdata/, and a tree of
    ours. One Alertmanager refuses is refused with its message (a translation would
    hide the mistake). For one it loads, ``route-test`` on the translation names the
    receivers ``amtool config routes test`` names, for generated label sets. Catches
    any flattening that changes who is told: a fallback that applies although a child
    matched, a ``continue`` that stops too much or too little, a nested stop that leaks
    out of its subtree, a matcher converted wrongly (``match_re`` anchors, negations)."""
    path = DATA / name
    refused = REFUSED.get(path.name)
    if refused is not None:
        assert cli.main(["config", "import-alertmanager", str(path)]) == cli.EXIT_USAGE
        assert f"Alertmanager refuses this configuration: {refused}\n" in capsys.readouterr().err
        return
    original = yaml.safe_load(path.read_text())
    translated = _translate(path, tmp_path, capsys)
    routing = tmp_path / "routing.yml"
    routing.write_text(yaml.safe_dump(_routing_only(original)))
    # a receiver with several integrations is one tocsin receiver per integration
    split = {
        made: receiver["name"]
        for receiver in original.get("receivers") or []
        for made in [receiver["name"]] + [f"{receiver['name']}-{n}" for n in range(2, 9)]
    }
    for labels in _label_sets(original, seed=len(name)):
        ours = {split.get(r, r) for r in _route_test(translated, labels, capsys)}
        assert ours == _amtool(routing, labels), labels


def test_import_lists_what_it_cannot_translate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Catches losses passed over in silence: templates, integrations tocsin lacks,
    fields it does not read, each named on stderr; the rest still translated (exit 0)."""
    assert cli.main(["config", "import-alertmanager", str(GOOD)]) == 0
    err = capsys.readouterr().err
    assert "templates" in err
    assert "victorops_configs: integration not supported" in err
    assert "pushover_configs: integration not supported" in err
    assert "slack_configs[0].channel: not translated" in err


def test_global_smtp_settings_become_the_smtp_section(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Catches email receivers translated without the server Alertmanager sends through
    (tocsin would fall back to its environment, or to nothing)."""
    smtp = config.load(_translate(GOOD, tmp_path, capsys)).smtp
    assert smtp is not None
    assert (smtp.host, smtp.port, smtp.sender) == ("localhost", 25, "alertmanager@example.org")
    assert smtp.username == "alertmanager"
    assert smtp.password == "multiline\nmysecret"


def test_import_exits_2_when_nothing_usable_remains(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Catches a translation printed for a file with no route tocsin could use."""
    path = tmp_path / "am.yml"
    path.write_text("route:\n  receiver: x\nreceivers: []\n")
    assert cli.main(["config", "import-alertmanager", str(path)]) == cli.EXIT_USAGE
    assert 'undefined receiver "x" used in route' in capsys.readouterr().err
    path.write_text("- not\n- a mapping\n")
    assert cli.main(["config", "import-alertmanager", str(path)]) == cli.EXIT_USAGE


def test_group_timings_are_inherited_with_alertmanagers_defaults(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Catches timings not written out (tocsin's defaults are 0s and no repeat, not
    Alertmanager's 30s, 5m, 4h) or not inherited down the tree as Alertmanager does."""
    path = tmp_path / "am.yml"
    path.write_text(
        "route:\n  receiver: r\n  group_interval: 1h30m\n  routes:\n"
        '    - matchers: [a="1"]\n      group_wait: 1w\n      group_by: [alertname, c]\n'
        "receivers:\n  - name: r\n    webhook_configs: [{url: 'http://127.0.0.1:9/'}]\n"
    )
    translated = _translate(path, tmp_path, capsys)
    assert cli.main(["config", "check", str(translated)]) == 0
    shown = capsys.readouterr().out
    child = 'group_by ["type","labels.c"]; group_wait 604800s; group_interval 5400s;'
    assert f"{child} repeat_interval 14400s" in shown
    assert "group_by []; group_wait 30s; group_interval 5400s; repeat_interval 14400s" in shown


def test_inhibit_rules_and_time_intervals_carry_over(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Catches inhibit rules or time intervals dropped, or written in a shape tocsin's
    config loader refuses or reads differently (old-style ``target_match_re``, a
    ``mute_time_intervals`` entry, intervals named on the route that uses them)."""
    translated = _translate(DATA / "nested.yml", tmp_path, capsys)
    loaded = config.load(translated)
    (rule,) = loaded.inhibit
    assert rule.source_matchers == ['severity="critical"']
    assert rule.target_matchers == ['severity=~"warning|info"']
    assert rule.equal == ["type", "labels.service"]
    info = [r for r in loaded.routes if r.receivers == ["info"]]
    assert info
    assert all(r.mute_time_intervals == ["nights"] for r in info)
    assert all(r.active_time_intervals == ["weekdays"] for r in info)
    assert cli.main(["config", "check", str(translated)]) == 0
    assert "muted in nights" in capsys.readouterr().out
