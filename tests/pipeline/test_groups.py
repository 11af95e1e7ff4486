"""Groups and the clock end to end (DESIGN.md section 11), on real parts: nats-server,
a webhook receiver on 127.0.0.1, the SQLite log, and `tocsin serve` killed with SIGKILL.
Timings are short (seconds); every wait is on a condition with a timeout."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import nats

from tests.support import HttpSink, Serve, Tocsin, event, log_count, log_events, wait_until
from tocsin.core.contracts import GroupNotification
from tocsin.store.ledger import load_state

GROUP_FIELDS = set(GroupNotification.__struct_fields__)


def grouped_config(url: str, **route: str) -> str:
    keys = "\n".join(f"{k} = {v}" for k, v in route.items())
    return f"""
[[route]]
match = {{}}
receivers = ["hook"]
{keys}

[receivers.hook]
channel = "webhook"
url = "{url}"
timeout = "5s"
"""


async def publish_many(url: str, bodies: list[dict[str, Any]]) -> None:
    """Each body on ``alerts.in.storm`` over one connection, every PubAck awaited."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        import msgspec

        for body in bodies:
            await js.publish("alerts.in.storm", msgspec.json.encode(body), timeout=10)
    finally:
        await nc.close()


def bodies_of(sink: HttpSink) -> list[dict[str, Any]]:
    return [request.json() for request in sink.requests]


async def test_a_storm_is_one_notification_per_group_then_updates_resolves_and_reminders(
    nats_url: str, sink: HttpSink, data_dir: Path
) -> None:
    """500 alerts over 5 services, grouped by service with group_wait = 1s: exactly 5
    first notifications (max_alerts listed, the rest counted); a later alert is one
    update after group_interval; resolving a service's alerts sends its group resolved;
    repeat_interval reminds the others with no new event."""
    toml = grouped_config(
        sink.url,
        group_by='["labels.service"]',
        group_wait='"1s"',
        group_interval='"2s"',
        repeat_interval='"4s"',
        max_alerts="60",
    )
    service = await Tocsin(data_dir, nats_url, toml).start()
    try:
        storm = [
            event(summary=f"host {n} down", labels={"host": f"h{n}", "service": f"s{n % 5}"})
            for n in range(500)
        ]
        await publish_many(nats_url, storm)
        await wait_until(lambda: len(sink.requests) >= 5, 30, "the five group notifications")
        await wait_until(lambda: service.count("delivery.succeeded") >= 5, 10, "their outcomes")
        first = bodies_of(sink)[:5]
        for body in first:
            assert set(body) == GROUP_FIELDS
            assert (body["reason"], body["status"]) == ("firing", "firing")
            assert len(body["alerts"]) == 60
            assert body["truncated_alerts"] == 40
            service_name = body["group_labels"]["labels.service"]
            assert {a["labels"]["service"] for a in body["alerts"]} == {service_name}
            assert body["group_key"] == f'route[0]/hook/{{labels.service="{service_name}"}}'
        assert sorted(b["group_labels"]["labels.service"] for b in first) == [
            f"s{n}" for n in range(5)
        ]
        # Nothing else is due before the reminders: exactly five, not one per alert.
        state = service.live_state()
        assert len(state.groups) == 5
        for group in state.groups.values():
            assert group.notified_at is not None
            assert group.due_at == group.notified_at + 4_000_000
        async with httpx.AsyncClient(base_url=service.api) as http:
            listed = (await http.get("/api/v1/groups")).json()["groups"]
            assert len(listed) == 5
            for shown in listed:
                assert len(shown["alert_ids"]) == 100
                assert shown["firing"] == 100
                assert shown["notifications"] == 1
                assert shown["next_due_at"] is not None
                assert shown["receiver"] == "hook"
            one = listed[0]["alert_ids"][0]
            page = (await http.get(f"/api/v1/alerts/{one}")).json()
            assert [g["group_key"] for g in page["groups"]] == [listed[0]["group_key"]]
            only_hook = (await http.get("/api/v1/groups", params={"receiver": "x"})).json()
            assert only_hook == {"groups": []}

        await publish_many(
            nats_url, [event(summary="late", labels={"host": "late", "service": "s0"})]
        )
        await wait_until(
            lambda: any(b["reason"] == "update" for b in bodies_of(sink)), 15, "the update"
        )
        [update] = [b for b in bodies_of(sink) if b["reason"] == "update"]
        assert update["group_labels"] == {"labels.service": "s0"}
        assert (
            "late" in {a["summary"] for a in update["alerts"]} or update["truncated_alerts"] == 41
        )
        notes = {e["notification_id"]: e for e in service.events("group.notified")}
        s0 = sorted(
            (e for e in notes.values() if e["group_labels"] == {"labels.service": "s0"}),
            key=lambda e: e["fired_at"],
        )
        assert s0[1]["fired_at"] - s0[0]["fired_at"] >= 2_000_000  # group_interval
        assert all(e["fired_at"] >= e["due_at"] for e in notes.values())

        resolves = [
            event(status="resolved", labels={"host": f"h{n}", "service": "s1"})
            for n in range(1, 500, 5)
        ]
        await publish_many(nats_url, resolves)
        await wait_until(
            lambda: any(b["reason"] == "resolved" for b in bodies_of(sink)), 15, "the resolved"
        )
        [resolved] = [b for b in bodies_of(sink) if b["reason"] == "resolved"]
        assert resolved["group_labels"] == {"labels.service": "s1"}
        assert resolved["status"] == "resolved"
        assert all(a["status"] == "resolved" for a in resolved["alerts"])
        await wait_until(
            lambda: any(b["reason"] == "reminder" for b in bodies_of(sink)), 15, "a reminder"
        )
        reminder = next(b for b in bodies_of(sink) if b["reason"] == "reminder")
        assert reminder["group_labels"] != {"labels.service": "s1"}  # closed, never reminded
        assert all(a["reason"] == "reminder" for a in reminder["alerts"])
        keys = Counter((b["group_labels"]["labels.service"], b["reason"]) for b in bodies_of(sink))
        assert keys[("s1", "firing")] == 1
        assert keys[("s1", "resolved")] == 1
        await service.assert_live_state_is_the_log()
    finally:
        await service.stop()


async def test_sigkill_during_a_group_wait_still_notifies_once_after_restart(
    nats_url: str, sink: HttpSink, data_dir: Path, tmp_path: Path
) -> None:
    """The group's timer is in the log: `tocsin serve` killed with SIGKILL while the
    group waits notifies the group after restart, once."""
    config = tmp_path / "tocsin.toml"
    config.write_text(grouped_config(sink.url, group_by='["labels.service"]', group_wait='"3s"'))
    db = data_dir / "tocsin.db"
    first = await Serve(data_dir, nats_url, config).start()
    try:
        await publish_many(
            nats_url,
            [event(labels={"host": f"h{n}", "service": "api"}) for n in range(3)],
        )
        await wait_until(lambda: log_count(db, "alert.grouped") == 3, 15, "three alerts grouped")
        assert log_count(db, "group.notified") == 0
    finally:
        first.kill()
        await first.wait()
    second = await Serve(data_dir, nats_url, config).start()
    try:
        await wait_until(lambda: len(sink.requests) == 1, 20, "the group notified after restart")
        await wait_until(lambda: log_count(db, "delivery.succeeded") == 1, 10, "its outcome")
        [note] = log_events(db, "group.notified")
        assert note["fired_at"] >= note["due_at"]
        assert len(sink.requests[0].json()["alerts"]) == 3
    finally:
        await second.stop()
    state = load_state(db)
    assert [g.due_at for g in state.groups.values()] == [None]  # nothing more is due
    assert len(sink.requests) == 1


async def test_every_clock_fact_is_in_replay_with_its_due_time(
    nats_url: str, sink: HttpSink, data_dir: Path
) -> None:
    """`replay --json` shows group.opened, alert.grouped and group.notified, the last
    with due_at and fired_at (DESIGN.md section 11: replay never re-decides them)."""
    from tocsin.store import forensics

    service = await Tocsin(
        data_dir, nats_url, grouped_config(sink.url, group_by="[]", group_wait='"500ms"')
    ).start()
    try:
        await publish_many(nats_url, [event(labels={"n": str(n)}) for n in range(3)])
        await wait_until(lambda: service.count("delivery.succeeded") == 1, 15, "one delivery")
        await service.assert_live_state_is_the_log()
    finally:
        await service.stop()
    rows = list(forensics.replay(service.db))
    kinds = [row.kind for row in rows]
    assert kinds.count("group.opened") == 1
    assert kinds.count("alert.grouped") == 3
    assert kinds.count("alert.routed") == 0
    [notified] = [row for row in rows if row.kind == "group.notified"]
    data = notified.data
    assert data["due_at"].endswith("Z")  # RFC 3339 UTC, as every time in an output (§10)
    assert data["fired_at"] >= data["due_at"]
    assert len(data["alert_ids"]) == 3
    report = forensics.state_report(*forensics.state_at(service.db))  # `tocsin state`
    [group] = report.groups
    assert (len(group.alert_ids), group.notifications, group.next_due_at) == (3, 1, None)
    assert group.group_key == "route[0]/hook/{}"


async def test_an_alert_whose_ends_at_passes_is_resolved_by_the_clock(
    nats_url: str, sink: HttpSink, data_dir: Path
) -> None:
    """An event with ``ends_at`` a moment ahead and no later event: the clock resolves
    it (``alert.resolved`` by ``ends_at``) and the receiver told of it hears so."""
    from tests.support import webhook_config
    from tocsin.core.times import format_us, now_us

    service = await Tocsin(data_dir, nats_url, webhook_config(sink.url)).start()
    try:
        ends = now_us() + 1_500_000
        await publish_many(nats_url, [event(ends_at=format_us(ends))])
        await wait_until(lambda: len(sink.requests) == 2, 20, "the firing, then the resolve")
        firing, resolved = (request.json() for request in sink.requests)
        assert (firing["reason"], resolved["reason"]) == ("firing", "resolved")
        assert resolved["alert_id"] == firing["alert_id"]
        [fact] = service.events("alert.resolved")
        assert fact["by"] == "ends_at"
        assert fact["resolved_at"] == ends
        assert fact["fired_at"] >= fact["due_at"] == ends
        await service.assert_live_state_is_the_log()
    finally:
        await service.stop()


async def test_the_dashboard_shows_open_groups_and_an_alerts_group(
    nats_url: str, sink: HttpSink, data_dir: Path
) -> None:
    """`/groups` lists each open group with its alerts together and its next due time;
    an alert's page names its group; a hostile group value stays inert markup."""
    from tests.api.test_dashboard import assert_safe_page

    hostile = '"><script>alert(5)</script>'
    toml = grouped_config(
        sink.url, group_by='["labels.service"]', group_wait='"1s"', repeat_interval='"1h"'
    )
    service = await Tocsin(data_dir, nats_url, toml).start()
    try:
        await publish_many(
            nats_url,
            [
                event(summary=f"db{n} down", labels={"host": f"db{n}", "service": hostile})
                for n in range(3)
            ],
        )
        await wait_until(lambda: service.count("delivery.succeeded") == 1, 15, "the group told")
        async with httpx.AsyncClient(base_url=service.api) as http:
            page = await http.get("/groups")
            assert_safe_page(page)
            html = page.text
            assert "route[0]/hook/{labels.service=" in html
            assert "3 firing of 3" in html
            assert re.search(r"· 1 notification\s", html)
            assert all(f"db{n} down" in html for n in range(3))
            assert "&#34;&gt;&lt;script&gt;alert(5)&lt;/script&gt;" in html
            assert "nothing pending" not in html  # the repeat is due in an hour
            [alert] = [
                a
                for a in (await http.get("/api/v1/alerts")).json()["alerts"]
                if a["summary"] == "db0 down"
            ]
            alert_page = await http.get(f"/alerts/{alert['id']}")
            assert_safe_page(alert_page)
            assert 'id="alert-groups"' in alert_page.text
            assert 'href="/groups"' in alert_page.text
            index = (await http.get("/")).text
            assert 'title="open notification groups">1<' in index
        await service.assert_live_state_is_the_log()
    finally:
        await service.stop()


async def test_a_time_interval_covering_now_defers_and_one_never_covering_lets_through(
    nats_url: str, sink: HttpSink, data_dir: Path
) -> None:
    """Two grouped routes, one muted by an interval covering every minute of the day
    (its notification deferred, `group.deferred` with `until`, nothing sent), one
    muted by an interval that never covers now (notified as usual)."""
    toml = f"""
[time_intervals.always]
times = [{{ start = "00:00", end = "24:00" }}]

[time_intervals.long-ago]
years = ["1999"]

[[route]]
match = {{ labels = {{ team = "muted" }} }}
receivers = ["hook"]
group_by = ["labels.team"]
mute_time_intervals = ["always"]

[[route]]
match = {{ labels = {{ team = "free" }} }}
receivers = ["hook"]
group_by = ["labels.team"]
mute_time_intervals = ["long-ago"]

[receivers.hook]
channel = "webhook"
url = "{sink.url}"
"""
    service = await Tocsin(data_dir, nats_url, toml).start()
    try:
        await publish_many(
            nats_url,
            [event(labels={"team": "muted", "n": "1"}), event(labels={"team": "free", "n": "2"})],
        )
        await wait_until(
            lambda: service.count("group.deferred") == 1, 15, "the muted group deferred"
        )
        await wait_until(
            lambda: service.count("delivery.succeeded") == 1, 15, "the free group told"
        )
        [deferred] = service.events("group.deferred")
        assert deferred["group_key"] == 'route[0]/hook/{labels.team="muted"}'
        assert deferred["until"] > deferred["fired_at"]  # never ends: looked at again a day on
        [told] = [r.json() for r in sink.requests]
        assert told["group_labels"] == {"labels.team": "free"}
        [muted] = [
            g for g in service.live_state().groups.values() if g.key == deferred["group_key"]
        ]
        assert muted.notifications == 0
        assert muted.due_at == deferred["until"]
        async with httpx.AsyncClient(base_url=service.api) as http:
            stats = (await http.get("/api/v1/stats")).json()
            assert stats["muted"] == 1  # DESIGN.md section 13's count of the cause
        metrics = await service.metrics()
        assert metrics[("tocsin_notifications_muted_total", frozenset({("receiver", "hook")}))] == 1
        await service.assert_live_state_is_the_log()
    finally:
        await service.stop()


async def test_a_dead_lettered_group_notification_is_requeued_with_its_body(
    nats_url: str, sink: HttpSink, data_dir: Path
) -> None:
    """Catches ``retry-failed`` passing over a group's dead letter in silence (it was
    re-queued only when its routed fact was an ``alert.routed``): the group's
    notification goes back with the body its ``group.notified`` fact holds, the same
    notification id, and is delivered."""
    from tests.support import script

    sink.responder = script(400, 200)  # permanent failure first: dead-lettered at once
    toml = grouped_config(sink.url, group_by='["labels.service"]', group_wait='"200ms"')
    service = await Tocsin(data_dir, nats_url, toml, http=True).start()
    try:
        await publish_many(
            nats_url, [event(labels={"service": "db", "n": str(n)}) for n in range(3)]
        )
        await wait_until(lambda: service.count("delivery.dead_lettered") == 1, 20, "a dead letter")
        async with httpx.AsyncClient(base_url=service.api, timeout=10) as http:
            retried = await http.post("/api/v1/deliveries/retry", json={"receiver": "hook"})
        assert retried.status_code == 200, retried.text
        assert retried.json()["requeued"] == 1
        await wait_until(lambda: service.count("delivery.succeeded") == 1, 20, "the redelivery")
        first, second = bodies_of(sink)
        assert second == first
        assert set(second) == GROUP_FIELDS
        assert len(second["alerts"]) == 3
        keys = [r.headers["idempotency-key"] for r in sink.requests]
        assert keys[0] == keys[1] == retried.json()["notification_ids"][0]
        [requeued] = service.events("delivery.requeued")
        assert requeued["group"]["group_key"] == first["group_key"]
        await service.assert_live_state_is_the_log()
    finally:
        await service.stop()
