"""What the soak (``bench/soak.py``) checks at the end, each check a name, a verdict
and the figures behind it; and the figures it reads them from: the log (read-only
SQLite, as ``tocsin replay`` reads it), the receivers' ledgers and the RSS samples.

Nothing here talks to a process: the soak gathers, these functions judge. Every check
compares two independent counts of the same thing (what JetStream acknowledged to the
publisher against what the log and ``/api/v1/stats`` say; what the log says was
delivered against what the receivers accepted), so none can pass by agreeing with
itself.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from bench.soak_load import GIVE_UP_AFTER, Operator, Published
from bench.soak_receiver import SoakReceiver

OUTCOMES = ("delivery.succeeded", "delivery.dead_lettered", "delivery.superseded")
"""The facts that settle a notification: delivered, dead-lettered, or superseded (not
sent: its receiver had accepted a later notification of its fingerprint, DESIGN.md's
per-fingerprint order, ``core/policy/order.py``)."""


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class Superseded:
    """What a ``delivery.superseded`` fact says: who it was for, and the later
    notification (routed at ``by_seq``) its receiver had accepted instead."""

    receiver: str
    fingerprint: str
    log_seq: int  # the routed seq of the superseded notification, as its work item said
    by: str
    by_seq: int


@dataclass
class LogFacts:
    """The log's figures the checks need, read once after the drain."""

    kinds: Counter[str] = field(default_factory=Counter)
    inbound_seqs: int = 0  # distinct TOCSIN_IN positions the router logged
    firing_received: int = 0
    resolved_received: int = 0
    suppressed_by_cause: Counter[str] = field(default_factory=Counter)
    routed: dict[str, str] = field(default_factory=dict)  # notification_id -> receiver
    # notification_id -> (seq of its alert.routed, fingerprint)
    routed_at: dict[str, tuple[int, str]] = field(default_factory=dict)
    outcomes: dict[str, list[str]] = field(default_factory=dict)  # notification_id -> kinds
    superseded: dict[str, Superseded] = field(default_factory=dict)  # notification_id -> fact
    delivered_by_receiver: dict[str, set[str]] = field(default_factory=dict)
    attempt_errors: dict[str, list[str]] = field(default_factory=dict)

    @property
    def unsettled(self) -> list[str]:
        """Routed notifications with no outcome yet."""
        return [nid for nid in self.routed if nid not in self.outcomes]


def read_log(db: Path) -> LogFacts:
    """Every figure of ``LogFacts`` from the log file, opened read-only."""
    facts = LogFacts()
    decode = msgspec.json.decode
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        for kind, count in conn.execute("SELECT kind, COUNT(*) FROM events GROUP BY kind"):
            facts.kinds[kind] = count
        facts.inbound_seqs = int(
            conn.execute(
                "SELECT COUNT(DISTINCT in_seq) FROM events WHERE in_seq IS NOT NULL"
            ).fetchone()[0]
        )
        wanted = (
            "alert.received",
            "alert.suppressed",
            "alert.routed",
            "delivery.attempt_failed",
            *OUTCOMES,
        )
        marks = ",".join("?" * len(wanted))
        rows = conn.execute(f"SELECT seq, kind, data FROM events WHERE kind IN ({marks})", wanted)
        for seq, kind, data in rows:
            fact: dict[str, Any] = decode(data)
            if kind == "alert.received":
                if fact.get("status") == "resolved":
                    facts.resolved_received += 1
                else:
                    facts.firing_received += 1
            elif kind == "alert.suppressed":
                facts.suppressed_by_cause[fact.get("cause", "duplicate")] += 1
            elif kind == "alert.routed":
                facts.routed[fact["notification_id"]] = fact["receiver"]
                facts.routed_at[fact["notification_id"]] = (seq, fact["fingerprint"])
            elif kind == "delivery.attempt_failed":
                facts.attempt_errors.setdefault(fact["notification_id"], []).append(
                    f"{fact.get('status_code')}: {fact.get('error', '')[:60]}"
                )
            else:
                facts.outcomes.setdefault(fact["notification_id"], []).append(kind)
                if kind == "delivery.succeeded":
                    facts.delivered_by_receiver.setdefault(fact["receiver"], set()).add(
                        fact["notification_id"]
                    )
                elif kind == "delivery.superseded":
                    facts.superseded[fact["notification_id"]] = Superseded(
                        receiver=fact["receiver"],
                        fingerprint=fact["fingerprint"],
                        log_seq=fact["log_seq"],
                        by=fact["superseded_by"],
                        by_seq=fact["superseded_by_seq"],
                    )
    return facts


def unjustified_supersessions(facts: LogFacts) -> dict[str, str]:
    """The superseded notifications the log does not justify, each with why: the rule
    (``core/policy/order.py``) is that a notification is superseded only by a later
    one (routed at a higher seq) of the same receiver and fingerprint that the
    receiver accepted, so the one it names must be routed there, after it, at the seq
    it says, and delivered (``delivery.succeeded``) in the log."""
    wrong: dict[str, str] = {}
    for nid, fact in facts.superseded.items():
        own = facts.routed_at.get(nid)
        by = facts.routed_at.get(fact.by)
        if own is None:
            wrong[nid] = "never routed"
        elif (facts.routed[nid], own[1]) != (fact.receiver, fact.fingerprint):
            wrong[nid] = "receiver or fingerprint differ from its alert.routed"
        elif by is None:
            wrong[nid] = f"names {fact.by}, never routed"
        elif (facts.routed[fact.by], by[1]) != (fact.receiver, fact.fingerprint):
            wrong[nid] = f"names {fact.by}, routed to another receiver or fingerprint"
        elif not own[0] == fact.log_seq < by[0] == fact.by_seq:
            wrong[nid] = (
                f"routed at seq {own[0]} (fact: {fact.log_seq}), names {fact.by} routed at "
                f"{by[0]} (fact: {fact.by_seq}): not later"
            )
        elif "delivery.succeeded" not in facts.outcomes.get(fact.by, []):
            wrong[nid] = f"names {fact.by}, whose outcomes are {facts.outcomes.get(fact.by)}"
    return wrong


# -- RSS ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RssSample:
    at: float  # seconds since the load started
    incarnation: int  # which start of tocsin serve (1, 2, ...)
    mib: float


@dataclass(frozen=True, slots=True)
class RssFit:
    """A least-squares line through the samples of the window."""

    slope_mib_per_min: float
    first_mib: float
    last_mib: float
    max_mib: float
    samples: int
    start: float
    end: float
    incarnations: tuple[int, ...]


def rss_fit(samples: list[RssSample], start: float, end: float) -> RssFit | None:
    """The fit over the samples taken in ``[start, end]``; ``None`` with fewer than 3."""
    window = [s for s in samples if start <= s.at <= end]
    if len(window) < 3:
        return None
    n = len(window)
    mean_t = sum(s.at for s in window) / n
    mean_r = sum(s.mib for s in window) / n
    spread = sum((s.at - mean_t) ** 2 for s in window)
    slope = sum((s.at - mean_t) * (s.mib - mean_r) for s in window) / spread if spread else 0.0
    return RssFit(
        slope_mib_per_min=slope * 60,
        first_mib=window[0].mib,
        last_mib=window[-1].mib,
        max_mib=max(s.mib for s in window),
        samples=n,
        start=start,
        end=end,
        incarnations=tuple(sorted({s.incarnation for s in window})),
    )


# -- Idempotency-Keys received twice ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Disruption:
    """A moment DESIGN.md invariant 4 lets a notification be sent twice: tocsin died
    (between a send and its outcome), or the broker went away (an outcome's PubAck)."""

    cause: str  # "tocsin killed", "broker killed", ...
    start: float  # seconds since the load started
    end: float  # when it was whole again


def explain_twice(
    first_accepted: float, disruptions: list[Disruption], slack: float
) -> Disruption | None:
    """The disruption that explains a second acceptance of a key first accepted at
    ``first_accepted``: one that began within ``slack`` seconds after that (the send's
    outcome was not yet published) or was under way then."""
    for d in disruptions:
        if d.start - slack <= first_accepted <= d.end:
            return d
    return None


# -- the verdicts -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Chaos:
    """What the soak did to tocsin: ``disruptions`` in seconds since ``started``
    (``time.monotonic()``), and what did not go as planned."""

    started: float
    disruptions: list[Disruption]
    failures: list[str]


@dataclass(frozen=True, slots=True)
class Limits:
    drain: float  # the longest the drain waited, s
    rss_slope: float  # MiB/min: flat is at most this
    twice_slack: float  # s: how long after a send its outcome is surely published


def _within(name: str, logged: int, ok: int, unknown: int) -> Check:
    return Check(
        name,
        ok <= logged <= ok + unknown,
        f"log {logged}; API confirmed {ok}, no answer to {unknown}",
    )


def count_checks(p: Published, facts: LogFacts, gathered: dict[str, Any]) -> list[Check]:
    """What JetStream acknowledged to the publisher, against the stream, the log, the
    fold (``tocsin state --json``) and ``/api/v1/stats``."""
    stats = gathered["stats"]
    state_alerts: list[dict[str, Any]] = gathered["state"]["alerts"]
    occurrences = sum(a["occurrences"] for a in state_alerts)
    suppressed = sum(a["suppressed_count"] for a in state_alerts)
    logged_suppressed = facts.kinds["alert.suppressed"] + facts.kinds["alert.silenced"]
    duplicate_event = facts.suppressed_by_cause.get("duplicate_event", 0)
    return [
        Check(
            "every publish acknowledged",
            p.unacknowledged == 0,
            f"{p.unacknowledged} messages never got a PubAck within {GIVE_UP_AFTER:.0f} s "
            "(unknown whether stored)",
        ),
        Check(
            "TOCSIN_IN holds what the publisher was acknowledged",
            gathered["in_last_seq"] == p.stored,
            f"stream last seq {gathered['in_last_seq']}, messages stored per PubAcks {p.stored}",
        ),
        Check(
            "every acknowledged message logged once",
            facts.inbound_seqs == p.stored,
            f"{facts.inbound_seqs} distinct inbound seqs in the log, {p.stored} acknowledged",
        ),
        Check(
            "Σ occurrences = unique firing events acknowledged",
            occurrences == p.firing,
            f"Σ occurrences {occurrences} (tocsin state --json), unique firing events {p.firing}"
            f" (+ {p.repeated_event_ids} repeats of an event_id, which DESIGN §4 says are not"
            " counted again)",
        ),
        Check(
            "stats total = firing events acknowledged, repeats of an event_id included",
            stats["total"] == p.firing + p.repeated_event_ids,
            f"/api/v1/stats total {stats['total']}, unique firing events {p.firing} + "
            f"{p.repeated_event_ids} repeats (received, counted as suppressed, DESIGN §10)",
        ),
        Check(
            "repeated event_ids suppressed as duplicate_event",
            duplicate_event == p.repeated_event_ids,
            f"alert.suppressed cause duplicate_event {duplicate_event}, repeats published "
            f"{p.repeated_event_ids}",
        ),
        Check(
            "resolves logged",
            facts.resolved_received == p.resolved,
            f"alert.received resolved {facts.resolved_received}, acknowledged {p.resolved}",
        ),
        Check(
            "bad input rejected and counted",
            facts.kinds["alert.rejected"] == p.bad and stats.get("rejected") == p.bad,
            f"alert.rejected {facts.kinds['alert.rejected']}, stats rejected "
            f"{stats.get('rejected')}, acknowledged {p.bad}",
        ),
        Check(
            "suppressed: stats = Σ suppressed_count + repeats = the log's facts",
            stats["suppressed"] == suppressed + duplicate_event == logged_suppressed,
            f"stats {stats['suppressed']}, Σ suppressed_count {suppressed} + duplicate_event "
            f"{duplicate_event} (a repeat belongs to no alert), alert.suppressed + "
            f"alert.silenced {logged_suppressed}",
        ),
        Check(
            "JetStream dropped the same-Nats-Msg-Id copies",
            p.copies_dropped == p.copies_sent,
            f"{p.copies_dropped} of {p.copies_sent} copies dropped",
        ),
    ]


def delivery_checks(facts: LogFacts, gathered: dict[str, Any], limits: Limits) -> list[Check]:
    """Nothing pending after the drain; every routed notification settled once."""
    left = gathered["left"]
    settled_twice = [n for n, kinds in facts.outcomes.items() if len(kinds) > 1]
    orphans = [n for n in facts.outcomes if n not in facts.routed]
    delivered = facts.kinds["delivery.succeeded"]
    dead = facts.kinds["delivery.dead_lettered"]
    superseded = facts.kinds["delivery.superseded"]
    unjustified = unjustified_supersessions(facts)
    queue = gathered["stats"]["queue"]
    return [
        Check(
            "drained: nothing pending",
            not any(left.values()),
            ", ".join(f"{k} {v}" for k, v in left.items()) + f" after ≤ {limits.drain:.0f} s",
        ),
        Check(
            "every routed notification delivered, dead-lettered or superseded, once",
            not facts.unsettled and not settled_twice and not orphans,
            f"{len(facts.routed)} routed: {delivered} delivered, {dead} dead-lettered, "
            f"{superseded} superseded; {len(facts.unsettled)} without an outcome, "
            f"{len(settled_twice)} with two, {len(orphans)} outcomes of nothing routed",
        ),
        Check(
            "every superseded notification names a later one delivered to its receiver",
            not unjustified,
            f"{superseded} superseded, {superseded - len(unjustified)} by a notification of "
            f"the same receiver and fingerprint routed after it and delivered; "
            f"{len(unjustified)} not: {dict(list(unjustified.items())[:3])}",
        ),
        Check(
            "stats queue empty",
            queue["pending"] == 0 and queue["retrying"] == 0 and queue["dead"] == dead,
            f"/api/v1/stats queue {queue}, dead-lettered in the log {dead}",
        ),
    ]


def receiver_checks(
    receivers: list[SoakReceiver], facts: LogFacts, chaos: Chaos, limits: Limits
) -> tuple[list[Check], dict[str, Any]]:
    """The receivers' ledgers against the log; keys accepted twice, each explained by a
    disruption (DESIGN.md invariant 4) or listed as unexplained."""
    checks = []
    twice: dict[str, Any] = {"allowed": {}, "unexplained": []}
    for receiver in receivers:
        got = set(receiver.ledger.accepted)
        logged = facts.delivered_by_receiver.get(receiver.name, set())
        sent_to = {n for n, r in facts.routed.items() if r == receiver.name}
        checks.append(
            Check(
                f"receiver {receiver.name}: the log's deliveries were received",
                logged <= got and got <= sent_to,
                f"{len(logged - got)} logged delivered but never accepted; "
                f"{len(got - sent_to)} accepted but not routed to it; "
                f"{len(got)} keys accepted, {receiver.ledger.requests} requests",
            )
        )
        for key, times in receiver.ledger.twice().items():
            for first in times[:-1]:
                why = explain_twice(first - chaos.started, chaos.disruptions, limits.twice_slack)
                if why is None:
                    twice["unexplained"].append(
                        {
                            "receiver": receiver.name,
                            "key": key,
                            "accepted_at": [round(t - chaos.started, 2) for t in times],
                            "failed_attempts": facts.attempt_errors.get(key, []),
                        }
                    )
                else:
                    twice["allowed"][why.cause] = twice["allowed"].get(why.cause, 0) + 1
    checks.append(
        Check(
            "no Idempotency-Key accepted twice beyond invariant 4",
            not twice["unexplained"],
            f"{sum(twice['allowed'].values())} allowed ({twice['allowed'] or 'none'}), "
            f"{len(twice['unexplained'])} unexplained",
        )
    )
    return checks, twice


def state_checks(facts: LogFacts, gathered: dict[str, Any], operator: Operator) -> list[Check]:
    """``tocsin verify``; live state = fold(log); the operator's confirmed requests."""
    verify = gathered["verify"]
    state_alerts: list[dict[str, Any]] = gathered["state"]["alerts"]
    fold = {a["id"]: (a["occurrences"], a["suppressed_count"], a["status"]) for a in state_alerts}
    live = gathered["api_alerts"]
    differ = sorted(k for k in fold.keys() | live.keys() if fold.get(k) != live.get(k))
    return [
        Check(
            "tocsin verify",
            verify.returncode == 0,
            f"exit {verify.returncode}: {(verify.stdout or verify.stderr).strip()[-300:]}",
        ),
        Check(
            "live state = fold(log)",
            not differ,
            f"{len(live)} alerts live, {len(fold)} folded; {len(differ)} differ {differ[:3]}",
        ),
        _within("operator acks in the log", facts.kinds["alert.acked"], operator.acks.ok,
                operator.acks.unknown),
        _within("silences created in the log", facts.kinds["silence.created"],
                operator.silences.ok, operator.silences.unknown),
        _within("silences lifted in the log", facts.kinds["silence.deleted"],
                operator.unsilences.ok, operator.unsilences.unknown),
    ]  # fmt: skip


def process_checks(gathered: dict[str, Any], chaos: Chaos, limits: Limits) -> list[Check]:
    """RSS flat over the last part; the chaos as planned; a clean stop."""
    fit: RssFit | None = gathered["rss_fit"]
    if fit is None:
        rss = Check("RSS flat", False, "fewer than 3 samples in the window")
    else:
        rss = Check(
            "RSS flat",
            fit.slope_mib_per_min <= limits.rss_slope and len(fit.incarnations) == 1,
            f"slope {fit.slope_mib_per_min:+.2f} MiB/min (flat: ≤ {limits.rss_slope} MiB/min) "
            f"over the last {(fit.end - fit.start) / 60:.1f} min, {fit.first_mib:.1f} → "
            f"{fit.last_mib:.1f} MiB (max {fit.max_mib:.1f}), {fit.samples} samples, "
            f"incarnations {list(fit.incarnations)}",
        )
    return [
        rss,
        Check(
            "the chaos went as planned",
            not chaos.failures,
            "; ".join(chaos.failures) or f"{len(chaos.disruptions)} disruptions, all recovered",
        ),
        Check(
            "tocsin serve stops cleanly",
            gathered.get("exit_code") == 0,
            f"exit code {gathered.get('exit_code')} on SIGTERM",
        ),
    ]


def judge(
    p: Published,
    operator: Operator,
    receivers: list[SoakReceiver],
    facts: LogFacts,
    gathered: dict[str, Any],
    chaos: Chaos,
    limits: Limits,
) -> tuple[list[Check], dict[str, Any]]:
    """Every check, and the figures for the report. ``gathered`` holds what the soak
    read after the drain: ``stats``, ``state`` (``tocsin state --json``),
    ``api_alerts``, ``in_last_seq``, ``left``, ``verify``, ``rss_fit``, ``exit_code``."""
    checks = count_checks(p, facts, gathered) + delivery_checks(facts, gathered, limits)
    by_receiver, twice = receiver_checks(receivers, facts, chaos, limits)
    checks += by_receiver + state_checks(facts, gathered, operator)
    checks += process_checks(gathered, chaos, limits)
    state_alerts: list[dict[str, Any]] = gathered["state"]["alerts"]
    figures: dict[str, Any] = {
        "published": asdict(p) | {"firing_ids": p.firing},
        "twice": twice,
        "routed": len(facts.routed),
        "delivered": facts.kinds["delivery.succeeded"],
        "dead_lettered": facts.kinds["delivery.dead_lettered"],
        "superseded": facts.kinds["delivery.superseded"],
        "failed_attempts": facts.kinds["delivery.attempt_failed"],
        "log_events": sum(facts.kinds.values()),
        "occurrences": sum(a["occurrences"] for a in state_alerts),
        "suppressed": sum(a["suppressed_count"] for a in state_alerts),
        "suppressed_by_cause": dict(facts.suppressed_by_cause),
        "operator": {
            "acks": asdict(operator.acks),
            "silences": asdict(operator.silences),
            "unsilences": asdict(operator.unsilences),
        },
        "receivers": {
            r.name: {
                "requests": r.ledger.requests,
                "answers": dict(r.ledger.answers),
                "keys_accepted": len(r.ledger.accepted),
            }
            for r in receivers
        },
    }
    return checks, figures
