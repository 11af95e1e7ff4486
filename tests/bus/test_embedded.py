"""Where the embedded nats-server listens (where publishers last found it), and the
threads its Go runtime gets."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from tocsin.bus.embedded import (
    DEFAULT_PORT,
    EmbeddedNats,
    broker_environment,
    choose_port,
    free_port,
    port_free,
    previous_port,
    url_file,
)


def never_called() -> int:
    raise AssertionError("no other port should be needed")


def test_the_last_port_comes_back_when_it_is_free() -> None:
    assert choose_port(33421, lambda port: True, never_called) == (33421, None)


def test_without_a_last_port_4222_is_the_quiet_default() -> None:
    assert choose_port(None, lambda port: True, never_called) == (DEFAULT_PORT, None)


def test_a_taken_last_port_falls_back_to_4222_and_says_why() -> None:
    port, why = choose_port(33421, lambda port: port != 33421, never_called)
    assert port == DEFAULT_PORT
    assert why == "port 33421 of the last start is taken"


def test_both_taken_gives_another_port_and_says_which_were_taken() -> None:
    assert choose_port(33421, lambda port: False, lambda: 40001) == (
        40001,
        "ports 33421 and 4222 are taken",
    )
    assert choose_port(None, lambda port: False, lambda: 40001) == (40001, "port 4222 is taken")


def test_the_last_port_is_read_from_nats_url_only_when_it_is_ours(tmp_path: Path) -> None:
    assert previous_port(tmp_path) is None
    url_file(tmp_path).write_text("nats://127.0.0.1:33421\n")
    assert previous_port(tmp_path) == 33421
    url_file(tmp_path).write_text("nats://nats.example:4222\n")
    assert previous_port(tmp_path) is None


def test_connections_lingering_in_time_wait_do_not_make_a_port_look_taken() -> None:
    """A stopped server's port with its closed connections in TIME-WAIT: a listener
    with SO_REUSEADDR (nats-server's) can bind it, so the check must say free."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = listener.accept()
        accepted.close()  # the server side closes first: its end waits in TIME-WAIT
        client.close()
    with socket.socket() as plain:  # what the old check did: no SO_REUSEADDR
        try:
            plain.bind(("127.0.0.1", port))
            lingering = False
        except OSError:
            lingering = True
    assert lingering, "no TIME-WAIT to test against on this kernel"
    assert port_free(port)


def test_the_broker_gets_half_the_cores_unless_the_operator_chose() -> None:
    """Catches the embedded broker's Go runtime left sized to every core, or an
    operator's own ``GOMAXPROCS`` overridden."""
    assert broker_environment({"PATH": "/bin"}, 2) == {"PATH": "/bin", "GOMAXPROCS": "1"}
    assert broker_environment({}, 8)["GOMAXPROCS"] == "4"
    assert broker_environment({"GOMAXPROCS": "3"}, 8) == {"GOMAXPROCS": "3"}


async def test_the_embedded_broker_runs_with_its_gomaxprocs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The started ``nats-server`` itself has the variable (read from /proc), so the
    setting reaches the process and not only a dict."""
    monkeypatch.delenv("GOMAXPROCS", raising=False)
    broker = EmbeddedNats(tmp_path, port=free_port(), cores=4)
    await broker.start()
    try:
        assert broker.pid is not None
        environ_file = Path(f"/proc/{broker.pid}/environ")
        environ = (await asyncio.to_thread(environ_file.read_bytes)).split(b"\0")
        assert b"GOMAXPROCS=2" in environ
    finally:
        await broker.stop()
