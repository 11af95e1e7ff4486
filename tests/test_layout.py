"""The module table of docs/architecture.md is the map of the package: every module is on
it, and everything on it exists, so it cannot drift from the tree again."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "service" / "tocsin"
MAP = ROOT / "docs" / "architecture.md"
LAYERS = ("core", "store", "bus", "pipeline", "channels", "api", "observability")


def table_rows() -> list[tuple[str, str]]:
    """(first cell's path, the row's text) for the rows of the module table, in the
    section "## The modules" of docs/architecture.md."""
    page = MAP.read_text()
    assert "\n## The modules\n" in page, f"{MAP.relative_to(ROOT)} has no section 'The modules'"
    section = page.split("\n## The modules\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        match = re.match(r"^\| \**`([^`]+)`\** \|(.*)\|$", line)
        if match and match[1] != "module":
            rows.append((match[1], match[2]))
    return rows


def modules() -> set[str]:
    return {
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*.py")
        if path.name != "__init__.py"
    }


def covered(module: str, rows: list[tuple[str, str]]) -> bool:
    """A module is on the map when a row names it, or names its folder and mentions the
    module's file name in its text (``core/policy/`` ... ``retry.py``), or is a folder
    row whose text says it holds one module per provider."""
    folder, _, name = module.rpartition("/")
    for path, text in rows:
        if path == module:
            return True
        if folder and path == folder + "/" and (f"`{name}`" in text or "one module per" in text):
            return True
    return False


def test_every_module_is_on_the_map() -> None:
    rows = table_rows()
    missing = sorted(m for m in modules() if not covered(m, rows))
    assert not missing, f"the module table of docs/architecture.md leaves out: {missing}"


def test_everything_on_the_map_exists() -> None:
    absent = [path for path, _ in table_rows() if not (PACKAGE / path).exists()]
    assert not absent, (
        f"the module table of docs/architecture.md names what the tree lacks: {absent}"
    )
    for path, text in table_rows():
        if path.endswith("/"):
            for name in re.findall(r"`([a-z_]+\.py)`", text):
                assert (PACKAGE / path / name).exists(), f"{path}{name} is on the map, not the tree"


def test_every_layer_has_its_folder_and_its_row() -> None:
    named = {path.rstrip("/") for path, _ in table_rows()}
    for layer in LAYERS:
        assert (PACKAGE / layer / "__init__.py").exists(), f"no package {layer}/"
        assert layer in named, f"the module table of docs/architecture.md has no row for {layer}/"
