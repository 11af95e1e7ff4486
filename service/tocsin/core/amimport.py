"""An Alertmanager configuration, as a tocsin one (pure; DESIGN.md section 14).

``translate`` takes the parsed ``alertmanager.yml`` (the shell reads the YAML) and
returns the tocsin config as TOML text plus the list of what it could not carry over.

**The route tree, flattened.** Alertmanager walks a tree: a node that matches hands the
alert to its children in order, stopping after a matching child without ``continue``;
when no child matched, the node itself is the match. tocsin walks a list: every
matching ``[[route]]`` applies until one with ``continue = false`` matched. The list is
the tree depth-first, each node's children before the node itself (its *fallback*),
each entry's matchers its ancestors' plus its own. Two things make the list give the
same receivers as the tree for every label set:

- an entry stops the list (``continue = false``) only when the node and every ancestor
  below the root lack ``continue``: then Alertmanager stops everywhere too;
- where the tree stops in one subtree only, or a fallback must not apply because a
  child matched without stopping, the later entries carry the negation of that child's
  matchers (``=`` <-> ``!=``, ``=~`` <-> ``!~``). A negated conjunction is a
  disjunction: the entry is split into disjoint alternatives
  (``not a``, ``a and not b``...), so at most one of them matches any alert.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tocsin.core.amcheck import refusal
from tocsin.core.matchers import LabelMatcher, MatcherSyntaxError, Op, parse_matchers
from tocsin.core.times import parse_duration

DEFAULT_GROUP_WAIT = "30s"
DEFAULT_GROUP_INTERVAL = "5m"
DEFAULT_REPEAT_INTERVAL = "4h"
MAX_ALTERNATIVES = 64
"""A route whose negations would split it into more entries than this is refused."""

_NEGATED: dict[Op, Op] = {"=": "!=", "!=": "=", "=~": "!~", "!~": "=~"}
_PROM_DURATION = re.compile(
    r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$"
)
_PROM_UNITS = (365 * 86400.0, 7 * 86400.0, 86400.0, 3600.0, 60.0, 1.0, 0.001)

Conj = tuple[LabelMatcher, ...]
Dnf = list[Conj]
"""Disjoint alternatives, each a conjunction of matchers; ``[]`` matches nothing."""


class TranslationError(ValueError):
    """The configuration cannot be translated at all; the message says why."""


@dataclass
class Translation:
    """The tocsin config (``toml``) and what did not carry over (``losses``, one line
    each, for stderr); ``usable`` is false when no route reaches a receiver."""

    toml: str
    losses: list[str] = field(default_factory=list)
    usable: bool = True


def negate(conj: Conj) -> Dnf:
    """``not (m1 and m2 ...)`` as disjoint alternatives: ``not m1``, ``m1 and not m2``..."""
    return [
        (*conj[:index], LabelMatcher(m.name, _NEGATED[m.op], m.value, m.pattern))
        for index, m in enumerate(conj)
    ]


def conjoin(left: Dnf, right: Dnf) -> Dnf:
    """``left and right``, still disjoint (each pair of alternatives)."""
    return [a + b for a in left for b in right]


def duration(value: object, where: str) -> str:
    """An Alertmanager duration (``1h30m``, ``1w``...) as one tocsin accepts: kept as
    written when tocsin reads it the same, else in seconds."""
    text = str(value).strip()
    try:
        parse_duration(text)
        return text
    except ValueError:
        pass
    found = _PROM_DURATION.match(text)
    if not text or found is None:
        raise TranslationError(f"{where}: {text!r} is not a duration")
    seconds = sum(float(n) * unit for n, unit in zip(found.groups(), _PROM_UNITS, strict=True) if n)
    return f"{seconds:g}s"


def own_matchers(node: Mapping[str, Any], where: str) -> Conj:
    """A route's (or an inhibit side's) own matchers: ``match`` (equality), ``match_re``
    (regex, anchored as Alertmanager anchors them) and ``matchers``."""
    return _matchers(node, where, "match", "match_re", "matchers")


def _matchers(node: Mapping[str, Any], where: str, eq: str, regex: str, new: str) -> Conj:
    out: list[LabelMatcher] = []
    for name, value in (node.get(eq) or {}).items():
        out.append(LabelMatcher(str(name), "=", str(value)))
    for name, value in (node.get(regex) or {}).items():
        out.extend(_parsed(f"{name}=~{json.dumps(str(value))}", where))
    for text in node.get(new) or []:
        out.extend(_parsed(str(text), where))
    return tuple(out)


def _parsed(text: str, where: str) -> Conj:
    try:
        return parse_matchers(text)
    except (MatcherSyntaxError, re.error) as error:
        raise TranslationError(f"{where}: {error}") from None


@dataclass
class _Entry:
    cond: Dnf
    receiver: str
    stop: bool
    opts: dict[str, Any]
    where: str


@dataclass
class _Walk:
    entries: list[_Entry] = field(default_factory=list)
    losses: list[str] = field(default_factory=list)


_ROUTE_KEYS = {
    "receiver",
    "group_by",
    "group_wait",
    "group_interval",
    "repeat_interval",
    "match",
    "match_re",
    "matchers",
    "continue",
    "routes",
    "mute_time_intervals",
    "active_time_intervals",
}


def _options(node: Mapping[str, Any], parent: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The settings a node has: its own, else its parent's (Alertmanager inherits the
    receiver, ``group_by`` and the timings, not the time intervals)."""
    opts = dict(parent)
    if node.get("receiver"):
        opts["receiver"] = str(node["receiver"])
    if node.get("group_by") is not None:
        opts["group_by"] = [str(k) for k in node["group_by"]]
    for key in ("group_wait", "group_interval", "repeat_interval"):
        if node.get(key) is not None:
            opts[key] = duration(node[key], f"{where}.{key}")
    opts["mute_time_intervals"] = [str(n) for n in node.get("mute_time_intervals") or []]
    opts["active_time_intervals"] = [str(n) for n in node.get("active_time_intervals") or []]
    return opts


def _walk(
    node: Mapping[str, Any],
    cond: Dnf,
    parent_opts: Mapping[str, Any],
    global_stop: bool,
    where: str,
    out: _Walk,
) -> bool:
    """Append ``node``'s entries (its subtree, then itself as fallback) to ``out``;
    ``cond``: when the node matches (its ancestors', its own and the guards); return
    whether every match in it stops the list (so later entries need no guard)."""
    for key in sorted(set(node) - _ROUTE_KEYS):
        out.losses.append(f"{where}.{key}: not translated")
    if len(cond) > MAX_ALTERNATIVES:
        raise TranslationError(f"{where}: too many alternatives to flatten ({len(cond)})")
    opts = _options(node, parent_opts, where)
    children = node.get("routes") or []
    if not children:
        out.entries.append(_Entry(cond, opts["receiver"], global_stop, opts, where))
        return global_stop
    guard = cond
    fallback = cond
    all_stop = True
    for index, child in enumerate(children):
        child_where = f"{where}.routes[{index}]"
        own = own_matchers(child, child_where)
        child_continues = bool(child.get("continue", False))
        stops = _walk(
            child,
            conjoin(guard, [own]),
            opts,
            global_stop and not child_continues,
            child_where,
            out,
        )
        if not stops:
            all_stop = False
            fallback = conjoin(fallback, negate(own))
            if not child_continues:
                guard = conjoin(guard, negate(own))
    out.entries.append(_Entry(fallback, opts["receiver"], global_stop, opts, where))
    return global_stop and all_stop


_DEFAULTS = {
    "group_by": [],
    "group_wait": DEFAULT_GROUP_WAIT,
    "group_interval": DEFAULT_GROUP_INTERVAL,
    "repeat_interval": DEFAULT_REPEAT_INTERVAL,
}


def flatten(route: Mapping[str, Any]) -> tuple[list[_Entry], list[str]]:
    """The root route as a list of entries (see the module docstring) and the losses."""
    if not isinstance(route, Mapping) or not route.get("receiver"):
        raise TranslationError("route.receiver: the root route needs a receiver")
    if own_matchers(route, "route"):
        raise TranslationError("route: the root route must not have matchers")
    out = _Walk()
    _walk(route, [()], _DEFAULTS, True, "route", out)
    return out.entries, out.losses


def group_by_key(label: str) -> str:
    """An Alertmanager ``group_by`` label as a tocsin ``group_by`` key."""
    if label == "...":
        return "..."
    if label == "alertname":
        return "type"
    return f"labels.{label}"


# --- receivers --------------------------------------------------------------------

_RECEIVER_FIELDS: dict[str, tuple[str, dict[str, str]]] = {
    # Alertmanager integration -> (tocsin channel, {AM field: tocsin field})
    "webhook_configs": ("webhook", {"url": "url"}),
    "email_configs": ("email", {"to": "to"}),
    "slack_configs": ("slack", {"api_url": "url"}),
    "pagerduty_configs": (
        "pagerduty",
        {"routing_key": "routing_key", "service_key": "routing_key", "url": "url"},
    ),
    "opsgenie_configs": ("opsgenie", {"api_key": "api_key", "api_url": "url"}),
    "discord_configs": ("discord", {"webhook_url": "url"}),
    "msteams_configs": ("teams", {"webhook_url": "url"}),
    "msteamsv2_configs": ("teams", {"webhook_url": "url"}),
}
_GLOBAL_FIELDS = {
    ("slack", "url"): "slack_api_url",
    ("opsgenie", "api_key"): "opsgenie_api_key",
    ("opsgenie", "url"): "opsgenie_api_url",
    ("pagerduty", "url"): "pagerduty_url",
}
_IGNORED = {"send_resolved"}  # tocsin always tells of a resolve


def receivers(
    config: Mapping[str, Any], losses: list[str]
) -> tuple[dict[str, dict[str, Any]], dict[str, list[str]]]:
    """The tocsin receivers, and each Alertmanager receiver's tocsin names (one per
    integration it has: its own name for the first, ``<name>-2``... for the others).
    A receiver with no integration tocsin has becomes a ``log`` receiver."""
    glob = config.get("global") or {}
    out: dict[str, dict[str, Any]] = {}
    names: dict[str, list[str]] = {}
    for index, receiver in enumerate(config.get("receivers") or []):
        name = str(receiver.get("name", ""))
        where = f"receivers[{index}] ({name})"
        made: list[str] = []
        for key, value in receiver.items():
            if key == "name":
                continue
            if key not in _RECEIVER_FIELDS:
                losses.append(f"{where}.{key}: integration not supported by tocsin")
                continue
            channel, fields = _RECEIVER_FIELDS[key]
            for number, integration in enumerate(value or []):
                table = _integration(
                    channel, fields, integration, glob, losses, f"{where}.{key}[{number}]"
                )
                if table is None:
                    continue
                made.append(name if not made else f"{name}-{len(made) + 1}")
                out[made[-1]] = table
        if not made:
            out[name] = {"channel": "log"}
            made.append(name)
            losses.append(f"{where}: no integration tocsin has; translated as a log receiver")
        elif len(made) > 1:
            losses.append(f"{where}: one tocsin receiver per integration: {', '.join(made)}")
        names[name] = made
    return out, names


def _integration(
    channel: str,
    fields: Mapping[str, str],
    integration: Mapping[str, Any],
    glob: Mapping[str, Any],
    losses: list[str],
    where: str,
) -> dict[str, Any] | None:
    table: dict[str, Any] = {"channel": channel}
    for key, value in integration.items():
        if key in fields:
            table[fields[key]] = [str(value)] if channel == "email" else str(value)
        elif key not in _IGNORED:
            losses.append(f"{where}.{key}: not translated")
    for (on, ours), theirs in _GLOBAL_FIELDS.items():
        if on == channel and ours not in table and glob.get(theirs):
            table[ours] = str(glob[theirs])
    if channel == "slack" and _slack_app_token(integration, glob):
        losses.append(
            f"{where}: posts with a Slack app token (tocsin needs a webhook URL): left out"
        )
        return None
    required = {"webhook": "url", "email": "to", "slack": "url", "discord": "url", "teams": "url"}
    needed = required.get(channel)
    if needed is not None and needed not in table:
        losses.append(f"{where}: no {needed} (or it is read from a file): left out")
        return None
    return table


def _slack_app_token(integration: Mapping[str, Any], glob: Mapping[str, Any]) -> bool:
    """Whether Alertmanager would post this Slack integration with an app token (its
    own, or the global one when it names no webhook URL), which tocsin cannot."""
    if integration.get("app_token") or integration.get("app_token_file"):
        return True
    own_url = integration.get("api_url") or integration.get("api_url_file")
    return not own_url and bool(glob.get("slack_app_token") or glob.get("slack_app_token_file"))


# --- inhibit rules and time intervals -----------------------------------------------


def inhibit_rules(config: Mapping[str, Any], losses: list[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for index, rule in enumerate(config.get("inhibit_rules") or []):
        where = f"inhibit_rules[{index}]"
        source = _matchers(rule, where, "source_match", "source_match_re", "source_matchers")
        target = _matchers(rule, where, "target_match", "target_match_re", "target_matchers")
        table: dict[str, Any] = {"name": f"inhibit_rules[{index}]"}
        table["source_matchers"] = [str(m) for m in source]
        table["target_matchers"] = [str(m) for m in target]
        equal = [group_by_key(str(k)) for k in rule.get("equal") or []]
        table["equal"] = [k for k in equal if k != "..."]
        out.append(table)
    return out


_INTERVAL_FIELDS = ("weekdays", "days_of_month", "months", "years")


def time_intervals(config: Mapping[str, Any], losses: list[str]) -> dict[str, dict[str, Any]]:
    """``time_intervals`` and ``mute_time_intervals``: tocsin takes one range set per
    name, so a name with several is cut to its first (said in ``losses``)."""
    out: dict[str, dict[str, Any]] = {}
    named = list(config.get("mute_time_intervals") or []) + list(config.get("time_intervals") or [])
    for entry in named:
        name = str(entry.get("name", ""))
        ranges = entry.get("time_intervals") or [{}]
        if len(ranges) > 1:
            losses.append(f"time interval {name}: only its first of {len(ranges)} ranges is kept")
        first = ranges[0]
        table: dict[str, Any] = {}
        if first.get("times"):
            table["times"] = [
                {"start": str(t["start_time"]), "end": str(t["end_time"])} for t in first["times"]
            ]
        for key in _INTERVAL_FIELDS:
            if first.get(key):
                table[key] = [str(v) for v in first[key]]
        if first.get("location"):
            table["location"] = str(first["location"])
        out[name] = table
    return out


_SMTP_FIELDS = {
    "smtp_from": "from",
    "smtp_auth_username": "username",
    "smtp_auth_password": "password",
    "smtp_require_tls": "starttls",
}


def smtp(config: Mapping[str, Any]) -> dict[str, Any]:
    """``global``'s SMTP settings as tocsin's ``[smtp]`` (``smtp_smarthost`` is
    ``host:port``)."""
    glob = config.get("global") or {}
    out: dict[str, Any] = {}
    if glob.get("smtp_smarthost"):
        host, _, port = str(glob["smtp_smarthost"]).rpartition(":")
        if host and port.isdigit():
            out["host"], out["port"] = host, int(port)
        else:
            out["host"] = str(glob["smtp_smarthost"])
    for theirs, ours in _SMTP_FIELDS.items():
        if glob.get(theirs) is not None:
            value = glob[theirs]
            out[ours] = value if isinstance(value, bool) else str(value)
    return out


# --- the whole ---------------------------------------------------------------------

_TOP_KEYS = {
    "global",
    "route",
    "receivers",
    "inhibit_rules",
    "time_intervals",
    "mute_time_intervals",
    "templates",
}


def translate(config: Mapping[str, Any]) -> Translation:
    """The tocsin config equivalent to a parsed ``alertmanager.yml``. Raises
    ``TranslationError`` when the file is not an Alertmanager config it can read."""
    if not isinstance(config, Mapping):
        raise TranslationError("not an Alertmanager configuration (a YAML mapping)")
    if (refused := refusal(config)) is not None:
        raise TranslationError(f"Alertmanager refuses this configuration: {refused}")
    losses: list[str] = []
    for key in sorted(set(config) - _TOP_KEYS):
        losses.append(f"{key}: not translated")
    if config.get("templates"):
        losses.append("templates: Alertmanager templates are not translated (tocsin has its own)")
    entries, route_losses = flatten(config.get("route") or {})
    losses += route_losses
    tables, names = receivers(config, losses)
    lines: list[str] = ["# Translated by `tocsin config import-alertmanager`.", ""]
    routes = 0
    for entry in entries:
        if entry.receiver not in names:
            raise TranslationError(f"{entry.where}: unknown receiver {entry.receiver!r}")
        for alternative in entry.cond:
            routes += 1
            lines += _route_toml(entry, alternative, names[entry.receiver])
    mail = smtp(config)
    if mail and any(t["channel"] == "email" for t in tables.values()):
        lines += ["[smtp]", *(f"{k} = {_toml(v)}" for k, v in mail.items()), ""]
    for rule in inhibit_rules(config, losses):
        lines += ["[[inhibit]]", *(f"{k} = {_toml(v)}" for k, v in rule.items()), ""]
    for name, interval in time_intervals(config, losses).items():
        lines.append(f"[time_intervals.{_toml(name)}]")
        lines += [f"{k} = {_toml(v)}" for k, v in interval.items()]
        lines.append("")
    for name, table in tables.items():
        lines.append(f"[receivers.{_toml(name)}]")
        lines += [f"{k} = {_toml(v)}" for k, v in table.items()]
        lines.append("")
    return Translation("\n".join(lines), losses, usable=routes > 0 and bool(tables))


def _route_toml(entry: _Entry, alternative: Conj, receivers_: list[str]) -> list[str]:
    opts = entry.opts
    group_by = ["..."] if "..." in opts["group_by"] else [group_by_key(k) for k in opts["group_by"]]
    lines = [
        f"[[route]]  # {entry.where}",
        f"receivers = {_toml(receivers_)}",
        f"matchers = {_toml([str(m) for m in alternative])}",
        f"continue = {_toml(not entry.stop)}",
        f"group_by = {_toml(group_by)}",
        f"group_wait = {_toml(opts['group_wait'])}",
        f"group_interval = {_toml(opts['group_interval'])}",
        f"repeat_interval = {_toml(opts['repeat_interval'])}",
    ]
    for key in ("mute_time_intervals", "active_time_intervals"):
        if opts[key]:
            lines.append(f"{key} = {_toml(opts[key])}")
    return [*lines, ""]


def _toml(value: object) -> str:
    """A TOML value: strings as basic strings (JSON's escapes are TOML's), lists,
    booleans, tables inline."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, Sequence):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_toml(str(k))} = {_toml(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML for {value!r}")
