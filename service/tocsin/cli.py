"""``tocsin``: one entry point, subcommands of DESIGN.md section 6.

Exit codes: 0 ok, 1 runtime failure, 2 bad usage or bad config (the message names it).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

import msgspec

from tocsin import __version__, broker, config, contracts
from tocsin.embedded import NatsServerNotFound

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"tocsin: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _common(parser: argparse.ArgumentParser, nats: bool) -> None:
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
            help="NATS server URL (env TOCSIN_NATS_URL); default: <data-dir>/nats.url, "
            "then nats://127.0.0.1:4222",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tocsin", description="Event-sourced alerting over NATS JetStream.")
    parser.add_argument("--version", action="version", version=f"tocsin {__version__}")
    parser.add_argument(
        "--log-level",
        default=os.environ.get("TOCSIN_LOG_LEVEL", "info"),
        choices=["debug", "info", "warning", "error"],
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = sub.add_parser("serve", help="router + delivery workers + HTTP API in one process")
    _common(serve, nats=True)
    serve.add_argument(
        "--http",
        default=os.environ.get("TOCSIN_HTTP", "127.0.0.1:8080"),
        help="HTTP listen address (env TOCSIN_HTTP)",
    )

    router = sub.add_parser("router", help="the router (and outcome recorder) alone")
    _common(router, nats=True)

    deliver = sub.add_parser("deliver", help="delivery workers alone")
    _common(deliver, nats=True)
    deliver.add_argument(
        "--receiver",
        action="append",
        dest="receivers",
        help="deliver only to this receiver (repeatable); default: all",
    )

    publish = sub.add_parser("publish", help="publish one alert event")
    _common(publish, nats=True)
    publish.add_argument("--type", required=True)
    publish.add_argument("--severity", required=True)
    publish.add_argument("--summary", required=True)
    publish.add_argument("--label", action="append", default=[], metavar="K=V")
    publish.add_argument("--source", default="cli")
    publish.add_argument("--resolved", action="store_true")
    publish.add_argument("--fingerprint")

    schemas = sub.add_parser("schemas", help="write the JSON Schemas of the wire contract")
    schemas.add_argument("--out", type=Path, default=Path("schemas"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return _dispatch(args)
    except (config.ConfigError, UsageError) as error:
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


def _dispatch(args: argparse.Namespace) -> int:
    command = args.command
    if command == "schemas":
        return _schemas(args.out)
    if command == "publish":
        return asyncio.run(_publish(args))
    from tocsin import service

    options = service.Options(
        data_dir=args.data_dir,
        config=config.load(args.config),
        nats_url=args.nats_url,
        http=getattr(args, "http", None) if command == "serve" else None,
        run_router=command in ("serve", "router"),
        run_delivery=command in ("serve", "deliver"),
        receivers=getattr(args, "receivers", None),
        embedded_nats=command == "serve" and not args.nats_url,
    )
    return asyncio.run(service.run(options))


def _schemas(out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    for name, body in contracts.json_schemas().items():
        (out / name).write_bytes(body)
    print(f"wrote {len(contracts.SCHEMA_TYPES)} schemas to {out}")
    return EXIT_OK


async def _publish(args: argparse.Namespace) -> int:
    from tocsin.service import resolve_nats_url

    labels: dict[str, str] = {}
    for item in args.label:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--label {item!r}: expected key=value")
        labels[key] = value
    event_id = uuid.uuid4().hex
    body: dict[str, object] = {
        "type": args.type,
        "severity": args.severity,
        "summary": args.summary,
        "source": args.source,
        "status": "resolved" if args.resolved else "firing",
        "labels": labels,
        "event_id": event_id,
    }
    if args.fingerprint:
        body["fingerprint"] = args.fingerprint
    url = resolve_nats_url(args.nats_url, args.data_dir)
    import nats
    from nats.errors import NoServersError

    async def quiet(error: Exception) -> None:
        return None

    try:
        # nats-py retries the first connect even without reconnects: bound it ourselves.
        nc = await asyncio.wait_for(
            nats.connect(url, connect_timeout=2, allow_reconnect=False, error_cb=quiet), 5
        )
    except (NoServersError, OSError, TimeoutError) as error:
        print(
            f"tocsin: cannot reach NATS at {url} ({error or 'no answer within 5s'}); "
            "is `tocsin serve` running? "
            "Pass --nats-url or --data-dir",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    try:
        subject = broker.IN_PREFIX + args.source
        ack = await nc.jetstream().publish(
            subject, msgspec.json.encode(body), headers={broker.MSG_ID: event_id}, timeout=5
        )
    except Exception as error:
        print(f"tocsin: publish to {url} failed: {error}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        await nc.close()
    print(f"published {event_id} to {subject} (stream {ack.stream}, seq {ack.seq})")
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
