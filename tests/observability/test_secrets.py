"""Secrets never leave (issue #7): a real ``tocsin serve`` process configured with a
webhook secret and auth header, webhook URLs with tokens in their path and query, a Teams
workflow URL, a PagerDuty routing key, an Opsgenie API key and an SMTP password. Some
deliveries succeed; some fail against receivers that refuse the connection or echo the
request (URL, headers, body) into their error answer. Then every secret is looked for
in the process's log lines, ``/metrics``, the audit messages, the log's SQLite files and
the HTTP API's answers: none may be there.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import httpx
import msgspec
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.support import HttpSink, Mailbox, Request, Subscriber, free_port, publish, wait_until
from tocsin.observability.redact import MASK

TOCSIN = str(Path(sys.executable).parent / "tocsin")

SECRETS = {
    "webhook signing secret": "whsec4f1b9c2d8e7a6b5c",
    "token in a webhook path": "pathTok3n9a8b7c6d5e4f",
    "key in a webhook query": "qKey7Hx2Lm9Pq4Rs",
    "bearer token header": "hdrBearer5Tk8Zq1Wy",
    "token in a refused URL path": "refusedPath6Gh2Jk8Lm0",
    "token in a refused URL query": "refusedQ9Vb3Nm7Xc",
    "signature in an echoing URL": "echoSig2Df5Gh8Jk1L",
    "api key header": "xApiKey3Er6Ty9Ui2O",
    "Teams workflow path": "teamsPath4Qw7Er1Ty9U",
    "PagerDuty routing key": "pdRoutingKey8Zx3Cv6Bn",
    "Opsgenie API key": "ogApiKey1As4Df7Gh0J",
    "SMTP password": "smtpPassw0rd5Kl8Mn",
    "API token": "apiTok7Yu4Io1Pa8Sd",
}
S = SECRETS


def echo(request: Request, index: int) -> tuple[int, dict[str, str], bytes]:
    """A receiver that refuses with what it was sent, as some providers do."""
    said = (
        f"bad request {request.path}?{request.query} "
        f"auth={request.headers.get('authorization', '')} "
        f"key={request.headers.get('x-api-key', '')} body={request.body[:60].decode()}"
    )
    return 400, {}, said.encode()


def config(ok: HttpSink, echoing: HttpSink, smtp_port: int) -> str:
    ok_url = (
        f"http://127.0.0.1:{ok.port}/hook/{S['token in a webhook path']}"
        f"?api_key={S['key in a webhook query']}"
    )
    refused_url = (
        f"http://127.0.0.1:{free_port()}/hooks/{S['token in a refused URL path']}"
        f"?token={S['token in a refused URL query']}"
    )
    return f"""
[retry]
max_attempts = 2
backoff = ["50ms"]

[[route]]
match = {{}}
receivers = ["ok", "teams", "opsgenie", "mail", "refused", "echo", "pagerduty"]

[receivers.ok]
channel = "webhook"
url = "{ok_url}"
secret = "{S["webhook signing secret"]}"
headers = {{ Authorization = "Bearer {S["bearer token header"]}" }}

[receivers.teams]
channel = "teams"
url = "http://127.0.0.1:{ok.port}/workflows/{S["Teams workflow path"]}/triggers/manual"

[receivers.opsgenie]
channel = "opsgenie"
url = "http://127.0.0.1:{ok.port}"
api_key = "${{OG_KEY}}"

[receivers.mail]
channel = "email"
to = ["oncall@example.org"]

[receivers.refused]
channel = "webhook"
url = "{refused_url}"
timeout = "2s"

[receivers.echo]
channel = "webhook"
url = "http://127.0.0.1:{echoing.port}/in?sig={S["signature in an echoing URL"]}"
headers = {{ X-Api-Key = "{S["api key header"]}" }}

[receivers.pagerduty]
channel = "pagerduty"
url = "http://127.0.0.1:{echoing.port}/v2/enqueue"
routing_key = "${{PD_KEY}}"

[smtp]
host = "127.0.0.1"
port = {smtp_port}
username = "tocsin"
starttls = false
"""


async def test_no_secret_reaches_logs_metrics_audit_log_or_api(
    tmp_path: Path, nats_url: str
) -> None:
    ok, echoing = HttpSink(), HttpSink(responder=echo)
    await ok.start()
    await echoing.start()
    mailbox = Mailbox()

    def login(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        good = isinstance(data, LoginPassword) and data.password == S["SMTP password"].encode()
        return AuthResult(success=good, handled=False)

    smtp_port = free_port()
    smtp = Controller(
        mailbox, hostname="127.0.0.1", port=smtp_port, authenticator=login, auth_require_tls=False
    )
    smtp.start()
    toml = tmp_path / "tocsin.toml"
    toml.write_text(config(ok, echoing, smtp_port))
    data = tmp_path / "data"
    http = f"127.0.0.1:{free_port()}"
    stderr = tmp_path / "stderr.log"
    env = {
        **os.environ,
        "OG_KEY": S["Opsgenie API key"],
        "PD_KEY": S["PagerDuty routing key"],
        "SMTP_PASSWORD": S["SMTP password"],
        "TOCSIN_API_TOKEN": S["API token"],
        "TOCSIN_LOG_LEVEL": "debug",  # the most a log could say
        "TOCSIN_LOG_FORMAT": "json",
    }
    audit = await Subscriber().start(nats_url, "alerts.>")
    attempts = await Subscriber().start(nats_url, "tocsin.attempts.>")
    with stderr.open("wb") as err:
        process = await asyncio.create_subprocess_exec(
            TOCSIN, "serve", "--config", str(toml), "--data-dir", str(data),
            "--nats-url", nats_url, "--http", http,
            stdout=asyncio.subprocess.DEVNULL, stderr=err, env=env,
        )  # fmt: skip
    api: list[str] = []
    try:
        async with httpx.AsyncClient(base_url=f"http://{http}") as client:

            async def ready() -> bool:
                assert process.returncode is None, stderr.read_text()
                try:
                    return (await client.get("/readyz")).status_code == 200
                except httpx.HTTPError:
                    return False

            await wait_until(ready, 30, "tocsin serve ready")
            for host in ("db1", "db2"):
                await publish(
                    nats_url,
                    "alerts.in.db",
                    {"type": "disk_full", "severity": "critical", "summary": f"full on {host}",
                     "labels": {"host": host}},
                )  # fmt: skip
            await publish(nats_url, "alerts.in.db", b"not json at all")

            async def settled() -> bool:
                events = (await client.get("/api/v1/events", params={"limit": 1000})).json()
                kinds = [e["kind"] for e in events.get("events", [])]
                return kinds.count("delivery.succeeded") == 8 and (
                    kinds.count("delivery.dead_lettered") == 6
                )

            if (await client.get("/api/v1/events")).status_code == 404:
                # The events API is not part of this build: read the log directly.
                import sqlite3

                def settled_in_log() -> bool:
                    try:
                        with sqlite3.connect(data / "tocsin.db") as conn:
                            rows = conn.execute("SELECT kind FROM events").fetchall()
                    except sqlite3.Error:
                        return False
                    kinds = [row[0] for row in rows]
                    return kinds.count("delivery.succeeded") == 8 and (
                        kinds.count("delivery.dead_lettered") == 6
                    )

                await wait_until(settled_in_log, 30, "8 deliveries and 6 dead letters logged")
            else:
                await wait_until(settled, 30, "8 deliveries and 6 dead letters logged")
            # 3 inbound, 1 rejection, 8 deliveries, 6 dead letters
            await wait_until(lambda: len(audit.messages) == 18, 10, "the audit messages")
            metrics = (await client.get("/metrics")).text
            alerts = (await client.get("/api/v1/alerts")).json()["alerts"]
            paths = ["/readyz", "/healthz", "/api/v1/alerts", "/api/v1/stats", "/openapi.json"]
            paths += ["/api/v1/events?limit=1000", "/api/v1/silences", "/", "/silences"]
            for alert in alerts:
                paths += [
                    f"/api/v1/alerts/{alert['id']}",
                    f"/api/v1/alerts/{alert['id']}/deliveries",
                    f"/alerts/{alert['id']}",  # the dashboard's page: errors, timeline
                ]
            for path in paths:
                api.append((await client.get(path)).text)
    finally:
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 30)
        await audit.close()
        await attempts.close()
        await ok.stop()
        await echoing.stop()
        smtp.stop()
    assert code == 0, stderr.read_text()

    logs = stderr.read_text()
    audit_text = "\n".join(m.data.decode() for m in audit.messages + attempts.messages)
    stored = b"".join(p.read_bytes() for p in data.rglob("*") if p.is_file())
    places = {
        "log lines": logs,
        "/metrics": metrics,
        "audit messages": audit_text,
        "the log's files": stored.decode("utf-8", errors="replace"),
        "the API": "\n".join(api),
    }
    for what, secret in SECRETS.items():
        for where, text in places.items():
            assert secret not in text, f"the {what} is in {where}"
            assert secret[:8] not in text, f"the start of the {what} is in {where}"

    # The run really used the secrets (this test could fail):
    paths = [f"{r.path}?{r.query}" for r in ok.requests]
    assert any(
        S["token in a webhook path"] in p and S["key in a webhook query"] in p for p in paths
    )
    assert any(S["Teams workflow path"] in p for p in paths)
    auths = {r.headers.get("authorization") for r in ok.requests}
    assert {f"Bearer {S['bearer token header']}", f"GenieKey {S['Opsgenie API key']}"} <= auths
    assert any(S["PagerDuty routing key"].encode() in r.body for r in echoing.requests)
    assert len(mailbox.messages) == 2  # logged in with the SMTP password
    # ... and the failures' errors carried them before they were scrubbed.
    failed = [
        msgspec.json.decode(m.data) for m in audit.messages if m.subject == "alerts.delivery_failed"
    ]
    assert {m["receiver"] for m in failed} == {"refused", "echo", "pagerduty"}
    echoed = [m["error"] for m in failed if m["receiver"] in ("echo", "pagerduty")]
    assert all(e.startswith("HTTP 400: bad request") and MASK in e for e in echoed), echoed
    assert all("connection error" in m["error"] for m in failed if m["receiver"] == "refused")
    assert '"level":"debug"' in logs  # the lines were there to be searched
