"""Configuration: TOML with ``${VAR}`` expansion, typed and validated in one place.

Every error names the key at fault (``retry.backoff[2]: ...``) and the CLI turns it into
exit code 2. With no file, ``default_config`` builds receivers and routes from the
environment (DESIGN.md section 8).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import tomllib
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from msgspec import Struct

from tocsin.bus.connection import NatsLogin
from tocsin.channels import (
    DEFAULT_CONCURRENCY,
    ChannelKind,
    ReceiverConfig,
    SmtpSettings,
    registry,
)
from tocsin.core import escalation, heartbeats, ingest, partition
from tocsin.core import events as ev
from tocsin.core.contracts import SEVERITY_ALIASES
from tocsin.core.decide.dedup import DEFAULT_WINDOW_SECONDS
from tocsin.core.decide.inhibit import InhibitRule, check_equal
from tocsin.core.decide.route import Route
from tocsin.core.errors import ConfigError
from tocsin.core.groups import check_group_by
from tocsin.core.matchers import Match, MatcherSyntaxError, StrOrList, parse_matchers
from tocsin.core.timeintervals import Interval, TimeIntervals, TimeIntervalSpec, compile_interval
from tocsin.core.times import Duration, decode_duration
from tocsin.core.views import DEFAULT_NOTIFY
from tocsin.observability.redact import Secret, Secrets, masked_tree, secrets_of

RECEIVER_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

MAX_REPLICAS = 5  # JetStream keeps at most five copies of a stream
MIN_DEDUP_WINDOW = 1.0  # seconds
MIN_RETENTION = 3600.0  # seconds: compaction is checked hourly; less would archive the hour

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class DedupSection(Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    window: Duration = Duration(DEFAULT_WINDOW_SECONDS)


class RetrySection(Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    max_attempts: int = 8
    backoff: list[Duration] = msgspec.field(
        default_factory=lambda: [Duration(s) for s in (1, 5, 30, 120, 600)]
    )


class SmtpSection(Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    host: str | None = None
    port: int | None = None
    sender: str | None = msgspec.field(default=None, name="from")
    username: str | None = None
    password: str | None = None
    starttls: bool | None = None
    tls: bool | None = None


class NatsSection(Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """``ack_wait``: how long JetStream waits for an ack before redelivering: after a
    crash, unacked messages come back this much later (delivery consumers also allow for
    their receiver's timeout). ``replicas``: copies JetStream keeps of tocsin's streams and
    durable consumers (3 on a three-node cluster); unset in the file, it is
    ``TOCSIN_NATS_REPLICAS``, else 1. The rest is how to log in to NATS: one of user + password,
    token, NKey seed file or ``.creds`` file, and TLS; ``TOCSIN_NATS_*`` fill what the
    file leaves out (``NATS_ENV``)."""

    ack_wait: Duration = Duration(30.0)
    replicas: int | None = None
    user: str | None = None
    password: Secret | None = None
    token: Secret | None = None
    nkey_seed: str | None = None
    creds: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_verify_hostname: bool | None = None


# [nats] key -> the environment variable that fills it when the file leaves it out.
NATS_ENV = {
    "user": "TOCSIN_NATS_USER",
    "password": "TOCSIN_NATS_PASSWORD",
    "token": "TOCSIN_NATS_TOKEN",
    "nkey_seed": "TOCSIN_NATS_NKEY_SEED",
    "creds": "TOCSIN_NATS_CREDS",
    "tls_ca": "TOCSIN_NATS_TLS_CA",
    "tls_cert": "TOCSIN_NATS_TLS_CERT",
    "tls_key": "TOCSIN_NATS_TLS_KEY",
    "tls_verify_hostname": "TOCSIN_NATS_TLS_VERIFY_HOSTNAME",
}


class LogSection(Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """How often the projection is snapshotted (0: never). Start-up folds only the
    events after the newest snapshot. ``retention`` (default: none, keep every event):
    the running service moves events older than this into archives in the data dir,
    checking every hour."""

    snapshot_every: int = 50_000
    retention: Duration | None = None


class AlertsSection(Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """``keep_resolved``: how long resolved alerts, delivered notifications and ended
    silences stay in memory (``core.retention``); older ones are read from the log
    file when asked for. ``resolve_timeout``: an alert with no ``ends_at`` that sees no
    event for this long is resolved by the clock (DESIGN.md section 11); none by
    default."""

    keep_resolved: Duration = Duration(24 * 3600.0)
    resolve_timeout: Duration | None = None


class FlappingSection(Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """``[flapping]`` (DESIGN.md section 13; off unless given): a fingerprint that
    opened and resolved ``changes`` times (each opening and each resolve is one)
    within ``window`` flaps: its news is held until it has been stable for
    ``window``."""

    changes: int
    window: Duration


class DeliverySection(Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """How hard delivery workers push: sends under way per receiver per process, each
    with a connection of its own to an HTTP receiver (``ChannelEnv.connections``); how
    many child processes ``tocsin serve`` runs them in (``processes``: none given, one
    per spare core, ``core.policy.processes``; 0: in its own process only); and whether
    serve's own process delivers beside its children to the receivers not throttled
    (``in_serve``, ``core.policy.processes.delivered_in_serve``): it routes a storm
    faster than one child sends it, and would idle while the child catches up."""

    concurrency: int = DEFAULT_CONCURRENCY
    processes: int | None = None
    in_serve: bool = True


class DashboardSection(Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """``notify``: the severities whose new alerts the dashboard tells an open page of
    (its notification list, and the browser's notifications where the user allows
    them); ``[]`` turns that off. Aliases (``sev1``) are normalized when loaded."""

    notify: tuple[str, ...] = DEFAULT_NOTIFY


class PartitionsSection(Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """``[partitions]`` (DESIGN.md section 17): ``count`` routers, each with its own log,
    behind ``tocsin partition``; ``key`` (optional) partitions by these fields' values
    instead of the fingerprint, so that groups by them never span partitions."""

    count: int = 1
    key: tuple[str, ...] = ()


class HeartbeatSection(Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """``[heartbeats.<name>]`` (DESIGN.md section 13): no beat for ``every + grace``
    opens a ``heartbeat.missed`` alert with this severity, summary and labels (plus
    ``heartbeat = <name>``)."""

    every: Duration
    grace: Duration = Duration(0.0)
    severity: str = "critical"
    summary: str | None = None
    labels: dict[str, str] = {}


class _File(Struct, kw_only=True, forbid_unknown_fields=True):
    dedup: DedupSection = DedupSection()
    route: list[Route] = msgspec.field(default_factory=list)
    receivers: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)
    retry: RetrySection = RetrySection()
    smtp: SmtpSection = SmtpSection()
    delivery: DeliverySection = DeliverySection()
    nats: NatsSection = NatsSection()
    log: LogSection = LogSection()
    time_intervals: dict[str, Any] = msgspec.field(default_factory=dict)
    alerts: AlertsSection = AlertsSection()
    dashboard: DashboardSection = DashboardSection()
    inhibit: list[InhibitRule] = msgspec.field(default_factory=list)
    flapping: FlappingSection | None = None
    heartbeats: dict[str, Any] = msgspec.field(default_factory=dict)
    partitions: PartitionsSection = PartitionsSection()


@dataclass(frozen=True)
class Config:
    """The validated configuration the service runs with."""

    dedup_window: float
    routes: list[Route]
    receivers: dict[str, ReceiverConfig]
    retry: RetrySection
    smtp: SmtpSettings | None
    delivery: DeliverySection = field(default_factory=DeliverySection)
    nats: NatsSection = field(default_factory=NatsSection)
    nats_login: NatsLogin = field(default_factory=NatsLogin)
    log: LogSection = field(default_factory=LogSection)
    alerts: AlertsSection = field(default_factory=AlertsSection)
    dashboard: DashboardSection = field(default_factory=DashboardSection)
    source: str = "defaults"
    kinds: dict[str, ChannelKind] = field(default_factory=dict, repr=False)
    time_intervals: TimeIntervals = field(default_factory=lambda: TimeIntervals({}))
    inhibit: list[InhibitRule] = field(default_factory=list)  # each named (``inhibit[i]``)
    flapping: FlappingSection | None = None
    heartbeats: dict[str, ev.HeartbeatRule] = field(default_factory=dict)
    partitions: PartitionsSection = field(default_factory=PartitionsSection)
    # The document as read, secrets masked (``redact.masked_tree``): what ``config.loaded``
    # and ``GET /api/v1/config`` show of it (DESIGN.md section 15).
    shown: dict[str, Any] = field(default_factory=dict, repr=False)

    def digest(self) -> str:
        """A fingerprint of the effective config (for ``config.loaded``), secrets included
        only as their hash. Inhibit rules and heartbeats count only when there are some,
        so a config without them keeps the digest it had before they existed."""
        parts: list[Any] = [
            self.dedup_window,
            self.routes,
            self.receivers,
            self.retry,
            # How many processes deliver decides nothing (and a reload cannot change
            # it): the digest every config had before ``processes`` existed.
            {"concurrency": self.delivery.concurrency},
        ]
        if self.inhibit:
            parts.append(self.inhibit)
        if self.heartbeats:
            parts.append(self.heartbeats)
        if self.time_intervals.named:  # the config version must change with them too
            parts.append(repr(sorted(self.time_intervals.named.items())))
        blob = msgspec.json.encode(parts, enc_hook=float)
        return hashlib.sha256(blob).hexdigest()[:16]


def load(path: str | os.PathLike[str] | None, environ: dict[str, str] | None = None) -> Config:
    """The config from ``path``, or the environment's defaults when ``path`` is None."""
    env = dict(os.environ if environ is None else environ)
    if path is None:
        return default_config(env)
    return from_mapping(_expand(_read_toml(path), env, ""), env, source=str(path))


def _read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    file = Path(path)
    try:
        return tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise ConfigError(f"{file}: no such config file") from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{file}: not valid TOML: {error}") from error
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{file}: cannot read: {error}") from error


def from_mapping(raw: dict[str, Any], env: dict[str, str], source: str = "inline") -> Config:
    """Validate a parsed TOML document."""
    parsed = _convert(raw, _File, "")
    if parsed.dedup.window < MIN_DEDUP_WINDOW:
        # A bucket is floor(unix_time / window) in whole microseconds: a window that
        # rounds to 0 us would divide by zero on every event, and one below a second
        # would make every event a bucket of its own.
        raise ConfigError(
            f"dedup.window: must be at least {MIN_DEDUP_WINDOW:g}s, got {parsed.dedup.window:g}s"
        )
    if parsed.retry.max_attempts < 1:
        raise ConfigError("retry.max_attempts: must be at least 1")
    if any(delay < 0 for delay in parsed.retry.backoff):
        raise ConfigError("retry.backoff: delays must not be negative")
    if parsed.delivery.concurrency < 1:
        raise ConfigError("delivery.concurrency: must be at least 1")
    if parsed.delivery.processes is not None and not 0 <= parsed.delivery.processes <= 64:
        raise ConfigError(
            "delivery.processes: must be 0 (delivery in the serve process) to 64, "
            f"got {parsed.delivery.processes}; leave it out for one per spare core"
        )
    if parsed.log.snapshot_every < 0:
        raise ConfigError("log.snapshot_every: must be 0 (never) or more")
    timeout = parsed.alerts.resolve_timeout
    if timeout is not None and timeout <= 0:
        raise ConfigError("alerts.resolve_timeout: must be positive (leave it out for none)")
    if parsed.log.retention is not None and parsed.log.retention < MIN_RETENTION:
        raise ConfigError(
            f"log.retention: must be at least {MIN_RETENTION / 3600:g}h, "
            f"got {parsed.log.retention:g}s"
        )
    if parsed.alerts.keep_resolved < 0:
        raise ConfigError("alerts.keep_resolved: must not be negative")
    flapping = parsed.flapping
    if flapping is not None and flapping.changes < 2:
        raise ConfigError("flapping.changes: must be at least 2 (an opening and a resolve)")
    if flapping is not None and flapping.window <= 0:
        raise ConfigError("flapping.window: must be positive")
    if parsed.nats.ack_wait < 1:
        raise ConfigError("nats.ack_wait: must be at least 1s")
    _check_partitions(parsed.partitions)
    nats = msgspec.structs.replace(parsed.nats, replicas=_replicas(parsed.nats.replicas, env))
    kinds = registry()
    receivers = {name: _receiver(name, table, kinds) for name, table in parsed.receivers.items()}
    if not receivers:
        receivers["log"] = _receiver("log", {"channel": "log"}, kinds)
    routes = parsed.route or [Route(receivers=sorted(receivers))]
    intervals = TimeIntervals(
        {name: _time_interval(name, raw) for name, raw in parsed.time_intervals.items()}
    )
    for index, route in enumerate(routes):
        _check_route(route, index, receivers)
        _check_grouping(route, f"route[{index}]", intervals)
        problem = escalation.check(route.escalate, receivers)
        if problem is not None:
            raise ConfigError(f"route[{index}].escalate{problem[0]}: {problem[1]}")
    inhibit = _inhibit_rules(parsed.inhibit)
    smtp = _smtp(parsed.smtp, env)
    known = Secrets(secrets_of(receivers, smtp.password if smtp else None, {}))
    return Config(
        dedup_window=float(parsed.dedup.window),
        routes=routes,
        receivers=receivers,
        retry=parsed.retry,
        smtp=smtp,
        delivery=parsed.delivery,
        nats=nats,
        nats_login=nats_login(parsed.nats, env),
        log=parsed.log,
        alerts=parsed.alerts,
        dashboard=DashboardSection(notify=_notify_severities(parsed.dashboard.notify)),
        source=source,
        kinds=kinds,
        time_intervals=intervals,
        inhibit=inhibit,
        flapping=flapping,
        heartbeats=_heartbeats(parsed.heartbeats),
        partitions=parsed.partitions,
        shown=masked_tree(raw, known),
    )


def _check_partitions(section: PartitionsSection) -> None:
    if not 1 <= section.count <= partition.MAX_PARTITIONS:
        raise ConfigError(f"partitions.count: must be 1 to {partition.MAX_PARTITIONS}")
    problem = partition.check_key(section.key)
    if problem is not None:
        raise ConfigError(f"partitions.key: {problem}")


def with_partitions(config: Config, count: int | None) -> Config:
    """``config`` with ``[partitions] count`` as ``--partitions`` (env
    ``TOCSIN_PARTITIONS``) says, when given: ``tocsin serve --partitions N`` tells its
    children the count this way, whatever the file says."""
    if count is None or count == config.partitions.count:
        return config
    if not 1 <= count <= partition.MAX_PARTITIONS:
        raise ConfigError(f"--partitions: {count}: must be 1 to {partition.MAX_PARTITIONS}")
    return dataclasses.replace(
        config, partitions=msgspec.structs.replace(config.partitions, count=count)
    )


def for_partition(config: Config, index: int) -> Config:
    """``config`` as the router of partition ``index`` runs it: only the heartbeats whose
    beats reach that partition (``partition.of_heartbeat``); another partition's router
    would never see their beats and would find them missed. A ``ConfigError`` when
    ``index`` is not one of ``[partitions] count``."""
    count = config.partitions.count
    if not 0 <= index < count:
        raise ConfigError(
            f"--partition: {index} is not a partition of [partitions] count = {count} "
            f"(0 to {count - 1})"
        )
    mine = {
        name: rule
        for name, rule in config.heartbeats.items()
        if partition.of_heartbeat(name, count) == index
    }
    return dataclasses.replace(config, heartbeats=mine)


def _notify_severities(values: tuple[str, ...]) -> tuple[str, ...]:
    """``dashboard.notify`` normalized (``sev1`` -> ``critical``), each once, in order."""
    chosen: list[str] = []
    for index, value in enumerate(values):
        severity = SEVERITY_ALIASES.get(value.strip().lower())
        if severity is None:
            known = ", ".join(sorted(set(SEVERITY_ALIASES.values())))
            raise ConfigError(
                f"dashboard.notify[{index}]: unknown severity {value!r}; known: {known}"
            )
        if severity not in chosen:
            chosen.append(severity)
    return tuple(chosen)


def default_config(env: dict[str, str]) -> Config:
    """No file: critical -> every receiver from the environment, warning and error ->
    webhooks, info -> log; with nothing configured, everything goes to ``log``."""
    receivers: dict[str, dict[str, Any]] = {"log": {"channel": "log"}}
    webhooks: list[str] = []
    if env.get("ALERT_WEBHOOK_DEFAULT"):
        receivers["webhook"] = {"channel": "webhook", "url": env["ALERT_WEBHOOK_DEFAULT"]}
        webhooks.append("webhook")
    everyone = list(webhooks)
    if env.get("ALERT_EMAIL_DEFAULT"):
        addresses = [a.strip() for a in env["ALERT_EMAIL_DEFAULT"].split(",") if a.strip()]
        receivers["email"] = {"channel": "email", "to": addresses}
        everyone.append("email")
    routes: list[dict[str, Any]] = [
        {"match": {"severity": "critical"}, "receivers": everyone or ["log"]},
        {"match": {"severity": ["error", "warning"]}, "receivers": webhooks or ["log"]},
        {"match": {"severity": "info"}, "receivers": ["log"]},
    ]
    config = from_mapping({"receivers": receivers, "route": routes}, env, source="environment")
    return config


def _replicas(configured: int | None, env: dict[str, str]) -> int:
    """``nats.replicas`` from the file, else ``TOCSIN_NATS_REPLICAS``, else 1."""
    if configured is not None:
        replicas, source = configured, "nats.replicas"
    else:
        raw = env.get("TOCSIN_NATS_REPLICAS", "").strip()
        if not raw:
            return 1
        source = f"nats.replicas (from TOCSIN_NATS_REPLICAS={raw!r})"
        try:
            replicas = int(raw)
        except ValueError as error:
            raise ConfigError(f"{source}: not a whole number") from error
    if not 1 <= replicas <= MAX_REPLICAS:
        raise ConfigError(f"{source}: must be 1 to {MAX_REPLICAS} (copies JetStream keeps)")
    return replicas


def _receiver(name: str, table: dict[str, Any], kinds: dict[str, ChannelKind]) -> ReceiverConfig:
    where = f"receivers.{name}"
    if not RECEIVER_NAME.match(name):
        raise ConfigError(f"{where}: receiver names are 1-64 of A-Z a-z 0-9 _ -")
    channel = table.get("channel")
    if not isinstance(channel, str):
        raise ConfigError(f"{where}.channel: required, one of {', '.join(sorted(kinds))}")
    kind = kinds.get(channel)
    if kind is None:
        raise ConfigError(
            f"{where}.channel: unknown channel {channel!r}; known: {', '.join(sorted(kinds))}"
        )
    receiver: ReceiverConfig = _convert(table, kind.config_type, where)
    if receiver.timeout <= 0:
        raise ConfigError(f"{where}.timeout: must be positive")
    if receiver.max_per_minute is not None and receiver.max_per_minute < 1:
        raise ConfigError(f"{where}.max_per_minute: must be at least 1")
    return receiver


def _time_interval(name: str, raw: Any) -> tuple[Interval, ...]:
    """``[time_intervals.<name>]`` (one interval) or ``[[time_intervals.<name>]]`` (any
    of several, as Alertmanager's list), compiled; its zone must be known."""
    where = f"time_intervals.{name}"
    if not RECEIVER_NAME.match(name):
        raise ConfigError(f"{where}: names are 1-64 of A-Z a-z 0-9 _ -")
    entries = raw if isinstance(raw, list) else [raw]
    if not entries:
        raise ConfigError(f"{where}: give at least one interval")
    compiled = []
    for index, entry in enumerate(entries):
        at = f"{where}[{index}]" if isinstance(raw, list) else where
        spec: TimeIntervalSpec = _convert(entry, TimeIntervalSpec, at)
        try:
            zone = zoneinfo.ZoneInfo(spec.location)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as error:
            raise ConfigError(f"{at}.location: unknown time zone {spec.location!r}") from error
        compiled.append(compile_interval(spec, zone, at))
    return tuple(compiled)


def _heartbeats(table: dict[str, Any]) -> dict[str, ev.HeartbeatRule]:
    """Every ``[heartbeats.<name>]``, checked: the name is a subject token (beats come
    on ``alerts.heartbeat.<name>``), ``every`` is positive, and the alert it would open
    passes section 4's rules (``ingest``, the one judge of them), which also give its
    severity and summary their canonical form."""
    rules: dict[str, ev.HeartbeatRule] = {}
    for name, raw in table.items():
        where = f"heartbeats.{name}"
        if not RECEIVER_NAME.match(name):
            raise ConfigError(f"{where}: heartbeat names are 1-64 of A-Z a-z 0-9 _ -")
        section: HeartbeatSection = _convert(raw, HeartbeatSection, where)
        if section.every <= 0:
            raise ConfigError(f"{where}.every: must be positive")
        if section.grace < 0:
            raise ConfigError(f"{where}.grace: must not be negative")
        if heartbeats.LABEL in section.labels:
            raise ConfigError(
                f"{where}.labels.{heartbeats.LABEL}: tocsin sets it to the heartbeat's name"
            )
        summary = section.summary
        if summary is None:
            summary = f"no beat of heartbeat {name} for {section.every + section.grace:g}s"
        body = {
            "type": heartbeats.MISSED_TYPE,
            "severity": section.severity,
            "summary": summary,
            "labels": {heartbeats.LABEL: name, **section.labels},
        }
        checked = ingest.parse(
            msgspec.json.encode(body), default_source=heartbeats.SOURCE, received_at=0
        )
        if isinstance(checked, ingest.Rejection):
            key = f"{where}.{checked.field}" if checked.field else where
            raise ConfigError(f"{key}: {checked.message}")
        rules[name] = ev.HeartbeatRule(
            every_seconds=float(section.every),
            grace_seconds=float(section.grace),
            severity=checked.severity,
            summary=checked.summary,
            labels=dict(section.labels),
        )
    return rules


def load_heartbeats(
    path: str | os.PathLike[str] | None, environ: dict[str, str] | None = None
) -> dict[str, ev.HeartbeatRule]:
    """Only ``[heartbeats]`` of the file, checked as the service checks it: what
    ``tocsin heartbeat`` needs to refuse a name the service would reject, without the
    receivers' settings (and their ``${VAR}``s) that the sending machine may lack."""
    env = dict(os.environ if environ is None else environ)
    if path is None:
        return {}
    table = _read_toml(path).get("heartbeats", {})
    if not isinstance(table, dict):
        raise ConfigError("heartbeats: expected a table")
    return _heartbeats(_expand(table, env, "heartbeats"))


def _check_route(route: Route, index: int, receivers: dict[str, ReceiverConfig]) -> None:
    where = f"route[{index}]"
    if not route.receivers:
        raise ConfigError(f"{where}.receivers: name at least one receiver")
    for name in route.receivers:
        if name not in receivers:
            raise ConfigError(f"{where}.receivers: unknown receiver {name!r}")
    for value in _as_list(route.match.severity):
        if value.rstrip("*").lower() not in SEVERITY_ALIASES and not value.endswith("*"):
            raise ConfigError(f"{where}.match.severity: unknown severity {value!r}")
    _check_matchers(route.match.matchers or [], f"{where}.match.matchers")
    _check_matchers(route.matchers, f"{where}.matchers")


def _check_grouping(route: Route, where: str, intervals: TimeIntervals) -> None:
    """The grouping keys of DESIGN.md sections 11 and 12: keys that can match, timings
    that make sense, time intervals that exist."""
    problem = check_group_by(route.group_by)
    if problem is not None:
        raise ConfigError(f"{where}.group_by: {problem}")
    for key in ("group_wait", "group_interval", "repeat_interval"):
        value = getattr(route, key)
        if value is not None and value < 0:
            raise ConfigError(f"{where}.{key}: must not be negative")
    if route.repeat_interval is not None and route.repeat_interval <= 0:
        raise ConfigError(f"{where}.repeat_interval: must be positive (leave it out for none)")
    if route.max_alerts < 1:
        raise ConfigError(f"{where}.max_alerts: must be at least 1")
    for key in ("active_time_intervals", "mute_time_intervals"):
        for index, name in enumerate(getattr(route, key)):
            if name not in intervals.named:
                known = ", ".join(sorted(intervals.named)) or "none defined"
                raise ConfigError(
                    f"{where}.{key}[{index}]: no [time_intervals.{name}] (known: {known})"
                )


def _inhibit_rules(rules: list[InhibitRule]) -> list[InhibitRule]:
    """``[[inhibit]]`` (DESIGN.md section 12), each named (``inhibit[i]`` unless it
    says): a source and a target that select something, matchers that parse, known
    severities, ``equal`` keys that exist, names given once."""
    named: list[InhibitRule] = []
    seen: dict[str, str] = {}
    for index, rule in enumerate(rules):
        where = f"inhibit[{index}]"
        name = rule.name if rule.name is not None else where
        if not name.strip() or len(name) > 200:
            raise ConfigError(f"{where}.name: 1 to 200 characters, not blank")
        if name in seen:
            raise ConfigError(f"{where}.name: {name!r} is {seen[name]}'s name too")
        seen[name] = where
        for side in ("source", "target"):
            match: Match = getattr(rule, side)
            matchers: list[str] = getattr(rule, f"{side}_matchers")
            if match == Match() and not matchers:
                raise ConfigError(
                    f"{where}.{side}: give {side} (a match table) or {side}_matchers: "
                    "a rule that selects every alert would hold back everything"
                )
            for value in _as_list(match.severity):
                if value.rstrip("*").lower() not in SEVERITY_ALIASES and not value.endswith("*"):
                    raise ConfigError(f"{where}.{side}.severity: unknown severity {value!r}")
            _check_matchers(match.matchers or [], f"{where}.{side}.matchers")
            _check_matchers(matchers, f"{where}.{side}_matchers")
        problem = check_equal(rule.equal)
        if problem is not None:
            raise ConfigError(f"{where}.equal: {problem}")
        named.append(msgspec.structs.replace(rule, name=name))
    return named


def _check_matchers(texts: list[str], where: str) -> None:
    """Each entry of a ``matchers`` list parses (Alertmanager syntax, valid regexes)."""
    for index, text in enumerate(texts):
        try:
            parse_matchers(text)
        except MatcherSyntaxError as error:
            raise ConfigError(f"{where}[{index}]: {error}") from error


def _smtp(section: SmtpSection, env: dict[str, str]) -> SmtpSettings | None:
    host = section.host or env.get("SMTP_HOST")
    if not host:
        return None
    try:
        port = section.port or int(env.get("SMTP_PORT", "587"))
    except ValueError as error:
        raise ConfigError("smtp.port: SMTP_PORT is not a number") from error
    starttls = section.starttls
    if starttls is None:
        starttls = env.get("SMTP_STARTTLS", "true").lower() in ("1", "true", "yes")
    return SmtpSettings(
        host=host,
        port=port,
        sender=section.sender or env.get("SMTP_FROM", "tocsin@localhost"),
        username=section.username or env.get("SMTP_USERNAME") or None,
        password=section.password or env.get("SMTP_PASSWORD") or None,
        starttls=starttls,
        use_tls=bool(section.tls),
    )


def load_nats_login(
    path: str | os.PathLike[str] | None, environ: dict[str, str] | None = None
) -> NatsLogin:
    """Only ``[nats]`` of the file (and ``TOCSIN_NATS_*``): what the one-shot commands
    (``publish``, ``retry-failed``) need to connect, without the receivers' settings."""
    env = dict(os.environ if environ is None else environ)
    raw = {} if path is None else _read_toml(path)
    table = raw.get("nats", {})
    if not isinstance(table, dict):
        raise ConfigError("nats: expected a table")
    section: NatsSection = _convert(_expand(table, env, "nats"), NatsSection, "nats")
    return nats_login(section, env)


_SEED = re.compile(r"\s*S[A-Z2-7]{57}\s*")


def _read(file: Path, key: str) -> str:
    try:
        return file.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        raise ConfigError(f"{key}: cannot read {file}: {error.strerror}") from error


_TRUE = ("1", "true", "yes", "on")

_FALSE = ("0", "false", "no", "off")


def nats_login(section: NatsSection, env: dict[str, str]) -> NatsLogin:
    """``[nats]`` with ``TOCSIN_NATS_*`` filling what it leaves out, validated. Errors
    name the key (and the variable it came from) but never a secret's value."""
    origin: dict[str, str] = {}

    def pick(key: str) -> str | Secret | bool | None:
        value: str | Secret | bool | None = getattr(section, key)
        if isinstance(value, Secret) and not value.reveal():
            value = None  # e.g. "${NATS_PASSWORD:-}" with the variable unset
        if value is not None and value != "":
            origin[key] = f"nats.{key}"
            return value
        variable = NATS_ENV[key]
        text = env.get(variable)
        if not text:
            return None
        origin[key] = f"nats.{key} ({variable})"
        return text

    def name(key: str) -> str:
        return origin.get(key, f"nats.{key}")

    def text(key: str) -> str | None:
        value = pick(key)
        return value if isinstance(value, str) else None

    def secret(key: str) -> Secret | None:
        value = pick(key)
        if isinstance(value, str):
            return Secret(value)
        return value if isinstance(value, Secret) else None

    def existing_file(key: str) -> Path | None:
        value = text(key)
        if value is None:
            return None
        file = Path(value).expanduser()
        if not file.is_file():
            raise ConfigError(f"{name(key)}: no such file: {file}")
        if not os.access(file, os.R_OK):
            raise ConfigError(f"{name(key)}: cannot read {file}")
        return file

    user, password, token = text("user"), secret("password"), secret("token")
    nkey_seed, creds = existing_file("nkey_seed"), existing_file("creds")
    if nkey_seed is not None and not _SEED.fullmatch(_read(nkey_seed, name("nkey_seed"))):
        raise ConfigError(f"{name('nkey_seed')}: {nkey_seed} holds no NKey seed (SU...)")
    if creds is not None:
        content = _read(creds, name("creds"))
        if "BEGIN NATS USER JWT" not in content or "BEGIN USER NKEY SEED" not in content:
            raise ConfigError(
                f"{name('creds')}: {creds} is not a .creds file (a user JWT and its seed)"
            )
    if user is not None and password is None:
        raise ConfigError(f"nats.password: required with {name('user')}")
    if password is not None and user is None:
        raise ConfigError(f"nats.user: required with {name('password')}")
    given = {"user": user, "token": token, "nkey_seed": nkey_seed, "creds": creds}
    ways = [key for key, value in given.items() if value is not None]
    if len(ways) > 1:
        raise ConfigError(
            f"{name(ways[1])}: not with {name(ways[0])}; choose one way to authenticate "
            "(user + password, token, nkey_seed or creds)"
        )

    verify = pick("tls_verify_hostname")
    if isinstance(verify, str):
        if verify.lower() not in _TRUE + _FALSE:
            raise ConfigError(f"{name('tls_verify_hostname')}: expected true or false")
        verify = verify.lower() in _TRUE
    tls_ca, tls_cert, tls_key = (
        existing_file("tls_ca"),
        existing_file("tls_cert"),
        existing_file("tls_key"),
    )
    if tls_cert is not None and tls_key is None:
        raise ConfigError(f"nats.tls_key: required with {name('tls_cert')}")
    if tls_key is not None and tls_cert is None:
        raise ConfigError(f"nats.tls_cert: required with {name('tls_key')}")
    return NatsLogin(
        user=user,
        password=password,
        token=token,
        nkey_seed=nkey_seed,
        creds=creds,
        tls_ca=tls_ca,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_verify_hostname=True if verify is None else bool(verify),
    )


def _as_list(value: StrOrList | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _dec_hook(kind: type, value: Any) -> Any:
    if kind is Duration:
        return decode_duration(value)
    if kind is Secret:
        if not isinstance(value, str):
            raise TypeError(f"Expected `str`, got `{type(value).__name__}`")
        return Secret(value)
    raise NotImplementedError


def _convert(raw: Any, kind: type[Any], where: str) -> Any:
    try:
        return msgspec.convert(raw, kind, dec_hook=_dec_hook)
    except msgspec.ValidationError as error:
        text = str(error)
        match = re.search(r" - at `\$\.?(.*)`$", text)
        if match:
            message = text[: match.start()]
            field = re.search(r"(unknown|missing required) field `(.*)`", message)
            key = ".".join(filter(None, [where, match.group(1), field.group(2) if field else ""]))
            if field:
                message = "unknown key" if field.group(1) == "unknown" else "required"
            raise ConfigError(f"{key}: {message}") from error
        unknown = re.search(r"unknown field `(.*)`", text)
        if unknown:
            key = ".".join(filter(None, [where, unknown.group(1)]))
            raise ConfigError(f"{key}: unknown key") from error
        missing = re.search(r"missing required field `(.*)`", text)
        if missing:
            key = ".".join(filter(None, [where, missing.group(1)]))
            raise ConfigError(f"{key}: required") from error
        raise ConfigError(f"{where or 'config'}: {text}") from error


def _expand(value: Any, env: dict[str, str], key: str) -> Any:
    """``${VAR}`` and ``${VAR:-default}`` in every string; an unset variable is an error."""
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if default is not None and not env.get(name):  # shell ``:-``: unset or empty
                return default
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise ConfigError(f"{key}: environment variable {name} is not set")

        return _VAR.sub(substitute, value)
    if isinstance(value, dict):
        return {k: _expand(v, env, f"{key}.{k}" if key else k) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, env, f"{key}[{i}]") for i, v in enumerate(value)]
    return value
