"""Partitions (DESIGN.md section 17), pure: the partition of a message, what a
partitioner forwards, what the router of a partition reads back, and which outcomes
are a partition's."""

from __future__ import annotations

import collections
import json
from typing import Any

import msgspec

from tocsin.core import events as ev
from tocsin.core import ingest, partition
from tocsin.core.decide.route import Route
from tocsin.core.outbound import Outbound, messages_for
from tocsin.core.state import State
from tocsin.core.subjects import (
    MSG_ID,
    ORIGIN_MSG_ID,
    ORIGIN_SEQ,
    ORIGIN_SUBJECT,
    PARTITION,
    REJECTED,
    delivery_status_subject,
)

SUBJECT = "alerts.in.orders"


def event(**fields: Any) -> bytes:
    body = {"type": "disk_full", "severity": "critical", "summary": "disk full"}
    body.update(fields)
    return json.dumps(body).encode()


def part(data: bytes, count: int, seq: int = 1, subject: str = SUBJECT, **kw: Any) -> int:
    return partition.of_message(subject, data, inbound_seq=seq, count=count, **kw)


def test_the_hash_is_the_same_in_every_process() -> None:
    """Fixed values for fixed inputs: catches a hash salted per process (Python's
    ``hash()`` of a str differs between two partitioners, which would then send one
    fingerprint to two routers) or any change of the hash, which would move every
    open alert to another partition's log."""
    assert partition.stable_hash("abc") == 15617099051652453721
    data = event(labels={"host": "db1"})
    assert [part(data, count) for count in range(1, 9)] == [0, 0, 0, 2, 3, 0, 0, 6]


def test_fingerprints_spread_evenly_over_2_to_8_partitions() -> None:
    """10,000 fingerprints: every partition gets within 5% of its share (catches a
    hash that clusters, e.g. one taking the fingerprint's first hex digit mod N)."""
    fingerprints = [ingest.default_fingerprint("t", {"i": str(i)}) for i in range(10_000)]
    for count in range(2, 9):
        share = len(fingerprints) / count
        sizes = collections.Counter(partition.stable_hash(f) % count for f in fingerprints)
        assert len(sizes) == count
        assert all(abs(size - share) / share < 0.05 for size in sizes.values()), (count, sizes)


def test_every_event_of_a_fingerprint_goes_to_the_same_partition() -> None:
    """The partition is the fingerprint's, computed by the router's ingest: severity,
    summary, status, source and timestamp do not move it (catches hashing the payload
    or the subject), and an explicit fingerprint is the identity (catches hashing the
    labels)."""
    labels = {"host": "db1", "mount": "/var"}
    first = part(event(labels=labels), 8)
    for other in [
        event(labels=labels, severity="warning", summary="still full"),
        event(labels=labels, status="resolved", timestamp="2026-01-01T00:00:00Z"),
        event(labels=dict(reversed(labels.items())), source="elsewhere"),
    ]:
        assert part(other, 8, seq=99, subject="alerts.in.other") == first
    explicit = [part(event(fingerprint="fp-1", labels={"n": str(i)}), 8) for i in range(20)]
    assert len(set(explicit)) == 1


def test_with_one_partition_everything_is_partition_0() -> None:
    assert part(b"not json", 1) == 0
    assert part(event(), 1) == 0


def test_a_heartbeat_goes_by_its_name_whatever_its_payload() -> None:
    """Catches routing a beat as an alert event: its payload is no event (it would be
    'bad input' spread by seq, and its deadline would be missed elsewhere)."""
    beats = {
        part(payload, 8, seq=seq, subject="alerts.heartbeat.nightly-backup")
        for seq, payload in enumerate([b"", b"x", event()])
    }
    assert beats == {partition.of_heartbeat("nightly-backup", 8)}
    names = {partition.of_heartbeat(f"job-{i}", 8) for i in range(100)}
    assert len(names) == 8


def test_bad_input_goes_by_subject_and_seq() -> None:
    """Undecodable or invalid input has no fingerprint: it is spread by its subject
    and TOCSIN_IN seq, deterministically (another partitioner forwarding it again
    after a crash picks the same partition)."""
    for bad in [b"{not json", event(severity="loud"), b"[]"]:
        chosen = [part(bad, 4, seq=seq) for seq in range(1, 200)]
        assert chosen == [part(bad, 4, seq=seq) for seq in range(1, 200)]
        assert set(chosen) == {0, 1, 2, 3}


def test_a_partition_key_keeps_a_cluster_in_one_partition() -> None:
    """``key = ["labels.cluster"]``: every alert of a cluster, whatever its fingerprint,
    in one partition (catches ignoring the key); clusters spread over partitions."""
    key = ("labels.cluster",)
    in_eu = {
        part(event(type=f"t{i}", labels={"cluster": "eu-1", "pod": f"p{i}"}), 8, key=key)
        for i in range(50)
    }
    assert len(in_eu) == 1
    clusters = {part(event(labels={"cluster": f"c{i}"}), 8, key=key) for i in range(100)}
    assert len(clusters) == 8


def test_key_check_names_what_is_wrong() -> None:
    assert partition.check_key(()) is None
    assert partition.check_key(("labels.cluster", "type", "fingerprint")) is None
    for bad in [("severity",), ("source",), ("labels.",), ("cluster",)]:
        assert partition.check_key(bad) is not None, bad
    assert partition.check_key(("type", "type")) == "a key is named twice"


def test_forwarded_headers_keep_what_the_publisher_sent() -> None:
    """The forward's own ``Nats-Msg-Id`` comes from the TOCSIN_IN seq (a second forward
    after a crash is dropped by the duplicate window), while the publisher's id, subject
    and other headers reach the router, which decides on them as a single router would
    (catches a router taking the forward's id for the event's ``event_id``, or
    ``tocsin.part.<k>`` for its subject and source)."""
    sent = {MSG_ID: "publisher-id", "traceparent": "00-abc-def-01"}
    forwarded = partition.forward_headers(sent, SUBJECT, 42)
    assert forwarded[MSG_ID] == partition.forward_msg_id(42) == "in:42"
    assert forwarded["traceparent"] == "00-abc-def-01"
    origin = partition.origin_of("tocsin.part.3", forwarded, forwarded=True)
    assert origin == partition.Origin(SUBJECT, "publisher-id", 42)
    bare = partition.origin_of("tocsin.part.3", partition.forward_headers(None, SUBJECT, 7), True)
    assert bare == partition.Origin(SUBJECT, None, 7)
    assert partition.origin_of(SUBJECT, sent, forwarded=False) == partition.Origin(
        SUBJECT, "publisher-id"
    )
    assert {ORIGIN_SUBJECT, ORIGIN_SEQ, ORIGIN_MSG_ID} <= set(forwarded)


def test_outcomes_carry_their_items_partition_to_its_recorder() -> None:
    """A worker copies the item's partition onto its outcome, and only that
    partition's recorder logs it (catches every recorder logging every outcome: each
    log would hold the others' deliveries)."""
    outcome = Outbound("alerts.delivered", b"{}", "n1:delivered")
    marked = partition.carry_partition(outcome, partition.marked(2))
    assert marked.headers == {PARTITION: "2"}
    assert partition.carry_partition(outcome, {"traceparent": "x"}) is outcome
    assert partition.is_ours(marked.headers, 2)
    assert not partition.is_ours(marked.headers, 1)
    assert not partition.is_ours(None, 0)
    assert partition.is_ours(None, None)
    assert partition.is_ours(marked.headers, None)


def test_a_worker_asks_the_partition_that_routed_the_item() -> None:
    """Catches a worker asking every router on one subject: one that never saw the
    notification would answer "unknown" and the worker would send it again."""
    assert partition.marked_by(partition.marked(3)) == 3
    assert partition.marked_by({"traceparent": "x"}) is None
    assert partition.marked_by(None) is None
    assert delivery_status_subject(3) == "tocsin.control.delivery-status.p3"
    assert delivery_status_subject(None) == "tocsin.control.delivery-status"


def test_grouped_routes_not_covered_by_the_key_are_named() -> None:
    """The config check warns of a group that may span partitions: one whose group_by
    lacks a field of the key (by default the fingerprint)."""
    routes = [
        Route(receivers=["r"]),  # not grouped
        Route(receivers=["r"], group_by=["labels.cluster"], group_wait=30.0),
        Route(receivers=["r"], group_by=["labels.cluster", "type"], group_wait=30.0),
        Route(receivers=["r"], group_by=["..."], group_wait=30.0),
        Route(receivers=["r"], group_by=["fingerprint"], group_wait=30.0),
    ]
    assert partition.uncovered_routes(routes, ()) == [1, 2, 3]
    assert partition.uncovered_routes(routes, ("labels.cluster",)) == [4]
    assert partition.uncovered_routes(routes, ("type", "labels.cluster")) == [1, 4]


def test_a_forwarded_rejection_is_identified_by_its_tocsin_in_seq() -> None:
    """``alerts.rejected`` carries ``Nats-Msg-Id: rejected:<TOCSIN_IN seq>`` (DESIGN.md
    section 5) in a partition too: with the TOCSIN_PART seq, the rejections of two
    partitions at the same seq would collide and JetStream would drop one."""
    rejected = ev.AlertRejected(
        code="invalid_json",
        reason="no",
        field=None,
        subject=SUBJECT,
        received_at=0,
        raw="x",
        raw_encoding="utf-8",
    )
    [own] = messages_for(State(), 5, rejected, 17, None)
    assert (own.subject, own.msg_id) == (REJECTED, "rejected:17")
    [fwd] = messages_for(State(), 5, msgspec.structs.replace(rejected, inbound_seq=1234), 17, None)
    assert fwd.msg_id == "rejected:1234"


def test_a_statefulset_pods_name_gives_its_partition() -> None:
    """``router --partition ordinal``: the number a StatefulSet pod's name ends in, with
    or without the domain (catches taking a digit of the domain, or of the middle)."""
    assert partition.ordinal_of("tocsin-router-0") == 0
    assert partition.ordinal_of("tocsin-router-12") == 12
    assert partition.ordinal_of("tocsin-router-2.tocsin-router.tocsin.svc.cluster.local") == 2
    for name in ("tocsin-router", "router2", "tocsin-router-", "tocsin-router-x1", "r-²"):
        assert partition.ordinal_of(name) is None, name
