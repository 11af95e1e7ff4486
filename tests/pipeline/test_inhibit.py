"""Inhibition end to end (DESIGN.md section 12), on real parts: nats-server, a webhook
receiver on 127.0.0.1 and the SQLite log; every wait is on a condition with a timeout,
and the live state equals a fold of the log after each step."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from tests.pipeline.test_groups import publish_many
from tests.support import HttpSink, Tocsin, event, wait_until

CONFIG = """
[[route]]
match = {{}}
receivers = ["hook"]

[receivers.hook]
channel = "webhook"
url = "{url}"
timeout = "5s"

[[inhibit]]
name = "cluster-down-mutes-its-pods"
source = {{ type = "cluster_unreachable" }}
target = {{ severity = ["warning", "error"] }}
equal = ["labels.cluster"]
"""


def down(cluster: str, status: str = "firing") -> dict[str, Any]:
    return event(
        type="cluster_unreachable",
        severity="critical",
        summary=f"cluster {cluster} unreachable",
        labels={"cluster": cluster},
        status=status,
    )


def warning(cluster: str, pod: str) -> dict[str, Any]:
    return event(
        type="pod_not_ready",
        summary=f"{pod} not ready in {cluster}",
        labels={"cluster": cluster, "pod": pod},
    )


def told(sink: HttpSink) -> Counter[tuple[str, str, str]]:
    """(summary, reason, status) of every notification the receiver got, counted."""
    bodies = [request.json() for request in sink.requests]
    return Counter((b["summary"], b["reason"], b["status"]) for b in bodies)


async def test_a_cluster_down_silences_its_warnings_and_its_resolve_releases_them_once(
    nats_url: str, sink: HttpSink, data_dir: Path
) -> None:
    """Cluster A unreachable: A's warnings are counted, not sent; B's are sent.
    Resolving it sends A's warnings that still fire, each exactly once, and not the
    one that resolved meanwhile. Catches: no inhibition, inhibition across clusters,
    no release, a release per tick, a page for a resolved target."""
    service = await Tocsin(data_dir, nats_url, CONFIG.format(url=sink.url)).start()
    try:
        await publish_many(nats_url, [down("A")])
        await wait_until(lambda: len(sink.requests) == 1, 15, "the cluster-down page")
        await publish_many(
            nats_url,
            [warning("A", "p1"), warning("A", "p2"), warning("A", "p3"), warning("B", "p1")],
        )
        await wait_until(lambda: service.count("alert.inhibited") == 3, 15, "three inhibited")
        await wait_until(lambda: len(sink.requests) == 2, 15, "B's warning")
        assert told(sink) == {
            ("cluster A unreachable", "firing", "firing"): 1,
            ("p1 not ready in B", "firing", "firing"): 1,
        }
        await service.assert_live_state_is_the_log()

        async with httpx.AsyncClient(base_url=service.api) as http:
            held = (await http.get("/api/v1/alerts", params={"status": "inhibited"})).json()
            assert sorted(a["summary"] for a in held["alerts"]) == [
                f"p{n} not ready in A" for n in (1, 2, 3)
            ]
            inhibitor = service.events("alert.opened")[0]["alert_id"]
            assert {a["inhibited_by"] for a in held["alerts"]} == {inhibitor}
            stats = (await http.get("/api/v1/stats")).json()
            assert (stats["inhibited"], stats["suppressed"]) == (3, 3)
            page = await http.get(f"/alerts/{held['alerts'][0]['id']}")
            assert "inhibited by" in page.text
        metrics = await service.metrics()
        assert metrics["tocsin_events_suppressed_total", frozenset({("cause", "inhibited")})] == 3

        resolved_p3 = dict(warning("A", "p3"), status="resolved")
        await publish_many(nats_url, [resolved_p3, down("A", "resolved")])
        await wait_until(lambda: service.count("inhibit.released") == 1, 15, "the release")
        await wait_until(lambda: len(sink.requests) == 5, 15, "the resolve and two warnings")
        await wait_until(lambda: service.count("delivery.succeeded") == 5, 15, "their outcomes")
        assert told(sink) == {
            ("cluster A unreachable", "firing", "firing"): 1,
            ("p1 not ready in B", "firing", "firing"): 1,
            ("cluster A unreachable", "resolved", "resolved"): 1,
            ("p1 not ready in A", "firing", "firing"): 1,
            ("p2 not ready in A", "firing", "firing"): 1,
        }
        [released] = service.events("inhibit.released")
        assert released["alert_id"] == inhibitor
        assert len(released["alert_ids"]) == 2
        state = service.live_state()
        assert state.inhibit_ended == {}  # nothing left for the clock: no second release
        assert all(a.inhibited_by is None for a in state.alerts.values())
        await service.assert_live_state_is_the_log()
    finally:
        await service.stop()
