"""Escalation chains and flapping end to end (DESIGN.md section 13), on real parts:
nats-server, webhook receivers on 127.0.0.1 (one ``HttpSink``, a path per receiver),
the SQLite log, and `tocsin serve` killed with SIGKILL. Timings are seconds; every wait
is on a condition with a timeout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.pipeline.test_groups import publish_many
from tests.support import HttpSink, Serve, Tocsin, event, log_count, log_events, wait_until
from tocsin.store.ledger import load_state


def paging_config(base: str, after: str = "2s") -> str:
    """``pager`` pages every alert; ``team-lead`` is told when nobody acknowledges
    within ``after``. ``base`` is the sink's address: each receiver has its path."""
    return f"""
[[route]]
match = {{}}
receivers = ["pager"]
escalate = [{{ after = "{after}", receivers = ["team-lead"] }}]

[receivers.pager]
channel = "webhook"
url = "{base}/pager"
timeout = "5s"

[receivers.team-lead]
channel = "webhook"
url = "{base}/lead"
timeout = "5s"
"""


def base_of(sink: HttpSink) -> str:
    return sink.url.removesuffix("/hook")


def told(sink: HttpSink, path: str) -> list[dict[str, Any]]:
    return [r.json() for r in sink.requests if r.path == path]


async def test_nobody_acks_so_the_second_receiver_is_paged_after_after(
    nats_url: str, sink: HttpSink, data_dir: Path
) -> None:
    """With ``after = "2s"`` and no ack, ``team-lead`` gets one notification of the
    alert, reason ``unacknowledged``, no sooner than 2 s after the first page. Catches
    a chain that never fires, fires early, or fires twice."""
    service = await Tocsin(data_dir, nats_url, paging_config(base_of(sink))).start()
    try:
        await publish_many(nats_url, [event(summary="db1 down")])
        await wait_until(lambda: len(told(sink, "/lead")) == 1, 20, "team-lead paged")
        [page] = told(sink, "/pager")
        [escalated] = told(sink, "/lead")
        assert page["reason"] == "firing"
        assert (escalated["reason"], escalated["alert_id"]) == ("unacknowledged", page["alert_id"])
        assert escalated["receiver"] == "team-lead"
        [started] = service.events("escalation.started")
        [fired] = service.events("escalation.fired")
        assert fired["due_at"] == started["started_at"] + 2_000_000
        assert fired["fired_at"] >= fired["due_at"]
        assert (fired["step"], fired["receivers"]) == (0, ["team-lead"])
        await wait_until(lambda: service.count("delivery.succeeded") == 2, 10, "both outcomes")
        async with httpx.AsyncClient(base_url=service.api) as http:
            shown = (await http.get(f"/api/v1/alerts/{page['alert_id']}")).json()
            [chain] = shown["escalations"]
            assert (chain["fired"], chain["next_step"], chain["next_due_at"]) == (1, None, None)
            stats = (await http.get("/api/v1/stats")).json()
            assert stats["escalations"] == 1
            metrics = (await http.get("/metrics")).text
            assert 'tocsin_escalations_fired_total{step="0"} 1.0' in metrics
        assert len(told(sink, "/lead")) == 1
        await service.assert_live_state_is_the_log()
    finally:
        await service.stop()


async def test_an_ack_within_a_second_stops_the_escalation(
    nats_url: str, sink: HttpSink, data_dir: Path
) -> None:
    """Alert A is acknowledged as soon as it is paged, alert B is not: B's step
    (due after A's) pages ``team-lead``, A's never does. B's page is the witness that
    A's due time passed, so nothing sleeps. Catches an ack that does not end the
    chain."""
    service = await Tocsin(data_dir, nats_url, paging_config(base_of(sink))).start()
    try:
        await publish_many(nats_url, [event(summary="A", labels={"host": "a"})])
        await wait_until(lambda: len(told(sink, "/pager")) == 1, 15, "A paged")
        [a_page] = told(sink, "/pager")
        async with httpx.AsyncClient(base_url=service.api) as http:
            acked = await http.post(f"/api/v1/alerts/{a_page['alert_id']}/ack", json={"by": "ana"})
            assert acked.status_code == 200, acked.text
            [a_chain] = service.events("escalation.started")
            [ack] = service.events("alert.acked")
            # Acknowledged as soon as paged (well within a second on an idle machine);
            # what matters is that it came before the step was due.
            assert ack["at"] - a_chain["started_at"] < 2_000_000
            shown = (await http.get(f"/api/v1/alerts/{a_page['alert_id']}")).json()
            assert shown["escalations"] == []
        await publish_many(nats_url, [event(summary="B", labels={"host": "b"})])
        await wait_until(lambda: len(told(sink, "/lead")) == 1, 20, "B escalated")
        [b_chain] = [e for e in service.events("escalation.started") if e != a_chain]
        assert b_chain["started_at"] > a_chain["started_at"]
        assert [b["summary"] for b in told(sink, "/lead")] == ["B"]
        assert [f["alert_id"] for f in service.events("escalation.fired")] == [b_chain["alert_id"]]
        await service.assert_live_state_is_the_log()
    finally:
        await service.stop()


async def test_sigkill_between_the_page_and_the_escalation_still_escalates_once(
    nats_url: str, sink: HttpSink, data_dir: Path, tmp_path: Path
) -> None:
    """`tocsin serve` killed with SIGKILL after the first page and before its step is
    due: the chain is in the log, so the restarted service escalates, once."""
    config = tmp_path / "tocsin.toml"
    config.write_text(paging_config(base_of(sink), after="4s"))
    db = data_dir / "tocsin.db"
    first = await Serve(data_dir, nats_url, config).start()
    try:
        await publish_many(nats_url, [event()])
        await wait_until(lambda: len(told(sink, "/pager")) == 1, 15, "the first page")
        await wait_until(lambda: log_count(db, "delivery.succeeded") == 1, 10, "its outcome")
        assert log_count(db, "escalation.started") == 1
        assert log_count(db, "escalation.fired") == 0
    finally:
        first.kill()
        await first.wait()
    assert told(sink, "/lead") == []  # killed before the step
    second = await Serve(data_dir, nats_url, config).start()
    try:
        await wait_until(lambda: len(told(sink, "/lead")) == 1, 20, "escalated after restart")
        await wait_until(lambda: log_count(db, "delivery.succeeded") == 2, 10, "their outcomes")
        [fired] = log_events(db, "escalation.fired")
        assert fired["fired_at"] >= fired["due_at"]
    finally:
        await second.stop()
    assert log_count(db, "escalation.fired") == 1
    assert len(told(sink, "/lead")) == 1
    [chain] = load_state(db).escalations.values()
    assert (chain.next_step, chain.due_at) == (1, None)  # nothing more is due


async def test_five_flaps_in_the_window_are_one_flapping_fact_not_ten_pages(
    nats_url: str, sink: HttpSink, data_dir: Path
) -> None:
    """``[flapping] changes = 4, window = "3s"``: five open/resolve cycles, then the
    alert fires again and stays. The receiver is told of the first two cycles (the
    fourth change, a resolve, makes it flap and still reaches those told of the alert),
    then nothing until it has been stable for 3 s, then its state once: 5
    notifications, not 11, and one ``alert.flapping``. Catches held news sent anyway,
    and a settle that never comes or comes twice."""
    from tests.pipeline.test_groups import grouped_config

    toml = '[flapping]\nchanges = 4\nwindow = "3s"\n' + grouped_config(sink.url)
    service = await Tocsin(data_dir, nats_url, toml).start()
    try:
        flaps = []
        for _ in range(5):
            flaps += [event(), event(status="resolved")]
        await publish_many(nats_url, [*flaps, event(summary="still down")])
        await wait_until(lambda: service.count("alert.settled") == 1, 20, "it settles")

        def settled_notifications() -> int:
            return service.count("delivery.succeeded") + service.count("delivery.superseded")

        await wait_until(lambda: settled_notifications() == 5, 15, "every notification settled")
        # Routed, in log order. The receiver may see fewer, in another order: sends of
        # one receiver run concurrently, and a firing that arrives after the resolve of
        # its fingerprint was accepted is superseded, not sent (channels.md, "Order").
        assert [e["reason"] for e in service.events("alert.routed")] == [
            "firing",
            "resolved",
            "firing",
            "resolved",
            "firing",
        ]
        bodies = [r.json() for r in sink.requests]
        assert len(bodies) <= 5
        [last] = [b for b in bodies if b["summary"] == "still down"]
        assert last["reason"] == "firing"
        assert service.count("alert.flapping") == 1
        [settled] = service.events("alert.settled")
        assert settled["status"] == "firing"
        assert settled["alert_id"] == last["alert_id"]
        async with httpx.AsyncClient(base_url=service.api) as http:
            stats = (await http.get("/api/v1/stats")).json()
            assert stats["flapping"] == 4  # three reopenings and the last one, held
            metrics = (await http.get("/metrics")).text
            assert 'tocsin_events_suppressed_total{cause="flapping"} 4.0' in metrics
            assert "tocsin_alerts_flapping_total 1.0" in metrics
        await service.assert_live_state_is_the_log()
    finally:
        await service.stop()


async def test_the_alert_page_and_the_api_show_the_next_step_and_when(
    nats_url: str, sink: HttpSink, data_dir: Path
) -> None:
    """A chain whose step is an hour away: ``GET /api/v1/alerts/{id}`` and the alert's
    page show who is told next and when; an ack takes it off both. Catches a chain
    state missing from either."""
    from tests.api.test_dashboard import assert_safe_page
    from tocsin.core.times import format_us

    toml = paging_config(base_of(sink), after="1h")
    service = await Tocsin(data_dir, nats_url, toml).start()
    try:
        await publish_many(nats_url, [event(summary="db1 down")])
        await wait_until(lambda: len(told(sink, "/pager")) == 1, 15, "the page")
        alert_id = told(sink, "/pager")[0]["alert_id"]
        [started] = service.events("escalation.started")
        async with httpx.AsyncClient(base_url=service.api) as http:
            [chain] = (await http.get(f"/api/v1/alerts/{alert_id}")).json()["escalations"]
            assert (chain["next_step"], chain["next_receivers"], chain["fired"]) == (
                0,
                ["team-lead"],
                0,
            )
            assert chain["next_due_at"] == format_us(started["started_at"] + 3_600_000_000)
            page = await http.get(f"/alerts/{alert_id}")
            assert_safe_page(page)
            panel = page.text.split('id="alert-escalation"', 1)[1].split("</section>", 1)[0]
            assert "0 of 1" in panel
            assert 'step 1: <span class="chip">team-lead</span>' in panel
            assert "in 59m" in panel or "in 1h" in panel
            acked = await http.post(f"/api/v1/alerts/{alert_id}/ack", json={"by": "ana"})
            assert acked.status_code == 200, acked.text
            assert (await http.get(f"/api/v1/alerts/{alert_id}")).json()["escalations"] == []
            assert 'id="alert-escalation"' not in (await http.get(f"/alerts/{alert_id}")).text
        await service.assert_live_state_is_the_log()
    finally:
        await service.stop()
