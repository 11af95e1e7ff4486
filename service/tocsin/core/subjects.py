"""Every NATS name tocsin uses: subjects, streams, consumers, headers (DESIGN.md
section 3). Plain strings, so the core can say where a message goes without a broker;
``tocsin.bus`` creates what they name.
"""

from __future__ import annotations

IN_PREFIX = "alerts.in."

IN_SUBJECTS = "alerts.in.>"

HEARTBEAT_PREFIX = "alerts.heartbeat."

HEARTBEAT_SUBJECTS = "alerts.heartbeat.>"

INBOUND_SUBJECTS = (IN_SUBJECTS, HEARTBEAT_SUBJECTS)
"""What TOCSIN_IN takes and the router consumes: alert events and heartbeat beats."""

DELIVERED = "alerts.delivered"

DELIVERY_FAILED = "alerts.delivery_failed"

REJECTED = "alerts.rejected"

ROUTE_PREFIX = "tocsin.route."

ATTEMPTS_PREFIX = "tocsin.attempts."

SUPERSEDED_PREFIX = "tocsin.superseded."  # internal: a notification dropped as superseded

CONTROL_PREFIX = "tocsin.control."

ANCHOR_PREFIX = "tocsin.anchor."

ANCHOR = ANCHOR_PREFIX + "log"
"""The head of the log's hash chain (``core.anchor.Head``), kept outside the file: the
writer publishes it, ``tocsin verify --against-nats`` compares the file with it. A
partitioned log (DESIGN.md section 17) would anchor each partition under its own name."""

DELIVERY_STATUS = CONTROL_PREFIX + "delivery-status"  # request: notification id; reply: status

# (the reply values are listed in tocsin/status.py)
RETRY_FAILED = CONTROL_PREFIX + "retry-failed"  # request: control.RetryRequest; reply: RetryReply

COMPACT = CONTROL_PREFIX + "compact"  # request: control.CompactRequest; reply: CompactReply

RELOAD = CONTROL_PREFIX + "reload"  # request: reload.ReloadRequest; reply: ReloadReply


STREAM_IN = "TOCSIN_IN"

STREAM_WORK = "TOCSIN_WORK"

STREAM_OUT = "TOCSIN_OUT"

# Key-value bucket (stream ``KV_<name>``): per receiver and fingerprint, the routed log
# seq of the latest notification accepted (``core/policy/order.py``).
DELIVERED_SEQ_BUCKET = "TOCSIN_DELIVERED_SEQ"
# Where the bucket's records are written and watched: one subject per key.
DELIVERED_SEQ_PREFIX = f"$KV.{DELIVERED_SEQ_BUCKET}."
STREAM_ANCHOR = "TOCSIN_ANCHOR"  # tocsin.anchor.>, the last message of each subject kept


ROUTER_CONSUMER = "router"

RECORDER_CONSUMER = "recorder"

AUDIT_CONSUMER = "audit"  # the auditors' durable pull consumer on TOCSIN_OUT, made by tocsin

AUDIT_SUBJECTS = (DELIVERED, DELIVERY_FAILED, REJECTED)  # what auditors read


MSG_ID = "Nats-Msg-Id"
# A compare-and-set publish: stored only if the subject's last message has this seq (0:
# none), as a key-value ``update`` / ``create`` writes.
EXPECTED_LAST_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"

ACK = b"+ACK"

TERM = b"+TERM"

PROGRESS = b"+WPI"


# JetStream's own word that a replicated stream or consumer has a new leader: core NATS
# messages published in the stream's account (nats-server ``server/jetstream_api.go``
# ``JSAdvisoryStreamLeaderElectedPre`` + ".<stream>", ``JSAdvisoryConsumerLeaderElectedPre``
# + ".<stream>.<consumer>"). A new leader may not know what the old one delivered.
STREAM_LEADER_ELECTED_PREFIX = "$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED."

CONSUMER_LEADER_ELECTED_PREFIX = "$JS.EVENT.ADVISORY.CONSUMER.LEADER_ELECTED."


def route_subject(receiver: str) -> str:
    return ROUTE_PREFIX + receiver


def attempts_subject(receiver: str) -> str:
    return ATTEMPTS_PREFIX + receiver


def superseded_subject(receiver: str) -> str:
    return SUPERSEDED_PREFIX + receiver


def deliver_consumer(receiver: str) -> str:
    return f"deliver-{receiver}"


def leader_elected_subjects(stream: str, consumer: str) -> list[str]:
    """The advisories announcing a new leader for ``stream`` or its ``consumer``."""
    return [
        STREAM_LEADER_ELECTED_PREFIX + stream,
        f"{CONSUMER_LEADER_ELECTED_PREFIX}{stream}.{consumer}",
    ]


def heartbeat_subject(name: str) -> str:
    """Where a beat of the heartbeat ``name`` is published (DESIGN.md section 13)."""
    return HEARTBEAT_PREFIX + name


def heartbeat_of(subject: str) -> str | None:
    """``alerts.heartbeat.<name>`` -> ``<name>`` (the rest of the subject, possibly
    empty or dotted: the router rejects a name not configured); ``None`` for any other
    subject."""
    if not subject.startswith(HEARTBEAT_PREFIX):
        return None
    return subject[len(HEARTBEAT_PREFIX) :]


def source_of(subject: str) -> str:
    """``alerts.in.<source>`` -> ``<source>`` (the third token)."""
    parts = subject.split(".")
    return parts[2] if len(parts) > 2 and parts[2] else "unknown"
