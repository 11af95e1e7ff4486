"""A new event kind cannot slip past the places that decide by kind (core/kinds).

A copy of the package gets one more event class in the ``Event`` union, as the next
kind will be added. ``mypy --strict`` (the project's settings) must then fail at the
``assert_never`` of every choice by kind, and with no other error, so the copy was
otherwise sound and the check is not vacuous; and the copy must not even import, since
``kinds.by_kind`` asks each choice about every kind. The unchanged package passing mypy
is ``make lint``'s job; at run time, every table holds every kind.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from tocsin.api import dashboard
from tocsin.core import fold, outbound, views
from tocsin.core.kinds import KINDS, tag_of
from tocsin.observability import telemetry, tracing

ROOT = Path(__file__).resolve().parents[1]

NEW_KIND = '''
class AlertProbed(_Event, frozen=True, tag="alert.probed"):
    """A kind added to the vocabulary, that no module has decided about yet."""

    alert_id: str
    fingerprint: str


Event = (
    AlertProbed
    |'''

# Each place that decides by kind, and how many choices it makes.
CHOICES = {
    "tocsin/core/fold.py": 1,  # what the fold does
    "tocsin/core/outbound.py": 1,  # what a committed fact sends
    "tocsin/core/views.py": 2,  # history runs, delivery steps
    "tocsin/observability/telemetry.py": 1,  # what a fact counts
    "tocsin/observability/tracing.py": 1,  # what a route span says
    "tocsin/api/dashboard.py": 1,  # the timeline's words
}


def with_new_kind(tmp: Path) -> Path:
    shutil.copytree(
        ROOT / "service" / "tocsin",
        tmp / "service" / "tocsin",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    shutil.copytree(  # mypy checks the publisher library too (pyproject's packages)
        ROOT / "clients" / "python" / "src",
        tmp / "clients" / "python" / "src",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    shutil.copy(ROOT / "pyproject.toml", tmp / "pyproject.toml")
    events = tmp / "service" / "tocsin" / "core" / "events.py"
    text = events.read_text()
    assert text.count("\nEvent = (\n") == 1
    events.write_text(text.replace("\nEvent = (\n", NEW_KIND + "\n    ", 1))
    return tmp


def test_a_new_kind_fails_mypy_at_every_choice_and_the_import(tmp_path: Path) -> None:
    copy = with_new_kind(tmp_path)
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(copy / ".mypy_cache")],
        cwd=copy,
        capture_output=True,
        text=True,
        check=False,
    )
    errors = [line for line in checked.stdout.splitlines() if ": error: " in line]
    assert checked.returncode == 1, checked.stdout + checked.stderr
    unreached = re.compile(
        r'^service/(\S+\.py):\d+: error: Argument 1 to "assert_never" has incompatible '
        r'type "type\[AlertProbed\]"; expected "Never"'
    )
    others = [line for line in errors if not unreached.match(line)]
    assert others == [], "errors other than a kind left undecided:\n" + "\n".join(others)
    places = Counter(m.group(1) for line in errors if (m := unreached.match(line)))
    missing = {place: n for place, n in CHOICES.items() if places[place] < n}
    assert missing == {}, f"choices that did not notice the new kind: {missing}"

    imported = subprocess.run(
        [sys.executable, "-c", "import tocsin.core.fold"],
        cwd=copy,
        env={"PYTHONPATH": str(copy / "service")},
        capture_output=True,
        text=True,
        check=False,
    )
    assert imported.returncode != 0
    assert "AssertionError" in imported.stderr
    assert "AlertProbed" in imported.stderr


def test_every_table_by_kind_holds_every_kind() -> None:
    # Built by kinds.by_kind / by_tag from a choice, not written by hand: a hand-written
    # table would forget a kind without mypy seeing it.
    by_type = [fold._HANDLERS, outbound._MESSAGES, telemetry._COUNTS, tracing._NOTES]
    for table in by_type:
        assert list(table) == list(KINDS)
    tags = [tag_of(kind) for kind in KINDS]
    for by_tag in [views._IN_HISTORY, views._STEPS, dashboard._DESCRIBE]:
        assert list(by_tag) == tags
