"""Real parts for the NATS security tests: certificates, NKeys, JWTs and a nats-server
started with a given config file.

Certificates come from ``trustme`` (a throwaway CA, a server certificate, a client
certificate), NKeys and the operator/account/user JWTs of a ``.creds`` file from the
``nkeys`` package nats-py itself signs with. All of it is made in the test's temp dir at
test time; nothing secret is committed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import nkeys
import trustme

from tests.support import free_port, nats_binary, wait_until

ROOT = Path(__file__).resolve().parents[1]
DEPLOY_NATS = ROOT / "deploy" / "nats"


def password() -> str:
    """A random password nats-server reads back as a string from its environment (letters
    and digits, starting with a letter: see deploy/nats/accounts.conf)."""
    return "p" + secrets.token_hex(16)


@dataclass
class Certs:
    """A CA and what it signed, as PEM files: the server's (for ``hosts``), a client's."""

    dir: Path
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    @classmethod
    def make(cls, dir: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> Certs:
        dir.mkdir(parents=True, exist_ok=True)
        authority = trustme.CA()
        server = authority.issue_cert(*hosts)
        client = authority.issue_cert("tocsin@example.com")
        paths = cls(
            dir=dir,
            ca=dir / "ca.pem",
            server_cert=dir / "server.pem",
            server_key=dir / "server-key.pem",
            client_cert=dir / "client.pem",
            client_key=dir / "client-key.pem",
        )
        authority.cert_pem.write_to_path(str(paths.ca))
        for leaf, cert, key in (
            (server, paths.server_cert, paths.server_key),
            (client, paths.client_cert, paths.client_key),
        ):
            leaf.private_key_pem.write_to_path(str(key))
            for index, blob in enumerate(leaf.cert_chain_pems):
                blob.write_to_path(str(cert), append=index > 0)
        return paths

    def client_context(self) -> ssl.SSLContext:
        """What a plain client (publisher, auditor) uses: trust this CA, no client cert."""
        return ssl.create_default_context(cafile=str(self.ca))


class ConfiguredNats:
    """A ``nats-server -c FILE`` process on 127.0.0.1 (a free port), with ``env``."""

    def __init__(self, conf: Path, env: dict[str, str] | None = None, tls: bool = False) -> None:
        self.conf = conf
        self.env = env or {}
        self.port = free_port()
        self.monitor_port = free_port()
        self.url = f"{'tls' if tls else 'nats'}://127.0.0.1:{self.port}"
        self.log = conf.parent / f"{conf.stem}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ConfiguredNats:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    nats_binary(),
                    "-c",
                    str(self.conf),
                    "-a",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-m",
                    str(self.monitor_port),
                ],
                stdout=out,
                stderr=out,
                env={**os.environ, **self.env},
            )
        deadline = time.monotonic() + 20
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2),
            ):
                return self
            if self.process.poll() is not None:
                raise AssertionError(f"nats-server exited at start:\n{self.log.read_text()}")
            assert time.monotonic() < deadline, (
                f"nats-server did not listen:\n{self.log.read_text()}"
            )
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def write_conf(dir: Path, name: str, body: str) -> Path:
    dir.mkdir(parents=True, exist_ok=True)
    path = dir / name
    path.write_text(body)
    return path


@dataclass
class Client:
    """A NATS connection that keeps the asynchronous errors the server sends it:
    permission violations arrive that way (``-ERR 'Permissions Violation ...'``), not as
    exceptions of the call that caused them."""

    nc: Any = None
    errors: list[str] = field(default_factory=list)

    @classmethod
    async def connect(cls, url: str, **options: Any) -> Client:
        client = cls()

        async def keep(error: Exception) -> None:
            client.errors.append(str(error))

        client.nc = await nats.connect(
            url, error_cb=keep, allow_reconnect=False, connect_timeout=5, **options
        )
        return client

    async def refused(self, action: str, subject: str, timeout: float = 15.0) -> str:
        """Wait for the server's permissions violation for ``action`` (``publish`` or
        ``subscription``) on exactly ``subject``; returns the error text."""
        # nats-py lowercases the server's -ERR text, the subject included.
        wanted = f'permissions violation for {action} to "{subject}"'.lower()
        found = await wait_until(
            lambda: next((e for e in self.errors if wanted in e.lower()), None),
            timeout,
            f"the server to refuse {action} to {subject} (errors so far: {self.errors})",
        )
        return str(found)

    async def refuses_publishing(self, *subjects: str) -> None:
        """Publish to each subject (with a reply inbox, as a request would) and wait for
        the server to refuse each one."""
        for subject in subjects:
            await self.nc.publish(subject, b"{}", reply=self.nc.new_inbox())
            await self.refused("publish", subject)

    def denials(self) -> list[str]:
        return [e for e in self.errors if "permissions violation" in e.lower()]

    async def close(self) -> None:
        if self.nc is not None and not self.nc.is_closed:
            await self.nc.close()


async def round_trip(nc: Any, subject: str) -> bytes:
    """Subscribe, publish, receive: the connection really works as that user."""
    got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def on(msg: Any) -> None:
        if not got.done():
            got.set_result(msg.data)

    sub = await nc.subscribe(subject, cb=on)
    await nc.flush()
    await nc.publish(subject, b"ping")
    try:
        return await asyncio.wait_for(got, 10)
    finally:
        await sub.unsubscribe()


# -- NKeys, JWTs and .creds ----------------------------------------------------------------


def new_seed(prefix: int) -> bytes:
    """A fresh NKey seed of the given role (``nkeys.PREFIX_BYTE_USER`` ...)."""
    seed: bytes = nkeys.encode_seed(os.urandom(32), prefix)
    return seed


def key_pair(seed: bytes) -> nkeys.KeyPair:
    return nkeys.from_seed(bytearray(seed))


def public_key(seed: bytes) -> str:
    return str(key_pair(seed).public_key.decode())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def encode_jwt(claims: dict[str, Any], issuer_seed: bytes) -> str:
    """A NATS JWT (``ed25519-nkey``) of ``claims``, signed by ``issuer_seed``."""
    issuer = key_pair(issuer_seed)
    body = {"iat": int(time.time()), "iss": issuer.public_key.decode(), **claims}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).digest()
    body["jti"] = base64.b32encode(digest).decode().rstrip("=")
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    payload = _b64(json.dumps(body).encode())
    signature = issuer.sign(f"{header}.{payload}".encode())
    return f"{header}.{payload}.{_b64(signature)}"


UNLIMITED = {
    "subs": -1,
    "data": -1,
    "payload": -1,
    "imports": -1,
    "exports": -1,
    "wildcards": True,
    "conn": -1,
    "leaf": -1,
}


@dataclass
class Operator:
    """An operator, one account and its users: what ``nsc`` would make, made with nkeys."""

    operator_seed: bytes = field(default_factory=lambda: new_seed(nkeys.PREFIX_BYTE_OPERATOR))
    account_seed: bytes = field(default_factory=lambda: new_seed(nkeys.PREFIX_BYTE_ACCOUNT))

    def operator_jwt(self) -> str:
        claims = {
            "sub": public_key(self.operator_seed),
            "name": "tocsin-test-operator",
            "nats": {"type": "operator", "version": 2},
        }
        return encode_jwt(claims, self.operator_seed)

    def account_jwt(self) -> str:
        claims = {
            "sub": public_key(self.account_seed),
            "name": "TOCSIN",
            "nats": {"limits": UNLIMITED, "type": "account", "version": 2},
        }
        return encode_jwt(claims, self.operator_seed)

    def server_conf(self) -> str:
        """Operator mode with the account preloaded (no account server needed)."""
        return (
            f"operator: {self.operator_jwt()}\n"
            "resolver: MEMORY\n"
            f"resolver_preload: {{ {public_key(self.account_seed)}: {self.account_jwt()} }}\n"
        )

    def creds(self, path: Path, name: str = "tocsin", signer: bytes | None = None) -> Path:
        """A ``.creds`` file for a new user of the account (or signed by ``signer``)."""
        user_seed = new_seed(nkeys.PREFIX_BYTE_USER)
        claims = {
            "sub": public_key(user_seed),
            "name": name,
            "nats": {
                "pub": {},
                "sub": {},
                "subs": -1,
                "data": -1,
                "payload": -1,
                "type": "user",
                "version": 2,
            },
        }
        user_jwt = encode_jwt(claims, signer or self.account_seed)
        path.write_text(
            "-----BEGIN NATS USER JWT-----\n"
            f"{user_jwt}\n"
            "------END NATS USER JWT------\n\n"
            "************************* IMPORTANT *************************\n"
            "NKEY Seed printed below can be used to sign and prove identity.\n"
            "NKEYs are sensitive and should be treated as secrets.\n\n"
            "-----BEGIN USER NKEY SEED-----\n"
            f"{user_seed.decode()}\n"
            "------END USER NKEY SEED------\n\n"
            "*************************************************************\n"
        )
        return path
