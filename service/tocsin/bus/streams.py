"""The streams and consumers of DESIGN.md section 3, created or updated at start (and
again by the router and the recorder when they find their consumer gone).

JetStream may be electing a leader or still starting when tocsin asks: creation is
retried until it answers, for at most ``SETUP_PATIENCE``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
from collections.abc import Awaitable, Callable

from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import (
    BadRequestError,
    BucketNotFoundError,
    NotFoundError,
    ServerError,
    ServiceUnavailableError,
)

from tocsin.core.policy.backoff import Backoff
from tocsin.core.subjects import (
    ANCHOR_PREFIX,
    ATTEMPTS_PREFIX,
    AUDIT_CONSUMER,
    AUDIT_SUBJECTS,
    DELIVERED,
    DELIVERED_SEQ_BUCKET,
    DELIVERY_FAILED,
    INBOUND_SUBJECTS,
    PART_SUBJECTS,
    PARTITIONER_CONSUMER,
    REJECTED,
    ROUTE_PREFIX,
    ROUTER_CONSUMER,
    STREAM_ANCHOR,
    STREAM_IN,
    STREAM_OUT,
    STREAM_PART,
    STREAM_WORK,
    SUPERSEDED_PREFIX,
    deliver_consumer,
    part_subject,
    recorder_consumer,
    route_subject,
    router_consumer,
)

log = logging.getLogger("tocsin.broker")


DAY = 86400.0

SETUP_PATIENCE = 60.0  # seconds to keep asking JetStream to create streams and consumers

OUTCOMES = [DELIVERED, DELIVERY_FAILED, ATTEMPTS_PREFIX + ">", SUPERSEDED_PREFIX + ">"]
"""The outcome subjects of TOCSIN_OUT: what the recorder logs."""

OUT_SUBJECTS = [
    DELIVERED,
    DELIVERY_FAILED,
    REJECTED,
    ATTEMPTS_PREFIX + ">",
    SUPERSEDED_PREFIX + ">",
]

DELIVERED_SEQ_TTL = 30 * 86400.0
"""Seconds a receiver's record of its latest notification per fingerprint is kept after
its last write (as long as TOCSIN_OUT keeps outcomes): far longer than any retry runs."""


def stream_configs(replicas: int = 1) -> list[js_api.StreamConfig]:
    """The three streams of DESIGN.md section 3 and the anchor's, each kept in
    ``replicas`` copies (3 on a three-node cluster). Inbound uses interest retention
    with discard-new: a message leaves only once the router acked it, and a full stream
    refuses publishers instead of silently dropping (critical alerts are never
    discarded by limits). The anchor keeps the last head of each log (one message a
    subject), and refuses deleting or purging it: only a newer head replaces it."""
    return [
        js_api.StreamConfig(
            name=STREAM_IN,
            subjects=list(INBOUND_SUBJECTS),
            retention=js_api.RetentionPolicy.INTEREST,
            discard=js_api.DiscardPolicy.NEW,
            storage=js_api.StorageType.FILE,
            max_bytes=1 << 30,
            duplicate_window=120.0,
            num_replicas=replicas,
        ),
        js_api.StreamConfig(
            name=STREAM_WORK,
            subjects=[ROUTE_PREFIX + ">"],
            retention=js_api.RetentionPolicy.WORK_QUEUE,
            discard=js_api.DiscardPolicy.NEW,
            storage=js_api.StorageType.FILE,
            duplicate_window=120.0,
            num_replicas=replicas,
        ),
        js_api.StreamConfig(
            name=STREAM_OUT,
            subjects=OUT_SUBJECTS,
            retention=js_api.RetentionPolicy.LIMITS,
            storage=js_api.StorageType.FILE,
            max_age=30 * DAY,
            duplicate_window=120.0,
            num_replicas=replicas,
        ),
        js_api.StreamConfig(
            name=STREAM_ANCHOR,
            subjects=[ANCHOR_PREFIX + ">"],
            retention=js_api.RetentionPolicy.LIMITS,
            max_msgs_per_subject=1,
            storage=js_api.StorageType.FILE,
            deny_delete=True,
            deny_purge=True,
            # the server's default, said so that a started process finds the stream as
            # it wants it and does not update it (and say so) at every start
            duplicate_window=120.0,
            num_replicas=replicas,
        ),
    ]


def part_stream_config(replicas: int = 1) -> js_api.StreamConfig:
    """TOCSIN_PART (DESIGN.md section 17), made only when ``[partitions] count`` > 1:
    what the partitioners forward, under TOCSIN_IN's rules (interest retention with
    discard-new: a message leaves once its partition's router acked it, and a full
    stream refuses the partitioner, which then does not ack TOCSIN_IN: critical alerts
    are never discarded by limits). Its duplicate window drops a forward sent again."""
    inbound = stream_config(STREAM_IN, replicas)
    return js_api.StreamConfig(
        name=STREAM_PART,
        subjects=[PART_SUBJECTS],
        retention=inbound.retention,
        discard=inbound.discard,
        storage=inbound.storage,
        max_bytes=inbound.max_bytes,
        duplicate_window=inbound.duplicate_window,
        num_replicas=replicas,
    )


def router_consumer_config(ack_wait: float = 30.0, replicas: int = 1) -> js_api.ConsumerConfig:
    """The router's consumer on TOCSIN_IN. Its filters name every subject of the stream:
    without them nats-server would match less per message (~5% of W2's broker CPU), but
    nats-server 2.15.1 updating a consumer an earlier start made, filtered, to none stops
    counting its interest until a restart, and TOCSIN_IN (interest retention) then PubAcks
    every alert and discards it (docs/performance.md, "The broker's cost per event")."""
    return js_api.ConsumerConfig(
        durable_name=ROUTER_CONSUMER,
        filter_subjects=list(INBOUND_SUBJECTS),
        ack_policy=js_api.AckPolicy.EXPLICIT,
        ack_wait=ack_wait,
        max_ack_pending=20_000,
        max_deliver=-1,
        max_waiting=16,
        num_replicas=replicas,
    )


def partitioner_consumer_config(ack_wait: float = 30.0, replicas: int = 1) -> js_api.ConsumerConfig:
    """The partitioners' shared consumer on TOCSIN_IN, in place of the router's when
    ``[partitions] count`` > 1: however many run, each message goes to one of them."""
    return dataclasses.replace(
        router_consumer_config(ack_wait, replicas), durable_name=PARTITIONER_CONSUMER
    )


def partition_router_consumer_config(
    partition: int, ack_wait: float = 30.0, replicas: int = 1
) -> js_api.ConsumerConfig:
    """The router of ``partition``'s consumer on TOCSIN_PART: its subject alone."""
    return dataclasses.replace(
        router_consumer_config(ack_wait, replicas),
        durable_name=router_consumer(partition),
        filter_subjects=[part_subject(partition)],
    )


def recorder_consumer_config(
    ack_wait: float = 30.0, replicas: int = 1, partition: int | None = None
) -> js_api.ConsumerConfig:
    """The recorder's consumer on TOCSIN_OUT (one per partition: each reads every
    outcome and logs its own, see ``core.partition.is_ours``)."""
    return js_api.ConsumerConfig(
        durable_name=recorder_consumer(partition),
        filter_subjects=OUTCOMES,
        ack_policy=js_api.AckPolicy.EXPLICIT,
        ack_wait=ack_wait,
        max_ack_pending=20_000,
        max_deliver=-1,
        max_waiting=16,
        num_replicas=replicas,
    )


def audit_consumer_config(replicas: int = 1) -> js_api.ConsumerConfig:
    """The auditors' durable *pull* consumer on TOCSIN_OUT (the audit subjects only).
    tocsin makes it so that auditors need not, and may not, create consumers: NATS
    cannot refuse a push consumer by permissions (push or pull is in the request's
    body, and the server publishes to any deliver subject its creator names), so the
    auditor role is only allowed to pull from and ack this one
    (deploy/nats/accounts.conf)."""
    return js_api.ConsumerConfig(
        durable_name=AUDIT_CONSUMER,
        filter_subjects=list(AUDIT_SUBJECTS),
        ack_policy=js_api.AckPolicy.EXPLICIT,
        max_ack_pending=10_000,
        max_deliver=-1,
        max_waiting=16,
        num_replicas=replicas,
    )


def deliver_consumer_config(
    receiver: str, send_timeout: float, ack_wait: float = 30.0, replicas: int = 1
) -> js_api.ConsumerConfig:
    """Pending work waits in the stream, not in a worker's memory; ``ack_wait`` outlasts
    a send (longer holds send +WPI). Attempts are counted by tocsin, not capped here."""
    return js_api.ConsumerConfig(
        durable_name=deliver_consumer(receiver),
        filter_subject=route_subject(receiver),
        ack_policy=js_api.AckPolicy.EXPLICIT,
        ack_wait=max(ack_wait, send_timeout + 5.0),
        max_ack_pending=10_000,
        max_deliver=-1,
        max_waiting=64,
        num_replicas=replicas,
    )


async def ensure_streams(
    js: JetStreamContext,
    replicas: int = 1,
    ack_wait: float = 30.0,
    patience: float = SETUP_PATIENCE,
    partitions: int = 1,
) -> None:
    """Create the streams, or update them to this version's config (JetStream moves an
    existing stream to a new replica count), TOCSIN_IN's router consumer with its
    stream (``ensure_inbound``), and the auditors' pull consumer on TOCSIN_OUT. Safe
    when several tocsin processes start at once: whoever loses the race to create finds
    the stream, and updates it only if its config differs. With ``partitions`` > 1,
    TOCSIN_IN is made with the partitioners' consumer, and TOCSIN_PART with each
    partition's router consumer."""
    await ensure_inbound(js, replicas, ack_wait, patience, partitions)
    for partition in range(partitions) if partitions > 1 else ():
        await ensure_partition(js, partition, replicas, ack_wait, patience)
    for config in stream_configs(replicas):
        if config.name != STREAM_IN:
            await _until_answered(
                functools.partial(_ensure_stream, js, config), f"stream {config.name}", patience
            )
    await ensure_consumer(js, STREAM_OUT, audit_consumer_config(replicas), patience)
    await _until_answered(
        functools.partial(_ensure_delivered_seq, js, replicas),
        f"key-value bucket {DELIVERED_SEQ_BUCKET}",
        patience,
    )


def delivered_seq_config(replicas: int = 1) -> js_api.KeyValueConfig:
    """The bucket of the latest notification each receiver accepted per fingerprint
    (``core/policy/order.py``): one value per key, kept ``DELIVERED_SEQ_TTL``."""
    return js_api.KeyValueConfig(
        bucket=DELIVERED_SEQ_BUCKET,
        history=1,
        ttl=DELIVERED_SEQ_TTL,
        storage=js_api.StorageType.FILE,
        replicas=replicas,
    )


async def _ensure_delivered_seq(js: JetStreamContext, replicas: int) -> None:
    """Create the bucket unless it exists (its records are kept as they are)."""
    try:
        await js.key_value(DELIVERED_SEQ_BUCKET)
    except BucketNotFoundError:
        try:
            await js.create_key_value(delivered_seq_config(replicas))
            log.info("created key-value bucket %s", DELIVERED_SEQ_BUCKET)
        except BadRequestError:
            log.info("key-value bucket %s was created meanwhile", DELIVERED_SEQ_BUCKET)


async def ensure_inbound(
    js: JetStreamContext,
    replicas: int = 1,
    ack_wait: float = 30.0,
    patience: float = SETUP_PATIENCE,
    partitions: int = 1,
    repair_stale: bool = False,
) -> None:
    """TOCSIN_IN and the router's consumer, together. The stream keeps a message only
    while a consumer is interested in it: without the router's consumer nats-server
    PubAcks an alert and discards it at once. So whoever creates the stream (``tocsin
    deliver`` as much as the router) creates the consumer with it, and the router does
    both again when it finds its consumer gone (``repair_stale``: the stream created
    again is checked fresh, ``_create_stream``). Partitioned, the consumer is the
    partitioners' (a router's consumer there would hold every message for ever)."""
    consumer = (
        partitioner_consumer_config(ack_wait, replicas)
        if partitions > 1
        else router_consumer_config(ack_wait, replicas)
    )
    await ensure_stream_with_consumer(
        js, stream_config(STREAM_IN, replicas), consumer, patience, repair_stale
    )


async def ensure_partition(
    js: JetStreamContext,
    partition: int,
    replicas: int = 1,
    ack_wait: float = 30.0,
    patience: float = SETUP_PATIENCE,
) -> None:
    """TOCSIN_PART and the consumer of ``partition``'s router, together (as TOCSIN_IN's:
    without it, what is forwarded to the partition would be discarded at once)."""
    await ensure_stream_with_consumer(
        js,
        part_stream_config(replicas),
        partition_router_consumer_config(partition, ack_wait, replicas),
        patience,
    )


async def ensure_outcomes(
    js: JetStreamContext,
    replicas: int = 1,
    ack_wait: float = 30.0,
    patience: float = SETUP_PATIENCE,
    partition: int | None = None,
    repair_stale: bool = False,
) -> None:
    """TOCSIN_OUT and the recorder's consumer, together: what the recorder does again
    when it finds its consumer gone (``repair_stale`` as ``ensure_inbound``'s)."""
    await ensure_stream_with_consumer(
        js,
        stream_config(STREAM_OUT, replicas),
        recorder_consumer_config(ack_wait, replicas, partition),
        patience,
        repair_stale,
    )


async def ensure_stream_with_consumer(
    js: JetStreamContext,
    stream: js_api.StreamConfig,
    consumer: js_api.ConsumerConfig,
    patience: float = SETUP_PATIENCE,
    repair_stale: bool = False,
) -> None:
    """Create or update ``stream``, then its durable ``consumer``; ``repair_stale`` as
    ``_create_stream``'s."""
    name = stream.name or ""
    await _until_answered(
        functools.partial(_ensure_stream, js, stream, repair_stale), f"stream {name}", patience
    )
    await ensure_consumer(js, name, consumer, patience)


def stream_config(name: str, replicas: int = 1) -> js_api.StreamConfig:
    """The config of one of the streams."""
    [config] = [c for c in stream_configs(replicas) if c.name == name]
    return config


async def ensure_consumer(
    js: JetStreamContext,
    stream: str,
    config: js_api.ConsumerConfig,
    patience: float = SETUP_PATIENCE,
) -> None:
    """Create the durable consumer, or update it (creating one that exists with the same
    config is a no-op)."""

    async def create() -> None:
        await js.add_consumer(stream, config)

    await _until_answered(create, f"consumer {config.durable_name} of {stream}", patience)


class StaleStreamError(RuntimeError):
    """nats-server created a stream holding what an earlier one of its name stored, and
    tocsin would not delete it (it holds messages) or it came back so every time."""


STORE_NOT_CREATED = 10049
"""JetStream's error code for "error creating store for stream"."""

NO_SUITABLE_PEERS = 10005
"""JetStream's error code for "no suitable peers for placement": fewer servers it can
place the stream's replicas on than it has replicas."""


class PlacementRefusedError(RuntimeError):
    """JetStream found too few servers to place a stream's replicas on. A cluster still
    forming answers so for a moment (seen: a router's R3 create refused, "peer offline",
    right after the three nodes agreed on a meta leader), so the create is asked again,
    for the setup's patience; a cluster with fewer nodes than ``replicas`` answers so
    for ever, and this error then says what to check."""

    def __init__(self, name: str, replicas: int, description: str) -> None:
        super().__init__(
            f"stream {name}: JetStream found no {replicas} server(s) to place its replicas "
            f"on ({description}): a cluster still forming, nodes down, or [nats] replicas "
            "(TOCSIN_NATS_REPLICAS) higher than the cluster's nodes"
        )


STALE_ATTEMPTS = 5
"""How many times a stream created stale is deleted and created again before tocsin
gives up (the delete it raced takes milliseconds to finish: a few attempts suffice)."""


def is_stale(state: js_api.StreamState) -> bool:
    """A stream just created cannot have stored anything: a sequence already used means
    nats-server re-created it over a deletion still under way (it removes the stream's
    name first, its subscriptions and store directory after), recovering the deleted
    stream's store, which that deletion then tears down: such a stream may never ingest
    (no PubAck for anything published to it)."""
    return state.last_seq > 0


async def _create_stream(
    js: JetStreamContext, config: js_api.StreamConfig, repair_stale: bool
) -> None:
    """Create ``config``'s stream, and make sure it is fresh: one created stale
    (``is_stale``) is deleted, if it holds no message and no consumer, and created again
    after a pause; a create refused because the store could not be made (the same race,
    seen a moment later: the deletion removing the directory the create opens) is asked
    again. At most ``STALE_ATTEMPTS`` times; then the last refusal, or
    ``StaleStreamError`` if the stream stays stale or holds messages (never deleted: the
    error is logged and raised, so that whoever creates it reports it, /readyz not
    ready, and asks again later).

    Only with ``repair_stale``: a stream created again by the one process that consumes
    it, having seen it deleted (the router's TOCSIN_IN, the recorder's TOCSIN_OUT in
    ``tocsin serve``). Elsewhere several processes may create the stream at once, and
    JetStream answers a create of a stream that exists with the same config with that
    stream, its messages and sequences: not stale, someone else's. There a stale-looking
    answer is only logged."""
    name = config.name or ""
    backoff = Backoff(first=0.05, ceiling=1.0)
    for attempt in range(1, STALE_ATTEMPTS + 1):
        try:
            state = (await js.add_stream(config)).state
        except ServerError as error:
            if error.err_code != STORE_NOT_CREATED or attempt == STALE_ATTEMPTS:
                raise
            delay = backoff.next()
            log.warning(
                "stream %s: nats-server could not create its store (%s: its deletion is "
                "still under way?); asking again in %.2fs (attempt %d of %d)",
                name,
                error.description,
                delay,
                attempt,
                STALE_ATTEMPTS,
            )
            await asyncio.sleep(delay)
            continue
        if not is_stale(state):
            log.info("created stream %s (%s replica(s))", name, config.num_replicas or 1)
            return
        if not repair_stale:
            log.warning(
                "stream %s: created, or created meanwhile by another process, with seqs "
                "used already (first_seq %d, last_seq %d, %d message(s)); if nothing else "
                "created it, nats-server gave it a deleted stream's state and it may not "
                "ingest: restart nats-server",
                name,
                state.first_seq,
                state.last_seq,
                state.messages,
            )
            return
        if state.messages > 0 or attempt == STALE_ATTEMPTS:
            break
        # Read again just before deleting: a stream that stored, or has a consumer, or
        # moved on since the create's answer is live (someone else's): leave it.
        now = (await js.stream_info(name)).state
        if now.messages or now.consumer_count or now.last_seq != state.last_seq:
            log.info("stream %s is live (someone else's, created meanwhile): kept", name)
            return
        delay = backoff.next()
        log.warning(
            "created stream %s, but nats-server gave it a deleted stream's state "
            "(first_seq %d, last_seq %d, no message: its deletion was still under way, "
            "and such a stream may never ingest); deleting it and creating it again in "
            "%.2fs (attempt %d of %d)",
            name,
            state.first_seq,
            state.last_seq,
            delay,
            attempt,
            STALE_ATTEMPTS,
        )
        with contextlib.suppress(NotFoundError):  # deleted by someone else meanwhile
            await js.delete_stream(name)
        await asyncio.sleep(delay)
    why = "it holds messages" if state.messages else f"stale {STALE_ATTEMPTS} times"
    stale = StaleStreamError(
        f"stream {name} was created with a deleted stream's state (first_seq "
        f"{state.first_seq}, last_seq {state.last_seq}, {state.messages} message(s)) and "
        f"left as it is ({why}); it may not ingest: restart nats-server, or delete the "
        "stream once it is empty"
    )
    log.error("%s", stale)
    raise stale


async def _ensure_stream(
    js: JetStreamContext, config: js_api.StreamConfig, repair_stale: bool = False
) -> None:
    name = config.name or ""
    try:
        info = await js.stream_info(name)
    except NotFoundError:
        try:
            await _create_stream(js, config, repair_stale)
            return
        except BadRequestError as error:
            if error.err_code == NO_SUITABLE_PEERS:
                replicas = config.num_replicas or 1
                raise PlacementRefusedError(name, replicas, error.description or "") from error
            log.info("stream %s was created meanwhile", name)
            info = await js.stream_info(name)
    if not _covers(info.config, config):
        await js.update_stream(config)
        log.info("updated stream %s to this version's config", name)


def _covers(existing: js_api.StreamConfig, wanted: js_api.StreamConfig) -> bool:
    """Every field tocsin sets has the value it wants (the server fills in the rest)."""
    have = existing.as_dict()
    return all(have.get(key) == value for key, value in wanted.as_dict().items())


async def _until_answered(step: Callable[[], Awaitable[None]], what: str, patience: float) -> None:
    """Run ``step`` again while JetStream gives no answer in time or says it is busy.

    On a cluster, a stream or consumer that several processes create at once can leave
    requests unanswered while its Raft group forms (measured: every one of three
    concurrent starts timed out), and a leader election does the same for seconds.
    Every step is idempotent, so asking again is safe. A stream's placement refused
    (``PlacementRefusedError``) is asked again too: a forming cluster refuses for a
    moment."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    backoff = Backoff(first=0.25, ceiling=2.0)
    while True:
        try:
            await step()
            return
        except (NatsTimeout, ServiceUnavailableError, PlacementRefusedError) as error:
            delay = backoff.next()
            if loop.time() + delay > deadline:
                raise
            log.info(
                "%s: JetStream did not answer (%s); asking again in %.2fs",
                what,
                error if isinstance(error, PlacementRefusedError) else type(error).__name__,
                delay,
            )
            await asyncio.sleep(delay)
