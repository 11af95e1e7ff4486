"""Alertmanager compatibility (DESIGN.md section 14), pure: its ``PostableAlerts`` as
section 4 events, and tocsin's alerts and silences in the shapes of its API v2
(``api/v2/openapi.yaml``), so Prometheus, ``amtool`` and Grafana's Alertmanager data
source talk to tocsin unchanged.

An alert Prometheus sends becomes a section 4 payload that ``ingest.parse`` judges by
the very rules every other inbound event meets: one set of rules, and a refusal names
the alert's own field (``labels.alertname``, not ``type``). Its ``event_id`` is a hash
of the alert's identity, ``startsAt``, ``endsAt`` and status: an exact re-send (a
retry) is an idempotent repeat, while each evaluation's re-send (a new ``endsAt``)
moves the alert's end forward and is suppressed by dedup, because its ``timestamp``
(``startsAt``) keeps it in the same dedup bucket: it pages once.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec
from msgspec import Struct

from tocsin.core import ingest
from tocsin.core.contracts import SEVERITY_ALIASES
from tocsin.core.decide.silences import matcher_of
from tocsin.core.matchers import ALERTNAME, LabelMatcher, Op, compile_matcher, parse_all
from tocsin.core.state import Alert, Group, Silence, State
from tocsin.core.times import format_us, parse_rfc3339

SOURCE = "prometheus"
"""The ``source`` of every alert taken through ``POST /api/v2/alerts``."""
DEFAULT_SEVERITY = "warning"
GENERATOR_URL = "generatorURL"
"""The ``details`` key that carries an alert's ``generatorURL``."""

# Where a section 4 field of the translation came from, to name it in a refusal.
_ORIGIN = {
    "type": "labels.alertname",
    "summary": "annotations.summary",
    "details": "annotations",
    "timestamp": "startsAt",
    "ends_at": "endsAt",
}
_encoder = msgspec.json.Encoder()
_body_decoder = msgspec.json.Decoder(list[Any])


class Translated(Struct, frozen=True, kw_only=True):
    """One alert of the request as the section 4 payload to publish, and its id."""

    event_id: str
    payload: bytes


class Refused(Struct, frozen=True, kw_only=True):
    """Why a ``PostableAlerts`` request is refused: the alert's ``index`` (``None``:
    the body itself) and its ``field`` at fault."""

    message: str
    index: int | None = None
    field: str | None = None


class _Bad(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def translate(body: bytes, now: int) -> list[Translated] | Refused:
    """Every alert of a ``PostableAlerts`` body as a section 4 payload, received at
    ``now``; or, when any alert is invalid, why (none of the request is taken)."""
    try:
        alerts = _body_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError):
        return Refused(message="the body must be a JSON array of alerts (PostableAlerts)")
    out: list[Translated] = []
    for index, alert in enumerate(alerts):
        try:
            out.append(_one(alert, now))
        except _Bad as bad:
            return Refused(message=f"alert {index}: {bad.message}", index=index, field=bad.field)
    return out


def _one(alert: Any, now: int) -> Translated:
    if not isinstance(alert, dict):
        raise _Bad("", "an alert must be a JSON object")
    labels = _label_set(alert.get("labels"), "labels", required=True)
    annotations = _label_set(alert.get("annotations"), "annotations", required=False)
    alertname = labels.get(ALERTNAME)
    if not alertname:
        raise _Bad("labels.alertname", "labels.alertname is required")
    starts = _instant(alert.get("startsAt"), "startsAt")
    ends = _instant(alert.get("endsAt"), "endsAt")
    if starts is not None and ends is not None and ends < starts:
        raise _Bad("endsAt", "endsAt is before startsAt")
    url = alert.get(GENERATOR_URL)
    if url is not None and not isinstance(url, str):
        raise _Bad(GENERATOR_URL, "generatorURL must be a string")
    status = "resolved" if ends is not None and ends <= now else "firing"
    severity = SEVERITY_ALIASES.get(labels.get("severity", "").strip().lower(), DEFAULT_SEVERITY)
    summary = annotations.get("summary") or annotations.get("description") or alertname
    details: dict[str, Any] = dict(annotations)
    if url:
        details[GENERATOR_URL] = url
    fingerprint = ingest.default_fingerprint(alertname, labels)
    identity = _encoder.encode([fingerprint, starts, ends, status])
    event_id = "am-" + hashlib.sha256(identity).hexdigest()[:32]
    event: dict[str, Any] = {
        "type": alertname,
        "severity": severity,
        "summary": summary,
        "source": SOURCE,
        "status": status,
        "labels": labels,
        "details": details,
        "event_id": event_id,
    }
    if starts is not None:
        event["timestamp"] = alert["startsAt"]
    if ends is not None and status == "firing":
        event["ends_at"] = alert["endsAt"]
    payload = _encoder.encode(event)
    judged = ingest.parse(payload, default_source=SOURCE, received_at=now)
    if isinstance(judged, ingest.Rejection):
        field = judged.field or ""
        raise _Bad(_ORIGIN.get(field, field), judged.message)
    return Translated(event_id=event_id, payload=payload)


def _label_set(value: Any, field: str, *, required: bool) -> dict[str, str]:
    """A ``labelSet``: an object of string to string."""
    if value is None:
        if required:
            raise _Bad(field, f"{field} is required")
        return {}
    if not isinstance(value, dict):
        raise _Bad(field, f"{field} must be an object of strings")
    for key, item in value.items():
        if not isinstance(item, str):
            raise _Bad(f"{field}.{key[:64]}", f"{field}.{key[:64]} must be a string")
    return value


def _instant(value: Any, field: str) -> int | None:
    """An RFC 3339 instant, or ``None`` when absent or Go's zero time (year 1), which
    Alertmanager clients send for "not set"."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _Bad(field, f"{field} must be an RFC 3339 string")
    try:
        stamp = parse_rfc3339(value)
    except (ValueError, OverflowError) as error:
        raise _Bad(field, f"{field} {value[:40]!r} is not RFC 3339 ({error})") from error
    return None if stamp <= 0 else stamp


# -- matchers -------------------------------------------------------------------------


class AmMatcher(Struct, kw_only=True, rename="camel"):
    """A matcher as API v2 carries it (``isRegex``, ``isEqual``)."""

    name: str
    value: str
    is_regex: bool
    is_equal: bool = True


_OPS: dict[tuple[bool, bool], Op] = {
    (False, True): "=",
    (False, False): "!=",
    (True, True): "=~",
    (True, False): "!~",
}


def matcher_strings(matchers: Sequence[AmMatcher]) -> list[str]:
    """API v2 matchers as Alertmanager-syntax strings (a silence's ``matchers``);
    ``MatcherSyntaxError`` for a regex that does not compile."""
    out = []
    for m in matchers:
        op: Op = _OPS[(m.is_regex, m.is_equal)]
        out.append(str(compile_matcher(m.name, op, m.value)))
    return out


def am_matchers(table: Mapping[str, Any]) -> list[AmMatcher]:
    """A silence's ``match`` table as API v2 matchers: its Alertmanager ``matchers`` as
    they are, and each other key as the equal or regex matcher it amounts to (a list:
    any of; a ``*`` suffix: a prefix)."""
    out = [_am(m) for m in parse_all(table.get("matchers") or ())]
    for key, name in (("severity", "severity"), ("type", ALERTNAME), ("source", "source")):
        if table.get(key) is not None:
            out.append(_values_matcher(name, table[key]))
    for name, values in (table.get("labels") or {}).items():
        out.append(_values_matcher(name, values))
    return out


def _am(m: LabelMatcher) -> AmMatcher:
    return AmMatcher(
        name=m.name, value=m.value, is_regex=m.op in ("=~", "!~"), is_equal=m.op in ("=", "=~")
    )


def _values_matcher(name: str, spec: str | list[str]) -> AmMatcher:
    items = [spec] if isinstance(spec, str) else list(spec)
    if len(items) == 1 and not items[0].endswith("*"):
        return AmMatcher(name=name, value=items[0], is_regex=False)
    parts = [re.escape(i[:-1]) + ".*" if i.endswith("*") else re.escape(i) for i in items]
    return AmMatcher(name=name, value="|".join(parts), is_regex=True)


# -- silences -------------------------------------------------------------------------


class SilenceStatus(Struct, kw_only=True):
    state: str


class GettableSilence(Struct, kw_only=True, rename="camel"):
    """``gettableSilence``: a deleted silence reads as expired, ending when deleted."""

    id: str
    status: SilenceStatus
    updated_at: str
    matchers: list[AmMatcher]
    starts_at: str
    ends_at: str
    created_by: str
    comment: str
    annotations: dict[str, str] = {}


def silence_state(silence: Silence, now: int) -> str:
    if now >= silence.ends:
        return "expired"
    return "pending" if now < silence.starts_at else "active"


def gettable_silence(silence: Silence, now: int) -> GettableSilence:
    return GettableSilence(
        id=silence.id,
        status=SilenceStatus(state=silence_state(silence, now)),
        updated_at=format_us(silence.deleted_at or silence.created_at),
        matchers=am_matchers(silence.matchers),
        starts_at=format_us(silence.starts_at),
        ends_at=format_us(silence.ends),
        created_by=silence.created_by,
        comment=silence.comment,
    )


def gettable_silences(state: State, now: int, matchers: Sequence[LabelMatcher]) -> list[Any]:
    """Every silence whose matchers include all of ``matchers`` (``amtool silence
    query``'s filter: Alertmanager keeps a silence when each filter matcher matches one
    of its matchers' name and value), active first, then pending, then expired."""
    order = {"active": 0, "pending": 1, "expired": 2}
    found = [gettable_silence(s, now) for s in state.silences.values()]
    found = [s for s in found if all(_filters_silence(f, s.matchers) for f in matchers)]
    found.sort(key=lambda s: s.ends_at if s.status.state != "pending" else s.starts_at)
    found.sort(key=lambda s: order[s.status.state])
    return found


def _filters_silence(f: LabelMatcher, ms: Iterable[AmMatcher]) -> bool:
    return any(m.name == f.name and f.matches_value(m.value) for m in ms)


# -- alerts ---------------------------------------------------------------------------


class Receiver(Struct, kw_only=True):
    name: str


class AlertStatus(Struct, kw_only=True, rename="camel"):
    state: str
    silenced_by: list[str]
    inhibited_by: list[str]
    muted_by: list[str] = []


class GettableAlert(Struct, kw_only=True, rename="camel"):
    labels: dict[str, str]
    annotations: dict[str, str]
    receivers: list[Receiver]
    fingerprint: str
    starts_at: str
    updated_at: str
    ends_at: str
    status: AlertStatus
    generator_url: str = msgspec.field(default="", name="generatorURL")


class AlertFilter(Struct, kw_only=True, frozen=True):
    """``GET /api/v2/alerts``'s query: ``matchers`` on the labels, ``receiver`` a regex
    (anchored) on the receivers' names, and which states to include."""

    matchers: tuple[LabelMatcher, ...] = ()
    receiver: re.Pattern[str] | None = None
    active: bool = True
    silenced: bool = True
    inhibited: bool = True


def am_labels(alert: Alert) -> dict[str, str]:
    """An alert's labels as Alertmanager shows them: its labels plus ``alertname``
    (its type) and ``severity`` where its labels do not set them."""
    return {ALERTNAME: alert.type, "severity": alert.severity, **alert.labels}


def _annotations(alert: Alert) -> dict[str, str]:
    out = {"summary": alert.summary}
    for key, value in alert.details.items():
        if key != GENERATOR_URL:
            out[key] = value if isinstance(value, str) else _encoder.encode(value).decode()
    return out


def gettable_alert(state: State, alert: Alert, now: int) -> GettableAlert:
    """One open alert: ``silencedBy`` the active silences over it now, ``inhibitedBy``
    the fingerprint of the open alert that inhibits it, ``endsAt`` when it resolves by
    itself (else its last event)."""
    silenced_by = [
        s.id
        for s in state.silences.values()
        if s.active_at(now)
        and matcher_of(s).matches(alert.severity, alert.type, alert.source, alert.labels)
    ]
    inhibitor = state.alerts.get(alert.inhibited_by) if alert.inhibited_by else None
    inhibited_by = [inhibitor.fingerprint] if inhibitor and inhibitor.status == "firing" else []
    end = state.auto_resolve.get(alert.fingerprint)
    ends = end.due if end is not None and end.alert_id == alert.id else alert.last_seen
    url = alert.details.get(GENERATOR_URL)
    return GettableAlert(
        labels=am_labels(alert),
        annotations=_annotations(alert),
        receivers=[Receiver(name=r) for r in alert.receivers],
        fingerprint=alert.fingerprint,
        starts_at=format_us(alert.first_seen),
        updated_at=format_us(alert.last_seen),
        ends_at=format_us(ends),
        status=AlertStatus(
            state="suppressed" if silenced_by or inhibited_by else "active",
            silenced_by=silenced_by,
            inhibited_by=inhibited_by,
        ),
        generator_url=url if isinstance(url, str) else "",
    )


def gettable_alerts(
    state: State, now: int, chosen: AlertFilter
) -> list[tuple[Alert, GettableAlert]]:
    """The open (firing) alerts ``chosen`` selects, oldest first, each with its view."""
    out = []
    for alert in state.alerts.values():
        if alert.status != "firing":
            continue
        view = gettable_alert(state, alert, now)
        if not chosen.silenced and view.status.silenced_by:
            continue
        if not chosen.inhibited and view.status.inhibited_by:
            continue
        if not chosen.active and view.status.state == "active":
            continue
        if chosen.matchers and not all(
            m.matches_value(view.labels.get(m.name, "")) for m in chosen.matchers
        ):
            continue
        pattern = chosen.receiver
        if pattern is not None and not any(pattern.fullmatch(r) for r in alert.receivers):
            continue
        out.append((alert, view))
    out.sort(key=lambda pair: (pair[0].first_seen, pair[0].fingerprint))
    return out


class AlertGroup(Struct, kw_only=True, rename="camel"):
    labels: dict[str, str]
    receiver: Receiver
    alerts: list[GettableAlert]
    route_labels: dict[str, str] = {}


def alert_groups(state: State, alerts: Iterable[tuple[Alert, GettableAlert]]) -> list[AlertGroup]:
    """The alerts by notification group and receiver: a grouped route's group with its
    ``group_by`` labels (``labels.x`` as ``x``, ``type`` as ``alertname``); an alert of
    an ungrouped route alone, with all its labels. An alert no receiver was told of
    (silenced or inhibited from the start, or unrouted) is in no group."""
    groups: dict[tuple[str, str], AlertGroup] = {}
    for alert, view in alerts:
        grouped = {g.receiver: g for k in alert.groups if (g := state.groups.get(k)) is not None}
        for receiver in alert.receivers:
            group = grouped.get(receiver)
            key = (receiver, group.key if group is not None else "alert:" + alert.id)
            entry = groups.get(key)
            if entry is None:
                labels = _group_labels(group) if group is not None else view.labels
                entry = groups[key] = AlertGroup(
                    labels=labels, receiver=Receiver(name=receiver), alerts=[]
                )
            entry.alerts.append(view)
    return list(groups.values())


def _group_labels(group: Group) -> dict[str, str]:
    out = {}
    for key, value in group.labels.items():
        name = key.removeprefix("labels.")
        out[ALERTNAME if name == "type" else name] = value
    return out


# -- status ---------------------------------------------------------------------------


def status(receivers: Sequence[str], version: str, started_at: int) -> dict[str, Any]:
    """``alertmanagerStatus``: no cluster; ``config.original`` an Alertmanager-shaped
    YAML naming tocsin's receivers (the real config is ``GET /api/v1/config``)."""
    names = list(receivers) or ["none"]
    quoted = [_encoder.encode(n).decode() for n in names]
    original = f"route:\n  receiver: {quoted[0]}\nreceivers:\n" + "".join(
        f"- name: {q}\n" for q in quoted
    )
    return {
        "cluster": {"status": "disabled", "peers": []},
        "versionInfo": {
            "version": version,
            "revision": "tocsin",
            "branch": "tocsin",
            "buildUser": "tocsin",
            "buildDate": "",
            "goVersion": "none (tocsin is Python)",
        },
        "config": {"original": original},
        "uptime": format_us(started_at),
    }
