"""DESIGN.md section 7: with no API token, a web page on the operator's machine cannot
silence, ack or re-queue anything; tocsin's own clients (curl, the dashboard) can."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import msgspec
import pytest

from tests.support import HttpSink, Tocsin, webhook_config

SILENCE = {"matchers": {"severity": ["critical", "error", "warning", "info"]}, "ends_at": "365d"}


@pytest.fixture
async def svc(data_dir: Path, nats_url: str, sink: HttpSink) -> AsyncIterator[Tocsin]:
    service = await Tocsin(data_dir, nats_url, webhook_config(sink.url)).start()
    yield service
    await service.stop()
    await service.assert_live_state_is_the_log()


async def test_the_no_cors_silence_everything_attack_is_refused(svc: Tocsin) -> None:
    """The request a page can send without a preflight: a text/plain body from its own
    origin. It parsed as JSON and created a year-long silence matching everything."""
    body = msgspec.json.encode({**SILENCE, "created_by": "a web page"})
    async with httpx.AsyncClient(base_url=svc.api, timeout=10) as http:
        refused = await http.post(
            "/api/v1/silences",
            content=body,
            headers={"Content-Type": "text/plain", "Origin": "https://evil.example"},
        )
        same_but_local_origin = await http.post(
            "/api/v1/silences", content=body, headers={"Content-Type": "text/plain"}
        )
        rebound = await http.post(
            "/api/v1/silences",
            content=body,
            headers={"Content-Type": "application/json", "Host": "evil.example:8080"},
        )
        listed = (await http.get("/api/v1/silences")).json()["silences"]
    assert refused.status_code == 403, refused.text
    assert "loopback Origin" in refused.json()["error"]
    assert same_but_local_origin.status_code == 403
    assert "application/json" in same_but_local_origin.json()["error"]
    assert rebound.status_code == 403
    assert listed == []
    assert svc.count("silence.created") == 0


async def test_a_local_client_sending_json_is_served(svc: Tocsin) -> None:
    async with httpx.AsyncClient(base_url=svc.api, timeout=10) as http:
        created = await http.post(
            "/api/v1/silences",
            json={**SILENCE, "created_by": "ana"},
            headers={"Origin": svc.api},
        )
        assert created.status_code == 201, created.text
        deleted = await http.delete(
            f"/api/v1/silences/{created.json()['id']}", params={"by": "ana"}
        )
        assert deleted.status_code == 200, deleted.text
        everything = await http.post(
            "/api/v1/silences",
            json={"matchers": {"labels": {}}, "ends_at": "1h", "created_by": "ana"},
        )
    assert everything.status_code == 422
    assert everything.json()["field"] == "matchers"
    assert svc.count("silence.created") == 1
