"""Notifications reach a receiver in log order, per fingerprint (pure decisions;
``bus/delivered.py`` keeps the record, ``pipeline/delivery.py`` asks).

Each notification retries on its own backoff, so a firing that failed can come back
after the resolve that followed it was delivered: a late firing re-opens a PagerDuty
incident or an Opsgenie alert that was already closed, and a late resolve of an old
alert closes the new alert of the same fingerprint (both providers key by it). So a
receiver keeps, per fingerprint, the routed log seq (``WorkItem.log_seq``) of the
latest notification it accepted, and a notification routed before that one is not sent
any more: it is *superseded*, settled in the log (``delivery.superseded``) and never
counted as a failure.

Workers are stateless and may be many processes, so the record is shared (a JetStream
key-value bucket, ``subjects.DELIVERED_SEQ_BUCKET``) and only ever raised
(``raised``, written with compare-and-set). Two sends of one fingerprint in flight at
the same moment are not ordered by it: it stops the late ones, not the concurrent ones.

Raising it costs three NATS messages a notification (a compare-and-set publish, its
PubAck, its echo to every worker following the bucket), and it only matters when an
older notification of the same receiver and key may still be sent. The router knows
when none can (``must_raise``): no other of them is pending, retrying or dead (a dead
one may be re-queued) when the work item is built. A notification routed later, while
this one is still open, sees this one and raises the record itself, so this one's
retries are still superseded; and a re-queued one always raises. In a storm of
distinct alerts no notification raises it.
"""

from __future__ import annotations

import hashlib
from typing import Literal

import msgspec
from msgspec import Struct


class Latest(Struct, frozen=True, kw_only=True):
    """The latest notification a receiver accepted for one fingerprint: its routed
    ``log_seq`` and its ``notification_id`` (what a superseded one names)."""

    log_seq: int
    notification_id: str


Verdict = Literal["send", "superseded"]

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Latest)


def key(receiver: str, fingerprint: str) -> str:
    """The record's key: the receiver's name (``A-Z a-z 0-9 _ -``, a valid key token)
    and a hash of the fingerprint, which may hold any printable character (a key may
    not: ``[-/_=.a-zA-Z0-9]``)."""
    digest = hashlib.sha256(fingerprint.encode()).hexdigest()[:32]
    return f"{receiver}.{digest}"


def before_send(log_seq: int, latest: Latest | None) -> Verdict:
    """Whether the notification routed at ``log_seq`` may still be sent: not once a
    notification routed after it (a higher seq) was accepted. The same notification
    again (equal seq: a redelivery, a re-queue) is sent."""
    if latest is not None and latest.log_seq > log_seq:
        return "superseded"
    return "send"


def raised(current: Latest | None, delivered: Latest) -> Latest | None:
    """The record after ``delivered`` was accepted: ``delivered`` when it is later than
    ``current`` (or there is none), else ``None``: nothing to write, the record never
    goes back."""
    if current is None or delivered.log_seq > current.log_seq:
        return delivered
    return None


def encode(latest: Latest) -> bytes:
    return _encoder.encode(latest)


def decode(data: bytes) -> Latest | None:
    """A stored record; ``None`` for bytes that are not one (treated as no record:
    sending beats dropping on a value nobody can read)."""
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError:
        return None


OPEN_FOR_ORDER: frozenset[str] = frozenset({"pending", "retrying", "dead"})
"""Statuses of a notification that may still be sent (``dead``: by a re-queue)."""


def open_key(receiver: str, order_key: str) -> str:
    """The key of ``State.order_open``."""
    return f"{receiver} {order_key}"


def must_raise(open_count: int, generation: int) -> bool:
    """Whether a notification's success must raise the order record: when another
    notification of its receiver and key is open besides itself (``open_count`` counts
    it), or it is a re-queue (``generation``), which may be older than others sent."""
    return open_count > 1 or generation > 0
