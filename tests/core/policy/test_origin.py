"""Without a token, only this machine's own clients may change state, never a web page."""

from __future__ import annotations

import pytest

from tocsin.core.policy.origin import is_loopback_host, tokenless_mutation_refusal


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST", "127.0.0.1", "127.8.9.1", "::1"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback_host(host)


@pytest.mark.parametrize("host", ["example.com", "10.0.0.1", "0.0.0.0", "localhost.evil.example"])
def test_other_hosts(host: str) -> None:
    assert not is_loopback_host(host)


def allowed(**request: object) -> bool:
    base: dict[str, object] = {
        "host": "127.0.0.1:8080",
        "origin": None,
        "content_type": "application/json",
        "has_body": True,
    }
    return tokenless_mutation_refusal(**{**base, **request}) is None  # type: ignore[arg-type]


def test_a_local_client_sending_json_may_change_state() -> None:
    assert allowed()
    assert allowed(host="localhost:8080", origin="http://localhost:8080")
    assert allowed(host="[::1]:8080", origin="http://[::1]:8080")
    assert allowed(content_type="application/json; charset=utf-8")
    assert allowed(content_type=None, has_body=False)  # DELETE with no body


def test_a_web_page_cannot() -> None:
    assert not allowed(origin="https://evil.example")  # a cross-site fetch or form
    assert not allowed(origin="null")  # a sandboxed page or a data: URL
    assert not allowed(content_type="text/plain")  # fetch(..., {mode: "no-cors"})
    assert not allowed(content_type="application/x-www-form-urlencoded")  # a form post
    assert not allowed(content_type=None)  # a body of no declared type


def test_dns_rebinding_cannot() -> None:
    """A page at evil.example whose name now points at 127.0.0.1 sends its own Host."""
    assert not allowed(host="evil.example:8080")
    assert not allowed(host=None)
