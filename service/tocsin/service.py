"""Running tocsin: the parts of DESIGN.md section 2 started, watched and stopped together.

``serve`` = router + recorder + clock + HTTP (+ embedded NATS when no URL is given) +
the delivery workers in its own process (unless ``[delivery] in_serve`` is off), and
the delivery workers again in ``[delivery] processes`` children (the ``deliver`` part,
supervised by ``pipeline/supervisor.py``), all pulling from the same consumers;
``router`` and ``deliver`` run the same parts as separate processes.

``run`` is the sequence: check the options (``Plan``) and learn the secrets; set up
observability (``Running``, which holds whatever is opened from then on); serve the
probes, find NATS, open the log, serve the API; connect; build the parts (``Part``),
ensure the streams and their consumers, take up the log; start the parts; wait; stop
in order (intake, then delivery, then the rest: ``Phase``); release. ``Options`` are
the inputs and are never changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import os
import resource
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig

from tocsin import __version__
from tocsin.api.context import ApiContext, LiveFeed, Readiness
from tocsin.bus.connection import connect, connect_options
from tocsin.bus.embedded import EmbeddedNats, resolve_nats_url
from tocsin.bus.publisher import Publisher
from tocsin.bus.streams import (
    deliver_consumer_config,
    ensure_consumer,
    ensure_outcomes,
    ensure_partition,
    ensure_streams,
    partition_router_consumer_config,
    recorder_consumer_config,
    router_consumer_config,
)
from tocsin.channels import Channel, ChannelConfigError, ChannelEnv
from tocsin.config import Config, for_partition, with_partitions
from tocsin.config import load as load_config
from tocsin.core import events as ev
from tocsin.core.anchor import Head, head_of
from tocsin.core.errors import ConfigError
from tocsin.core.partition import marked
from tocsin.core.policy.processes import (
    delivered_in_serve,
    delivery_processes,
    quota_files,
    usable_cores,
)
from tocsin.core.state import State
from tocsin.core.subjects import (
    STREAM_IN,
    STREAM_OUT,
    STREAM_PART,
    STREAM_WORK,
    anchor_subject,
    delivery_status_subject,
    recorder_consumer,
    router_consumer,
)
from tocsin.observability.redact import Secrets, display_url, nats_url_secrets, secrets_of
from tocsin.observability.telemetry import Metrics, watch_consumers
from tocsin.observability.tracing import Tracing, TracingConfigError
from tocsin.pipeline.delivery import ReceiverWorker
from tocsin.pipeline.reload import WorkerReloader, file_of
from tocsin.pipeline.supervisor import STOP_PATIENCE, ChildCommand, Link, Supervisor
from tocsin.store.lock import WriterLock

# What only the process that holds the log runs (the router, the recorder, the clock,
# the outbox, the store) is imported where it is made: a delivery child (``tocsin
# deliver``, serve's children) never holds those modules (issue #20's RSS target).
if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from tocsin.api.app import EmbeddedServer
    from tocsin.bus.anchor import Anchor
    from tocsin.pipeline.compactor import Compactor
    from tocsin.pipeline.outbox import Outbox
    from tocsin.pipeline.reload import Reloader
    from tocsin.store.ledger import Ledger
    from tocsin.store.partitioned import PartitionedLog
    from tocsin.store.reader import LogReader

log = logging.getLogger("tocsin.service")


@dataclass(frozen=True)
class Options:
    """What ``run`` is asked to do: inputs only, never changed by it (what it builds
    while it runs is a ``Running``)."""

    data_dir: Path
    config: Config
    nats_url: str | None = None
    http: str | None = "127.0.0.1:8080"
    health: str | None = None  # router/deliver --health: the probes and /metrics only
    run_router: bool = True
    run_delivery: bool = True
    receivers: list[str] | None = None
    embedded_nats: bool = False
    handle_signals: bool = True
    api_token: str | None = None  # TOCSIN_API_TOKEN
    # The caller's handle: setting it stops the service (which sets it too, when a part
    # fails, so that the others stop).
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    # Observability: spans go to this provider (else to OTLP per OTEL_*, else nowhere);
    # known secrets are masked in logs, errors and spans (the service adds those it
    # learns to the caller's set); consumer pending counts are polled this often for
    # /metrics.
    tracer_provider: TracerProvider | None = None
    secrets: Secrets = field(default_factory=Secrets)
    consumer_poll_seconds: float = 5.0
    # ``router --partition k`` (DESIGN.md section 17): the router of partition k reads
    # TOCSIN_PART; its log is the one in ``data_dir`` (``<data-dir>/p<k>``, see cli).
    partition: int | None = None
    # ``serve``: its delivery workers in this many child processes (None: ``[delivery]
    # processes``, whose default is one per spare core; 0: in this process). The
    # children log as ``log_flags`` (``--log-level``, ``--log-format``) say. A child
    # started so is given ``link_fd``, its end of the link to its parent.
    delivery_processes: int | None = None
    log_flags: tuple[str, ...] = ()
    link_fd: int | None = None
    dashboard: str | None = None  # the link notifications carry, when not ``http``'s

    @property
    def partitioned(self) -> bool:
        """``serve`` with ``[partitions] count`` above 1 (``--partitions N``, DESIGN.md
        section 17): the router of each partition runs as a child process, a
        partitioner and the API (over every partition's log) in this one."""
        return (
            self.run_router
            and self.run_delivery
            and self.partition is None
            and self.config.partitions.count > 1
        )


@dataclass(frozen=True)
class Plan:
    """What the options come to once checked. Everything that can be refused as bad
    usage or bad config (exit 2) is refused while making it, before anything starts."""

    receivers: list[str]  # those asked for (--receiver), else every configured one
    http_address: tuple[str, int] | None  # the API's
    health_address: tuple[str, int] | None  # the probes' alone (router/deliver --health)
    exposed: bool  # the API listens beyond loopback: reads need the token too
    channels: dict[str, Channel]  # the receivers this process delivers to
    login: dict[str, Any]  # nats-py's keyword arguments for ``[nats]``
    processes: int  # delivery children to run (``serve``), or 0: delivery here
    routers: int = 0  # ``serve --partitions N``: N router children, one per partition
    cores: int | None = None  # the machine's that this process may use (``machine_cores``)


@dataclass
class Running:
    """What a running service holds, filled in while it starts; ``release`` lets go of
    whatever of it was opened, however far the start got."""

    tracing: Tracing
    readiness: Readiness
    metrics: Metrics
    api: ApiContext
    writer_lock: WriterLock
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)  # servers and parts
    servers: list[EmbeddedServer] = field(default_factory=list)  # the API, or the probes alone
    embedded: EmbeddedNats | None = None
    ledger: Ledger | None = None  # set once open: the running service's single writer
    reader: LogReader | None = None
    outbox: Outbox | None = None  # where the log is: owed work items and their relay
    compactor: Compactor | None = None  # where the log is: ``tocsin compact``, retention
    anchor: Anchor | None = None  # where the log is: publishes its chain head to NATS
    reloader: Reloader | None = None  # where the log is: SIGHUP, POST /-/reload, tocsin reload
    reloads: set[asyncio.Task[Any]] = field(default_factory=set)  # SIGHUP's, under way
    nats_url: str = ""  # as found, credentials included: the delivery children's
    supervisor: Supervisor | None = None  # serve's delivery children, when it has any
    delivered_here: list[str] = field(default_factory=list)  # receivers with a worker here
    routers: Supervisor | None = None  # serve --partitions N: the partitions' routers
    partitions: PartitionedLog | None = None  # serve --partitions N: their logs as one
    # Each phase's parts stop when its event is set, in ``Phase`` order.
    stops: dict[Phase, asyncio.Event] = field(default_factory=dict)
    phased: list[tuple[Phase, asyncio.Task[Any]]] = field(default_factory=list)


class Phase(IntEnum):
    """When a part stops: the intake first (the router and the clock: no new facts,
    and the API's doors close with them), then delivery (workers finish their sends in
    flight; serve's children drain and exit), then the rest (the recorder logs their
    last outcomes; the outbox, the anchor, the watchers)."""

    INTAKE = 0
    DELIVERY = 1
    REST = 2


@dataclass(frozen=True)
class Part:
    """One of the loops the service runs from ``start_parts`` until its phase's stop is
    set: the router, the recorder, a receiver's delivery worker (or the supervisor of
    the children that run them), the consumers' watcher. ``run(stop)`` returns once
    ``stop`` is set; one that ends before stops the service (exit 1, logged, if it
    raised). ``consumers`` are the durable consumers, by stream, it (or its children)
    pulls from: created or updated before any part starts, and watched for /metrics.
    ``phase``: when it is stopped (``Phase``)."""

    run: Callable[[asyncio.Event], Coroutine[Any, Any, None]]
    consumers: tuple[tuple[str, ConsumerConfig], ...] = ()
    phase: Phase = Phase.REST

    @property
    def watched(self) -> list[tuple[str, str]]:
        """(stream, durable name) of its consumers, whose pending counts /metrics shows."""
        return [(s, c.durable_name) for s, c in self.consumers if c.durable_name is not None]


@dataclass(frozen=True)
class Broker:
    """The NATS connection and what the service makes of it."""

    nc: NATS
    js: JetStreamContext
    publisher: Publisher
    shown: str  # the server's URL as logs and /readyz may show it


async def run(options: Options, on_start: Callable[[Running], None] | None = None) -> int:
    """Run until SIGINT/SIGTERM or ``options.stop``; returns the exit code: 0, or 1 when a
    part failed. Bad usage or config raises ``ConfigError`` (``cli`` exits 2). ``on_start``
    is handed the ``Running`` as soon as it exists, for a caller that reads the running
    parts (the tests read the ledger)."""
    catch_signals(options)
    plan = check(options)
    allow_open_files()
    learn_secrets(options)
    running = observe(options, plan)
    if on_start is not None:
        on_start(running)
    try:
        options.data_dir.mkdir(parents=True, exist_ok=True)
        take_the_writer_lock(options, running)
        serve_probes(plan, running)
        url = await find_nats(options, plan, running)
        await open_log(options, running)
        await follow_partitions(options, running)
        serve_api(plan, running)
        broker = await connect_nats(url, plan, options.stop, running)
        if broker is None:
            return await stop_unconnected(running)
        parts = build_parts(options, plan, running, broker)
        await prepare_streams_and_consumers(broker, options.config, parts, running)
        await take_up_the_log(options.config, running, broker, options.partition)
        await command_partitions(options, running, broker)
        start_parts(parts, options, plan, running, broker)
        code = await wait_for_stop(options.stop, running)
        await stop_in_order(options.stop, running, broker)
        return code
    finally:
        await release(running)


def catch_signals(options: Options) -> None:
    """SIGINT and SIGTERM set ``stop``. First of all, so that from here on a signal
    stops the service in order (``cli`` stops a process that has not got this far)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM) if options.handle_signals else ():
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, options.stop.set)


def check(options: Options) -> Plan:
    """Refuse bad usage and bad config before anything is opened or started: unknown
    receivers, malformed addresses, an API open to the network without a token, a
    receiver whose channel cannot be built, a NATS login that cannot be loaded."""
    config = options.config
    count = config.partitions.count
    if options.run_router and count > 1 and options.partition is None:
        if not options.run_delivery:
            raise ConfigError(
                f"partitions.count: is {count}: run `tocsin router --partition K` for each"
                f" partition K (0 to {count - 1}) behind `tocsin partition`"
            )
        if config.source == "inline":
            raise ConfigError(
                f"partitions.count: is {count}, and the routers of the partitions, child "
                "processes, read the config file: this config was given inline"
            )
    receivers = options.receivers or sorted(config.receivers)
    for name in receivers:
        if name not in config.receivers:
            raise ConfigError(
                f"--receiver: unknown receiver {name!r}; "
                f"configured: {', '.join(sorted(config.receivers))}"
            )
    http_address = split_host_port(options.http) if options.http else None
    health_address = split_host_port(options.health, "TOCSIN_HEALTH") if options.health else None
    if http_address is not None:
        check_listenable(http_address, "TOCSIN_HTTP")
    if health_address is not None:
        check_listenable(health_address, "TOCSIN_HEALTH")
    exposed = http_address is not None and not is_loopback(http_address[0])
    if exposed and not options.api_token:
        raise ConfigError(
            f"TOCSIN_HTTP: {options.http} is not a loopback address; set TOCSIN_API_TOKEN "
            "so that the API is not open to the network (or bind 127.0.0.1)"
        )
    dashboard = dashboard_url(options)
    channels = (
        build_channels(config, receivers, dashboard, config.delivery.concurrency)
        if options.run_delivery
        else {}
    )
    login = connect_options(config.nats_login)  # a bad certificate stops us here, exit 2
    cores = machine_cores()
    processes = delivery_children(options, cores)
    routers = count if options.partitioned else 0
    return Plan(
        receivers,
        http_address,
        health_address,
        exposed,
        channels,
        login,
        processes,
        routers,
        cores,
    )


def delivery_children(options: Options, cores: int | None) -> int:
    """How many delivery children ``serve`` runs (``core.policy.processes``). They read
    the config as this process did, from its file or the environment: a config given
    inline (the tests') has nothing for them to read, so it delivers here unless told
    otherwise, which is refused."""
    if not (options.run_router and options.run_delivery):
        return 0  # router and deliver are one part each
    configured = options.delivery_processes
    if configured is None:
        configured = options.config.delivery.processes
    if options.config.source == "inline":
        if configured:
            raise ConfigError(
                "delivery.processes: delivery children read the config file, and this "
                "config was given inline; use 0"
            )
        return 0
    return delivery_processes(configured, cores)


CGROUPS = Path("/sys/fs/cgroup")  # where the cgroup file systems are mounted
SELF_CGROUP = Path("/proc/self/cgroup")  # the cgroups this process is in


def cpu_quotas(cgroups: Path = CGROUPS, self_cgroup: Path = SELF_CGROUP) -> list[str]:
    """The CPU quotas that cap this process (``core.policy.processes.quota_files``),
    each as ``usable_cores`` reads it, its own cgroup's first; those not there are
    left out."""
    try:
        listed = self_cgroup.read_text()
    except OSError:  # not Linux, or no /proc: the roots' files only
        listed = ""
    quotas = []
    for files in quota_files(listed):
        try:
            quotas.append(" ".join((cgroups / name).read_text().strip() for name in files))
        except OSError:
            continue
    return quotas


def machine_cores(cgroups: Path = CGROUPS, self_cgroup: Path = SELF_CGROUP) -> int | None:
    """The cores this process may keep busy (``core.policy.processes.usable_cores``): its
    CPU affinity, capped by the CPU quota of its cgroup and of every cgroup above it (a
    container's limit, a systemd service's ``CPUQuota=``)."""
    try:
        cores: int | None = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on every platform
        cores = os.cpu_count()
    for quota in cpu_quotas(cgroups, self_cgroup):
        cores = usable_cores(cores, quota)
    return cores


def allow_open_files() -> None:
    """Raise this process's soft limit of open files to its hard limit, as Go programs
    do at start: every send under way holds a connection of its own (``[delivery]
    concurrency`` of them per receiver and process), and the soft limit many systems
    give a service (1,024, systemd's) is below what a storm to a few dozen receivers
    opens at once."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 16)
        if soft != resource.RLIM_INFINITY and soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            log.info("open files limit raised from %d to %d (the hard limit)", soft, wanted)
    except (ValueError, OSError) as error:  # a sandbox may refuse: run with what there is
        log.warning("could not raise the open files limit: %s", error)


def learn_secrets(options: Options) -> None:
    """Add the configuration's credentials to the caller's ``secrets``, which the log
    handler masks: before the first log line, span or error that could carry one."""
    config = options.config
    secrets = options.secrets
    secrets.add(
        secrets_of(config.receivers, config.smtp.password if config.smtp else None, os.environ)
    )
    if options.api_token:
        secrets.add([options.api_token])
    nats_login = config.nats_login
    secrets.add([s.reveal() for s in (nats_login.password, nats_login.token) if s is not None])


def observe(options: Options, plan: Plan) -> Running:
    """Tracing, readiness and metrics, and the ``Running`` that carries them: everything
    from here on reports through them. A bad ``OTEL_*`` setting is bad config (exit 2)."""
    if options.tracer_provider is not None:
        tracing = Tracing(options.tracer_provider)
    else:
        try:
            tracing = Tracing.from_environment(os.environ)
        except TracingConfigError as error:
            raise ConfigError(str(error)) from error
    readiness = Readiness()
    metrics = Metrics()
    metrics.observe(
        "tocsin_ready",
        "1 when /readyz answers 200, else 0",
        lambda: 0.0 if readiness.reason else 1.0,
    )
    api = ApiContext(
        state=State,
        readiness=readiness,
        metrics=metrics,
        token=options.api_token or None,
        live=LiveFeed(notify=options.config.dashboard.notify),
    )
    api.protect_reads = plan.exposed
    return Running(tracing, readiness, metrics, api, WriterLock(options.data_dir))


def serve_probes(plan: Plan, running: Running) -> None:
    """``router``/``deliver --health``: the probes and /metrics. Up first, so that a
    liveness probe is answered during a long rebuild."""
    if plan.health_address is None:
        return
    from tocsin.api.app import create_probe_app, http_server  # only a process that serves

    running.servers.append(http_server(create_probe_app(running.api), *plan.health_address))
    running.tasks.append(asyncio.create_task(running.servers[-1].serve(), name="health"))


async def find_nats(options: Options, plan: Plan, running: Running) -> str:
    """The URL to connect to: the embedded server's when ``serve`` was given none
    (started here, before the log, and stopped last), else the one given or written.
    Its credentials join the secrets before anything logs it."""
    url = options.nats_url
    if url is None and options.embedded_nats:
        running.readiness.stage = "starting the embedded NATS server"
        running.embedded = EmbeddedNats(options.data_dir, cores=plan.cores)
        url = await running.embedded.start()
    url = running.nats_url = resolve_nats_url(url, options.data_dir)
    options.secrets.add(nats_url_secrets(url))
    return url


def take_the_writer_lock(options: Options, running: Running) -> None:
    """The router's process takes the log's lock before anything else touches the data
    dir: a second tocsin on the same dir is refused (exit 2) having started nothing, so
    it cannot start a second nats-server on the live store or disturb ``nats.url``."""
    if not options.run_router:
        return
    writer_lock = running.writer_lock
    if not writer_lock.acquire():
        raise ConfigError(
            f"--data-dir: another tocsin already writes the log in {options.data_dir} "
            f"({writer_lock.path} is locked); one router per log"
        )


async def open_log(options: Options, running: Running) -> None:
    """The router's process takes the writer's lock and rebuilds the projection from the
    log, before NATS: nothing is consumed until the state it is decided against is
    whole. The API, the live feed and /metrics read the ledger from here on."""
    if not options.run_router or options.partitioned:
        return
    from tocsin.store.eventlog import db_path
    from tocsin.store.ledger import Ledger
    from tocsin.store.reader import LogReader

    readiness, metrics, api = running.readiness, running.metrics, running.api
    readiness.stage = "rebuilding projections from the log"
    ledger = running.ledger = await Ledger.open(
        db_path(options.data_dir), snapshot_every=options.config.log.snapshot_every
    )
    readiness.checks.append(lambda: ledger.problem)
    ledger.listeners.append(metrics.count_committed)
    live_feed = api.live

    def tell_live_feed(facts: list[ev.Event], state: State) -> None:
        # The projection may already hold the next batch, still committing; the
        # feed promises only what a reader of the file can see.
        live_feed.committed(facts, state, seq=ledger.event_log.last_seq)

    ledger.listeners.append(tell_live_feed)
    api.live.last_seq = ledger.event_log.last_seq
    running.reader = api.reader = await LogReader.open(db_path(options.data_dir))
    api.state = lambda: ledger.state
    api.alert_index = ledger.alert_index
    metrics.observe(
        "tocsin_log_last_seq",
        "seq of the last event in the log",
        lambda: float(ledger.event_log.last_seq),
    )
    metrics.observe(
        "tocsin_projection_rebuild_seconds",
        "time the projection took to rebuild at start",
        lambda: ledger.rebuild_seconds,
    )
    metrics.observe(
        "tocsin_log_size_bytes",
        "bytes of the SQLite log on disk (database and write-ahead log)",
        lambda: float(ledger.size_bytes()),
    )
    metrics.observe(
        "tocsin_alerts_open",
        "alerts firing now (opened and not resolved)",
        lambda: float(len(ledger.state.open_by_fingerprint)),
    )


async def follow_partitions(options: Options, running: Running) -> None:
    """``serve --partitions N``: the API, the dashboard and /metrics read the
    partitions' logs as one (``store.partitioned``), each followed as its router (a
    child) commits; read-your-writes for the API's commands (``RemoteControl``)."""
    if not options.partitioned:
        return
    from tocsin.store.partitioned import PartitionedLog

    running.readiness.stage = "reading the partitions' logs"
    partitions = running.partitions = PartitionedLog(
        options.data_dir, options.config.partitions.count
    )
    await partitions.open()
    api, live = running.api, running.api.live
    api.state = partitions.state
    api.reader = partitions
    api.partitions = partitions
    partitions.listeners.append(
        lambda facts, part: live.committed(facts, part, partitions.last_seq)
    )
    partitions.listeners.append(running.metrics.count_committed)
    live.last_seq = partitions.last_seq
    running.metrics.observe(
        "tocsin_alerts_open",
        "alerts firing now (opened and not resolved)",
        lambda: float(len(partitions.state().open_by_fingerprint)),
    )


def serve_api(plan: Plan, running: Running) -> None:
    """The HTTP API, once the log is open (it reads the projection; a process without
    the log shows an empty one) and before NATS answers, so that /readyz can say what
    the start waits for."""
    if plan.http_address is None:
        return
    api = running.api
    if running.ledger is None and running.partitions is None:
        empty = State()
        api.state = lambda: empty
    # Imported by a process that serves HTTP only: a delivery child spares the web
    # framework, the server and the templates (~30 MiB of its RSS).
    from tocsin.api.app import create_app, http_server
    from tocsin.api.dashboard import dashboard_pages

    running.servers.append(http_server(create_app(api, dashboard_pages(api)), *plan.http_address))
    running.tasks.append(asyncio.create_task(running.servers[-1].serve(), name="http"))


async def connect_nats(
    url: str, plan: Plan, stop: asyncio.Event, running: Running
) -> Broker | None:
    """Connect, or ``None`` when ``stop`` is set before NATS answers (an unreachable
    server is waited for, not an error). From here on /readyz also says when the
    connection is lost."""
    shown = display_url(url)  # what logs and /readyz may say of it
    running.readiness.stage = f"connecting to NATS at {shown}"
    log.info("connecting to NATS at %s", shown)
    connecting = asyncio.create_task(connect(url, name=f"tocsin-{__version__}", login=plan.login))
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait([connecting, stopped], return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if not connecting.done():
        connecting.cancel()
        log.info("stopped before NATS at %s answered", shown)
        return None
    nc = connecting.result()
    running.readiness.checks.append(
        lambda: None if nc.is_connected else f"disconnected from NATS at {shown}; reconnecting"
    )
    return Broker(nc, nc.jetstream(timeout=10), Publisher(nc), shown)


async def stop_unconnected(running: Running) -> int:
    """Stopped while connecting: only the servers run; let them finish (exit 0)."""
    close_doors(running)
    if running.tasks:  # router/deliver without --health run no server
        await asyncio.wait(running.tasks, timeout=10)
    return 0


def build_parts(options: Options, plan: Plan, running: Running, broker: Broker) -> list[Part]:
    """The loops this process runs, in the order they start: the router and the
    recorder where the log is, a delivery worker per receiver, and last the watcher of
    their consumers for /metrics. Another part (a clock, worker processes) goes in this
    list, before the watcher. Where the log is, its compactor keeps ``[log] retention``."""
    config = options.config
    nc, publisher = broker.nc, broker.publisher
    tracing, metrics, secrets = running.tracing, running.metrics, options.secrets
    ledger = running.ledger
    replicas = config.nats.replicas or 1
    k = options.partition
    if k is not None:  # what this router publishes says whose it is (``partition.marked``)
        publisher = Publisher(nc, marked(k))
    parts: list[Part] = []
    # Made below, after the reloader that is given them: a reload swaps their channels,
    # each rebuilt with the concurrency its worker was started with.
    workers: dict[str, ReceiverWorker] = {}
    rebuild = functools.partial(build_channel, dashboard_url(options), config.delivery.concurrency)
    if ledger is not None:
        from tocsin.bus.anchor import Anchor
        from tocsin.pipeline.clock import Clock
        from tocsin.pipeline.compactor import Compactor
        from tocsin.pipeline.control import Control
        from tocsin.pipeline.outbox import Outbox
        from tocsin.pipeline.recorder import Recorder
        from tocsin.pipeline.reload import Reloader
        from tocsin.pipeline.router import Router
        from tocsin.pipeline.status import CATCH_UP_PATIENCE, OutcomesRecorded

        # Work items leave through the outbox, which owes each until JetStream stores
        # it; its watermark rides in the router's and the recorder's batches, and its
        # relay publishes again what was committed but never stored.
        assert running.reader is not None
        outcomes = OutcomesRecorded(nc.jetstream(timeout=CATCH_UP_PATIENCE), recorder_consumer(k))
        outbox = running.outbox = Outbox(
            ledger, publisher, running.reader, outcomes.wait, receivers=config.receivers
        )
        metrics.observe(
            "tocsin_outbox_owed",
            "work items committed to the log and not yet stored by JetStream",
            lambda: float(outbox.owed),
        )
        # Each creates its consumer (and stream) again should it vanish, and says so to
        # /readyz until it is back.
        timers = Clock(
            Control(ledger, running.reader, outbox, receivers=config.receivers), ledger, config
        )
        ledger.snapshot_waits = timers.waits  # a flush due soon goes before a snapshot
        router = Router(
            nc,
            outbox,
            ledger,
            config,
            tracing,
            secrets,
            metrics,
            rider=outbox.ride,
            on_commit=timers.nudge,
            first=timers.serve_due,
            waits=timers.waits,
            **partition_input(config, k),
        )
        if k is None:
            inbound_consumer = router_consumer_config(config.nats.ack_wait, replicas)
            parts.append(Part(router.run, ((STREAM_IN, inbound_consumer),), Phase.INTAKE))
        else:
            consumer = partition_router_consumer_config(k, config.nats.ack_wait, replicas)
            parts.append(Part(router.run, ((STREAM_PART, consumer),), Phase.INTAKE))
        parts.append(Part(timers.run, phase=Phase.INTAKE))
        recorder = Recorder(
            nc,
            ledger,
            metrics,
            functools.partial(
                ensure_outcomes, replicas=replicas, ack_wait=config.nats.ack_wait, partition=k
            ),
            rider=outbox.ride,
            partition=k,
        )
        outcomes_consumer = recorder_consumer_config(config.nats.ack_wait, replicas, k)
        parts.append(Part(recorder.run, ((STREAM_OUT, outcomes_consumer),)))
        parts.append(Part(outbox.run))
        running.reloader = running.api.reloader = Reloader(
            ledger,
            config,
            [router, timers],
            options.data_dir,
            workers=workers,
            build_channel=rebuild,
            secrets=secrets,
            load=None
            if k is None
            else functools.partial(load_partition, partition=k, count=config.partitions.count),
        )
        running.readiness.checks.extend([lambda: router.missing, lambda: recorder.missing])
        compactor = running.compactor = Compactor(ledger, options.data_dir, config.log.retention)
        if config.log.retention is not None:
            parts.append(Part(compactor.run))  # [log] retention, checked every hour
        anchor = running.anchor = Anchor(
            broker.js, functools.partial(chain_head, ledger), subject=anchor_subject(k)
        )
        ledger.listeners.append(anchor.committed)
        metrics.observe(
            "tocsin_log_anchored_seq",
            "seq of the last chain head NATS acknowledged (what verify --against-nats checks)",
            lambda: float(anchor.published.seq if anchor.published is not None else 0),
        )
        parts.append(Part(anchor.run))
    if plan.routers:
        parts += partitioned_parts(options, plan, running, broker)
    if plan.processes:
        # The children run every receiver's worker; their consumers are made and
        # watched here, and a reload here is told to them.
        supervisor = running.supervisor = Supervisor(
            [child_command(options, running.nats_url)] * plan.processes, metrics
        )
        consumers = tuple(
            (
                STREAM_WORK,
                deliver_consumer_config(
                    name, config.receivers[name].timeout, config.nats.ack_wait, replicas
                ),
            )
            for name in plan.receivers
        )
        parts.append(Part(supervisor.run, consumers, Phase.DELIVERY))
        if running.reloader is not None:
            running.reloader.then(supervisor.reload)
    # With children, the process that holds the log delivers too (``[delivery]
    # in_serve``) to the receivers that are not throttled (``delivered_in_serve``), its
    # workers pulling from the children's consumers, which the supervisor's part makes
    # and watches (issue #20, docs/performance.md).
    own = delivered_in_serve(
        {name: config.receivers[name].max_per_minute for name in plan.channels},
        plan.processes,
        config.delivery.in_serve and ledger is not None,
    )
    running.delivered_here = own
    for name in own:
        channel, receiver = plan.channels[name], config.receivers[name]
        consumer = deliver_consumer_config(name, receiver.timeout, config.nats.ack_wait, replicas)
        worker = ReceiverWorker(
            nc,
            publisher,
            name,
            channel,
            config.retry,
            config.delivery.concurrency,
            receiver.max_per_minute,
            progress_every=(consumer.ack_wait or 30.0) / 3,
            ack_wait=consumer.ack_wait or 30.0,
            metrics=metrics,
            tracing=tracing,
            secrets=secrets,
        )
        workers[name] = worker
        pulls = () if plan.processes else ((STREAM_WORK, consumer),)
        parts.append(Part(worker.run, pulls, Phase.DELIVERY))
    if options.link_fd is not None:  # a child of serve: its figures and reloads
        if running.reloader is not None:  # a partition's router
            reload: Callable[[], Awaitable[object]] = functools.partial(
                running.reloader.reload, "tocsin serve"
            )
        else:
            reload = WorkerReloader(config, workers, rebuild, secrets).reload
        link = Link(options.link_fd, metrics, options.stop.set, reload)
        parts.append(Part(link.run))
        return parts  # its consumers are watched by its parent
    watched = [name for part in parts for name in part.watched]

    def watch(stop: asyncio.Event) -> Coroutine[Any, Any, None]:
        return watch_consumers(broker.js, watched, metrics, stop, options.consumer_poll_seconds)

    parts.append(Part(watch))
    return parts


def partitioned_parts(options: Options, plan: Plan, running: Running, broker: Broker) -> list[Part]:
    """``serve --partitions N``'s own parts: a partitioner (stopped with the intake),
    the router of each partition as a child (stopped last, so that their recorders log
    the outcomes of the last sends), and the follower of their logs."""
    from tocsin.pipeline.partitioner import Partitioner

    partitions = running.partitions
    assert partitions is not None
    partitioner = Partitioner(broker.nc, broker.js, options.config)
    routers = running.routers = Supervisor(
        [router_command(options, running.nats_url, k) for k in range(plan.routers)],
        running.metrics,
        role="router",
    )
    return [
        Part(partitioner.run, phase=Phase.INTAKE),
        Part(routers.run, phase=Phase.REST),
        Part(partitions.follow, phase=Phase.REST),
    ]


async def prepare_streams_and_consumers(
    broker: Broker, config: Config, parts: list[Part], running: Running
) -> None:
    """Create or update the streams (TOCSIN_IN with the router's consumer, wherever it
    is created: without it the stream would discard what it is sent), then each part's
    durable consumer, before any part starts: pending work waits in the streams, not in
    a process. The API may publish once the streams exist. Where the log is, the work
    of receivers no longer configured is dead-lettered and their consumers deleted
    (``orphans``): nothing else would ever take it."""
    js = broker.js
    await ensure_streams(
        js, config.nats.replicas or 1, config.nats.ack_wait, partitions=config.partitions.count
    )
    running.api.js = js
    log.info("connected to NATS at %s; streams ready", broker.shown)
    if running.ledger is not None:
        from tocsin.pipeline.orphans import clear_orphans

        try:
            await clear_orphans(js, broker.publisher, config.receivers)
        except Exception as error:  # a part of the start to retry next time, not a failure
            log.error(
                "could not clear the work of receivers no longer configured: %s: %s",
                type(error).__name__,
                error,
            )
    for part in parts:
        for stream, consumer in part.consumers:
            await ensure_consumer(js, stream, consumer)


async def take_up_the_log(
    config: Config, running: Running, broker: Broker, partition: int | None = None
) -> None:
    """Where the log is, before any part starts: record the config the router runs with
    (so that it precedes every fact decided under it) and which incarnation of each
    input stream (TOCSIN_IN, TOCSIN_OUT) the log consumes, and start answering
    delivery-status questions (a worker may ask about its first item), retry-failed
    and compact requests, giving the API the same control. The outbox owes, from here
    on, the work items of every fact committed, and of those above its logged watermark
    that have no outcome (``outbox``). A ``partition``'s log consumes TOCSIN_PART."""
    ledger, reader = running.ledger, running.reader
    if ledger is None:
        return
    from tocsin.pipeline.binding import bind_stream
    from tocsin.pipeline.control import Control
    from tocsin.pipeline.reload import loaded_fact
    from tocsin.pipeline.status import answer_delivery_status
    from tocsin.store.ledger import Input

    async with ledger.batch() as batch:
        batch.add(loaded_fact(config, "start"))
    for stream in Input:
        forwarded = partition is not None and stream is Input.INBOUND
        await bind_stream(broker.js, ledger, stream, STREAM_PART if forwarded else None)
    outbox = running.outbox
    assert reader is not None
    assert outbox is not None
    owed = await outbox.take_up()
    if owed:
        log.info(
            "outbox: %d notification(s) committed after the last confirmed publish and not"
            " settled; the relay publishes them again once the recorder has caught up",
            owed,
        )
    await answer_delivery_status(
        broker.nc,
        ledger,
        consumer=recorder_consumer(partition),
        subject=delivery_status_subject(partition),
    )
    control = running.api.control = Control(
        ledger,
        reader,
        outbox,
        receivers=config.receivers,
        compactor=running.compactor,
        config_version=config.digest(),
    )
    await control.answer(broker.nc, partition)
    if running.reloader is not None:
        running.reloader.also(control)
        await running.reloader.answer(broker.nc)


async def command_partitions(options: Options, running: Running, broker: Broker) -> None:
    """``serve --partitions N``: the API's commands go to the partitions' routers, and a
    reload (SIGHUP, ``POST /-/reload``, ``tocsin reload`` for this data dir) to every
    child, each of which reads the file again."""
    if running.partitions is None:
        return
    from tocsin.pipeline.partition_control import PartitionControl
    from tocsin.pipeline.reload import ChildrenReloader, answer_reloads

    running.api.control = PartitionControl(broker.nc, running.partitions)
    tell = [s.reload for s in (running.routers, running.supervisor) if s is not None]
    reloader = running.api.reloader = ChildrenReloader(
        options.config, tell, functools.partial(load_with_partitions, options.config)
    )
    await answer_reloads(broker.nc, options.data_dir, reloader.reload)


def load_with_partitions(running: Config, path: str | None) -> Config:
    """The file read again, with the partition count serve runs with (``--partitions``
    is not in the file): a reload cannot change it (repartitioning is offline)."""
    return with_partitions(load_config(path), running.partitions.count)


def start_parts(
    parts: list[Part], options: Options, plan: Plan, running: Running, broker: Broker
) -> None:
    """Each part in a task, in order; the service is ready once they all run. The ready
    line says where to look and where to publish: the dashboard and the NATS URL; and
    the event loop it runs on (``TOCSIN_EVENT_LOOP``), so a figure can be told apart."""
    running.stops = {phase: asyncio.Event() for phase in Phase}
    for part in parts:
        task = asyncio.create_task(part.run(running.stops[part.phase]))
        running.phased.append((part.phase, task))
        running.tasks.append(task)
    reload_on_sighup(options, running)
    running.readiness.stage = None
    where = [f"NATS: {broker.shown}"]
    count = options.config.partitions.count
    if plan.routers:
        where.append(f"{plan.routers} partitions, a router child each")
    elif options.partition is not None:
        where.append(f"partition {options.partition} of {count}")
    if plan.http_address is not None:
        host, port = plan.http_address
        shown_host = f"[{host}]" if ":" in host else host
        where.insert(0, f"dashboard: http://{shown_host}:{port}/")
    log.info(
        "tocsin %s ready; %s (config: %s; receivers: %s; %s; event loop: %s)",
        __version__,
        "; ".join(where),
        options.config.source,
        ", ".join(plan.receivers),
        delivery_said(plan, running.delivered_here),
        loop_name(),
    )


def delivery_said(plan: Plan, here: list[str]) -> str:
    """Where delivery runs, as the ready line says it: in the children, in this process
    (every receiver, or those named: ``[delivery] in_serve`` leaves the throttled to the
    children), or nowhere."""
    if not plan.processes:
        return "delivery in this process" if here else "no delivery"
    children = f"delivery in {plan.processes} child process(es)"
    if not here:
        return children
    if len(here) == len(plan.channels):
        return f"{children} and in this one"
    return f"{children} and in this one for {', '.join(here)}"


def loop_name() -> str:
    """``uvloop`` or ``asyncio``: the package of the running loop's class."""
    return type(asyncio.get_running_loop()).__module__.partition(".")[0]


def reload_on_sighup(options: Options, running: Running) -> None:
    """Where the log is, ``SIGHUP`` reloads the config file (DESIGN.md section 15), as
    Alertmanager and Prometheus do; a refusal is logged and the running config stays.
    ``serve --partitions N`` has its children reload (``ChildrenReloader``)."""
    reloader = running.api.reloader
    if reloader is None or not options.handle_signals:
        return

    def reload() -> None:
        task = asyncio.create_task(reloader.reload("SIGHUP"), name="reload")
        running.reloads.add(task)
        task.add_done_callback(done)

    def done(task: asyncio.Task[Any]) -> None:
        running.reloads.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("reload on SIGHUP failed: %r", task.exception())

    with contextlib.suppress(NotImplementedError, RuntimeError):
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload)


async def wait_for_stop(stop: asyncio.Event, running: Running) -> int:
    """Until ``stop`` is set or a server or part ends: 0, or 1 (logged) if one
    failed."""
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([*running.tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
    code = 0
    for task in done:
        if task is not stopper and task.exception() is not None:
            log.error(
                "%s stopped: %r", task.get_name(), task.exception(), exc_info=task.exception()
            )
            code = 1
    stopper.cancel()
    return code


PATIENCE = 20.0  # seconds each phase's parts have to stop (the servers too)


async def stop_in_order(stop: asyncio.Event, running: Running, broker: Broker) -> None:
    """The servers are asked to finish, and the parts to stop phase by phase (``Phase``:
    intake, delivery, the rest), each phase given ``PATIENCE`` (delivery children
    their own patience more); the log's last head is anchored; then the connection
    drains, so that what they published and acked reaches NATS before it closes. The
    log is closed after that, by ``release``."""
    stop.set()
    running.readiness.stage = "shutting down"
    log.info("stopping: the intake and the servers, then delivery, then the rest")
    close_doors(running)
    for phase in Phase:
        running.stops[phase].set()
        tasks = [task for when, task in running.phased if when == phase]
        children = phase == Phase.DELIVERY and running.supervisor is not None
        if tasks:
            await asyncio.wait(tasks, timeout=PATIENCE + (STOP_PATIENCE if children else 0))
    await asyncio.wait(running.tasks, timeout=PATIENCE)
    if running.anchor is not None and running.ledger is not None:
        await running.ledger.settled()  # the head the parts left, once they have stopped
        await running.anchor.publish_now()
    await broker.nc.drain()


def partition_input(config: Config, partition: int | None) -> dict[str, Any]:
    """The router's input: TOCSIN_IN (nothing to say), or for a ``partition`` its
    subject of TOCSIN_PART, its own consumer, made again with its stream should it
    vanish, and messages a partitioner forwarded."""
    if partition is None:
        return {}
    return {
        "stream": STREAM_PART,
        "consumer": router_consumer(partition),
        "forwarded": True,
        "setup": functools.partial(
            ensure_partition,
            partition=partition,
            replicas=config.nats.replicas or 1,
            ack_wait=config.nats.ack_wait,
        ),
    }


def load_partition(path: str | None, partition: int, count: int) -> Config:
    """A reload's config for the router of ``partition``: its heartbeats alone, as at
    start (``config.for_partition``), of the ``count`` partitions it runs among (given
    by ``--partitions`` perhaps, not the file: a reload cannot change it)."""
    return for_partition(with_partitions(load_config(path), count), partition)


def chain_head(ledger: Ledger) -> Head | None:
    """The head of the log's chain as committed (None while the log is empty)."""
    event_log = ledger.event_log
    if event_log.last_seq == 0:
        return None
    return head_of(event_log.last_seq, event_log.last_hash, event_log.last_ts)


def close_doors(running: Running) -> None:
    """End the live feed's streams (an open one would hold uvicorn) and ask the servers
    to finish."""
    running.api.live.close()
    for server in running.servers:
        server.should_exit = True


async def release(running: Running) -> None:
    """Whatever happened, in the reverse order of opening: tasks still running are
    cancelled, the log closed, the writer's lock released, the embedded NATS stopped,
    and metrics and spans flushed."""
    for task in running.tasks:
        if not task.done():
            task.cancel()
    if running.reader is not None:
        await running.reader.close()
    if running.partitions is not None:
        await running.partitions.close()
    if running.ledger is not None:
        await running.ledger.close()
    running.writer_lock.release()
    if running.embedded is not None:
        await running.embedded.stop()
    running.metrics.shutdown()
    await asyncio.to_thread(running.tracing.shutdown)  # flushes spans; may wait on a collector
    log.info("tocsin stopped")


def child_command(options: Options, nats_url: str) -> ChildCommand:
    """``tocsin deliver`` as serve's child (``serve_child``), with the dashboard link
    notifications carry."""
    dashboard = dashboard_url(options)
    return serve_child(
        options, nats_url, ["deliver", *(["--dashboard-url", dashboard] if dashboard else [])]
    )


def router_command(options: Options, nats_url: str, partition: int) -> ChildCommand:
    """``tocsin router --partition k`` as a child of ``serve --partitions N``."""
    return serve_child(options, nats_url, ["router", "--partition", str(partition)])


def serve_child(options: Options, nats_url: str, command: list[str]) -> ChildCommand:
    """A ``tocsin`` command as serve's child (``python -m tocsin.entry``, where the
    console script starts too: ``entry``'s docstring says why): this interpreter, the
    same config (its file, or the environment it was read from), data dir, logging and
    partition count; the NATS URL (the embedded server's, perhaps) in its environment,
    where ``ps`` does not show its credentials. Never the probes' address: the parent
    serves them."""
    argv = [sys.executable, "-m", "tocsin.entry", *options.log_flags, *command]
    argv += ["--data-dir", str(options.data_dir)]
    path = file_of(options.config)
    if path is not None:
        argv += ["--config", path]
    if options.partitioned:
        argv += ["--partitions", str(options.config.partitions.count)]
    env = {k: v for k, v in os.environ.items() if k not in CHILD_UNSET}
    env["TOCSIN_NATS_URL"] = nats_url
    return ChildCommand(argv, env)


CHILD_UNSET = ("TOCSIN_HEALTH", "TOCSIN_CONFIG", "TOCSIN_PARTITION", "TOCSIN_PARTITIONS")
"""What serve's environment says for itself alone: a child is told on its command line."""


def dashboard_url(options: Options) -> str | None:
    """The dashboard's address, for the links notifications carry (a delivery child
    is given its parent's)."""
    if options.dashboard is not None:
        return options.dashboard
    return f"http://{options.http}/" if options.http else None


def build_channel(dashboard: str | None, concurrency: int, config: Config, name: str) -> Channel:
    """One receiver's channel (a reload's, for a receiver whose settings changed), with
    the ``[delivery] concurrency`` its worker was started with: a reload changes the
    receiver's settings, not how many sends its worker runs at once."""
    return build_channels(config, [name], dashboard, concurrency)[name]


def build_channels(
    config: Config, names: list[str], dashboard_url: str | None, concurrency: int
) -> dict[str, Channel]:
    """Every receiver's channel, or a ``ConfigError`` naming the receiver and key; an
    HTTP channel keeps a connection for each of its worker's ``concurrency`` sends."""
    env = ChannelEnv(
        version=__version__,
        smtp=config.smtp,
        dashboard_url=dashboard_url,
        connections=concurrency,
    )
    channels: dict[str, Channel] = {}
    for name in names:
        receiver = config.receivers[name]
        try:
            channels[name] = config.kinds[receiver.channel].build(name, receiver, env)
        except ChannelConfigError as error:
            raise ConfigError(f"receivers.{name}.{error.key}: {error}") from error
    return channels


def check_listenable(address: tuple[str, int], key: str) -> None:
    """Refuse, before anything starts, an address the HTTP server could not listen on
    (in use, or not this machine's), naming the setting: uvicorn would find out only
    after the log and NATS are up, and exit with a code of its own (3)."""
    host, port = address
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, where = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
            probe.bind(where)
    except OSError as error:
        raise ConfigError(
            f"{key}: cannot listen on {host}:{port}: {error.strerror or error} "
            "(is another tocsin running there? choose another address)"
        ) from error


def split_host_port(value: str, key: str = "TOCSIN_HTTP") -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"{key}: {value!r} is not host:port")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
