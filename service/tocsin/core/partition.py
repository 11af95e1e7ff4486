"""Partitions (DESIGN.md section 17), pure: which partition an inbound message belongs
to, what a partitioner forwards, and what the router of a partition reads back.

Each partition has one router and one log, so everything that compares events with each
other (dedup, grouping, inhibition) sees only its partition's events. The partition of
an alert event is therefore a function of its identity, computed with the router's own
ingest code (``ingest.parse``: decode, validate, normalize, fingerprint), so that every
event of a fingerprint, resolves included, reaches the same router:

- by default, a stable hash of the fingerprint, mod N;
- with ``[partitions] key`` (e.g. ``["labels.cluster"]``), a stable hash of those fields'
  values instead: a group whose ``group_by`` covers the key never spans partitions;
- a heartbeat beat: a stable hash of its name (its router keeps its deadline);
- bad input (undecodable, invalid): a hash of its subject and TOCSIN_IN seq, so that
  rejections spread and each is logged once, by the partition it went to.

"Stable" is BLAKE2b, never Python's ``hash()``, which is salted per process: every
partitioner, whatever its process, must send a fingerprint to the same partition.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import msgspec

from tocsin.core import ingest
from tocsin.core.decide.route import Route
from tocsin.core.groups import EVERY_LABEL, FINGERPRINT, LABEL_PREFIX
from tocsin.core.outbound import Outbound
from tocsin.core.subjects import (
    MSG_ID,
    ORIGIN_MSG_ID,
    ORIGIN_SEQ,
    ORIGIN_SUBJECT,
    PARTITION,
    heartbeat_of,
    source_of,
)

MAX_PARTITIONS = 64
"""More partitions than a NATS cluster has machines to run their routers on buys nothing."""

KEY_FIELDS = ("type", FINGERPRINT)
"""The top-level fields a partition key may name, besides ``labels.<name>``: those that
are the same for every event of a fingerprint (``source`` and ``severity`` are not)."""

_encoder = msgspec.json.Encoder()


def stable_hash(text: str) -> int:
    """A 64-bit hash of ``text`` that every process computes alike (BLAKE2b)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def check_key(keys: Sequence[str]) -> str | None:
    """What is wrong with a ``[partitions] key`` list (``None``: nothing): each key is
    ``type``, ``fingerprint`` or ``labels.<name>``, given once."""
    for key in keys:
        if key in KEY_FIELDS or (key.startswith(LABEL_PREFIX) and len(key) > len(LABEL_PREFIX)):
            continue
        return (
            f"{key!r} is not a field every event of a fingerprint shares: "
            f"use {', '.join(KEY_FIELDS)} or labels.<name>"
        )
    if len(set(keys)) != len(keys):
        return "a key is named twice"
    return None


def key_values(event: ingest.Normalized, key: Sequence[str]) -> list[str]:
    """The event's values for the partition ``key`` (a label it lacks: ``""``)."""
    return _values(event.fingerprint, event.type, event.labels, key)


def _values(
    fingerprint: str, type_: str, labels: Mapping[str, str], key: Sequence[str]
) -> list[str]:
    fields = {"type": type_, FINGERPRINT: fingerprint}
    return [
        fields[name] if name in fields else labels.get(name[len(LABEL_PREFIX) :], "")
        for name in key
    ]


def of_alert(
    fingerprint: str,
    type_: str,
    labels: Mapping[str, str],
    *,
    count: int,
    key: Sequence[str] = (),
) -> int:
    """The partition of every event of an alert with this identity (``of_message`` for
    an event that ingest accepted): where ``tocsin repartition`` moves an open alert."""
    if count == 1:
        return 0
    if key:
        return (
            stable_hash(_encoder.encode(_values(fingerprint, type_, labels, key)).decode()) % count
        )
    return stable_hash(fingerprint) % count


ORDINAL = "ordinal"
"""``router --partition ordinal`` (or ``TOCSIN_PARTITION=ordinal``): the partition is the
ordinal of the host's name, as a Kubernetes StatefulSet names its pods."""


def ordinal_of(hostname: str) -> int | None:
    """The ordinal a StatefulSet gives the pod named ``hostname``: the number after its
    last ``-`` (``tocsin-router-2`` -> 2), ``None`` when it ends otherwise. One
    StatefulSet of N routers then runs partitions 0..N-1 from one pod template, each pod
    its own partition, with no wrapper script."""
    _, dash, tail = hostname.partition(".")[0].rpartition("-")
    if not dash or not tail.isdigit() or not tail.isascii():
        return None
    return int(tail)


def of_heartbeat(name: str, count: int) -> int:
    """The partition whose router receives the beats of heartbeat ``name`` and keeps its
    deadline (the others must not: they would find it missed)."""
    return stable_hash(f"heartbeat\n{name}") % count


def of_message(
    subject: str,
    data: bytes,
    *,
    inbound_seq: int,
    count: int,
    key: Sequence[str] = (),
    received_at: int = 0,
) -> int:
    """The partition (``0 <= k < count``) of the inbound message published on
    ``subject`` with payload ``data``, stored in TOCSIN_IN at ``inbound_seq``."""
    if count == 1:
        return 0
    heartbeat = heartbeat_of(subject)
    if heartbeat is not None:
        return of_heartbeat(heartbeat, count)
    parsed = ingest.parse(data, default_source=source_of(subject), received_at=received_at)
    if isinstance(parsed, ingest.Rejection):
        return stable_hash(f"rejected\n{subject}\n{inbound_seq}") % count
    return of_alert(parsed.fingerprint, parsed.type, parsed.labels, count=count, key=key)


def forward_msg_id(inbound_seq: int) -> str:
    """The ``Nats-Msg-Id`` of the forward of TOCSIN_IN's message ``inbound_seq``: a
    partitioner that dies after forwarding and before acking forwards it again under
    the same id, which JetStream's duplicate window drops."""
    return f"in:{inbound_seq}"


def forward_headers(
    headers: Mapping[str, str] | None, subject: str, inbound_seq: int
) -> dict[str, str]:
    """The headers a partitioner forwards: the publisher's, with its ``Nats-Msg-Id``
    (its idempotency key, section 4) moved to ``ORIGIN_MSG_ID``, the subject it was
    published on, its TOCSIN_IN seq, and the forward's own message id."""
    out = {name: value for name, value in (headers or {}).items() if name != MSG_ID}
    original = (headers or {}).get(MSG_ID)
    if original is not None:
        out[ORIGIN_MSG_ID] = original
    out[ORIGIN_SUBJECT] = subject
    out[ORIGIN_SEQ] = str(inbound_seq)
    out[MSG_ID] = forward_msg_id(inbound_seq)
    return out


class Origin(NamedTuple):
    """An inbound message as its publisher sent it: the subject, its ``Nats-Msg-Id``,
    and its TOCSIN_IN seq when a partitioner forwarded it (``None`` when the router
    reads TOCSIN_IN itself: its stream seq is then that). A tuple: the router makes one
    a message, and a frozen dataclass cost ~0.4 us to make (issue #20)."""

    subject: str
    msg_id: str | None
    inbound_seq: int | None = None


def origin_of(subject: str, headers: Mapping[str, str] | None, forwarded: bool) -> Origin:
    """What the router decides on: the message's own subject and id, or for one a
    partitioner ``forwarded``, those it carries in its headers."""
    if not forwarded:
        return Origin(subject, None if headers is None else headers.get(MSG_ID))
    headers = headers or {}
    seq = headers.get(ORIGIN_SEQ, "")
    return Origin(
        headers.get(ORIGIN_SUBJECT, subject),
        headers.get(ORIGIN_MSG_ID),
        int(seq) if seq.isdigit() else None,
    )


def marked(partition: int) -> dict[str, str]:
    """The header every message the router of ``partition`` publishes carries."""
    return {PARTITION: str(partition)}


def marked_by(headers: Mapping[str, str] | None) -> int | None:
    """The partition a work item's headers name (``None``: an unpartitioned router's)."""
    value = (headers or {}).get(PARTITION, "")
    return int(value) if value.isdigit() else None


def carry_partition(outcome: Outbound, item_headers: Mapping[str, str] | None) -> Outbound:
    """``outcome`` marked with the partition of the work item it is the outcome of (as
    it was, for an item from an unpartitioned router)."""
    partition = (item_headers or {}).get(PARTITION)
    if partition is None:
        return outcome
    return msgspec.structs.replace(
        outcome, headers={**(outcome.headers or {}), PARTITION: partition}
    )


def is_ours(headers: Mapping[str, str] | None, partition: int | None) -> bool:
    """Whether the recorder of ``partition`` logs an outcome with these headers: an
    unpartitioned recorder logs every outcome, a partition's only those of its own
    notifications."""
    if partition is None:
        return True
    return (headers or {}).get(PARTITION) == str(partition)


def uncovered_routes(routes: Sequence[Route], key: Sequence[str]) -> list[int]:
    """The indexes of the grouped routes whose groups may span partitions: those whose
    ``group_by`` does not include every field the partition key hashes (by default the
    fingerprint). Such a group is split, one part per partition, each notified apart."""
    wanted = tuple(key) or (FINGERPRINT,)
    out = []
    for index, route in enumerate(routes):
        grouping = route.grouping
        if not grouping.grouped:
            continue
        group_by = grouping.group_by
        every_label = group_by == (EVERY_LABEL,)
        if not all(
            name in group_by or (every_label and (name == "type" or name.startswith(LABEL_PREFIX)))
            for name in wanted
        ):
            out.append(index)
    return out
