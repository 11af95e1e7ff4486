"""Firing and resolved reach a receiver in log order, per fingerprint (issue #16 item 7):
a notification whose retry comes after its receiver accepted a later notification of
the same fingerprint is dropped as superseded, logged as ``delivery.superseded``, and
never sent. Real NATS (the shared key-value record), a real HTTP receiver, a real log.

Retries come 2 s apart: the later notification is routed and delivered well within
that, so no retry of the earlier one is in flight at the moment it is accepted (the
record stops late sends, not concurrent ones). A slower machine only adds failed
attempts of the earlier one before it is superseded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.support import HttpSink, Request, Subscriber, Tocsin, event, publish, wait_until
from tests.support import webhook_config as config


def by_status(failing: str) -> Any:
    """A responder failing (500) every notification whose ``status`` is ``failing``."""

    def respond(request: Request, index: int) -> tuple[int, dict[str, str], bytes]:
        return (500 if request.json()["status"] == failing else 200), {}, b""

    return respond


def statuses(sink: HttpSink) -> list[str]:
    return [request.json()["status"] for request in sink.requests]


async def stats(service: Tocsin) -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{service.api}/api/v1/stats")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_late_firing_retry_after_its_resolve_was_delivered_is_superseded(
    nats_url: str, sink: HttpSink, data_dir: Path
) -> None:
    """Catches the firing's retry reaching the receiver after the resolve (it would
    re-open the incident the resolve closed): the retry is dropped as superseded, the
    log says by which notification, nothing is published on ``alerts.delivery_failed``,
    and stats count it on its own, not as a failure."""
    sink.responder = by_status(failing="firing")
    failed = await Subscriber().start(nats_url, "alerts.delivery_failed")
    service = await Tocsin(
        data_dir, nats_url, config(sink.url, max_attempts=6, backoff=["2s"])
    ).start()
    try:
        await publish(nats_url, "alerts.in.db", event())
        await wait_until(lambda: statuses(sink) == ["firing"], what="the firing's first attempt")
        await publish(nats_url, "alerts.in.db", event(status="resolved"))
        await wait_until(
            lambda: service.count("delivery.superseded") == 1, 20, "the firing superseded"
        )
        [delivered] = service.events("delivery.succeeded")
        [superseded] = service.events("delivery.superseded")
        [firing, resolve] = service.events("alert.routed")
        assert (firing["reason"], resolve["reason"]) == ("firing", "resolved")
        assert delivered["notification_id"] == resolve["notification_id"]
        assert superseded["notification_id"] == firing["notification_id"]
        assert superseded["superseded_by"] == resolve["notification_id"]
        assert superseded["receiver"] == "hook"
        resolved_at = statuses(sink).index("resolved")
        assert "firing" not in statuses(sink)[resolved_at:], statuses(sink)
        assert service.count("delivery.dead_lettered") == 0
        assert failed.messages == []
        numbers = await stats(service)
        assert numbers["queue"]["superseded"] == 1
        assert numbers["queue"]["dead"] == numbers["queue"]["retrying"] == 0
        assert numbers["by_receiver"]["hook"]["superseded"] == 1
        assert numbers["delivery_success_rate"] == 1.0
        await service.assert_live_state_is_the_log()
    finally:
        await service.stop()
        await failed.close()


async def test_an_old_alerts_late_resolve_after_the_new_alerts_firing_is_superseded(
    nats_url: str, sink: HttpSink, data_dir: Path
) -> None:
    """Catches an old alert's resolve, retried after a new alert of the same fingerprint
    fired and was delivered, closing the new alert at the receiver (PagerDuty and
    Opsgenie key by fingerprint): the late resolve is dropped as superseded."""
    sink.responder = by_status(failing="resolved")
    service = await Tocsin(
        data_dir, nats_url, config(sink.url, max_attempts=6, backoff=["2s"])
    ).start()
    try:
        await publish(nats_url, "alerts.in.db", event())
        await wait_until(lambda: service.count("delivery.succeeded") == 1, what="first firing")
        await publish(nats_url, "alerts.in.db", event(status="resolved"))
        await wait_until(lambda: "resolved" in statuses(sink), what="the resolve's attempt")
        await publish(nats_url, "alerts.in.db", event())  # a new alert, same fingerprint
        await wait_until(
            lambda: service.count("delivery.superseded") == 1, 20, "the resolve superseded"
        )
        [_, resolve, second] = service.events("alert.routed")
        assert (resolve["reason"], second["reason"]) == ("resolved", "firing")
        assert resolve["alert_id"] != second["alert_id"]
        [superseded] = service.events("delivery.superseded")
        assert superseded["notification_id"] == resolve["notification_id"]
        assert superseded["superseded_by"] == second["notification_id"]
        bodies = [request.json() for request in sink.requests]
        second_at = next(
            i for i, b in enumerate(bodies) if b["notification_id"] == second["notification_id"]
        )
        assert all(b["status"] == "firing" for b in bodies[second_at:]), bodies
        assert service.count("delivery.dead_lettered") == 0
        await service.assert_live_state_is_the_log()
    finally:
        await service.stop()
