"""``tocsin simulate`` as users run it, on a real log file written by the real pipeline
code (triage -> facts -> the ledger, without NATS): the ``--markdown`` summary, and the
progress bar drawn on a terminal (a pseudo-terminal here) and nowhere else."""

from __future__ import annotations

import itertools
import os
import pty
import re
import subprocess
from pathlib import Path

import pytest

from tests.core.test_fold import MINUTE, T0, normalized
from tests.test_cli import TOCSIN, clean_env, run
from tocsin import config
from tocsin.core.decide.route import Route, RoutingTable
from tocsin.core.decide.triage import triage
from tocsin.core.matchers import Match
from tocsin.core.times import format_us
from tocsin.store.eventlog import db_path
from tocsin.store.ledger import Input, Ledger

LOGGED_ROUTES = RoutingTable.compile(
    [
        Route(receivers=["hook", "mail"], match=Match(severity="critical")),
        Route(receivers=["hook"], match=Match()),
    ]
)

NEW_CONFIG = """
[[route]]
match = { severity = "critical" }
receivers = ["pager"]
continue = false

[[route]]
match = {}
receivers = ["hook"]

[receivers.hook]
channel = "webhook"
url = "http://127.0.0.1:9/hook"

[receivers.pager]
channel = "webhook"
url = "http://127.0.0.1:9/pager"
"""


@pytest.fixture
async def logged(tmp_path: Path) -> Path:
    """A data dir whose log saw, a minute apart, a critical alert on host ``a|b``, a
    warning on ``c`` and a critical on ``d``, routed as ``LOGGED_ROUTES`` says (critical
    to hook and mail, the rest to hook)."""
    data = tmp_path / "data"
    ledger = await Ledger.open(db_path(data), snapshot_every=0)
    ids = itertools.count()
    inputs = [("critical", "a|b"), ("warning", "c"), ("critical", "d")]
    async with ledger.batch() as batch:
        for i, (severity, host) in enumerate(inputs):
            event = normalized(i, severity, host=host)
            facts = triage(
                ledger.state,
                event,
                subject="alerts.in.db",
                received_at=event.timestamp,
                routing=LOGGED_ROUTES,
                window_seconds=600,
                new_id=lambda: f"id{next(ids)}",
                trace_id=None,
            )
            batch.add_caused(facts, Input.INBOUND, i + 1)
    await ledger.close()
    return data


def test_markdown_is_the_summary_a_reviewer_pastes(logged: Path, tmp_path: Path) -> None:
    """Catches a ``--markdown`` that is missing or changes shape: the heading with the
    version, the window replayed, the counts, the receivers before -> after, and the
    changed alerts cut at ``--limit`` with how many more (a ``|`` in a label escaped,
    so the table keeps its columns)."""
    new = tmp_path / "new.toml"
    new.write_text(NEW_CONFIG)
    digest = config.load(new).digest()
    args = ["simulate", "--data-dir", str(logged), "--config", str(new), "--markdown"]
    done = run(*args, "--limit", "1")
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", "no progress bar into a pipe"
    assert done.stdout.splitlines() == [
        f"### tocsin simulate: config `{digest}`",
        "",
        f"Replayed 3 received event(s), {format_us(T0)} → {format_us(T0 + 2 * MINUTE)}.",
        "",
        "**0 added, 0 removed, 2 changed**, 1 alert(s) told the same.",
        "",
        "| Receiver | Before | After | Change |",
        "|---|---:|---:|---:|",
        "| hook | 3 | 1 | -2 |",
        "| mail | 2 | 0 | -2 |",
        "| pager | 0 | 2 | +2 |",
        "",
        "Changed alerts (the first 1 of 2; before: told only by the log, after: told only"
        " under the new config):",
        "",
        "| | Type | Severity | Labels | Before | After |",
        "|---|---|---|---|---|---|",
        "| changed | disk_full | critical | host=a\\|b | hook firing<br>mail firing"
        " | pager firing |",
        "",
        "…and 1 more changed alert(s) (`--json` for all).",
    ]

    every = run(*args)
    assert every.returncode == 0, every.stderr
    assert "| changed | disk_full | critical | host=d |" in every.stdout
    assert "more changed" not in every.stdout


def run_on_a_terminal(*args: str) -> tuple[int, str, str]:
    """``tocsin`` with stderr on a pseudo-terminal (stdout a pipe): exit code, stdout,
    and what the terminal showed."""
    master, slave = pty.openpty()
    try:
        process = subprocess.Popen(
            [TOCSIN, *args], stdout=subprocess.PIPE, stderr=slave, env=clean_env(), text=True
        )
        os.close(slave)
        out, _ = process.communicate(timeout=30)
        shown = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal and it is drained
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(master)
    return process.returncode, out, shown.decode()


def test_a_progress_bar_on_a_terminal_and_none_in_json(logged: Path, tmp_path: Path) -> None:
    """Catches a progress bar that is never drawn on a terminal, or one drawn with
    ``--json`` (where a script reads the output): on a pseudo-terminal the bar shows
    every row read of the total, then is cleared; with ``--json`` the terminal stays
    empty. (Into a pipe there is none: the markdown test checks stderr is empty.)"""
    new = tmp_path / "new.toml"
    new.write_text(NEW_CONFIG)
    args = ["simulate", "--data-dir", str(logged), "--config", str(new)]
    code, out, shown = run_on_a_terminal(*args)
    assert code == 0, shown
    assert "2 changed, 1 the same" in out
    bar = re.search(r"\[#{20}\] (\d+)/(\d+) events \(100%\), [\d,]+ events/s, ETA 0:00", shown)
    assert bar is not None, shown
    assert bar[1] == bar[2] == "8", "3 received events and 5 notifications read"
    assert shown.endswith("\rcomparing with what the log notified...\x1b[K\r\x1b[K"), (
        "the bar is followed by the comparison's note, then cleared before the report"
    )

    code, out, shown = run_on_a_terminal(*args, "--json")
    assert code == 0, shown
    assert out.startswith("{")
    assert shown == ""
