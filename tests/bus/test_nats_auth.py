"""Each way tocsin logs in to NATS, against a real nats-server configured for it.

user + password, token, NKey seed file, ``.creds`` file (operator mode: the operator,
account and user JWTs are made here with ``nkeys``), and TLS with a client certificate
(mutual TLS) and with or without hostname verification. Every login goes through the one
builder every tocsin connection uses (``connection.connect_options``) from a real
``[nats]`` section or ``TOCSIN_NATS_*`` variables; each is shown to work (a round trip on
the connection) and a wrong one to be refused. Then: ``tocsin publish`` logs in the same
way, and no secret shows in logs, ``/readyz`` or error messages.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import nkeys
import pytest

from tests.natsauth import (
    Certs,
    ConfiguredNats,
    Operator,
    new_seed,
    password,
    public_key,
    round_trip,
    write_conf,
)
from tests.support import free_port, wait_until
from tocsin import cli, service
from tocsin import config as config_module
from tocsin.bus.connection import NatsLogin, connect_options
from tocsin.bus.streams import ensure_streams
from tocsin.config import load_nats_login
from tocsin.core.subjects import STREAM_IN
from tocsin.observability.redact import MASK


def login_from(tmp_path: Path, nats_table: str, env: dict[str, str] | None = None) -> NatsLogin:
    """The login ``tocsin`` would use with this ``[nats]`` table (and environment)."""
    file = tmp_path / "tocsin.toml"
    file.write_text(f"[nats]\n{nats_table}\n")
    return load_nats_login(file, env or {})


async def connect(url: str, login: NatsLogin) -> Any:
    """A one-shot connection through the builder (no reconnects, so a refusal raises)."""
    return await nats.connect(url, **connect_options(login), allow_reconnect=False)


@pytest.fixture
def running() -> Iterator[list[ConfiguredNats]]:
    servers: list[ConfiguredNats] = []
    yield servers
    for server in servers:
        server.stop()


def start(running: list[ConfiguredNats], conf: Path, tls: bool = False) -> ConfiguredNats:
    server = ConfiguredNats(conf, tls=tls).start()
    running.append(server)
    return server


async def test_user_and_password(tmp_path: Path, running: list[ConfiguredNats]) -> None:
    secret = password()
    conf = write_conf(
        tmp_path, "user.conf", f'authorization {{ user: tocsin, password: "{secret}" }}\n'
    )
    server = start(running, conf)

    login = login_from(tmp_path, f'user = "tocsin"\npassword = "{secret}"')
    assert login.method == "user"
    nc = await connect(server.url, login)
    assert await round_trip(nc, "auth.user") == b"ping"
    await nc.close()

    wrong = login_from(tmp_path, 'user = "tocsin"\npassword = "not-it"')
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await connect(server.url, wrong)


async def test_token_from_the_environment(tmp_path: Path, running: list[ConfiguredNats]) -> None:
    token = password()
    conf = write_conf(tmp_path, "token.conf", f'authorization {{ token: "{token}" }}\n')
    server = start(running, conf)

    login = load_nats_login(None, {"TOCSIN_NATS_TOKEN": token})
    assert login.method == "token"
    nc = await connect(server.url, login)
    assert await round_trip(nc, "auth.token") == b"ping"
    await nc.close()

    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await connect(server.url, load_nats_login(None, {"TOCSIN_NATS_TOKEN": "t-wrong"}))
    with pytest.raises(
        nats.errors.Error, match="Authorization Violation"
    ):  # and no login at all is refused too
        await connect(server.url, load_nats_login(None, {}))


async def test_nkey_seed_file(tmp_path: Path, running: list[ConfiguredNats]) -> None:
    seed = new_seed(nkeys.PREFIX_BYTE_USER)
    conf = write_conf(
        tmp_path,
        "nkey.conf",
        f"authorization {{ users: [ {{ nkey: {public_key(seed)} }} ] }}\n",
    )
    server = start(running, conf)
    seed_file = tmp_path / "tocsin.nk"
    seed_file.write_text(seed.decode() + "\n")  # as `nk -gen user > tocsin.nk` leaves it

    login = login_from(tmp_path, f'nkey_seed = "{seed_file}"')
    assert login.method == "nkey"
    nc = await connect(server.url, login)
    assert await round_trip(nc, "auth.nkey") == b"ping"
    await nc.close()

    stranger = tmp_path / "stranger.nk"
    stranger.write_text(new_seed(nkeys.PREFIX_BYTE_USER).decode())
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await connect(server.url, login_from(tmp_path, f'nkey_seed = "{stranger}"'))


async def test_creds_file_in_operator_mode(tmp_path: Path, running: list[ConfiguredNats]) -> None:
    operator = Operator()
    server = start(running, write_conf(tmp_path, "operator.conf", operator.server_conf()))
    creds = operator.creds(tmp_path / "tocsin.creds")

    login = load_nats_login(None, {"TOCSIN_NATS_CREDS": str(creds)})
    assert login.method == "creds"
    nc = await connect(server.url, login)
    assert await round_trip(nc, "auth.creds") == b"ping"
    await nc.close()

    # A user JWT signed by an account this operator never issued is refused.
    forged = operator.creds(tmp_path / "forged.creds", signer=new_seed(nkeys.PREFIX_BYTE_ACCOUNT))
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await connect(server.url, load_nats_login(None, {"TOCSIN_NATS_CREDS": str(forged)}))


def mutual_tls_conf(certs: Certs) -> str:
    return (
        "tls {\n"
        f'  cert_file: "{certs.server_cert}"\n'
        f'  key_file: "{certs.server_key}"\n'
        f'  ca_file: "{certs.ca}"\n'
        "  verify: true\n"
        "  timeout: 5\n"
        "}\n"
    )


async def test_tls_with_a_client_certificate(tmp_path: Path, running: list[ConfiguredNats]) -> None:
    certs = Certs.make(tmp_path / "certs")
    server = start(running, write_conf(tmp_path, "mtls.conf", mutual_tls_conf(certs)), tls=True)

    login = load_nats_login(
        None,
        {
            "TOCSIN_NATS_TLS_CA": str(certs.ca),
            "TOCSIN_NATS_TLS_CERT": str(certs.client_cert),
            "TOCSIN_NATS_TLS_KEY": str(certs.client_key),
        },
    )
    nc = await connect(server.url, login)
    assert await round_trip(nc, "auth.mtls") == b"ping"
    await nc.close()

    # The server asks for a client certificate: without one the handshake is refused. With
    # TLS 1.3 the client learns it as a reset, a broken pipe or the server's alert,
    # depending on timing; the server's log says why.
    without_cert = login_from(tmp_path, f'tls_ca = "{certs.ca}"')
    with pytest.raises((ConnectionError, ssl.SSLError)):
        await connect(server.url, without_cert)
    await wait_until(
        lambda: "client didn't provide a certificate" in server.log.read_text(),
        10,
        "nats-server to log the missing client certificate",
    )

    # And tocsin refuses a server its CA did not sign.
    other = Certs.make(tmp_path / "other")
    stranger = login_from(
        tmp_path,
        f'tls_ca = "{other.ca}"\ntls_cert = "{certs.client_cert}"\ntls_key = "{certs.client_key}"',
    )
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        await connect(server.url, stranger)


async def test_tls_hostname_verification(tmp_path: Path, running: list[ConfiguredNats]) -> None:
    """A certificate for ``localhost`` only, dialled as 127.0.0.1: refused while the name
    is verified (the default), accepted with ``tls_verify_hostname = false`` (the chain is
    still checked)."""
    certs = Certs.make(tmp_path / "certs", hosts=("localhost",))
    conf = write_conf(
        tmp_path,
        "tls.conf",
        f'tls {{ cert_file: "{certs.server_cert}", key_file: "{certs.server_key}" }}\n',
    )
    server = start(running, conf, tls=True)

    checked = login_from(tmp_path, f'tls_ca = "{certs.ca}"')
    assert checked.tls_verify_hostname is True
    with pytest.raises(ssl.SSLCertVerificationError, match="IP address mismatch"):
        await connect(server.url, checked)

    unchecked = load_nats_login(
        None, {"TOCSIN_NATS_TLS_CA": str(certs.ca), "TOCSIN_NATS_TLS_VERIFY_HOSTNAME": "false"}
    )
    nc = await connect(server.url, unchecked)
    assert await round_trip(nc, "auth.tls") == b"ping"
    await nc.close()


async def test_tocsin_publish_logs_in_from_the_environment(
    tmp_path: Path, running: list[ConfiguredNats], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI builds its connection the same way: TOCSIN_NATS_TOKEN alone is enough, a
    wrong one is reported as a refused login (exit 1), with the token nowhere in it."""
    token = password()
    store = tmp_path / "js"
    conf = write_conf(
        tmp_path,
        "token-js.conf",
        f'authorization {{ token: "{token}" }}\njetstream {{ store_dir: "{store}" }}\n',
    )
    server = start(running, conf)
    nc = await nats.connect(server.url, token=token)
    await ensure_streams(nc.jetstream())
    await nc.close()

    argv = ["publish", "--nats-url", server.url, "--data-dir", str(tmp_path / "d")]
    argv += ["--type", "disk_full", "--severity", "critical", "--summary", "db1 full"]
    monkeypatch.setenv("TOCSIN_NATS_TOKEN", token)
    monkeypatch.delenv("TOCSIN_CONFIG", raising=False)
    assert await asyncio.to_thread(cli.main, argv) == cli.EXIT_OK

    nc = await nats.connect(server.url, token=token)
    info = await nc.jetstream().stream_info(STREAM_IN)
    await nc.close()
    assert info.state.last_seq == 1  # stored (interest retention drops it: no consumer yet)

    monkeypatch.setenv("TOCSIN_NATS_TOKEN", "t-wrong-token")
    assert await asyncio.to_thread(cli.main, argv) == cli.EXIT_FAILURE


def test_cli_refused_login_names_the_settings_not_the_secret(
    tmp_path: Path, running: list[ConfiguredNats], capfd: pytest.CaptureFixture[str]
) -> None:
    secret = password()
    conf = write_conf(
        tmp_path, "user.conf", f'authorization {{ user: tocsin, password: "{secret}" }}\n'
    )
    server = start(running, conf)
    wrong = "w" + password()
    url = server.url.replace("nats://", f"nats://tocsin:{wrong}@")
    event = ["--type", "t", "--severity", "info", "--summary", "s"]
    code = cli.main(["publish", "--nats-url", url, "--data-dir", str(tmp_path / "d"), *event])
    out, err = capfd.readouterr()
    assert code == cli.EXIT_FAILURE
    assert "refused the login" in err
    assert f"nats://{MASK}@127.0.0.1:{server.port}" in err
    assert wrong not in out + err


async def test_no_secret_in_logs_or_readiness(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A password in the NATS URL and one in ``[nats]``, the service unable to reach
    NATS: ``/readyz`` says where it is connecting with the credentials redacted, and no
    log record (at debug level) carries either secret."""
    in_url, in_file, api_token = "u" + password(), "f" + password(), "a" + password()
    dead = free_port()
    toml = tmp_path / "tocsin.toml"
    toml.write_text(f'[nats]\nuser = "tocsin"\npassword = "{in_file}"\n')
    options = service.Options(
        data_dir=tmp_path / "data",
        config=config_module.load(toml, {}),
        nats_url=f"nats://tocsin:{in_url}@127.0.0.1:{dead}",
        http=f"127.0.0.1:{free_port()}",
        handle_signals=False,
        api_token=api_token,
    )
    assert in_file not in repr(options.config)
    caplog.set_level(logging.DEBUG)
    task = asyncio.create_task(service.run(options))
    try:

        async def readiness() -> dict[str, Any] | None:
            try:
                async with httpx.AsyncClient() as client:
                    answer = await client.get(f"http://{options.http}/readyz")
            except httpx.HTTPError:
                return None
            body: dict[str, Any] = answer.json()
            return body if "connecting to NATS" in body.get("reason", "") else None

        body = await wait_until(readiness, 30, "/readyz to say it is connecting")
        assert body["reason"] == f"connecting to NATS at nats://{MASK}@127.0.0.1:{dead}"
    finally:
        options.stop.set()
        assert await asyncio.wait_for(task, 30) == 0
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert f"nats://{MASK}@127.0.0.1:{dead}" in logged
    for secret in (in_url, in_file, api_token):
        assert secret not in logged


def test_every_connection_tocsin_opens_is_built_by_connect_options() -> None:
    """Two places open NATS connections, both with the builder's options: the service's
    (bus.connection.connect, used by serve / router / deliver / partition) and the
    one-shot commands' (cli._connect). A new ``nats.connect(`` elsewhere would bypass the login."""
    package = Path(service.__file__).parent
    openers = {
        path.relative_to(package).as_posix(): path.read_text()
        for path in package.rglob("*.py")
        if "nats.connect(" in path.read_text()
    }
    assert set(openers) == {"bus/connection.py", "cli.py"}
    assert "**(login or {})" in openers["bus/connection.py"]
    assert "login = connect_options(config.load_nats_login(args.config))" in openers["cli.py"]
    assert "**login" in openers["cli.py"]
    imports_connect = re.compile(r"^from tocsin\.bus\.connection import .*\bconnect\b(?!_)", re.M)
    callers = {
        path.relative_to(package).as_posix()
        for path in package.rglob("*.py")
        if imports_connect.search(path.read_text())
    }
    assert callers == {"service.py", "pipeline/partitioner.py"}
    assert "login = connect_options(config.nats_login)" in (package / "service.py").read_text()
    partitioner = (package / "pipeline" / "partitioner.py").read_text()
    assert "login=connect_options(config.nats_login)" in partitioner
