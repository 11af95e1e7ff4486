"""What the HTTP channels need of httpx without importing it (issue #20's RSS target):
a receiver's URL is sent exactly as httpx encoded it, and the roots a receiver's
certificate is checked against are the ones httpx chose."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from pathlib import Path

import certifi
import httpx
import pytest

from tocsin.channels import http

ROOT = Path(__file__).resolve().parents[2]

# Each as aiohttp sends it: scheme, host, port, path and query, fragment.
URLS = [
    "http://127.0.0.1:8080/hook",
    "https://Hooks.Example.COM:443/services/T0/B0/xyz",
    "http://h:80/a;b=c/d?x=%2F&y=a+b&&z",
    "https://api.eu.opsgenie.com/v2/alerts/db%2F1%20disk%3Ffull%25%23/close?identifierType=alias",
    "http://h/%7Euser/~me/(a)*[b]@c:d!$'",
    "http://[::1]:9000/x#frag",
    "http://h",
    # Below: URLs httpx changes (encoding, dot segments): still as it does.
    "http://h/a b/c?x=1 2&y=é",
    "http://h/päth?q=ü",
    "http://bücher.de/x",
    "http://h/{x}|[y]",
    "http://h/a%zzb",
    "http://h/a/./b/../c",
    "http://h/%2e%2E/x",
]


@pytest.mark.parametrize("text", URLS)
def test_a_url_is_sent_as_httpx_encodes_it(text: str) -> None:
    """Catches a fast path that takes a URL as it is when httpx would have changed it
    (``%2F`` decoded, a space or a dot segment left in), or one that changes a URL
    httpx leaves alone: the address connected to and the request line and ``Host``
    header sent are httpx's (its ``raw_path`` and ``netloc``; the fragment is never
    sent)."""
    url = httpx.URL(text)
    origin = http._origin(text)
    default_port = 443 if url.scheme == "https" else 80
    assert (origin.tls, origin.host, origin.port) == (
        url.scheme == "https",
        url.raw_host.decode("ascii").strip("[]"),
        url.port or default_port,
    )
    assert origin.start == b"POST " + url.raw_path + b" HTTP/1.1\r\nHost: " + url.netloc + b"\r\n"


def test_the_delivery_side_does_not_import_httpx() -> None:
    """Catches an import of httpx on the delivery side: its package imports its command
    line client, and with it rich, click and pygments, ~5 MiB in each process
    (``tocsin serve`` and each delivery child). A fresh interpreter imports what a
    ``tocsin deliver`` child runs and sends to a plain URL's parsing."""
    code = (
        "import sys\n"
        "import tocsin.cli, tocsin.service, tocsin.channels.webhook\n"
        "from tocsin.channels import http\n"
        "http._origin('https://hooks.example.com/services/T0/B0/xyz?a=%2F')\n"
        "http.ssl_context()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('httpx', 'rich', 'pygments')))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "service"), str(ROOT)])}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_roots_are_certifis_unless_the_environment_names_others(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Catches roots other than httpx's choice: certifi's bundle by default,
    ``SSL_CERT_FILE`` when set; and a context made again for each receiver."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    http.ssl_context.cache_clear()
    try:
        default = http.ssl_context()
        assert default is http.ssl_context()  # one, shared by every receiver's pool
        assert default.verify_mode == ssl.CERT_REQUIRED
        assert default.check_hostname
        certifi_roots = ssl.create_default_context(cafile=certifi.where())
        assert len(default.get_ca_certs()) == len(certifi_roots.get_ca_certs()) > 0

        http.ssl_context.cache_clear()
        one_root = certifi_roots.get_ca_certs(binary_form=True)[0]
        pem = ssl.DER_cert_to_PEM_cert(one_root)
        path = tmp_path / "roots.pem"
        path.write_text(pem)
        monkeypatch.setenv("SSL_CERT_FILE", str(path))
        assert len(http.ssl_context().get_ca_certs()) == 1
    finally:
        http.ssl_context.cache_clear()
