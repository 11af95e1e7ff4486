"""``tocsin``: one entry point, subcommands of DESIGN.md section 6.

Exit codes: 0 ok, 1 runtime failure, 2 bad usage or bad config (the message names it).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import heapq
import importlib
import importlib.util
import logging
import os
import signal
import socket
import ssl
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from tocsin import __version__, config
from tocsin.bus.connection import server_urls
from tocsin.bus.embedded import NatsServerNotFound, resolve_nats_url
from tocsin.core import contracts, ingest, partition
from tocsin.core import events as ev
from tocsin.core.anchor import Head, parse_head
from tocsin.core.decide.route import Route, RoutingTable, unreachable_severities
from tocsin.core.errors import ConfigError
from tocsin.core.ids import new_id
from tocsin.core.policy.eventloop import EVENT_LOOP_KEY, choose_loop
from tocsin.core.state import State
from tocsin.core.subjects import (
    ANCHOR,
    COMPACT,
    IN_PREFIX,
    MSG_ID,
    RELOAD,
    RETRY_FAILED,
    STREAM_ANCHOR,
    heartbeat_subject,
    retry_failed_subject,
)
from tocsin.core.times import now_us, parse_instant
from tocsin.core.views import EventRecord
from tocsin.observability import logs
from tocsin.observability.redact import Secrets
from tocsin.store.lock import WriterLock

# The store's readers (replay, state, verify, compact, simulate) are imported by the
# commands that read the file: ``tocsin deliver``, serve's delivery children, never
# holds them (issue #20's RSS target).
if TYPE_CHECKING:
    from tocsin.core.simulate import Rules

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

COMPACT_PATIENCE = 600.0  # seconds the running service may take to archive and compact


class UsageError(Exception):
    pass


T = TypeVar("T")

GC_THRESHOLDS = (20_000, 10, 10)
"""The cyclic garbage collector's thresholds in a tocsin process (Python's: 700, 10, 10).

tocsin works in batches: a router batch of 2,000 events allocates a few hundred
thousand objects, nearly all freed by reference counting when the batch is done, so
at Python's 700 the collector ran ~800 times in a W1 + W2 (serve, 2026-12-05: 160-185
ms of young collections and 70-105 ms of full ones), each one scanning a batch's
objects that were about to go anyway. At 20,000 it ran ~10 times, 63-65 ms in all;
W2 under ``tocsin serve``, 5 pairs alternated: 21,685 (21,472-22,379) -> 23,511
(22,742-25,419) events/s, W1 and RSS unchanged, W3's p50 and p99 within their noise
(docs/performance.md, "The garbage collector"). Cycles are rare in tocsin's objects;
they wait at most 20,000 allocations longer to be freed."""


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on the event loop ``TOCSIN_EVENT_LOOP`` chooses
    (``core.policy.eventloop``), with the collector's ``GC_THRESHOLDS``: the one place
    a tocsin process starts its loop, so ``serve`` and every child it starts (they run
    this same command line) agree.

    The loop is handed to ``asyncio.Runner`` as a factory, not installed as a global
    policy, so nothing else in the process (uvicorn, which runs inside this loop, or a
    library's own ``asyncio.run``) is changed by it."""
    try:
        loop = choose_loop(
            os.environ.get(EVENT_LOOP_KEY), importlib.util.find_spec("uvloop") is not None
        )
    except ConfigError:
        main.close()  # never started: no "coroutine was never awaited" warning
        raise
    gc.set_threshold(*GC_THRESHOLDS)
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if loop == "uvloop":
        # By name: uvloop is optional where it does not build (Windows), and this module
        # type-checks where it is not installed.
        factory = importlib.import_module("uvloop").new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"tocsin: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _logging_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """``--log-level`` and ``--log-format``, before the subcommand (with the defaults)
    or after it (overriding only when given)."""
    parser.add_argument(
        "--log-level",
        default=os.environ.get("TOCSIN_LOG_LEVEL", "info") if defaults else argparse.SUPPRESS,
        choices=logs.LEVELS,
        help="env TOCSIN_LOG_LEVEL; default info",
    )
    parser.add_argument(
        "--log-format",
        default=os.environ.get("TOCSIN_LOG_FORMAT", "auto") if defaults else argparse.SUPPRESS,
        choices=logs.FORMATS,
        help="env TOCSIN_LOG_FORMAT; json: one object per line; text: for people; "
        "auto (default): text when stderr is a terminal, else json",
    )


NATS_URL_FOUND = "default: <data-dir>/nats.url, then nats://127.0.0.1:4222"
NATS_URL_EMBEDDED = (
    "default: none, and tocsin starts an embedded nats-server with its store in the data "
    "dir, on the port of its last start, else 4222, else another (written to "
    "<data-dir>/nats.url)"
)


def _common(
    parser: argparse.ArgumentParser, nats: bool, nats_default: str = NATS_URL_FOUND
) -> None:
    _logging_options(parser, defaults=False)
    parser.add_argument(
        "--config",
        default=os.environ.get("TOCSIN_CONFIG"),
        help="TOML config file (env TOCSIN_CONFIG); default: from the environment",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("TOCSIN_DATA_DIR", "./tocsin-data")),
        help="where the log and the embedded NATS store live (env TOCSIN_DATA_DIR)",
    )
    if nats:
        parser.add_argument(
            "--nats-url",
            default=os.environ.get("TOCSIN_NATS_URL"),
            help="NATS server URL, or several comma-separated (a cluster's seeds) "
            f"(env TOCSIN_NATS_URL); {nats_default}",
        )


def _partitions(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--partitions",
        type=int,
        default=int(os.environ["TOCSIN_PARTITIONS"])
        if os.environ.get("TOCSIN_PARTITIONS", "").isdigit()
        else None,
        metavar="N",
        help="[partitions] count, whatever the config says (env TOCSIN_PARTITIONS): "
        "serve runs the router of each of N partitions as a child process",
    )


def _loaded(args: argparse.Namespace) -> config.Config:
    """The config of ``--config``, with ``--partitions`` when the command has it."""
    return config.with_partitions(config.load(args.config), getattr(args, "partitions", None))


def _health(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--health",
        default=os.environ.get("TOCSIN_HEALTH") or None,
        metavar="HOST:PORT",
        help="serve the probes /healthz and /readyz, and /metrics, on this address "
        "(env TOCSIN_HEALTH); default: no HTTP at all",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tocsin", description="Event-sourced alerting over NATS JetStream.")
    parser.add_argument("--version", action="version", version=f"tocsin {__version__}")
    _logging_options(parser, defaults=True)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = sub.add_parser(
        "serve",
        help="router + HTTP API, and delivery workers in child processes ([delivery] "
        "processes; 0: in the same process)",
    )
    _partitions(serve)
    _common(serve, nats=True, nats_default=NATS_URL_EMBEDDED)
    serve.add_argument(
        "--http",
        default=os.environ.get("TOCSIN_HTTP", "127.0.0.1:8080"),
        help="HTTP listen address (env TOCSIN_HTTP)",
    )

    router = sub.add_parser("router", help="the router (and outcome recorder) alone")
    _partitions(router)
    _common(router, nats=True)
    _health(router)
    router.add_argument(
        "--partition",
        type=_partition_argument,
        default=os.environ.get("TOCSIN_PARTITION") or None,
        metavar="K",
        help="with [partitions] count > 1: route partition K (tocsin.part.K), "
        "its log in <data-dir>/pK; `ordinal`: K is the number the host's name ends in "
        "(a StatefulSet's pod tocsin-router-K) (env TOCSIN_PARTITION)",
    )

    partition = sub.add_parser(
        "partition",
        help="forward alerts.in.> and alerts.heartbeat.> to their partitions "
        "(stateless; run any number; [partitions] count > 1)",
    )
    _partitions(partition)
    _common(partition, nats=True)

    repartition = sub.add_parser(
        "repartition",
        help="move the logs from N partitions to M, offline (services stopped)",
        description="Offline, with every router and partitioner stopped: each open alert "
        "and its dedup state move to the partition its fingerprint (or [partitions] key "
        "of --config, whose count must be M) belongs to under M; the old logs are "
        "archived read-only in <data-dir>/repartitioned/, each new log starts with "
        "partition.seeded; then TOCSIN_IN/TOCSIN_PART's consumers are changed to M "
        "(DESIGN.md section 17; docs/deployment.md).",
    )
    _common(repartition, nats=True)
    repartition.add_argument("--from", dest="from_count", type=int, required=True, metavar="N")
    repartition.add_argument("--to", dest="to_count", type=int, required=True, metavar="M")
    repartition.add_argument(
        "--force",
        action="store_true",
        help="move even with deliveries pending, alerts in groups, escalations running "
        "(what is lost is said, and recorded in partition.seeded)",
    )
    repartition.add_argument(
        "--no-nats",
        action="store_true",
        help="the logs only: leave the consumers to change by hand (docs/deployment.md)",
    )

    config_command = sub.add_parser("config", help="check a configuration file")
    config_sub = config_command.add_subparsers(
        dest="config_command", required=True, parser_class=_Parser
    )
    check = config_sub.add_parser(
        "check",
        help="validate a config file, print its routes and receivers",
        description="Validate a config file as the service would (exit 2 naming the key at "
        "fault), print its routes and receivers, and warn of severities no route delivers.",
    )
    _common(check, nats=False)
    check.add_argument("file", nargs="?", help="the TOML file (default: --config / TOCSIN_CONFIG)")
    translate = config_sub.add_parser(
        "import-alertmanager",
        help="print an Alertmanager config as a tocsin one",
        description="Print the tocsin config equivalent to an alertmanager.yml (DESIGN.md "
        "section 14); what cannot be translated is listed on stderr. Exit 0, or 2 when "
        "nothing usable remains.",
    )
    _logging_options(translate, defaults=False)
    translate.add_argument("file", help="the Alertmanager YAML file")

    route_test = sub.add_parser(
        "route-test",
        help="which routes, receivers and group keys an alert would get",
        description="Like `amtool config routes test`: the receivers first (one line, "
        "comma-separated), then each route that applies with its group key.",
    )
    _common(route_test, nats=False)
    route_test.add_argument("--type", help="the alert's type (default: label alertname)")
    route_test.add_argument("--severity", help="default: label severity, else warning")
    route_test.add_argument("--source", default=ROUTE_TEST_SOURCE, help="default: %(default)s")
    route_test.add_argument(
        "--label", action="append", default=[], metavar="K=V", help="a label (repeatable)"
    )
    route_test.add_argument("--json", action="store_true", help="one JSON object")

    deliver = sub.add_parser("deliver", help="delivery workers alone")
    _partitions(deliver)
    _common(deliver, nats=True)
    _health(deliver)
    deliver.add_argument(
        "--receiver",
        action="append",
        dest="receivers",
        help="deliver only to this receiver (repeatable); default: all",
    )
    # Given by `tocsin serve` to its delivery children: its dashboard, for the links
    # notifications carry.
    deliver.add_argument("--dashboard-url", default=None, help=argparse.SUPPRESS)

    publish = sub.add_parser(
        "publish",
        help="publish one alert event",
        description="Publish one alert event (DESIGN.md section 4) with a JetStream ack. "
        "It is checked first with the service's own ingest rules: an event the service "
        "would reject is refused here, exit 2, naming the field.",
    )
    _common(publish, nats=True)
    publish.add_argument("--type", required=True)
    publish.add_argument("--severity", required=True, help="critical, error, warning, info")
    publish.add_argument("--summary", required=True)
    publish.add_argument("--label", action="append", default=[], metavar="K=V")
    publish.add_argument("--source", default="cli", help="default: cli (subject alerts.in.cli)")
    publish.add_argument("--resolved", action="store_true")
    publish.add_argument("--fingerprint", help="explicit identity (default: type + labels)")
    publish.add_argument("--details", metavar="JSON", help="a JSON object of details")
    publish.add_argument("--timestamp", metavar="T", help="RFC 3339 with an offset")
    publish.add_argument("--ends-at", metavar="T", help="RFC 3339: resolves by itself then")
    publish.add_argument("--event-id", help="idempotency key (default: a new id)")

    heartbeat = sub.add_parser(
        "heartbeat",
        help="send one beat of a heartbeat",
        description="Send one beat of the heartbeat NAME (DESIGN.md section 13) on "
        "alerts.heartbeat.NAME, with a JetStream ack. With --config (or TOCSIN_CONFIG), a "
        "name that file does not configure is refused here, exit 2: the service would "
        "reject it.",
    )
    _common(heartbeat, nats=True)
    heartbeat.add_argument("name", metavar="NAME", help="a [heartbeats.NAME] of the config")

    replay = sub.add_parser("replay", help="print the log's history, oldest first")
    _common(replay, nats=False)
    replay.add_argument("--since", help="RFC 3339 or a duration back from now (15m, 2h, 7d)")
    replay.add_argument("--until", help="RFC 3339 or a duration back from now")
    replay.add_argument("--fingerprint")
    replay.add_argument("--alert", help="an alert id")
    replay.add_argument("--type", dest="type_", help="every event of alerts of this type")
    replay.add_argument(
        "--json", action="store_true", help='one {"seq","ts","kind","data"} per line'
    )
    replay.add_argument(
        "--archive",
        action="append",
        default=[],
        type=Path,
        help="also read this compaction archive (repeatable, oldest first)",
    )

    state = sub.add_parser("state", help="the projection as of now or of time T")
    _common(state, nats=False)
    state.add_argument("--at", help="RFC 3339 or a duration back from now")
    state.add_argument("--json", action="store_true")

    verify = sub.add_parser(
        "verify",
        help="check the hash chain and indexed columns, rebuild every projection, and "
        "compare the chain with its anchor",
    )
    _common(verify, nats=True)
    verify.add_argument(
        "--against-nats",
        action="store_true",
        help="also check that the log holds the chain head anchored in NATS "
        "(tocsin.anchor.log): a dropped tail or a rewritten history fails",
    )
    verify.add_argument(
        "--head",
        metavar="SEQ:HASH",
        help="also check that the log holds this chain head (one written down earlier, "
        "e.g. from a previous verify)",
    )
    verify.add_argument(
        "--archive",
        action="append",
        default=[],
        type=Path,
        help="also check this compaction archive against the log",
    )

    compact = sub.add_parser(
        "compact",
        help="move old events to an archive (asks the running service; offline when none runs)",
    )
    _common(compact, nats=True)
    compact.add_argument("--before", required=True, help="RFC 3339 or a duration back from now")
    compact.add_argument("--archive", required=True, type=Path, help="the .jsonl.gz to write")

    retry = sub.add_parser(
        "retry-failed", help="re-queue dead-lettered deliveries (asks the running service)"
    )
    _partitions(retry)
    _common(retry, nats=True)
    retry.add_argument("--receiver", help="only this receiver's dead letters")
    retry.add_argument("--since", help="dead-lettered since: RFC 3339 or a duration (2h)")

    simulate = sub.add_parser(
        "simulate",
        help="replay the log's events through another config (--config NEW) and show"
        " what would have been notified differently (reads the file; section 15)",
    )
    _common(simulate, nats=False)
    simulate.add_argument("--since", help="appended since: RFC 3339 or a duration (2h)")
    simulate.add_argument("--until", help="appended until: RFC 3339 or a duration")
    shape = simulate.add_mutually_exclusive_group()
    shape.add_argument("--json", action="store_true", help="one JSON object")
    shape.add_argument(
        "--markdown", action="store_true", help="a summary to paste into a pull request"
    )
    simulate.add_argument(
        "--limit",
        type=int,
        default=20,
        help="--markdown: how many changed alerts to list (default 20)",
    )

    reload = sub.add_parser(
        "reload", help="ask the running service to read its config file again (section 15)"
    )
    _common(reload, nats=True)

    schemas = sub.add_parser("schemas", help="write the JSON Schemas of the wire contract")
    schemas.add_argument("--out", type=Path, default=Path("schemas"))
    return parser


def _partition_argument(text: str) -> int:
    """``--partition``'s value: a number, or ``ordinal`` (the host name's ordinal)."""
    if text == partition.ORDINAL:
        hostname = socket.gethostname()
        ordinal = partition.ordinal_of(hostname)
        if ordinal is None:
            raise argparse.ArgumentTypeError(
                f"ordinal: the host name {hostname!r} does not end in -<number>"
                " (a StatefulSet pod's name does)"
            )
        return ordinal
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: a partition number, or ordinal")
    return int(text)


def _stop_during_start(signum: int, frame: object) -> None:
    """SIGTERM/SIGINT before the service is up: nothing is running yet, so just stop
    (``service.run`` installs its own handlers once it starts)."""
    raise SystemExit(EXIT_OK)


def main(argv: Sequence[str] | None = None) -> int:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop_during_start)
    args = build_parser().parse_args(argv)
    # The service adds its configuration's secrets here once it has read them.
    secrets = Secrets()
    logs.configure(args.log_level, args.log_format, secrets)
    try:
        return _dispatch(args, secrets)
    except (ConfigError, UsageError) as error:
        print(f"tocsin: {error}", file=sys.stderr)
        return EXIT_USAGE
    except NatsServerNotFound as error:
        print(f"tocsin: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_FAILURE
    except Exception as error:
        logging.getLogger("tocsin").critical(
            "stopped by %s: %s",
            type(error).__name__,
            error,
            exc_info=logging.getLogger().isEnabledFor(logging.DEBUG),
        )
        print(f"tocsin: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_FAILURE


def _dispatch(args: argparse.Namespace, secrets: Secrets) -> int:
    command = args.command
    if command == "schemas":
        return _schemas(args.out)
    if command == "publish":
        return run(_publish(args))
    if command == "heartbeat":
        return run(_heartbeat(args))
    if command == "retry-failed":
        return run(_retry_failed(args))
    if command == "simulate":
        return _simulate(args)
    if command == "reload":
        return run(_reload(args, str(args.data_dir.resolve())))
    if command in ("replay", "state", "verify"):
        return _forensics(args)
    if command == "compact":
        return _compact(args)
    if command == "config":
        if args.config_command == "import-alertmanager":
            return _import_alertmanager(args.file)
        return _config_check(args)
    if command == "route-test":
        return _route_test(args)
    if command == "partition":
        return run(_partition(args))
    if command == "repartition":
        return _repartition(args)
    from tocsin import service
    from tocsin.pipeline.supervisor import link_fd

    loaded = _loaded(args)
    data_dir, nats_url = args.data_dir, args.nats_url
    partition = getattr(args, "partition", None)
    if partition is not None:
        # The partition's log and lock live in <data-dir>/p<k>; NATS is found as for
        # any other process of the data dir.
        from tocsin.store.eventlog import partition_dir

        loaded = config.for_partition(loaded, partition)
        nats_url = resolve_nats_url(nats_url, data_dir)
        data_dir = partition_dir(data_dir, partition)
    options = service.Options(
        data_dir=data_dir,
        config=loaded,
        nats_url=nats_url,
        http=getattr(args, "http", None) if command == "serve" else None,
        health=getattr(args, "health", None),
        run_router=command in ("serve", "router"),
        run_delivery=command in ("serve", "deliver"),
        receivers=getattr(args, "receivers", None),
        embedded_nats=command == "serve" and not args.nats_url,
        api_token=os.environ.get("TOCSIN_API_TOKEN") or None,
        secrets=secrets,
        partition=partition,
        # serve's delivery children log as it does; a child finds its link here.
        log_flags=("--log-level", args.log_level, "--log-format", args.log_format),
        link_fd=link_fd(os.environ) if command in ("deliver", "router") else None,
        dashboard=getattr(args, "dashboard_url", None),
    )
    return run(service.run(options))


async def _partition(args: argparse.Namespace) -> int:
    """``tocsin partition``: forward until SIGINT/SIGTERM (``pipeline.partitioner``)."""
    from tocsin.pipeline import partitioner

    loaded = _loaded(args)
    partitioner.check_partitioned(loaded)  # refused (exit 2) before connecting
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return await partitioner.run(loaded, resolve_nats_url(args.nats_url, args.data_dir), stop)


def _repartition(args: argparse.Namespace) -> int:
    """``tocsin repartition --from N --to M``: the consumers checked drained, the logs
    moved (``store.repartition``), the consumers changed (``bus.repartition``)."""
    from tocsin.store import repartition

    loaded = config.load(args.config)
    for option, count in (("--from", args.from_count), ("--to", args.to_count)):
        if not 1 <= count <= partition.MAX_PARTITIONS:
            raise UsageError(
                f"{option}: {count}: a partition count is 1 to {partition.MAX_PARTITIONS}"
            )
    if loaded.partitions.count != args.to_count:
        raise UsageError(
            f"partitions.count: is {loaded.partitions.count} in {loaded.source}, not --to "
            f"{args.to_count}: give the config the routers will run with (its key decides "
            "where alerts go)"
        )
    if not args.no_nats:
        problems = run(_nats_step(args, loaded, check_only=True))
        if problems is None:
            return EXIT_FAILURE
        if problems:
            print(
                "tocsin: repartition refused, nothing was changed: messages routed under "
                f"{args.from_count} partition(s) are not done: {'; '.join(problems)}. "
                "Start the routers until they are, stop them, and run again",
                file=sys.stderr,
            )
            return EXIT_FAILURE
    try:
        done = repartition.run(
            args.data_dir,
            from_count=args.from_count,
            to_count=args.to_count,
            key=loaded.partitions.key,
            window_seconds=loaded.dedup_window,
            now=now_us(),
            force=args.force,
        )
    except repartition.RepartitionError as error:
        print(f"tocsin: repartition: {error}", file=sys.stderr)
        return EXIT_FAILURE
    for forced in done.forced:
        print(f"tocsin: warning: forced: {forced}", file=sys.stderr)
    for note in done.notes:
        print(f"tocsin: note: {note}", file=sys.stderr)
    spread = ", ".join(f"p{k}: {n}" for k, n in enumerate(done.moved))
    print(
        f"repartitioned {args.from_count} -> {args.to_count}: {sum(done.moved)} open alert(s)"
        f" moved ({spread}), {done.silences} silence(s) copied to each; the old logs are"
        f" in {done.archive} (read-only)"
    )
    if args.no_nats:
        print("the consumers are unchanged (--no-nats): change them as docs/deployment.md says")
        return EXIT_OK
    deleted = run(_nats_step(args, loaded, check_only=False))
    if deleted is None:
        return EXIT_FAILURE
    print(
        f"consumers for {args.to_count} partition(s) made; removed: {', '.join(deleted) or 'none'}"
    )
    return EXIT_OK


async def _nats_step(
    args: argparse.Namespace, loaded: config.Config, *, check_only: bool
) -> list[str] | None:
    """The broker's side: what the old shape's consumers still hold (``check_only``),
    or the consumers changed to the new shape (the names removed). ``None`` after
    saying why NATS could not be asked."""
    from nats.errors import Error as NatsError

    from tocsin.bus import repartition

    url, nc, errors = await _connect(args)
    if nc is None:
        print(
            "tocsin: repartition: NATS is needed for its consumers (or --no-nats)", file=sys.stderr
        )
        return None
    js = nc.jetstream(timeout=10)
    try:
        if check_only:
            return await repartition.undrained(js, args.from_count)
        replicas, ack_wait = loaded.nats.replicas or 1, loaded.nats.ack_wait
        deleted = await repartition.reshape(js, args.from_count, args.to_count, replicas, ack_wait)
        return [str(c) for c in deleted]
    except (NatsError, TimeoutError) as error:
        left = ", ".join(str(c) for c in repartition.obsolete(args.from_count, args.to_count))
        print(
            f"tocsin: repartition: NATS at {url} refused or did not answer: {error!r}"
            f"{_refusal(errors)}; {'nothing was changed' if check_only else 'the logs are moved'}"
            + ("" if check_only else f"; remove by hand (an admin login): {left}"),
            file=sys.stderr,
        )
        return None
    finally:
        await nc.close()


def _instant(option: str, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return parse_instant(value)
    except ValueError as error:
        raise UsageError(f"{option}: {error}") from error


def _forensics(args: argparse.Namespace) -> int:
    from tocsin.store import forensics
    from tocsin.store.compaction import CompactionError, verify_archives
    from tocsin.store.eventlog import db_path, partition_logs

    partitions = partition_logs(args.data_dir)
    if partitions:
        return _across_partitions(args, partitions)
    path = db_path(args.data_dir)
    out = sys.stdout
    try:
        if args.command == "replay":
            rows = forensics.replay(
                path,
                since=_instant("--since", args.since),
                until=_instant("--until", args.until),
                fingerprint=args.fingerprint,
                alert_id=args.alert,
                type_=args.type_,
                archives=args.archive,
            )
            count = 0
            for entry in rows:
                out.write(
                    msgspec.json.encode(entry).decode() if args.json else forensics.line(entry)
                )
                out.write("\n")
                count += 1
            if not args.json:
                print(f"{count} event(s)", file=sys.stderr)
            return EXIT_OK
        if args.command == "state":
            state, last_ts = forensics.state_at(path, _instant("--at", args.at))
            return _print_state(args, state, last_ts)
        if args.archive:
            try:
                for line in verify_archives(args.archive, path):
                    print(f"archive {line}")
            except CompactionError as error:
                print(f"tocsin: archive check FAILED: {error}", file=sys.stderr)
                return EXIT_FAILURE
        heads = [("--head", _head(args.head))] if args.head is not None else []
        verdict = forensics.verify(path)
        if not verdict.ok:
            print(
                f"tocsin: verify FAILED at seq {verdict.bad_seq}: {verdict.problem} "
                f"({verdict.events} event(s) before it were sound)",
                file=sys.stderr,
            )
            return EXIT_FAILURE
        print(
            f"ok: {verdict.events} event(s), seq {verdict.first_seq}..{verdict.last_seq}, "
            f"hash chain and indexed columns intact; projection rebuilt from scratch "
            f"({verdict.alerts} alert(s), {verdict.open_alerts} open), checked against "
            f"{verdict.snapshots} snapshot(s), in {verdict.seconds:.2f}s"
        )
        if args.against_nats:
            anchored = run(_anchored_head(args))
            if anchored is None:
                return EXIT_FAILURE
            heads.append(("the anchor in NATS", anchored))
        return _check_heads(path, heads, verdict.last_seq or 0)
    except forensics.LogMissing as error:
        print(f"tocsin: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except BrokenPipeError:  # e.g. `tocsin replay | head`
        return EXIT_OK


def _print_state(args: argparse.Namespace, state: State, last_ts: int | None) -> int:
    """``tocsin state``'s answer, of one log or of a partitioned data dir's merged
    projection alike (DESIGN.md section 6: ``--json`` or lines for people)."""
    from tocsin.store import forensics

    out = sys.stdout
    report = forensics.state_report(state, last_ts)
    if args.json:
        out.write(msgspec.json.encode(report).decode() + "\n")
        return EXIT_OK
    deliveries = Counter(d.status for d in state.deliveries.values())
    print(
        f"state as of seq {report.as_of_seq} ({report.as_of or 'empty log'}): "
        f"{len(report.alerts)} alert(s), {len(state.open_by_fingerprint)} open; "
        f"deliveries: {deliveries['delivered']} delivered, "
        f"{deliveries['pending']} pending, {deliveries['retrying']} retrying, "
        f"{deliveries['dead']} dead-lettered"
    )
    for a in report.alerts:
        print(
            f"{a.id}  {a.status:<8} {a.severity:<8} x{a.occurrences:<5} "
            f"({a.suppressed_count} suppressed)  told {','.join(a.receivers) or '-'}: "
            f"{a.last_delivery_status or '-'}  {a.last_seen}  {a.summary}"
        )
    for g in report.groups:
        print(
            f"group {g.group_key}  {g.firing} firing of {len(g.alert_ids)}, "
            f"{g.notifications} notification(s), next due {g.next_due_at or '-'}"
        )
    return EXIT_OK


def _across_partitions(args: argparse.Namespace, partitions: list[tuple[int, Path]]) -> int:
    """``replay``, ``state`` and ``verify`` of a data dir whose logs are its partitions'
    (DESIGN.md section 17): ``replay`` merges their rows by time, each marked with its
    partition (``p<k>`` first on a line, ``"partition"`` in JSON); ``state`` prints the
    partitions' projections merged into one (``core.merged``), in the shape of one
    log's; ``verify`` checks every chain. Archives and anchors belong to one log: they
    are asked of ``<data-dir>/p<k>``."""
    from tocsin.store import forensics
    from tocsin.store.eventlog import partition_dir

    names = ", ".join(f"p{k}" for k, _ in partitions)
    one = f"--data-dir {partition_dir(args.data_dir, partitions[0][0])}"
    if getattr(args, "archive", None) or (
        args.command == "verify" and (args.head is not None or args.against_nats)
    ):
        print(
            f"tocsin: {args.data_dir} holds the logs of partitions {names}; archives and "
            f"anchors are read one partition at a time: give e.g. {one}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        if args.command == "state":
            state, last_ts = forensics.merged_state_at(partitions, _instant("--at", args.at))
            print(f"state of {len(partitions)} partition(s) merged: {names}", file=sys.stderr)
            return _print_state(args, state, last_ts)
        if args.command == "replay":
            return _replay_partitions(args, partitions)
        failed = False
        for k, path in partitions:
            verdict = forensics.verify(path)
            if not verdict.ok:
                failed = True
                print(
                    f"tocsin: verify FAILED in partition {k} at seq {verdict.bad_seq}: "
                    f"{verdict.problem} ({verdict.events} event(s) before it were sound)",
                    file=sys.stderr,
                )
                continue
            print(
                f"ok: partition {k}: {verdict.events} event(s), seq "
                f"{verdict.first_seq}..{verdict.last_seq}, hash chain and indexed columns "
                f"intact; projection rebuilt ({verdict.alerts} alert(s), "
                f"{verdict.open_alerts} open), in {verdict.seconds:.2f}s"
            )
        return EXIT_FAILURE if failed else EXIT_OK
    except forensics.LogMissing as error:
        print(f"tocsin: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except BrokenPipeError:
        return EXIT_OK


def _replay_partitions(args: argparse.Namespace, partitions: list[tuple[int, Path]]) -> int:
    from tocsin.store import forensics

    def marked(k: int, path: Path) -> Iterator[tuple[str, int, int, EventRecord]]:
        rows = forensics.replay(
            path,
            since=_instant("--since", args.since),
            until=_instant("--until", args.until),
            fingerprint=args.fingerprint,
            alert_id=args.alert,
            type_=args.type_,
        )
        return ((entry.ts, k, entry.seq, entry) for entry in rows)  # by time, then k

    count = 0
    out = sys.stdout
    for _, k, _, entry in heapq.merge(*(marked(k, path) for k, path in partitions)):
        if args.json:
            out.write(msgspec.json.encode({**msgspec.to_builtins(entry), "partition": k}).decode())
        else:
            out.write(f"p{k} {forensics.line(entry)}")
        out.write("\n")
        count += 1
    if not args.json:
        print(f"{count} event(s) from {len(partitions)} partition(s)", file=sys.stderr)
    return EXIT_OK


def _head(text: str) -> Head:
    try:
        return parse_head(text)
    except ValueError as error:
        raise UsageError(f"--head: {error}") from error


def _check_heads(path: Path, heads: list[tuple[str, Head]], last_seq: int) -> int:
    """The log against each anchored head (the chain itself is verified): exit 1 at
    the first it does not hold, naming what differs."""
    from tocsin.store import forensics

    for where, head in heads:
        problem = forensics.check_anchor(path, head)
        if problem is not None:
            print(f"tocsin: verify FAILED against {where}: {problem}", file=sys.stderr)
            return EXIT_FAILURE
        ahead = last_seq - head.seq
        print(
            f"ok: the log holds the head of {where}, seq {head.seq} ({head.ts or 'time not given'})"
            + (f"; {ahead} event(s) after it not anchored yet" if ahead > 0 else "")
        )
    return EXIT_OK


async def _anchored_head(args: argparse.Namespace) -> Head | None:
    """The chain head anchored in NATS, or None after saying why there is none."""
    from nats.errors import Error as NatsError

    from tocsin.bus.anchor import anchored_head

    url, nc, errors = await _connect(args)
    if nc is None:
        return None
    try:
        head = await anchored_head(nc.jetstream(timeout=10))
    except (NatsError, TimeoutError) as error:
        print(
            f"tocsin: cannot read the anchor from NATS at {url}: {error!r}{_refusal(errors)}",
            file=sys.stderr,
        )
        return None
    except ValueError as error:
        print(
            f"tocsin: verify FAILED: the anchor in NATS at {url} is unreadable: {error}",
            file=sys.stderr,
        )
        return None
    finally:
        await nc.close()
    if head is None:
        print(
            f"tocsin: verify FAILED: no chain head is anchored in NATS at {url} "
            f"({STREAM_ANCHOR} has no {ANCHOR}); the writer publishes it once it runs",
            file=sys.stderr,
        )
    return head


def _compact(args: argparse.Namespace) -> int:
    """The running service compacts its own log (it alone writes it): when one holds the
    data dir's writer lock it is asked over NATS on ``tocsin.control.compact``; with none
    running, the log is compacted here (offline)."""
    from tocsin.store.compaction import CompactionError, compact

    before = _instant("--before", args.before)
    assert before is not None
    archive = args.archive.resolve()
    answer = None
    if _writer_running(args.data_dir):
        answer = run(_ask_to_compact(args, before, archive))
    if answer is None:  # none runs (or it did not answer: compact says so)
        try:
            done = compact(args.data_dir, before, archive)
        except CompactionError as error:
            print(f"tocsin: {error}", file=sys.stderr)
            return EXIT_FAILURE
        rows = (done.rows, done.first_seq, done.last_seq) if done is not None else None
        by = "offline"
    elif answer.error:
        print(f"tocsin: the running service refused to compact: {answer.error}", file=sys.stderr)
        return EXIT_FAILURE
    else:
        rows = (answer.rows, answer.first_seq or 0, answer.last_seq or 0) if answer.rows else None
        by = "by the running service"
    if rows is None:
        print(f"nothing to compact: no event was appended before {args.before}")
        return EXIT_OK
    print(
        f"compacted {rows[0]} event(s), seq {rows[1]}..{rows[2]}, into {archive} ({by}); "
        "the state is unchanged (a base snapshot covers them)"
    )
    return EXIT_OK


def _writer_running(data_dir: Path) -> bool:
    """Whether a service holds the log's writer lock in ``data_dir``."""
    lock = WriterLock(data_dir)
    if lock.acquire():
        lock.release()
        return False
    return True


async def _ask_to_compact(args: argparse.Namespace, before: int, archive: Path) -> Any:
    """The running service's ``CompactReply``, or ``None`` when no service of this data
    dir answers (none runs, or NATS is out of reach)."""
    from nats.errors import NoRespondersError
    from nats.errors import TimeoutError as NatsTimeout

    from tocsin.pipeline.control import CompactReply, CompactRequest

    request = CompactRequest(
        data_dir=str(args.data_dir.resolve()), before=before, archive=str(archive)
    )
    _, nc, _ = await _connect(args, quiet=True)
    if nc is None:
        return None
    try:
        reply = await nc.request(COMPACT, msgspec.json.encode(request), timeout=COMPACT_PATIENCE)
    except (NoRespondersError, NatsTimeout):
        return None
    finally:
        await nc.close()
    return msgspec.json.decode(reply.data, type=CompactReply)


def _schemas(out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    for name, body in contracts.json_schemas().items():
        (out / name).write_bytes(body)
    print(f"wrote {len(contracts.SCHEMA_TYPES)} schemas to {out}")
    return EXIT_OK


async def _connect(
    args: argparse.Namespace, quiet: bool = False
) -> tuple[str, Any, list[Exception]]:
    """A NATS connection for a one-shot command, or ``None`` after saying why. It logs in
    as ``[nats]`` of ``--config`` and ``TOCSIN_NATS_*`` say (only that section is read).
    Returns the URL to show (credentials redacted) and the list the server's asynchronous
    errors (e.g. a permissions violation) are collected in. ``quiet``: a server out of
    reach is not an error (the caller has another way), so nothing is printed."""
    from tocsin.bus.connection import connect_options
    from tocsin.bus.embedded import resolve_nats_url
    from tocsin.observability.redact import display_url

    login = connect_options(config.load_nats_login(args.config))
    url = resolve_nats_url(args.nats_url, args.data_dir)
    shown = display_url(url)
    import nats
    from nats.errors import Error as NatsError
    from nats.errors import NoServersError

    errors: list[Exception] = []

    async def collect(error: Exception) -> None:
        errors.append(error)

    try:
        # nats-py retries the first connect even without reconnects: bound it ourselves.
        nc = await asyncio.wait_for(
            nats.connect(
                server_urls(url),
                **login,
                connect_timeout=2,
                allow_reconnect=False,
                error_cb=collect,
            ),
            5,
        )
    except ssl.SSLError as error:
        print(
            f"tocsin: TLS with NATS at {shown} failed ({error}); check [nats] tls_ca, "
            "tls_cert, tls_key, tls_verify_hostname or TOCSIN_NATS_TLS_*",
            file=sys.stderr,
        )
        return shown, None, errors
    except (NoServersError, OSError, TimeoutError) as error:
        if quiet:
            return shown, None, errors
        print(
            f"tocsin: cannot reach NATS at {shown} ({error or 'no answer within 5s'}); "
            "is `tocsin serve` running? "
            "Pass --nats-url or --data-dir",
            file=sys.stderr,
        )
        return shown, None, errors
    except NatsError as error:
        if "authorization violation" not in str(error).lower():
            print(f"tocsin: NATS at {shown} refused the connection: {error}", file=sys.stderr)
            return shown, None, errors
        print(
            f"tocsin: NATS at {shown} refused the login; check [nats] in --config or "
            "TOCSIN_NATS_USER / _PASSWORD / _TOKEN / _NKEY_SEED / _CREDS",
            file=sys.stderr,
        )
        return shown, None, errors
    return shown, nc, errors


def _refusal(errors: list[Exception]) -> str:
    """The server's permissions violation behind a timeout, if it sent one."""
    denied = [str(e) for e in errors if "permissions violation" in str(e).lower()]
    return f" ({denied[-1]})" if denied else ""


async def _retry_failed(args: argparse.Namespace) -> int:
    """Ask the running service (the log's only writer) to re-queue dead letters."""
    from nats.errors import NoRespondersError
    from nats.errors import TimeoutError as NatsTimeout

    from tocsin.pipeline.control import RetryReply, RetryRequest

    if args.since is not None:
        _instant("--since", args.since)  # refuse a bad time here, with exit code 2
    request = RetryRequest(receiver=args.receiver, since=args.since, by="tocsin retry-failed")
    count = _loaded(args).partitions.count
    # A partitioned service re-queues each partition's dead letters on its own subject.
    subjects = [retry_failed_subject(k) for k in range(count)] if count > 1 else [RETRY_FAILED]
    url, nc, errors = await _connect(args)
    if nc is None:
        return EXIT_FAILURE
    answers: list[RetryReply] = []
    try:
        for subject in subjects:
            try:
                reply = await nc.request(subject, msgspec.json.encode(request), timeout=30)
            except (NoRespondersError, NatsTimeout):
                if _refusal(errors):
                    print(
                        f"tocsin: NATS at {url} refused the request{_refusal(errors)}",
                        file=sys.stderr,
                    )
                    return EXIT_FAILURE
                print(
                    f"tocsin: no tocsin service answered on {subject} at {url}; "
                    "retry-failed is carried out by the running service (start `tocsin serve` "
                    "or `tocsin router`)",
                    file=sys.stderr,
                )
                return EXIT_FAILURE
            answers.append(msgspec.json.decode(reply.data, type=RetryReply))
    finally:
        await nc.close()
    for answer in answers:
        if answer.error:
            print(f"tocsin: retry-failed refused: {answer.error}", file=sys.stderr)
            return EXIT_USAGE if answer.status in (404, 422) else EXIT_FAILURE
    answer = RetryReply(
        requeued=sum(a.requeued for a in answers),
        notification_ids=[nid for a in answers for nid in a.notification_ids],
    )
    scope = f" for receiver {args.receiver}" if args.receiver else ""
    print(f"re-queued {answer.requeued} dead-lettered notification(s){scope}")
    for nid in answer.notification_ids:
        print(f"  {nid}")
    return EXIT_OK


async def _reload(args: argparse.Namespace, data_dir: str) -> int:
    """Ask the service that writes this data dir's log to reload its config file: exit
    0 with the version now running, 2 when it refused the file (its message), 1 when no
    service answered."""
    from nats.errors import NoRespondersError
    from nats.errors import TimeoutError as NatsTimeout

    from tocsin.pipeline.reload import ReloadReply, ReloadRequest

    request = ReloadRequest(data_dir=data_dir)  # resolved by the caller, off the loop
    url, nc, errors = await _connect(args)
    if nc is None:
        return EXIT_FAILURE
    try:
        reply = await nc.request(RELOAD, msgspec.json.encode(request), timeout=30)
    except (NoRespondersError, NatsTimeout):
        print(
            f"tocsin: no tocsin service for {args.data_dir} answered on {RELOAD} at {url}"
            f"{_refusal(errors)}; reload asks the running service (`tocsin serve` or"
            " `tocsin router`)",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    finally:
        await nc.close()
    answer = msgspec.json.decode(reply.data, type=ReloadReply)
    if answer.error:
        print(f"tocsin: reload refused, the running config stays: {answer.error}", file=sys.stderr)
        return EXIT_USAGE
    print(f"config reloaded: version {answer.version}{'' if answer.changed else ' (unchanged)'}")
    return EXIT_OK


class _Progress:
    """``tocsin simulate``'s progress bar: one line on stderr, redrawn at most every
    0.2 s, cleared at the end (``simulate.progress_line`` says what it shows)."""

    def __init__(self, total: int) -> None:
        from tocsin.core import simulate

        self._line = simulate.progress_line
        self._total = total
        self._started = self._drawn = time.monotonic()
        self._before = self._in_part = 0  # rows of the logs read before, and of this one

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if now - self._drawn >= 0.2 or done == self._total:
            self._drawn = now
            line = self._line(done, self._total, now - self._started)
            sys.stderr.write(f"\r{line}\x1b[K")
            sys.stderr.flush()

    def note(self, text: str) -> None:
        """Say what runs after the rows are read (comparing takes a few seconds on a
        million events, and a still terminal looks hung)."""
        sys.stderr.write(f"\r{text}\x1b[K")
        sys.stderr.flush()

    def part(self) -> Callable[[int], None]:
        """The rows callback of the next log read (a partitioned data dir's logs are
        read one after the other): its rows counted after those of the logs before."""
        self._before += self._in_part
        self._in_part = 0

        def rows(done: int) -> None:
            self._in_part = done
            self(self._before + done)

        return rows

    def close(self) -> None:
        self.note("")


def _simulate(args: argparse.Namespace) -> int:
    """``tocsin simulate --config NEW``: the log's received events through the decision
    core under NEW (``core.simulate``), compared with what the log says was notified.
    Reads the file only, so it runs beside the service; the rows are streamed into the
    replay. A progress bar on stderr when it is a terminal (never with ``--json``).
    On a partitioned data dir (DESIGN.md section 17), each partition's log through NEW
    as its router would run it (``_partition_config``), one after the other under one
    progress bar, every timer settled to the same end; the report is their sum, and
    says how many partitions it covered."""
    from tocsin.core import simulate
    from tocsin.store import forensics
    from tocsin.store.eventlog import db_path, partition_logs

    if args.config is None:
        raise UsageError("simulate: give the config to simulate with --config NEW")
    if args.limit < 0:
        raise UsageError("simulate: --limit must be 0 or more")
    new = config.load(args.config)
    since, until = _instant("--since", args.since), _instant("--until", args.until)
    partitions = partition_logs(args.data_dir)
    logs: list[tuple[int | None, Path]] = [*partitions] or [(None, db_path(args.data_dir))]
    count = max(k for k, _ in partitions) + 1 if partitions else 1
    told: list[ev.Event] = []
    progress: _Progress | None = None
    simulations: list[simulate.Simulation] = []
    try:
        if sys.stderr.isatty() and not args.json:
            progress = _Progress(
                sum(forensics.simulation_total(path, since, until) for _, path in logs)
            )
        for k, path in logs:
            on_rows = None if progress is None else progress.part()
            inputs = forensics.simulation_rows(path, told, since, until, on_rows=on_rows)
            rules = _simulation_rules(new if k is None else _partition_config(new, k, count))
            simulation = simulate.Simulation(rules, ids="sim" if k is None else f"sim-p{k}")
            simulation.feed(inputs)
            simulations.append(simulation)
        lasts = [s.out.last for s in simulations if s.out.last is not None]
        end = until if until is not None else max(lasts, default=None)
        runs = [simulation.settle(end) for simulation in simulations]
        if progress is not None:
            progress.note("comparing with what the log notified...")
        told_after = [told for run in runs for told in simulate.notified(run.facts, run.alias)]
        difference = simulate.compare(simulate.notified(told), told_after)
    except forensics.LogMissing as error:
        raise UsageError(str(error)) from error
    finally:
        if progress is not None:
            progress.close()
    run = runs[0] if len(runs) == 1 else simulate.combined(runs)
    covered = len(partitions) if partitions else None
    if args.json:
        report = simulate.report_json(difference, run.received, new.digest(), covered)
        print(msgspec.json.encode(report).decode())
    elif args.markdown:
        lines = simulate.report_markdown(difference, run, new.digest(), until, args.limit, covered)
        print("\n".join(lines))
    else:
        print("\n".join(simulate.report_lines(difference, run.received, new.digest(), covered)))
    return EXIT_OK


def _simulation_rules(candidate: config.Config) -> Rules:
    """The candidate config as the decision core takes it (``simulate.Rules``)."""
    from tocsin.core import simulate
    from tocsin.pipeline.reload import loaded_fact

    return simulate.Rules(
        loaded=loaded_fact(candidate, "simulate"),
        routing=RoutingTable.compile(candidate.routes, candidate.inhibit),
        intervals=candidate.time_intervals,
        window_seconds=candidate.dedup_window,
    )


def _partition_config(candidate: config.Config, k: int, count: int) -> config.Config:
    """The candidate config as the router of partition ``k`` of a data dir of ``count``
    partitions runs it (``config.for_partition``, under the data dir's count whatever
    the candidate's): only the heartbeats whose beats reach ``k``, so that a heartbeat
    that never beats in the simulation is found missed once, not once per partition."""
    sized = msgspec.structs.replace(candidate.partitions, count=count)
    return config.for_partition(dataclasses.replace(candidate, partitions=sized), k)


def _config_check(args: argparse.Namespace) -> int:
    """``tocsin config check``: the file loaded exactly as the service loads it (a bad one
    raises ``ConfigError``, exit 2), then what it says, then what it leaves unrouted."""
    path = args.file or args.config
    if path is None:
        raise UsageError("config check: give a file (or --config / TOCSIN_CONFIG)")
    checked = config.load(path)
    print(f"config OK: {checked.source} (version {checked.digest()})")
    print(
        f"routes ({len(checked.routes)}, every matching route applies, in order,"
        " until one with continue = false):"
    )
    for index, route in enumerate(checked.routes):
        match = {k: v for k, v in msgspec.structs.asdict(route.match).items() if v is not None}
        shown = msgspec.json.encode(match).decode() if match else "{}"
        if route.matchers:
            shown += f" matchers {msgspec.json.encode(route.matchers).decode()}"
        elif not match:
            shown += " (everything)"
        stop = " (continue = false)" if not route.continue_ else ""
        print(f"  route[{index}] match {shown} -> {', '.join(route.receivers)}{stop}")
        if route.grouping.grouped:
            print(f"    grouped: {_grouping_text(route)}")
        if route.escalate:
            steps = "; ".join(
                f"after {s.after:g}s {', '.join(s.receivers)}" for s in route.escalate
            )
            print(f"    escalates when unacknowledged: {steps}")
    if checked.flapping is not None:
        print(
            f"flapping: {checked.flapping.changes} changes within {checked.flapping.window:g}s"
            " hold an alert's news until it is stable that long"
        )
    print(f"receivers ({len(checked.receivers)}):")
    for name, receiver in sorted(checked.receivers.items()):
        print(f"  {name}: {receiver.channel}")
    for rule in checked.inhibit:
        equal = f" with equal {', '.join(rule.equal)}" if rule.equal else ""
        print(f"inhibit {rule.name}: a firing source mutes its targets{equal}")
    if checked.time_intervals.named:
        print(f"time intervals: {', '.join(sorted(checked.time_intervals.named))}")
    for beat, every in sorted(checked.heartbeats.items()):
        print(f"heartbeat {beat}: every {every.every_seconds:g}s + {every.grace_seconds:g}s grace")
    table = RoutingTable.compile(checked.routes)
    for severity in unreachable_severities(table):
        print(
            f"tocsin: warning: no route delivers {severity} alerts: each would open unrouted "
            "and reach nobody (add a route for them, or a last [[route]] with match = {})",
            file=sys.stderr,
        )
    _partitions_check(checked)
    return EXIT_OK


def _partitions_check(checked: config.Config) -> None:
    """What ``[partitions]`` says, and a warning for each grouped route whose groups
    may span partitions (each part would be notified apart)."""
    count, key = checked.partitions.count, checked.partitions.key
    if count < 2:
        return
    by = ", ".join(key) if key else "fingerprint"
    print(f"partitions: {count}, by {by} (dedup, grouping and inhibition are per partition)")
    for index in partition.uncovered_routes(checked.routes, key):
        group_by = ", ".join(checked.routes[index].group_by)
        print(
            f"tocsin: warning: route[{index}] groups by {group_by}, which does not cover the"
            f" partition key ({by}): one of its groups may span partitions and be notified"
            f" once per partition (set [partitions] key to fields its group_by includes)",
            file=sys.stderr,
        )


ROUTE_TEST_SOURCE = "prometheus"  # what an alert from Alertmanager's API has (section 14)


def _import_alertmanager(path: str) -> int:
    """``tocsin config import-alertmanager FILE``: the translation on stdout, its
    losses on stderr; exit 2 when the file is unreadable or nothing usable remains."""
    import yaml

    from tocsin.core import amimport

    try:
        parsed = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise UsageError(f"import-alertmanager: {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise UsageError(f"import-alertmanager: {path}: not YAML: {error}") from None
    try:
        translation = amimport.translate(parsed)
    except amimport.TranslationError as error:
        raise UsageError(f"import-alertmanager: {path}: {error}") from None
    for loss in translation.losses:
        print(f"tocsin: import-alertmanager: {loss}", file=sys.stderr)
    if not translation.usable:
        print("tocsin: import-alertmanager: nothing usable remains", file=sys.stderr)
        return EXIT_USAGE
    sys.stdout.write(translation.toml)
    return EXIT_OK


def _route_test(args: argparse.Namespace) -> int:
    """``tocsin route-test``: the routes of the config an alert with these fields would
    take, decided by the same ``RoutingTable`` the router uses."""
    labels: dict[str, str] = {}
    for item in args.label:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"route-test: --label {item!r}: expected k=v")
        labels[name] = value
    type_ = args.type if args.type is not None else labels.get("alertname", "")
    if args.severity is not None:
        severity = contracts.SEVERITY_ALIASES.get(args.severity.strip().lower())
        if severity is None:
            raise UsageError(f"route-test: --severity {args.severity!r}: unknown severity")
    else:  # as an alert from Alertmanager's API: missing or unknown is warning (section 14)
        severity = contracts.SEVERITY_ALIASES.get(labels.get("severity", "").lower(), "warning")
    loaded = config.load(args.config)
    table = RoutingTable.compile(loaded.routes, loaded.inhibit)
    fingerprint = ingest.default_fingerprint(type_, labels)
    matched = table.matching(severity, type_, args.source, labels)
    _, groups = table.targets_for(severity, type_, args.source, labels, fingerprint)
    keys = {(g.route, g.receiver): g.key for g in groups}
    receivers = table.receivers_for(severity, type_, args.source, labels)
    told = [
        (index, receiver, keys.get((index, receiver)))
        for index in matched
        for receiver in table.routes[index].receivers
    ]
    if args.json:
        routes = [{"route": i, "receiver": r, "group_key": k} for i, r, k in told]
        print(msgspec.json.encode({"receivers": receivers, "routes": routes}).decode())
        return EXIT_OK
    print(",".join(receivers))
    for index, receiver, key in told:
        print(f"  route[{index}] -> {receiver}  group {key or '(not grouped)'}")
    return EXIT_OK


def _grouping_text(route: Route) -> str:
    """A grouped route's keys in one line, as ``config check`` shows them."""
    parts = [
        f"group_by {msgspec.json.encode(route.group_by).decode()}",
        f"group_wait {route.group_wait:g}s",
        f"group_interval {route.group_interval:g}s",
        "no repeat"
        if route.repeat_interval is None
        else f"repeat_interval {route.repeat_interval:g}s",
        f"max_alerts {route.max_alerts}",
    ]
    if route.active_time_intervals:
        parts.append(f"active in {', '.join(route.active_time_intervals)}")
    if route.mute_time_intervals:
        parts.append(f"muted in {', '.join(route.mute_time_intervals)}")
    return "; ".join(parts)


_PUBLISH_FLAGS = {"labels": "--label", "status": "--resolved"}  # the rest: --<field>


def _check_publish(payload: bytes, source: str) -> None:
    """Refuse (``UsageError``) what the service would reject, before connecting; warn
    on stderr of fields it would accept but ignore (``ingest`` is the one judge of
    which fields are known), so a flag that adds one is not a silent no-op."""
    checked = ingest.parse(payload, default_source=source, received_at=now_us())
    if isinstance(checked, ingest.Rejection):
        field = (checked.field or "").split(".")[0]
        flag = _PUBLISH_FLAGS.get(field, f"--{field.replace('_', '-')}") if field else "event"
        raise UsageError(f"{flag}: the service would reject this event: {checked.message}")
    if checked.ignored_fields:
        names = ", ".join(checked.ignored_fields)
        print(
            f"tocsin: warning: the service will ignore field(s) it does not know: {names}",
            file=sys.stderr,
        )


async def _publish(args: argparse.Namespace) -> int:
    labels: dict[str, str] = {}
    for item in args.label:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--label {item!r}: expected key=value")
        labels[key] = value
    event_id = args.event_id or new_id()
    body: dict[str, object] = {
        "type": args.type,
        "severity": args.severity,
        "summary": args.summary,
        "source": args.source,
        "status": "resolved" if args.resolved else "firing",
        "labels": labels,
        "event_id": event_id,
    }
    if args.fingerprint is not None:
        body["fingerprint"] = args.fingerprint
    if args.timestamp is not None:
        body["timestamp"] = args.timestamp
    if args.ends_at is not None:
        body["ends_at"] = args.ends_at
    if args.details is not None:
        try:
            body["details"] = msgspec.json.decode(args.details)
        except msgspec.DecodeError as error:
            raise UsageError(f"--details: not JSON ({error})") from error
    payload = msgspec.json.encode(body)
    _check_publish(payload, args.source)
    url, nc, errors = await _connect(args)
    if nc is None:
        return EXIT_FAILURE
    try:
        subject = IN_PREFIX + args.source
        ack = await nc.jetstream().publish(subject, payload, headers={MSG_ID: event_id}, timeout=5)
    except Exception as error:
        print(f"tocsin: publish to {url} failed: {error}{_refusal(errors)}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        await nc.close()
    print(f"published {event_id} to {subject} (stream {ack.stream}, seq {ack.seq})")
    return EXIT_OK


async def _heartbeat(args: argparse.Namespace) -> int:
    """Publish one beat; a name the given config lacks is bad usage (exit 2)."""
    name = args.name
    if not config.RECEIVER_NAME.match(name):
        raise UsageError(f"NAME: {name!r}: heartbeat names are 1-64 of A-Z a-z 0-9 _ -")
    if args.config is not None:
        known = config.load_heartbeats(args.config)
        if name not in known:
            configured = ", ".join(sorted(known)) or "none"
            raise UsageError(
                f"NAME: no [heartbeats.{name}] in {args.config} (configured: {configured}); "
                "the service would reject the beat"
            )
    url, nc, errors = await _connect(args)
    if nc is None:
        return EXIT_FAILURE
    event_id = new_id()
    subject = heartbeat_subject(name)
    try:
        ack = await nc.jetstream().publish(subject, b"", headers={MSG_ID: event_id}, timeout=5)
    except Exception as error:
        print(f"tocsin: beat to {url} failed: {error}{_refusal(errors)}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        await nc.close()
    print(f"beat {event_id} of {name} published to {subject} (stream {ack.stream}, seq {ack.seq})")
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
