"""``tocsin simulate`` as users run it, on a real log file written by the real pipeline
code (triage -> facts -> the ledger, without NATS): the ``--markdown`` summary, and the
progress bar drawn on a terminal (a pseudo-terminal here) and nowhere else."""

from __future__ import annotations

import itertools
import json
import os
import pty
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.core.test_fold import MINUTE, T0, normalized
from tests.test_cli import TOCSIN, clean_env, run
from tocsin import config
from tocsin.core.decide.route import Route, RoutingTable
from tocsin.core.decide.triage import triage
from tocsin.core.matchers import Match
from tocsin.core.times import format_us
from tocsin.store import forensics
from tocsin.store.eventlog import db_path, partition_dir
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
    inputs = [("critical", "a|b"), ("warning", "c"), ("critical", "d")]
    script = [(i, severity, host) for i, (severity, host) in enumerate(inputs)]
    await write_log(data, script, itertools.count())
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


PARTITIONED_CONFIG = """
[[route]]
match = { severity = "critical" }
receivers = ["pager"]
group_by = ["labels.host"]
group_wait = "5m"

[[route]]
match = {}
receivers = ["hook"]

[receivers.hook]
channel = "webhook"
url = "http://127.0.0.1:9/hook"

[receivers.pager]
channel = "webhook"
url = "http://127.0.0.1:9/pager"

[heartbeats.backup]
every = "2m"
"""

# (minute, severity, host): p0 holds hosts a and c, p1 hosts b and d; p0's last input
# is at minute 3, p1's at minute 12, so p0's groups fall due (group_wait 5m) after its
# own last input and before the last of all
SCRIPT = [(0, "critical", "a"), (1, "warning", "b"), (2, "warning", "c"), (3, "critical", "c")]
SCRIPT += [(4, "critical", "b"), (6, "warning", "d"), (12, "critical", "d")]
HOSTS_OF = {0: {"a", "c"}, 1: {"b", "d"}}


async def write_log(data: Path, script: list[tuple[int, str, str]], ids: Iterator[int]) -> None:
    """What the router logged for ``script`` under ``LOGGED_ROUTES``, in ``data``'s log."""
    ledger = await Ledger.open(db_path(data), snapshot_every=0)
    async with ledger.batch() as batch:
        for i, (minute, severity, host) in enumerate(script):
            event = normalized(minute, severity, host=host)
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


@pytest.fixture
async def partitioned(tmp_path: Path) -> tuple[Path, Path]:
    """A data dir of two partitions' logs (``p0``, ``p1``: DESIGN.md section 17; ids
    unique across them, as routers make them), and one log holding the same events."""
    data, one = tmp_path / "partitioned", tmp_path / "one"
    ids = itertools.count()
    for k, hosts in HOSTS_OF.items():
        await write_log(partition_dir(data, k), [s for s in SCRIPT if s[2] in hosts], ids)
    await write_log(one, SCRIPT, itertools.count())
    return data, one


def comparable(report: dict[str, Any]) -> dict[str, Any]:
    """A ``--json`` report with what tells the logs apart taken out: the alert ids each
    log (and each simulation) made, the partitions covered, the order of the changes
    (listed partition by partition)."""
    changes = sorted(
        (c["kind"], c["fingerprint"], str(c["added"]), str(c["removed"])) for c in report["changes"]
    )
    rest = {k: v for k, v in report.items() if k not in ("changes", "partitions")}
    return {**rest, "changes": changes}


def test_simulate_of_a_partitioned_data_dir_is_one_log_holding_both(
    partitioned: tuple[Path, Path], tmp_path: Path
) -> None:
    """Catches ``simulate`` reading no log of a partitioned data dir (it read only
    ``<data-dir>/tocsin.db``), or one partition, and a sum that differs from one log
    holding every partition's events: received events, alerts told the same, the
    changes and the totals by receiver are one log's. That needs each partition's
    timers settled to the last input of all (p0's groups fall due after its own last
    input) and each heartbeat kept by one partition (else it is missed in each). The
    report says how many partitions it covered."""
    data, one = partitioned
    new = tmp_path / "new.toml"
    new.write_text(PARTITIONED_CONFIG)
    args = ["simulate", "--config", str(new), "--json"]
    done = run(*args, "--data-dir", str(data))
    assert done.returncode == 0, done.stderr
    merged = json.loads(done.stdout)
    whole = json.loads(run(*args, "--data-dir", str(one)).stdout)
    assert merged["partitions"] == 2
    assert "partitions" not in whole
    assert comparable(merged) == comparable(whole)
    assert merged["received"] == len(SCRIPT)
    added = [c for c in merged["changes"] if c["kind"] == "added"]
    assert len(added) == 1, "the heartbeat's missed alert, once"
    assert merged["after"]["pager"] == 4, "the groups of a, c (p0), b and the heartbeat's"

    text = run("simulate", "--config", str(new), "--data-dir", str(data))
    assert text.returncode == 0, text.stderr
    assert f"simulated {len(SCRIPT)} received event(s) from 2 partition(s)" in text.stdout
    markdown = run("simulate", "--config", str(new), "--data-dir", str(data), "--markdown")
    assert f"Replayed {len(SCRIPT)} received event(s) from 2 partition(s), " in markdown.stdout
    assert "2 partition" not in run("simulate", "--config", str(new), "--data-dir", str(one)).stdout


def test_the_progress_bar_counts_every_partition(
    partitioned: tuple[Path, Path], tmp_path: Path
) -> None:
    """Catches a bar that counts one partition's rows, or starts again at each: it
    ends at the rows of both logs."""
    data, _ = partitioned
    new = tmp_path / "new.toml"
    new.write_text(PARTITIONED_CONFIG)
    code, out, shown = run_on_a_terminal("simulate", "--data-dir", str(data), "--config", str(new))
    assert code == 0, shown
    rows = [forensics.simulation_total(db_path(partition_dir(data, k))) for k in HOSTS_OF]
    assert all(rows)
    bar = re.search(r"\[#{20}\] (\d+)/(\d+) events \(100%\)", shown)
    assert bar is not None, shown
    assert int(bar[1]) == int(bar[2]) == sum(rows)
    assert "from 2 partition(s)" in out
