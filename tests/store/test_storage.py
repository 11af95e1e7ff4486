"""When the log refuses writes (disk full), tocsin stops acking, says why on /readyz,
and resumes by itself once writes succeed: nothing is lost, nothing acked early."""

from __future__ import annotations

from pathlib import Path

import httpx
import nats

from tests.support import HttpSink, Tocsin, publish, wait_until, webhook_config
from tocsin.core.subjects import ROUTER_CONSUMER, STREAM_IN


async def test_a_full_log_holds_everything_back_until_it_accepts_writes(
    nats_url: str, sink: HttpSink, data_dir: Path
) -> None:
    service = await Tocsin(data_dir, nats_url, webhook_config(sink.url)).start()
    ledger = service.ledger()
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    try:
        pages = await ledger.event_log.set_page_limit(None)
        await ledger.event_log.set_page_limit(pages)  # no room for one more page: "disk full"
        big = {
            "type": "disk_full",
            "severity": "critical",
            "summary": "x" * 250,
            "details": {f"k{i}": "v" * 400 for i in range(19)},
            "labels": {f"pad{i}": "v" * 1000 for i in range(20)},  # with details: > a page
        }
        await publish(nats_url, "alerts.in.db", big)

        async def readyz() -> httpx.Response:
            async with httpx.AsyncClient() as client:
                return await client.get(f"{service.api}/readyz")

        async def not_ready() -> bool:
            return (await readyz()).status_code == 503

        await wait_until(not_ready, 10, "/readyz to report the full log")
        assert "full" in (await readyz()).json()["reason"]
        info = await js.consumer_info(STREAM_IN, ROUTER_CONSUMER)
        assert info.num_ack_pending == 1  # delivered to the router, not acked
        assert sink.requests == []
        assert service.count("alert.received") == 0

        await ledger.event_log.set_page_limit(None)

        await wait_until(lambda: len(sink.requests) == 1, 15, "delivery after recovery")
        await wait_until(lambda: service.count("delivery.succeeded") == 1, 10, "outcome logged")

        async def ready() -> bool:
            return (await readyz()).status_code == 200

        await wait_until(ready, 10, "/readyz ready again")
        info = await js.consumer_info(STREAM_IN, ROUTER_CONSUMER)
        assert info.num_ack_pending == 0
        assert service.count("alert.received") == 1
        await service.assert_live_state_is_the_log()
    finally:
        await nc.close()
        await service.stop()
