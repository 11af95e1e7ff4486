"""``Supervisor`` with real child processes that are not tocsin: what happens to the
link between serve and a child when the child ends without reading it."""

from __future__ import annotations

import asyncio
import sys

from prometheus_client.parser import text_string_to_metric_families

from tests.support import wait_until
from tocsin.observability.telemetry import Metrics
from tocsin.pipeline.supervisor import ChildCommand, Supervisor

# A child that never reads its link and exits after a moment: whatever serve wrote to
# the link is unread when it ends, so the kernel resets the connection.
DEAF_CHILD = ChildCommand([sys.executable, "-c", "import time; time.sleep(0.5)"], {})


async def test_a_child_that_dies_with_a_reload_unread_is_started_again_not_fatal() -> None:
    """A reload told to a child that then exits without reading it (as a `tocsin deliver`
    child does when the config file it starts from was just made invalid) resets the
    link. Catches the reset raised out of the supervisor, which stopped `tocsin serve`
    with exit 1 (tests/pipeline/test_reload.py found it once serve delivered beside its
    child and the test outran the child's start): the child must be started again,
    counted, and the supervisor stop cleanly when told."""
    metrics = Metrics()
    supervisor = Supervisor([DEAF_CHILD], metrics, patience=5)
    stop = asyncio.Event()
    running = asyncio.create_task(supervisor.run(stop))
    reloading: asyncio.Task[None] | None = None
    try:
        (first,) = await wait_until(lambda: supervisor.pids, 10, "the first child")
        reloading = asyncio.create_task(supervisor.reload())  # unread: the child is deaf
        await wait_until(
            lambda: [pid for pid in supervisor.pids if pid != first], 15, "a child in its place"
        )
        assert not running.done(), running
        restarts = [
            sample.value
            for family in text_string_to_metric_families(metrics.render().decode())
            for sample in family.samples
            if sample.name == "tocsin_delivery_process_restarts_total"
        ]
        assert sum(restarts) >= 1, restarts
    finally:
        stop.set()
        if reloading is not None:
            reloading.cancel()
        await asyncio.wait_for(running, 15)  # raises what the supervisor raised, if it did
