"""Alertmanager's API v2 subset (DESIGN.md section 14) against a running tocsin with a
real NATS, a real webhook receiver and a real SQLite log: a Prometheus-shaped POST,
the real ``amtool`` (Debian's ``prometheus-alertmanager``, installed by
tests/system-packages.sh), and the requests Grafana's Alertmanager data source makes."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.support import HttpSink, Tocsin, wait_until, webhook_config
from tocsin.core.times import format_us, now_us

AMTOOL = shutil.which("amtool") or "/usr/bin/amtool"
MINUTE_US = 60 * 1_000_000


@pytest.fixture
async def svc(data_dir: Path, nats_url: str, sink: HttpSink) -> AsyncIterator[Tocsin]:
    service = await Tocsin(data_dir, nats_url, webhook_config(sink.url)).start()
    yield service
    await service.stop()
    await service.assert_live_state_is_the_log()


@pytest.fixture
async def http(svc: Tocsin) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=svc.api, timeout=10) as client:
        yield client


def prometheus_alert(name: str = "DiskFull", ends_in_us: int = 4 * MINUTE_US, **labels: str) -> Any:
    """An alert as Prometheus posts it: ``endsAt`` a few evaluations ahead, moved
    forward by every re-send; ``startsAt`` fixed while it fires."""
    return {
        "labels": {"alertname": name, "severity": "critical", "instance": "db-1", **labels},
        "annotations": {"summary": f"{name} on db-1", "runbook": "https://runbooks/x"},
        "startsAt": "2026-12-04T10:00:00.123456789Z",
        "endsAt": format_us(now_us() + ends_in_us),
        "generatorURL": "http://prometheus:9090/graph?g0.expr=up",
    }


async def amtool(svc: Tocsin, *args: str) -> str:
    """Run the real ``amtool`` against tocsin; its stdout, failing on a non-zero exit."""
    return await amtool_run(f"--alertmanager.url={svc.api}", *args)


async def amtool_run(*args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        AMTOOL,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, f"amtool {args}: {err.decode()}"
    return out.decode()


async def test_a_prometheus_alert_resent_every_evaluation_pages_once_and_endsat_resolves(
    svc: Tocsin, http: httpx.AsyncClient, sink: HttpSink
) -> None:
    """Catches: re-sends paging again (each evaluation one notification), a re-send
    not moving the alert's end (it would resolve while Prometheus still fires it), the
    translation's fields (type, severity, summary, labels, details, source), and a
    resolve by an ``endsAt`` in the past."""
    for evaluation in range(3):
        alert = prometheus_alert(ends_in_us=(4 + evaluation) * MINUTE_US)
        last_end = alert["endsAt"]
        answer = await http.post("/api/v2/alerts", json=[alert])
        assert answer.status_code == 200
        assert answer.content == b""
    await wait_until(lambda: svc.count("alert.received") == 3, 10, "three events received")
    await wait_until(lambda: len(sink.requests) == 1, 10, "one notification")
    body = sink.requests[0].json()
    assert body["type"] == "DiskFull"
    assert body["severity"] == "critical"
    assert body["summary"] == "DiskFull on db-1"
    received = svc.events("alert.received")
    assert {r["source"] for r in received} == {"prometheus"}
    assert received[0]["labels"]["instance"] == "db-1"
    assert received[0]["details"] == {
        "summary": "DiskFull on db-1",
        "runbook": "https://runbooks/x",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=up",
    }
    assert len({r["event_id"] for r in received}) == 3  # each re-send moves ends_at
    assert received[2]["ends_at"] > received[0]["ends_at"]
    assert svc.count("alert.suppressed") == 2
    (listed,) = (await http.get("/api/v2/alerts")).json()
    assert listed["endsAt"] == last_end  # the last re-send's end is the alert's

    resolved = {**prometheus_alert(), "endsAt": format_us(now_us() - 1_000_000)}
    assert (await http.post("/api/v2/alerts", json=[resolved])).status_code == 200
    await wait_until(lambda: len(sink.requests) == 2, 10, "the resolve notification")
    assert sink.requests[1].json()["reason"] == "resolved"


async def test_an_invalid_alert_refuses_the_whole_request_naming_index_and_field(
    svc: Tocsin, http: httpx.AsyncClient
) -> None:
    """Catches: a partly taken request (the valid first alert published although the
    second is bad) and a refusal that does not say which alert and field."""
    bad = prometheus_alert()
    del bad["labels"]["alertname"]
    answer = await http.post("/api/v2/alerts", json=[prometheus_alert(), bad])
    assert answer.status_code == 400
    assert answer.json()["index"] == 1
    assert answer.json()["field"] == "labels.alertname"
    late = {**prometheus_alert(), "startsAt": "yesterday"}
    answer = await http.post("/api/v2/alerts", json=[late])
    assert (answer.status_code, answer.json()["field"]) == (400, "startsAt")
    answer = await http.post("/api/v2/alerts", json=[prometheus_alert(name="Ok")])
    assert answer.status_code == 200
    await wait_until(lambda: svc.count("alert.received") == 1, 10, "the valid request")
    assert [r["type"] for r in svc.events("alert.received")] == ["Ok"]


async def test_amtool_queries_alerts_and_adds_queries_and_expires_silences(
    svc: Tocsin, http: httpx.AsyncClient, sink: HttpSink
) -> None:
    """Catches: any shape amtool cannot read (it fails or prints nothing), a silence
    made through API v2 that is not a tocsin silence (a fact that mutes), matchers
    converted wrongly (the silence would not cover the alert), an expire that does not
    end it."""
    await http.post(
        "/api/v2/alerts",
        json=[prometheus_alert(), prometheus_alert(name="HighLatency", instance="web-1")],
    )
    await wait_until(lambda: len(sink.requests) == 2, 10, "two notifications")

    listed = json.loads(await amtool(svc, "alert", "query", "-o", "json"))
    assert sorted(a["labels"]["alertname"] for a in listed) == ["DiskFull", "HighLatency"]
    assert all(a["status"]["state"] == "active" for a in listed)
    assert all(a["receivers"] == [{"name": "hook"}] for a in listed)
    text = await amtool(svc, "alert", "query", "alertname=HighLatency")
    assert "HighLatency" in text
    assert "DiskFull" not in text

    silence_id = (
        await amtool(
            svc,
            "silence",
            "add",
            "alertname=~Disk.*",
            "instance!=web-1",
            "--comment=disk work",
            "--author=ops",
            "--duration=1h",
        )
    ).strip()
    assert svc.count("silence.created") == 1
    created = svc.events("silence.created")[0]
    assert created["silence_id"] == silence_id
    assert created["matchers"] == {"matchers": ['alertname=~"Disk.*"', 'instance!="web-1"']}

    silences = json.loads(await amtool(svc, "silence", "query", "-o", "json"))
    assert [s["id"] for s in silences] == [silence_id]
    assert silences[0]["status"]["state"] == "active"
    assert {
        (m["name"], m["value"], m["isRegex"], m["isEqual"]) for m in silences[0]["matchers"]
    } == {
        ("alertname", "Disk.*", True, True),
        ("instance", "web-1", False, False),
    }
    assert silence_id in await amtool(svc, "silence", "query", "-q", "alertname=~Disk.*")

    suppressed = json.loads(await amtool(svc, "alert", "query", "-s", "-o", "json"))
    disk = next(a for a in suppressed if a["labels"]["alertname"] == "DiskFull")
    status = disk["status"]  # amtool 0.25 re-encodes without the newer mutedBy
    assert (status["state"], status["silencedBy"], status["inhibitedBy"]) == (
        "suppressed",
        [silence_id],
        [],
    )
    active_only = json.loads(await amtool(svc, "alert", "query", "-o", "json"))
    assert [a["labels"]["alertname"] for a in active_only] == ["HighLatency"]

    await amtool(svc, "silence", "expire", silence_id)
    await wait_until(lambda: svc.count("silence.deleted") == 1, 10, "the silence deleted")
    assert json.loads(await amtool(svc, "silence", "query", "-o", "json")) == []
    expired = json.loads(await amtool(svc, "silence", "query", "--expired", "-o", "json"))
    assert [s["status"]["state"] for s in expired] == ["expired"]


async def test_the_requests_grafanas_alertmanager_data_source_makes(
    svc: Tocsin, http: httpx.AsyncClient, sink: HttpSink, tmp_path: Path
) -> None:
    """Grafana's Alertmanager data source (implementation "prometheus";
    ``plugins/datasource/alertmanager/DataSource.ts`` and
    ``features/alerting/unified/api/alertmanager.ts``): the health check asks
    ``/api/v1/status/buildinfo`` (an error is fine), wants ``/alertmanager/api/v2/status``
    NOT to answer 200 (that would be Mimir) and ``/api/v2/status`` to; the config page
    reads ``config.original`` of the status; the alert pages list
    ``/api/v2/alerts/groups`` and ``/api/v2/alerts?silenced=&active=&inhibited=&filter=``
    (``name="value"`` or ``name=~"value"``); the silence pages list, create (an edit
    posts the ``id``: the old one expires, a new id answers), read and expire
    silences. Catches: a status or shape Grafana does not accept."""
    await http.post("/api/v2/alerts", json=[prometheus_alert()])
    await wait_until(lambda: len(sink.requests) == 1, 10, "one notification")

    assert (await http.get("/api/v1/status/buildinfo")).status_code < 500
    assert (await http.get("/alertmanager/api/v2/status")).status_code != 200
    grafana_query = "silenced=true&active=true&inhibited=true&filter=" + quote(
        'alertname=~"Disk.*"', safe=""
    )
    listed = (await http.get("/api/v2/alerts?" + grafana_query)).json()
    assert [a["labels"]["alertname"] for a in listed] == ["DiskFull"]

    status = (await http.get("/api/v2/status")).json()
    assert status["cluster"]["status"] == "disabled"
    assert set(status["versionInfo"]) >= {"version", "revision", "branch", "goVersion"}
    assert "receivers:" in status["config"]["original"]
    assert "hook" in status["config"]["original"]
    assert (await http.get("/api/v2/receivers")).json() == [{"name": "hook"}]
    original = tmp_path / "original.yml"  # Grafana's config page parses it: it must load
    original.write_text(status["config"]["original"])
    assert "SUCCESS" in await amtool_run("check-config", str(original))
    assert "hook" in await amtool(svc, "config", "routes", "show")

    query = {
        "silenced": "false",
        "inhibited": "false",
        "active": "true",
        "filter": ["instance=db-1"],
    }
    groups = (await http.get("/api/v2/alerts/groups", params=query)).json()
    assert [g["receiver"] for g in groups] == [{"name": "hook"}]
    assert set(groups[0]) >= {"labels", "receiver", "alerts"}
    alert = groups[0]["alerts"][0]
    assert set(alert) >= {
        "labels",
        "annotations",
        "receivers",
        "fingerprint",
        "startsAt",
        "updatedAt",
        "endsAt",
        "status",
        "generatorURL",
    }
    assert alert["generatorURL"] == "http://prometheus:9090/graph?g0.expr=up"
    assert (await http.get("/api/v2/alerts", params={"filter": "instance=db-2"})).json() == []
    assert (await http.get("/api/v2/alerts", params={"filter": "instance=~("})).status_code == 400

    silence = {
        "matchers": [{"name": "alertname", "value": "DiskFull", "isRegex": False, "isEqual": True}],
        "startsAt": format_us(now_us()),
        "endsAt": format_us(now_us() + 60 * MINUTE_US),
        "createdBy": "grafana",
        "comment": "from Grafana",
    }
    made = await http.post("/api/v2/silences", json=silence)
    assert made.status_code == 200
    silence_id = made.json()["silenceID"]
    got = (await http.get(f"/api/v2/silence/{silence_id}")).json()
    assert got["status"] == {"state": "active"}
    assert got["createdBy"] == "grafana"
    assert [s["id"] for s in (await http.get("/api/v2/silences")).json()] == [silence_id]
    # editing: the same silence posted with its id ends it and starts its successor
    edited = await http.post("/api/v2/silences", json={**silence, "id": silence_id})
    successor = edited.json()["silenceID"]
    assert successor != silence_id
    assert (await http.get(f"/api/v2/silence/{silence_id}")).json()["status"]["state"] == "expired"
    assert (await http.delete(f"/api/v2/silence/{successor}")).status_code == 200
    assert (await http.get("/api/v2/silence/nope")).status_code == 404


async def test_the_mutation_rules_of_section_7_hold_for_api_v2(
    data_dir: Path, nats_url: str, sink: HttpSink
) -> None:
    """Catches the v2 routes left out of the guard: with a token set, an alert or a
    silence posted without it is refused; without a token, a web page's cross-origin
    or non-JSON post is refused (it could inject alerts or mute them)."""
    token = "am-token"
    auth = {"Authorization": f"Bearer {token}"}
    service = await Tocsin(data_dir, nats_url, webhook_config(sink.url), api_token=token).start()
    try:
        async with httpx.AsyncClient(base_url=service.api, timeout=10) as client:
            assert (
                await client.post("/api/v2/alerts", json=[prometheus_alert()])
            ).status_code == 401
            assert (await client.delete("/api/v2/silence/x")).status_code == 401
            answer = await client.post("/api/v2/alerts", json=[prometheus_alert()], headers=auth)
            assert answer.status_code == 200
            await wait_until(lambda: len(sink.requests) == 1, 10, "the notification")
    finally:
        await service.stop()


async def test_without_a_token_a_web_page_cannot_post_alerts(
    svc: Tocsin, http: httpx.AsyncClient
) -> None:
    """Catches a tokenless v2 mutation accepted from a browser page (section 7)."""
    body = json.dumps([prometheus_alert()])
    plain = await http.post("/api/v2/alerts", content=body, headers={"Content-Type": "text/plain"})
    assert plain.status_code == 403
    foreign = await http.post(
        "/api/v2/alerts",
        content=body,
        headers={"Content-Type": "application/json", "Origin": "https://evil.example"},
    )
    assert foreign.status_code == 403
    assert svc.count("alert.received") == 0
