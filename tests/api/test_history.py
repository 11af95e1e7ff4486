"""Memory stays bounded while history grows (issue #16 item 9), and what the projection
let go of is still answered, from the log file: a real SQLite log written through the
ledger at injected log times (simulated hours, no sleeping), the real API over HTTP."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import free_port, wait_until
from tocsin.api.app import create_app, http_server
from tocsin.api.context import ApiContext, Readiness
from tocsin.api.dashboard import dashboard_pages
from tocsin.core import events as ev
from tocsin.core.alert_index import key_of
from tocsin.core.decide.route import Route, RoutingTable
from tocsin.core.decide.triage import triage
from tocsin.core.ingest import Normalized, default_fingerprint
from tocsin.core.matchers import Match
from tocsin.core.state import HOUR_US
from tocsin.store import forensics
from tocsin.store.eventlog import db_path
from tocsin.store.ledger import Input, Ledger, load_state
from tocsin.store.reader import LogReader, older_alerts

T0 = 1_800_000_000 * 1_000_000
MINUTE = 60 * 1_000_000
HOURS = 30
PER_HOUR = 20
ROUTES = RoutingTable.compile([Route(receivers=["hook"], match=Match())])


class Writer:
    """Events triaged against the ledger's state and committed at an injected log time."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.now = T0
        ledger.clock = lambda: self.now
        ids = itertools.count(1)
        self.new_id = lambda: f"id{next(ids):06d}"
        self.in_seq = 0

    async def event(self, host: str, status: str = "firing") -> list[ev.Event]:
        labels = {"host": host}
        event = Normalized(
            type="disk_full",
            severity="warning",
            summary=f"disk full on {host}",
            source="db",
            status=status,  # type: ignore[arg-type]
            labels=labels,
            fingerprint=default_fingerprint("disk_full", labels),
            details={},
            timestamp=self.now,
            timestamp_replaced=False,
            event_id=None,
        )
        self.in_seq += 1
        async with self.ledger.batch() as batch:
            facts = triage(
                self.ledger.state,
                event,
                subject="alerts.in.db",
                received_at=self.now,
                routing=ROUTES,
                window_seconds=600,
                new_id=self.new_id,
                trace_id=None,
            )
            batch.add_caused(facts, Input.INBOUND, self.in_seq)
        return facts

    async def delivered(self, facts: list[ev.Event]) -> None:
        async with self.ledger.batch() as batch:
            for routed in facts:
                if isinstance(routed, ev.AlertRouted):
                    batch.add(
                        ev.DeliverySucceeded(
                            notification_id=routed.notification_id,
                            receiver=routed.receiver,
                            alert_id=routed.alert_id,
                            fingerprint=routed.fingerprint,
                            channel="webhook",
                            attempts=1,
                            at=self.now,
                            status_code=200,
                        )
                    )


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[Ledger]:
    ledger = await Ledger.open(db_path(tmp_path), snapshot_every=500)
    yield ledger
    await ledger.close()


@pytest.fixture
async def api(ledger: Ledger) -> AsyncIterator[httpx.AsyncClient]:
    readiness = Readiness()
    readiness.stage = None
    reader = await LogReader.open(ledger.path)
    ctx = ApiContext(
        state=lambda: ledger.state,
        readiness=readiness,
        reader=reader,
        alert_index=ledger.alert_index,
    )
    port = free_port()
    server = http_server(create_app(ctx, dashboard_pages(ctx)), "127.0.0.1", port)
    serving = asyncio.create_task(server.serve())
    await wait_until(lambda: server.started, 10, "the API to listen")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        yield client
    server.should_exit = True
    await asyncio.wait_for(serving, 10)
    await reader.close()


async def all_pages(api: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    alerts: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        page = (await api.get("/api/v1/alerts", params=query)).json()
        alerts += page["alerts"]
        cursor = page["next_cursor"]
        if cursor is None:
            return alerts


async def test_memory_stays_bounded_and_let_go_alerts_are_answered_from_the_file(
    ledger: Ledger, api: httpx.AsyncClient
) -> None:
    """Catches a projection that grows with history: over 30 simulated hours of alerts
    that open, are delivered and resolve, with ``keep_resolved`` = 1h, the alerts and
    deliveries in memory stay at a few hours' worth while the open alert stays; live
    state is the fold of the log (``verify`` passes). Catches an API that forgets what
    memory let go of: the first alert is answered from the file (its fields, history
    and deliveries), and the listing's pages hold every alert the log ever had, in
    DESIGN's order."""
    writer = Writer(ledger)
    async with ledger.batch() as batch:
        batch.add(
            ev.ConfigLoaded(
                digest="d",
                receivers={"hook": "webhook"},
                routes=1,
                dedup_window_seconds=600,
                keep_resolved_seconds=3600,
            )
        )
    first = await writer.event("h0-0")
    await writer.delivered(first)
    await writer.event("always-open")
    held: list[int] = []
    for hour in range(HOURS):
        for i in range(PER_HOUR):
            writer.now = T0 + hour * HOUR_US + i * MINUTE
            host = f"h{hour}-{i}"
            if (hour, i) != (0, 0):
                await writer.delivered(await writer.event(host))
            writer.now += MINUTE
            await writer.delivered(await writer.event(host, "resolved"))
        held.append(len(ledger.state.alerts) + len(ledger.state.deliveries))
    state = ledger.state
    assert max(held) <= 3 * 3 * PER_HOUR + 5, held  # a few hours' worth, not 30
    assert max(held[-10:]) <= max(held[:10])  # and not growing
    assert any(a.labels["host"] == "always-open" for a in state.alerts.values())
    assert state.counters.received == 2 * HOURS * PER_HOUR + 1
    await ledger.settled()
    assert state == load_state(ledger.path)
    assert forensics.verify(ledger.path).ok

    first_id = next(f.alert_id for f in first if isinstance(f, ev.AlertOpened))
    assert first_id not in state.alerts
    answer = await api.get(f"/api/v1/alerts/{first_id}")
    assert answer.status_code == 200, answer.text
    alert = answer.json()
    assert (alert["status"], alert["occurrences"], alert["receivers"]) == ("resolved", 1, ["hook"])
    assert alert["last_delivery_status"] == "delivered"
    assert "alert.resolved" in [h["kind"] for h in alert["history"]]
    steps = (await api.get(f"/api/v1/alerts/{first_id}/deliveries")).json()["deliveries"]
    assert [s["status"] for s in steps] == ["queued", "delivered", "queued", "delivered"]
    assert (await api.get(f"/alerts/{first_id}")).status_code == 200  # the dashboard's page
    assert (await api.get("/api/v1/alerts/nope")).status_code == 404

    everything, _ = forensics.state_at(ledger.path)
    expected = [a.id for a in sorted(everything.alerts.values(), key=key_of, reverse=True)]
    assert len(expected) == HOURS * PER_HOUR + 1
    assert [a["id"] for a in await all_pages(api, limit=37)] == expected
    firing = await all_pages(api, status="firing")
    assert [a["labels"]["host"] for a in firing] == ["always-open"]
    early = await all_pages(api, q="h0-", limit=500)
    assert sorted(a["labels"]["host"] for a in early) == sorted(f"h0-{i}" for i in range(20))

    # A filter few old alerts pass looks at a budget of them, and says where it stopped.
    in_file = [alert_id for alert_id in expected if alert_id not in state.alerts]
    older = older_alerts(
        ledger.path, skip=state.alerts, before=None, want=10, passes=lambda a: False, budget=5
    )
    assert (older.alerts, older.reached) == ([], key_of(everything.alerts[in_file[4]]))
