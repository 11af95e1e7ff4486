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

import pytest
import yaml

from tocsin import cli, config
from tocsin.core.matchers import parse_matchers

DATA = Path(__file__).parent / "data" / "alertmanager"
AMTOOL = "/usr/bin/amtool"
CONFIGS = [
    "simple.yml",
    "conf.good.yml",
    "conf.group-by-all.yml",
    "conf.empty-fields.yml",
    "nested.yml",
]
LABEL_SETS = 80  # per config: 400 in all; amtool is a process per label set (~20 ms)


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


def _label_sets(original: dict[str, object], seed: int) -> list[dict[str, str]]:
    """Deterministic label sets: always an alertname and a severity (tocsin reads a
    missing severity as warning, Alertmanager as empty), each other label present or
    absent at random."""
    vocabulary: dict[str, set[str]] = {}
    _vocabulary(original.get("route"), vocabulary)
    vocabulary.setdefault("severity", set()).update({"critical", "warning", "info"})
    rng = random.Random(seed)
    sets = []
    for _ in range(LABEL_SETS):
        labels = {"alertname": rng.choice(["A", "B"])}
        for name, values in sorted(vocabulary.items()):
            if name == "severity" or rng.random() < 0.6:
                labels[name] = rng.choice(sorted(values))
        sets.append(labels)
    return sets


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


@pytest.mark.parametrize("name", CONFIGS)
def test_route_test_on_the_translation_names_amtools_receivers(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Catches any flattening that changes who is told: a fallback that applies although
    a child matched, a ``continue`` that stops too much or too little, a nested stop
    that leaks out of its subtree, a matcher converted wrongly (``match_re`` anchors,
    negations)."""
    path = DATA / name
    original = yaml.safe_load(path.read_text())
    translated = _translate(path, tmp_path, capsys)
    # a receiver with several integrations is one tocsin receiver per integration
    split = {
        made: receiver["name"]
        for receiver in original.get("receivers") or []
        for made in [receiver["name"]] + [f"{receiver['name']}-{n}" for n in range(2, 9)]
    }
    for labels in _label_sets(original, seed=len(name)):
        ours = {split.get(r, r) for r in _route_test(translated, labels, capsys)}
        assert ours == _amtool(path, labels), labels


def test_import_lists_what_it_cannot_translate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Catches losses passed over in silence: templates, integrations tocsin lacks,
    fields it does not read, each named on stderr; the rest still translated (exit 0)."""
    assert cli.main(["config", "import-alertmanager", str(DATA / "conf.good.yml")]) == 0
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
    smtp = config.load(_translate(DATA / "conf.good.yml", tmp_path, capsys)).smtp
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
    assert "unknown receiver 'x'" in capsys.readouterr().err
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
