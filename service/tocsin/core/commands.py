"""Operator commands -> the facts they add to the log (pure).

Acknowledging, resolving, silencing and re-queueing are facts like any other: each
command checks the projection and returns the events to append, or raises
``CommandError`` (with the HTTP status and the field at fault) without changing
anything. ``control`` commits them through the single writer and publishes what they
justify.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

import msgspec

from tocsin.core import events as ev
from tocsin.core.contracts import Severity
from tocsin.core.decide.route import told_of_resolve
from tocsin.core.decide.silences import MatchersError, parse_matchers
from tocsin.core.deliveries import each_delivery, open_deliveries
from tocsin.core.outbound import group_notification_of
from tocsin.core.state import Delivery, State
from tocsin.core.times import parse_duration, parse_rfc3339

MAX_NAME = 200
MAX_COMMENT = 2000
MAX_SILENCE_US = 366 * 86400 * 1_000_000


class CommandError(Exception):
    """A command refused: ``status`` is its HTTP answer, ``field`` the input at fault."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.field = field


def _text(value: str | None, field: str, limit: int, required: bool) -> str:
    text = (value or "").strip()
    if required and not text:
        raise CommandError(422, f"{field} is required", field)
    if len(text) > limit:
        raise CommandError(422, f"{field} is longer than {limit} characters", field)
    return text


def _open_alert(state: State, alert_id: str) -> tuple[str, Any]:
    alert = state.alerts.get(alert_id)
    if alert is None:
        raise CommandError(404, f"no alert {alert_id!r}", "id")
    current = state.open_by_fingerprint.get(alert.fingerprint)
    if alert.status == "resolved" or current is None or current.alert_id != alert_id:
        raise CommandError(409, f"alert {alert_id} is already resolved", "id")
    return alert.fingerprint, current


def ack(state: State, alert_id: str, *, by: str, comment: str | None, at: int) -> list[ev.Event]:
    """Acknowledge an open alert: its reminders stop until it resolves (a worse
    severity still notifies) and its escalation chains end (the fold's, on this fact:
    ``core.escalation``). Acknowledging an acknowledged alert adds nothing."""
    who = _text(by, "by", MAX_NAME, required=True)
    note = _text(comment, "comment", MAX_COMMENT, required=False)
    fingerprint, current = _open_alert(state, alert_id)
    if current.acked:
        return []
    return [ev.AlertAcked(alert_id=alert_id, fingerprint=fingerprint, by=who, comment=note, at=at)]


def resolve(
    state: State,
    alert_id: str,
    *,
    by: str,
    comment: str | None,
    at: int,
    new_id: Callable[[], str],
) -> list[ev.Event]:
    """Close an open alert by hand; like a publisher's ``resolved`` event, every
    receiver and group that was told of it hears that it resolved."""
    who = _text(by, "by", MAX_NAME, required=True)
    note = _text(comment, "comment", MAX_COMMENT, required=False)
    fingerprint, current = _open_alert(state, alert_id)
    alert = state.alerts[alert_id]
    facts: list[ev.Event] = [
        ev.AlertResolved(
            alert_id=alert_id,
            fingerprint=fingerprint,
            resolved_at=at,
            by=who,
            comment=note or None,
            trace_id=alert.trace_id,
        )
    ]
    facts += told_of_resolve(
        state,
        current,
        fingerprint=fingerprint,
        severity=alert.severity,
        new_id=new_id,
        trace_id=alert.trace_id,
    )
    return facts


def _instant(value: str, field: str, base: int) -> int:
    """RFC 3339, or a duration forward from ``base`` (``2h`` = two hours after it)."""
    try:
        return base + int(parse_duration(value) * 1_000_000)
    except ValueError:
        pass
    try:
        return parse_rfc3339(value)
    except ValueError as error:
        raise CommandError(
            422, f"{field}: {value[:80]!r} is neither RFC 3339 nor a duration like 2h", field
        ) from error


def create_silence(
    state: State,
    *,
    matchers: Any,
    starts_at: str | None,
    ends_at: str,
    created_by: str,
    comment: str | None,
    now: int,
    new_id: Callable[[], str],
) -> list[ev.Event]:
    """A silence over the alerts ``matchers`` select (route ``match`` grammar, at least
    one key) from ``starts_at`` (default now) to ``ends_at`` (RFC 3339, or a duration
    after the start)."""
    who = _text(created_by, "created_by", MAX_NAME, required=True)
    note = _text(comment, "comment", MAX_COMMENT, required=False)
    try:
        match = parse_matchers(matchers)
    except MatchersError as error:
        raise CommandError(422, f"matchers: {error}", "matchers") from error
    table = {k: v for k, v in msgspec.structs.asdict(match).items() if v}  # {} selects nothing
    if not table:
        raise CommandError(
            422,
            "matchers: give at least one of severity, type, source, labels, matchers",
            "matchers",
        )
    start = _instant(starts_at, "starts_at", now) if starts_at else now
    end = _instant(ends_at, "ends_at", start)
    if end <= start:
        raise CommandError(422, "ends_at must be after starts_at", "ends_at")
    if end <= now:
        raise CommandError(422, "ends_at is in the past", "ends_at")
    if end - start > MAX_SILENCE_US:
        raise CommandError(422, "a silence may last at most 366 days", "ends_at")
    return [
        ev.SilenceCreated(
            silence_id=new_id(),
            matchers=table,
            starts_at=start,
            ends_at=end,
            created_by=who,
            comment=note,
            created_at=now,
        )
    ]


def delete_silence(state: State, silence_id: str, *, by: str | None, at: int) -> list[ev.Event]:
    silence = state.silences.get(silence_id)
    if silence is None or silence.deleted_at is not None:
        raise CommandError(404, f"no silence {silence_id!r}", "id")
    who = _text(by, "by", MAX_NAME, required=False) or None
    return [ev.SilenceDeleted(silence_id=silence_id, by=who, at=at)]


def check_receiver(state: State, receiver: str | None, configured: Collection[str]) -> None:
    """A re-queue may name a receiver that is configured, or one the log has delivered
    to (its dead letters outlive its removal from the config); any other name is a
    typo, refused (404) rather than answered with "0 re-queued"."""
    if receiver is None or receiver in configured:
        return
    if any(d.receiver == receiver for d in each_delivery(state.deliveries)):
        return
    known = ", ".join(sorted(configured)) or "none"
    raise CommandError(
        404,
        f"receiver {receiver!r} is not configured and has no deliveries; configured: {known}",
        "receiver",
    )


def dead_letters(state: State, *, receiver: str | None, since: int | None) -> list[Delivery]:
    """The dead-lettered deliveries a ``retry-failed`` would re-queue, oldest first."""
    chosen = [
        d
        for d in open_deliveries(state.deliveries)
        if d.status == "dead"
        and (receiver is None or d.receiver == receiver)
        and (since is None or d.updated_at >= since)
    ]
    return sorted(chosen, key=lambda d: d.routed_seq)


def requeue(
    state: State,
    routed: Mapping[int, ev.AlertRouted | ev.GroupNotified],
    *,
    receiver: str | None,
    since: int | None,
    by: str | None,
) -> list[ev.Event]:
    """Re-queue dead letters; ``routed`` holds their routed facts by seq (read from the
    log by the caller). Each goes back to its receiver with the same notification id."""
    facts: list[ev.Event] = []
    for delivery in dead_letters(state, receiver=receiver, since=since):
        fact = routed.get(delivery.routed_seq)
        if fact is None:
            continue  # its routed fact was compacted away; nothing to rebuild it from
        if isinstance(fact, ev.GroupNotified):
            facts.append(_group_requeued(delivery, fact, by))
            continue
        facts.append(
            ev.DeliveryRequeued(
                notification_id=delivery.notification_id,
                receiver=delivery.receiver,
                alert_id=delivery.alert_id,
                fingerprint=fact.fingerprint,
                dedup_key=fact.dedup_key,
                reason=fact.reason,
                severity=fact.severity,
                routed_seq=delivery.routed_seq,
                generation=delivery.generation + 1,
                by=by,
                trace_id=fact.trace_id,
            )
        )
    return facts


def _group_requeued(delivery: Delivery, fact: ev.GroupNotified, by: str | None) -> ev.Event:
    """A group's dead letter back on its queue, its body carried as it was sent."""
    # a group body lists its alerts most severe first (contracts.GroupNotification)
    severity: Severity = fact.alerts[0].severity if fact.alerts else "warning"
    return ev.DeliveryRequeued(
        notification_id=delivery.notification_id,
        receiver=delivery.receiver,
        alert_id=delivery.alert_id,
        fingerprint="",
        dedup_key=fact.group_key,
        reason="firing" if fact.reason == "update" else fact.reason,
        severity=severity,
        routed_seq=delivery.routed_seq,
        generation=delivery.generation + 1,
        by=by,
        trace_id=fact.trace_id,
        group=group_notification_of(fact),
    )


# -- commands as data: what the API asks a partition's router to carry out ------------


class Ack(msgspec.Struct, kw_only=True, frozen=True, tag="ack"):
    alert_id: str
    by: str
    comment: str | None = None
    at: int


class Resolve(msgspec.Struct, kw_only=True, frozen=True, tag="resolve"):
    alert_id: str
    by: str
    comment: str | None = None
    at: int


class CreateSilence(msgspec.Struct, kw_only=True, frozen=True, tag="silence"):
    """A silence with the id the asker chose (every partition logs the same silence),
    replacing ``replaces`` when given (an Alertmanager silence update)."""

    silence_id: str
    matchers: Any
    starts_at: str | None = None
    ends_at: str
    created_by: str
    comment: str | None = None
    now: int
    replaces: str | None = None


class DeleteSilence(msgspec.Struct, kw_only=True, frozen=True, tag="unsilence"):
    silence_id: str
    by: str | None = None
    at: int


Command = Ack | Resolve | CreateSilence | DeleteSilence
"""An operator command as data: decided (``decide``) by the process that writes the
log, which may be another than the one asked (a partition's router)."""


def about_alert(command: Command) -> str | None:
    """The alert a command is about (its partition carries it out), or ``None`` for one
    every partition carries out (a silence selects alerts of any partition)."""
    return command.alert_id if isinstance(command, Ack | Resolve) else None


def decide(state: State, command: Command, new_id: Callable[[], str]) -> list[ev.Event]:
    """The facts ``command`` adds to the log whose projection is ``state``."""
    if isinstance(command, Ack):
        return ack(state, command.alert_id, by=command.by, comment=command.comment, at=command.at)
    if isinstance(command, Resolve):
        return resolve(
            state,
            command.alert_id,
            by=command.by,
            comment=command.comment,
            at=command.at,
            new_id=new_id,
        )
    if isinstance(command, DeleteSilence):
        return delete_silence(state, command.silence_id, by=command.by, at=command.at)
    facts: list[ev.Event] = []
    if command.replaces is not None:
        old = state.silences.get(command.replaces)
        if old is None:
            raise CommandError(404, f"no silence {command.replaces!r}", "id")
        if old.deleted_at is None and command.now < old.ends:
            facts += delete_silence(state, command.replaces, by=command.created_by, at=command.now)
    return facts + create_silence(
        state,
        matchers=command.matchers,
        starts_at=command.starts_at,
        ends_at=command.ends_at,
        created_by=command.created_by,
        comment=command.comment,
        now=command.now,
        new_id=lambda: command.silence_id,
    )
