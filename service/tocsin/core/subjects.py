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

PART_PREFIX = "tocsin.part."  # partitions (DESIGN.md section 17): tocsin.part.<k>

PART_SUBJECTS = PART_PREFIX + ">"

ANCHOR_PREFIX = "tocsin.anchor."

ANCHOR = ANCHOR_PREFIX + "log"
"""The head of the log's hash chain (``core.anchor.Head``), kept outside the file: the
writer publishes it, ``tocsin verify --against-nats`` compares the file with it. A
partitioned log (DESIGN.md section 17) anchors each partition under its own name
(``anchor_subject``)."""

DELIVERY_STATUS = CONTROL_PREFIX + "delivery-status"  # request: notification id; reply: status

# (the reply values are listed in tocsin/status.py)
RETRY_FAILED = CONTROL_PREFIX + "retry-failed"  # request: control.RetryRequest; reply: RetryReply

COMPACT = CONTROL_PREFIX + "compact"  # request: control.CompactRequest; reply: CompactReply

RELOAD = CONTROL_PREFIX + "reload"  # request: reload.ReloadRequest; reply: ReloadReply

COMMAND = CONTROL_PREFIX + "command"  # request: commands.Command; reply: CommandReply


STREAM_IN = "TOCSIN_IN"

STREAM_WORK = "TOCSIN_WORK"

STREAM_OUT = "TOCSIN_OUT"

STREAM_PART = "TOCSIN_PART"  # tocsin.part.>: what the partitioners forward, per partition

# Key-value bucket (stream ``KV_<name>``): per receiver and fingerprint, the routed log
# seq of the latest notification accepted (``core/policy/order.py``).
DELIVERED_SEQ_BUCKET = "TOCSIN_DELIVERED_SEQ"
# Where the bucket's records are written and watched: one subject per key.
DELIVERED_SEQ_PREFIX = f"$KV.{DELIVERED_SEQ_BUCKET}."
STREAM_ANCHOR = "TOCSIN_ANCHOR"  # tocsin.anchor.>, the last message of each subject kept


ROUTER_CONSUMER = "router"

RECORDER_CONSUMER = "recorder"

PARTITIONER_CONSUMER = "partitioner"  # shared by every `tocsin partition` on TOCSIN_IN

AUDIT_CONSUMER = "audit"  # the auditors' durable pull consumer on TOCSIN_OUT, made by tocsin

AUDIT_SUBJECTS = (DELIVERED, DELIVERY_FAILED, REJECTED)  # what auditors read


MSG_ID = "Nats-Msg-Id"
# A compare-and-set publish: stored only if the subject's last message has this seq (0:
# none), as a key-value ``update`` / ``create`` writes.
EXPECTED_LAST_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"

# What a partitioner adds to the message it forwards (its own ``Nats-Msg-Id`` replaces
# the publisher's, which travels on as ``ORIGIN_MSG_ID``): the router of a partition
# decides on the subject and id the publisher used, as a single router would.
ORIGIN_SUBJECT = "Tocsin-Subject"  # the subject it was published on: alerts.in.<source>

ORIGIN_SEQ = "Tocsin-In-Seq"  # its TOCSIN_IN stream seq (the rejection's message id)

ORIGIN_MSG_ID = "Tocsin-Msg-Id"  # the publisher's Nats-Msg-Id, when it gave one

PARTITION = "Tocsin-Partition"
"""The partition whose router published a work item or a dead letter; a delivery worker
copies it onto the item's outcomes, so that only that partition's recorder logs them."""

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


def part_subject(partition: int) -> str:
    """Where partitioners forward the events of ``partition`` (DESIGN.md section 17)."""
    return f"{PART_PREFIX}{partition}"


def router_consumer(partition: int | None) -> str:
    """The router's durable consumer: ``router`` on TOCSIN_IN, ``router-p<k>`` on
    TOCSIN_PART for partition ``k``."""
    return ROUTER_CONSUMER if partition is None else f"{ROUTER_CONSUMER}-p{partition}"


def recorder_consumer(partition: int | None) -> str:
    """The recorder's durable consumer on TOCSIN_OUT, one per partition."""
    return RECORDER_CONSUMER if partition is None else f"{RECORDER_CONSUMER}-p{partition}"


def delivery_status_subject(partition: int | None) -> str:
    """Where a worker asks what the log says of a notification: the router of the
    partition that routed it answers on its own subject (another's log does not know
    it, and would answer "unknown")."""
    return DELIVERY_STATUS if partition is None else f"{DELIVERY_STATUS}.p{partition}"


def retry_failed_subject(partition: int | None) -> str:
    """Where ``retry-failed`` is asked: each partition's router re-queues its own log's
    dead letters, so a partitioned service is asked on every partition's subject."""
    return RETRY_FAILED if partition is None else f"{RETRY_FAILED}.p{partition}"


def command_subject(partition: int | None) -> str:
    """Where an operator command (``commands.Command``) is carried out by the router of
    ``partition`` (``tocsin serve --partitions N``'s API sends them there)."""
    return COMMAND if partition is None else f"{COMMAND}.p{partition}"


def anchor_subject(partition: int | None) -> str:
    """Where a log anchors its chain head: each partition's log under its own name."""
    return ANCHOR if partition is None else f"{ANCHOR}.p{partition}"


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
