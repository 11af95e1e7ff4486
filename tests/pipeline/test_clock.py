"""The clock loop's wake-ups (``pipeline.clock``): the router tells it of every commit,
and at a steady rate every event is a commit of its own. Only a commit that makes a
timer due before the clock means to look wakes it (issue #20, W3's CPU per event).
And the router serves a due timer before its next inbound batch (issue #20, W5). A
real ledger on a real SQLite file (and a real nats-server for the router); the loop
runs, napping until its next look."""

from __future__ import annotations

import asyncio
import threading
import tomllib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import msgspec
import pytest
from nats.aio.msg import Msg

from tests.support import T0, Rig, event, wait_until
from tocsin.bus.publisher import Publisher
from tocsin.config import Config, default_config, from_mapping
from tocsin.core import clock
from tocsin.core import events as ev
from tocsin.core.outbound import Outbound
from tocsin.core.state import AutoResolve
from tocsin.core.subjects import ROUTER_CONSUMER, STREAM_IN
from tocsin.core.times import now_us
from tocsin.pipeline.clock import Clock
from tocsin.pipeline.control import Control
from tocsin.pipeline.outbox import Outbox
from tocsin.pipeline.processor import CHUNK, Milestone, Pulled
from tocsin.pipeline.router import Router, Traced
from tocsin.store.eventlog import db_path
from tocsin.store.ledger import Ledger, load_state
from tocsin.store.reader import LogReader

SECOND = 1_000_000
GROUPED = """
[[route]]
match = {}
receivers = ["hook"]
group_by = ["labels.service"]
group_wait = "30s"

[receivers.hook]
channel = "webhook"
url = "http://127.0.0.1:9/hook"
"""


@pytest.fixture
async def napping(tmp_path: Path) -> AsyncIterator[tuple[Clock, Ledger]]:
    """A clock with nothing due, napping (its next look a second away)."""
    ledger = await Ledger.open(db_path(tmp_path))
    timers = Clock(None, ledger, default_config({}))  # type: ignore[arg-type]  # never fires
    stop = asyncio.Event()
    running = asyncio.create_task(timers.run(stop))
    await wait_until(lambda: timers._looks_at is not None, what="the clock napping")
    yield timers, ledger
    stop.set()
    await running
    await ledger.close()


async def test_a_commit_that_makes_nothing_due_sooner_does_not_wake_the_clock(
    napping: tuple[Clock, Ledger],
) -> None:
    """Catches a nudge that wakes the loop on every commit (two tasks, a wait and a
    ``next_due`` each time, for nothing)."""
    timers, _ = napping
    for _ in range(100):  # a hundred commits of alerts with no timer
        timers.nudge()
    assert not timers._nudged.is_set()


async def test_a_commit_that_makes_a_timer_due_now_wakes_the_clock(
    napping: tuple[Clock, Ledger],
) -> None:
    """Catches a nudge that no longer wakes the clock when it must: a timer due now
    (here an alert's ``ends_at``) is looked at at once, not at the next nap's end."""
    timers, ledger = napping
    ledger.state.auto_resolve["fp1"] = AutoResolve(
        alert_id="a1", due=now_us(), by="ends_at", last_event=now_us()
    )
    timers.nudge()
    assert timers._nudged.is_set()


async def flushing_a_group_a_tick(
    rig: Rig,
    reader: LogReader,
    config: Config,
    now: list[int],
    publisher: Publisher | None = None,
) -> tuple[Clock, Outbox]:
    """A clock on injected time (``now[0]``) that flushes one group a tick
    (``flush_alerts`` 1), and the outbox its commands publish through (``publisher``,
    the broker's own by default)."""
    outbox = Outbox(rig.ledger, publisher or Publisher(rig.nc), reader)
    await outbox.take_up()
    timers = Clock(
        Control(rig.ledger, reader, outbox),
        rig.ledger,
        config,
        now=lambda: now[0],
        flush_alerts=1,
    )
    return timers, outbox


async def routed_into_three_groups(rig: Rig, outbox: Outbox, config: Config) -> None:
    """Three alerts routed through ``outbox`` under ``config`` (``GROUPED``), one to each
    group: ``service`` api, db and web."""
    router = Router(rig.nc, outbox, rig.ledger, config, rider=outbox.ride)
    for service in ("api", "db", "web"):
        body = event(labels={"host": "h0", "service": service})
        await rig.js.publish("alerts.in.db", msgspec.json.encode(body))
    await router.handle(await rig.take(3))


def served_by_the_clock(
    router: type[Router],
    rig: Rig,
    config: Config,
    timers: Clock,
    outbox: Outbox,
    linger: float = 0.0,
) -> Router:
    """``router`` wired to ``timers`` and ``outbox`` as ``tocsin serve`` wires them: due
    timers go first, a batch stops where one falls due (``waits``), every commit nudges
    the clock."""
    return router(
        rig.nc,
        outbox,
        rig.ledger,
        config,
        rider=outbox.ride,
        on_commit=timers.nudge,
        first=timers.serve_due,
        waits=timers.waits,
        linger=linger,
    )


async def a_group_opened(rig: Rig, router: Router, timers: Clock) -> tuple[str, int]:
    """One alert opens the group; its key and due time, once the clock naps until then."""
    body = event(labels={"host": "h0", "service": "db"})
    await rig.js.publish("alerts.in.db", msgspec.json.encode(body))
    await router.handle(await rig.take(1))
    [(key, group)] = rig.ledger.state.groups.items()
    due = group.due_at
    assert due is not None
    await wait_until(
        lambda: timers._due == due and timers._looks_at is not None,
        what="the clock napping until the group's wait ends",
    )
    return key, due


async def test_due_groups_are_notified_a_tick_at_a_time_before_the_router_decides_more(
    rig: Rig,
) -> None:
    """Catches a router that decides inbound batches while a timer is due (issue #20,
    W5: in a storm, a group's flush queued behind batch after batch for the event
    loop, the ledger's lock and the commits), and a flush of every due group in one
    tick (W5: every body waited for the last to be built; ``flush_alerts`` here 1, the
    service's ``FLUSH_ALERTS``). Time is injected: three groups' waits end while the
    clock naps (its next look up to a second away, and a commit of a timer already
    known does not wake it); then a burst of alerts of the same groups arrives. The
    router must fire the groups first, one commit per tick, each notification before
    the burst's facts and listing only the alert that was in when it fell due."""
    config = from_mapping(tomllib.loads(GROUPED), {})
    now = [T0]
    rig.ledger.clock = lambda: now[0]
    committed: list[int] = []  # group notifications per commit
    rig.ledger.listeners.append(
        lambda facts, _: committed.append(sum(isinstance(f, ev.GroupNotified) for f in facts))
    )
    reader = await LogReader.open(rig.ledger.path)
    timers, outbox = await flushing_a_group_a_tick(rig, reader, config, now)
    router = Router(
        rig.nc,
        outbox,
        rig.ledger,
        config,
        rider=outbox.ride,
        on_commit=timers.nudge,
        first=timers.serve_due,
    )
    stop = asyncio.Event()
    parts = [asyncio.create_task(timers.run(stop)), asyncio.create_task(router.run(stop))]
    services = ["api", "db", "web"]
    try:
        for service in services:
            body = event(labels={"host": "h0", "service": service})
            await rig.js.publish("alerts.in.db", msgspec.json.encode(body))
        await wait_until(lambda: len(rig.ledger.state.groups) == 3, what="the groups opened")
        # Each alert is received when it arrived: T0 less its wait in JetStream.
        due = {g.key: g.due_at for g in rig.ledger.state.groups.values()}
        assert all(d is not None and T0 + 29 * SECOND < d <= T0 + 30 * SECOND for d in due.values())
        await wait_until(
            lambda: (
                timers._due == min(d for d in due.values() if d is not None)
                and timers._looks_at is not None
            ),
            what="the clock napping until the first wait ends",
        )
        now[0] = T0 + 31 * SECOND  # the wait is over; the clock's nap is not
        for n in range(1, 8):
            for service in services:
                body = event(labels={"host": f"h{n}", "service": service})
                await rig.js.publish("alerts.in.db", msgspec.json.encode(body))
        await wait_until(
            lambda: (
                len(rig.ledger.state.alerts) == 24
                and all(g.notified_at is not None for g in rig.ledger.state.groups.values())
            ),
            what="the burst decided and the groups notified",
        )
        await rig.ledger.settled()  # and committed
        rows = await reader.page(0, 1000)
        facts = [(row.seq, ev.decode(row.data)) for row in rows]
        notes = [(seq, fact) for seq, fact in facts if isinstance(fact, ev.GroupNotified)]
        received = [seq for seq, fact in facts if isinstance(fact, ev.AlertReceived)]
        assert len(received) == 24
        assert [count for count in committed if count] == [1, 1, 1]  # a tick per commit
        assert sorted(note.group_labels["labels.service"] for _, note in notes) == services
        for seq, note in notes:
            assert received[2] < seq < received[3]  # before every alert of the burst
            assert len(note.alert_ids) == 1
            assert (note.due_at, note.fired_at) == (due[note.group_key], T0 + 31 * SECOND)
    finally:
        stop.set()
        await asyncio.gather(*parts)
        await reader.close()


async def test_a_batchs_alerts_are_received_when_their_chunk_arrived(rig: Rig) -> None:
    """Catches a batch received as a whole when its last message arrived (issue #20,
    W5: the storm's first batch took 0.12 s to arrive, and every group it opened
    waited that much longer than its ``group_wait``). Forty alerts, published one after
    the other, are decided as one batch: the first ``CHUNK`` are received when
    JetStream stored the 32nd, the rest when it stored the 40th."""
    config = from_mapping(tomllib.loads(GROUPED), {})
    stored: list[int] = []
    for n in range(40):
        body = event(labels={"host": f"h{n}", "service": "db"})
        ack = await rig.js.publish("alerts.in.db", msgspec.json.encode(body))
        message = await rig.js.get_msg(STREAM_IN, ack.seq)
        assert message.time is not None
        stored.append(int(message.time.timestamp() * 1_000_000))
    router = Router(rig.nc, Publisher(rig.nc), rig.ledger, config)
    await router.handle(await rig.take(40))
    alerts = sorted(rig.ledger.state.alerts.values(), key=lambda a: int(a.labels["host"][1:]))
    assert stored[CHUNK - 1] < stored[-1]
    assert all(abs(a.first_seen - stored[CHUNK - 1]) <= 2 for a in alerts[:CHUNK])
    assert all(abs(a.first_seen - stored[-1]) <= 2 for a in alerts[CHUNK:])
    [group] = rig.ledger.state.groups.values()
    assert group.due_at is not None
    assert abs(group.due_at - (stored[CHUNK - 1] + 30 * SECOND)) <= 2


async def test_a_timer_falling_due_mid_batch_stops_the_batch_there(rig: Rig) -> None:
    """Catches a due timer that waits for the router's whole inbound batch (issue #20,
    W5: a storm's batch of 1,000 took the router up to 0.3 s to decide, and the
    groups' flush waited for it and its commit). A group opens; 40 more alerts of it
    wait in JetStream, pulled as one batch; the injected clock passes the group's due
    time while the router decides the batch's first alert. The batch stops at the next
    look (``CHUNK`` alerts in), is committed on its own, the group is notified
    listing the alerts committed by then, and the rest of the batch comes after, each
    alert once and acked."""
    config = from_mapping(tomllib.loads(GROUPED), {})
    now = [T0]
    rig.ledger.clock = lambda: now[0]
    reader = await LogReader.open(rig.ledger.path)
    timers, outbox = await flushing_a_group_a_tick(rig, reader, config, now)
    decided: list[int] = []  # messages per batch decided

    class Busy(Router):
        """The router, with the clock passing the group's due time as it decides the
        burst's first alert, and a record of the batches it decided."""

        def facts(self, pulled: Pulled[Traced], msg: Msg, position: int, at: int) -> list[ev.Event]:
            if rig.ledger.state.groups:
                now[0] = T0 + 31 * SECOND
            return super().facts(pulled, msg, position, at)

        def reached(self, pulled: Pulled[Traced], milestone: Milestone) -> None:
            if milestone == "decided":
                decided.append(len(pulled.msgs))
            super().reached(pulled, milestone)

    # The burst in one pull (a pull without linger may return while the rest of the 40
    # are still on the socket: 3, 15 or 28 seen, and no cut to look for).
    router = served_by_the_clock(Busy, rig, config, timers, outbox, linger=1.0)
    stop = asyncio.Event()
    parts = [asyncio.create_task(timers.run(stop))]
    try:
        key, due = await a_group_opened(rig, router, timers)
        for n in range(1, 41):
            body = event(labels={"host": f"h{n}", "service": "db"})
            await rig.js.publish("alerts.in.db", msgspec.json.encode(body))
        decided.clear()
        parts.append(asyncio.create_task(router.run(stop)))
        await wait_until(
            lambda: (
                len(rig.ledger.state.alerts) == 41
                and rig.ledger.state.groups[key].notified_at is not None
            ),
            what="the burst decided and the group notified",
        )
        await rig.ledger.settled()
        await wait_until(lambda: sum(decided) == 40, what="every batch finished")

        async def acked() -> bool:
            return await rig.unacked() == 0

        await wait_until(acked, what="the burst acked")
        rows = await reader.page(0, 1000)
    finally:
        stop.set()
        await asyncio.gather(*parts)
        await reader.close()
    facts = [(row.seq, ev.decode(row.data)) for row in rows]
    [(seq, note)] = [(seq, fact) for seq, fact in facts if isinstance(fact, ev.GroupNotified)]
    received = [seq for seq, fact in facts if isinstance(fact, ev.AlertReceived)]
    assert len(received) == 41
    assert decided[0] == CHUNK  # the batch of 40, cut where the timer was seen due
    assert received[CHUNK] < seq < received[CHUNK + 1]
    assert len(note.alert_ids) == 1 + CHUNK
    assert (note.due_at, note.fired_at) == (due, T0 + 31 * SECOND)
    assert rig.ledger.state == load_state(rig.ledger.path)


async def test_a_timer_near_due_cuts_the_routers_batches_to_chunks_and_fires_when_due(
    rig: Rig,
) -> None:
    """Catches the router deciding a storm's whole batch just before a group falls due
    (issue #20, W5: the flush's first commit then queued 50-90 ms behind that batch's
    rows), and a lead that fires the group early. A group opens; 70 more alerts of it
    wait in JetStream, pulled as one batch; the injected clock stands within
    ``LEAD_US`` of the group's due time, not at it: the batch is decided a chunk at a
    time (at most), each committed on its own, and no notification is decided. Once the clock
    reaches the due time, the group is notified, listing every alert, at its due
    time; each alert once and acked; the log folds to the live state."""
    config = from_mapping(tomllib.loads(GROUPED), {})
    now = [T0]
    rig.ledger.clock = lambda: now[0]
    reader = await LogReader.open(rig.ledger.path)
    timers, outbox = await flushing_a_group_a_tick(rig, reader, config, now)
    decided: list[int] = []  # messages per batch decided

    class Counted(Router):
        def reached(self, pulled: Pulled[Traced], milestone: Milestone) -> None:
            if milestone == "decided":
                decided.append(len(pulled.fresh))
            super().reached(pulled, milestone)

    router = served_by_the_clock(Counted, rig, config, timers, outbox)
    stop = asyncio.Event()
    parts = [asyncio.create_task(timers.run(stop))]
    try:
        key, due = await a_group_opened(rig, router, timers)
        now[0] = due - clock.LEAD_US // 2  # near due, not due
        for n in range(1, 71):
            body = event(labels={"host": f"h{n}", "service": "db"})
            await rig.js.publish("alerts.in.db", msgspec.json.encode(body))
        decided.clear()
        parts.append(asyncio.create_task(router.run(stop)))
        await wait_until(lambda: sum(decided) == 70, what="the burst decided")
        await rig.ledger.settled()
        assert max(decided) <= CHUNK  # the 70 a chunk at a time (at most)
        assert rig.ledger.state.groups[key].notified_at is None  # not due yet
        now[0] = due
        timers.nudge()
        await wait_until(
            lambda: rig.ledger.state.groups[key].notified_at is not None,
            what="the group notified once due",
        )
        await rig.ledger.settled()  # decided (and folded) first, then committed

        async def acked() -> bool:
            return await rig.unacked() == 0

        await wait_until(acked, what="the burst acked")
        rows = await reader.page(0, 1000)
    finally:
        stop.set()
        await asyncio.gather(*parts)
        await reader.close()
    facts = [fact for fact in (ev.decode(row.data) for row in rows)]
    [note] = [fact for fact in facts if isinstance(fact, ev.GroupNotified)]
    assert sum(isinstance(fact, ev.AlertReceived) for fact in facts) == 71
    assert len(note.alert_ids) == 71
    assert (note.due_at, note.fired_at) == (due, due)
    assert rig.ledger.state == load_state(rig.ledger.path)


async def test_a_flushs_next_tick_does_not_wait_for_the_work_items_before_it(
    rig: Rig,
) -> None:
    """Catches a flush whose ticks wait for JetStream's PubAcks of the tick before
    (issue #20, W5: 3-10 ms a tick). Four groups due, a group a tick, and the
    broker's answers held back: the second tick is committed meanwhile, and the
    third, decided while the second was written (the fourth waits for the first's
    answers: two ticks' work items in flight at most, and a tick decided ahead), each
    tick its own commit, and every work item is stored once the answers come; the
    log folds to the live state."""
    config = from_mapping(tomllib.loads(GROUPED), {})
    now = [T0]
    rig.ledger.clock = lambda: now[0]
    reader = await LogReader.open(rig.ledger.path)
    held = asyncio.Event()

    class Held(Publisher):
        """The broker's publisher, its answers held back until ``held`` is set."""

        async def publish(self, messages: Sequence[Outbound], timeout: float = 5.0) -> list[bool]:
            await held.wait()
            return await super().publish(messages, timeout)

    timers, outbox = await flushing_a_group_a_tick(rig, reader, config, now, Held(rig.nc))
    router = Router(rig.nc, Publisher(rig.nc), rig.ledger, config)
    for service in ("api", "db", "mq", "web"):
        body = event(labels={"host": "h0", "service": service})
        await rig.js.publish("alerts.in.db", msgspec.json.encode(body))
    await router.handle(await rig.take(4))
    queued = await rig.work_items()
    commits: list[int] = []  # group notifications per commit
    rig.ledger.listeners.append(
        lambda facts, _: commits.append(sum(isinstance(f, ev.GroupNotified) for f in facts))
    )
    now[0] = T0 + 31 * SECOND
    stop = asyncio.Event()
    running = asyncio.create_task(timers.run(stop))
    try:
        await wait_until(lambda: commits.count(1) == 3, what="the third tick committed")
        assert await rig.work_items() == queued  # none stored yet: their answers held
        held.set()

        async def stored() -> bool:
            return await rig.work_items() - queued == 4

        await wait_until(stored, what="the four work items stored")
        await wait_until(lambda: outbox.owed == 0, what="the outbox owing nothing")
    finally:
        held.set()
        stop.set()
        await running
        await reader.close()
    assert [count for count in commits if count] == [1, 1, 1, 1]
    assert rig.ledger.state == load_state(rig.ledger.path)


async def test_a_flushs_next_tick_is_decided_while_the_one_before_is_written(
    rig: Rig,
) -> None:
    """Catches a flush whose ticks wait for the commit of the tick before (issue #20,
    W5: 2-4 ms of a 2,000-alert tick). Three groups due, a group a tick, the log's
    thread held: the second tick is decided (its group notified in the live state)
    while the first is not written yet, and nothing is published before its own
    commit (invariant 2); once the thread is let go every work item is stored, and the
    log folds to the live state."""
    config = from_mapping(tomllib.loads(GROUPED), {})
    now = [T0]
    rig.ledger.clock = lambda: now[0]
    reader = await LogReader.open(rig.ledger.path)
    held = threading.Event()
    try:
        timers, outbox = await flushing_a_group_a_tick(rig, reader, config, now)
        await routed_into_three_groups(rig, outbox, config)
        queued = await rig.work_items()
        written = rig.ledger.event_log.last_seq
        rig.ledger.event_log._writer.submit(held.wait, 10)
        groups = rig.ledger.state.groups.values()
        now[0] = T0 + 31 * SECOND
        stop = asyncio.Event()
        running = asyncio.create_task(timers.run(stop))
        try:
            await wait_until(
                lambda: sum(g.notified_at is not None for g in groups) == 2,
                what="the second tick decided while the first is written",
            )
            assert rig.ledger.event_log.last_seq == written  # neither is written yet
            assert await rig.work_items() == queued  # nor any of their work items out
            held.set()

            async def stored() -> bool:
                return await rig.work_items() - queued == 3

            await wait_until(stored, what="the three work items stored")
        finally:
            held.set()
            stop.set()
            await running
        assert rig.ledger.state == load_state(rig.ledger.path)
    finally:
        await reader.close()


async def test_a_flush_the_log_refuses_leaves_nothing_and_goes_out_once_when_it_takes_writes(
    rig: Rig,
) -> None:
    """A flush of several ticks (``flush_alerts`` 1, three groups due): catches a
    refused commit that leaves a tick's facts in the live state or publishes their
    work items (re-decided, they would be queued twice under new ids), or a flush
    that, retried by the clock once the log takes writes again, notifies a group
    twice or not at all."""
    config = from_mapping(tomllib.loads(GROUPED), {})
    now = [T0]
    rig.ledger.clock = lambda: now[0]
    reader = await LogReader.open(rig.ledger.path)
    try:
        timers, outbox = await flushing_a_group_a_tick(rig, reader, config, now)
        await routed_into_three_groups(rig, outbox, config)
        assert len(rig.ledger.state.groups) == 3
        queued = await rig.work_items()
        await rig.ledger.event_log.set_query_only(True)
        now[0] = T0 + 31 * SECOND
        stop = asyncio.Event()
        running = asyncio.create_task(timers.run(stop))
        try:
            await wait_until(lambda: rig.ledger.problem is not None, what="a refused flush")
            await rig.ledger.event_log.set_query_only(False)
            await wait_until(
                lambda: all(g.notified_at is not None for g in rig.ledger.state.groups.values()),
                what="the flush once the log takes writes",
            )
        finally:
            stop.set()
            await running
        rows = await reader.page(0, 1000)
        notes = [ev.decode(row.data) for row in rows if row.kind == "group.notified"]
        assert sorted(n.group_labels["labels.service"] for n in notes) == ["api", "db", "web"]
        assert rig.ledger.state == load_state(rig.ledger.path)
        assert await rig.work_items() - queued == 3  # none of a refused tick's left
    finally:
        await reader.close()


async def test_a_busy_routers_batch_is_received_when_it_arrived_not_when_decided(
    rig: Rig,
) -> None:
    """Catches a received time taken when the router decides (issue #20, W5: in a
    storm the router's backlog added to every group's wait). While the router cannot
    decide (the ledger's lock held, as by a batch being decided), an alert arrives and
    waits in its hands; once decided, its ``alert.received`` and its group's due time
    count from when JetStream stored it."""
    config = from_mapping(tomllib.loads(GROUPED), {})
    reader = await LogReader.open(rig.ledger.path)
    outbox = Outbox(rig.ledger, Publisher(rig.nc), reader)
    await outbox.take_up()
    router = Router(rig.nc, outbox, rig.ledger, config)
    stop = asyncio.Event()
    running = asyncio.create_task(router.run(stop))
    try:
        first = event(labels={"host": "h0", "service": "db"})
        await rig.js.publish("alerts.in.db", msgspec.json.encode(first))
        await wait_until(lambda: len(rig.ledger.state.groups) == 1, what="the router routing")
        async with rig.ledger.deciding():  # the router is busy
            body = event(labels={"host": "h1", "service": "api"})
            ack = await rig.js.publish("alerts.in.db", msgspec.json.encode(body))

            async def pulled() -> bool:
                info = await rig.js.consumer_info(STREAM_IN, ROUTER_CONSUMER)
                return info.num_ack_pending == 1

            await wait_until(pulled, what="the router holding the alert, unable to decide")
            stored = await rig.js.get_msg(STREAM_IN, ack.seq)  # gone once acked
            busy_until = now_us()
        await wait_until(lambda: len(rig.ledger.state.groups) == 2, what="the alert grouped")
    finally:
        stop.set()
        await running
        await reader.close()
    assert stored.time is not None
    arrived = int(stored.time.timestamp() * 1_000_000)
    [alert] = (a for a in rig.ledger.state.alerts.values() if a.labels["service"] == "api")
    assert abs(alert.first_seen - arrived) <= 2 < busy_until - arrived  # µs: two clock reads
    [group] = (g for g in rig.ledger.state.groups.values() if g.labels == {"labels.service": "api"})
    assert group.due_at is not None
    assert abs(group.due_at - (arrived + 30 * SECOND)) <= 2
    await rig.ledger.settled()
    assert load_state(rig.ledger.path).alerts == rig.ledger.state.alerts  # the log says so too
