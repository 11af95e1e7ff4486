"""The dashboard: server-rendered HTML over the same read models as the API.

``GET /`` (stat cards, alerts per hour, the alerts table), ``GET /alerts/{id}`` (one
alert, its history as a timeline, its deliveries) and ``GET /silences`` (the list and a
form) read without JavaScript; filters are GET query parameters. A little inline script
adds the rest: it listens to ``GET /live`` (Server-Sent Events: ``{"last_seq"}`` at most
once a second after a commit, a comment line as heartbeat) and then swaps the page's
``data-live`` regions for those of ``?partial=1`` of the same URL, so filters and the
form stay as they are; operator actions post JSON to the API.

Every alert field is untrusted input: Jinja2 escapes all of it, and the Content Security
Policy lets only this response's nonce-tagged ``<script>`` and ``<style>`` run.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, assert_never
from urllib.parse import urlencode

import msgspec
from litestar import MediaType, Request, Response, get
from litestar.params import FromPath
from litestar.response import ServerSentEvent, ServerSentEventMessage

from tocsin import __version__
from tocsin.api.context import ApiContext
from tocsin.core import events as ev
from tocsin.core import heartbeats, views
from tocsin.core.fold import fold_alert
from tocsin.core.kinds import by_tag
from tocsin.core.times import now_us, parse_rfc3339

if TYPE_CHECKING:
    from jinja2 import Environment

TEMPLATES = Path(__file__).with_name("templates")
TABLE_LIMIT = 100
CHART_HOURS = 24
LIVE_MIN_INTERVAL = 1.0  # seconds: at most one live event per second per stream
LIVE_HEARTBEAT = 15.0  # seconds of quiet before a comment line keeps proxies from closing
LIVE_POLL = 1.0  # seconds: how often a quiet stream checks whether the server stops
LIVE_RETRY_MS = 3000  # the browser's reconnect delay after the stream ends

SEVERITIES = views.SEVERITIES  # critical first
STATUSES = views.ALERT_STATUSES

HTML_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def security_headers(nonce: str) -> dict[str, str]:
    """The headers of every dashboard response: scripts and styles only with this
    response's nonce, requests only to this origin, never framed."""
    policy = (
        "default-src 'none'; "
        f"script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        "img-src 'self' data:; connect-src 'self'; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    )
    return {"Content-Security-Policy": policy, **HTML_HEADERS}


# -- formatting -------------------------------------------------------------------------


def ago(stamp: str | None, now: int) -> str:
    """``"42s ago"``, ``"5m ago"``, ``"1h 59m ago"`` (under 10 h), ``"13h ago"``, ``"2d ago"``,
    ``"in 2h"`` (the page's script keeps these fresh with the same rules)."""
    if not stamp:
        return "never"
    try:
        seconds = (now - parse_rfc3339(stamp)) // 1_000_000
    except ValueError:
        return stamp
    if -5 < seconds < 5:
        return "just now"
    span = abs(seconds)
    if span < 60:
        text = f"{span}s"
    elif span < 3600:
        text = f"{span // 60}m"
    elif span < 10 * 3600 and span // 60 % 60:
        text = f"{span // 3600}h {span // 60 % 60}m"
    elif span < 48 * 3600:
        text = f"{span // 3600}h"
    else:
        text = f"{span // 86400}d"
    return f"in {text}" if seconds < 0 else f"{text} ago"


def clock(stamp: str | None) -> str:
    """``2026-11-23 12:00:01`` (UTC) from an RFC 3339 instant."""
    if not stamp:
        return ""
    return stamp[:19].replace("T", " ")


def percent(rate: float | None) -> str:
    if rate is None:
        return "n/a"
    if rate >= 1.0:
        return "100%"
    return f"{min(rate * 100, 99.9):.1f}%"


def matcher_terms(matchers: Mapping[str, Any]) -> list[str]:
    """A silence's (or route's) matchers as ``key=value`` terms; a list as ``a|b``."""

    def text(value: Any) -> str:
        return "|".join(map(str, value)) if isinstance(value, list) else str(value)

    terms = [
        f"{key}={text(matchers[key])}" for key in ("severity", "type", "source") if key in matchers
    ]
    labels = matchers.get("labels") or {}
    if isinstance(labels, dict):
        terms.extend(f"{key}={text(value)}" for key, value in sorted(labels.items()))
    terms.extend(str(m) for m in matchers.get("matchers") or ())  # Alertmanager syntax
    return terms


def pretty_json(value: Any) -> str:
    return msgspec.json.format(msgspec.json.encode(value), indent=2).decode()


# -- the chart: alerts per hour by severity, stacked, as SVG geometry ------------------


@dataclass(frozen=True)
class Segment:
    severity: str
    y: float
    height: float
    count: int


@dataclass(frozen=True)
class Column:
    x: float
    width: float
    label: str | None
    title: str
    total: int
    segments: list[Segment]


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    left: int
    top: int
    plot_width: float
    plot_height: float
    columns: list[Column]
    ticks: list[tuple[float, int]]  # (y, value)
    total: int


def _step(peak: int) -> int:
    """A 1-2-5 step that splits ``peak`` into at most four intervals."""
    magnitude = 1
    while True:
        for factor in (1, 2, 5):
            step = factor * magnitude
            if peak <= 4 * step:
                return step
        magnitude *= 10


def chart(per_hour: list[dict[str, Any]], width: int = 1200, height: int = 200) -> Chart:
    """Stacked bars, critical at the bottom, one per hour; an hour label every third bar
    (ending on the current hour), y ticks on a 1-2-5 scale."""
    left, right, top, bottom = 34, 6, 10, 22
    plot_width = width - left - right
    plot_height = height - top - bottom
    totals = [sum(int(hour.get(s, 0)) for s in SEVERITIES) for hour in per_hour]
    step = _step(max(totals, default=0))
    ceiling = step * max(1, -(-max(totals, default=0) // step))
    scale = plot_height / ceiling
    slot = plot_width / max(1, len(per_hour))
    bar = max(2.0, slot * 0.72)
    columns = []
    last = len(per_hour) - 1
    for index, hour in enumerate(per_hour):
        stamp = str(hour["hour"])
        start = stamp[11:16]
        x = left + index * slot + (slot - bar) / 2
        y: float = top + plot_height
        segments = []
        for severity in SEVERITIES:
            count = int(hour.get(severity, 0))
            if count:
                h = count * scale
                y -= h
                segments.append(Segment(severity, round(y, 2), round(h, 2), count))
        counts = ", ".join(f"{s.count} {s.severity}" for s in segments) or "no alerts"
        columns.append(
            Column(
                x=round(x, 2),
                width=round(bar, 2),
                label=start if (last - index) % 3 == 0 else None,
                title=f"{stamp[:10]} {start} UTC: {counts}",
                total=totals[index],
                segments=segments,
            )
        )
    ticks = [
        (round(top + plot_height - value * scale, 2), value)
        for value in range(0, ceiling + 1, step)
    ]
    return Chart(
        width=width,
        height=height,
        left=left,
        top=top,
        plot_width=plot_width,
        plot_height=plot_height,
        columns=columns,
        ticks=ticks,
        total=sum(totals),
    )


# -- the timeline: an alert's history in words ----------------------------------------


@dataclass(frozen=True)
class Entry:
    seq: int
    ts: str
    kind: str
    tone: str  # neutral, info, good, warn, bad, muted, acked
    title: str
    detail: str
    count: int = 1
    last_ts: str | None = None


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _failure(data: Mapping[str, Any]) -> str:
    """A failed delivery's error, with its HTTP status when the error does not say it."""
    error, code = str(data.get("error", "")), data.get("status_code")
    return f"HTTP {code}: {error}" if code and str(code) not in error else error


def describe(record: views.EventRecord) -> Entry:
    """One history record (``views.history``) as a timeline entry."""
    return _DESCRIBE.get(record.kind, _as_logged)(record)


def _entry(
    record: views.EventRecord,
    tone: str,
    title: str,
    detail: str = "",
    count: int = 1,
    last_ts: str | None = None,
) -> Entry:
    return Entry(
        seq=record.seq,
        ts=record.ts,
        kind=record.kind,
        tone=tone,
        title=title,
        detail=detail,
        count=count,
        last_ts=last_ts,
    )


def _received(record: views.EventRecord) -> Entry:
    d = record.data
    resolved = d.get("status") == "resolved"
    title = "Resolve received" if resolved else f"Received ({d.get('severity')})"
    detail = f"{d.get('summary', '')} · on {d.get('subject', '?')}"
    if d.get("timestamp_replaced"):
        detail += " · timestamp in the future, replaced by the receive time"
    ignored = d.get("ignored_fields")
    if ignored:
        detail += " · fields not in the contract, ignored: " + ", ".join(map(str, ignored))
    return _entry(record, "neutral", title, detail)


def _opened(record: views.EventRecord) -> Entry:
    return _entry(record, "info", "Opened", f"dedup key {record.data.get('dedup_key', '')}")


def _suppressed(record: views.EventRecord) -> Entry:
    d = record.data
    count = int(d.get("count", 1))
    cause = d.get("cause", "duplicate")
    if cause == "acked":
        title = f"{_plural(count, 'event')} suppressed: acknowledged"
    elif cause == "no_route":
        title = f"{_plural(count, 'event')} not routed: no route matches"
    elif cause == "flapping":
        title = f"{_plural(count, 'event')} held: flapping"
    else:
        title = f"{_plural(count, 'duplicate')} suppressed"
    return _entry(
        record,
        "muted",
        title,
        f"dedup key {d.get('dedup_key', '')}",
        count=count,
        last_ts=d.get("last_ts") if count > 1 else None,
    )


def _silenced(record: views.EventRecord) -> Entry:
    return _entry(record, "muted", "Silenced", f"silence {record.data.get('silence_id', '')}")


def _inhibited(record: views.EventRecord) -> Entry:
    d = record.data
    detail = f"by alert {d.get('inhibited_by', '')} · rule {d.get('rule', '')}"
    return _entry(record, "muted", "Inhibited", detail)


def _inhibit_source(record: views.EventRecord) -> Entry:
    rules = record.data.get("rules") or {}
    if not rules:
        return _entry(record, "neutral", "Inhibits nothing any more")
    return _entry(record, "neutral", "Inhibits", "rules " + ", ".join(sorted(rules)))


def _inhibit_released(record: views.EventRecord) -> Entry:
    released = record.data.get("alert_ids") or []
    title = f"Stopped inhibiting: {_plural(len(released), 'alert')} released"
    return _entry(record, "info", title, " ".join(str(a) for a in released))


def _escalated(record: views.EventRecord) -> Entry:
    d = record.data
    return _entry(record, "bad", f"Escalated {d.get('from_severity')} → {d.get('severity')}")


def _routed(record: views.EventRecord) -> Entry:
    d = record.data
    detail = f"{d.get('reason')} · notification {d.get('notification_id')}"
    if d.get("config_version"):  # which config routed it (DESIGN.md section 15)
        detail += f" · config {d.get('config_version')}"
    return _entry(record, "info", f"Routed to {d.get('receiver')}", detail)


def _attempt_failed(record: views.EventRecord) -> Entry:
    d = record.data
    title = f"Attempt {d.get('attempt')} to {d.get('receiver')} failed"
    detail = _failure(d) + f" · retry in {float(d.get('retry_in_seconds', 0)):g}s"
    return _entry(record, "warn", title, detail)


def _delivered(record: views.EventRecord) -> Entry:
    d = record.data
    detail = f"{d.get('channel')} · {_plural(int(d.get('attempts', 1)), 'attempt')}"
    return _entry(record, "good", f"Delivered to {d.get('receiver')}", detail)


def _dead_lettered(record: views.EventRecord) -> Entry:
    d = record.data
    detail = _failure(d) + f" · after {_plural(int(d.get('attempts', 0)), 'attempt')}"
    return _entry(record, "bad", f"Dead-lettered at {d.get('receiver')}", detail)


def _superseded(record: views.EventRecord) -> Entry:
    d = record.data
    detail = f"not sent: {d.get('receiver')} had accepted the later {d.get('superseded_by')}"
    return _entry(record, "muted", f"Superseded at {d.get('receiver')}", detail)


def _requeued(record: views.EventRecord) -> Entry:
    d = record.data
    detail = f"by {d['by']}" if d.get("by") else ""
    return _entry(record, "info", f"Re-queued for {d.get('receiver')}", detail)


def _acked(record: views.EventRecord) -> Entry:
    d = record.data
    return _entry(record, "acked", f"Acknowledged by {d.get('by')}", str(d.get("comment") or ""))


def _resolved(record: views.EventRecord) -> Entry:
    d = record.data
    title = f"Resolved by {d['by']}" if d.get("by") else "Resolved"
    return _entry(record, "good", title, str(d.get("comment") or ""))


def _resolve_ignored(record: views.EventRecord) -> Entry:
    return _entry(record, "muted", "Resolve ignored: no open alert")


def _grouped(record: views.EventRecord) -> Entry:
    d = record.data
    detail = f"{d.get('reason')} · group {d.get('group_key')}"
    return _entry(record, "info", f"Grouped for {d.get('receiver')}", detail)


def _escalation_started(record: views.EventRecord) -> Entry:
    d = record.data
    steps = d.get("steps") or []
    first = steps[0] if steps and isinstance(steps[0], dict) else None
    detail = f"route {d.get('route')} · {_plural(len(steps), 'step')}"
    if first is not None:
        after = float(first.get("after", 0)) / 1e6
        detail += f" · first to {', '.join(map(str, first.get('receivers', [])))} after {after:g}s"
    return _entry(record, "info", "Escalation chain started", detail)


def _escalation_fired(record: views.EventRecord) -> Entry:
    d = record.data
    receivers = ", ".join(map(str, d.get("receivers") or []))
    title = f"Escalated to {receivers}: unacknowledged"
    return _entry(record, "bad", title, f"step {int(d.get('step', 0)) + 1}")


def _flapping(record: views.EventRecord) -> Entry:
    d = record.data
    detail = (
        f"{d.get('changes')} changes within {float(d.get('window', 0)) / 1e6:g}s:"
        " its news is held until it is stable that long"
    )
    return _entry(record, "warn", "Flapping", detail)


def _settled(record: views.EventRecord) -> Entry:
    d = record.data
    return _entry(record, "info", f"Stopped flapping ({d.get('status')})", "notified once")


def _heartbeat_missed(record: views.EventRecord) -> Entry:
    d = record.data
    last = d.get("last_beat")
    detail = "no beat since it was configured" if last is None else "last beat " + str(last)
    return _entry(record, "bad", f"Heartbeat {d.get('name')} missed its deadline", detail)


def _heartbeat_received(record: views.EventRecord) -> Entry:
    d = record.data
    return _entry(record, "good", f"Heartbeat {d.get('name')} beat", f"on {d.get('subject')}")


def _moved(record: views.EventRecord) -> Entry:
    d = record.data
    source = d.get("from_partition")
    where = "the unpartitioned log" if source is None else f"partition {source}"
    return _entry(
        record,
        "info",
        f"Moved here from {where} by tocsin repartition",
        f"open, x{d.get('occurrences')}; its duplicates are still suppressed",
    )


def _as_logged(record: views.EventRecord) -> Entry:
    """A kind the timeline has no words for: its kind and its fields as logged."""
    return _entry(record, "neutral", record.kind, msgspec.json.encode(record.data).decode())


Describe = Callable[[views.EventRecord], Entry]


def _describer(kind: type[ev.Event]) -> Describe:
    """How the timeline tells of a fact of ``kind``."""
    if issubclass(kind, ev.AlertReceived):
        return _received
    if issubclass(kind, ev.AlertOpened):
        return _opened
    if issubclass(kind, ev.AlertSuppressed):
        return _suppressed
    if issubclass(kind, ev.AlertSilenced):
        return _silenced
    if issubclass(kind, ev.AlertInhibited):
        return _inhibited
    if issubclass(kind, ev.InhibitSource):
        return _inhibit_source
    if issubclass(kind, ev.InhibitReleased):
        return _inhibit_released
    if issubclass(kind, ev.AlertEscalated):
        return _escalated
    if issubclass(kind, ev.AlertRouted):
        return _routed
    if issubclass(kind, ev.DeliveryAttemptFailed):
        return _attempt_failed
    if issubclass(kind, ev.DeliverySucceeded):
        return _delivered
    if issubclass(kind, ev.DeliveryDeadLettered):
        return _dead_lettered
    if issubclass(kind, ev.DeliveryRequeued):
        return _requeued
    if issubclass(kind, ev.DeliverySuperseded):
        return _superseded
    if issubclass(kind, ev.AlertAcked):
        return _acked
    if issubclass(kind, ev.AlertResolved):
        return _resolved
    if issubclass(kind, ev.AlertResolveIgnored):
        return _resolve_ignored
    if issubclass(kind, ev.AlertGrouped):
        return _grouped
    if issubclass(kind, ev.EscalationStarted):
        return _escalation_started
    if issubclass(kind, ev.EscalationFired):
        return _escalation_fired
    if issubclass(kind, ev.AlertFlapping):
        return _flapping
    if issubclass(kind, ev.AlertSettled):
        return _settled
    if issubclass(kind, ev.HeartbeatMissed):
        return _heartbeat_missed
    if issubclass(kind, ev.HeartbeatReceived):
        return _heartbeat_received
    if issubclass(kind, ev.AlertMoved):
        return _moved
    if issubclass(
        kind,
        # Not facts of an alert (no alert_id): never in its history, shown as logged.
        ev.GroupOpened
        | ev.GroupNotified
        | ev.GroupDeferred
        | ev.SilenceExpired
        | ev.AlertRejected
        | ev.SilenceCreated
        | ev.SilenceDeleted
        | ev.ConfigLoaded
        | ev.StreamBound
        | ev.OutboxPublished
        | ev.LogCompacted
        | ev.PartitionSeeded,
    ):
        return _as_logged
    assert_never(kind)


_DESCRIBE = by_tag(_describer)


# -- rendering --------------------------------------------------------------------------


@functools.cache
def _environment() -> Environment:
    """The pages' Jinja2 environment, made (and Jinja2 imported) by the first page
    served: a service whose dashboard nobody opens never holds Jinja2 (~1.5 MiB, issue
    #20's RSS target); the first page pays the import once, as it pays compiling its
    template."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["clock"] = clock
    env.filters["percent"] = percent
    env.filters["terms"] = matcher_terms
    env.filters["pretty_json"] = pretty_json
    env.globals["severities"] = SEVERITIES
    env.globals["statuses"] = STATUSES
    env.globals["version"] = __version__
    return env


def _url(path: str, params: Mapping[str, str | None], **changes: str | None) -> str:
    """``path`` with ``params`` (``changes`` applied; ``None`` or ``""`` drops one)."""
    merged = {**params, **changes}
    query = urlencode({k: v for k, v in merged.items() if v})
    return f"{path}?{query}" if query else path


@dataclass(frozen=True)
class Listed:
    """How many alerts the table lists: with each severity chip (the status filter
    applied), in all, and in each status group (the severity filter applied)."""

    by_severity: dict[str, int]
    total: int
    by_status: dict[str, int]

    @staticmethod
    def of(
        counts: Mapping[str, Mapping[str, int]], severity: str | None, status: str | None
    ) -> Listed:
        statuses = [status] if status is not None and status in counts else list(counts)
        by_severity = {s: sum(counts[st].get(s, 0) for st in statuses) for s in SEVERITIES}
        severities = [severity] if severity else list(SEVERITIES)
        by_status = {st: sum(counts[st].get(s, 0) for s in severities) for st in counts}
        return Listed(by_severity=by_severity, total=sum(by_severity.values()), by_status=by_status)


@dataclass(frozen=True)
class Outcomes:
    """Delivery outcomes logged in the stats window: ``delivered`` of ``total``
    (delivered + dead-lettered) is ``stats.delivery_success_rate``. A notification
    re-queued after a dead letter has one outcome per round."""

    delivered: int
    total: int

    @staticmethod
    def of(stats: views.Stats) -> Outcomes:
        delivered = sum(r.delivered for r in stats.by_receiver.values())
        dead = sum(r.dead for r in stats.by_receiver.values())
        return Outcomes(delivered=delivered, total=delivered + dead)


class Pages:
    """Renders the pages of one service (its context) with a fresh nonce each."""

    def __init__(self, ctx: ApiContext, now: Callable[[], int] = now_us) -> None:
        self.ctx = ctx
        self.now = now

    def render(
        self,
        request: Request[Any, Any, Any],
        template: str,
        status: int = 200,
        seq: int | None = None,
        **values: Any,
    ) -> Response[str]:
        """``seq``: the last committed seq the page is known to show (read before any
        await that read the log). The script asks for a refresh only past it, so it must
        never run ahead of what the page holds: the projection can be ahead of the file
        while a batch commits, and the log reader sees only the file."""
        state = self.ctx.state()
        shown = self.ctx.live.last_seq if seq is None else seq
        now = self.now()
        nonce = secrets.token_urlsafe(18)
        values.update(
            nonce=nonce,
            now=now,
            ago=lambda stamp: ago(stamp, now),
            last_seq=shown,
            ready=self.ctx.readiness.reason,
            silences_active=sum(1 for s in state.silences.values() if s.active_at(now)),
            groups_open=len(state.groups),
            notify=self.ctx.live.notify,
            heartbeats_missed=sum(
                1 for hb in state.heartbeats.values() if heartbeats.open_alert(hb, state)
            ),
            path=request.url.path,
        )
        page = _environment().get_template(template)
        if request.query_params.get("partial") == "1":
            context = page.new_context(values)
            html = "".join(page.blocks["main"](context))
        else:
            html = page.render(values)
        headers = {**security_headers(nonce), "X-Tocsin-Seq": str(shown)}
        return Response(html, status_code=status, media_type=MediaType.HTML, headers=headers)

    def index(self, request: Request[Any, Any, Any]) -> Response[str]:
        """The cards count alerts as of now, events and outcomes in the window, and
        notifications as of now, each saying which; the chips and the table's group
        headings count the alerts the table lists (the filters but severity and status
        applied), so a number and the rows its link shows agree."""
        query = request.query_params
        filters = {k: query.get(k) or None for k in ("severity", "status", "q", "type", "source")}
        state = self.ctx.state()
        now = self.now()
        error = None
        try:
            page = views.list_alerts(
                state,
                severity=filters["severity"],
                type_=filters["type"],
                status=filters["status"],
                source=filters["source"],
                q=filters["q"],
                limit=TABLE_LIMIT,
                cursor=query.get("cursor") or None,
                now=now,
                order="status",
            )
        except views.QueryError as problem:
            error = str(problem)
            page = views.AlertPage(alerts=[], next_cursor=None)
        stats = views.stats(state, CHART_HOURS, now)
        alerts_now = views.alert_counts(state, now)
        narrowed = filters["type"] or filters["source"] or filters["q"]
        listed = (
            views.alert_counts(
                state, now, type_=filters["type"], source=filters["source"], q=filters["q"]
            )
            if narrowed
            else alerts_now
        )
        return self.render(
            request,
            "index.html",
            status=400 if error else 200,
            filters=filters,
            page=page,
            error=error,
            stats=stats,
            chart=chart(stats.per_hour),
            alerts_now=alerts_now,
            listed=Listed.of(listed, filters["severity"], filters["status"]),
            outcomes=Outcomes.of(stats),
            card_url=lambda severity: _url("/", {}, severity=severity, status="firing"),
            filter_url=lambda **changes: _url("/", filters, cursor=None, **changes),
            older_url=_url("/", filters, cursor=page.next_cursor) if page.next_cursor else None,
        )

    async def alert(self, request: Request[Any, Any, Any], alert_id: str) -> Response[str]:
        shown = self.ctx.live.last_seq  # before the history is read: it holds at least this
        if self.ctx.reader is None:
            return self.render(
                request, "missing.html", status=503, what="event log", name="", back="/"
            )
        alert = self.ctx.state().alerts.get(alert_id)
        rows = await self.ctx.reader.of_alert(alert_id)
        if alert is None:  # let go of by the projection: folded back from its rows
            alert = fold_alert(alert_id, ((r.seq, r.ts, r.data) for r in rows))
        if alert is None:
            return self.render(
                request, "missing.html", status=404, what="alert", name=alert_id, back="/"
            )
        detail = views.alert_detail(self.ctx.state(), alert, rows, self.now())
        return self.render(
            request,
            "alert.html",
            seq=shown,
            alert=detail,
            timeline=[describe(r) for r in reversed(detail.history)],
            deliveries=views.deliveries(rows).deliveries,
        )

    def groups(self, request: Request[Any, Any, Any]) -> Response[str]:
        listed = views.group_list(self.ctx.state()).groups
        return self.render(request, "groups.html", groups=listed)

    def heartbeats(self, request: Request[Any, Any, Any]) -> Response[str]:
        listed = views.heartbeat_list(self.ctx.state()).heartbeats
        return self.render(request, "heartbeats.html", heartbeats=listed)

    def silences(self, request: Request[Any, Any, Any]) -> Response[str]:
        query = request.query_params
        prefill = {k: query.get(k) or "" for k in ("severity", "type", "label")}
        listed = views.silence_list(self.ctx.state(), self.now()).silences
        return self.render(request, "silences.html", silences=listed, prefill=prefill)


# -- live updates -----------------------------------------------------------------------


class LiveMessage(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One Server-Sent Event: the last committed seq, and the alerts that became news
    (``views.notable``) since the stream's previous event, still firing."""

    last_seq: int
    alerts: list[views.NewAlert] = []


_encode_live = msgspec.json.Encoder().encode


async def live_events(
    ctx: ApiContext,
    clock_s: Callable[[], float] = time.monotonic,
    *,
    after: int | None = None,
    now: Callable[[], int] = now_us,
) -> AsyncGenerator[ServerSentEventMessage, None]:
    """``{"last_seq": N}`` at once and then after commits (a burst is one event; at most
    one a second), a comment line after 15 s of quiet; ends when the server stops. Each
    event carries ``alerts``: the news since the stream's previous event, or for the
    first since ``after`` (the seq the page shows), so a page hears of every alert
    opened after it was rendered. A disconnect cancels it (Litestar listens for one),
    and ``finally`` lets go of the feed."""
    feed = ctx.live
    waiter = feed.subscribe()

    def current() -> int:
        return feed.last_seq  # committed, so a page fetched now can show it

    def message(seq: int, since: int | None) -> ServerSentEventMessage:
        news = [] if since is None else feed.notable_after(since)
        body = LiveMessage(last_seq=seq, alerts=views.new_alerts(ctx.state(), news, now()))
        return ServerSentEventMessage(data=_encode_live(body).decode(), id=seq, retry=LIVE_RETRY_MS)

    try:
        sent = current()
        yield message(sent, after if after is not None and after < sent else None)
        last_write = clock_s()
        last_event = float("-inf")
        while not feed.closed:  # ``service.run`` closes the feed as it stops
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter.wait(), LIVE_POLL)
            if waiter.is_set():
                hold = last_event + LIVE_MIN_INTERVAL - clock_s()
                if hold > 0:  # a burst of commits: one event for all of it
                    await asyncio.sleep(hold)
                waiter.clear()
                seq = current()
                if seq != sent:
                    yield message(seq, sent)
                    sent = seq
                    last_write = last_event = clock_s()
                    continue
            if clock_s() - last_write >= LIVE_HEARTBEAT:
                yield ServerSentEventMessage(data=None, comment="keep-alive")
                last_write = clock_s()
    finally:
        feed.unsubscribe(waiter)


def resume_point(query: str | None, last_event_id: str | None) -> int | None:
    """Where a ``/live`` stream's news starts: the ``Last-Event-ID`` the browser sends
    when it reconnects (the seq of the last event it got), else ``?after=`` (the seq the
    page was rendered at); anything but a whole number is ignored."""
    for text in (last_event_id, query):
        digits = (text or "").strip()
        if digits.isascii() and digits.isdigit():
            return int(digits)
    return None


def dashboard_pages(ctx: ApiContext) -> list[Any]:
    """The dashboard's route handlers (reads: the app's guard applies)."""
    pages = Pages(ctx)

    @get("/", include_in_schema=False, sync_to_thread=False)
    def index(request: Request[Any, Any, Any]) -> Response[str]:
        """Stat cards, alerts per hour, the filterable alerts table."""
        return pages.index(request)

    @get("/alerts/{alert_id:str}", include_in_schema=False)
    async def alert_page(request: Request[Any, Any, Any], alert_id: FromPath[str]) -> Response[str]:
        """One alert: its facts, history timeline, deliveries, ack and resolve."""
        return await pages.alert(request, alert_id)

    @get("/groups", include_in_schema=False, sync_to_thread=False)
    def groups_page(request: Request[Any, Any, Any]) -> Response[str]:
        """The open notification groups: each group's alerts together, its next due."""
        return pages.groups(request)

    @get("/heartbeats", include_in_schema=False, sync_to_thread=False)
    def heartbeats_page(request: Request[Any, Any, Any]) -> Response[str]:
        """The heartbeats: each one's last beat and next deadline, missed ones first."""
        return pages.heartbeats(request)

    @get("/silences", include_in_schema=False, sync_to_thread=False)
    def silences_page(request: Request[Any, Any, Any]) -> Response[str]:
        """The silences and a form to add one."""
        return pages.silences(request)

    @get("/live", include_in_schema=False, sync_to_thread=False)
    def live(request: Request[Any, Any, Any]) -> ServerSentEvent:
        """Server-Sent Events: ``{"last_seq", "alerts"}`` after commits, for the pages'
        script; ``?after=SEQ``: tell of the alerts that were news past that seq."""
        headers = {**security_headers(secrets.token_urlsafe(18)), "Cache-Control": "no-cache"}
        after = resume_point(
            request.query_params.get("after"), request.headers.get("last-event-id")
        )
        return ServerSentEvent(live_events(ctx, after=after), headers=headers)

    return [index, alert_page, groups_page, heartbeats_page, silences_page, live]
